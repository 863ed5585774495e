//! Node commands: each function checks a request against the views and decides the
//! events. They run on the ledger thread, so they only read and compute.

use hydra_core::auth::{node_principal, TokenHash};
use hydra_core::error::DomainError;
use hydra_core::ledger::Decision;
use hydra_core::store::TokenWrite;
use hydra_events::{Event, NodeId, UpdateTarget};
use hydra_projections::{ClusterViews, NodeKind, NodeStatus, NodeView};

use hydra_core::names::{first_of_each, label};
use hydra_projections::FLEET_ENVIRONMENTS;

fn node<'a>(views: &'a ClusterViews, id: &NodeId) -> Result<&'a NodeView, DomainError> {
    views.nodes.get(id).ok_or_else(|| DomainError::NotFound(format!("no node {id}")))
}

fn approved<'a>(views: &'a ClusterViews, id: &NodeId) -> Result<&'a NodeView, DomainError> {
    let n = node(views, id)?;
    if n.status != NodeStatus::Approved {
        return Err(DomainError::Conflict(format!("node {id} is {}; approve it first", n.status.as_str())));
    }
    Ok(n)
}

/// A machine's name as it enrolls itself: 1 to 64 letters, digits, dots, dashes or
/// underscores (it becomes part of file names and log lines on the agent's side).
pub fn machine_name(name: &str) -> Result<String, DomainError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(DomainError::Invalid(format!(
            "invalid name {:?}: use 1 to 64 letters, digits, dots, dashes or underscores",
            name.chars().take(80).collect::<String>()
        )));
    }
    Ok(name.to_owned())
}

/// Public enrollment: a pending node, while fewer than `max_pending` wait for an admin.
pub fn enroll(
    id: NodeId,
    name: String,
    ip: String,
    token: TokenHash,
    max_pending: usize,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        pending_room(views, max_pending)?;
        join(views, &id, token, Event::NodeEnrolled { node_id: id.clone(), name, ip })
    }
}

/// The global cap on pending nodes: anyone who can reach `/enroll` makes one, so
/// without it the fleet (and every list and heartbeat budget) grows at the will of
/// whoever has addresses to spare.
pub fn pending_room(views: &ClusterViews, max_pending: usize) -> Result<(), DomainError> {
    let pending = views.nodes.values().filter(|n| n.status == NodeStatus::Pending).count();
    if pending >= max_pending {
        return Err(DomainError::Unavailable(format!(
            "the pending queue is full ({pending} nodes wait for approval; max_pending_nodes is \
             {max_pending}): an admin must approve, reject or remove pending nodes first"
        )));
    }
    Ok(())
}

/// A new machine joins the fleet: `event` records it, and its node token's hash is
/// written in the same flush, so the token works exactly when the node exists.
pub(crate) fn join(
    views: &ClusterViews,
    id: &NodeId,
    token: TokenHash,
    event: Event,
) -> Result<Decision, DomainError> {
    if views.nodes.contains_key(id) {
        return Err(DomainError::Conflict(format!("node {id} exists already")));
    }
    Ok(Decision {
        tokens: vec![TokenWrite::Put { hash: token, principal: node_principal(id) }],
        events: vec![event],
        ..Decision::default()
    })
}

/// Where an admin puts a node. The commands check it (`Placement::checked`).
#[derive(Debug, Clone)]
pub struct Placement {
    pub district: String,
    pub venue: String,
    pub environment: String,
    pub owner: Option<String>,
}

impl Placement {
    /// A district, venue and owner of 1 to 64 printable characters, in one of the
    /// fleet's environments.
    pub fn checked(self) -> Result<Placement, DomainError> {
        let environment = fleet_environment(self.environment)?;
        Ok(Placement {
            district: label("district", &self.district)?,
            venue: label("venue", &self.venue)?,
            environment,
            owner: self.owner.map(|o| label("owner", &o)).transpose()?,
        })
    }
}

/// One of the environments a machine can stand in (`staging`, `production`).
pub fn fleet_environment(environment: String) -> Result<String, DomainError> {
    if !FLEET_ENVIRONMENTS.contains(&environment.as_str()) {
        return Err(DomainError::Invalid(format!(
            "unknown environment {environment:?}: expected {}",
            FLEET_ENVIRONMENTS.join(" or ")
        )));
    }
    Ok(environment)
}

