//! The node view: enrollment, approval, placement, roles and reported state of every
//! machine, folded from `node.*` events.

use hydra_events::{Envelope, Event, NodeId, UpdateTarget};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    Pending,
    Approved,
    Rejected,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Pending => "pending",
            NodeStatus::Approved => "approved",
            NodeStatus::Rejected => "rejected",
        }
    }
}

/// What a node is: a render machine or a kiosk in front of one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    #[default]
    Body,
    Head,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Body => "body",
            NodeKind::Head => "head",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    pub kind: NodeKind,
    pub name: String,
    pub ip: String,
    pub status: NodeStatus,
    pub roles: Vec<String>,
    pub district: String,
    pub venue: String,
    pub environment: String,
    pub owner: Option<String>,
    pub online: bool,
    /// The last heartbeat known to the log (the live one is volatile), unix ms.
    pub last_seen_ms: u64,
    pub provider_status: Option<String>,
    pub provider_version: Option<String>,
    pub agent_version: Option<String>,
    pub os: Option<String>,
    pub wireguard_ip: Option<String>,
    pub stream_status: String,
    pub draining: bool,
    pub reprovision: bool,
    pub update_node: bool,
    pub update_services: bool,
    pub enrolled_at_ms: u64,
    /// The Ed25519 public key (hex) the agent proves itself with to take a re-issued
    /// token; None for an agent that never registered one.
    pub rekey_public_key: Option<String>,
    /// The id of a token re-issue the agent has yet to claim.
    pub rekey_pending: Option<String>,
    /// The sequence number of the last event about this node.
    pub updated_seq: u64,
}

impl NodeView {
    pub(crate) fn new(node_id: NodeId, name: String, ip: String, at_ms: u64) -> Self {
        NodeView {
            id: node_id,
            kind: NodeKind::Body,
            name,
            ip,
            status: NodeStatus::Pending,
            roles: Vec::new(),
            district: String::new(),
            venue: String::new(),
            environment: "production".into(),
            owner: None,
            online: false,
            last_seen_ms: 0,
            provider_status: None,
            provider_version: None,
            agent_version: None,
            os: None,
            wireguard_ip: None,
            stream_status: "idle".into(),
            draining: false,
            reprovision: false,
            update_node: false,
            update_services: false,
            enrolled_at_ms: at_ms,
            rekey_public_key: None,
            rekey_pending: None,
            updated_seq: 0,
        }
    }
}

