//! hydracluster's own metric families, beside the shared ones (`service::metrics`):
//! heartbeats, exec dispatch latency and watchdog time-outs are recorded where they
//! happen; the fleet (nodes by kind, status and liveness; providers; provisioning;
//! anomalies; exec queues) is read from the committed views at each scrape, and the
//! exec results and online/offline transitions from the ledger's count of events by
//! type, so every figure is exact without a second copy of the state to keep.

use crate::cluster::streams;
use crate::service::metrics::{counters, gauges, GaugeSeries, Scraped};
use hydra_core::ledger::Ledger;
use hydra_projections::{ClusterViews, NodeKind, NodeStatus, ProvisionState};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::fmt;

/// The instruments hydracluster's handlers and watchdogs record into.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// Heartbeats accepted from bodies.
    pub heartbeats: Counter,
    /// From a command's queueing to its dispatch to the agent.
    pub exec_dispatch_seconds: Histogram,
    /// Commands in flight the exec watchdog ended (`exec.timed_out` by `watchdog`).
    pub exec_watchdog_timeouts: Counter,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        ClusterMetrics {
            heartbeats: Counter::default(),
            // 1 ms … ~4.5 h: a command waits for its node's long poll, or for the node.
            exec_dispatch_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 13)),
            exec_watchdog_timeouts: Counter::default(),
        }
    }
}

/// The anomaly kinds the watchdog opens.
const ANOMALY_KINDS: [&str; 2] = [streams::ORPHAN_STREAM, streams::GPU_BUSY_WITHOUT_STREAM];

/// Exec results: the final status and the event that says it.
const RESULTS: [(&str, &str); 5] = [
    ("completed", "exec.completed"),
    ("failed", "exec.failed"),
    ("timed_out", "exec.timed_out"),
    ("cancelled", "exec.cancelled"),
    ("expired", "exec.expired"),
];

impl ClusterMetrics {
    pub fn register(&self, registry: &mut Registry, ledger: Ledger<ClusterViews>) {
        registry.register("hydra_heartbeats", "Heartbeats accepted from bodies", self.heartbeats.clone());
        registry.register(
            "hydra_exec_dispatch_latency_seconds",
            "Time from a command's queueing to its dispatch to the node",
            self.exec_dispatch_seconds.clone(),
        );
        registry.register(
            "hydra_exec_watchdog_timeouts",
            "Commands in flight ended by the exec watchdog past their timeout",
            self.exec_watchdog_timeouts.clone(),
        );
        registry.register_collector(Box::new(Scraped::new(move |e| fleet(e, &ledger))));
    }
}

fn fleet(e: &mut DescriptorEncoder, ledger: &Ledger<ClusterViews>) -> fmt::Result {
    let counts = ledger.read(Counts::of);
    gauges(e, "hydra_nodes", "Nodes by kind, status and liveness", counts.nodes)?;
    gauges(
        e,
        "hydra_node_providers",
        "Approved bodies by what their provider reports: running, not_running (any other status) or \
         unknown (none reported)",
        counts.providers,
    )?;
    gauges(e, "hydra_provisioning", "Nodes by provisioning state (nodes ever asked)", counts.provisioning)?;
    gauges(e, "hydra_anomalies", "Open body anomalies by kind", counts.anomalies)?;
    gauges(
        e,
        "hydra_exec_commands",
        "Commands not yet finished, by state (pending, dispatched)",
        counts.exec,
    )?;
    let m = ledger.metrics();
    counters(
        e,
        "hydra_exec_results",
        "Commands finished, by final status",
        RESULTS.iter().map(|(status, event)| (vec![("status", *status)], m.events_of(event))),
    )?;
    counters(
        e,
        "hydra_node_transitions",
        "Nodes going online or offline (a high rate is a flapping node)",
        [("online", "node.online"), ("offline", "node.offline")]
            .into_iter()
            .map(|(to, event)| (vec![("to", to)], m.events_of(event))),
    )
}

/// The fleet's gauges, counted in one short read of the views.
struct Counts {
    nodes: Vec<GaugeSeries>,
    providers: Vec<GaugeSeries>,
    provisioning: Vec<GaugeSeries>,
    anomalies: Vec<GaugeSeries>,
    exec: Vec<GaugeSeries>,
}

impl Counts {
    fn of(v: &ClusterViews) -> Counts {
        let mut nodes: BTreeMap<(&'static str, &'static str, &'static str), i64> = BTreeMap::new();
        // Every combination is listed, at 0 when empty, so that a series never vanishes.
        for kind in [NodeKind::Body, NodeKind::Head] {
            for status in [NodeStatus::Pending, NodeStatus::Approved, NodeStatus::Rejected] {
                for liveness in ["online", "offline"] {
                    nodes.insert((kind.as_str(), status.as_str(), liveness), 0);
                }
            }
        }
        let mut providers: BTreeMap<&'static str, i64> =
            ["running", "not_running", "unknown"].into_iter().map(|p| (p, 0)).collect();
        for n in v.nodes.values() {
            let liveness = if n.online { "online" } else { "offline" };
            *nodes.entry((n.kind.as_str(), n.status.as_str(), liveness)).or_default() += 1;
            if n.kind == NodeKind::Body && n.status == NodeStatus::Approved {
                let provider = match n.provider_status.as_deref() {
                    Some("running") => "running",
                    Some(_) => "not_running",
                    None => "unknown",
                };
                *providers.entry(provider).or_default() += 1;
            }
        }
        let mut provisioning: BTreeMap<&'static str, i64> = [
            ProvisionState::Idle,
            ProvisionState::Requested,
            ProvisionState::Provisioning,
            ProvisionState::Completed,
            ProvisionState::Failed,
        ]
        .into_iter()
        .map(|s| (s.as_str(), 0))
        .collect();
        for p in v.provision.values() {
            *provisioning.entry(p.state.as_str()).or_default() += 1;
        }
        // Kinds are the watchdog's own names, never input; anything else is `other`.
        let mut anomalies: BTreeMap<&'static str, i64> = ANOMALY_KINDS.into_iter().map(|k| (k, 0)).collect();
        for kinds in v.anomalies.values() {
            for kind in kinds.keys() {
                let known = ANOMALY_KINDS.into_iter().find(|k| k == kind);
                *anomalies.entry(known.unwrap_or("other")).or_default() += 1;
            }
        }
        let (mut pending, mut dispatched) = (0, 0);
        for n in v.exec.nodes.values() {
            pending += n.queue.len() as i64;
            dispatched += i64::from(n.in_flight.is_some());
        }
        Counts {
            nodes: nodes
                .into_iter()
                .map(|((kind, status, liveness), n)| {
                    (vec![("kind", kind), ("status", status), ("liveness", liveness)], n)
                })
                .collect(),
            providers: providers.into_iter().map(|(p, n)| (vec![("state", p)], n)).collect(),
            provisioning: provisioning.into_iter().map(|(s, n)| (vec![("state", s)], n)).collect(),
            anomalies: anomalies.into_iter().map(|(k, n)| (vec![("kind", k)], n)).collect(),
            exec: vec![(vec![("state", "pending")], pending), (vec![("state", "dispatched")], dispatched)],
        }
    }
}
