//! Wake-ups for long-polling agents: one `Notify` per node, poked whenever an exec
//! event about that node is committed, so a queued command reaches a connected agent
//! at once instead of on its next poll.

use crate::ledger::Ledger;
use hydra_events::NodeId;
use hydra_projections::ClusterViews;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Waiters {
    nodes: Mutex<HashMap<NodeId, Arc<Notify>>>,
}

impl Waiters {
    /// The node's `Notify` (created on first use).
    pub fn of(&self, node: &NodeId) -> Arc<Notify> {
        self.nodes.lock().entry(node.clone()).or_default().clone()
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