/// What an admin may say of a node's roles: the RoleCatalog, and which of its roles
/// make a node a head.
#[derive(Debug, Clone, Default)]
pub struct RoleRules {
    pub catalog: Vec<String>,
    pub head_roles: Vec<String>,
}

impl RoleRules {
    /// Every role in the catalog (the error names the unknown one), repeats dropped.
    pub fn check(&self, roles: Vec<String>) -> Result<Vec<String>, DomainError> {
        if let Some(r) = roles.iter().find(|r| !self.catalog.contains(r)) {
            return Err(DomainError::Invalid(format!(
                "unknown role {r:?}; the RoleCatalog has: {}",
                self.catalog.join(", ")
            )));
        }
        Ok(first_of_each(roles))
    }
}

/// The kind a node has with `roles`: a head when one of them is a head role, a body
/// when it has roles and none is. With no roles it keeps the kind it has: a kiosk
/// registered with the fleet token has none and is a head.
pub fn kind_for(current: NodeKind, roles: &[String], head_roles: &[String]) -> NodeKind {
    if roles.iter().any(|r| head_roles.contains(r)) {
        NodeKind::Head
    } else if roles.is_empty() {
        current
    } else {
        NodeKind::Body
    }
}

/// What follows from giving node `n` the roles `roles`: nothing when its kind stays;
/// otherwise the assignments that no longer hold, then `node.kind_changed`.
fn kind_events(views: &ClusterViews, n: &NodeView, roles: &[String], head_roles: &[String]) -> Vec<Event> {
    let kind = kind_for(n.kind, roles, head_roles);
    if kind == n.kind {
        return Vec::new();
    }
    let mut events = match kind {
        NodeKind::Body => super::heads::unassign_head(views, &n.id, "no_longer_a_head").into_iter().collect(),
        NodeKind::Head => super::heads::unassign_from(views, &n.id, "body_no_longer_a_body"),
    };
    events.push(Event::NodeKindChanged {
        node_id: n.id.clone(),
        kind: kind.as_str().into(),
        roles: roles.to_vec(),
    });
    events
}

pub fn approve(
    id: NodeId,
    roles: Vec<String>,
    placement: Placement,
    rules: RoleRules,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    super::sessions::tracked(move |views| {
        let roles = rules.check(roles)?;
        let placement = placement.checked()?;
        let n = node(views, &id)?;
        match n.status {
            NodeStatus::Approved => {
                return Err(DomainError::Conflict(format!("node {id} is approved already")));
            }
            // Its token was revoked with the rejection: the machine comes back only
            // as a new enrollment, which the log records as such.
            NodeStatus::Rejected => {
                return Err(DomainError::Conflict(format!(
                    "node {id} was rejected; rejected nodes must enroll again"
                )));
            }
            NodeStatus::Pending => {}
        }
        let kind_changes = kind_events(views, n, &roles, &rules.head_roles);
        let mut events = vec![Event::NodeApproved {
            node_id: id,
            roles,
            district: placement.district,
            venue: placement.venue,
            environment: placement.environment,
            owner: placement.owner,
        }];
        events.extend(kind_changes);
        Ok(Decision::events(events))
    })
}

pub fn reject(id: NodeId) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let n = node(views, &id)?;
        if n.status == NodeStatus::Rejected {
            return Err(DomainError::Conflict(format!("node {id} is rejected already")));
        }
        let mut events = super::exec::fail_all(views, &id, "node_rejected");
        events.push(Event::NodeRejected { node_id: id.clone() });
        // Revoked in the same flush as the event, as removal does: a rejected
        // machine's token never works again, whatever happens to the node later.
        Ok(Decision {
            tokens: vec![TokenWrite::Revoke { principal: node_principal(&id) }],
            events,
            ..Decision::default()
        })
    }
}

/// Removes a node and revokes its token.
pub fn remove(id: NodeId) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    super::sessions::tracked(move |views| {
        node(views, &id)?;
        let mut events = super::exec::fail_all(views, &id, "node_removed");
        events.extend(super::heads::unassign_from(views, &id, "body_removed"));
        events.push(Event::NodeRemoved { node_id: id.clone() });
        Ok(Decision {
            tokens: vec![TokenWrite::Revoke { principal: node_principal(&id) }],
            events,
            ..Decision::default()
        })
    })
}

