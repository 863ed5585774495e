//! Pure folds from events to read views: no I/O, no clock, no randomness. Replaying
//! the same log always gives the same views and the same digest.

mod anomalies;
mod exec;
mod heads;
mod library;
mod nodes;
mod provision;
mod sessions;
mod uptime;

pub use anomalies::OpenAnomalies;
pub use exec::{ExecRecord, ExecStatus, ExecViews, NodeExec, FINISHED_KEPT};
pub use heads::{HeadView, HEAD_STATUSES};
pub use library::{
    rollout_number, BuildView, EnvironmentBuild, ExperienceView, LibraryViews, NodeProgress, NodeState,
    RolloutState, RolloutView, ENVIRONMENTS, FLEET_ENVIRONMENTS,
};
pub use nodes::{NodeKind, NodeStatus, NodeView};
pub use provision::{ProvisionState, ProvisionView};
pub use sessions::{SessionView, SessionViews, SESSIONS_KEPT};
pub use uptime::{hour_of, GraceSpan, Tally, UptimeView, UptimeViews, GRACE_SPANS_KEPT, HOURS_KEPT, HOUR_S};

use hydra_events::{Envelope, Event, NodeId};

/// The node, and its head view if it is a head, that a `node.imported` makes of a node
/// the views do not have yet: what an import compares the server's nodes with, so
/// that it reads the file exactly as replay will.
pub fn imported(event: &Event) -> Option<(NodeView, Option<HeadView>)> {
    let Event::NodeImported { node_id, name, ip, kind, .. } = event else { return None };
    let mut node = NodeView::new(node_id.clone(), name.clone(), ip.clone(), 0);
    nodes::import(&mut node, event);
    let head = (kind == "head").then(|| {
        let mut h = HeadView::default();
        heads::import(&mut h, event);
        h
    });
    Some((node, head))
}
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;

/// A set of views that can be folded from envelopes, snapshotted and digested.
/// The ledger is generic over it, so each service brings its own views.
pub trait Projection: Default + Clone + Send + Sync + Serialize + DeserializeOwned + 'static {
    /// Bumped whenever the encoded shape of the views changes; a snapshot written by
    /// another version is ignored and the views are replayed from the log instead.
    const VERSION: u32;

    fn apply(&mut self, envelope: &Envelope);

    /// The sequence number of the last envelope applied (0 for none).
    fn last_seq(&self) -> u64;
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is empty")]
    Empty,
    #[error("snapshot was written for view version {found}, this build reads {expected}")]
    Version { found: u32, expected: u32 },
    #[error("undecodable snapshot: {0}")]
    Decode(String),
}

/// Encodes the views as a snapshot: the view version, then bincode.
pub fn encode_snapshot<P: Projection>(views: &P) -> Vec<u8> {
    let mut out = P::VERSION.to_be_bytes().to_vec();
    bincode::serde::encode_into_std_write(views, &mut out, bincode::config::standard())
        .expect("views are always encodable");
    out
}

pub fn decode_snapshot<P: Projection>(bytes: &[u8]) -> Result<P, SnapshotError> {
    if bytes.len() < 4 {
        return Err(SnapshotError::Empty);
    }
    let found = u32::from_be_bytes(bytes[..4].try_into().expect("four bytes"));
    if found != P::VERSION {
        return Err(SnapshotError::Version { found, expected: P::VERSION });
    }
    let (views, _): (P, usize) = bincode::serde::decode_from_slice(&bytes[4..], bincode::config::standard())
        .map_err(|e| SnapshotError::Decode(e.to_string()))?;
    Ok(views)
}

/// A stable hash of the views: the same events always give the same digest,
/// whether folded live or replayed offline. Hex-encoded blake3.
pub fn digest<P: Projection>(views: &P) -> String {
    let bytes = encode_snapshot(views);
    blake3::hash(&bytes).to_hex().to_string()
}

