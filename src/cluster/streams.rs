//! Streams: the record of an admin's force-stop, and the body anomalies decided by a
//! watchdog pass — a body streaming with no head watching (`orphan_stream`) and a GPU
//! busy with no stream (`gpu_busy_without_stream`).

use hydra_core::error::DomainError;
use hydra_core::ledger::Decision;
use hydra_events::{Event, NodeId};
use hydra_projections::{ClusterViews, NodeKind};
use std::collections::{BTreeMap, BTreeSet};

pub const ORPHAN_STREAM: &str = "orphan_stream";
pub const GPU_BUSY_WITHOUT_STREAM: &str = "gpu_busy_without_stream";

/// Records a force-stop; `exec` says how the body answered the stop command. The
/// projection sets the stream idle.
pub fn stopped(id: NodeId, exec: String) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    super::sessions::tracked(move |views| {
        if !views.nodes.contains_key(&id) {
            return Err(DomainError::NotFound(format!("no node {id}")));
        }
        Ok(Decision::events(vec![Event::StreamStopped { node_id: id, exec }]))
    })
}

/// Whether each body's last telemetry since start-up showed its GPU over the threshold.
/// Telemetry is volatile, so the caller brings it; a body missing here has sent none
/// since the server started, and its GPU anomaly stays as it was (a restart must not
/// close it and reopen it with a new start time).
pub type GpuBusy = BTreeMap<NodeId, bool>;

/// The anomalies that hold now. Only online bodies count: an offline body's stream
/// status and telemetry are stale.
pub fn current(views: &ClusterViews, gpu_busy: &GpuBusy) -> BTreeMap<NodeId, BTreeSet<&'static str>> {
    let watched: BTreeSet<&NodeId> = views
        .heads
        .iter()
        .filter(|(head, h)| h.status == "streaming" && views.nodes.get(*head).is_some_and(|n| n.online))
        .filter_map(|(_, h)| h.assigned_body.as_ref())
        .collect();
    let mut out: BTreeMap<NodeId, BTreeSet<&'static str>> = BTreeMap::new();
    for n in views.nodes.values().filter(|n| n.kind == NodeKind::Body && n.online) {
        let streaming = n.stream_status == "streaming";
        if streaming && !watched.contains(&n.id) {
            out.entry(n.id.clone()).or_default().insert(ORPHAN_STREAM);
        }
        let open = || views.anomalies.get(&n.id).is_some_and(|o| o.contains_key(GPU_BUSY_WITHOUT_STREAM));
        if !streaming && gpu_busy.get(&n.id).copied().unwrap_or_else(open) {
            out.entry(n.id.clone()).or_default().insert(GPU_BUSY_WITHOUT_STREAM);
        }
    }
    out
}

/// The events that bring the open anomalies in line with the conditions now.
pub fn anomaly_events(views: &ClusterViews, gpu_busy: &GpuBusy) -> Vec<Event> {
    let now = current(views, gpu_busy);
    let mut events = Vec::new();
    for (node, kinds) in &now {
        let open = views.anomalies.get(node);
        for kind in kinds {
            if !open.is_some_and(|o| o.contains_key(*kind)) {
                events.push(Event::AnomalyStarted { node_id: node.clone(), kind: (*kind).into() });
            }
        }
    }
    for (node, open) in &views.anomalies {
        for kind in open.keys() {
            if !now.get(node).is_some_and(|k| k.contains(kind.as_str())) {
                events.push(Event::AnomalyCleared { node_id: node.clone(), kind: kind.clone() });
            }
        }
    }
    events
}

/// The watchdog's command: decides again on the writer's views.
pub fn reconcile(gpu_busy: GpuBusy) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| Ok(Decision::events(anomaly_events(views, &gpu_busy)))
}

/// Whether a heartbeat's telemetry shows the GPU at or over `threshold_pct`.
pub fn gpu_busy(telemetry: &serde_json::Value, threshold_pct: f64) -> bool {
    telemetry.get("gpu_utilization_pct").and_then(|v| v.as_f64()).is_some_and(|pct| pct >= threshold_pct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::views_with;

    fn body() -> NodeId {
        NodeId::parse("node-b").unwrap()
    }
    fn head() -> NodeId {
        NodeId::parse("node-h").unwrap()
    }

    fn streaming_body() -> Vec<Event> {
        vec![
            Event::NodeEnrolled { node_id: body(), name: "b".into(), ip: "1.1.1.1".into() },
            Event::NodeOnline { node_id: body() },
            Event::NodeStreamChanged { node_id: body(), stream_status: "streaming".into() },
        ]
    }

    fn types(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.type_name()).collect()
    }

    #[test]
    fn a_streaming_body_without_a_streaming_head_is_an_orphan() {
        let v = views_with(streaming_body());
        let events = anomaly_events(&v, &GpuBusy::new());
        assert_eq!(events, vec![Event::AnomalyStarted { node_id: body(), kind: ORPHAN_STREAM.into() }]);
        let mut with_head = streaming_body();
        with_head.extend(crate::cluster::online_head_pinned_to(&head(), &body()));
        with_head.push(Event::HeadStatusChanged {
            node_id: head(),
            status: "streaming".into(),
            detail: None,
        });
        assert!(anomaly_events(&views_with(with_head), &GpuBusy::new()).is_empty());
    }

    #[test]
    fn anomalies_clear_when_the_condition_ends_and_open_ones_are_not_repeated() {
        let mut events = streaming_body();
        events.push(Event::AnomalyStarted { node_id: body(), kind: ORPHAN_STREAM.into() });
        assert!(anomaly_events(&views_with(events.clone()), &GpuBusy::new()).is_empty());
        events.push(Event::NodeStreamChanged { node_id: body(), stream_status: "idle".into() });
        let busy = GpuBusy::from([(body(), true)]);
        let out = anomaly_events(&views_with(events.clone()), &busy);
        assert_eq!(types(&out), ["anomaly.started", "anomaly.cleared"]);
        assert_eq!(out[0], Event::AnomalyStarted { node_id: body(), kind: GPU_BUSY_WITHOUT_STREAM.into() });
        // Open, and no telemetry since a restart: unknown keeps it open; known idle closes it.
        events.push(Event::AnomalyStarted { node_id: body(), kind: GPU_BUSY_WITHOUT_STREAM.into() });
        events.push(Event::AnomalyCleared { node_id: body(), kind: ORPHAN_STREAM.into() });
        let v = views_with(events);
        assert!(anomaly_events(&v, &GpuBusy::new()).is_empty());
        let idle = GpuBusy::from([(body(), false)]);
        assert_eq!(types(&anomaly_events(&v, &idle)), ["anomaly.cleared"]);
    }

    #[test]
    fn gpu_threshold_is_inclusive() {
        let t = serde_json::json!({"gpu_utilization_pct": 50});
        assert!(gpu_busy(&t, 50.0));
        assert!(!gpu_busy(&t, 50.5));
        assert!(!gpu_busy(&serde_json::json!({}), 1.0));
    }
}
