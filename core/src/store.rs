//! The event store: the only module that knows how Hydra's data sits on disk. The
//! events are in append-only segment files with their per-node index in each record's
//! header (`segments`, layout 3); projection snapshots, hashed tokens, `meta` (layout
//! version) and the entries of command outputs are in sled; the outputs' bytes are a
//! file each.
//!
//! sled panics on some kinds of damage (at open, while recovering, while reading):
//! every call into it goes through `guarded`, which turns a panic into a
//! `StoreError::Panicked` so that the caller can refuse clearly instead of crashing.

mod segments;

use hydra_events::{Hash, NodeId, ZERO_HASH};
pub use segments::{encode_record, DIR as SEGMENTS_DIR};
use segments::{Entry, Segments};
use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// Our own files beside sled's (the watermark, the writer thread, free space).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the event log is corrupt: {0}")]
    Corrupt(String),
    #[error("the event log is damaged: sled failed inside while {0}")]
    Panicked(String),
    /// An append that does not follow the last event (a caller's mistake; nothing
    /// was written).
    #[error("the log takes events in order: {0}")]
    OutOfOrder(String),
    /// The data dir is sound but not in this build's layout (`migrate`).
    #[error(transparent)]
    Layout(#[from] hydra_migrations::MigrationError),
}

impl StoreError {
    /// True when the data on disk is bad (as opposed to, say, a lock held by a
    /// running server): the case for restoring a backup or `repair`.
    pub fn is_damage(&self) -> bool {
        match self {
            StoreError::Corrupt(_) | StoreError::Panicked(_) => true,
            StoreError::Sled(sled::Error::Corruption { .. }) => true,
            StoreError::Sled(_) | StoreError::Io(_) | StoreError::OutOfOrder(_) | StoreError::Layout(_) => {
                false
            }
        }
    }
}

thread_local! {
    /// Set while this thread is inside sled through `guarded`: its panics are caught
    /// and reported as errors, so the panic hook keeps them out of stderr.
    static IN_STORE: Cell<bool> = const { Cell::new(false) };
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that records panics raised inside `guarded` instead of
/// printing them with a backtrace; every other panic goes to the previous hook.
fn quiet_store_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_STORE.with(Cell::get) {
                let what = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                let at =
                    info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
                CAUGHT.with(|c| *c.borrow_mut() = Some(format!("{what}{at}")));
            } else {
                previous(info)
            }
        }));
    });
}

/// Runs `f` (a call into sled), turning a panic into `StoreError::Panicked`.
fn guarded<T>(
    doing: impl std::fmt::Display,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    quiet_store_panics();
    let outer = IN_STORE.with(|s| s.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_STORE.with(|s| s.set(outer));
    match result {
        // sled's own message names a file offset; the operator needs the sequence.
        Ok(Err(StoreError::Sled(sled::Error::Corruption { .. }))) => {
            Err(StoreError::Corrupt(format!("{doing}: sled finds the data there corrupt")))
        }
        Ok(r) => r,
        Err(_) => caught_panic(doing),
    }
}

fn caught_panic<T>(doing: impl std::fmt::Display) -> Result<T, StoreError> {
    let caught = CAUGHT.with(|c| c.borrow_mut().take()).unwrap_or_else(|| "a panic".into());
    tracing::error!(doing = %doing, panic = %caught, "sled panicked; the log is damaged");
    Err(StoreError::Panicked(format!("{doing} ({caught})")))
}

impl StoreError {
    /// True when the filesystem ran out of space (ENOSPC) or of quota (EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sled(sled::Error::Io(e)) | StoreError::Io(e) => {
                matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            }
            _ => false,
        }
    }
}

/// A `meta` entry: key and value.
pub type MetaEntry = (Vec<u8>, Vec<u8>);

/// An event for the log, prepared by the ledger.
pub struct Record<'a> {
    pub seq: u64,
    pub bytes: &'a [u8],
    pub node_id: Option<&'a NodeId>,
}

/// A write to the `tokens` tree that must be as durable as the events beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenWrite {
    /// Stores a token hash for a principal (`node:<id>`).
    Put { hash: [u8; 32], principal: String },
    /// Revokes whatever token the principal has.
    Revoke { principal: String },
}

#[derive(Clone)]
pub struct Store {
    dir: std::path::PathBuf,
    db: sled::Db,
    /// sled's data file, fdatasync'd after every flush that has something of sled's to
    /// make durable (see `flush`).
    data_file: Arc<std::fs::File>,
    /// Set by every write to sled, cleared by the flush that makes it durable: a batch
    /// of events alone costs one fsync (its segment's), not two.
    sled_written: Arc<AtomicBool>,
    /// The events, in their segment files.
    log: Arc<Segments>,
    tokens: sled::Tree,
    meta: sled::Tree,
    /// Command outputs, content-addressed: blake3 of the bytes → BE u64 time of the
    /// latest write, BE u32 count of the results that refer to them, BE u64 size. The
    /// bytes are in a file per output under `<data>/outputs` (deleting it gives the
    /// space back at once). Events refer to them by hash (schema 3).
    outputs: sled::Tree,
    /// Held while an output's file and entry change together.
    output_files: std::sync::Arc<parking_lot::Mutex<()>>,
    /// BE u64 time ∥ hash → nothing: the outputs in the order retention drops them.
    output_times: sled::Tree,
}

const LAYOUT_KEY: &[u8] = b"layout_version";
/// How long a lock found held is watched for sled to let go of it (see `in_use`).
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const MIGRATING_KEY: &[u8] = b"migrating_to";

/// Size of `<data>/ballast`, a file of zeros kept only to be deleted: sled needs room to
/// open a log (it pads the tail of its last segment, ~512 KiB), so on a disk that
/// something else filled, giving this back lets the server start read-only instead of
/// failing to open. Re-created once space is back.
pub const BALLAST_BYTES: u64 = 8 * 1024 * 1024;

