//! Replay: rebuild the views from the log, checking every record on the way
//! (continuity, decoding, hash chain). The offline `audit`, the as-of queries and the
//! benchmarks all use it.

use crate::ledger::{check_index, check_record, none_unindexed};
use crate::store::{Store, StoreError};
use hydra_events::{Envelope, Hash, ZERO_HASH};
use hydra_projections::{digest, ClusterViews, Projection};

/// Where a checked read of the log stands: the seq it expects next and the hash of
/// the record before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    pub next: u64,
    pub prev_hash: Hash,
}

impl Chain {
    /// Before the first record.
    pub fn start() -> Chain {
        Chain { next: 1, prev_hash: ZERO_HASH }
    }
}

/// The one checked read of the log, behind start-up and audit alike: the records from
/// `chain.next` to `last`, each checked against the chain (contiguous, decodes, the
/// hash of the one before), handed to `take` in order. `take` answers false to stop
/// before the record it was handed; `chain` then points at that record.
pub fn read_checked(
    store: &Store,
    last: u64,
    chain: &mut Chain,
    mut take: impl FnMut(Envelope) -> bool,
) -> Result<(), StoreError> {
    read_checked_records(store, last, chain, |envelope, _| take(envelope))
}

/// `read_checked`, handing `take` each record's stored bytes beside its envelope: what
/// a backup copies, byte for byte, so that the chain holds in the copy too.
pub fn read_checked_records(
    store: &Store,
    last: u64,
    chain: &mut Chain,
    mut take: impl FnMut(Envelope, &[u8]) -> bool,
) -> Result<(), StoreError> {
    for item in store.range(chain.next, last) {
        let (seq, bytes) = item?;
        let envelope = check_record(seq, chain.next, &bytes, &chain.prev_hash)?;
        if !take(envelope, &bytes) {
            break;
        }
        *chain = Chain { next: seq + 1, prev_hash: hydra_events::hash(&bytes) };
    }
    Ok(())
}

/// Every event up to the watermark was acknowledged to a client: a log that ends
/// before it lost its tail, and is refused rather than served short.
pub fn check_watermark(store: &Store, last: u64) -> Result<(), StoreError> {
    let watermark = store.watermark()?;
    if last < watermark {
        return Err(StoreError::Corrupt(format!(
            "the log ends at seq {last} but events up to seq {watermark} were acknowledged: \
             the log lost its tail (restore the data dir from a backup)"
        )));
    }
    Ok(())
}

/// Where a replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After the event with this sequence number.
    AtSeq(u64),
    /// After the last event at or before this time (unix ms).
    AtTime(u64),
    /// At the end of the log.
    End,
}

#[derive(Debug)]
pub struct Replay<P> {
    pub views: P,
    pub events: u64,
    pub digest: String,
}

/// Replays the log from the start into fresh views, never past `head`.
pub fn replay(store: &Store, stop: Stop, head: u64) -> Result<Replay<ClusterViews>, StoreError> {
    replay_into(store, stop, head)
}

pub fn replay_into<P: Projection>(store: &Store, stop: Stop, head: u64) -> Result<Replay<P>, StoreError> {
    let last = match stop {
        Stop::AtSeq(s) => s.min(head),
        _ => head,
    };
    let mut views = P::default();
    let mut chain = Chain::start();
    read_checked(store, last, &mut chain, |envelope| {
        if matches!(stop, Stop::AtTime(t) if envelope.at_ms > t) {
            return false;
        }
        views.apply(&envelope);
        true
    })?;
    if matches!(stop, Stop::End) && chain.next != last + 1 {
        return Err(StoreError::Corrupt(format!(
            "the log should end at seq {last} but stops after seq {}",
            chain.next - 1
        )));
    }
    let digest = digest(&views);
    Ok(Replay { events: chain.next - 1, views, digest })
}

/// Checks the per-node index against the log, both ways: every entry points at an
/// event about its node, and every event about a node has its entry.
pub fn audit_index(store: &Store, head: u64) -> Result<(), StoreError> {
    let mut about = std::collections::HashMap::new();
    read_checked(store, head, &mut Chain::start(), |envelope| {
        if let Some(node) = envelope.event.node_id() {
            about.insert(envelope.seq, node.clone());
        }
        true
    })?;
    check_index(store, 0, head, &mut about)?;
    none_unindexed(about)
}

/// What the audit found in the output store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutputAudit {
    /// Outputs the log refers to that are stored, each matching its hash and size.
    pub present: u64,
    /// Outputs the log refers to that retention (or an answered fetch) dropped.
    pub pruned: u64,
}

/// Checks every stored output against the hash it is stored under (a mismatch is
/// tampering or damage), then every output the log up to `head` refers to: stored with
/// its size, or pruned, which is expected and counted, not an error. Outputs held
/// inline by records older than schema 3 are covered by the hash chain.
pub fn audit_outputs(store: &Store, head: u64) -> Result<OutputAudit, StoreError> {
    for entry in store.outputs() {
        let (hash, bytes) = entry?;
        if hydra_events::OutputRef::of(&bytes).hash != hash {
            return Err(StoreError::Corrupt(format!(
                "the output stored under {} does not match its hash ({} bytes): it was altered",
                hex::encode(hash),
                bytes.len()
            )));
        }
    }
    let mut found = OutputAudit::default();
    let mut failed = None;
    read_checked(store, head, &mut Chain::start(), |envelope| {
        for r in envelope.event.output_refs() {
            match store.output(&r.hash) {
                Ok(Some(bytes)) if bytes.len() as u64 == r.size => found.present += 1,
                Ok(Some(bytes)) => {
                    failed = Some(StoreError::Corrupt(format!(
                        "event {} refers to an output of {} bytes but {} are stored under its hash",
                        envelope.seq,
                        r.size,
                        bytes.len()
                    )));
                    return false;
                }
                Ok(None) => found.pruned += 1,
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            }
        }
        true
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_that_no_longer_matches_its_hash_fails_the_audit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_outputs(1, &[b"what the command printed".to_vec()]).unwrap();
        assert_eq!(audit_outputs(&store, 0).unwrap(), OutputAudit::default());
        let hash = hydra_events::OutputRef::of(b"what the command printed").hash;
        store.overwrite_output(&hash, b"what someone wrote instead");
        let err = audit_outputs(&store, 0).unwrap_err().to_string();
        assert!(err.contains("does not match its hash"), "{err}");
    }
}
