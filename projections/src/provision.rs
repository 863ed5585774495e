//! The provisioning view: where each node is in its reinstall cycle (requested,
//! provisioning, completed, failed), when it started, the last version it installed
//! and the last error, folded from `provision.*` events.

use hydra_events::{Envelope, Event, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProvisionState {
    /// Never asked to reprovision.
    #[default]
    Idle,
    /// An admin or a rollout asked; the flag has not reached the node yet.
    Requested,
    /// The flag reached the node; the provisioning deadline runs.
    Provisioning,
    Completed,
    Failed,
}

impl ProvisionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisionState::Idle => "idle",
            ProvisionState::Requested => "requested",
            ProvisionState::Provisioning => "provisioning",
            ProvisionState::Completed => "completed",
            ProvisionState::Failed => "failed",
        }
    }

    /// Asked and not yet answered: a second request would only race the first.
    pub fn is_open(self) -> bool {
        matches!(self, ProvisionState::Requested | ProvisionState::Provisioning)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProvisionView {
    pub state: ProvisionState,
    pub requested_at_ms: Option<u64>,
    /// When the flag reached the node (the deadline counts from here), unix ms.
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// The version the last successful provisioning installed; kept across later
    /// failures, because the node still runs it.
    pub version: Option<String>,
    /// The error of the last failed provisioning (`timeout` when the node went silent).
    pub error: Option<String>,
}

pub(crate) fn apply(views: &mut BTreeMap<NodeId, ProvisionView>, envelope: &Envelope) {
    let at = envelope.at_ms;
    match &envelope.event {
        Event::NodeRemoved { node_id } => {
            views.remove(node_id);
        }
        Event::ReprovisionRequested { node_id } => {
            let p = views.entry(node_id.clone()).or_default();
            p.state = ProvisionState::Requested;
            p.requested_at_ms = Some(at);
            p.started_at_ms = None;
            p.finished_at_ms = None;
        }
        Event::ProvisionStarted { node_id } => {
            let p = views.entry(node_id.clone()).or_default();
            p.state = ProvisionState::Provisioning;
            p.started_at_ms = Some(at);
        }
        Event::ProvisionCompleted { node_id, version } => {
            let p = views.entry(node_id.clone()).or_default();
            p.state = ProvisionState::Completed;
            p.finished_at_ms = Some(at);
            p.version = version.clone();
            p.error = None;
        }
        Event::ProvisionFailed { node_id, error } => {
            let p = views.entry(node_id.clone()).or_default();
            p.state = ProvisionState::Failed;
            p.finished_at_ms = Some(at);
            p.error = Some(error.clone());
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::{run_table, Case};
    use crate::ProvisionState;
    use hydra_events::{Event, NodeId};

    fn id() -> NodeId {
        NodeId::parse("node-p1").unwrap()
    }

    fn base() -> Vec<Event> {
        vec![
            Event::NodeEnrolled { node_id: id(), name: "b".into(), ip: "10.0.0.1".into() },
            Event::NodeApproved {
                node_id: id(),
                roles: vec!["hydrabody".into()],
                district: "north".into(),
                venue: "arena".into(),
                environment: "production".into(),
                owner: None,
            },
        ]
    }

    fn with(more: Vec<Event>) -> Vec<Event> {
        let mut events = base();
        events.extend(more);
        events
    }

    #[test]
    fn provisioning_table() {
        let cases = vec![
            Case {
                name: "a node never asked has no provisioning record and no flag",
                events: base(),
                check: |v| {
                    assert!(!v.provision.contains_key(&id()));
                    assert!(!v.nodes[&id()].reprovision);
                },
            },
            Case {
                name: "a request sets the pending flag and the requested state",
                events: with(vec![Event::ReprovisionRequested { node_id: id() }]),
                check: |v| {
                    let p = &v.provision[&id()];
                    assert_eq!(p.state, ProvisionState::Requested);
                    assert_eq!(p.requested_at_ms, Some(3000));
                    assert_eq!(p.started_at_ms, None);
                    assert!(v.nodes[&id()].reprovision);
                },
            },
            Case {
                name: "the start clears the flag and starts the clock",
                events: with(vec![
                    Event::ReprovisionRequested { node_id: id() },
                    Event::ProvisionStarted { node_id: id() },
                ]),
                check: |v| {
                    let p = &v.provision[&id()];
                    assert_eq!(p.state, ProvisionState::Provisioning);
                    assert_eq!(p.started_at_ms, Some(4000));
                    assert!(!v.nodes[&id()].reprovision);
                    assert_eq!(v.nodes[&id()].updated_seq, 4);
                },
            },
            Case {
                name: "completion records the version",
                events: with(vec![
                    Event::ReprovisionRequested { node_id: id() },
                    Event::ProvisionStarted { node_id: id() },
                    Event::ProvisionCompleted { node_id: id(), version: Some("1.2.3".into()) },
                ]),
                check: |v| {
                    let p = &v.provision[&id()];
                    assert_eq!(p.state, ProvisionState::Completed);
                    assert_eq!(p.version.as_deref(), Some("1.2.3"));
                    assert_eq!(p.finished_at_ms, Some(5000));
                    assert_eq!(p.error, None);
                },
            },
            Case {
                name: "a failure keeps the last good version and records the error",
                events: with(vec![
                    Event::ReprovisionRequested { node_id: id() },
                    Event::ProvisionStarted { node_id: id() },
                    Event::ProvisionCompleted { node_id: id(), version: Some("1".into()) },
                    Event::ReprovisionRequested { node_id: id() },
                    Event::ProvisionStarted { node_id: id() },
                    Event::ProvisionFailed { node_id: id(), error: "timeout".into() },
                ]),
                check: |v| {
                    let p = &v.provision[&id()];
                    assert_eq!(p.state, ProvisionState::Failed);
                    assert_eq!(p.version.as_deref(), Some("1"));
                    assert_eq!(p.error.as_deref(), Some("timeout"));
                    assert_eq!(p.started_at_ms, Some(7000));
                },
            },
            Case {
                name: "a new request after a failure starts over",
                events: with(vec![
                    Event::ReprovisionRequested { node_id: id() },
                    Event::ProvisionStarted { node_id: id() },
                    Event::ProvisionFailed { node_id: id(), error: "disk".into() },
                    Event::ReprovisionRequested { node_id: id() },
                ]),
                check: |v| {
                    let p = &v.provision[&id()];
                    assert_eq!(p.state, ProvisionState::Requested);
                    assert_eq!((p.started_at_ms, p.finished_at_ms), (None, None));
                    assert!(v.nodes[&id()].reprovision);
                },
            },
            Case {
                name: "removal forgets the record",
                events: with(vec![
                    Event::ReprovisionRequested { node_id: id() },
                    Event::NodeRemoved { node_id: id() },
                ]),
                check: |v| assert!(v.provision.is_empty()),
            },
        ];
        run_table(cases);
    }
}
