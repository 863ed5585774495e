//! Wake-ups for long-polling agents: one `Notify` per node, poked whenever an exec
//! event about that node is committed, so a queued command reaches a connected agent
//! at once instead of on its next poll.

use hydra_core::ledger::Ledger;
use hydra_events::NodeId;
use hydra_projections::ClusterViews;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;

/// The nodes someone is waiting on right now. An entry lives exactly as long as a
/// `Waiter` for it, so asking about any number of node ids (unknown ones included)
/// leaves nothing behind.
#[derive(Default)]
pub struct Waiters {
    nodes: Mutex<HashMap<NodeId, Arc<Notify>>>,
    /// Long polls (exec and shell) parked now: armed, looked once and found nothing.
    /// `/readyz` shows it, so a client can tell a poll is parked before it acts.
    parked: AtomicU64,
}

/// One parked long poll, counted while it lives.
pub struct Parked(Arc<Waiters>);

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One wait on a node: its `Notify`, shared with every other wait on that node.
/// Dropping the last one removes the node's entry.
pub struct Waiter {
    waiters: Arc<Waiters>,
    node: NodeId,
    notify: Option<Arc<Notify>>,
}

impl Waiter {
    pub fn notify(&self) -> &Notify {
        self.notify.as_deref().expect("present until dropped")
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut nodes = self.waiters.nodes.lock();
        // Our handle goes under the lock, so the count below is exact: only the map's
        // own handle left means no one else waits on this node.
        drop(self.notify.take());
        if nodes.get(&self.node).is_some_and(|n| Arc::strong_count(n) == 1) {
            nodes.remove(&self.node);
        }
    }
}

impl Waiters {
    /// A wait on the node's `Notify` (created for the first waiter).
    pub fn of(self: &Arc<Self>, node: &NodeId) -> Waiter {
        let notify = self.nodes.lock().entry(node.clone()).or_default().clone();
        Waiter { waiters: self.clone(), node: node.clone(), notify: Some(notify) }
    }

    /// Counts a long poll as parked until the guard drops. Take it after the poll's
    /// wake-up is armed and its first look found nothing: from then on anything that
    /// concerns it wakes it.
    pub fn park(self: &Arc<Self>) -> Parked {
        self.parked.fetch_add(1, Ordering::Relaxed);
        Parked(self.clone())
    }

    /// Long polls parked now.
    pub fn parked(&self) -> u64 {
        self.parked.load(Ordering::Relaxed)
    }

    /// How many nodes are waited on now.
    pub fn len(&self) -> usize {
        self.nodes.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn wake(&self, node: &NodeId) {
        if let Some(n) = self.nodes.lock().get(node) {
            n.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for n in self.nodes.lock().values() {
            n.notify_waiters();
        }
    }
}

/// Follows the ledger's live events and wakes the nodes they are about.
pub async fn run(ledger: Ledger<ClusterViews>, waiters: Arc<Waiters>) {
    let mut live = ledger.subscribe();
    loop {
        match live.recv().await {
            Ok(p) => {
                if p.envelope.event.exec_id().is_some() {
                    if let Some(node) = p.envelope.event.node_id() {
                        waiters.wake(node);
                    }
                }
            }
            // Missed some: wake everyone, each waiter re-checks the views.
            Err(RecvError::Lagged(_)) => waiters.wake_all(),
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: usize) -> NodeId {
        NodeId::parse(&format!("node-{i}")).unwrap()
    }

    #[test]
    fn entries_last_only_while_someone_waits() {
        let waiters = Arc::new(Waiters::default());
        for i in 0..1000 {
            drop(waiters.of(&node(i)));
        }
        assert_eq!(waiters.len(), 0, "a thousand distinct ids leave nothing behind");
        let a = waiters.of(&node(1));
        let b = waiters.of(&node(1));
        assert_eq!(waiters.len(), 1);
        drop(a);
        assert_eq!(waiters.len(), 1, "b still waits");
        drop(b);
        assert!(waiters.is_empty());
    }

    #[tokio::test]
    async fn a_wait_armed_before_the_wake_is_woken() {
        let waiters = Arc::new(Waiters::default());
        let w = waiters.of(&node(7));
        {
            let notified = w.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            waiters.wake(&node(7));
            // Completes at once: the wake reached the armed future.
            tokio::time::timeout(std::time::Duration::from_secs(5), notified).await.unwrap();
        }
        // A wake for another node, or with nobody waiting, creates no entry.
        waiters.wake(&node(8));
        drop(w);
        waiters.wake(&node(7));
        assert!(waiters.is_empty());
    }
}
