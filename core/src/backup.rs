//! The backup format and the two ends of it: writing a service's log (as of one
//! sequence number) into one portable, compressed file, and restoring such a file into
//! a new data dir, checked record by record. The format knows nothing of sled: events
//! travel as the codec's bytes, so the file can also carry a log to another store.
//! `docs/backup.md` gives the byte layout.
//!
//! The decompressed stream is `HYDRABAK`, a big-endian u32 format version, then frames
//! of `tag: u8, len: u32 BE, payload`: one header (`H`, JSON), the events 1..=seq
//! (`E`), the token hashes (`T`), the meta entries (`M`), the command outputs those
//! events refer to (`O`, since version 2) and a trailer (`Z`) with the counts, the hash
//! of the last event and a blake3 checksum of everything before it.

use crate::audit::{read_checked_records, replay_into, Chain, Stop};
use crate::ledger::{check_record, now_ms, recover};
use crate::store::{self, Record, Store, StoreError, StoredOutput, TokenWrite};
use hydra_events::{Envelope, Hash};
use hydra_projections::Projection;
use std::collections::HashSet;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// The first bytes of the decompressed stream.
pub const MAGIC: &[u8; 8] = b"HYDRABAK";
/// The version of the layout below the magic; a reader refuses versions it does not know.
/// 2 added the outputs (`O` frames, and their count in the trailer); a version 1 file
/// still restores, its results' outputs then reported as pruned.
pub const FORMAT_VERSION: u32 = 2;

const HEADER: u8 = b'H';
const EVENT: u8 = b'E';
const TOKEN: u8 = b'T';
const META: u8 = b'M';
const OUTPUT: u8 = b'O';
const TRAILER: u8 = b'Z';

/// The largest frame: an event decodes only up to 64 MiB (the codec's cap), plus its
/// frame fields. A length past it is damage, never an allocation.
const MAX_FRAME: u32 = (64 << 20) + 40;
/// The header is a small JSON object, a principal or a meta key a short string.
const MAX_HEADER: u32 = 64 * 1024;
const MAX_PRINCIPAL: usize = 1024;
/// `E` frame: seq (8) and prev_hash (32) before the record.
const EVENT_FIELDS: usize = 40;
/// `O` frame: the output's date (8) and reference count (4) before its bytes.
const OUTPUT_FIELDS: usize = 12;
/// The frame kinds in the order they come.
const ORDER: [u8; 6] = [HEADER, EVENT, TOKEN, META, OUTPUT, TRAILER];
/// Events appended to the new store per batch while restoring.
const RESTORE_BATCH: usize = 1024;

/// What a backup says of itself, first in the file (JSON, so any tool reads it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    /// The program whose log this is (`hydracluster`, `hydraexperiencelibrary`).
    pub service: String,
    /// The backup holds events 1..=seq.
    pub seq: u64,
    /// The digest of the views after event `seq` (as `GET /api/v1/audit/digest` says).
    pub digest: String,
    /// The version of the views the digest was computed with: a build with other views
    /// computes another digest for the same events.
    pub views_version: u32,
    pub created_at_ms: u64,
    /// The Hydra version that wrote the file.
    pub hydra_version: String,
}

impl Header {
    /// The header of a backup of `service` at `seq` whose views had `digest`.
    pub fn new<P: Projection>(service: &str, seq: u64, digest: String) -> Header {
        Header {
            service: service.to_owned(),
            seq,
            digest,
            views_version: P::VERSION,
            created_at_ms: now_ms(),
            hydra_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// What a backup carries beside the events, read from the store at the moment of the
/// backup: the token hashes (hash → principal) and the meta entries.
#[derive(Debug, Default)]
pub struct Extras {
    pub tokens: Vec<([u8; 32], String)>,
    pub meta: Vec<store::MetaEntry>,
}

impl Extras {
    pub fn read(store: &Store) -> Result<Extras, StoreError> {
        Ok(Extras { tokens: store.tokens()?, meta: store.meta_entries()? })
    }
}

/// What a backup holds, once written or read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub header: Header,
    pub events: u64,
    pub tokens: u64,
    pub meta: u64,
    /// Outputs carried (those of the events still in the store at the backup's moment).
    pub outputs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file is not what was written: the position says where it stops making sense.
    #[error(
        "the backup is damaged at byte {offset} of its uncompressed stream (after event seq {after_seq}): {what}"
    )]
    Damaged { offset: u64, after_seq: u64, what: String },
    #[error(
        "the backup is truncated: it ends at byte {offset} of its uncompressed stream, after event seq \
         {after_seq}{}",
        of_seq(.seq)
    )]
    Truncated { offset: u64, after_seq: u64, seq: Option<u64> },
    /// The operation is refused as asked (a dir with data, another service's file, …).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

