//! Head commands: fleet enrollment of kiosks, the status they report, the body an
//! admin pins them to and their experience whitelist. Plain functions that read the
//! views and decide the events, like the node commands.

use hydra_core::auth::TokenHash;
use hydra_core::error::DomainError;
use hydra_core::ledger::Decision;
use hydra_core::names::{first_of_each, label, outside_id};
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

/// The most experiences a head's whitelist holds.
pub const MAX_EXPERIENCES: usize = 1000;
/// Where a kiosk says it stands; `register` checks it.
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
        let (name, district, venue) =
            (label("name", &e.name)?, label("district", &e.district)?, label("venue", &e.venue)?);
        let event = Event::HeadRegistered { node_id: id.clone(), name, district, venue };
        super::nodes::join(views, &id, token, event)
    }
}

/// The kiosk's own status; a report that repeats the current one writes nothing.
pub fn report_status(
    id: NodeId,
    status: String,
    detail: Option<String>,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    super::sessions::tracked(move |views| {
        let (_, h) = head(views, &id)?;
        if h.status == status && h.detail == detail {
            return Ok(Decision::default());
        }
        Ok(Decision::events(vec![Event::HeadStatusChanged { node_id: id, status, detail }]))
    })
}

/// Pins a head to a body (or clears it with `None`). The body must be a body, in the
/// head's district and venue, and online now: an admin override that points a kiosk
/// at a machine it cannot reach would only move the failure to the kiosk.
pub fn assign(
    id: NodeId,
    body_id: Option<NodeId>,
    app_id: Option<String>,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    super::sessions::tracked(move |views| {
        let app_id = match (app_id, &body_id) {
            (Some(a), None) => return Err(DomainError::Invalid(format!("app_id {a:?} needs a body_id"))),
            (a, _) => a.map(|a| outside_id("app_id", a)).transpose()?,
        };
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
        if b.environment != h_node.environment {
            return Err(DomainError::Conflict(format!(
                "body {body_id} is in {} but head {id} is in {}: a head streams only from its own environment",
                b.environment, h_node.environment
            )));
        }
        if !b.online {
            return Err(DomainError::Conflict(format!("body {body_id} is offline")));
        }
        if h.assigned_body.as_ref() == Some(&body_id) && h.app_id == app_id {
            return Ok(Decision::default());
        }
        Ok(Decision::events(vec![Event::HeadAssigned { node_id: id, body_id: Some(body_id), app_id }]))
    })
}

fn show(label: &str) -> &str {
    if label.is_empty() {
        "(unplaced)"
    } else {
        label
    }
}

/// Replaces the head's whitelist (repeats dropped).
pub fn allow_experiences(
    id: NodeId,
    requested: Vec<String>,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        if requested.len() > MAX_EXPERIENCES {
            return Err(DomainError::Invalid(format!("at most {MAX_EXPERIENCES} experiences")));
        }
        let requested: Vec<String> =
            requested.into_iter().map(|e| outside_id("experience", e)).collect::<Result<_, _>>()?;
        let experiences = first_of_each(requested);
        let (_, h) = head(views, &id)?;
        if h.allowed_experiences == experiences {
            return Ok(Decision::default());
        }
        Ok(Decision::events(vec![Event::HeadExperiencesAllowed { node_id: id, experiences }]))
    }
}

/// A body a head may stream from, with why it is where it is in the order.
#[derive(Debug, Clone, PartialEq)]
pub struct Eligible {
    pub body: NodeView,
    /// How many heads are pinned to this body now (this head included).
    pub heads_assigned: usize,
    pub rank_reason: String,
}

/// Why a body cannot serve a head right now, or `None` when it can: an approved body
/// in the head's district and venue, online, its provider running, not streaming and
/// not draining.
pub fn ineligibility(head: &NodeView, b: &NodeView) -> Option<String> {
    if b.kind != NodeKind::Body {
        return Some("not a body".into());
    }
    if b.status != hydra_projections::NodeStatus::Approved {
        return Some(format!("{}, not approved", b.status.as_str()));
    }
    if (b.district.as_str(), b.venue.as_str()) != (head.district.as_str(), head.venue.as_str()) {
        return Some(format!("in {}/{}", show(&b.district), show(&b.venue)));
    }
    if !b.online {
        return Some("offline".into());
    }
    if b.provider_status.as_deref() != Some("running") {
        return Some(format!("provider {}", b.provider_status.as_deref().unwrap_or("unknown")));
    }
    if b.stream_status != "idle" {
        return Some(format!("stream {}", b.stream_status));
    }
    if b.draining {
        return Some("draining".into());
    }
    None
}

