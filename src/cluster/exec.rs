//! Exec commands: queue, dispatch, result, cancel, clear, and the evictions and
//! deadlines that make sure every command ends — completed, timed out, cancelled,
//! failed or expired — and never stays pending forever.

use hydra_core::error::DomainError;
use hydra_core::ledger::Decision;
use hydra_events::{Event, ExecId, ExecOutput, NodeId};
use hydra_projections::{ClusterViews, ExecRecord, ExecStatus, NodeStatus};

/// A validated request to run a command.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: String,
    pub timeout_ms: u64,
    pub retry_on_disconnect: bool,
    pub deliver_by_ms: u64,
}

pub fn queue(
    id: ExecId,
    node: NodeId,
    req: ExecRequest,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let n = views.nodes.get(&node).ok_or_else(|| DomainError::NotFound(format!("no node {node}")))?;
        if n.status != NodeStatus::Approved {
            return Err(DomainError::Conflict(format!(
                "node {node} is {}: it gets no commands until an admin approves it",
                n.status.as_str()
            )));
        }
        if views.exec.get(&id).is_some() {
            return Err(DomainError::Conflict(format!("command {id} exists already")));
        }
        Ok(Decision::events(vec![Event::ExecQueued {
            exec_id: id,
            node_id: node,
            command: req.command,
            timeout_ms: req.timeout_ms,
            retry_on_disconnect: req.retry_on_disconnect,
            deliver_by_ms: req.deliver_by_ms,
        }]))
    }
}

/// What ends a command in flight when its node or agent goes away: back to the front
/// of the queue if it allows a retry, else failed with `reason`.
pub fn evict(views: &ClusterViews, node: &NodeId, reason: &str) -> Vec<Event> {
    let Some(r) = views.exec.in_flight(node) else { return Vec::new() };
    let (exec_id, node_id) = (r.id.clone(), node.clone());
    if r.retry_on_disconnect {
        vec![Event::ExecRequeued { exec_id, node_id, reason: reason.into() }]
    } else {
        vec![Event::ExecFailed { exec_id, node_id, reason: reason.into() }]
    }
}

/// Fails everything queued or in flight on a node that is leaving the fleet.
pub fn fail_all(views: &ClusterViews, node: &NodeId, reason: &str) -> Vec<Event> {
    let Some(n) = views.exec.node(node) else { return Vec::new() };
    n.in_flight
        .iter()
        .chain(n.queue.iter())
        .map(|id| Event::ExecFailed { exec_id: id.clone(), node_id: node.clone(), reason: reason.into() })
        .collect()
}

/// The agent asks for its next command; `asked_at_seq` is the log position when its
/// request arrived. A command put in flight before that means the agent lost it (it
/// restarted, or never got the answer): evict it first. A command put in flight after
/// it went to another poll of the same node that raced this one: leave it alone.
/// Commands past their delivery deadline expire instead of being sent.
pub fn dispatch(
    node: NodeId,
    now_ms: u64,
    asked_at_seq: u64,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let approved = views.nodes.get(&node).is_some_and(|n| n.status == NodeStatus::Approved);
        if !approved {
            return Ok(Decision::default());
        }
        if let Some(r) = views.exec.in_flight(&node) {
            if r.dispatched_seq.is_some_and(|seq| seq > asked_at_seq) {
                return Ok(Decision::default());
            }
        }
        let mut events = evict(views, &node, "agent_restarted");
        // After an eviction with retry, that command is at the front again.
        let requeued = events.iter().find_map(|e| match e {
            Event::ExecRequeued { exec_id, .. } => Some(exec_id.clone()),
            _ => None,
        });
        // The queue is walked, not copied: a poll costs the commands it looks at (the
        // expired ones and the one it sends), not the length of the queue.
        let queue = views.exec.node(&node).map(|n| n.queue.iter()).into_iter().flatten();
        for id in requeued.iter().chain(queue) {
            let Some(r) = views.exec.get(id) else { continue };
            if r.deliver_by_ms < now_ms {
                events.push(Event::ExecExpired { exec_id: id.clone(), node_id: node.clone() });
                continue;
            }
            events.push(Event::ExecDispatched { exec_id: id.clone(), node_id: node.clone() });
            break;
        }
        Ok(Decision::events(events))
    }
}

fn record_of<'a>(views: &'a ClusterViews, node: &NodeId, id: &ExecId) -> Result<&'a ExecRecord, DomainError> {
    views
        .exec
        .get(id)
        .filter(|r| &r.node_id == node)
        .ok_or_else(|| DomainError::NotFound(format!("no command {id} on node {node}")))
}