fn of_seq(seq: &Option<u64>) -> String {
    seq.map(|s| format!(" of {s}")).unwrap_or_default()
}

/// Writes the backup of events 1..=`header.seq` of `store`, with `extras`, to `out`
/// (gzip). Every event is checked on the way (contiguous, decodes, chained), so a
/// damaged log is refused rather than copied. A token of a node that is not in the log
/// as of `header.seq` is left out (the node enrolled after the backup's moment); a token
/// revoked since then is not in `extras` any more, and its node (removed or rejected
/// after that moment) comes back from the backup without a working token.
pub fn write_backup(
    store: &Store,
    header: &Header,
    extras: &Extras,
    out: impl Write,
) -> Result<Summary, BackupError> {
    let mut w = FrameWriter {
        out: flate2::write::GzEncoder::new(out, flate2::Compression::default()),
        checksum: blake3::Hasher::new(),
    };
    w.raw(MAGIC)?;
    w.raw(&FORMAT_VERSION.to_be_bytes())?;
    let json = serde_json::to_vec(header).expect("a header always serializes");
    w.frame(HEADER, &[&json])?;
    let mut nodes = HashSet::new();
    let mut outputs = Vec::new();
    let mut seen_outputs = HashSet::new();
    let mut chain = Chain::start();
    let mut failed = None;
    read_checked_records(store, header.seq, &mut chain, |envelope, bytes| {
        if let Some(node) = envelope.event.node_id() {
            nodes.insert(crate::auth::node_principal(node));
        }
        outputs.extend(envelope.event.output_refs().map(|r| r.hash).filter(|h| seen_outputs.insert(*h)));
        let written = w.frame(EVENT, &[&envelope.seq.to_be_bytes(), &envelope.prev_hash, bytes]);
        failed = written.err();
        failed.is_none()
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let events = chain.next - 1;
    if events != header.seq {
        return Err(StoreError::Corrupt(format!(
            "the log should hold events up to seq {} but stops after seq {events}",
            header.seq
        ))
        .into());
    }
    let mut tokens = 0u64;
    for (hash, principal) in &extras.tokens {
        if principal.starts_with("node:") && !nodes.contains(principal) {
            continue;
        }
        w.frame(TOKEN, &[hash, principal.as_bytes()])?;
        tokens += 1;
    }
    for (key, value) in &extras.meta {
        w.frame(META, &[&(key.len() as u32).to_be_bytes(), key, value])?;
    }
    let meta = extras.meta.len() as u64;
    // An output pruned since its event was written is not there to carry: its result
    // says so after a restore as it does now.
    let mut carried = 0u64;
    for hash in &outputs {
        if let Some(o) = store.stored_output(hash)? {
            w.frame(OUTPUT, &[&o.at_ms.to_be_bytes(), &o.refs.to_be_bytes(), &o.bytes])?;
            carried += 1;
        }
    }
    let checksum = *w.checksum.finalize().as_bytes();
    let counts = [events, tokens, meta, carried].map(u64::to_be_bytes).concat();
    w.frame(TRAILER, &[&counts, &chain.prev_hash, &checksum])?;
    w.out.finish()?.flush()?;
    Ok(Summary { header: header.clone(), events, tokens, meta, outputs: carried })
}

/// The gzip stream of a backup being written, and the checksum of what went in so far.
struct FrameWriter<W: Write> {
    out: flate2::write::GzEncoder<W>,
    checksum: blake3::Hasher,
}

impl<W: Write> FrameWriter<W> {
    fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.checksum.update(bytes);
        self.out.write_all(bytes)
    }

    /// One frame; the trailer is left out of the checksum it carries.
    fn frame(&mut self, tag: u8, parts: &[&[u8]]) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len).ok().filter(|l| *l <= MAX_FRAME).ok_or_else(|| {
            std::io::Error::other(format!("a record of {len} bytes is larger than a backup frame may be"))
        })?;
        let mut head = [tag, 0, 0, 0, 0];
        head[1..].copy_from_slice(&len.to_be_bytes());
        if tag != TRAILER {
            self.checksum.update(&head);
            parts.iter().for_each(|p| {
                self.checksum.update(p);
            });
        }
        self.out.write_all(&head)?;
        parts.iter().try_for_each(|p| self.out.write_all(p))
    }
}

