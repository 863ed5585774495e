//! The event log's own files (layout 3): append-only segments under `<data>/events`,
//! one record per event with its checksum, sequence number and node. The log costs
//! its records plus a small header on disk; sled, which held it before, cost about 3×
//! (docs/benchmarks.md).
//!
//! A segment is named by the sequence number of its first record
//! (`00000000000000000001.seg`) and is closed once it reaches `SEGMENT_BYTES`; the
//! last one takes the appends. A record is
//!
//! ```text
//! crc32 (u32 LE, of everything after it in the record)
//! len   (u32 LE, of everything after it in the record)
//! seq   (u64 LE)
//! node  (u8 length, 0 for an event about no node, then the node id)
//! the encoded event (format byte, schema, bincode envelope)
//! ```
//!
//! Opening reads every segment once, checks every record and keeps in memory where
//! each one starts and which events are about which node: the per-node index is these
//! headers, so it cannot disagree with the log. A record that does not check out at
//! the very end of the last segment, with nothing whole after it and past the
//! acknowledged watermark, is a write that a crash cut short (never acknowledged): it
//! is cut off. Anywhere else it is damage, refused with the sequence number.

use super::{sync_dir, StoreError};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The directory of the segments inside the data dir.
pub const DIR: &str = "events";
/// A segment is closed (synced, and a new one started) once it holds this much.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// crc32 + len + seq + the node id's length.
const HEADER: usize = 4 + 4 + 8 + 1;
/// A record's `len` covers seq, the node id's length, the node id and the event.
const MIN_LEN: usize = 8 + 1;

/// One event as the log stores it.
pub struct Entry<'a> {
    pub seq: u64,
    pub node: Option<&'a str>,
    pub bytes: &'a [u8],
}

/// The segments of one data dir. Readers take the read lock only to find a record;
/// the bytes are read after it is let go.
pub struct Segments {
    dir: PathBuf,
    /// `SEGMENT_BYTES`, smaller in tests.
    limit: u64,
    state: RwLock<State>,
    /// One appender at a time (the ledger's writer; migrate and restore offline).
    appending: Mutex<()>,
}

#[derive(Default)]
struct State {
    segments: Vec<Segment>,
    /// Node id → the sequence numbers of the events about it, ascending.
    nodes: HashMap<String, Vec<u64>>,
}

impl State {
    /// The last event's sequence number, 0 for an empty log: the one before the first
    /// of the last segment, plus what that segment holds.
    fn last_seq(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.first_seq - 1 + s.starts.len() as u64)
    }
}

struct Segment {
    first_seq: u64,
    file: Arc<File>,
    /// Where each record starts: record `i` is event `first_seq + i`.
    starts: Vec<u32>,
    /// Where the last whole record ends: the next append goes here.
    end: u64,
}

impl Segment {
    /// The byte range of event `seq`, which this segment holds.
    fn span(&self, seq: u64) -> (u64, u64) {
        let i = (seq - self.first_seq) as usize;
        let start = u64::from(self.starts[i]);
        let end = self.starts.get(i + 1).map_or(self.end, |&s| u64::from(s));
        (start, end)
    }
}

/// What is wrong with the bytes where a record should start.
enum Bad {
    /// They end before the record does.
    Short,
    /// They are there but do not make a record.
    Invalid(String),
}

/// A record read from bytes: its header's fields, the event and its whole length.
struct Parsed<'a> {
    seq: u64,
    node: Option<&'a str>,
    bytes: &'a [u8],
    len: usize,
}

/// Encodes one record (see the module's header for the format).
pub fn encode_record(seq: u64, node: Option<&str>, bytes: &[u8]) -> Vec<u8> {
    let node = node.unwrap_or("").as_bytes();
    // Node ids are at most 69 bytes (`hydra_events` parses them), so they fit a u8.
    let node_len = u8::try_from(node.len()).expect("a node id fits in 255 bytes");
    let len = u32::try_from(MIN_LEN + node.len() + bytes.len()).expect("an event is under 4 GiB");
    let mut out = Vec::with_capacity(HEADER + node.len() + bytes.len());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(node_len);
    out.extend_from_slice(node);
    out.extend_from_slice(bytes);
    let crc = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
    out
}