/// The agent reports a result. Only the command in flight on this very node is
/// accepted; a duplicate, or a late result for a cancelled or timed-out command, is
/// refused and changes nothing.
pub fn result(
    node: NodeId,
    id: ExecId,
    output: ExecOutput,
    timed_out: bool,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let r = views.exec.get(&id).ok_or_else(|| DomainError::NotFound(format!("no command {id}")))?;
        if r.node_id != node {
            return Err(DomainError::Forbidden(format!("command {id} was not sent to this node")));
        }
        if r.status != ExecStatus::Dispatched {
            return Err(DomainError::Conflict(format!(
                "command {id} is {}; this result was discarded",
                r.status.as_str()
            )));
        }
        // The event carries the output's hashes and sizes; the bytes go to the output
        // store in the same flush.
        let result = output.result();
        let event = if timed_out {
            Event::ExecTimedOut { exec_id: id, node_id: node, output: Some(result), by: "agent".into() }
        } else {
            Event::ExecCompleted { exec_id: id, node_id: node, output: result }
        };
        let outputs = vec![output.stdout.into_bytes(), output.stderr.into_bytes()];
        Ok(Decision { events: vec![event], outputs, ..Decision::default() })
    }
}

/// Cancels one command, queued or in flight.
pub fn cancel(node: NodeId, id: ExecId) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let r = record_of(views, &node, &id)?;
        if r.status.is_finished() {
            return Err(DomainError::Conflict(format!("command {id} is {} already", r.status.as_str())));
        }
        let was_dispatched = r.status == ExecStatus::Dispatched;
        Ok(Decision::events(vec![Event::ExecCancelled { exec_id: id, node_id: node, was_dispatched }]))
    }
}

/// Cancels every queued command of a node (the one in flight, if any, runs on).
pub fn clear(node: NodeId) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        if !views.nodes.contains_key(&node) {
            return Err(DomainError::NotFound(format!("no node {node}")));
        }
        let queued = views.exec.node(&node).map(|n| n.queue.clone()).unwrap_or_default();
        Ok(Decision::events(
            queued
                .into_iter()
                .map(|id| Event::ExecCancelled { exec_id: id, node_id: node.clone(), was_dispatched: false })
                .collect(),
        ))
    }
}

/// Commands past a deadline at `now_ms`: in flight longer than their timeout plus
/// `grace_ms`, or queued past their delivery deadline.
/// At most one command a node is in flight; the queued ones come from the deadline
/// index, so this costs the nodes and the expired commands, not every queue.
pub fn overdue(views: &ClusterViews, now_ms: u64, grace_ms: u64) -> Vec<ExecId> {
    let in_flight = views.exec.nodes.values().filter_map(|n| n.in_flight.as_ref());
    let expired = views.exec.queued_past_deadline(now_ms);
    in_flight
        .chain(expired)
        .filter(|id| views.exec.get(id).is_some_and(|r| is_overdue(r, now_ms, grace_ms)))
        .cloned()
        .collect()
}

fn is_overdue(r: &ExecRecord, now_ms: u64, grace_ms: u64) -> bool {
    match (r.status, r.dispatched_at_ms) {
        (ExecStatus::Dispatched, Some(at)) => at + r.timeout_ms + grace_ms < now_ms,
        (ExecStatus::Queued, _) => r.deliver_by_ms < now_ms,
        _ => false,
    }
}

