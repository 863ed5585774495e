//! Replay: rebuild the views from the log, checking every record on the way
//! (continuity, decoding, hash chain). The offline `audit`, the as-of queries and the
//! benchmarks all use it.

use crate::ledger::{check_index, check_record};
use crate::store::{Store, StoreError};
use hydra_events::ZERO_HASH;
use hydra_projections::{digest, ClusterViews, Projection};

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
    let mut prev = ZERO_HASH;
    let mut expected = 1;
    for item in store.range(1, last) {
        let (seq, bytes) = item?;
        let envelope = check_record(seq, expected, &bytes, &prev)?;
        if let Stop::AtTime(t) = stop {
            if envelope.at_ms > t {
                break;
            }
        }
        views.apply(&envelope);
        prev = hydra_events::hash(&bytes);
        expected = seq + 1;
    }
    if matches!(stop, Stop::End) && expected != last + 1 {
        return Err(StoreError::Corrupt(format!(
            "the log should end at seq {last} but stops after seq {}",
            expected - 1
        )));
    }
    let digest = digest(&views);
    Ok(Replay { events: expected - 1, views, digest })
}

/// Checks the per-node index against the log, both ways: every entry points at an
/// event about its node, and every event about a node has its entry.
pub fn audit_index(store: &Store, head: u64) -> Result<(), StoreError> {
    let mut about = std::collections::HashMap::new();
    for item in store.range(1, head) {
        let (seq, bytes) = item?;
        let envelope = hydra_migrations::read_envelope(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("event {seq} does not decode: {e}")))?;
        if let Some(node) = envelope.event.node_id() {
            about.insert(seq, node.clone());
        }
    }
    check_index(store, 0, head, &mut about)?;
    match about.into_iter().min_by_key(|(seq, _)| *seq) {
        Some((seq, node)) => Err(StoreError::Corrupt(format!(
            "event {seq} is about node {node} but the per-node index does not list it"
        ))),
        None => Ok(()),
    }
}
