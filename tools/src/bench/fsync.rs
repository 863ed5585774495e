//! The disk's raw durability floor: append 4 KiB and sync it, one at a time, as fast
//! as the device allows. Any one-writer-at-a-time durable log is bounded by this.
//!
//! Two ways of syncing are measured. `fdatasync` is what durability needs: it writes
//! the data, the file size and flushes the device's write cache. `sync_file_range`
//! (WAIT_BEFORE | WRITE | WAIT_AFTER) is what sled 0.34's `flush` actually calls: it
//! only waits for the page writeback, without a cache flush or the file-size update,
//! so it is cheaper, and comparing the ledger with it shows where the ledger stands.

use super::stats::{summarize, Summary};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    Fdatasync,
    SyncFileRange,
}

impl SyncKind {
    pub fn name(self) -> &'static str {
        match self {
            SyncKind::Fdatasync => "fdatasync",
            SyncKind::SyncFileRange => "sync_file_range",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRate {
    pub kind: SyncKind,
    pub syncs: u64,
    pub elapsed: Duration,
    /// Latency of one write + sync.
    pub latency: Summary,
}

impl SyncRate {
    pub fn per_sec(&self) -> f64 {
        super::stats::rate(self.syncs, self.elapsed)
    }
}

/// Appends 4 KiB blocks to a fresh file in `dir` and syncs after each one, for
/// `duration`. Appending (rather than rewriting one block) is what a log does, and it
/// makes `fdatasync` persist the new file size each time, as a log's sync must.
pub fn measure(dir: &Path, kind: SyncKind, duration: Duration) -> std::io::Result<SyncRate> {
    let path = dir.join(format!("sync-probe-{}", kind.name()));
    let mut file = OpenOptions::new().create_new(true).write(true).open(&path)?;
    let block = [0xA5u8; 4096];
    let mut offset: i64 = 0;
    let mut samples = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    while start.elapsed() < duration {
        let t0 = Instant::now();
        file.write_all(&block)?;
        sync(&file, kind, offset, block.len() as i64)?;
        offset += block.len() as i64;
        samples.push(t0.elapsed().as_nanos() as u64);
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(SyncRate { kind, syncs: samples.len() as u64, elapsed, latency: summarize(samples) })
}

fn sync(file: &File, kind: SyncKind, offset: i64, len: i64) -> std::io::Result<()> {
    match kind {
        SyncKind::Fdatasync => file.sync_data(),
        SyncKind::SyncFileRange => {
            let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: a plain syscall on a file descriptor we own for the whole call.
            let ret = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
            if ret == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
    }
}