/// The watchdog's command: ends the overdue commands it found, after checking again
/// on the writer's views (a result that arrived meanwhile wins).
pub fn end_overdue(
    ids: Vec<ExecId>,
    now_ms: u64,
    grace_ms: u64,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let mut events = Vec::new();
        for id in ids {
            let Some(r) = views.exec.get(&id) else { continue };
            if !is_overdue(r, now_ms, grace_ms) {
                continue;
            }
            let (exec_id, node_id) = (id, r.node_id.clone());
            events.push(match r.status {
                ExecStatus::Dispatched => {
                    Event::ExecTimedOut { exec_id, node_id, output: None, by: "watchdog".into() }
                }
                _ => Event::ExecExpired { exec_id, node_id },
            });
        }
        Ok(Decision::events(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydra_events::{Envelope, ZERO_HASH};
    use hydra_projections::Projection;

    fn node() -> NodeId {
        NodeId::parse("node-a").unwrap()
    }
    fn x(n: u32) -> ExecId {
        ExecId::parse(&format!("exec-{n}")).unwrap()
    }

    struct World(ClusterViews, u64);

    impl World {
        fn new() -> Self {
            let mut w = World(ClusterViews::default(), 0);
            w.apply(vec![
                Event::NodeEnrolled { node_id: node(), name: "a".into(), ip: "1.1.1.1".into() },
                Event::NodeApproved {
                    node_id: node(),
                    roles: vec![],
                    district: "d".into(),
                    venue: "v".into(),
                    environment: "production".into(),
                    owner: None,
                },
            ]);
            w
        }
        fn apply(&mut self, events: Vec<Event>) {
            for event in events {
                self.1 += 1;
                self.0.apply(&Envelope {
                    seq: self.1,
                    at_ms: 1_000,
                    schema: 1,
                    cause: "t".into(),
                    prev_hash: ZERO_HASH,
                    event,
                });
            }
        }
        fn run(
            &mut self,
            cmd: impl FnOnce(&ClusterViews) -> Result<Decision, DomainError>,
        ) -> Result<Vec<Event>, DomainError> {
            let d = cmd(&self.0)?;
            self.apply(d.events.clone());
            Ok(d.events)
        }
        fn queue(&mut self, n: u32, retry: bool) {
            let req = ExecRequest {
                command: "true".into(),
                timeout_ms: 100,
                retry_on_disconnect: retry,
                deliver_by_ms: 5_000,
            };
            self.run(queue(x(n), node(), req)).unwrap();
        }
    }

    fn types(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.type_name()).collect()
    }

    fn out() -> ExecOutput {
        ExecOutput {
            exit_code: Some(0),
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            duration_ms: 1,
        }
    }

    #[test]
    fn a_late_result_for_a_cancelled_command_is_discarded() {
        let mut w = World::new();
        w.queue(1, false);
        w.run(dispatch(node(), 2_000, u64::MAX)).unwrap();
        w.run(cancel(node(), x(1))).unwrap();
        let err = w.run(result(node(), x(1), out(), false)).unwrap_err();
        assert!(matches!(err, DomainError::Conflict(m) if m.contains("cancelled")));
    }

    #[test]
    fn a_duplicate_result_is_refused() {
        let mut w = World::new();
        w.queue(1, false);
        w.run(dispatch(node(), 2_000, u64::MAX)).unwrap();
        w.run(result(node(), x(1), out(), false)).unwrap();
        assert!(matches!(w.run(result(node(), x(1), out(), false)), Err(DomainError::Conflict(_))));
    }

    #[test]
    fn another_nodes_result_is_forbidden() {
        let mut w = World::new();
        w.queue(1, false);
        w.run(dispatch(node(), 2_000, u64::MAX)).unwrap();
        let other = NodeId::parse("node-b").unwrap();
        assert!(matches!(w.run(result(other, x(1), out(), false)), Err(DomainError::Forbidden(_))));
    }

    #[test]
    fn an_agent_asking_again_lost_its_command() {
        let mut w = World::new();
        w.queue(1, true);
        w.queue(2, false);
        w.run(dispatch(node(), 2_000, u64::MAX)).unwrap();
        // Asked again with exec-1 in flight: it allows retry, so it is sent again.
        let events = w.run(dispatch(node(), 2_000, u64::MAX)).unwrap();
        assert_eq!(types(&events), ["exec.requeued", "exec.dispatched"]);
        assert_eq!(events[1].exec_id(), Some(&x(1)));
        w.run(result(node(), x(1), out(), false)).unwrap();
        w.run(dispatch(node(), 2_000, u64::MAX)).unwrap();
        // exec-2 does not allow retry: it fails and nothing else is queued.
        let events = w.run(dispatch(node(), 2_000, u64::MAX)).unwrap();
        assert_eq!(types(&events), ["exec.failed"]);
    }

    #[test]
    fn a_racing_poll_does_not_evict_the_command_another_poll_just_received() {
        let mut w = World::new();
        w.queue(1, false);
        let asked_at = w.1; // both polls arrived before the dispatch
        w.run(dispatch(node(), 2_000, asked_at)).unwrap();
        let events = w.run(dispatch(node(), 2_000, asked_at)).unwrap();
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(w.0.exec.get(&x(1)).unwrap().status, ExecStatus::Dispatched);
    }

    #[test]
    fn undelivered_commands_expire_instead_of_being_sent_late() {
        let mut w = World::new();
        w.queue(1, false);
        w.queue(2, false);
        let events = w.run(dispatch(node(), 9_000, u64::MAX)).unwrap();
        assert_eq!(types(&events), ["exec.expired", "exec.expired"]);
    }

    #[test]
    fn the_watchdog_times_out_commands_in_flight_past_timeout_and_grace() {
        let mut w = World::new();
        w.queue(1, false);
        w.run(dispatch(node(), 1_000, u64::MAX)).unwrap(); // dispatched at 1_000, timeout 100
        assert!(overdue(&w.0, 1_150, 100).is_empty());
        let ids = overdue(&w.0, 1_201, 100);
        assert_eq!(ids, vec![x(1)]);
        let events = w.run(end_overdue(ids, 1_201, 100)).unwrap();
        assert_eq!(types(&events), ["exec.timed_out"]);
        assert_eq!(w.0.exec.get(&x(1)).unwrap().status, ExecStatus::TimedOut);
    }

    #[test]
    fn pending_nodes_get_no_commands() {
        let mut w = World::new();
        let pending = NodeId::parse("node-p").unwrap();
        w.apply(vec![Event::NodeEnrolled {
            node_id: pending.clone(),
            name: "p".into(),
            ip: "1.1.1.2".into(),
        }]);
        let req =
            ExecRequest { command: "x".into(), timeout_ms: 1, retry_on_disconnect: false, deliver_by_ms: 1 };
        assert!(
            matches!(w.run(queue(x(9), pending, req)), Err(DomainError::Conflict(m)) if m.contains("pending"))
        );
    }
}