/// One thing a backup holds, as `read_backup` hands it on, checked. Each lives for one
/// call of the visitor, so the size of the event variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Item<'a> {
    Event { envelope: Envelope, bytes: &'a [u8] },
    Token { hash: [u8; 32], principal: String },
    Meta { key: &'a [u8], value: &'a [u8] },
    Output(StoredOutput),
}

/// Reads a whole backup, checking all of it: the gzip stream and its CRC, the magic
/// and version, the order of the frames, each event (its seq the next one, decodes,
/// chained to the one before), the counts, the last hash and the checksum in the
/// trailer, and nothing after it. `on_header` may refuse the file before its events
/// are read; `visit` gets each item once it is checked. An error names the position.
pub fn read_backup(
    input: impl BufRead,
    on_header: impl FnOnce(&Header) -> Result<(), BackupError>,
    mut visit: impl FnMut(Item<'_>) -> Result<(), BackupError>,
) -> Result<Summary, BackupError> {
    let mut r = FrameReader {
        input: flate2::bufread::GzDecoder::new(input),
        offset: 0,
        after_seq: 0,
        seq: None,
        checksum: blake3::Hasher::new(),
        buf: Vec::new(),
    };
    r.exact(MAGIC.len() + 4)?;
    if &r.buf[..8] != MAGIC {
        return Err(r.damaged(0, "this is not a Hydra backup (its stream does not start with HYDRABAK)"));
    }
    let version = u32::from_be_bytes(r.buf[8..12].try_into().expect("4 bytes"));
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(BackupError::Refused(format!(
            "the backup has format version {version}; this Hydra reads version {FORMAT_VERSION} (a newer \
             Hydra wrote it?)"
        )));
    }
    r.checksum.update(&r.buf);

    let (at, tag) = r.frame(MAX_HEADER)?;
    if tag != HEADER {
        return Err(r.damaged(at, "the header frame is missing"));
    }
    let header: Header = serde_json::from_slice(&r.buf)
        .map_err(|e| r.damaged(at, &format!("the header is not readable: {e}")))?;
    r.seq = Some(header.seq);
    on_header(&header)?;

    let mut chain = Chain::start();
    let (mut tokens, mut meta, mut outputs) = (0u64, 0u64, 0u64);
    let mut last_tag = HEADER;
    loop {
        let (at, tag) = r.frame(MAX_FRAME)?;
        // Frames come in the order H, E…, T…, M…, O… (version 2 on), Z.
        let order = |t: u8| ORDER.iter().position(|x| *x == t).filter(|_| t != OUTPUT || version >= 2);
        match (order(last_tag), order(tag)) {
            (Some(before), Some(now)) if now >= before && tag != HEADER => last_tag = tag,
            _ => {
                return Err(
                    r.damaged(at, &format!("a frame of unknown kind or out of order (tag {tag:#04x})"))
                )
            }
        }
        match tag {
            EVENT => {
                if r.buf.len() < EVENT_FIELDS {
                    return Err(r.damaged(at, "an event frame shorter than its fields"));
                }
                let seq = u64::from_be_bytes(r.buf[..8].try_into().expect("8 bytes"));
                if seq > header.seq {
                    return Err(
                        r.damaged(at, &format!("event seq {seq} is past the header's seq {}", header.seq))
                    );
                }
                if r.buf[8..EVENT_FIELDS] != chain.prev_hash {
                    return Err(r.damaged(at, &format!("hash chain broken at seq {seq}")));
                }
                let bytes = &r.buf[EVENT_FIELDS..];
                let envelope = check_record(seq, chain.next, bytes, &chain.prev_hash)
                    .map_err(|e| r.damaged(at, &e.to_string()))?;
                chain = Chain { next: seq + 1, prev_hash: hydra_events::hash(bytes) };
                visit(Item::Event { envelope, bytes })?;
                r.after_seq = seq;
            }
            TOKEN => {
                if r.buf.len() < 32 || r.buf.len() > 32 + MAX_PRINCIPAL {
                    return Err(r.damaged(at, "a token frame of the wrong size"));
                }
                let principal = std::str::from_utf8(&r.buf[32..])
                    .map_err(|_| r.damaged(at, "a token's principal is not UTF-8"))?
                    .to_owned();
                visit(Item::Token { hash: r.buf[..32].try_into().expect("32 bytes"), principal })?;
                tokens += 1;
            }
            META => {
                let key_len =
                    r.buf.get(..4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
                let Some(key_len) = key_len.filter(|k| 4 + k <= r.buf.len()) else {
                    return Err(r.damaged(at, "a meta frame whose key overruns it"));
                };
                visit(Item::Meta { key: &r.buf[4..4 + key_len], value: &r.buf[4 + key_len..] })?;
                meta += 1;
            }
            OUTPUT => {
                if r.buf.len() < OUTPUT_FIELDS {
                    return Err(r.damaged(at, "an output frame shorter than its fields"));
                }
                let at_ms = u64::from_be_bytes(r.buf[..8].try_into().expect("8 bytes"));
                let refs = u32::from_be_bytes(r.buf[8..12].try_into().expect("4 bytes"));
                visit(Item::Output(StoredOutput { at_ms, refs, bytes: r.buf[OUTPUT_FIELDS..].to_vec() }))?;
                outputs += 1;
            }
            _ => {
                let events = chain.next - 1;
                // Version 1 counted no outputs (and had none).
                let counts =
                    if version >= 2 { &[events, tokens, meta, outputs][..] } else { &[events, tokens, meta] };
                r.trailer(at, counts, &chain.prev_hash)?;
                if events != header.seq {
                    return Err(r.damaged(
                        at,
                        &format!(
                            "the backup ends after event seq {events} but its header says {}",
                            header.seq
                        ),
                    ));
                }
                r.end()?;
                return Ok(Summary { header, events, tokens, meta, outputs });
            }
        }
    }
}

/// The gzip stream of a backup being read, where it stands, and the checksum so far.
struct FrameReader<R: BufRead> {
    input: flate2::bufread::GzDecoder<R>,
    /// Bytes of the decompressed stream read so far.
    offset: u64,
    /// The last event read whole, for the position in an error.
    after_seq: u64,
    /// The header's seq, once read.
    seq: Option<u64>,
    checksum: blake3::Hasher,
    buf: Vec<u8>,
}

impl<R: BufRead> FrameReader<R> {
    fn damaged(&self, offset: u64, what: &str) -> BackupError {
        BackupError::Damaged { offset, after_seq: self.after_seq, what: what.to_owned() }
    }

    /// Reads the next `n` bytes of the decompressed stream into `buf`.
    fn exact(&mut self, n: usize) -> Result<(), BackupError> {
        self.buf.resize(n, 0);
        match self.input.read_exact(&mut self.buf) {
            Ok(()) => {
                self.offset += n as u64;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(BackupError::Truncated { offset: self.offset, after_seq: self.after_seq, seq: self.seq })
            }
            Err(e) => {
                Err(self.damaged(self.offset, &format!("the compressed data does not decompress ({e})")))
            }
        }
    }

    /// The next frame into `buf`: where it starts and its tag. Every frame but the
    /// trailer goes into the checksum.
    fn frame(&mut self, max: u32) -> Result<(u64, u8), BackupError> {
        let at = self.offset;
        self.exact(5)?;
        let head: [u8; 5] = self.buf[..5].try_into().expect("5 bytes");
        let len = u32::from_be_bytes(head[1..].try_into().expect("4 bytes"));
        if len > max {
            return Err(self.damaged(at, &format!("a frame of {len} bytes, more than a backup frame may be")));
        }
        self.exact(len as usize)?;
        if head[0] != TRAILER {
            self.checksum.update(&head);
            self.checksum.update(&self.buf);
        }
        Ok((at, head[0]))
    }

    /// Checks the trailer: the `counts` (8 bytes each), the last event's hash, the checksum.
    fn trailer(&mut self, at: u64, counts: &[u64], last_hash: &Hash) -> Result<(), BackupError> {
        let n = counts.len() * 8;
        if self.buf.len() != n + 64 {
            return Err(self.damaged(at, "the trailer has the wrong size"));
        }
        let said: Vec<u64> =
            self.buf[..n].chunks(8).map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes"))).collect();
        if said != counts {
            return Err(self.damaged(
                at,
                &format!(
                    "the trailer counts {said:?} (events, tokens, meta, outputs) but the backup holds {counts:?}"
                ),
            ));
        }
        if self.buf[n..n + 32] != *last_hash {
            return Err(self.damaged(at, "the trailer's hash of the last event does not match it"));
        }
        if self.buf[n + 32..] != *self.checksum.finalize().as_bytes() {
            return Err(self.damaged(at, "the checksum does not match: a byte before this point changed"));
        }
        Ok(())
    }

    /// After the trailer: the gzip stream ends (its CRC checked) and nothing follows.
    fn end(mut self) -> Result<(), BackupError> {
        let mut probe = [0u8; 1];
        match self.input.read(&mut probe) {
            Ok(0) => {}
            Ok(_) => return Err(self.damaged(self.offset, "bytes follow the trailer")),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(BackupError::Truncated {
                    offset: self.offset,
                    after_seq: self.after_seq,
                    seq: self.seq,
                })
            }
            Err(e) => {
                return Err(
                    self.damaged(self.offset, &format!("the compressed stream's end is damaged ({e})"))
                )
            }
        }
        let offset = self.offset;
        let after_seq = self.after_seq;
        let mut rest = self.input.into_inner();
        if !rest.fill_buf()?.is_empty() {
            return Err(BackupError::Damaged {
                offset,
                after_seq,
                what: "bytes follow the compressed stream".into(),
            });
        }
        Ok(())
    }
}

