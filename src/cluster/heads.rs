//! Head commands: fleet enrollment of kiosks, the status they report, the body an
//! admin pins them to and their experience whitelist. Plain functions that read the
//! views and decide the events, like the node commands.

use crate::auth::{node_principal, TokenHash};
use crate::error::DomainError;
use crate::ledger::Decision;
use crate::store::TokenWrite;
use hydra_events::{Event, NodeId};
use hydra_projections::{ClusterViews, HeadView, NodeKind, NodeView};

/// The node and head views of a kiosk head: 404 when there is no such node, 400 when
/// it is a body (the caller named the wrong kind of node).
pub fn head<'a>(views: &'a ClusterViews, id: &NodeId) -> Result<(&'a NodeView, &'a HeadView), DomainError> {
    let n = views.nodes.get(id).ok_or_else(|| DomainError::NotFound(format!("no node {id}")))?;
    match (n.kind, views.heads.get(id)) {
        (NodeKind::Head, Some(h)) => Ok((n, h)),
        _ => Err(DomainError::Invalid(format!("node {id} is not a kiosk head"))),
    }
}

/// Where a head stands, already validated.
#[derive(Debug, Clone)]
pub struct HeadEnrollment {
    pub name: String,
    pub district: String,
    pub venue: String,
}

/// Registers a kiosk: approved at once (the fleet token stands for the approval), with
/// its node token stored as a hash in the same flush as the event.
pub fn register(
    id: NodeId,
    e: HeadEnrollment,
    token: TokenHash,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        if views.nodes.contains_key(&id) {
            return Err(DomainError::Conflict(format!("node {id} exists already")));
        }
        Ok(Decision {
            tokens: vec![TokenWrite::Put { hash: token, principal: node_principal(&id) }],
            events: vec![Event::HeadRegistered {
                node_id: id,
                name: e.name,
                district: e.district,
                venue: e.venue,
            }],
        })
    }
}

/// The kiosk's own status; a report that repeats the current one writes nothing.
pub fn report_status(
    id: NodeId,
    status: String,
    detail: Option<String>,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let (_, h) = head(views, &id)?;
        if h.status == status && h.detail == detail {
            return Ok(Decision::default());
        }
        Ok(Decision::events(vec![Event::HeadStatusChanged { node_id: id, status, detail }]))
    }
}

/// Pins a head to a body (or clears it with `None`). The body must be a body, in the
/// head's district and venue, and online now: an admin override that points a kiosk
/// at a machine it cannot reach would only move the failure to the kiosk.
pub fn assign(
    id: NodeId,
    body_id: Option<NodeId>,
    app_id: Option<String>,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let (h_node, h) = head(views, &id)?;
        let Some(body_id) = body_id else {
            if h.assigned_body.is_none() && h.app_id.is_none() {
                return Ok(Decision::default());
            }
            return Ok(Decision::events(vec![Event::HeadAssigned {
                node_id: id,
                body_id: None,
                app_id: None,
            }]));
        };
        let b =
            views.nodes.get(&body_id).ok_or_else(|| DomainError::NotFound(format!("no body {body_id}")))?;
        if b.kind != NodeKind::Body {
            return Err(DomainError::Invalid(format!("{body_id} is a kiosk head, not a body")));
        }
        if (b.district.as_str(), b.venue.as_str()) != (h_node.district.as_str(), h_node.venue.as_str()) {
            return Err(DomainError::Conflict(format!(
                "body {body_id} is in {}/{} but head {id} is in {}/{}: a head streams only from its own venue",
                show(&b.district),
                show(&b.venue),
                h_node.district,
                h_node.venue
            )));
        }
        if !b.online {
            return Err(DomainError::Conflict(format!("body {body_id} is offline")));
        }
        if h.assigned_body.as_ref() == Some(&body_id) && h.app_id == app_id {
            return Ok(Decision::default());
        }
        Ok(Decision::events(vec![Event::HeadAssigned { node_id: id, body_id: Some(body_id), app_id }]))
    }
}