pub(crate) fn apply(nodes: &mut BTreeMap<NodeId, NodeView>, envelope: &Envelope) {
    let at = envelope.at_ms;
    if let Event::NodeEnrolled { node_id, name, ip } = &envelope.event {
        let mut view = NodeView::new(node_id.clone(), name.clone(), ip.clone(), at);
        view.updated_seq = envelope.seq;
        nodes.insert(node_id.clone(), view);
        return;
    }
    if let Event::HeadRegistered { node_id, name, district, venue } = &envelope.event {
        // Heads enroll with the fleet token, which stands for an admin's approval;
        // their address is not known (they reach out, nothing connects to them).
        let mut view = NodeView::new(node_id.clone(), name.clone(), String::new(), at);
        view.kind = NodeKind::Head;
        view.status = NodeStatus::Approved;
        view.district = district.clone();
        view.venue = venue.clone();
        view.updated_seq = envelope.seq;
        nodes.insert(node_id.clone(), view);
        return;
    }
    if let Event::NodeImported { node_id, name, ip, .. } = &envelope.event {
        // A node already here (an import with `--update`) keeps what its agent
        // reported and when it joined; what the file says replaces the rest.
        let view = nodes
            .entry(node_id.clone())
            .or_insert_with(|| NodeView::new(node_id.clone(), name.clone(), ip.clone(), at));
        import(view, &envelope.event);
        view.updated_seq = envelope.seq;
        return;
    }
    if let Event::NodeRemoved { node_id } = &envelope.event {
        nodes.remove(node_id);
        return;
    }
    if envelope.event.exec_id().is_some() {
        return; // commands have their own view
    }
    let Some(node) = envelope.event.node_id().and_then(|id| nodes.get_mut(id)) else {
        return;
    };
    node.updated_seq = envelope.seq;
    match &envelope.event {
        Event::NodeApproved { roles, district, venue, environment, owner, .. } => {
            node.status = NodeStatus::Approved;
            node.roles = roles.clone();
            node.district = district.clone();
            node.venue = venue.clone();
            node.environment = environment.clone();
            // An approval without an owner keeps the one the node had (schema 1 never
            // carried one here: its owner came in a placement change).
            if owner.is_some() {
                node.owner = owner.clone();
            }
        }
        Event::NodeRejected { .. } => {
            node.status = NodeStatus::Rejected;
            node.roles.clear();
        }
        Event::NodeRolesChanged { roles, .. } => node.roles = roles.clone(),
        Event::NodePlacementChanged { district, venue, environment, owner, .. } => {
            node.district = district.clone();
            node.venue = venue.clone();
            node.environment = environment.clone();
            node.owner = owner.clone();
        }
        Event::NodeDrainChanged { draining, .. } => node.draining = *draining,
        Event::NodeUpdateRequested { target, .. } => set_update(node, *target, true),
        Event::NodeUpdateDelivered { target, .. } => set_update(node, *target, false),
        Event::NodeOnline { .. } => {
            node.online = true;
            node.last_seen_ms = at;
        }
        Event::NodeOffline { last_seen_ms, .. } => {
            node.online = false;
            node.last_seen_ms = *last_seen_ms;
        }
        Event::NodeProviderChanged { provider_status, provider_version, .. } => {
            node.provider_status = provider_status.clone();
            node.provider_version = provider_version.clone();
        }
        Event::NodeAgentChanged { agent_version, os, .. } => {
            node.agent_version = agent_version.clone();
            node.os = os.clone();
        }
        Event::NodeNetworkChanged { wireguard_ip, .. } => node.wireguard_ip = wireguard_ip.clone(),
        Event::NodeStreamChanged { stream_status, .. } => node.stream_status = stream_status.clone(),
        // The flag is pending until a heartbeat answer carries it (provision.started).
        Event::ReprovisionRequested { .. } => node.reprovision = true,
        Event::ProvisionStarted { .. } => node.reprovision = false,
        // A force-stop clears the stream state; a body still streaming says so again.
        Event::StreamStopped { .. } => node.stream_status = "idle".into(),
        Event::NodeKindChanged { kind, .. } => {
            node.kind = if kind == "head" { NodeKind::Head } else { NodeKind::Body };
        }
        Event::NodeRekeyKeyRegistered { public_key, .. } => node.rekey_public_key = Some(public_key.clone()),
        Event::NodeTokenRotated { rekey_id, claim, .. } => {
            node.rekey_pending = claim.then(|| rekey_id.clone());
        }
        Event::NodeRekeyed { .. } => node.rekey_pending = None,
        _ => {}
    }
}

/// The administrative state a `node.imported` gives the node.
pub(crate) fn import(node: &mut NodeView, event: &Event) {
    let Event::NodeImported {
        kind,
        name,
        ip,
        status,
        roles,
        district,
        venue,
        environment,
        owner,
        draining,
        ..
    } = event
    else {
        return;
    };
    node.kind = if kind == "head" { NodeKind::Head } else { NodeKind::Body };
    node.name = name.clone();
    node.ip = ip.clone();
    node.status = match status.as_str() {
        "approved" => NodeStatus::Approved,
        "rejected" => NodeStatus::Rejected,
        _ => NodeStatus::Pending,
    };
    node.roles = roles.clone();
    node.district = district.clone();
    node.venue = venue.clone();
    node.environment = environment.clone();
    node.owner = owner.clone();
    node.draining = *draining;
}