pub fn set_roles(
    id: NodeId,
    roles: Vec<String>,
    rules: RoleRules,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    super::sessions::tracked(move |views| {
        let roles = rules.check(roles)?;
        let n = approved(views, &id)?;
        if n.roles == roles {
            return Ok(Decision::default());
        }
        let kind_changes = kind_events(views, n, &roles, &rules.head_roles);
        let mut events = vec![Event::NodeRolesChanged { node_id: id, roles }];
        events.extend(kind_changes);
        Ok(Decision::events(events))
    })
}

pub fn set_placement(
    id: NodeId,
    p: Placement,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    super::sessions::tracked(move |views| {
        let p = p.checked()?;
        let n = node(views, &id)?;
        if n.status == NodeStatus::Rejected {
            return Err(DomainError::Conflict(format!("node {id} is rejected")));
        }
        if (n.district.as_str(), n.venue.as_str(), n.environment.as_str(), &n.owner)
            == (p.district.as_str(), p.venue.as_str(), p.environment.as_str(), &p.owner)
        {
            return Ok(Decision::default());
        }
        let mut events = super::heads::unassign_mismatched(views, n, &p);
        events.push(Event::NodePlacementChanged {
            node_id: id,
            district: p.district,
            venue: p.venue,
            environment: p.environment,
            owner: p.owner,
        });
        Ok(Decision::events(events))
    })
}

pub fn set_drain(id: NodeId, draining: bool) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    super::sessions::tracked(move |views| {
        let n = approved(views, &id)?;
        if n.draining == draining {
            return Ok(Decision::default());
        }
        // A drained body takes no new sessions: the heads pinned to it are let go.
        let mut events =
            if draining { super::heads::unassign_from(views, &id, "body_drained") } else { Vec::new() };
        events.push(Event::NodeDrainChanged { node_id: id, draining });
        Ok(Decision::events(events))
    })
}

pub fn request_update(
    id: NodeId,
    target: UpdateTarget,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let n = approved(views, &id)?;
        let already = match target {
            UpdateTarget::Node => n.update_node,
            UpdateTarget::Services => n.update_services,
        };
        if already {
            return Ok(Decision::default());
        }
        Ok(Decision::events(vec![Event::NodeUpdateRequested { node_id: id, target }]))
    }
}

/// What a heartbeat reported; `None` means "not reported", which changes nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub agent_version: Option<String>,
    pub os: Option<String>,
    pub wireguard_ip: Option<String>,
    pub provider_status: Option<String>,
    pub provider_version: Option<String>,
    pub stream_status: Option<String>,
}

impl Report {
    /// This report with the fields it leaves out taken from `older`.
    pub fn over(self, older: &Report) -> Report {
        let or = |new: Option<String>, old: &Option<String>| new.or_else(|| old.clone());
        Report {
            agent_version: or(self.agent_version, &older.agent_version),
            os: or(self.os, &older.os),
            wireguard_ip: or(self.wireguard_ip, &older.wireguard_ip),
            provider_status: or(self.provider_status, &older.provider_status),
            provider_version: or(self.provider_version, &older.provider_version),
            stream_status: or(self.stream_status, &older.stream_status),
        }
    }
}

/// Whether a heartbeat's event may wait for the node's event budget: what the node
/// says about itself (versions, os, ip, provider and stream status), where only the
/// latest value matters and a flapping node could otherwise write without bound.
/// Never `node.online` (liveness must show at once, and it is bounded by the
/// heartbeat timeout), nor the delivery of update flags and `provision.started`
/// (they are carried by this very heartbeat's answer and happen once per request).
pub fn coalescable(e: &Event) -> bool {
    matches!(
        e,
        Event::NodeProviderChanged { .. }
            | Event::NodeAgentChanged { .. }
            | Event::NodeNetworkChanged { .. }
            | Event::NodeStreamChanged { .. }
    )
}

/// Which of a heartbeat's events a write carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything the heartbeat brings about (the node's budget allows its changes).
    All,
    /// Only what never waits: the changes are held back by the node's budget.
    Urgent,
    /// Only the held changes, written by the watchdog once the interval passed; never
    /// what belongs to a heartbeat's answer.
    Changes,
}