fn parse(buf: &[u8]) -> Result<Parsed<'_>, Bad> {
    let word = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    if buf.len() < 8 {
        return Err(Bad::Short);
    }
    let len = word(4) as usize;
    if len < MIN_LEN {
        return Err(Bad::Invalid(format!("a record length of {len}")));
    }
    let Some(body) = buf.get(8..8 + len) else { return Err(Bad::Short) };
    if crc32fast::hash(&buf[4..8 + len]) != word(0) {
        return Err(Bad::Invalid("its checksum does not match".into()));
    }
    let seq = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let node_len = usize::from(body[8]);
    let Some(node) = body.get(MIN_LEN..MIN_LEN + node_len) else {
        return Err(Bad::Invalid(format!("a node id of {node_len} bytes in a record of {len}")));
    };
    let node = match node_len {
        0 => None,
        _ => Some(std::str::from_utf8(node).map_err(|_| Bad::Invalid("its node id is not UTF-8".into()))?),
    };
    Ok(Parsed { seq, node, bytes: &body[MIN_LEN + node_len..], len: 8 + len })
}

/// The file name of the segment that starts at `seq`.
fn segment_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

/// The segment files in `dir`, by first sequence number.
fn segment_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(seq) = name.strip_suffix(".seg").and_then(|s| s.parse::<u64>().ok()) {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The segment files of the data dir `data`, for a raw scan (`salvage`).
pub fn files(data: &Path) -> Vec<PathBuf> {
    segment_files(&data.join(DIR)).map(|f| f.into_iter().map(|(_, p)| p).collect()).unwrap_or_default()
}

/// True when a whole record with a sequence number of at least `seq` starts anywhere
/// in `buf`: what tells damage (something whole follows) from a torn tail.
fn whole_record_in(buf: &[u8], seq: u64) -> bool {
    (0..buf.len()).any(|at| matches!(parse(&buf[at..]), Ok(p) if p.seq >= seq))
}

impl Segments {
    /// Opens (or creates) the segments under `<data>/events`, checking every record.
    /// `watermark` is the last sequence number ever acknowledged: a torn tail is cut
    /// off only past it.
    pub fn open(data: &Path, watermark: u64) -> Result<Segments, StoreError> {
        Segments::open_with_limit(data, watermark, SEGMENT_BYTES)
    }

    fn open_with_limit(data: &Path, watermark: u64, limit: u64) -> Result<Segments, StoreError> {
        let dir = data.join(DIR);
        std::fs::create_dir_all(&dir)?;
        let files = segment_files(&dir)?;
        let mut state = State::default();
        let count = files.len();
        for (i, (first_seq, path)) in files.into_iter().enumerate() {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            // Sequence numbers start at 1 and the last one must have a successor: a name
            // outside that is damage, and no arithmetic below can wrap.
            if first_seq == 0 || first_seq == u64::MAX {
                return Err(StoreError::Corrupt(format!(
                    "segment {DIR}/{name} names no valid sequence number"
                )));
            }
            if i > 0 && first_seq != state.last_seq() + 1 {
                return Err(StoreError::Corrupt(format!(
                    "segment {DIR}/{name} starts at seq {first_seq} but the one before ends at seq {}",
                    state.last_seq()
                )));
            }
            let buf = std::fs::read(&path)?;
            if u32::try_from(buf.len()).is_err() {
                return Err(StoreError::Corrupt(format!("segment {DIR}/{name} is over 4 GiB")));
            }
            let file = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
            let mut segment = Segment { first_seq, file: Arc::new(file), starts: Vec::new(), end: 0 };
            let mut at = 0usize;
            let mut expected = first_seq;
            while at < buf.len() {
                let why = match parse(&buf[at..]) {
                    Ok(p) if p.seq == expected && expected < u64::MAX => {
                        segment.starts.push(at as u32);
                        if let Some(node) = p.node {
                            // A lookup first: a node's id is allocated once, not per event.
                            match state.nodes.get_mut(node) {
                                Some(seqs) => seqs.push(p.seq),
                                None => drop(state.nodes.insert(node.to_owned(), vec![p.seq])),
                            }
                        }
                        at += p.len;
                        expected += 1;
                        continue;
                    }
                    Ok(p) => format!("it says seq {}", p.seq),
                    Err(Bad::Short) => "it ends before its length".to_owned(),
                    Err(Bad::Invalid(why)) => why,
                };
                let last_good = expected - 1;
                let torn =
                    i + 1 == count && last_good >= watermark && !whole_record_in(&buf[at + 1..], expected);
                if !torn {
                    return Err(StoreError::Corrupt(format!(
                        "the record of event {expected} in {DIR}/{name} (byte {at}) is damaged: {why}"
                    )));
                }
                tracing::warn!(
                    segment = %name,
                    bytes = buf.len() - at,
                    last_seq = last_good,
                    "cutting off a write a crash cut short (never acknowledged)"
                );
                segment.file.set_len(at as u64)?;
                segment.file.sync_all()?;
                break;
            }
            if segment.starts.is_empty() && (i + 1 < count || first_seq != state.last_seq() + 1) {
                return Err(StoreError::Corrupt(format!(
                    "segment {DIR}/{name} holds no event but should start at seq {}",
                    state.last_seq() + 1
                )));
            }
            segment.end = at as u64;
            state.segments.push(segment);
        }
        Ok(Segments { dir, limit, state: RwLock::new(state), appending: Mutex::new(()) })
    }

    pub fn last_seq(&self) -> u64 {
        self.state.read().last_seq()
    }

    /// The first event's sequence number, 0 for an empty log.
    pub fn first_seq(&self) -> u64 {
        let state = self.state.read();
        state.segments.iter().find(|s| !s.starts.is_empty()).map_or(0, |s| s.first_seq)
    }

    /// Appends events, which must follow the last one without a gap. They are on disk
    /// (and readable) when this returns, durable only after `sync`.
    pub fn append(&self, entries: &[Entry<'_>]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _one = self.appending.lock();
        let (mut next, mut tail) = {
            let state = self.state.read();
            (state.last_seq() + 1, state.segments.last().map(|s| (s.file.clone(), s.end)))
        };
        let mut pending = Vec::new();
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        let mut nodes = Vec::new();
        for entry in entries {
            if entry.seq != next {
                return Err(StoreError::OutOfOrder(format!(
                    "event {} appended after event {}",
                    entry.seq,
                    next - 1
                )));
            }
            let record = encode_record(entry.seq, entry.node, entry.bytes);
            // A segment with something in it is closed before it would pass its size;
            // an empty one takes any record.
            let full = match &tail {
                None => true,
                Some((_, end)) => {
                    let used = end + buf.len() as u64;
                    used > 0 && used + record.len() as u64 > self.limit
                }
            };
            if full {
                if let Some((file, end)) = tail.take() {
                    self.write(&file, end, &buf)?;
                    file.sync_data()?;
                    pending.push((end + buf.len() as u64, std::mem::take(&mut starts), None));
                    buf.clear();
                }
                let file = self.create(entry.seq)?;
                pending.push((0, Vec::new(), Some((entry.seq, file.clone()))));
                tail = Some((file, 0));
            }
            let (_, end) = tail.as_ref().expect("a segment to write to");
            let start = end + buf.len() as u64;
            starts.push(u32::try_from(start).expect("a segment is under 4 GiB"));
            buf.extend_from_slice(&record);
            if let Some(node) = entry.node {
                nodes.push((node.to_owned(), entry.seq));
            }
            next += 1;
        }
        let (file, end) = tail.expect("a segment to write to");
        self.write(&file, end, &buf)?;
        pending.push((end + buf.len() as u64, starts, None));

        // Everything is written: publish it.
        let mut state = self.state.write();
        for (end, starts, created) in pending {
            if let Some((first_seq, file)) = created {
                state.segments.push(Segment { first_seq, file, starts: Vec::new(), end: 0 });
            }
            let segment = state.segments.last_mut().expect("a segment");
            segment.starts.extend(starts);
            segment.end = end;
        }
        for (node, seq) in nodes {
            state.nodes.entry(node).or_default().push(seq);
        }
        Ok(())
    }

    /// Writes `bytes` at `at`; on an error, cuts the file back to `at` (best effort:
    /// what stays past it is a torn tail the next open cuts off).
    fn write(&self, file: &File, at: u64, bytes: &[u8]) -> Result<(), StoreError> {
        file.write_all_at(bytes, at).map_err(|e| {
            let _ = file.set_len(at);
            StoreError::Io(e)
        })
    }

    /// Creates the segment that starts at `seq`, durably (its directory entry too).
    fn create(&self, seq: u64) -> Result<Arc<File>, StoreError> {
        let path = self.dir.join(segment_name(seq));
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        sync_dir(&self.dir)?;
        Ok(Arc::new(file))
    }

    /// Makes every append so far durable (the segments closed before the last one
    /// were synced when they were closed).
    pub fn sync(&self) -> Result<(), StoreError> {
        let file = self.state.read().segments.last().map(|s| s.file.clone());
        if let Some(file) = file {
            file.sync_data()?;
        }
        Ok(())
    }

    /// The encoded event `seq`, checked against its record's checksum; None past the
    /// ends of the log.
    pub fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read(seq, seq, 0)?.pop().map(|(_, bytes)| bytes))
    }

    /// Events `from..=to` of the segment that holds `from`, in one read of at most
    /// about `max_bytes` (always at least one event), each checked against its
    /// record's checksum and place. Empty when `from` is past the ends of the log.
    pub fn read(&self, from: u64, to: u64, max_bytes: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let found = {
            let state = self.state.read();
            let i = state.segments.partition_point(|s| s.first_seq <= from);
            match i.checked_sub(1).map(|i| &state.segments[i]) {
                Some(s) if from <= to && from < s.first_seq + s.starts.len() as u64 => {
                    let last = to.min(s.first_seq + s.starts.len() as u64 - 1);
                    let (start, mut end) = s.span(from);
                    let mut upto = from;
                    while upto < last {
                        let (_, next_end) = s.span(upto + 1);
                        if next_end - start > max_bytes {
                            break;
                        }
                        (upto, end) = (upto + 1, next_end);
                    }
                    Some((s.file.clone(), start, end, upto))
                }
                _ => None,
            }
        };
        let Some((file, start, end, upto)) = found else { return Ok(Vec::new()) };
        let mut buf = vec![0; (end - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        let mut events = Vec::with_capacity((upto - from + 1) as usize);
        let mut at = 0;
        for seq in from..=upto {
            let damaged = |why: String| {
                StoreError::Corrupt(format!(
                    "the record of event {seq} (byte {} of its segment) is damaged: {why}",
                    start + at as u64
                ))
            };
            match parse(&buf[at..]) {
                Ok(p) if p.seq == seq => {
                    events.push((seq, p.bytes.to_vec()));
                    at += p.len;
                }
                Ok(p) => return Err(damaged(format!("it says seq {}", p.seq))),
                Err(Bad::Short) => return Err(damaged("it ends before its length".into())),
                Err(Bad::Invalid(why)) => return Err(damaged(why)),
            }
        }
        if at != buf.len() {
            return Err(StoreError::Corrupt(format!(
                "the records of events {from}..={upto} do not fill their {} bytes",
                buf.len()
            )));
        }
        Ok(events)
    }

    /// Sequence numbers of the events about `node` after `since`, at most `limit`.
    pub fn node_seqs(&self, node: &str, since: u64, limit: usize) -> Vec<u64> {
        let state = self.state.read();
        let Some(seqs) = state.nodes.get(node) else { return Vec::new() };
        let from = seqs.partition_point(|&s| s <= since);
        seqs[from..].iter().take(limit).copied().collect()
    }

    /// Every (node, seq) of the index with seq after `after`, by node then seq.
    pub fn index_entries(&self, after: u64) -> Vec<(String, u64)> {
        let state = self.state.read();
        let mut nodes: Vec<_> = state.nodes.iter().collect();
        nodes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        nodes
            .into_iter()
            .flat_map(|(node, seqs)| {
                let later = &seqs[seqs.partition_point(|&s| s <= after)..];
                later.iter().map(|&s| (node.clone(), s))
            })
            .collect()
    }

    /// Bytes the segments take.
    pub fn size(&self) -> u64 {
        self.state.read().segments.iter().map(|s| s.end).sum()
    }
}

impl Segments {
    /// No segments: what `Store::open_sled` holds until `open_checked` opens the real
    /// ones (with sled's lock held).
    pub fn none() -> Segments {
        Segments {
            dir: PathBuf::new(),
            limit: SEGMENT_BYTES,
            state: Default::default(),
            appending: Mutex::new(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events 1..=n, each about node `n<seq % 2>`, with bytes that name their seq.
    fn events(from: u64, to: u64) -> Vec<(u64, String, Vec<u8>)> {
        (from..=to)
            .map(|seq| (seq, format!("node-{}", seq % 2), format!("event number {seq}").into_bytes()))
            .collect()
    }

    fn append(log: &Segments, events: &[(u64, String, Vec<u8>)]) {
        let entries: Vec<Entry<'_>> =
            events.iter().map(|(seq, node, bytes)| Entry { seq: *seq, node: Some(node), bytes }).collect();
        log.append(&entries).unwrap();
        log.sync().unwrap();
    }

    fn all(log: &Segments) -> Vec<Vec<u8>> {
        (1..=log.last_seq()).map(|seq| log.get(seq).unwrap().unwrap()).collect()
    }

    /// The segment files' names and sizes.
    fn on_disk(data: &Path) -> Vec<(String, u64)> {
        files(data)
            .into_iter()
            .map(|p| {
                (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::metadata(&p).unwrap().len())
            })
            .collect()
    }

    #[test]
    fn events_span_segments_and_read_back_the_same_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = Segments::open_with_limit(dir.path(), 0, 200).unwrap();
        append(&log, &events(1, 5));
        append(&log, &events(6, 12));
        let expected: Vec<Vec<u8>> = events(1, 12).into_iter().map(|(_, _, b)| b).collect();
        assert_eq!(all(&log), expected);
        // Records of 37 bytes, at most 200 bytes a segment: 5 of them each.
        let names: Vec<String> = on_disk(dir.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["00000000000000000001.seg", "00000000000000000006.seg", "00000000000000000011.seg"]
        );
        assert_eq!(log.node_seqs("node-1", 0, 100), vec![1, 3, 5, 7, 9, 11]);
        assert_eq!(log.node_seqs("node-0", 4, 2), vec![6, 8]);
        assert_eq!(log.get(13).unwrap(), None);
        // A read takes what fits its size (at least one event), within one segment.
        let seqs = |events: Vec<(u64, Vec<u8>)>| events.into_iter().map(|(seq, _)| seq).collect::<Vec<_>>();
        assert_eq!(seqs(log.read(1, 12, 100).unwrap()), vec![1, 2]);
        assert_eq!(seqs(log.read(1, 12, 0).unwrap()), vec![1]);
        assert_eq!(seqs(log.read(4, 12, 10_000).unwrap()), vec![4, 5]);
        assert_eq!(seqs(log.read(6, 7, 10_000).unwrap()), vec![6, 7]);
        assert!(log.read(13, 20, 10_000).unwrap().is_empty());
        drop(log);

        let log = Segments::open_with_limit(dir.path(), 12, 200).unwrap();
        assert_eq!((log.first_seq(), log.last_seq()), (1, 12));
        assert_eq!(all(&log), expected);
        assert_eq!(log.index_entries(0).len(), 12);
        assert_eq!(log.index_entries(10), vec![("node-0".to_owned(), 12), ("node-1".to_owned(), 11)]);
        assert_eq!(log.node_seqs("node-0", 0, 100), vec![2, 4, 6, 8, 10, 12]);
        append(&log, &events(13, 13));
        assert_eq!(log.get(13).unwrap().unwrap(), b"event number 13");
        let gap = log.append(&[Entry { seq: 15, node: None, bytes: b"x" }]).unwrap_err();
        assert!(gap.to_string().contains("event 15 appended after event 13"), "{gap}");
    }

    #[test]
    fn a_segment_named_outside_the_sequence_numbers_is_refused_not_a_panic() {
        for name in ["00000000000000000000.seg", "18446744073709551615.seg"] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join(DIR)).unwrap();
            std::fs::write(dir.path().join(DIR).join(name), b"garbage, not a record").unwrap();
            let err = Segments::open(dir.path(), 0).err().expect("refused");
            assert!(err.is_damage() && err.to_string().contains("names no valid sequence number"), "{err}");
        }
    }

    #[test]
    fn a_torn_write_past_the_watermark_is_cut_off_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let log = Segments::open(dir.path(), 0).unwrap();
        append(&log, &events(1, 3));
        drop(log);
        let path = &files(dir.path())[0];
        let whole = std::fs::metadata(path).unwrap().len();
        // Half of event 4's record: what a crash in the middle of its write leaves.
        let record = encode_record(4, Some("node-0"), b"event number 4");
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        std::io::Write::write_all(&mut file, &record[..record.len() / 2]).unwrap();

        let log = Segments::open(dir.path(), 3).unwrap();
        assert_eq!(log.last_seq(), 3);
        assert_eq!(std::fs::metadata(path).unwrap().len(), whole, "cut back to the last whole record");
        append(&log, &events(4, 4));
        drop(log);
        let log = Segments::open(dir.path(), 4).unwrap();
        assert_eq!(all(&log).len(), 4);
    }

    /// Every single-byte flip and every cut of a four-event segment: opening never
    /// panics; it refuses every flip and every part of a record that was acknowledged;
    /// with none acknowledged it cuts off only a damaged or partial last record and
    /// keeps every whole event before it, exactly as written.
    #[test]
    fn every_flip_and_every_cut_is_refused_or_cut_off_at_the_damage_never_misread() {
        let dir = tempfile::tempdir().unwrap();
        append(&Segments::open(dir.path(), 0).unwrap(), &events(1, 4));
        let path = files(dir.path())[0].clone();
        let original = std::fs::read(&path).unwrap();
        let written: Vec<Vec<u8>> = events(1, 4).into_iter().map(|(_, _, b)| b).collect();
        // Where each record ends: a cut or a flip before `ends[k]` damages event k + 1.
        let ends: Vec<usize> = (1..=4).map(|k| 37 * k).collect();
        assert_eq!(original.len(), ends[3]);
        let check = |bytes: &[u8], damaged_from: usize, what: &str| {
            std::fs::write(&path, bytes).unwrap();
            let refused = Segments::open(dir.path(), 4).err().unwrap_or_else(|| panic!("{what}: opened"));
            assert!(refused.is_damage(), "{what}: {refused}");
            std::fs::write(&path, bytes).unwrap();
            // With nothing acknowledged only the last event's record may be cut off.
            match Segments::open(dir.path(), 0) {
                Ok(log) => {
                    assert_eq!(damaged_from, 3, "{what}: an event before the last was cut off");
                    assert_eq!(all(&log), written[..3], "{what}");
                }
                Err(e) => assert!(damaged_from < 3 && e.is_damage(), "{what}: {e}"),
            }
        };
        for at in 0..original.len() {
            let mut flipped = original.clone();
            flipped[at] ^= 0x10;
            check(&flipped, ends.iter().position(|&end| at < end).unwrap(), &format!("a flip at byte {at}"));
        }
        for len in 0..original.len() {
            let whole = ends.iter().filter(|&&end| end <= len).count();
            if len > 0 && !ends.contains(&len) {
                // Part of a record: refused when it was acknowledged.
                std::fs::write(&path, &original[..len]).unwrap();
                let refused = Segments::open(dir.path(), whole as u64 + 1).err();
                assert!(refused.is_some_and(|e| e.is_damage()), "a cut at byte {len}");
            }
            // Past a watermark of 0 the part is a torn tail, cut back to what is whole.
            // (A cut between records is no damage here: the ledger compares the end of
            // the log with the watermark.)
            std::fs::write(&path, &original[..len]).unwrap();
            assert_eq!(all(&Segments::open(dir.path(), 0).unwrap()), written[..whole], "a cut at byte {len}");
        }
    }

    #[test]
    fn a_damaged_record_is_refused_at_open_and_at_read_and_never_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let log = Segments::open(dir.path(), 0).unwrap();
        append(&log, &events(1, 4));
        let path = files(dir.path())[0].clone();
        let flip = |at: u64| {
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[at as usize] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
        };
        // Event 2's bytes, flipped under a reader: refused, not served.
        let second = 37 + 37 - 3;
        flip(second);
        let err = log.get(2).unwrap_err();
        assert!(
            err.is_damage() && err.to_string().contains("event 2") && err.to_string().contains("checksum"),
            "{err}"
        );
        assert_eq!(log.get(3).unwrap().unwrap(), b"event number 3");
        drop(log);

        // At open: whole records follow, so it is damage even with no watermark.
        let len = std::fs::metadata(&path).unwrap().len();
        let err = Segments::open(dir.path(), 0).err().expect("refused");
        assert!(
            err.to_string().contains("the record of event 2 in events/00000000000000000001.seg"),
            "{err}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len, "nothing cut off");
        flip(second);
        assert_eq!(Segments::open(dir.path(), 4).unwrap().last_seq(), 4);

        // The last record, acknowledged (the watermark says so): damage, not a torn tail.
        flip(len - 1);
        let err = Segments::open(dir.path(), 4).err().expect("refused");
        assert!(err.to_string().contains("the record of event 4"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len, "nothing cut off");
    }
}
