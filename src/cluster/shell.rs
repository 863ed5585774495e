//! Shell sessions between an admin and a node's agent: who waits for which node, and
//! the hand-over of the agent's connection to the admin's side, which relays both.
//! Volatile like liveness (a restart ends every terminal anyway), and generic over
//! the connection type so that nothing here knows HTTP.

use hydra_events::NodeId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// A session not attached this long after it was offered is offered again: the agent
/// may have lost the answer, or restarted, in between.
const REOFFER_AFTER: Duration = Duration::from_secs(5);

/// What an agent is told about a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// `shell-<16 hex>`.
    pub id: String,
    /// None: an interactive login shell.
    pub command: Option<String>,
    pub cols: u16,
    pub rows: u16,
}

struct Session<A> {
    node: NodeId,
    offer: Offer,
    /// Taken by the agent's attach; None once attached.
    attach: Option<oneshot::Sender<A>>,
    offered_at: Option<Instant>,
}

/// Why an agent cannot attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// No such session (never was, timed out, or over).
    Unknown,
    /// The session is another node's.
    OtherNode,
    /// An agent attached already.
    Taken,
}

pub struct Shells<A> {
    sessions: Mutex<HashMap<String, Session<A>>>,
    /// Woken when a session is opened for the node, so a long-polling agent learns at once.
    wakers: Mutex<HashMap<NodeId, Arc<Notify>>>,
}

impl<A> Default for Shells<A> {
    fn default() -> Self {
        Shells { sessions: Mutex::default(), wakers: Mutex::default() }
    }
}

impl<A> Shells<A> {
    /// The node's `Notify` (created on first use).
    pub fn waker(&self, node: &NodeId) -> Arc<Notify> {
        self.wakers.lock().entry(node.clone()).or_default().clone()
    }

    /// Registers a session waiting for `node`'s agent and wakes it; the receiver gets
    /// the agent's connection when it attaches (an error once the session is forgotten).
    pub fn open(&self, node: NodeId, offer: Offer) -> oneshot::Receiver<A> {
        let (tx, rx) = oneshot::channel();
        let session =
            Session { node: node.clone(), offer: offer.clone(), attach: Some(tx), offered_at: None };
        self.sessions.lock().insert(offer.id, session);
        let waker = self.wakers.lock().get(&node).cloned();
        if let Some(w) = waker {
            w.notify_waiters();
        }
        rx
    }

    /// A session waiting for this node that was not offered recently, marked offered.
    pub fn next_offer(&self, node: &NodeId) -> Option<Offer> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        let s = sessions
            .values_mut()
            .filter(|s| &s.node == node && s.attach.is_some())
            .filter(|s| s.offered_at.is_none_or(|at| now.duration_since(at) >= REOFFER_AFTER))
            .min_by_key(|s| s.offered_at)?;
        s.offered_at = Some(now);
        Some(s.offer.clone())
    }

    /// Checks that `node` may attach to session `id`, without taking it.
    pub fn check(&self, node: &NodeId, id: &str) -> Result<(), AttachError> {
        match self.sessions.lock().get(id) {
            None => Err(AttachError::Unknown),
            Some(s) if &s.node != node => Err(AttachError::OtherNode),
            Some(s) if s.attach.is_none() => Err(AttachError::Taken),
            Some(_) => Ok(()),
        }
    }

    /// Takes the session for `node`'s agent: the sender hands its connection over.
    pub fn attach(&self, node: &NodeId, id: &str) -> Result<oneshot::Sender<A>, AttachError> {
        match self.sessions.lock().get_mut(id) {
            None => Err(AttachError::Unknown),
            Some(s) if &s.node != node => Err(AttachError::OtherNode),
            Some(s) => s.attach.take().ok_or(AttachError::Taken),
        }
    }

    /// Ends a session: it is no longer offered nor attachable.
    pub fn forget(&self, id: &str) {
        self.sessions.lock().remove(id);
    }

    /// Sessions registered (waiting or attached).
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> NodeId {
        NodeId::parse(n).unwrap()
    }

    fn offer(id: &str) -> Offer {
        Offer { id: id.into(), command: None, cols: 80, rows: 24 }
    }

    #[test]
    fn a_session_is_offered_to_its_node_once_and_attached_once() {
        let shells = Shells::<u32>::default();
        let (a, b) = (node("node-a"), node("node-b"));
        let mut rx = shells.open(a.clone(), offer("shell-1"));
        assert_eq!(shells.next_offer(&b), None);
        assert_eq!(shells.next_offer(&a), Some(offer("shell-1")));
        assert_eq!(shells.next_offer(&a), None, "not offered twice in a row");

        assert_eq!(shells.check(&b, "shell-1"), Err(AttachError::OtherNode));
        assert_eq!(shells.attach(&b, "shell-1").err(), Some(AttachError::OtherNode));
        assert_eq!(shells.check(&a, "shell-2"), Err(AttachError::Unknown));
        assert_eq!(shells.check(&a, "shell-1"), Ok(()));
        let tx = shells.attach(&a, "shell-1").unwrap();
        assert_eq!(shells.attach(&a, "shell-1").err(), Some(AttachError::Taken));
        assert_eq!(shells.check(&a, "shell-1"), Err(AttachError::Taken));
        tx.send(7).unwrap();
        assert_eq!(rx.try_recv().unwrap(), 7);

        shells.forget("shell-1");
        assert!(shells.is_empty());
        assert_eq!(shells.attach(&a, "shell-1").err(), Some(AttachError::Unknown));
    }

    #[test]
    fn forgetting_a_waiting_session_tells_its_opener() {
        let shells = Shells::<u32>::default();
        let mut rx = shells.open(node("node-a"), offer("shell-1"));
        shells.forget("shell-1");
        assert!(matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
        assert_eq!(shells.next_offer(&node("node-a")), None);
    }

    #[tokio::test]
    async fn opening_wakes_a_waiting_agent() {
        let shells = Arc::new(Shells::<u32>::default());
        let a = node("node-a");
        let waker = shells.waker(&a);
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let _rx = shells.open(a.clone(), offer("shell-1"));
        tokio::time::timeout(Duration::from_secs(5), notified).await.expect("woken");
    }
}