/// The views of `hydracluster`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterViews {
    pub last_seq: u64,
    /// Time of the last applied envelope, unix ms.
    pub last_at_ms: u64,
    pub nodes: BTreeMap<NodeId, NodeView>,
    pub exec: ExecViews,
    /// What only kiosk heads have; every head is also in `nodes` with kind head.
    pub heads: BTreeMap<NodeId, HeadView>,
    /// Where each node is in its reinstall cycle (only nodes ever asked).
    pub provision: BTreeMap<NodeId, ProvisionView>,
    /// Body anomalies open now, with when each began.
    pub anomalies: OpenAnomalies,
    /// Stream sessions: each head's open one and the last finished ones.
    pub sessions: SessionViews,
    /// Each node's rolling uptime: hourly buckets of the last 30 days.
    pub uptime: UptimeViews,
}

impl Projection for ClusterViews {
    const VERSION: u32 = 8;

    fn apply(&mut self, envelope: &Envelope) {
        self.last_seq = envelope.seq;
        self.last_at_ms = envelope.at_ms;
        nodes::apply(&mut self.nodes, envelope);
        exec::apply(&mut self.exec, envelope);
        heads::apply(&mut self.heads, envelope);
        provision::apply(&mut self.provision, envelope);
        anomalies::apply(&mut self.anomalies, envelope);
        sessions::apply(&mut self.sessions, envelope);
        uptime::apply(&mut self.uptime, envelope);
    }

    fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

/// Views folded from `events`, numbered from 1 (one second apart, unchained): the
/// one helper behind the projections' and commands' tests and the tools.
pub fn fold<P: Projection>(events: impl IntoIterator<Item = hydra_events::Event>) -> P {
    let mut views = P::default();
    fold_into(&mut views, events);
    views
}

/// Applies `events` to `views`, numbered on from its last seq as `fold` numbers them.
pub fn fold_into<P: Projection>(views: &mut P, events: impl IntoIterator<Item = hydra_events::Event>) {
    for event in events {
        let seq = views.last_seq() + 1;
        views.apply(&numbered(seq, event));
    }
}

/// `event` as the `seq`th of a test log, at `seq` seconds.
fn numbered(seq: u64, event: hydra_events::Event) -> Envelope {
    Envelope {
        seq,
        at_ms: 1_000 * seq,
        schema: hydra_events::CURRENT_SCHEMA,
        cause: "test".into(),
        prev_hash: hydra_events::ZERO_HASH,
        event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydra_events::Event;

    /// One row of a projection's table test: events in, a check on the views out.
    pub(crate) struct Case {
        pub name: &'static str,
        pub events: Vec<Event>,
        pub check: fn(&ClusterViews),
    }

    /// Folds each case's events into fresh views and runs its check, naming the case
    /// first so a failure says which row broke.
    pub(crate) fn run_table(cases: Vec<Case>) {
        for case in cases {
            eprintln!("case: {}", case.name);
            (case.check)(&crate::fold(case.events));
        }
    }

    pub(crate) fn env(seq: u64, event: Event) -> Envelope {
        crate::numbered(seq, event)
    }

    #[test]
    fn snapshots_round_trip_and_keep_the_digest() {
        let mut views = ClusterViews::default();
        views.apply(&env(
            1,
            Event::NodeEnrolled {
                node_id: NodeId::parse("node-a").unwrap(),
                name: "body-1".into(),
                ip: "10.0.0.1".into(),
            },
        ));
        let bytes = encode_snapshot(&views);
        let back: ClusterViews = decode_snapshot(&bytes).unwrap();
        assert_eq!(back, views);
        assert_eq!(digest(&back), digest(&views));
    }

    #[test]
    fn a_snapshot_of_another_version_is_refused() {
        let mut bytes = encode_snapshot(&ClusterViews::default());
        bytes[3] = 99;
        assert!(matches!(
            decode_snapshot::<ClusterViews>(&bytes),
            Err(SnapshotError::Version { found: 99, .. })
        ));
    }

    #[test]
    fn the_digest_changes_with_the_views() {
        let empty = digest(&ClusterViews::default());
        let mut views = ClusterViews::default();
        views.apply(&env(1, Event::NodeOnline { node_id: NodeId::parse("node-a").unwrap() }));
        assert_ne!(digest(&views), empty);
    }
}
