//! The sled-backed event store: the only module that knows sled. Events are keyed by
//! big-endian sequence number; beside them live a per-node index, projection
//! snapshots, hashed tokens and `meta` (layout version).

use hydra_events::NodeId;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("the event log is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the filesystem ran out of space (ENOSPC) or of quota (EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sled(sled::Error::Io(e)) => {
                matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            }
            _ => false,
        }
    }
}

/// A record for the `events` tree, prepared by the ledger.
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
    /// sled's data file, fdatasync'd after every flush (see `flush`).
    data_file: std::sync::Arc<std::fs::File>,
    events: sled::Tree,
    node_index: sled::Tree,
    snapshots: sled::Tree,
    tokens: sled::Tree,
    meta: sled::Tree,
}

const LAYOUT_KEY: &[u8] = b"layout_version";

/// Size of `<data>/ballast`, a file of zeros kept only to be deleted: sled needs room to
/// open a log (it pads the tail of its last segment, ~512 KiB), so on a disk that
/// something else filled, giving this back lets the server start read-only instead of
/// failing to open. Re-created once space is back.
pub const BALLAST_BYTES: u64 = 8 * 1024 * 1024;

impl Store {
    /// Opens the store; on a full disk, releases the ballast and tries once more.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        match Store::open_sled(dir) {
            Err(e) if e.is_disk_full() && release_ballast(dir) => {
                tracing::warn!(
                    "the disk is full: released the {} MiB ballast in {} so the log can open (read-only \
                     until space is freed)",
                    BALLAST_BYTES / (1024 * 1024),
                    dir.display()
                );
                Store::open_sled(dir)
            }
            opened => opened,
        }
    }

    fn open_sled(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(sled::Error::Io)?;
        let db = sled::Config::new().path(dir.join("log")).cache_capacity(256 * 1024 * 1024).open()?;
        let data_file = std::fs::File::open(dir.join("log").join("db")).map_err(sled::Error::Io)?;
        Ok(Store {
            dir: dir.to_owned(),
            data_file: std::sync::Arc::new(data_file),
            events: db.open_tree("events")?,
            node_index: db.open_tree("node_index")?,
            snapshots: db.open_tree("snapshots")?,
            tokens: db.open_tree("tokens")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    pub fn layout_version(&self) -> Result<u32, StoreError> {
        Ok(match self.meta.get(LAYOUT_KEY)? {
            Some(v) if v.len() == 4 => u32::from_be_bytes(v.as_ref().try_into().expect("4")),
            Some(_) => return Err(StoreError::Corrupt("meta.layout_version is not 4 bytes".into())),
            None => 0,
        })
    }

    pub fn set_layout_version(&self, version: u32) -> Result<(), StoreError> {
        self.meta.insert(LAYOUT_KEY, &version.to_be_bytes())?;
        Ok(())
    }

    /// The sequence number of the last stored event, 0 for an empty log.
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        match self.events.last()? {
            Some((k, _)) => decode_seq(&k),
            None => Ok(0),
        }
    }

    pub fn first_seq(&self) -> Result<u64, StoreError> {
        match self.events.first()? {
            Some((k, _)) => decode_seq(&k),
            None => Ok(0),
        }
    }

    /// Writes a batch of events, their index entries and token writes. Nothing is
    /// durable until `flush`.
    pub fn append(&self, records: &[Record<'_>], tokens: &[TokenWrite]) -> Result<(), StoreError> {
        let mut events = sled::Batch::default();
        let mut index = sled::Batch::default();
        for r in records {
            events.insert(&r.seq.to_be_bytes(), r.bytes);
            if let Some(node) = r.node_id {
                index.insert(index_key(node, r.seq), &[]);
            }
        }
        self.events.apply_batch(events)?;
        self.node_index.apply_batch(index)?;
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

    /// Makes everything written so far durable: one flush and one fdatasync for the
    /// whole batch. sled 0.34's own flush ends in `sync_file_range`, which neither
    /// empties the disk's write cache nor records the file's new length, so on its own
    /// it would acknowledge events that a power cut can still take away.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file.sync_data().map_err(sled::Error::Io)?;
        Ok(())
    }

    /// Adds index entries again (idempotent): used when replaying the tail at start-up,
    /// in case a crash came between the events and their index.
    pub fn reindex(&self, node: &NodeId, seq: u64) -> Result<(), StoreError> {
        self.node_index.insert(index_key(node, seq), &[])?;
        Ok(())
    }

    /// Events with `from <= seq <= to`, in order, as raw encoded bytes.
    pub fn range(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<(u64, sled::IVec), StoreError>> + use<> {
        let iter = if from > to {
            self.events.range(1u64.to_be_bytes()..1u64.to_be_bytes())
        } else {
            self.events.range(from.to_be_bytes()..=to.to_be_bytes())
        };
        iter.map(|item| {
            let (k, v) = item?;
            Ok((decode_seq(&k)?, v))
        })
    }

    pub fn get(&self, seq: u64) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.events.get(seq.to_be_bytes())?)
    }

    /// Sequence numbers of the events about `node`, from `since` (exclusive), at most `limit`.
    pub fn node_seqs(&self, node: &NodeId, since: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let start = index_key(node, since.saturating_add(1));
        let end = index_key(node, u64::MAX);
        let mut out = Vec::new();
        for item in self.node_index.range(start..=end).take(limit) {
            let (k, _) = item?;
            out.push(decode_seq(&k[k.len() - 8..])?);
        }
        Ok(out)
    }

    pub fn put_snapshot(&self, seq: u64, bytes: &[u8], keep: usize) -> Result<(), StoreError> {
        self.snapshots.insert(seq.to_be_bytes(), bytes)?;
        let count = self.snapshots.len();
        if count > keep {
            let old: Vec<_> = self.snapshots.iter().keys().take(count - keep).collect();
            for k in old {
                self.snapshots.remove(k?)?;
            }
        }
        Ok(())
    }

    /// Snapshots, newest first, as (sequence, bytes).
    pub fn snapshots_newest_first(
        &self,
    ) -> impl Iterator<Item = Result<(u64, sled::IVec), StoreError>> + use<> {
        self.snapshots.iter().rev().map(|item| {
            let (k, v) = item?;
            Ok((decode_seq(&k)?, v))
        })
    }

    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<String>, StoreError> {
        Ok(self.tokens.get(hash)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The acknowledged high-water mark, kept outside sled so that a log that lost
    /// acknowledged events (sled recovers a damaged file by truncating it) is caught
    /// at start-up instead of silently served. 0 when never written.
    pub fn watermark(&self) -> Result<u64, StoreError> {
        match std::fs::read_to_string(self.dir.join("watermark")) {
            Ok(s) => s.trim().parse().map_err(|_| {
                StoreError::Corrupt(format!("the watermark file holds {:?}, not a number", s.trim()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::Sled(sled::Error::Io(e))),
        }
    }

    /// Records that every event up to `seq` is durable (write, fsync, rename).
    pub fn set_watermark(&self, seq: u64) -> Result<(), StoreError> {
        use std::io::Write;
        let tmp = self.dir.join("watermark.tmp");
        let io = |e| StoreError::Sled(sled::Error::Io(e));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(seq.to_string().as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)?;
        std::fs::rename(&tmp, self.dir.join("watermark")).map_err(io)?;
        // The rename is durable only once the directory is.
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }

    /// Bytes free for us on the data dir's filesystem (what an unprivileged writer may
    /// still use).
    pub fn free_bytes(&self) -> Result<u64, StoreError> {
        let stat = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| StoreError::Sled(sled::Error::Io(std::io::Error::from(e))))?;
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

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// Deletes `<dir>/ballast`; true when there was one.
fn release_ballast(dir: &Path) -> bool {
    std::fs::remove_file(dir.join("ballast")).is_ok()
}

/// The reverse entry (principal → hash), so that a token can be revoked by owner.
fn principal_key(principal: &str) -> Vec<u8> {
    [b"principal:".as_slice(), principal.as_bytes()].concat()
}

fn index_key(node: &NodeId, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(node.as_str().len() + 9);
    key.extend_from_slice(node.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
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
    fn old_snapshots_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for seq in 1..=5 {
            store.put_snapshot(seq * 10, b"x", 2).unwrap();
        }
        let seqs: Vec<u64> = store.snapshots_newest_first().map(|r| r.unwrap().0).collect();
        assert_eq!(seqs, vec![50, 40]);
    }
}