fn show(label: &str) -> &str {
    if label.is_empty() {
        "(unplaced)"
    } else {
        label
    }
}

/// Replaces the head's whitelist (already validated and deduplicated).
pub fn allow_experiences(
    id: NodeId,
    experiences: Vec<String>,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let (_, h) = head(views, &id)?;
        if h.allowed_experiences == experiences {
            return Ok(Decision::default());
        }
        Ok(Decision::events(vec![Event::HeadExperiencesAllowed { node_id: id, experiences }]))
    }
}

/// When a body leaves the fleet, the heads pinned to it are unpinned in the same
/// command, so no head points at a node that no longer exists.
pub fn unassign_from(views: &ClusterViews, body: &NodeId) -> Vec<Event> {
    views
        .heads
        .iter()
        .filter(|(_, h)| h.assigned_body.as_ref() == Some(body))
        .map(|(id, _)| Event::HeadAssigned { node_id: id.clone(), body_id: None, app_id: None })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::views_with;

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).unwrap()
    }

    fn fleet() -> ClusterViews {
        let placed = |n: &str, venue: &str| Event::NodeApproved {
            node_id: id(n),
            roles: vec![],
            district: "north".into(),
            venue: venue.into(),
            environment: "production".into(),
        };
        views_with(vec![
            Event::HeadRegistered {
                node_id: id("node-h"),
                name: "ipad".into(),
                district: "north".into(),
                venue: "arena".into(),
            },
            Event::NodeEnrolled { node_id: id("node-b"), name: "b".into(), ip: "10.0.0.2".into() },
            placed("node-b", "arena"),
            Event::NodeOnline { node_id: id("node-b") },
            Event::NodeEnrolled { node_id: id("node-far"), name: "f".into(), ip: "10.0.0.3".into() },
            placed("node-far", "hall"),
            Event::NodeOnline { node_id: id("node-far") },
            Event::NodeEnrolled { node_id: id("node-off"), name: "o".into(), ip: "10.0.0.4".into() },
            placed("node-off", "arena"),
        ])
    }

    #[test]
    fn assignment_checks_kind_venue_and_liveness() {
        let v = fleet();
        let d = assign(id("node-h"), Some(id("node-b")), None)(&v).unwrap();
        assert_eq!(d.events.len(), 1);
        let err = |body: &str| assign(id("node-h"), Some(id(body)), None)(&v).unwrap_err();
        assert!(matches!(err("node-far"), DomainError::Conflict(m) if m.contains("north/hall")));
        assert!(matches!(err("node-off"), DomainError::Conflict(m) if m.contains("offline")));
        assert!(matches!(err("node-h"), DomainError::Invalid(m) if m.contains("kiosk head")));
        assert!(matches!(err("node-nope"), DomainError::NotFound(_)));
        let not_head = assign(id("node-b"), None, None)(&v).unwrap_err();
        assert!(matches!(not_head, DomainError::Invalid(m) if m.contains("not a kiosk head")));
        // Clearing an assignment that is not there writes nothing.
        assert!(assign(id("node-h"), None, None)(&v).unwrap().events.is_empty());
    }

    #[test]
    fn repeated_reports_and_whitelists_write_nothing() {
        let v = fleet();
        assert!(report_status(id("node-h"), "idle".into(), None)(&v).unwrap().events.is_empty());
        assert_eq!(report_status(id("node-h"), "error".into(), None)(&v).unwrap().events.len(), 1);
        assert!(allow_experiences(id("node-h"), vec![])(&v).unwrap().events.is_empty());
    }

    #[test]
    fn removing_a_body_unpins_its_heads() {
        let mut v = fleet();
        v.heads.get_mut(&id("node-h")).unwrap().assigned_body = Some(id("node-b"));
        assert_eq!(
            unassign_from(&v, &id("node-b")),
            vec![Event::HeadAssigned { node_id: id("node-h"), body_id: None, app_id: None }]
        );
        assert!(unassign_from(&v, &id("node-far")).is_empty());
    }
}
