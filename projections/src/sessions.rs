//! The sessions view: stream sessions (a head streaming from its assigned body),
//! folded from `session.started` and `session.ended`: the open one of each head, and
//! the most recent finished ones, bounded (every session stays in the log).

use hydra_events::{Envelope, Event, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Finished sessions kept in the view, all heads together, oldest dropped first. A
/// global cap rather than one per head: it bounds the views (and every snapshot) by
/// a constant whatever the churn of heads, a removed head's sessions age out like the
/// others instead of staying forever, and the list it serves is one timeline, newest
/// first. 1000 sessions are days of a venue fleet's history; older ones are in the
/// log (`/api/v1/events/log?types=session.*`).
pub const SESSIONS_KEPT: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// `session-N`, from the event.
    pub id: String,
    pub head_id: NodeId,
    pub body_id: NodeId,
    /// The sequence number of its `session.started`.
    pub started_seq: u64,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub end_reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionViews {
    /// Sessions the log has started, ever: the next one is `session-{started + 1}`.
    pub started: u64,
    /// The open session of each head (a head streams from one body at a time).
    pub active: BTreeMap<NodeId, SessionView>,
    /// Finished sessions in the order they ended, at most [`SESSIONS_KEPT`].
    pub finished: VecDeque<SessionView>,
}

impl SessionViews {
    /// The id the next `session.started` takes: derived from the log, so a command
    /// decides it and replay gives every session the same id.
    pub fn next_id(&self, offset: u64) -> String {
        format!("session-{}", self.started.saturating_add(offset).saturating_add(1))
    }

    /// A session by id, open or finished (and still kept).
    pub fn get(&self, id: &str) -> Option<&SessionView> {
        self.active.values().chain(self.finished.iter()).find(|s| s.id == id)
    }
}

pub(crate) fn apply(views: &mut SessionViews, envelope: &Envelope) {
    match &envelope.event {
        Event::SessionStarted { session_id, head_id, body_id } => {
            views.started = views.started.saturating_add(1);
            let session = SessionView {
                id: session_id.clone(),
                head_id: head_id.clone(),
                body_id: body_id.clone(),
                started_seq: envelope.seq,
                started_at_ms: envelope.at_ms,
                ended_at_ms: None,
                end_reason: None,
            };
            // The command ends a head's open session before it starts another; one
            // left open (never in a log Hydra wrote) is closed here rather than lost.
            if let Some(mut older) = views.active.insert(head_id.clone(), session) {
                older.ended_at_ms = Some(envelope.at_ms);
                older.end_reason = Some("superseded".into());
                finish(views, older);
            }
        }
        Event::SessionEnded { session_id, head_id, reason, .. }
            if views.active.get(head_id).is_some_and(|s| &s.id == session_id) =>
        {
            if let Some(mut s) = views.active.remove(head_id) {
                s.ended_at_ms = Some(envelope.at_ms);
                s.end_reason = Some(reason.clone());
                finish(views, s);
            }
        }
        _ => {}
    }
}

fn finish(views: &mut SessionViews, session: SessionView) {
    views.finished.push_back(session);
    while views.finished.len() > SESSIONS_KEPT {
        views.finished.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fold, ClusterViews};

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).unwrap()
    }

    fn started(n: u64, head: &str) -> Event {
        Event::SessionStarted { session_id: format!("session-{n}"), head_id: id(head), body_id: id("node-b") }
    }

    fn ended(n: u64, head: &str) -> Event {
        Event::SessionEnded {
            session_id: format!("session-{n}"),
            head_id: id(head),
            body_id: id("node-b"),
            reason: "head_stopped".into(),
        }
    }

    #[test]
    fn sessions_open_close_with_their_times_and_count_for_the_next_id() {
        let v: ClusterViews = fold(vec![started(1, "node-h1"), started(2, "node-h2"), ended(1, "node-h1")]);
        let s = &v.sessions;
        assert_eq!(s.next_id(0), "session-3");
        assert_eq!(s.next_id(1), "session-4");
        assert_eq!(s.active.keys().collect::<Vec<_>>(), [&id("node-h2")]);
        let done = s.get("session-1").unwrap();
        assert_eq!((done.started_seq, done.started_at_ms, done.ended_at_ms), (1, 1000, Some(3000)));
        assert_eq!(done.end_reason.as_deref(), Some("head_stopped"));
        assert_eq!(s.get("session-2").unwrap().ended_at_ms, None);
        // An end that names another session than the open one changes nothing.
        let v: ClusterViews = fold(vec![started(1, "node-h1"), ended(7, "node-h1")]);
        assert!(v.sessions.active.contains_key(&id("node-h1")));
    }

    #[test]
    fn finished_sessions_are_bounded_oldest_first() {
        let mut events = Vec::new();
        for n in 1..=(SESSIONS_KEPT as u64 + 5) {
            events.push(started(n, "node-h1"));
            events.push(ended(n, "node-h1"));
        }
        let v: ClusterViews = fold(events);
        assert_eq!(v.sessions.finished.len(), SESSIONS_KEPT);
        assert_eq!(v.sessions.finished.front().unwrap().id, "session-6");
        assert_eq!(v.sessions.started, SESSIONS_KEPT as u64 + 5);
    }
}