/// `backup --data DIR`: the backup of a stopped service's data dir, as of its last
/// event (the digest from a full replay, as `audit` computes it; nothing is written to
/// the dir).
pub fn backup_offline<P: Projection>(
    data: &Path,
    service: &str,
    out: impl Write,
) -> Result<Summary, BackupError> {
    if !data.join("log").join("db").exists() {
        return Err(BackupError::Refused(format!("no event log in {}", data.display())));
    }
    if store::in_use(data) {
        return Err(BackupError::Refused(format!(
            "a server is running on {}: back it up through it (backup --server URL), or stop it first",
            data.display()
        )));
    }
    let store = Store::open(data)?;
    let head = store.last_seq()?;
    crate::audit::check_watermark(&store, head)?;
    let replay = replay_into::<P>(&store, Stop::End, head)?;
    let header = Header::new::<P>(service, head, replay.digest);
    write_backup(&store, &header, &Extras::read(&store)?, out)
}

/// What `restore` did.
#[derive(Debug)]
pub struct Restored {
    pub summary: Summary,
    /// The digest of the restored views, recomputed.
    pub digest: String,
    /// False when the backup's views version is not this build's, so its digest
    /// cannot be compared (the chain and the checksum still were).
    pub digest_compared: bool,
}

/// `restore --from FILE --data DIR`: restores a backup of `service` into `data`, which
/// must be new or empty. The store is built in a sibling dir through the store's own
/// writes (events with their original bytes and index entries, the tokens, the meta,
/// the watermark), opened as `serve` opens it (every record checked, the views
/// replayed), and its digest compared with the header's; only then is it renamed to
/// `data`. On any failure the sibling is removed and `data` is left as it was.
pub fn restore<P: Projection>(
    input: impl BufRead,
    data: &Path,
    service: &str,
) -> Result<Restored, BackupError> {
    let data = refuse_data(data)?;
    let mut name = data.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".restoring-{}", std::process::id()));
    let staging = data.with_file_name(name);
    if staging.exists() {
        return Err(BackupError::Refused(format!("{} exists: a restore is running?", staging.display())));
    }
    let restored = restore_into::<P>(input, &staging, service);
    if restored.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    let restored = restored?;
    // Over an empty dir, rename replaces it.
    std::fs::rename(&staging, &data).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&staging);
    })?;
    if let Some(parent) = data.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all())?;
    }
    Ok(restored)
}

