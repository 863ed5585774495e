//! Open body anomalies (`orphan_stream`, `gpu_busy_without_stream`) with the time each
//! began, folded from `anomaly.*` events, so "since when" survives a restart.

use hydra_events::{Envelope, Event, NodeId};
use std::collections::BTreeMap;

/// Node → anomaly kind → when it began (unix ms).
pub type OpenAnomalies = BTreeMap<NodeId, BTreeMap<String, u64>>;

pub(crate) fn apply(open: &mut OpenAnomalies, envelope: &Envelope) {
    match &envelope.event {
        Event::AnomalyStarted { node_id, kind } => {
            // A repeated start keeps the first time: the anomaly has lasted since then.
            open.entry(node_id.clone()).or_default().entry(kind.clone()).or_insert(envelope.at_ms);
        }
        Event::AnomalyCleared { node_id, kind } => {
            if let Some(kinds) = open.get_mut(node_id) {
                kinds.remove(kind);
                if kinds.is_empty() {
                    open.remove(node_id);
                }
            }
        }
        Event::NodeRemoved { node_id } => {
            open.remove(node_id);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::fold;
    use hydra_events::{Event, NodeId};

    fn id() -> NodeId {
        NodeId::parse("node-a1").unwrap()
    }

    #[test]
    fn anomalies_open_with_their_start_and_close() {
        let started = |kind: &str| Event::AnomalyStarted { node_id: id(), kind: kind.into() };
        let v: crate::ClusterViews = fold(vec![
            started("orphan_stream"),
            started("orphan_stream"),
            started("gpu_busy_without_stream"),
        ]);
        assert_eq!(v.anomalies[&id()]["orphan_stream"], 1000, "a repeated start keeps the first time");
        assert_eq!(v.anomalies[&id()]["gpu_busy_without_stream"], 3000);
        let v: crate::ClusterViews = fold(vec![
            started("orphan_stream"),
            Event::AnomalyCleared { node_id: id(), kind: "orphan_stream".into() },
        ]);
        assert!(v.anomalies.is_empty());
        let v: crate::ClusterViews =
            fold(vec![started("orphan_stream"), Event::NodeRemoved { node_id: id() }]);
        assert!(v.anomalies.is_empty());
    }
}
