//! ExperienceLibrary's own metric families, beside the shared ones
//! (`service::metrics`): rollouts by state and the nodes of open rollouts by state,
//! read from the committed views at each scrape, and rollout node results from the
//! ledger's count of events by type, so every figure is exact.

use super::api::ROLLOUT_STATES;
use crate::service::metrics::{counters, gauges, GaugeSeries, Scraped};
use hydra_core::ledger::Ledger;
use hydra_projections::{LibraryViews, NodeState, RolloutState};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;

const NODE_STATES: [NodeState; 5] = [
    NodeState::Pending,
    NodeState::Requested,
    NodeState::Provisioning,
    NodeState::Completed,
    NodeState::Failed,
];

pub fn register(registry: &mut Registry, ledger: Ledger<LibraryViews>) {
    registry.register_collector(Box::new(Scraped::new(move |e| {
        let (rollouts, nodes) = ledger.read(counts);
        gauges(e, "hydra_rollouts", "Rollouts by state", rollouts)?;
        gauges(e, "hydra_rollout_nodes", "Nodes of running or paused rollouts, by state", nodes)?;
        let m = ledger.metrics();
        counters(
            e,
            "hydra_rollout_node_results",
            "Rollout nodes finished, by result",
            [("completed", "rollout.node_completed"), ("failed", "rollout.node_failed")]
                .into_iter()
                .map(|(result, event)| (vec![("result", result)], m.events_of(event))),
        )
    })));
}

/// Rollouts by state, and the nodes of open rollouts by state, each state listed (at 0
/// when empty) so that no series vanishes.
fn counts(v: &LibraryViews) -> (Vec<GaugeSeries>, Vec<GaugeSeries>) {
    let mut rollouts: BTreeMap<&'static str, i64> = ROLLOUT_STATES.iter().map(|s| (s.as_str(), 0)).collect();
    let mut nodes: BTreeMap<&'static str, i64> = NODE_STATES.iter().map(|s| (s.as_str(), 0)).collect();
    for r in v.rollouts.values() {
        *rollouts.entry(r.state.as_str()).or_default() += 1;
        if matches!(r.state, RolloutState::Running | RolloutState::Paused) {
            for n in r.nodes.values() {
                *nodes.entry(n.state.as_str()).or_default() += 1;
            }
        }
    }
    let labelled =
        |m: BTreeMap<&'static str, i64>| m.into_iter().map(|(s, n)| (vec![("state", s)], n)).collect();
    (labelled(rollouts), labelled(nodes))
}
