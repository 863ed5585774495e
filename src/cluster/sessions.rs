//! Stream sessions, decided: which `session.started` and `session.ended` follow from a
//! command's events. Every command that can change whether a head streams from its
//! body (a head's status report, a heartbeat's stream change or `node.online`, the
//! offline checker, an assignment, a role, placement or drain change, a force-stop,
//! a removal, an import) is wrapped in [`tracked`], so a session event is committed in
//! the same batch as its cause and replay needs no rule of its own.

use hydra_core::error::DomainError;
use hydra_core::ledger::Decision;
use hydra_events::{Envelope, Event, NodeId};
use hydra_projections::{ClusterViews, NodeKind, Projection};
use std::collections::BTreeSet;

/// Why head `head` is not streaming from `body` in `views`, or `None` when it is: the
/// head reports `streaming`, is pinned to `body`, the body's stream is `streaming`,
/// and both are online. The first reason that holds, in this order, is the one a
/// session that ends records.
pub fn why_not(views: &ClusterViews, head: &NodeId, body: &NodeId) -> Option<&'static str> {
    let (Some(h), Some(b)) = (views.nodes.get(head), views.nodes.get(body)) else {
        return Some("node_removed");
    };
    if !h.online {
        return Some("head_offline");
    }
    if !b.online {
        return Some("body_offline");
    }
    let hv = views.heads.get(head).filter(|_| h.kind == NodeKind::Head);
    let Some(hv) = hv.filter(|hv| hv.assigned_body.as_ref() == Some(body) && b.kind == NodeKind::Body) else {
        return Some("unassigned");
    };
    if hv.status != "streaming" {
        return Some("head_stopped");
    }
    if b.stream_status != "streaming" {
        return Some("body_stopped");
    }
    None
}

/// The body head `head` streams from in `views`, if it does.
pub fn streaming_from(views: &ClusterViews, head: &NodeId) -> Option<NodeId> {
    let body = views.heads.get(head)?.assigned_body.as_ref()?;
    why_not(views, head, body).is_none().then(|| body.clone())
}

/// Whether `e` can change what [`why_not`] reads.
fn relevant(e: &Event) -> bool {
    matches!(
        e,
        Event::NodeOnline { .. }
            | Event::NodeOffline { .. }
            | Event::NodeStreamChanged { .. }
            | Event::StreamStopped { .. }
            | Event::NodeRemoved { .. }
            | Event::NodeKindChanged { .. }
            | Event::NodeImported { .. }
            | Event::HeadStatusChanged { .. }
            | Event::HeadAssigned { .. }
            | Event::HeadUnassigned { .. }
    )
}

/// The nodes `e` names: the one it is about, and the body it pins a head to.
fn named(e: &Event) -> impl Iterator<Item = &NodeId> {
    let body = match e {
        Event::HeadAssigned { body_id, .. } => body_id.as_ref(),
        Event::HeadUnassigned { body_id, .. } => Some(body_id),
        Event::NodeImported { assigned_body, .. } => assigned_body.as_ref(),
        _ => None,
    };
    e.node_id().into_iter().chain(body)
}

/// The session events that follow from `events` applied to `views` (the views the
/// command decided on): for each head the events touch (itself, or its body), the open
/// session ends when the head no longer streams from that body, and a session starts
/// when it streams from a body it had no session with. The state after is folded on a
/// copy of just those heads and bodies, with the very projection replay uses.
pub fn follow(views: &ClusterViews, events: &[Event]) -> Vec<Event> {
    let relevant: Vec<&Event> = events.iter().filter(|e| relevant(e)).collect();
    let touched: BTreeSet<&NodeId> = relevant.iter().flat_map(|e| named(e)).collect();
    if touched.is_empty() {
        return Vec::new();
    }
    let mut heads: BTreeSet<NodeId> = views
        .heads
        .iter()
        .filter(|(id, h)| {
            touched.contains(id) || h.assigned_body.as_ref().is_some_and(|b| touched.contains(b))
        })
        .map(|(id, _)| id.clone())
        .collect();
    heads.extend(
        views.sessions.active.values().filter(|s| touched.contains(&s.body_id)).map(|s| s.head_id.clone()),
    );
    // A node that becomes a head here starts idle: it cannot stream in this command.
    let mut after = ClusterViews::default();
    let bodies = heads.iter().filter_map(|h| views.heads.get(h)?.assigned_body.as_ref());
    for id in heads.iter().chain(bodies).chain(touched.iter().copied()) {
        if let Some(n) = views.nodes.get(id) {
            after.nodes.insert(id.clone(), n.clone());
        }
        if let Some(h) = views.heads.get(id) {
            after.heads.insert(id.clone(), h.clone());
        }
    }
    for e in relevant {
        after.apply(&Envelope {
            seq: 0,
            at_ms: 0,
            schema: hydra_events::CURRENT_SCHEMA,
            cause: String::new(),
            prev_hash: hydra_events::ZERO_HASH,
            event: e.clone(),
        });
    }
    let mut out = Vec::new();
    let mut started = 0;
    for head in &heads {
        let open = views.sessions.active.get(head);
        let now = streaming_from(&after, head);
        if let Some(s) = open {
            if now.as_ref() != Some(&s.body_id) {
                out.push(Event::SessionEnded {
                    session_id: s.id.clone(),
                    head_id: head.clone(),
                    body_id: s.body_id.clone(),
                    reason: why_not(&after, head, &s.body_id).unwrap_or("unassigned").into(),
                });
            }
        }
        if let Some(body) = now.filter(|b| open.is_none_or(|s| &s.body_id != b)) {
            out.push(Event::SessionStarted {
                session_id: views.sessions.next_id(started),
                head_id: head.clone(),
                body_id: body,
            });
            started += 1;
        }
    }
    out
}

