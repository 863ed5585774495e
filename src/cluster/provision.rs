//! Provisioning commands: an admin's (or a rollout's) reprovision request, the node's
//! result, and the deadline that turns a silent node into a failure. The heartbeat
//! records `provision.started` (see `nodes::heartbeat_events`).

use hydra_core::error::DomainError;
use hydra_core::ledger::Decision;
use hydra_events::{Event, NodeId};
use hydra_projections::{ClusterViews, NodeStatus, ProvisionState};

/// Whether the reprovision flag must be carried again to a node that says it has no
/// provisioning in hand: the answer that carried it was lost (the connection broke,
/// the server was killed after recording `provision.started`) while the log says the
/// node is provisioning. Carrying it again beats letting the run end as a timeout.
pub fn flag_lost(views: &ClusterViews, id: &NodeId) -> bool {
    views.provision.get(id).is_some_and(|p| p.state == ProvisionState::Provisioning)
}

/// Flags an approved node to reinstall on its next heartbeat. A node already asked
/// and not yet answered is refused (409): a second request would only race the first,
/// and a rollout must learn that the node is busy rather than wait on the wrong run.
pub fn request(id: NodeId) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let n = views.nodes.get(&id).ok_or_else(|| DomainError::NotFound(format!("no node {id}")))?;
        if n.status != NodeStatus::Approved {
            return Err(DomainError::Conflict(format!(
                "node {id} is {}; only approved nodes are provisioned",
                n.status.as_str()
            )));
        }
        if let Some(p) = views.provision.get(&id).filter(|p| p.state.is_open()) {
            return Err(DomainError::Conflict(format!(
                "node {id} is {} already; wait for its result (or the provisioning deadline)",
                p.state.as_str()
            )));
        }
        Ok(Decision::events(vec![Event::ReprovisionRequested { node_id: id }]))
    }
}

/// What a node reports at the end of provisioning.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Installed { version: Option<String> },
    Failed { error: String },
}

/// The node's result; accepted only while it is provisioning, so a duplicate or a
/// result after the deadline changes nothing.
pub fn result(id: NodeId, outcome: Outcome) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let state = views.provision.get(&id).map(|p| p.state).unwrap_or_default();
        if state != ProvisionState::Provisioning {
            return Err(DomainError::Conflict(format!(
                "node {id} is not provisioning (its provisioning is {}); this result was not recorded",
                state.as_str()
            )));
        }
        let event = match outcome {
            Outcome::Installed { version } => Event::ProvisionCompleted { node_id: id, version },
            Outcome::Failed { error } => Event::ProvisionFailed { node_id: id, error },
        };
        Ok(Decision::events(vec![event]))
    }
}

/// Nodes provisioning for longer than `deadline_ms` at `now_ms`.
pub fn overdue(views: &ClusterViews, now_ms: u64, deadline_ms: u64) -> Vec<NodeId> {
    views
        .provision
        .iter()
        .filter(|(_, p)| is_overdue(p.state, p.started_at_ms, now_ms, deadline_ms))
        .map(|(id, _)| id.clone())
        .collect()
}

fn is_overdue(state: ProvisionState, started: Option<u64>, now_ms: u64, deadline_ms: u64) -> bool {
    state == ProvisionState::Provisioning && started.is_some_and(|at| at + deadline_ms < now_ms)
}

/// The watchdog's command: fails the overdue nodes with `timeout`, checking again on
/// the writer's views (a result that arrived meanwhile wins).
pub fn end_overdue(
    ids: Vec<NodeId>,
    now_ms: u64,
    deadline_ms: u64,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let events = ids
            .into_iter()
            .filter(|id| {
                views
                    .provision
                    .get(id)
                    .is_some_and(|p| is_overdue(p.state, p.started_at_ms, now_ms, deadline_ms))
            })
            .map(|node_id| Event::ProvisionFailed { node_id, error: "timeout".into() })
            .collect();
        Ok(Decision::events(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::nodes::{heartbeat_events, Report};
    use crate::cluster::views_with;

    fn id() -> NodeId {
        NodeId::parse("node-1").unwrap()
    }

    fn approved() -> Vec<Event> {
        vec![
            Event::NodeEnrolled { node_id: id(), name: "b".into(), ip: "1.2.3.4".into() },
            Event::NodeApproved {
                node_id: id(),
                roles: vec![],
                district: "d".into(),
                venue: "v".into(),
                environment: "production".into(),
                owner: None,
            },
            Event::NodeOnline { node_id: id() },
        ]
    }

    fn after(more: Vec<Event>) -> ClusterViews {
        let mut events = approved();
        events.extend(more);
        views_with(events)
    }

    #[test]
    fn the_heartbeat_records_the_start_once() {
        let v = after(vec![Event::ReprovisionRequested { node_id: id() }]);
        let events = heartbeat_events(&v.nodes[&id()], &Report::default());
        assert_eq!(events, vec![Event::ProvisionStarted { node_id: id() }]);
        let v = after(vec![
            Event::ReprovisionRequested { node_id: id() },
            Event::ProvisionStarted { node_id: id() },
        ]);
        assert!(heartbeat_events(&v.nodes[&id()], &Report::default()).is_empty());
    }

    #[test]
    fn a_second_request_while_open_is_refused_and_pending_nodes_are_refused() {
        let v = after(vec![Event::ReprovisionRequested { node_id: id() }]);
        assert!(
            matches!(request(id())(&v), Err(DomainError::Conflict(m)) if m.contains("requested already"))
        );
        let pending =
            views_with(vec![Event::NodeEnrolled { node_id: id(), name: "b".into(), ip: "1.1.1.1".into() }]);
        assert!(matches!(request(id())(&pending), Err(DomainError::Conflict(m)) if m.contains("pending")));
    }

    #[test]
    fn a_result_without_provisioning_is_refused() {
        let v = after(vec![]);
        let r = result(id(), Outcome::Installed { version: None })(&v);
        assert!(matches!(r, Err(DomainError::Conflict(m)) if m.contains("not provisioning")));
        let v = after(vec![Event::ReprovisionRequested { node_id: id() }]);
        assert!(result(id(), Outcome::Failed { error: "x".into() })(&v).is_err());
    }

    #[test]
    fn the_deadline_fails_silent_nodes_and_a_late_check_changes_nothing() {
        let v = after(vec![
            Event::ReprovisionRequested { node_id: id() },
            Event::ProvisionStarted { node_id: id() },
        ]);
        let started = v.provision[&id()].started_at_ms.unwrap();
        assert!(overdue(&v, started + 100, 100).is_empty());
        assert_eq!(overdue(&v, started + 101, 100), vec![id()]);
        let d = end_overdue(vec![id()], started + 101, 100)(&v).unwrap();
        assert_eq!(d.events, vec![Event::ProvisionFailed { node_id: id(), error: "timeout".into() }]);
        let done = after(vec![
            Event::ReprovisionRequested { node_id: id() },
            Event::ProvisionStarted { node_id: id() },
            Event::ProvisionCompleted { node_id: id(), version: None },
        ]);
        assert!(end_overdue(vec![id()], started + 101, 100)(&done).unwrap().events.is_empty());
    }
}