/// The bodies head `id` may stream from, best first: its current body if that is still
/// eligible (a kiosk should not hop while its body serves it), then the body with the
/// fewest heads pinned to it (spread the load), then by name and id (a stable order).
pub fn eligible_bodies(views: &ClusterViews, id: &NodeId) -> Result<Vec<Eligible>, DomainError> {
    let (head_node, h) = head(views, id)?;
    let mut load: std::collections::BTreeMap<&NodeId, usize> = std::collections::BTreeMap::new();
    for b in views.heads.values().filter_map(|h| h.assigned_body.as_ref()) {
        *load.entry(b).or_default() += 1;
    }
    let mut found: Vec<(bool, Eligible)> = views
        .nodes
        .values()
        .filter(|b| ineligibility(head_node, b).is_none())
        .map(|b| {
            let current = h.assigned_body.as_ref() == Some(&b.id);
            let heads_assigned = load.get(&b.id).copied().unwrap_or(0);
            (current, Eligible { body: b.clone(), heads_assigned, rank_reason: String::new() })
        })
        .collect();
    found.sort_by(|(ca, a), (cb, b)| {
        cb.cmp(ca)
            .then(a.heads_assigned.cmp(&b.heads_assigned))
            .then_with(|| a.body.name.cmp(&b.body.name))
            .then_with(|| a.body.id.cmp(&b.body.id))
    });
    Ok(found
        .into_iter()
        .map(|(current, mut e)| {
            let heads = match e.heads_assigned {
                1 => "1 head assigned".to_string(),
                n => format!("{n} heads assigned"),
            };
            e.rank_reason = if current {
                format!("current assignment of this head ({heads})")
            } else {
                format!("{heads}; fewer heads first, then by name")
            };
            e
        })
        .collect())
}

/// The heads pinned to `body` lose it, in the same command as what makes the pairing
/// wrong (the body is removed, drained, moved or no longer a body), so no head
/// points at a body it cannot use.
pub fn unassign_from(views: &ClusterViews, body: &NodeId, reason: &str) -> Vec<Event> {
    views
        .heads
        .iter()
        .filter(|(_, h)| h.assigned_body.as_ref() == Some(body))
        .map(|(id, _)| Event::HeadUnassigned {
            head_id: id.clone(),
            body_id: body.clone(),
            reason: reason.into(),
        })
        .collect()
}

/// The head loses its body, if it has one.
pub fn unassign_head(views: &ClusterViews, head: &NodeId, reason: &str) -> Option<Event> {
    let body = views.heads.get(head)?.assigned_body.clone()?;
    Some(Event::HeadUnassigned { head_id: head.clone(), body_id: body, reason: reason.into() })
}

