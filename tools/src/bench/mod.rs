//! The `hydra-bench` suites — `ledger` (disk fsync floor, durable appends, replay and
//! start-up, SSE fan-out) and `exec` (dispatch latency, the CLI round trip, exec
//! throughput), `rollout-report` (where a rollout's time goes) and `soak` (memory and
//! descriptors of a real server under SSE and slowloris floods) — and the helpers they
//! share: realistic events and timing.

pub mod append;
pub mod exec;
pub mod exec_report;
pub mod fanout;
pub mod fsync;
pub mod replay;
pub mod report;
pub mod rollout;
pub mod soak;
pub mod stats;

use hydra_core::error::DomainError;
use hydra_core::ledger::{Decision, Ledger};
use hydra_events::{Event, NodeId};
use hydra_projections::ClusterViews;

/// `count` node ids `node-0000`, `node-0001`, … zero-padded to `width` digits, so
/// that they sort like a real fleet's and have a realistic length.
pub fn node_ids(count: usize, width: usize) -> Vec<NodeId> {
    (0..count)
        .map(|i| NodeId::parse(&format!("node-{i:0width$}")).expect("generated ids are valid"))
        .collect()
}

/// The enrollment of node number `i`, as the enrollment form would produce it.
pub fn enrollment(node_id: &NodeId, i: usize) -> Event {
    Event::NodeEnrolled {
        node_id: node_id.clone(),
        name: format!("body-{i}"),
        ip: format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff),
    }
}

/// A command that flips a node between "idle" and "streaming". It reads the current
/// view like real commands do, so the writer's per-command work is representative.
pub fn toggle_stream(
    node_id: NodeId,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> + Send + 'static {
    move |views| {
        let idle = views.nodes.get(&node_id).is_none_or(|n| n.stream_status == "idle");
        let stream_status = if idle { "streaming" } else { "idle" }.to_owned();
        Ok(Decision::events(vec![Event::NodeStreamChanged { node_id, stream_status }]))
    }
}

/// Enrolls every node in `ids` through the ledger, 500 per command so that no single
/// batch is unusually large.
pub async fn enroll_all(ledger: &Ledger<ClusterViews>, ids: &[NodeId]) -> anyhow::Result<()> {
    for (chunk_no, chunk) in ids.chunks(500).enumerate() {
        let events: Vec<Event> =
            chunk.iter().enumerate().map(|(j, id)| enrollment(id, chunk_no * 500 + j)).collect();
        ledger.submit("bench:enroll", move |_| Ok(Decision::events(events))).await?;
    }
    Ok(())
}