/// The events a heartbeat brings about: `node.online` if the node was offline, one
/// event per kind of reported change, and the delivery of pending update flags.
/// An empty list means the heartbeat changes nothing and writes nothing.
pub fn heartbeat_events(n: &NodeView, r: &Report) -> Vec<Event> {
    let id = || n.id.clone();
    let mut events = Vec::new();
    if !n.online {
        events.push(Event::NodeOnline { node_id: id() });
    }
    let changed = |new: &Option<String>, old: &Option<String>| new.is_some() && new != old;
    if changed(&r.provider_status, &n.provider_status) || changed(&r.provider_version, &n.provider_version) {
        events.push(Event::NodeProviderChanged {
            node_id: id(),
            provider_status: r.provider_status.clone().or(n.provider_status.clone()),
            provider_version: r.provider_version.clone().or(n.provider_version.clone()),
        });
    }
    if changed(&r.agent_version, &n.agent_version) || changed(&r.os, &n.os) {
        events.push(Event::NodeAgentChanged {
            node_id: id(),
            agent_version: r.agent_version.clone().or(n.agent_version.clone()),
            os: r.os.clone().or(n.os.clone()),
        });
    }
    if changed(&r.wireguard_ip, &n.wireguard_ip) {
        events.push(Event::NodeNetworkChanged { node_id: id(), wireguard_ip: r.wireguard_ip.clone() });
    }
    if let Some(s) = &r.stream_status {
        if *s != n.stream_status {
            events.push(Event::NodeStreamChanged { node_id: id(), stream_status: s.clone() });
        }
    }
    if n.status == NodeStatus::Approved {
        if n.update_node {
            events.push(Event::NodeUpdateDelivered { node_id: id(), target: UpdateTarget::Node });
        }
        if n.update_services {
            events.push(Event::NodeUpdateDelivered { node_id: id(), target: UpdateTarget::Services });
        }
        // The flag clears with this event, so however often the node heartbeats the
        // start is recorded once; the answer to this heartbeat carries the flag.
        if n.reprovision {
            events.push(Event::ProvisionStarted { node_id: id() });
        }
    }
    events
}

/// The heartbeat command: decides again on the writer's views, which are authoritative,
/// and keeps the `part` of the events asked for. The watchdog's write of held changes
/// finds nothing to do for a node removed or rejected meanwhile.
pub fn heartbeat(
    id: NodeId,
    report: Report,
    part: Part,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    super::sessions::tracked(move |views| {
        if part == Part::Changes && views.nodes.get(&id).is_none_or(|n| n.status == NodeStatus::Rejected) {
            return Ok(Decision::default());
        }
        let mut events = heartbeat_events(node(views, &id)?, &report);
        events.retain(|e| match part {
            Part::All => true,
            Part::Urgent => !coalescable(e),
            Part::Changes => coalescable(e),
        });
        Ok(Decision::events(events))
    })
}

