//! The exec view: every node's FIFO queue, its one command in flight, and a bounded
//! list of recent results. Outputs are not kept here: a finished command remembers
//! the sequence number of the event that ended it, and the API reads the output from
//! the log.

use hydra_events::{Envelope, Event, ExecId, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Finished commands kept per node in the view (all of them stay in the log).
pub const FINISHED_KEPT: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecStatus {
    Queued,
    Dispatched,
    Completed,
    TimedOut,
    Cancelled,
    Failed,
    Expired,
}

impl ExecStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Queued => "pending",
            ExecStatus::Dispatched => "dispatched",
            ExecStatus::Completed => "completed",
            ExecStatus::TimedOut => "timed_out",
            ExecStatus::Cancelled => "cancelled",
            ExecStatus::Failed => "failed",
            ExecStatus::Expired => "expired",
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, ExecStatus::Queued | ExecStatus::Dispatched)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRecord {
    pub id: ExecId,
    pub node_id: NodeId,
    /// The command text while it is queued or in flight; emptied once it ends.
    pub command: String,
    pub timeout_ms: u64,
    pub retry_on_disconnect: bool,
    pub queued_at_ms: u64,
    pub deliver_by_ms: u64,
    pub dispatched_at_ms: Option<u64>,
    /// The sequence number of the `exec.dispatched` event that put it in flight.
    pub dispatched_seq: Option<u64>,
    pub attempts: u32,
    pub status: ExecStatus,
    pub finished_at_ms: Option<u64>,
    /// The event that ended it (its output, if any, is in that event).
    pub end_seq: Option<u64>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeExec {
    pub queue: VecDeque<ExecId>,
    pub in_flight: Option<ExecId>,
    pub finished: VecDeque<ExecId>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredExecViews")]
pub struct ExecViews {
    pub records: BTreeMap<ExecId, ExecRecord>,
    pub nodes: BTreeMap<NodeId, NodeExec>,
    /// Every queued command by its delivery deadline, so that the watchdog finds the
    /// expired ones without walking every queue. Derived from the queues: not stored
    /// in a snapshot (nor in the digest), rebuilt when one is read.
    #[serde(skip_serializing)]
    by_deadline: BTreeSet<(u64, ExecId)>,
}

/// `ExecViews` as a snapshot stores it.
#[derive(Deserialize)]
struct StoredExecViews {
    records: BTreeMap<ExecId, ExecRecord>,
    nodes: BTreeMap<NodeId, NodeExec>,
}

impl From<StoredExecViews> for ExecViews {
    fn from(stored: StoredExecViews) -> ExecViews {
        let StoredExecViews { records, nodes } = stored;
        let by_deadline = nodes
            .values()
            .flat_map(|n| n.queue.iter())
            .filter_map(|id| records.get(id).map(|r| (r.deliver_by_ms, id.clone())))
            .collect();
        ExecViews { records, nodes, by_deadline }
    }
}

impl ExecViews {
    pub fn get(&self, id: &ExecId) -> Option<&ExecRecord> {
        self.records.get(id)
    }

    pub fn node(&self, id: &NodeId) -> Option<&NodeExec> {
        self.nodes.get(id)
    }

    /// The command in flight on a node, if any.
    pub fn in_flight(&self, node: &NodeId) -> Option<&ExecRecord> {
        self.nodes.get(node)?.in_flight.as_ref().and_then(|id| self.records.get(id))
    }

    /// Queued commands whose delivery deadline is before `now_ms`, earliest first.
    pub fn queued_past_deadline(&self, now_ms: u64) -> impl Iterator<Item = &ExecId> {
        self.by_deadline.iter().take_while(move |(by, _)| *by < now_ms).map(|(_, id)| id)
    }

    /// Takes a command out of the deadline index (it left its queue).
    fn dequeued(&mut self, id: &ExecId) {
        if let Some(r) = self.records.get(id) {
            self.by_deadline.remove(&(r.deliver_by_ms, id.clone()));
        }
    }
}

pub(crate) fn apply(views: &mut ExecViews, envelope: &Envelope) {
    let at = envelope.at_ms;
    match &envelope.event {
        Event::ExecQueued { exec_id, node_id, command, timeout_ms, retry_on_disconnect, deliver_by_ms } => {
            views.records.insert(
                exec_id.clone(),
                ExecRecord {
                    id: exec_id.clone(),
                    node_id: node_id.clone(),
                    command: command.clone(),
                    timeout_ms: *timeout_ms,
                    retry_on_disconnect: *retry_on_disconnect,
                    queued_at_ms: at,
                    deliver_by_ms: *deliver_by_ms,
                    dispatched_at_ms: None,
                    dispatched_seq: None,
                    attempts: 0,
                    status: ExecStatus::Queued,
                    finished_at_ms: None,
                    end_seq: None,
                    reason: None,
                },
            );
            views.nodes.entry(node_id.clone()).or_default().queue.push_back(exec_id.clone());
            views.by_deadline.insert((*deliver_by_ms, exec_id.clone()));
        }
        Event::ExecDispatched { exec_id, node_id } => {
            views.dequeued(exec_id);
            let node = views.nodes.entry(node_id.clone()).or_default();
            unqueue(&mut node.queue, exec_id);
            node.in_flight = Some(exec_id.clone());
            if let Some(r) = views.records.get_mut(exec_id) {
                r.status = ExecStatus::Dispatched;
                r.dispatched_at_ms = Some(at);
                r.dispatched_seq = Some(envelope.seq);
                r.attempts += 1;
            }
        }
        Event::ExecRequeued { exec_id, node_id, reason } => {
            let node = views.nodes.entry(node_id.clone()).or_default();
            if node.in_flight.as_ref() == Some(exec_id) {
                node.in_flight = None;
            }
            node.queue.push_front(exec_id.clone());
            if let Some(r) = views.records.get_mut(exec_id) {
                views.by_deadline.insert((r.deliver_by_ms, exec_id.clone()));
                r.status = ExecStatus::Queued;
                r.dispatched_at_ms = None;
                r.dispatched_seq = None;
                r.reason = Some(reason.clone());
            }
        }
        Event::ExecCompleted { exec_id, node_id, .. } => {
            finish(views, exec_id, node_id, ExecStatus::Completed, None, envelope)
        }
        Event::ExecTimedOut { exec_id, node_id, by, .. } => {
            finish(views, exec_id, node_id, ExecStatus::TimedOut, Some(format!("timed out ({by})")), envelope)
        }
        Event::ExecCancelled { exec_id, node_id, .. } => {
            finish(views, exec_id, node_id, ExecStatus::Cancelled, None, envelope)
        }
        Event::ExecFailed { exec_id, node_id, reason } => {
            finish(views, exec_id, node_id, ExecStatus::Failed, Some(reason.clone()), envelope)
        }
        Event::ExecExpired { exec_id, node_id } => finish(
            views,
            exec_id,
            node_id,
            ExecStatus::Expired,
            Some("never delivered before its deadline".into()),
            envelope,
        ),
        Event::NodeRemoved { node_id } => {
            if let Some(node) = views.nodes.remove(node_id) {
                for id in node.queue.iter().chain(node.in_flight.iter()).chain(node.finished.iter()) {
                    views.dequeued(id);
                    views.records.remove(id);
                }
            }
        }
        _ => {}
    }
}

/// Takes `exec_id` out of a node's queue. It is almost always at the front (the next
/// one sent, or a cancel of the oldest), so this costs its position, not the queue's
/// length, the way a `retain` over the whole queue did.
fn unqueue(queue: &mut VecDeque<ExecId>, exec_id: &ExecId) {
    if let Some(at) = queue.iter().position(|id| id == exec_id) {
        queue.remove(at);
    }
}

fn finish(
    views: &mut ExecViews,
    exec_id: &ExecId,
    node_id: &NodeId,
    status: ExecStatus,
    reason: Option<String>,
    envelope: &Envelope,
) {
    views.dequeued(exec_id);
    let node = views.nodes.entry(node_id.clone()).or_default();
    // A command in flight is in no queue: looking for it there would walk all of it.
    if node.in_flight.as_ref() == Some(exec_id) {
        node.in_flight = None;
    } else {
        unqueue(&mut node.queue, exec_id);
    }
    node.finished.push_back(exec_id.clone());
    while node.finished.len() > FINISHED_KEPT {
        if let Some(old) = node.finished.pop_front() {
            views.records.remove(&old);
        }
    }
    if let Some(r) = views.records.get_mut(exec_id) {
        r.status = status;
        r.finished_at_ms = Some(envelope.at_ms);
        r.end_seq = Some(envelope.seq);
        r.command.clear();
        if reason.is_some() {
            r.reason = reason;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold;

    use hydra_events::{ExecOutput, ExecResult};

    fn node() -> NodeId {
        NodeId::parse("node-a").unwrap()
    }

    fn x(n: u32) -> ExecId {
        ExecId::parse(&format!("exec-{n}")).unwrap()
    }

    fn queued(n: u32) -> Event {
        Event::ExecQueued {
            exec_id: x(n),
            node_id: node(),
            command: format!("echo {n}"),
            timeout_ms: 1000,
            retry_on_disconnect: n.is_multiple_of(2),
            deliver_by_ms: 99_000,
        }
    }

    fn output() -> ExecResult {
        ExecOutput {
            exit_code: Some(0),
            stdout: "ok".into(),
            stderr: String::new(),
            truncated: false,
            duration_ms: 5,
        }
        .result()
    }

    #[test]
    fn commands_queue_in_order_and_one_is_in_flight() {
        let v: crate::ClusterViews = fold(vec![
            queued(1),
            queued(2),
            queued(3),
            Event::ExecDispatched { exec_id: x(1), node_id: node() },
        ]);
        let n = v.exec.node(&node()).unwrap();
        assert_eq!(n.in_flight, Some(x(1)));
        assert_eq!(n.queue, VecDeque::from(vec![x(2), x(3)]));
        assert_eq!(v.exec.get(&x(1)).unwrap().status, ExecStatus::Dispatched);
        assert_eq!(v.exec.get(&x(1)).unwrap().dispatched_at_ms, Some(4000));
    }

    #[test]
    fn a_finished_command_frees_the_node_and_remembers_its_end_event() {
        let v: crate::ClusterViews = fold(vec![
            queued(1),
            queued(2),
            Event::ExecDispatched { exec_id: x(1), node_id: node() },
            Event::ExecCompleted { exec_id: x(1), node_id: node(), output: output() },
        ]);
        let r = v.exec.get(&x(1)).unwrap();
        assert_eq!(r.status, ExecStatus::Completed);
        assert_eq!(r.end_seq, Some(4));
        assert!(r.command.is_empty());
        assert_eq!(v.exec.node(&node()).unwrap().in_flight, None);
    }

    #[test]
    fn a_requeued_command_goes_back_to_the_front() {
        let v: crate::ClusterViews = fold(vec![
            queued(1),
            queued(2),
            Event::ExecDispatched { exec_id: x(1), node_id: node() },
            Event::ExecRequeued { exec_id: x(1), node_id: node(), reason: "node_offline".into() },
        ]);
        let n = v.exec.node(&node()).unwrap();
        assert_eq!(n.queue, VecDeque::from(vec![x(1), x(2)]));
        assert_eq!(n.in_flight, None);
        assert_eq!(v.exec.get(&x(1)).unwrap().status, ExecStatus::Queued);
    }

    #[test]
    fn the_commands_past_their_delivery_deadline_are_the_queued_ones_and_survive_a_snapshot() {
        let due = |n: u32, by: u64| match queued(n) {
            Event::ExecQueued { exec_id, node_id, command, timeout_ms, retry_on_disconnect, .. } => {
                Event::ExecQueued {
                    exec_id,
                    node_id,
                    command,
                    timeout_ms,
                    retry_on_disconnect,
                    deliver_by_ms: by,
                }
            }
            _ => unreachable!(),
        };
        let v: crate::ClusterViews = fold(vec![
            due(1, 300),
            due(2, 100),
            due(3, 200),
            due(4, 50),
            Event::ExecDispatched { exec_id: x(1), node_id: node() },
            Event::ExecCancelled { exec_id: x(4), node_id: node(), was_dispatched: false },
            Event::ExecDispatched { exec_id: x(2), node_id: node() },
            Event::ExecRequeued { exec_id: x(2), node_id: node(), reason: "agent_restarted".into() },
        ]);
        let past =
            |v: &crate::ClusterViews, now| v.exec.queued_past_deadline(now).cloned().collect::<Vec<_>>();
        // 1 is in flight and 4 cancelled; 2 is queued again.
        assert_eq!(past(&v, 250), vec![x(2), x(3)]);
        assert_eq!(past(&v, 150), vec![x(2)]);
        assert!(past(&v, 100).is_empty(), "a deadline of 100 is not past at 100");
        let read: crate::ClusterViews =
            crate::decode_snapshot(&crate::encode_snapshot(&v)).expect("the snapshot reads back");
        assert_eq!(past(&read, 250), vec![x(2), x(3)]);
        assert_eq!(read, v);
    }

    #[test]
    fn cancelling_a_queued_command_removes_it_from_the_queue() {
        let v: crate::ClusterViews = fold(vec![
            queued(1),
            queued(2),
            Event::ExecCancelled { exec_id: x(2), node_id: node(), was_dispatched: false },
        ]);
        assert_eq!(v.exec.node(&node()).unwrap().queue, VecDeque::from(vec![x(1)]));
        assert_eq!(v.exec.get(&x(2)).unwrap().status, ExecStatus::Cancelled);
    }

    #[test]
    fn only_the_most_recent_results_are_kept_per_node() {
        let mut events = Vec::new();
        for n in 0..(FINISHED_KEPT as u32 + 5) {
            events.push(queued(n));
            events.push(Event::ExecExpired { exec_id: x(n), node_id: node() });
        }
        let v: crate::ClusterViews = fold(events);
        assert_eq!(v.exec.node(&node()).unwrap().finished.len(), FINISHED_KEPT);
        assert!(v.exec.get(&x(0)).is_none());
        assert!(v.exec.get(&x(FINISHED_KEPT as u32 + 4)).is_some());
    }
}