/// The data dir as an absolute path, when it is new or an empty dir; else the refusal.
fn refuse_data(data: &Path) -> Result<PathBuf, BackupError> {
    let refuse = |why: String| Err(BackupError::Refused(why));
    if !data.exists() {
        let parent = data.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        return match data.file_name() {
            Some(name) => Ok(parent.canonicalize()?.join(name)),
            None => refuse(format!("{} does not name a directory", data.display())),
        };
    }
    if !data.is_dir() {
        return refuse(format!("{} is not a directory", data.display()));
    }
    let held: Vec<String> = std::fs::read_dir(data)?
        .take(4)
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    if !held.is_empty() {
        return refuse(format!(
            "{} holds data ({}…): restore only into a new or empty directory",
            data.display(),
            held.join(", ")
        ));
    }
    Ok(data.canonicalize()?)
}

fn restore_into<P: Projection>(
    input: impl BufRead,
    dir: &Path,
    service: &str,
) -> Result<Restored, BackupError> {
    let store = Store::open(dir)?;
    let mut events: Vec<(u64, Vec<u8>, Option<hydra_events::NodeId>)> = Vec::with_capacity(RESTORE_BATCH);
    let mut tokens = Vec::new();
    let append = |events: &mut Vec<(u64, Vec<u8>, Option<hydra_events::NodeId>)>| {
        let records: Vec<Record<'_>> = events
            .iter()
            .map(|(seq, bytes, node)| Record { seq: *seq, bytes, node_id: node.as_ref() })
            .collect();
        store.append(&records, &[])?;
        events.clear();
        Ok::<_, StoreError>(())
    };
    let check_header = |h: &Header| {
        if h.service != service {
            return Err(BackupError::Refused(format!(
                "this is a backup of {}, not of {service}: restore it with `{} restore`",
                h.service, h.service
            )));
        }
        Ok(())
    };
    let summary = read_backup(input, check_header, |item| {
        match item {
            Item::Event { envelope, bytes } => {
                events.push((envelope.seq, bytes.to_vec(), envelope.event.node_id().cloned()));
                if events.len() == RESTORE_BATCH {
                    append(&mut events)?;
                }
            }
            Item::Token { hash, principal } => tokens.push(TokenWrite::Put { hash, principal }),
            Item::Meta { key, value } => store.put_meta(key, value)?,
            Item::Output(output) => store.restore_output(&output)?,
        }
        Ok(())
    })?;
    append(&mut events)?;
    store.append(&[], &tokens)?;
    // Written by this build, in its layout, whatever layout the backup's store had.
    store.set_layout_version(hydra_migrations::LAYOUT_VERSION)?;
    store.flush()?;
    store.set_watermark(summary.events)?;
    drop(store);

    // Opened as `serve` opens it: every record checked again, the views replayed.
    let store = Store::open(dir)?;
    let recovered = recover::<P>(&store)?;
    let seq = recovered.views.last_seq();
    if seq != summary.events {
        return Err(BackupError::Refused(format!(
            "the restored log ends at seq {seq}, not {}: nothing restored",
            summary.events
        )));
    }
    let digest = hydra_projections::digest(&recovered.views);
    let digest_compared = summary.header.views_version == P::VERSION;
    if digest_compared && digest != summary.header.digest {
        return Err(BackupError::Refused(format!(
            "the restored views' digest is {digest} but the backup recorded {}: nothing restored",
            summary.header.digest
        )));
    }
    Ok(Restored { summary, digest, digest_compared })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydra_events::{Event, NodeId};
    use hydra_projections::{digest, ClusterViews};

    fn node(name: &str) -> NodeId {
        NodeId::parse(&format!("node-{name}")).unwrap()
    }

    /// A store with `names` enrolled in order, through the ledger's writer (so with
    /// index entries, tokens and layout version as `serve` leaves them), closed again.
    fn enrolled(dir: &Path, names: &[&str]) -> Store {
        let ledger = crate::ledger::Ledger::<ClusterViews>::open(
            Store::open(dir).unwrap(),
            crate::ledger::LedgerConfig { min_free_bytes: 0, ..Default::default() },
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for (i, name) in names.iter().enumerate() {
            let id = node(name);
            let event =
                Event::NodeEnrolled { node_id: id.clone(), name: (*name).into(), ip: "10.0.0.1".into() };
            let token =
                TokenWrite::Put { hash: [i as u8 + 1; 32], principal: crate::auth::node_principal(&id) };
            let decision =
                crate::ledger::Decision { events: vec![event], tokens: vec![token], ..Default::default() };
            runtime.block_on(ledger.submit("test", move |_| Ok(decision))).unwrap();
        }
        let store = ledger.store().clone();
        ledger.shutdown();
        store
    }

    /// The backup of `store` as of `seq`, with the digest of a replay to there.
    fn backup_at(store: &Store, seq: u64) -> Vec<u8> {
        let replay = replay_into::<ClusterViews>(store, Stop::AtSeq(seq), store.last_seq().unwrap()).unwrap();
        let header = Header::new::<ClusterViews>("hydracluster", seq, replay.digest);
        let mut out = Vec::new();
        write_backup(store, &header, &Extras::read(store).unwrap(), &mut out).unwrap();
        out
    }

    fn verify(bytes: &[u8]) -> Result<Summary, BackupError> {
        read_backup(bytes, |_| Ok(()), |_| Ok(()))
    }

    #[test]
    fn a_backup_as_of_a_seq_restores_to_the_same_digest_with_the_tokens_of_its_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let store = enrolled(&dir.path().join("live"), &["a", "b", "c"]);
        let file = backup_at(&store, 2);
        let target = dir.path().join("restored");
        let restored = restore::<ClusterViews>(&file[..], &target, "hydracluster").unwrap();
        assert_eq!((restored.summary.events, restored.summary.tokens, restored.summary.meta), (2, 2, 1));
        assert!(restored.digest_compared);
        assert_eq!(restored.digest, restored.summary.header.digest);

        let back = Store::open(&target).unwrap();
        assert_eq!(back.last_seq().unwrap(), 2);
        assert_eq!(back.watermark().unwrap(), 2);
        assert_eq!(back.layout_version().unwrap(), hydra_migrations::LAYOUT_VERSION);
        // Node c enrolled after seq 2: its token is not carried, a and b's are.
        assert_eq!(back.token(&[1; 32]).unwrap().as_deref(), Some("node:node-a"));
        assert_eq!(back.token(&[2; 32]).unwrap().as_deref(), Some("node:node-b"));
        assert_eq!(back.token(&[3; 32]).unwrap(), None);
        assert_eq!(back.node_seqs(&node("b"), 0, 10).unwrap(), vec![2]);
        // The events are the live log's bytes, so the chain goes on from them.
        let live: Vec<_> = store.range(1, 2).map(|r| r.unwrap().1).collect();
        let copied: Vec<_> = back.range(1, 2).map(|r| r.unwrap().1).collect();
        assert_eq!(live, copied);
        let views = recover::<ClusterViews>(&back).unwrap().views;
        assert_eq!(digest(&views), restored.summary.header.digest);
        assert_eq!(views.nodes.len(), 2);
    }

    #[test]
    fn every_flipped_byte_is_refused_with_its_position_and_restores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = enrolled(&dir.path().join("live"), &["a", "b", "c", "d"]);
        let file = backup_at(&store, 4);
        verify(&file).unwrap();
        let content = |bytes: &[u8]| {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).map(|_| out).ok()
        };
        let mut harmless = 0;
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x10;
            match verify(&bad) {
                Err(
                    BackupError::Damaged { .. } | BackupError::Truncated { .. } | BackupError::Refused(_),
                ) => {}
                // Some bits carry nothing: the gzip header's time and OS bytes, the
                // padding after the last deflate block, the code length of a symbol
                // no code uses. Accepted only if the content is the very same.
                Ok(_) if content(&bad) == content(&file) => harmless += 1,
                other => panic!("a flip at byte {at} of {} gave {other:?}", file.len()),
            }
        }
        assert!(harmless <= 12, "{harmless} of {} flips changed nothing", file.len());
        let mut bad = file.clone();
        let middle = file.len() / 2;
        bad[middle] ^= 0x10;
        let target = dir.path().join("restored");
        let err = restore::<ClusterViews>(&bad[..], &target, "hydracluster").unwrap_err();
        assert!(err.to_string().contains("damaged at byte"), "{err}");
        assert!(!target.exists());
        let leftovers: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("live")]);
    }

    #[test]
    fn every_truncation_is_refused_as_truncated_with_the_last_whole_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = enrolled(&dir.path().join("live"), &["a", "b", "c"]);
        let file = backup_at(&store, 3);
        let mut seen = HashSet::new();
        for len in 0..file.len() {
            match verify(&file[..len]) {
                Err(BackupError::Truncated { after_seq, seq, .. }) => {
                    assert!(seq.is_none() || seq == Some(3));
                    seen.insert(after_seq);
                }
                other => panic!("a file cut at {len} of {} bytes gave {other:?}", file.len()),
            }
        }
        // The cuts fall before, between and after the events.
        assert!(seen.contains(&0) && seen.contains(&3), "{seen:?}");
        let err = verify(&file[..file.len() - 9]).unwrap_err();
        assert!(err.to_string().starts_with("the backup is truncated: it ends at byte "), "{err}");
    }

    #[test]
    fn a_dir_that_holds_data_or_another_services_backup_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = enrolled(&dir.path().join("live"), &["a"]);
        let file = backup_at(&store, 1);
        let full = dir.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("admin-token"), "x").unwrap();
        let err = restore::<ClusterViews>(&file[..], &full, "hydracluster").unwrap_err();
        assert!(err.to_string().contains("holds data (admin-token…)"), "{err}");
        assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = restore::<ClusterViews>(&file[..], &empty, "hydraexperiencelibrary").unwrap_err();
        assert!(err.to_string().contains("a backup of hydracluster, not of hydraexperiencelibrary"), "{err}");
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
        restore::<ClusterViews>(&file[..], &empty, "hydracluster").unwrap();
        assert!(empty.join("log").exists());
    }

    #[test]
    fn a_digest_that_differs_is_refused_unless_the_views_version_differs_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = enrolled(&dir.path().join("live"), &["a", "b"]);
        let backup_with = |header: Header| {
            let mut out = Vec::new();
            write_backup(&store, &header, &Extras::read(&store).unwrap(), &mut out).unwrap();
            out
        };
        let wrong = Header::new::<ClusterViews>("hydracluster", 2, "0".repeat(64));
        let target = dir.path().join("wrong");
        let err =
            restore::<ClusterViews>(&backup_with(wrong.clone())[..], &target, "hydracluster").unwrap_err();
        assert!(err
            .to_string()
            .contains(&format!("but the backup recorded {}: nothing restored", "0".repeat(64))));
        assert!(!target.exists());
        // Views of another version give another digest for the same events: the chain
        // and checksum are checked, the digest is not compared, and the restore says so.
        let other = Header { views_version: ClusterViews::VERSION + 1, ..wrong };
        let restored = restore::<ClusterViews>(&backup_with(other)[..], &target, "hydracluster").unwrap();
        assert!(!restored.digest_compared);
        assert_eq!(restored.summary.events, 2);
    }

    #[test]
    fn a_version_1_backup_still_restores_without_outputs() {
        // Written by format 1 (three nodes enrolled, their tokens), never rewritten.
        let file = include_bytes!("../../tests/fixtures/backup-v1.hbk");
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("r");
        let restored = restore::<ClusterViews>(&file[..], &target, "hydracluster").unwrap();
        let s = &restored.summary;
        assert_eq!((s.events, s.tokens, s.meta, s.outputs), (3, 3, 1, 0));
        if restored.digest_compared {
            assert_eq!(restored.digest, s.header.digest);
        }
        let back = Store::open(&target).unwrap();
        assert_eq!(back.token(&[2; 32]).unwrap().as_deref(), Some("node:node-b"));
        // Its meta said layout 1; the store restore wrote is this build's.
        assert_eq!(back.layout_version().unwrap(), hydra_migrations::LAYOUT_VERSION);
        // Cut before its trailer, it is still refused as truncated.
        let mut content = Vec::new();
        flate2::read::GzDecoder::new(&file[..]).read_to_end(&mut content).unwrap();
        let mut cut = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        cut.write_all(&content[..content.len() - 100]).unwrap();
        let err = verify(&cut.finish().unwrap()).unwrap_err();
        assert!(matches!(err, BackupError::Truncated { after_seq: 3, .. }), "{err}");
    }

    #[test]
    fn an_empty_log_backs_up_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let store = enrolled(&dir.path().join("live"), &[]);
        let file = backup_at(&store, 0);
        let restored = restore::<ClusterViews>(&file[..], &dir.path().join("r"), "hydracluster").unwrap();
        assert_eq!(restored.summary.events, 0);
        assert_eq!(restored.digest, digest(&ClusterViews::default()));
    }
}