/// Marks a node offline if it is still online and still silent past `cutoff_ms`
/// (`last_seen` is read again here, on the writer, so a heartbeat that arrived
/// meanwhile wins).
pub fn mark_offline(
    id: NodeId,
    cutoff_ms: u64,
    last_seen: impl Fn(&NodeId) -> u64 + Send + 'static,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    super::sessions::tracked(move |views| {
        let Some(n) = views.nodes.get(&id) else { return Ok(Decision::default()) };
        let seen = last_seen(&id);
        if !n.online || seen > cutoff_ms {
            return Ok(Decision::default());
        }
        // Its command in flight will not be answered: requeue or fail it now.
        let mut events = super::exec::evict(views, &id, "node_offline");
        events.insert(0, Event::NodeOffline { node_id: id, last_seen_ms: seen });
        Ok(Decision::events(events))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::views_with;

    fn id() -> NodeId {
        NodeId::parse("node-1").unwrap()
    }

    fn online_body() -> ClusterViews {
        views_with(vec![
            Event::NodeEnrolled { node_id: id(), name: "b".into(), ip: "1.2.3.4".into() },
            Event::NodeOnline { node_id: id() },
            Event::NodeProviderChanged {
                node_id: id(),
                provider_status: Some("running".into()),
                provider_version: Some("1".into()),
            },
        ])
    }

    #[test]
    fn a_heartbeat_that_changes_nothing_writes_nothing() {
        let v = online_body();
        let r = Report { provider_status: Some("running".into()), ..Default::default() };
        assert!(heartbeat_events(&v.nodes[&id()], &r).is_empty());
        assert!(heartbeat_events(&v.nodes[&id()], &Report::default()).is_empty());
    }

    #[test]
    fn a_heartbeat_reports_each_kind_of_change_once() {
        let v = online_body();
        let r = Report {
            provider_status: Some("sunshine_api_unreachable".into()),
            stream_status: Some("streaming".into()),
            ..Default::default()
        };
        let types: Vec<_> = heartbeat_events(&v.nodes[&id()], &r).iter().map(|e| e.type_name()).collect();
        assert_eq!(types, vec!["node.provider_changed", "node.stream_changed"]);
    }

    #[test]
    fn held_changes_wait_while_online_and_flags_do_not() {
        let mut v = online_body();
        v.nodes.get_mut(&id()).unwrap().online = false;
        let r = Report { os: Some("linux".into()), ..Default::default() };
        let types = |part| -> Vec<&str> {
            heartbeat(id(), r.clone(), part)(&v).unwrap().events.iter().map(|e| e.type_name()).collect()
        };
        assert_eq!(types(Part::All), vec!["node.online", "node.agent_changed"]);
        assert_eq!(types(Part::Urgent), vec!["node.online"]);
        assert_eq!(types(Part::Changes), vec!["node.agent_changed"]);
        // A node removed before the watchdog wrote its held change: nothing to do.
        let other = NodeId::parse("node-2").unwrap();
        assert!(heartbeat(other, r, Part::Changes)(&v).unwrap().events.is_empty());
    }

    #[test]
    fn an_offline_node_comes_back_online_with_its_first_heartbeat() {
        let mut v = online_body();
        v.nodes.get_mut(&id()).unwrap().online = false;
        let types: Vec<_> =
            heartbeat_events(&v.nodes[&id()], &Report::default()).iter().map(|e| e.type_name()).collect();
        assert_eq!(types, vec!["node.online"]);
    }

    #[test]
    fn a_fresh_heartbeat_cancels_marking_offline() {
        let v = online_body();
        let d = mark_offline(id(), 1_000, |_| 2_000)(&v).unwrap();
        assert!(d.events.is_empty());
        let d = mark_offline(id(), 1_000, |_| 500)(&v).unwrap();
        assert_eq!(d.events, vec![Event::NodeOffline { node_id: id(), last_seen_ms: 500 }]);
    }

    #[test]
    fn enrollment_stops_at_the_pending_cap() {
        let v = online_body();
        let other = NodeId::parse("node-2").unwrap();
        let token = hydra_core::auth::hash_token("t");
        let e = enroll(other.clone(), "n".into(), "1.2.3.4".into(), token, 1)(&v).unwrap_err();
        assert!(matches!(e, DomainError::Unavailable(m) if m.contains("pending queue is full")));
        assert!(enroll(other, "n".into(), "1.2.3.4".into(), token, 2)(&v).is_ok());
    }

    #[test]
    fn roles_need_an_approved_node() {
        let v = online_body();
        let rules = RoleRules { catalog: vec!["hydrabody".into()], head_roles: vec![] };
        let err = set_roles(id(), vec!["hydrabody".into()], rules)(&v).unwrap_err();
        assert!(matches!(err, DomainError::Conflict(m) if m.contains("pending")));
    }

    #[test]
    fn roles_and_placement_are_checked_by_the_commands() {
        let v = online_body();
        let rules = RoleRules { catalog: vec!["hydrabody".into()], head_roles: vec![] };
        let err = set_roles(id(), vec!["hydrabody".into(), "miner".into()], rules.clone())(&v).unwrap_err();
        assert!(
            matches!(&err, DomainError::Invalid(m) if m.contains("\"miner\"") && m.contains("hydrabody")),
            "{err}"
        );
        let place = |environment: &str, venue: &str| Placement {
            district: "north".into(),
            venue: venue.into(),
            environment: environment.into(),
            owner: None,
        };
        let err = approve(id(), vec![], place("development", "arena"), rules.clone())(&v).unwrap_err();
        assert!(matches!(&err, DomainError::Invalid(m) if m.contains("staging or production")), "{err}");
        let err = set_placement(id(), place("production", "ar\nena"))(&v).unwrap_err();
        assert!(matches!(&err, DomainError::Invalid(m) if m.contains("venue")), "{err}");
        let d =
            approve(id(), vec!["hydrabody".into(), "hydrabody".into()], place("staging", "arena"), rules)(&v);
        assert!(matches!(&d.unwrap().events[0], Event::NodeApproved { roles, .. } if roles.len() == 1));
    }
}