fn set_update(node: &mut NodeView, target: UpdateTarget, on: bool) {
    match target {
        UpdateTarget::Node => node.update_node = on,
        UpdateTarget::Services => node.update_services = on,
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::{run_table, Case};
    use crate::{NodeStatus, Projection};
    use hydra_events::{Event, NodeId, UpdateTarget};

    fn id() -> NodeId {
        NodeId::parse("node-a1").unwrap()
    }

    fn enrolled() -> Event {
        Event::NodeEnrolled { node_id: id(), name: "body-1".into(), ip: "10.1.1.1".into() }
    }

    #[test]
    fn lifecycle_table() {
        let cases = vec![
            Case {
                name: "enrolled node is pending, offline, idle, production",
                events: vec![enrolled()],
                check: |v| {
                    let n = &v.nodes[&id()];
                    assert_eq!(n.status, NodeStatus::Pending);
                    assert!(!n.online);
                    assert_eq!(n.stream_status, "idle");
                    assert_eq!(n.environment, "production");
                    assert_eq!(n.enrolled_at_ms, 1000);
                },
            },
            Case {
                name: "approval assigns roles and placement",
                events: vec![
                    enrolled(),
                    Event::NodeApproved {
                        node_id: id(),
                        roles: vec!["hydrabody".into()],
                        district: "north".into(),
                        venue: "arena".into(),
                        environment: "staging".into(),
                        owner: None,
                    },
                ],
                check: |v| {
                    let n = &v.nodes[&id()];
                    assert_eq!(n.status, NodeStatus::Approved);
                    assert_eq!(n.roles, vec!["hydrabody".to_string()]);
                    assert_eq!((n.district.as_str(), n.venue.as_str()), ("north", "arena"));
                    assert_eq!(n.environment, "staging");
                },
            },
            Case {
                name: "online then offline keeps the last heartbeat time",
                events: vec![
                    enrolled(),
                    Event::NodeOnline { node_id: id() },
                    Event::NodeOffline { node_id: id(), last_seen_ms: 2500 },
                ],
                check: |v| {
                    let n = &v.nodes[&id()];
                    assert!(!n.online);
                    assert_eq!(n.last_seen_ms, 2500);
                    assert_eq!(n.updated_seq, 3);
                },
            },
            Case {
                name: "update flags are set by a request and cleared by delivery",
                events: vec![
                    enrolled(),
                    Event::NodeUpdateRequested { node_id: id(), target: UpdateTarget::Node },
                    Event::NodeUpdateRequested { node_id: id(), target: UpdateTarget::Services },
                    Event::NodeUpdateDelivered { node_id: id(), target: UpdateTarget::Node },
                ],
                check: |v| {
                    let n = &v.nodes[&id()];
                    assert!(!n.update_node);
                    assert!(n.update_services);
                },
            },
            Case {
                name: "removal deletes the node",
                events: vec![enrolled(), Event::NodeRemoved { node_id: id() }],
                check: |v| assert!(v.nodes.is_empty()),
            },
            Case {
                name: "events about unknown nodes change nothing but the position",
                events: vec![Event::NodeOnline { node_id: id() }],
                check: |v| {
                    assert!(v.nodes.is_empty());
                    assert_eq!(v.last_seq(), 1);
                },
            },
            Case {
                name: "rejection clears the roles",
                events: vec![
                    enrolled(),
                    Event::NodeRolesChanged { node_id: id(), roles: vec!["hydrabody".into()] },
                    Event::NodeRejected { node_id: id() },
                ],
                check: |v| {
                    let n = &v.nodes[&id()];
                    assert_eq!(n.status, NodeStatus::Rejected);
                    assert!(n.roles.is_empty());
                },
            },
            Case {
                name: "reported state is recorded",
                events: vec![
                    enrolled(),
                    Event::NodeProviderChanged {
                        node_id: id(),
                        provider_status: Some("running".into()),
                        provider_version: Some("0.23".into()),
                    },
                    Event::NodeStreamChanged { node_id: id(), stream_status: "streaming".into() },
                    Event::NodeNetworkChanged { node_id: id(), wireguard_ip: Some("10.9.0.2".into()) },
                    Event::NodeDrainChanged { node_id: id(), draining: true },
                ],
                check: |v| {
                    let n = &v.nodes[&id()];
                    assert_eq!(n.provider_status.as_deref(), Some("running"));
                    assert_eq!(n.provider_version.as_deref(), Some("0.23"));
                    assert_eq!(n.stream_status, "streaming");
                    assert_eq!(n.wireguard_ip.as_deref(), Some("10.9.0.2"));
                    assert!(n.draining);
                },
            },
            Case {
                name: "an import creates the node, and a second one replaces what it says",
                events: vec![
                    imported("approved", "north"),
                    Event::NodeOnline { node_id: id() },
                    Event::NodeStreamChanged { node_id: id(), stream_status: "streaming".into() },
                    imported("approved", "south"),
                ],
                check: |v| {
                    let n = &v.nodes[&id()];
                    assert_eq!(n.status, NodeStatus::Approved);
                    assert_eq!((n.name.as_str(), n.ip.as_str()), ("body-1", "10.1.1.1"));
                    assert_eq!(n.roles, vec!["hydrabody".to_string()]);
                    assert_eq!((n.district.as_str(), n.venue.as_str()), ("south", "arena"));
                    assert_eq!((n.environment.as_str(), n.owner.as_deref()), ("staging", Some("ops")));
                    assert!(n.draining);
                    assert!(n.online && n.stream_status == "streaming", "what the agent said stays");
                    assert_eq!((n.enrolled_at_ms, n.updated_seq), (1000, 4));
                    assert!(v.heads.is_empty());
                },
            },
        ];
        run_table(cases);
    }

    fn imported(status: &str, district: &str) -> Event {
        Event::NodeImported {
            node_id: id(),
            kind: "body".into(),
            name: "body-1".into(),
            ip: "10.1.1.1".into(),
            status: status.into(),
            roles: vec!["hydrabody".into()],
            district: district.into(),
            venue: "arena".into(),
            environment: "staging".into(),
            owner: Some("ops".into()),
            draining: true,
            assigned_body: None,
            app_id: None,
            allowed_experiences: vec![],
        }
    }
}