impl Store {
    /// Opens the store; on a full disk, releases the ballast and tries once more. A
    /// store whose events are still in sled (layouts 0 to 2, or a move to layout 3 cut
    /// short) is refused with what `migrate` would say: its log cannot be read here.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let store = Store::open_any_layout(dir)?;
        if store.holds_legacy_events()? {
            hydra_migrations::servable(store.layout_version()?, store.migrating()?, true)?;
        }
        Ok(store)
    }

    /// Opens the store whatever its layout: for `migrate`, and for reading the tokens
    /// of a damaged store in `repair`.
    pub fn open_any_layout(dir: &Path) -> Result<Store, StoreError> {
        match Store::open_checked(dir) {
            Err(e) if e.is_disk_full() && release_ballast(dir) => {
                tracing::warn!(
                    "the disk is full: released the {} MiB ballast in {} so the log can open (read-only \
                     until space is freed)",
                    BALLAST_BYTES / (1024 * 1024),
                    dir.display()
                );
                Store::open_checked(dir)
            }
            opened => opened,
        }
    }

    /// Opens the store. sled's own leftover snapshot files never block it: a stale
    /// `snap.*.generating` (a snapshot that never finished, e.g. on a full disk) is
    /// removed first, and if sled still fails while a finished `snap.*` exists, that
    /// snapshot is set aside (renamed `bad-snap.*`) and the open is tried once more:
    /// sled rebuilds its page table from the log without it.
    fn open_checked(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(sled::Error::Io)?;
        finish_sled_swap(dir)?;
        let log = dir.join("log");
        for stale in
            sled_snapshot_files(&log).into_iter().filter(|p| p.to_string_lossy().ends_with(".generating"))
        {
            tracing::warn!(file = %stale.display(), "removing sled's unfinished snapshot file");
            std::fs::remove_file(&stale).map_err(sled::Error::Io)?;
        }
        let store = match guarded("opening the log", || Store::open_sled(dir)) {
            Err(e) if e.is_damage() && !sled_snapshot_files(&log).is_empty() => {
                for snap in sled_snapshot_files(&log) {
                    let name = snap.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    tracing::warn!(file = %snap.display(), error = %e, "sled's snapshot is not usable; set aside");
                    std::fs::rename(&snap, log.join(format!("bad-{name}"))).map_err(sled::Error::Io)?;
                }
                guarded("opening the log", || Store::open_sled(dir))
            }
            other => other,
        }?;
        // Only now, with sled's lock on the data dir held: opening the segments may
        // cut off a torn tail.
        let segments = Segments::open(dir, read_watermark(dir)?)?;
        Ok(Store { log: Arc::new(segments), ..store })
    }

    /// Opens sled's part of the store; the segments are opened by `open_checked`.
    fn open_sled(dir: &Path) -> Result<Store, StoreError> {
        let config = sled::Config::new().path(dir.join("log")).cache_capacity(256 * 1024 * 1024);
        let db = match config.open() {
            // A lock let go of a moment ago (see `in_use`) gets one more try.
            Err(e) if in_use(dir) => return Err(e.into()),
            Err(_) => config.open()?,
            Ok(db) => db,
        };
        let data_file = std::fs::File::open(dir.join("log").join("db")).map_err(sled::Error::Io)?;
        Ok(Store {
            dir: dir.to_owned(),
            data_file: Arc::new(data_file),
            sled_written: Default::default(),
            log: Arc::new(Segments::none()),
            tokens: db.open_tree("tokens")?,
            meta: db.open_tree("meta")?,
            outputs: db.open_tree("output_entries")?,
            output_files: Default::default(),
            output_times: db.open_tree("output_times")?,
            db,
        })
    }

    pub fn layout_version(&self) -> Result<u32, StoreError> {
        Ok(match guarded("reading the layout version", || Ok(self.meta.get(LAYOUT_KEY)?))? {
            Some(v) if v.len() == 4 => u32::from_be_bytes(v.as_ref().try_into().expect("4")),
            Some(_) => return Err(StoreError::Corrupt("meta.layout_version is not 4 bytes".into())),
            None => 0,
        })
    }

    pub fn set_layout_version(&self, version: u32) -> Result<(), StoreError> {
        self.sled_written();
        self.meta.insert(LAYOUT_KEY, &version.to_be_bytes())?;
        Ok(())
    }

    /// The layout a migration under way is bringing the store to: set (and flushed)
    /// before a migration step starts, cleared with the new layout version when it
    /// ends, so that a migration cut short is seen, never served half done.
    pub fn migrating(&self) -> Result<Option<u32>, StoreError> {
        Ok(match guarded("reading the migration marker", || Ok(self.meta.get(MIGRATING_KEY)?))? {
            Some(v) if v.len() == 4 => Some(u32::from_be_bytes(v.as_ref().try_into().expect("4"))),
            Some(_) => return Err(StoreError::Corrupt("meta.migrating_to is not 4 bytes".into())),
            None => None,
        })
    }

    pub fn set_migrating(&self, to: Option<u32>) -> Result<(), StoreError> {
        self.sled_written();
        match to {
            Some(v) => self.meta.insert(MIGRATING_KEY, &v.to_be_bytes())?,
            None => self.meta.remove(MIGRATING_KEY)?,
        };
        Ok(())
    }

    /// Every `meta` entry as (key, value), in key order: what a backup carries.
    pub fn meta_entries(&self) -> Result<Vec<MetaEntry>, StoreError> {
        guarded("reading the meta entries", || {
            self.meta.iter().map(|item| Ok(item.map(|(k, v)| (k.to_vec(), v.to_vec()))?)).collect()
        })
    }

    /// Writes one `meta` entry as a backup recorded it (durable with the next `flush`).
    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.sled_written();
        self.meta.insert(key, value)?;
        Ok(())
    }

    /// The sequence number of the last stored event, 0 for an empty log.
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.log.last_seq())
    }

    pub fn first_seq(&self) -> Result<u64, StoreError> {
        Ok(self.log.first_seq())
    }

    /// Notes a write to sled, for the next `flush`.
    fn sled_written(&self) {
        self.sled_written.store(true, Ordering::SeqCst);
    }

    /// Writes a batch of events (which must follow the last one without a gap) and
    /// token writes. Nothing is durable until `flush`.
    pub fn append(&self, records: &[Record<'_>], tokens: &[TokenWrite]) -> Result<(), StoreError> {
        let entries: Vec<Entry<'_>> = records
            .iter()
            .map(|r| Entry { seq: r.seq, node: r.node_id.map(NodeId::as_str), bytes: r.bytes })
            .collect();
        self.log.append(&entries)?;
        if !tokens.is_empty() {
            self.sled_written();
        }
        for t in tokens {
            match t {
                TokenWrite::Put { hash, principal } => {
                    self.tokens.insert(hash, principal.as_bytes())?;
                    self.tokens.insert(principal_key(principal), hash)?;
                }
                TokenWrite::Revoke { principal } => {
                    if let Some(hash) = self.tokens.remove(principal_key(principal))? {
                        self.tokens.remove(hash)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable: sled's part first (tokens before the
    /// events that hand them out; skipped when nothing was written to it), then the
    /// events' segment. sled 0.34's own flush ends in `sync_file_range`, which neither
    /// empties the disk's write cache nor records the file's new length, so its file is
    /// fdatasync'd here too.
    pub fn flush(&self) -> Result<(), StoreError> {
        if self.sled_written.swap(false, Ordering::SeqCst) {
            let flushed =
                self.db.flush().map_err(StoreError::from).and_then(|_| {
                    self.data_file.sync_data().map_err(|e| StoreError::Sled(sled::Error::Io(e)))
                });
            if let Err(e) = flushed {
                self.sled_written();
                return Err(e);
            }
        }
        self.log.sync()
    }

    /// Events with `from <= seq <= to`, in order, as raw encoded bytes, each checked
    /// against its record's checksum. A read that fails names the event; nothing is
    /// read after it.
    pub fn range(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + use<> {
        let log = self.log.clone();
        let to = to.min(log.last_seq());
        let mut next = from.max(1);
        let mut batch = std::collections::VecDeque::new();
        let mut failed = false;
        std::iter::from_fn(move || {
            if batch.is_empty() && !failed && next <= to {
                // A read per stretch of a segment, not per event: a replay of a large
                // log is bound by the bytes, not by system calls.
                match log.read(next, to, RANGE_READ_BYTES) {
                    Ok(events) => {
                        next = events.last().map_or(u64::MAX, |(seq, _)| seq + 1);
                        batch.extend(events.into_iter().map(Ok));
                    }
                    Err(e) => {
                        failed = true;
                        batch.push_back(Err(e));
                    }
                }
            }
            batch.pop_front()
        })
    }

    pub fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.log.get(seq)
    }

    /// Sequence numbers of the events about `node`, from `since` (exclusive), at most `limit`.
    pub fn node_seqs(&self, node: &NodeId, since: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        Ok(self.log.node_seqs(node.as_str(), since, limit))
    }

    /// Every entry of the per-node index (the node each record's header names) as
    /// (node id, seq), by node, then seq. For the checks at start-up and in `audit`.
    pub fn index_entries(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.index_entries_after(0)
    }

    /// The entries of the per-node index for the events after `after` (start-up checks
    /// those past its snapshot).
    pub fn index_entries_after(&self, after: u64) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self.log.index_entries(after))
    }

    /// Every token as (hash, principal): what `repair` carries over to a new store.
    pub fn tokens(&self) -> Result<Vec<([u8; 32], String)>, StoreError> {
        guarded("reading the tokens", || {
            let mut out = Vec::new();
            for item in self.tokens.iter() {
                let (k, v) = item?;
                if k.starts_with(b"principal:") {
                    continue;
                }
                if let Ok(hash) = <[u8; 32]>::try_from(k.as_ref()) {
                    out.push((hash, String::from_utf8_lossy(&v).into_owned()));
                }
            }
            Ok(out)
        })
    }

    /// Stores a projection snapshot as of `seq` in a file of its own,
    /// `<data>/snapshots/<seq>.snap` (the bytes, then their crc32): written aside,
    /// synced and renamed, so a crash leaves the old set or the new one, never half a
    /// file. Then only the newest `keep` stay. Files, not a sled tree: sled frees the
    /// space of a replaced value only when it cleans the segment that pointed at it,
    /// which a store written this seldom does not do (it grew by a snapshot a time).
    pub fn put_snapshot(&self, seq: u64, bytes: &[u8], keep: usize) -> Result<(), StoreError> {
        use std::io::Write;
        let dir = self.dir.join(SNAPSHOTS_DIR);
        std::fs::create_dir_all(&dir)?;
        for stale in files_in(&dir)?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "tmp")) {
            std::fs::remove_file(stale)?;
        }
        let path = dir.join(format!("{seq:020}.snap"));
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.write_all(&crc32fast::hash(bytes).to_le_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&dir)?;
        let snapshots = snapshot_files(&self.dir)?;
        for (_, old) in &snapshots[..snapshots.len().saturating_sub(keep)] {
            std::fs::remove_file(old)?;
        }
        Ok(())
    }

    /// Snapshots, newest first, as (sequence, bytes). One whose file does not match
    /// its checksum is an error of its own; the older ones still follow.
    pub fn snapshots_newest_first(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + use<> {
        let listed = snapshot_files(&self.dir);
        let (files, error) = match listed {
            Ok(files) => (files, None),
            Err(e) => (Vec::new(), Some(Err(StoreError::Io(e)))),
        };
        error.into_iter().chain(files.into_iter().rev().map(|(seq, path)| {
            let mut bytes = std::fs::read(&path)?;
            let crc = bytes.len().checked_sub(4).map(|at| bytes.split_off(at));
            match crc {
                Some(crc) if crc32fast::hash(&bytes).to_le_bytes() == crc[..] => Ok((seq, bytes)),
                _ => Err(StoreError::Corrupt(format!(
                    "the projection snapshot {} does not match its checksum",
                    path.display()
                ))),
            }
        }))
    }

    /// The hash of the token `principal` has (`node:<id>`), if any: what an import
    /// compares a file's token with.
    pub fn principal_token(&self, principal: &str) -> Result<Option<[u8; 32]>, StoreError> {
        let found = guarded("reading a token", || Ok(self.tokens.get(principal_key(principal))?))?;
        Ok(found.and_then(|v| <[u8; 32]>::try_from(v.as_ref()).ok()))
    }

    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<String>, StoreError> {
        let found = guarded("reading a token", || Ok(self.tokens.get(hash)?))?;
        Ok(found.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The acknowledged high-water mark, kept outside sled so that a log that lost
    /// acknowledged events (sled recovers a damaged file by truncating it) is caught
    /// at start-up instead of silently served. 0 when never written.
    pub fn watermark(&self) -> Result<u64, StoreError> {
        read_watermark(&self.dir)
    }

    /// Records that every event up to `seq` is durable (write, fsync, rename).
    pub fn set_watermark(&self, seq: u64) -> Result<(), StoreError> {
        use std::io::Write;
        let tmp = self.dir.join("watermark.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(seq.to_string().as_bytes())?;
        f.sync_data()?;
        std::fs::rename(&tmp, self.dir.join("watermark"))?;
        // The rename is durable only once the directory is.
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Bytes free for us on the data dir's filesystem (what an unprivileged writer may
    /// still use).
    pub fn free_bytes(&self) -> Result<u64, StoreError> {
        let stat = nix::sys::statvfs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        Ok((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
    }

    /// Writes the ballast if it is missing (see `BALLAST_BYTES`); true when it is there.
    pub fn ensure_ballast(&self) -> bool {
        let path = self.dir.join("ballast");
        if std::fs::metadata(&path).map(|m| m.len() == BALLAST_BYTES).unwrap_or(false) {
            return true;
        }
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            let tmp = self.dir.join("ballast.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            let zeros = vec![0u8; 1024 * 1024];
            for _ in 0..BALLAST_BYTES / zeros.len() as u64 {
                f.write_all(&zeros)?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(self.dir.join("ballast.tmp"));
            tracing::warn!(error = %e, "the ballast file could not be written");
            return false;
        }
        true
    }

    /// Writes command outputs (their hash is their key), dated `at_ms` for retention.
    /// Each output's bytes go to a file of their own, written and synced before its
    /// entry; the entries, like `append`, are durable only at `flush`: the ledger
    /// writes them in the flush of the event that refers to them. Empty outputs are not
    /// stored (an event says their size is 0). The same bytes written again are kept
    /// once, dated anew, with one more reference (so that dropping one fetch's copy
    /// keeps the others').
    pub fn put_outputs(&self, at_ms: u64, outputs: &[Vec<u8>]) -> Result<(), StoreError> {
        if outputs.iter().any(|b| !b.is_empty()) {
            self.sled_written();
        }
        for bytes in outputs.iter().filter(|b| !b.is_empty()) {
            let hash = hydra_events::OutputRef::of(bytes).hash;
            // The writer adds references while an answered fetch drops one and the
            // retention task prunes, each on its own thread: a file and its entry
            // change together, or a prune could delete a file just written again.
            let _files = self.output_files.lock();
            self.write_output_file(&hash, bytes)?;
            let size = bytes.len() as u64;
            let old = self.outputs.fetch_and_update(hash, |old| {
                let refs = old.map_or(0, |v| output_entry(v).refs).saturating_add(1);
                Some(output_value(at_ms, refs, size))
            })?;
            if let Some(old) = old {
                self.output_times.remove(output_time_key(output_entry(&old).at_ms, &hash))?;
            }
            self.output_times.insert(output_time_key(at_ms, &hash), &[])?;
        }
        Ok(())
    }

    /// Where the bytes of output `hash` are kept: `<data>/outputs/ab/abcd…` (hex).
    fn output_path(&self, hash: &[u8]) -> std::path::PathBuf {
        let name = hex::encode(hash);
        self.dir.join("outputs").join(&name[..2]).join(name)
    }

    /// Writes (and syncs, with its directory) the file of output `hash`, unless it is
    /// there already: the name is the hash of the content.
    fn write_output_file(&self, hash: &Hash, bytes: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        let path = self.output_path(hash);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            return Ok(());
        }
        let dir = path.parent().expect("an output file has a directory");
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(dir)?;
        Ok(())
    }

    /// Deletes the file of an output whose entry is gone. A file already gone is no
    /// error: a crash between the two left it so.
    fn remove_output_file(&self, hash: &[u8]) -> Result<(), StoreError> {
        match std::fs::remove_file(self.output_path(hash)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// The bytes stored under `hash`, or None when they were pruned (or never stored).
    /// Bytes that are missing or do not match their hash are refused as damage, never
    /// served.
    pub fn output(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.stored_output(hash)?.map(|o| o.bytes))
    }

    /// An output as it is stored: its date and reference count with its bytes (for a
    /// backup, which carries both so that retention and fetches go on after a restore).
    pub fn stored_output(&self, hash: &Hash) -> Result<Option<StoredOutput>, StoreError> {
        let Some(value) = guarded("reading an output", || Ok(self.outputs.get(hash)?))? else {
            return Ok(None);
        };
        let entry = output_entry(&value);
        let bytes = self.read_output_file(hash, entry.size)?;
        Ok(Some(StoredOutput { at_ms: entry.at_ms, refs: entry.refs, bytes }))
    }

    /// The file of output `hash`, checked against its size and hash.
    fn read_output_file(&self, hash: &Hash, size: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.output_path(hash);
        let bytes = std::fs::read(&path).map_err(|e| {
            StoreError::Corrupt(format!("the output {} cannot be read ({e})", path.display()))
        })?;
        if bytes.len() as u64 != size || hydra_events::OutputRef::of(&bytes).hash != *hash {
            return Err(StoreError::Corrupt(format!(
                "the output {} does not match its hash ({} bytes, {size} expected): it was altered",
                path.display(),
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Writes an output as a backup carried it, under the hash of its bytes. Like
    /// `put_outputs`, its entry is durable at the next `flush`.
    pub fn restore_output(&self, output: &StoredOutput) -> Result<(), StoreError> {
        self.sled_written();
        let hash = hydra_events::OutputRef::of(&output.bytes).hash;
        let _files = self.output_files.lock();
        self.write_output_file(&hash, &output.bytes)?;
        self.outputs.insert(hash, output_value(output.at_ms, output.refs, output.bytes.len() as u64))?;
        self.output_times.insert(output_time_key(output.at_ms, &hash), &[])?;
        Ok(())
    }

    /// Drops one reference to an output (the server's own fetches, once answered): the
    /// bytes go with the last one.
    pub fn remove_output(&self, hash: &Hash) -> Result<(), StoreError> {
        self.sled_written();
        let _files = self.output_files.lock();
        let old = self.outputs.fetch_and_update(hash, |old| {
            let mut entry = output_entry(old?);
            entry.refs = entry.refs.checked_sub(1).filter(|r| *r > 0)?;
            Some(output_value(entry.at_ms, entry.refs, entry.size))
        })?;
        if let Some(old) = old {
            let entry = output_entry(&old);
            if entry.refs <= 1 {
                self.output_times.remove(output_time_key(entry.at_ms, hash))?;
                self.remove_output_file(hash)?;
            }
        }
        Ok(())
    }

    /// Drops the outputs last written before `cutoff_ms`, whatever refers to them (every
    /// reference is older), and deletes their files (the space is back at once);
    /// returns how many. An output written again since its time entry was read (a
    /// newer date in its entry) stays.
    pub fn prune_outputs(&self, cutoff_ms: u64) -> Result<u64, StoreError> {
        self.sled_written();
        let mut pruned = 0u64;
        for entry in self.output_times.range(..cutoff_ms.to_be_bytes().to_vec()) {
            let (key, _) = entry?;
            let at = key.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
            if let Some(hash) = key.get(8..) {
                let _files = self.output_files.lock();
                let old = self.outputs.fetch_and_update(hash, |v| match v {
                    Some(v) if output_entry(v).at_ms != at => Some(v.to_vec()),
                    _ => None,
                })?;
                if old.is_some_and(|v| output_entry(&v).at_ms == at) {
                    self.remove_output_file(hash)?;
                    pruned += 1;
                }
            }
            self.output_times.remove(key)?;
        }
        Ok(pruned)
    }

    /// Every stored output as (hash it is stored under, its bytes): for the audit,
    /// which checks them against their hash (a file that is missing or altered is an
    /// error here already).
    pub fn outputs(&self) -> impl Iterator<Item = Result<(Hash, Vec<u8>), StoreError>> + '_ {
        self.outputs.iter().map(|entry| {
            let (key, value) = entry?;
            let hash: Hash = key.as_ref().try_into().map_err(|_| {
                StoreError::Corrupt(format!("an output key of {} bytes, not a 32-byte hash", key.len()))
            })?;
            let bytes = self.read_output_file(&hash, output_entry(&value).size)?;
            Ok((hash, bytes))
        })
    }

    /// Layout 1 → 2: moves the outputs that layout 1 kept inside sled (the `outputs`
    /// tree, bytes after the date and count) to files, entry by entry; each is written
    /// to its file and its new entry before the old one goes, so the step can be cut
    /// short and run again. Returns how many were moved.
    pub fn move_outputs_to_files(&self) -> Result<u64, StoreError> {
        self.sled_written();
        let legacy = self.db.open_tree(LEGACY_OUTPUTS)?;
        let mut moved = 0u64;
        for entry in legacy.iter() {
            let (key, value) = entry?;
            let hash: Hash = key.as_ref().try_into().map_err(|_| {
                StoreError::Corrupt(format!("an output key of {} bytes, not a 32-byte hash", key.len()))
            })?;
            let at_ms = value.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
            let refs = value.get(8..12).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes).unwrap_or(0);
            let bytes = value.get(12..).unwrap_or_default();
            self.write_output_file(&hash, bytes)?;
            self.outputs.insert(hash, output_value(at_ms, refs, bytes.len() as u64))?;
            legacy.remove(&key)?;
            moved += 1;
        }
        self.db.drop_tree(LEGACY_OUTPUTS)?;
        Ok(moved)
    }

    /// Overwrites the bytes stored under `hash`, keeping its entry: what tampering or
    /// damage would do, for the audit's tests.
    #[cfg(test)]
    pub(crate) fn overwrite_output(&self, hash: &Hash, bytes: &[u8]) {
        std::fs::write(self.output_path(hash), bytes).unwrap();
    }

    /// Bytes the store occupies on disk: sled's files and the event segments (not the
    /// outputs' files).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()? + self.log.size())
    }

    /// Copies every tree of sled into a fresh sled at `<data>/log.compact`, synced: the
    /// first half of `compact_sled`. (Hydra writes only to named trees; sled's default
    /// one stays empty and is not copied.)
    fn copy_sled(&self) -> Result<(), StoreError> {
        let path = self.dir.join(SLED_COMPACT);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        let target = sled::Config::new().path(&path).open()?;
        for name in self.db.tree_names() {
            if name.as_ref() == b"__sled__default" {
                continue;
            }
            let (from, to) = (self.db.open_tree(&name)?, target.open_tree(&name)?);
            for item in from.iter() {
                let (key, value) = guarded("copying sled's trees", || Ok(item?))?;
                to.insert(key, value)?;
            }
        }
        target.flush()?;
        std::fs::File::open(path.join("db"))?.sync_all()?;
        Ok(())
    }

    /// True when sled still holds events the way layouts 0 to 2 kept them (its
    /// `events` tree): such a store is not new even though its segments are empty.
    pub fn holds_legacy_events(&self) -> Result<bool, StoreError> {
        guarded("looking for events in sled", || {
            if !self.db.tree_names().iter().any(|n| n.as_ref() == LEGACY_EVENTS.as_bytes()) {
                return Ok(false);
            }
            Ok(!self.db.open_tree(LEGACY_EVENTS)?.is_empty())
        })
    }

    /// Layout 2 → 3: copies the events that sled kept (the `events` tree, keyed by BE
    /// seq) to segment files, with the node each is about as its header says, in
    /// batches; then drops sled's `events`, `node_index` and `snapshots` trees (the
    /// snapshots are files now; start-up replays once and writes one). A run cut short
    /// goes on after the last event already copied, so the step can be run again.
    /// Returns how many events were copied.
    pub fn move_events_to_segments(&self) -> Result<u64, StoreError> {
        let legacy = guarded("opening sled's events", || Ok(self.db.open_tree(LEGACY_EVENTS)?))?;
        let mut copied = 0u64;
        let mut batch: Vec<(u64, Vec<u8>, Option<NodeId>)> = Vec::new();
        let start = self.log.last_seq() + 1;
        let mut write = |batch: &mut Vec<(u64, Vec<u8>, Option<NodeId>)>| -> Result<(), StoreError> {
            let records: Vec<Record<'_>> = batch
                .iter()
                .map(|(seq, bytes, node)| Record { seq: *seq, bytes, node_id: node.as_ref() })
                .collect();
            self.append(&records, &[])?;
            copied += batch.len() as u64;
            batch.clear();
            Ok(())
        };
        for item in legacy.range(start.to_be_bytes()..) {
            let (key, bytes) = guarded("reading sled's events", || Ok(item?))?;
            let seq = decode_seq(&key)?;
            let envelope = hydra_events::decode(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("event {seq} does not decode: {e}")))?;
            batch.push((seq, bytes.to_vec(), envelope.event.node_id().cloned()));
            if batch.len() == 4096 {
                write(&mut batch)?;
            }
        }
        write(&mut batch)?;
        self.flush()?;
        for tree in [LEGACY_EVENTS, LEGACY_NODE_INDEX, LEGACY_SNAPSHOTS] {
            guarded("dropping sled's events", || Ok(self.db.drop_tree(tree)?))?;
        }
        self.sled_written();
        Ok(copied)
    }
}

/// An output's entry: its date (BE u64 ms), its reference count (BE u32) and its size
/// (BE u64); the bytes are in its file.
fn output_value(at_ms: u64, refs: u32, size: u64) -> Vec<u8> {
    [&at_ms.to_be_bytes()[..], &refs.to_be_bytes(), &size.to_be_bytes()].concat()
}

/// The tree where layout 1 kept outputs with their bytes (see `move_outputs_to_files`).
const LEGACY_OUTPUTS: &str = "outputs";
/// How many bytes of records `range` reads at once.
const RANGE_READ_BYTES: u64 = 1024 * 1024;
/// The trees where layouts 0 to 2 kept the events and the per-node index (see
/// `move_events_to_segments`).
const LEGACY_EVENTS: &str = "events";
const LEGACY_NODE_INDEX: &str = "node_index";
/// The tree where layouts 0 to 2 kept the projection snapshots (now files, see
/// `put_snapshot`); the move to layout 3 drops it (start-up replays and writes one).
const LEGACY_SNAPSHOTS: &str = "snapshots";
/// The directory of the projection snapshots inside the data dir.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// The paths of the entries of `dir` (none when it does not exist).
fn files_in(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The projection snapshot files of the data dir `data`, oldest first, with their seq.
fn snapshot_files(data: &Path) -> std::io::Result<Vec<(u64, std::path::PathBuf)>> {
    let mut found: Vec<_> = files_in(&data.join(SNAPSHOTS_DIR))?
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            Some((name.strip_suffix(".snap")?.parse::<u64>().ok()?, p))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Where `compact_sled` builds the new sled, and where the old one waits to be deleted.
const SLED_COMPACT: &str = "log.compact";
const SLED_OLD: &str = "log.old";

/// Gives back the space sled kept after the events left it (layout 2 → 3): sled reuses
/// the pages it frees but never shrinks its file, so what is left in it (tokens, meta,
/// the outputs' entries: small) is copied into a fresh sled, which takes the old one's
/// place: `log` → `log.old`, `log.compact` → `log`, then `log.old` is deleted. A crash
/// anywhere in between leaves a data dir the next open puts right
/// (`finish_sled_swap`). Takes the store open (its segments are not read again) and
/// closes it. Returns sled's bytes before and after.
pub fn compact_sled(store: Store) -> Result<(u64, u64), StoreError> {
    let dir = store.dir.clone();
    let dir = dir.as_path();
    let log = dir.join("log");
    let before = dir_bytes(&log)?;
    store.copy_sled()?;
    drop(store);
    // sled lets go of its lock a moment after its last handle is dropped.
    if in_use(dir) {
        return Err(StoreError::Io(std::io::Error::other(format!(
            "{} is still in use: nothing was swapped",
            log.display()
        ))));
    }
    std::fs::rename(&log, dir.join(SLED_OLD))?;
    sync_dir(dir)?;
    std::fs::rename(dir.join(SLED_COMPACT), &log)?;
    sync_dir(dir)?;
    std::fs::remove_dir_all(dir.join(SLED_OLD))?;
    Ok((before, dir_bytes(&log)?))
}

/// Puts right a swap of `compact_sled` that a crash cut short, before sled opens:
/// with no `log`, the new sled (complete before the swap began) takes its place, or
/// failing that the old one goes back; with `log` there, what is left beside it goes.
fn finish_sled_swap(dir: &Path) -> Result<(), StoreError> {
    let (log, old, new) = (dir.join("log"), dir.join(SLED_OLD), dir.join(SLED_COMPACT));
    if !log.exists() && old.exists() {
        let back = if new.exists() { &new } else { &old };
        tracing::warn!(from = %back.display(), "finishing a swap of sled's directory that was cut short");
        std::fs::rename(back, &log)?;
        sync_dir(dir)?;
    }
    for leftover in [old, new] {
        if log.exists() && leftover.exists() {
            std::fs::remove_dir_all(&leftover)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for path in files_in(dir)? {
        let meta = std::fs::metadata(&path)?;
        total += if meta.is_dir() { dir_bytes(&path)? } else { meta.len() };
    }
    Ok(total)
}

/// The acknowledged high-water mark of the store in `dir` (see `Store::watermark`).
fn read_watermark(dir: &Path) -> Result<u64, StoreError> {
    match std::fs::read_to_string(dir.join("watermark")) {
        Ok(s) => s.trim().parse().map_err(|_| {
            StoreError::Corrupt(format!("the watermark file holds {:?}, not a number", s.trim()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::Io(e)),
    }
}

/// What an output's entry says.
struct OutputEntry {
    at_ms: u64,
    refs: u32,
    size: u64,
}

/// An output's entry read (zeros for an entry too short, whose file then does not
/// match its size: reported as damage).
fn output_entry(value: &[u8]) -> OutputEntry {
    let at_ms = value.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
    let refs = value.get(8..12).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes).unwrap_or(0);
    let size = value.get(12..20).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
    OutputEntry { at_ms, refs, size }
}

/// One command output with what the store keeps beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutput {
    /// When it was last written (ms since the epoch): retention counts from here.
    pub at_ms: u64,
    /// How many results refer to it (an answered fetch drops one).
    pub refs: u32,
    pub bytes: Vec<u8>,
}

/// An output's entry in the time index: its date, then its hash.
fn output_time_key(at_ms: u64, hash: &[u8]) -> Vec<u8> {
    [&at_ms.to_be_bytes()[..], hash].concat()
}

/// Deletes `<dir>/ballast`; true when there was one.
fn release_ballast(dir: &Path) -> bool {
    std::fs::remove_file(dir.join("ballast")).is_ok()
}

/// sled's own page-table snapshots in its directory (`snap.<lsn>` and unfinished
/// `snap.<lsn>.generating`): every file sled would try to read at open.
fn sled_snapshot_files(log: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(log) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("snap.")))
        .collect()
}

/// True when a process (a running server) holds sled's lock on the store in `dir`.
/// sled lets go of its lock from its own threads a moment after the last handle is
/// dropped, so a lock found held is looked at again for up to `LOCK_RELEASE_WAIT`
/// before it counts as another holder's: an open right after a close in the same
/// process (a restart, an offline command after a stop) must not take it for one.
pub fn in_use(dir: &Path) -> bool {
    let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
    while locked(dir) {
        if std::time::Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// One look at sled's lock on the store in `dir`.
fn locked(dir: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(dir.join("log").join("db")) else {
        return false;
    };
    // sled takes an exclusive flock on its data file for as long as it is open.
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
}

/// What a raw scan of a store's files found: the events that chain from seq 1 (each
/// one's hash is the next one's `prev_hash`), and the readable events past them.
#[derive(Debug, Default)]
pub struct Salvage {
    /// Events 1..=n as encoded bytes, the hash chain verified.
    pub chain: Vec<Vec<u8>>,
    /// Other records found with a sequence number past the chain (one per distinct
    /// content, in sequence order): what a truncation drops.
    pub beyond: Vec<(u64, Vec<u8>)>,
}

/// Reads the events of a store straight from its files, read-only: the segments, and
/// sled's `log/db` and `log/blobs/*` (where layouts 0 to 2 kept the events: sled keeps
/// values uncompressed, and every version of a page it ever wrote holds them, so a
/// record lost in one place is often whole in another). A record counts only if it decodes and chains: event 1 to the zero hash,
/// each next one to the hash of the one before. For when sled cannot open or read a
/// damaged log, and for `repair`, which must not depend on sled's own recovery.
pub fn salvage(dir: &Path) -> std::io::Result<Salvage> {
    let log = dir.join("log");
    let mut files = segments::files(dir);
    files.push(log.join("db"));
    if let Ok(blobs) = std::fs::read_dir(log.join("blobs")) {
        files.extend(blobs.filter_map(|e| e.ok().map(|e| e.path())));
    }
    // seq → distinct records: (hash, prev_hash, bytes).
    let mut found: std::collections::BTreeMap<u64, Vec<(Hash, Hash, Vec<u8>)>> = Default::default();
    for file in files {
        let data = std::fs::read(&file)?;
        let mut at = 0;
        let format = |b: &u8| *b == hydra_events::FORMAT_V1 || *b == hydra_events::FORMAT_V2;
        while let Some(offset) = data[at..].iter().position(format) {
            let start = at + offset;
            at = start + 1;
            let Ok((envelope, len)) = hydra_events::decode_prefix(&data[start..]) else { continue };
            if envelope.seq == 0 {
                continue;
            }
            let bytes = &data[start..start + len];
            // Only what the codec writes back identically is a record, not a lucky parse.
            if !hydra_events::is_canonical(&envelope, bytes) {
                continue;
            }
            let hash = hydra_events::hash(bytes);
            let same = found.entry(envelope.seq).or_default();
            if !same.iter().any(|(h, _, _)| *h == hash) {
                same.push((hash, envelope.prev_hash, bytes.to_vec()));
            }
        }
    }
    let mut out = Salvage::default();
    let mut prev = ZERO_HASH;
    let mut seq = 1;
    while let Some(candidates) = found.get(&seq) {
        let fits: Vec<&(Hash, Hash, Vec<u8>)> = candidates.iter().filter(|(_, p, _)| *p == prev).collect();
        // Two different records that both chain here: keep the one the next event
        // vouches for; with no such witness the chain ends before them.
        let chosen = match fits.as_slice() {
            [one] => Some(*one),
            [] => None,
            many => {
                let next = found.get(&(seq + 1));
                let vouched: Vec<_> = many
                    .iter()
                    .filter(|(h, _, _)| next.is_some_and(|n| n.iter().any(|(_, p, _)| p == h)))
                    .collect();
                match vouched.as_slice() {
                    [one] => Some(**one),
                    _ => None,
                }
            }
        };
        let Some((hash, _, bytes)) = chosen else { break };
        prev = *hash;
        out.chain.push(bytes.clone());
        seq += 1;
    }
    for (s, records) in found.range(seq..) {
        out.beyond.extend(records.iter().map(|(_, _, b)| (*s, b.clone())));
    }
    Ok(out)
}

/// The reverse entry (principal → hash), so that a token can be revoked by owner.
fn principal_key(principal: &str) -> Vec<u8> {
    [b"principal:".as_slice(), principal.as_bytes()].concat()
}

fn decode_seq(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("event key of {} bytes, expected 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_kept_once_by_hash_and_pruned_by_their_latest_date() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (b"same bytes".to_vec(), b"other".to_vec());
        let hash = |bytes: &[u8]| hydra_events::OutputRef::of(bytes).hash;
        store.put_outputs(100, &[a.clone(), b.clone(), Vec::new()]).unwrap();
        // Written again later: one copy, dated anew, so an older cutoff keeps it.
        store.put_outputs(300, std::slice::from_ref(&a)).unwrap();
        assert_eq!(store.outputs().count(), 2, "the empty output is not stored");
        assert_eq!(store.prune_outputs(200).unwrap(), 1);
        assert_eq!(store.output(&hash(&a)).unwrap(), Some(a.clone()));
        assert_eq!(store.output(&hash(&b)).unwrap(), None);
        // Two commands printed `a`: dropping one's copy keeps the other's.
        store.remove_output(&hash(&a)).unwrap();
        assert_eq!(store.output(&hash(&a)).unwrap(), Some(a.clone()));
        store.remove_output(&hash(&a)).unwrap();
        assert_eq!((store.outputs().count(), store.prune_outputs(u64::MAX).unwrap()), (0, 0));
    }

    /// The files under `<data>/outputs`, by name.
    fn output_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = walk(&dir.join("outputs"))
            .into_iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .flat_map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p)
                } else {
                    vec![p]
                }
            })
            .collect()
    }

    #[test]
    fn an_output_is_a_file_that_pruning_deletes_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let big = vec![7u8; 300 * 1024];
        let hash = hydra_events::OutputRef::of(&big).hash;
        store.put_outputs(100, std::slice::from_ref(&big)).unwrap();
        assert_eq!(output_files(dir.path()), vec![hex::encode(hash)]);
        assert_eq!(store.output(&hash).unwrap(), Some(big.clone()));
        // What retention prunes leaves the disk at once.
        assert_eq!(store.prune_outputs(200).unwrap(), 1);
        assert!(output_files(dir.path()).is_empty());
        assert_eq!(store.output(&hash).unwrap(), None);

        // A file altered or gone is refused as damage, never served.
        store.put_outputs(300, std::slice::from_ref(&big)).unwrap();
        store.overwrite_output(&hash, b"tampered");
        let err = store.output(&hash).unwrap_err();
        assert!(err.is_damage() && err.to_string().contains("does not match its hash"), "{err}");
        std::fs::remove_file(store.output_path(&hash)).unwrap();
        let err = store.output(&hash).unwrap_err();
        assert!(err.is_damage() && err.to_string().contains("cannot be read"), "{err}");
    }

    #[test]
    fn outputs_kept_inside_the_log_by_layout_1_move_to_files_and_a_second_run_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let legacy = store.db.open_tree(LEGACY_OUTPUTS).unwrap();
        let bytes = b"printed under layout 1".to_vec();
        let hash = hydra_events::OutputRef::of(&bytes).hash;
        let value = [&500u64.to_be_bytes()[..], &2u32.to_be_bytes(), &bytes].concat();
        legacy.insert(hash, value).unwrap();
        store.output_times.insert(output_time_key(500, &hash), &[]).unwrap();
        assert_eq!(store.output(&hash).unwrap(), None, "not readable before the move");

        assert_eq!(store.move_outputs_to_files().unwrap(), 1);
        let moved = store.stored_output(&hash).unwrap().unwrap();
        assert_eq!(moved, StoredOutput { at_ms: 500, refs: 2, bytes: bytes.clone() });
        assert!(!store.db.tree_names().iter().any(|n| n.as_ref() == LEGACY_OUTPUTS.as_bytes()));
        assert_eq!(store.move_outputs_to_files().unwrap(), 0);
        // Retention goes on from the date the output had.
        assert_eq!(store.prune_outputs(501).unwrap(), 1);
        assert!(output_files(dir.path()).is_empty());
    }

    #[test]
    fn appended_events_read_back_in_order_and_by_node() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = NodeId::parse("node-a").unwrap();
        let b = NodeId::parse("node-b").unwrap();
        let records = [
            Record { seq: 1, bytes: b"one", node_id: Some(&a) },
            Record { seq: 2, bytes: b"two", node_id: Some(&b) },
            Record { seq: 3, bytes: b"three", node_id: Some(&a) },
            Record { seq: 4, bytes: b"four", node_id: None },
        ];
        store.append(&records, &[]).unwrap();
        store.flush().unwrap();
        let seqs: Vec<u64> = store.range(2, 10).map(|r| r.unwrap().0).collect();
        assert_eq!(seqs, vec![2, 3, 4]);
        assert_eq!(store.range(5, 4).count(), 0);
        assert_eq!(store.last_seq().unwrap(), 4);
        assert_eq!(store.node_seqs(&a, 0, 10).unwrap(), vec![1, 3]);
        assert_eq!(store.node_seqs(&a, 1, 10).unwrap(), vec![3]);
        // "node-a" must not match "node-ab": the index key ends the id with a 0 byte.
        let ab = NodeId::parse("node-ab").unwrap();
        assert!(store.node_seqs(&ab, 0, 10).unwrap().is_empty());
    }

    #[test]
    fn compacting_sled_keeps_what_it_holds_and_a_swap_cut_short_is_put_right_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let principal = "node:node-a".to_owned();
        {
            let store = Store::open(dir.path()).unwrap();
            store.append(&[], &[TokenWrite::Put { hash: [7; 32], principal: principal.clone() }]).unwrap();
            store.set_layout_version(3).unwrap();
            store.put_outputs(100, &[b"printed".to_vec()]).unwrap();
            store.flush().unwrap();
        }
        let check = |dir: &Path| {
            let store = Store::open(dir).unwrap();
            assert_eq!(store.token(&[7; 32]).unwrap(), Some(principal.clone()));
            assert_eq!(store.layout_version().unwrap(), 3);
            assert_eq!(
                store.output(&hydra_events::OutputRef::of(b"printed").hash).unwrap(),
                Some(b"printed".to_vec())
            );
        };
        compact_sled(Store::open(dir.path()).unwrap()).unwrap();
        check(dir.path());
        let names = |dir: &Path| {
            let mut n: Vec<String> = files_in(dir)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert!(!names(dir.path()).iter().any(|n| n.starts_with("log.")), "{:?}", names(dir.path()));

        // Cut short after the old sled moved aside: the copy (complete) takes its place.
        Store::open(dir.path()).unwrap().copy_sled().unwrap();
        assert!(!in_use(dir.path()));
        std::fs::rename(dir.path().join("log"), dir.path().join(SLED_OLD)).unwrap();
        check(dir.path());
        assert!(!names(dir.path()).iter().any(|n| n.starts_with("log.")), "{:?}", names(dir.path()));
        // Cut short while copying: the partial copy goes, the store is as it was.
        std::fs::create_dir(dir.path().join(SLED_COMPACT)).unwrap();
        std::fs::write(dir.path().join(SLED_COMPACT).join("db"), b"half a copy").unwrap();
        check(dir.path());
        assert!(!names(dir.path()).iter().any(|n| n.starts_with("log.")), "{:?}", names(dir.path()));
    }

    #[test]
    fn old_snapshots_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for seq in 1..=5 {
            store.put_snapshot(seq * 10, b"x", 2).unwrap();
        }
        let seqs: Vec<u64> = store.snapshots_newest_first().map(|r| r.unwrap().0).collect();
        assert_eq!(seqs, vec![50, 40]);
        assert_eq!(
            std::fs::read_dir(dir.path().join(SNAPSHOTS_DIR)).unwrap().count(),
            2,
            "the files went too"
        );
    }

    #[test]
    fn a_snapshot_file_that_does_not_match_its_checksum_is_an_error_and_the_older_one_follows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_snapshot(10, b"older views", 3).unwrap();
        store.put_snapshot(20, b"newer views", 3).unwrap();
        let newest = dir.path().join(SNAPSHOTS_DIR).join(format!("{:020}.snap", 20));
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes[0] ^= 0x01;
        std::fs::write(&newest, bytes).unwrap();
        let read: Vec<_> = store.snapshots_newest_first().collect();
        assert!(
            matches!(&read[0], Err(e) if e.is_damage() && e.to_string().contains("does not match its checksum"))
        );
        assert_eq!(read[1].as_ref().unwrap(), &(10, b"older views".to_vec()));
        // A file cut short by a crash before its rename is never read, and goes at the next write.
        std::fs::write(dir.path().join(SNAPSHOTS_DIR).join(format!("{:020}.tmp", 30)), b"half").unwrap();
        store.put_snapshot(40, b"views", 3).unwrap();
        let seqs: Vec<u64> = store.snapshots_newest_first().filter_map(Result::ok).map(|s| s.0).collect();
        assert_eq!(seqs, vec![40, 10]);
        assert_eq!(std::fs::read_dir(dir.path().join(SNAPSHOTS_DIR)).unwrap().count(), 3);
    }
}