/// The assignments that no longer hold once node `n` moves to placement `p`: a head
/// and its body must share district, venue and environment.
pub fn unassign_mismatched(views: &ClusterViews, n: &NodeView, p: &super::nodes::Placement) -> Vec<Event> {
    let same = |other: &NodeView| {
        (other.district.as_str(), other.venue.as_str(), other.environment.as_str())
            == (p.district.as_str(), p.venue.as_str(), p.environment.as_str())
    };
    let reason = "placement_changed";
    match n.kind {
        NodeKind::Head => views
            .heads
            .get(&n.id)
            .and_then(|h| h.assigned_body.as_ref())
            .and_then(|b| views.nodes.get(b))
            .filter(|b| !same(b))
            .and_then(|_| unassign_head(views, &n.id, reason))
            .into_iter()
            .collect(),
        NodeKind::Body => views
            .heads
            .iter()
            .filter(|(id, h)| {
                h.assigned_body.as_ref() == Some(&n.id) && views.nodes.get(*id).is_some_and(|hn| !same(hn))
            })
            .map(|(id, _)| Event::HeadUnassigned {
                head_id: id.clone(),
                body_id: n.id.clone(),
                reason: reason.into(),
            })
            .collect(),
    }
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
            owner: None,
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
    fn eligible_bodies_are_ranked_current_first_then_least_loaded_then_by_name() {
        let mut v = fleet();
        let running = |v: &mut ClusterViews, n: &str, name: &str| {
            let b = v.nodes.get_mut(&id(n)).unwrap();
            b.provider_status = Some("running".into());
            b.name = name.into();
        };
        running(&mut v, "node-b", "zeta");
        running(&mut v, "node-far", "far");
        running(&mut v, "node-off", "off");
        let mut extra = v.nodes[&id("node-b")].clone();
        (extra.id, extra.name) = (id("node-c"), "alpha".into());
        v.nodes.insert(extra.id.clone(), extra);
        let names = |v: &ClusterViews| -> Vec<String> {
            eligible_bodies(v, &id("node-h")).unwrap().into_iter().map(|e| e.body.name).collect()
        };
        // Wrong venue and offline are out; among equals, by name.
        assert_eq!(names(&v), ["alpha", "zeta"]);
        // Another head on alpha: zeta has fewer heads.
        v.heads.insert(id("node-h2"), HeadView { assigned_body: Some(id("node-c")), ..HeadView::default() });
        assert_eq!(names(&v), ["zeta", "alpha"]);
        // This head's own body comes first even when busier.
        v.heads.get_mut(&id("node-h")).unwrap().assigned_body = Some(id("node-c"));
        let e = eligible_bodies(&v, &id("node-h")).unwrap();
        assert_eq!((e[0].body.name.as_str(), e[0].heads_assigned), ("alpha", 2));
        assert!(e[0].rank_reason.starts_with("current assignment"), "{}", e[0].rank_reason);
        assert_eq!(e[1].rank_reason, "0 heads assigned; fewer heads first, then by name");
        // Streaming, draining or a stopped provider take a body out.
        v.nodes.get_mut(&id("node-c")).unwrap().stream_status = "streaming".into();
        v.nodes.get_mut(&id("node-b")).unwrap().draining = true;
        assert!(names(&v).is_empty());
        assert!(matches!(eligible_bodies(&v, &id("node-b")), Err(DomainError::Invalid(_))));
        assert!(matches!(eligible_bodies(&v, &id("node-nope")), Err(DomainError::NotFound(_))));
    }

    fn unassigned(reason: &str) -> Event {
        Event::HeadUnassigned { head_id: id("node-h"), body_id: id("node-b"), reason: reason.into() }
    }

    fn pinned() -> ClusterViews {
        let mut v = fleet();
        v.heads.get_mut(&id("node-h")).unwrap().assigned_body = Some(id("node-b"));
        v
    }

    #[test]
    fn removing_a_body_unpins_its_heads() {
        let v = pinned();
        assert_eq!(unassign_from(&v, &id("node-b"), "body_removed"), vec![unassigned("body_removed")]);
        assert!(unassign_from(&v, &id("node-far"), "body_removed").is_empty());
        let d = crate::cluster::nodes::remove(id("node-b"))(&v).unwrap();
        assert_eq!(d.events[0], unassigned("body_removed"));
    }

    #[test]
    fn roles_decide_the_kind_and_a_changed_kind_ends_the_assignment() {
        use crate::cluster::nodes::{set_roles, RoleRules};
        use hydra_projections::Projection;
        let catalog = ["render-node", "hydraheadwindows", "hydrabody"].map(String::from).to_vec();
        let heads = RoleRules { catalog, head_roles: vec!["hydraheadwindows".into()] };
        let kind = |node: &str, kind: &str, roles: &[&str]| Event::NodeKindChanged {
            node_id: id(node),
            kind: kind.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        let changed = |node: &str, roles: &[&str]| Event::NodeRolesChanged {
            node_id: id(node),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        let v = pinned();
        // The fleet kiosk given a body's role becomes a body and loses its body; the body
        // given a head role becomes a head, and the kiosk pinned to it is let go.
        for (node, role, reason, becomes) in [
            ("node-h", "render-node", "no_longer_a_head", "body"),
            ("node-b", "hydraheadwindows", "body_no_longer_a_body", "head"),
        ] {
            let d = set_roles(id(node), vec![role.into()], heads.clone())(&v).unwrap();
            assert_eq!(
                d.events,
                vec![changed(node, &[role]), unassigned(reason), kind(node, becomes, &[role])]
            );
        }
        // Roles that leave the kind as it is write no kind change.
        let d = set_roles(id("node-b"), vec!["hydrabody".into()], heads.clone())(&v).unwrap();
        assert_eq!(d.events, vec![changed("node-b", &["hydrabody"])]);
        // Folded, the new head is listed with the heads and the old one is not.
        let mut after = v.clone();
        for e in set_roles(id("node-b"), vec!["hydraheadwindows".into()], heads)(&v).unwrap().events {
            after.apply(&hydra_events::Envelope {
                seq: after.last_seq + 1,
                at_ms: 0,
                schema: hydra_events::CURRENT_SCHEMA,
                cause: String::new(),
                prev_hash: hydra_events::ZERO_HASH,
                event: e,
            });
        }
        assert_eq!(after.nodes[&id("node-b")].kind, NodeKind::Head);
        assert!(after.heads.contains_key(&id("node-b")));
        assert_eq!(after.heads[&id("node-h")].assigned_body, None);
    }

    #[test]
    fn a_drained_or_moved_body_lets_its_heads_go() {
        use crate::cluster::nodes::{set_drain, set_placement, Placement};
        let v = pinned();
        let d = set_drain(id("node-b"), true)(&v).unwrap();
        assert_eq!(d.events[0], unassigned("body_drained"));
        let moved = |venue: &str, env: &str| Placement {
            district: "north".into(),
            venue: venue.into(),
            environment: env.into(),
            owner: None,
        };
        let d = set_placement(id("node-b"), moved("hall", "production"))(&v).unwrap();
        assert_eq!(d.events[0], unassigned("placement_changed"));
        let d = set_placement(id("node-h"), moved("arena", "staging"))(&v).unwrap();
        assert_eq!(d.events[0], unassigned("placement_changed"));
        // An owner change keeps the pair together.
        let d = set_placement(
            id("node-b"),
            Placement { owner: Some("ops".into()), ..moved("arena", "production") },
        )(&v)
        .unwrap();
        assert_eq!(d.events.len(), 1, "{:?}", d.events);
    }
}
