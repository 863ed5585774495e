//! The head view: what only kiosk heads have (their own status, the body they are
//! pinned to, their experience whitelist), folded from `head.*` events. Name,
//! placement and liveness of a head are in the node view like any other node's.

use hydra_events::{Envelope, Event, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a kiosk may report about itself.
pub const HEAD_STATUSES: [&str; 3] = ["idle", "streaming", "error"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadView {
    /// `idle`, `streaming` or `error`, as the kiosk last reported.
    pub status: String,
    pub detail: Option<String>,
    /// The body an admin pinned this head to, if any.
    pub assigned_body: Option<NodeId>,
    pub app_id: Option<String>,
    pub allowed_experiences: Vec<String>,
}

impl Default for HeadView {
    fn default() -> Self {
        HeadView {
            status: "idle".into(),
            detail: None,
            assigned_body: None,
            app_id: None,
            allowed_experiences: Vec::new(),
        }
    }
}

pub(crate) fn apply(heads: &mut BTreeMap<NodeId, HeadView>, envelope: &Envelope) {
    match &envelope.event {
        Event::HeadRegistered { node_id, .. } => {
            heads.insert(node_id.clone(), HeadView::default());
        }
        Event::NodeRemoved { node_id } => {
            heads.remove(node_id);
        }
        Event::HeadStatusChanged { node_id, status, detail } => {
            if let Some(h) = heads.get_mut(node_id) {
                h.status = status.clone();
                h.detail = detail.clone();
            }
        }
        Event::HeadAssigned { node_id, body_id, app_id } => {
            if let Some(h) = heads.get_mut(node_id) {
                h.assigned_body = body_id.clone();
                h.app_id = app_id.clone();
            }
        }
        Event::HeadExperiencesAllowed { node_id, experiences } => {
            if let Some(h) = heads.get_mut(node_id) {
                h.allowed_experiences = experiences.clone();
            }
        }
        // A node that becomes a head by its roles starts as a fresh kiosk; one that
        // stops being a head has nothing left here (its assignment was cleared first).
        Event::NodeKindChanged { node_id, kind, .. } => {
            if kind == "head" {
                heads.entry(node_id.clone()).or_default();
            } else {
                heads.remove(node_id);
            }
        }
        // An imported head has what the file says (a new one starts idle); an imported
        // body has no head view.
        Event::NodeImported { node_id, kind, .. } => {
            if kind == "head" {
                import(heads.entry(node_id.clone()).or_default(), &envelope.event);
            } else {
                heads.remove(node_id);
            }
        }
        Event::HeadUnassigned { head_id, .. } => {
            if let Some(h) = heads.get_mut(head_id) {
                h.assigned_body = None;
                h.app_id = None;
            }
        }
        _ => {}
    }
}

/// What a `node.imported` of a head says of it: its body, app and whitelist.
pub(crate) fn import(h: &mut HeadView, event: &Event) {
    if let Event::NodeImported { assigned_body, app_id, allowed_experiences, .. } = event {
        h.assigned_body = assigned_body.clone();
        h.app_id = app_id.clone();
        h.allowed_experiences = allowed_experiences.clone();
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::{run_table, Case};
    use crate::{NodeKind, NodeStatus};
    use hydra_events::{Event, NodeId};

    fn head() -> NodeId {
        NodeId::parse("node-h1").unwrap()
    }

    fn body() -> NodeId {
        NodeId::parse("node-b1").unwrap()
    }

    fn registered() -> Event {
        Event::HeadRegistered {
            node_id: head(),
            name: "ipad-1".into(),
            district: "north".into(),
            venue: "arena".into(),
        }
    }

    #[test]
    fn head_table() {
        let cases = vec![
            Case {
                name: "a registered head is an approved node of kind head, idle, unassigned",
                events: vec![registered()],
                check: |v| {
                    let n = &v.nodes[&head()];
                    assert_eq!(n.kind, NodeKind::Head);
                    assert_eq!(n.status, NodeStatus::Approved);
                    assert_eq!((n.district.as_str(), n.venue.as_str()), ("north", "arena"));
                    assert!(!n.online);
                    let h = &v.heads[&head()];
                    assert_eq!(h.status, "idle");
                    assert_eq!(h.assigned_body, None);
                    assert!(h.allowed_experiences.is_empty());
                },
            },
            Case {
                name: "an enrolled machine is a body and has no head view",
                events: vec![Event::NodeEnrolled {
                    node_id: body(),
                    name: "b".into(),
                    ip: "10.0.0.1".into(),
                }],
                check: |v| {
                    assert_eq!(v.nodes[&body()].kind, NodeKind::Body);
                    assert!(v.heads.is_empty());
                },
            },
            Case {
                name: "status, assignment and whitelist are recorded",
                events: vec![
                    registered(),
                    Event::HeadStatusChanged {
                        node_id: head(),
                        status: "error".into(),
                        detail: Some("no body".into()),
                    },
                    Event::HeadAssigned {
                        node_id: head(),
                        body_id: Some(body()),
                        app_id: Some("app-7".into()),
                    },
                    Event::HeadExperiencesAllowed { node_id: head(), experiences: vec!["racing".into()] },
                ],
                check: |v| {
                    let h = &v.heads[&head()];
                    assert_eq!((h.status.as_str(), h.detail.as_deref()), ("error", Some("no body")));
                    assert_eq!(h.assigned_body, Some(body()));
                    assert_eq!(h.app_id.as_deref(), Some("app-7"));
                    assert_eq!(h.allowed_experiences, vec!["racing".to_string()]);
                    assert_eq!(v.nodes[&head()].updated_seq, 4);
                },
            },
            Case {
                name: "clearing the assignment clears the app too",
                events: vec![
                    registered(),
                    Event::HeadAssigned { node_id: head(), body_id: Some(body()), app_id: Some("a".into()) },
                    Event::HeadAssigned { node_id: head(), body_id: None, app_id: None },
                ],
                check: |v| {
                    let h = &v.heads[&head()];
                    assert_eq!((h.assigned_body.as_ref(), h.app_id.as_ref()), (None, None));
                },
            },
            Case {
                name: "removal deletes the head from both views",
                events: vec![registered(), Event::NodeRemoved { node_id: head() }],
                check: |v| assert!(v.nodes.is_empty() && v.heads.is_empty()),
            },
            Case {
                name: "head events about unknown nodes change nothing",
                events: vec![Event::HeadStatusChanged {
                    node_id: head(),
                    status: "error".into(),
                    detail: None,
                }],
                check: |v| assert!(v.heads.is_empty() && v.nodes.is_empty()),
            },
            Case {
                name: "an imported head has the file's assignment and whitelist; imported as a body, none",
                events: vec![imported_head("head"), imported_head("body")],
                check: |v| {
                    assert_eq!(v.nodes[&head()].kind, NodeKind::Body);
                    assert!(v.heads.is_empty());
                },
            },
            Case {
                name: "an imported head",
                events: vec![imported_head("head")],
                check: |v| {
                    let (n, h) = (&v.nodes[&head()], &v.heads[&head()]);
                    assert_eq!((n.kind, n.status), (NodeKind::Head, NodeStatus::Approved));
                    assert_eq!(
                        (h.assigned_body.as_ref(), h.app_id.as_deref()),
                        (Some(&body()), Some("app-7"))
                    );
                    assert_eq!(h.allowed_experiences, vec!["racing".to_string()]);
                    assert_eq!(h.status, "idle");
                },
            },
        ];
        run_table(cases);
    }

    fn imported_head(kind: &str) -> Event {
        Event::NodeImported {
            node_id: head(),
            kind: kind.into(),
            name: "ipad-1".into(),
            ip: String::new(),
            status: "approved".into(),
            roles: vec![],
            district: "north".into(),
            venue: "arena".into(),
            environment: "production".into(),
            owner: None,
            draining: false,
            assigned_body: Some(body()),
            app_id: Some("app-7".into()),
            allowed_experiences: vec!["racing".into()],
        }
    }
}