/// `command` with the session events its events bring about appended, decided on the
/// same views in the same command.
pub fn tracked(
    command: impl FnOnce(&ClusterViews) -> Result<Decision, DomainError>,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let mut decision = command(views)?;
        let sessions = follow(views, &decision.events);
        decision.events.extend(sessions);
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::views_with;

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).unwrap()
    }
    fn head() -> NodeId {
        id("node-h")
    }
    fn body() -> NodeId {
        id("node-b")
    }

    /// A body and a head at one venue, both online, the head pinned to the body.
    fn pinned() -> Vec<Event> {
        let mut events = vec![
            Event::NodeEnrolled { node_id: body(), name: "b".into(), ip: "10.0.0.1".into() },
            Event::NodeApproved {
                node_id: body(),
                roles: vec![],
                district: "d".into(),
                venue: "v".into(),
                environment: "production".into(),
                owner: None,
            },
            Event::NodeOnline { node_id: body() },
        ];
        events.extend(crate::cluster::online_head_pinned_to(&head(), &body()));
        events
    }

    fn head_says(status: &str) -> Event {
        Event::HeadStatusChanged { node_id: head(), status: status.into(), detail: None }
    }
    fn body_says(status: &str) -> Event {
        Event::NodeStreamChanged { node_id: body(), stream_status: status.into() }
    }

    /// Folds `history` with the session events each step brings about (as the
    /// commands do), then returns what `step` brings about.
    fn after(history: Vec<Event>, step: Vec<Event>) -> Vec<Event> {
        let mut log = Vec::new();
        for e in history {
            let more = follow(&views_with(log.clone()), std::slice::from_ref(&e));
            log.push(e);
            log.extend(more);
        }
        follow(&views_with(log), &step)
    }

    fn streaming() -> Vec<Event> {
        let mut e = pinned();
        e.extend([body_says("streaming"), head_says("streaming")]);
        e
    }

    fn ended(reason: &str) -> Vec<Event> {
        vec![Event::SessionEnded {
            session_id: "session-1".into(),
            head_id: head(),
            body_id: body(),
            reason: reason.into(),
        }]
    }

    #[test]
    fn a_session_starts_when_both_sides_stream_whichever_comes_first() {
        let start =
            vec![Event::SessionStarted { session_id: "session-1".into(), head_id: head(), body_id: body() }];
        let mut head_first = pinned();
        head_first.push(head_says("streaming"));
        assert_eq!(after(head_first, vec![body_says("streaming")]), start);
        let mut body_first = pinned();
        body_first.push(body_says("streaming"));
        assert_eq!(after(body_first, vec![head_says("streaming")]), start);
        // Streaming, but from no body of its own: no session.
        let mut unpinned = pinned();
        unpinned.push(Event::HeadAssigned { node_id: head(), body_id: None, app_id: None });
        unpinned.push(body_says("streaming"));
        assert!(after(unpinned, vec![head_says("streaming")]).is_empty());
        // Nothing that matters to a session: nothing follows.
        assert!(after(streaming(), vec![Event::NodeDrainChanged { node_id: id("node-x"), draining: true }])
            .is_empty());
    }

    #[test]
    fn each_way_a_session_ends_has_its_reason() {
        let cases: Vec<(&str, Vec<Event>)> = vec![
            ("head_stopped", vec![head_says("idle")]),
            ("head_stopped", vec![head_says("error")]),
            ("body_stopped", vec![body_says("idle")]),
            ("body_stopped", vec![Event::StreamStopped { node_id: body(), exec: "exec succeeded".into() }]),
            ("head_offline", vec![Event::NodeOffline { node_id: head(), last_seen_ms: 1 }]),
            ("body_offline", vec![Event::NodeOffline { node_id: body(), last_seen_ms: 1 }]),
            ("unassigned", vec![Event::HeadAssigned { node_id: head(), body_id: None, app_id: None }]),
            (
                "unassigned",
                vec![Event::HeadUnassigned {
                    head_id: head(),
                    body_id: body(),
                    reason: "body_drained".into(),
                }],
            ),
            (
                "node_removed",
                vec![
                    Event::HeadUnassigned { head_id: head(), body_id: body(), reason: "body_removed".into() },
                    Event::NodeRemoved { node_id: body() },
                ],
            ),
            ("node_removed", vec![Event::NodeRemoved { node_id: head() }]),
        ];
        for (reason, step) in cases {
            assert_eq!(after(streaming(), step.clone()), ended(reason), "{step:?}");
        }
    }

    #[test]
    fn a_head_pinned_to_another_streaming_body_ends_one_session_and_starts_the_next() {
        let other = id("node-c");
        let mut history = streaming();
        history.extend([
            Event::NodeEnrolled { node_id: other.clone(), name: "c".into(), ip: "10.0.0.2".into() },
            Event::NodeOnline { node_id: other.clone() },
            Event::NodeStreamChanged { node_id: other.clone(), stream_status: "streaming".into() },
        ]);
        let step = vec![Event::HeadAssigned { node_id: head(), body_id: Some(other.clone()), app_id: None }];
        let mut want = ended("unassigned");
        want.push(Event::SessionStarted { session_id: "session-2".into(), head_id: head(), body_id: other });
        assert_eq!(after(history, step), want);
    }

    #[test]
    fn a_repeated_report_changes_nothing_and_an_open_session_is_not_started_twice() {
        assert!(after(streaming(), vec![body_says("streaming"), head_says("streaming")]).is_empty());
        assert!(after(streaming(), vec![Event::NodeOnline { node_id: head() }]).is_empty());
    }
}
