//! Volatile liveness: when each node last heartbeated and what it last said about
//! itself that is too chatty to be an event (diagnostics, telemetry). Lost on restart
//! by design; the log keeps the transitions.

use crate::ledger::now_ms;
use hydra_events::NodeId;
use parking_lot::Mutex;
use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct Live {
    pub last_seen_ms: u64,
    pub diagnostics: Option<serde_json::Map<String, serde_json::Value>>,
    pub telemetry: Option<serde_json::Value>,
}

pub struct Liveness {
    nodes: Mutex<HashMap<NodeId, Live>>,
    /// Nodes online in the log but not heard from since start-up count from here.
    started_ms: u64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness { nodes: Mutex::new(HashMap::new()), started_ms: now_ms() }
    }
}

impl Liveness {
    /// Records a heartbeat. Diagnostics and telemetry replace the previous ones when sent.
    pub fn touch(
        &self,
        id: &NodeId,
        at_ms: u64,
        diagnostics: Option<serde_json::Map<String, serde_json::Value>>,
        telemetry: Option<serde_json::Value>,
    ) {
        let mut nodes = self.nodes.lock();
        let live = nodes.entry(id.clone()).or_default();
        live.last_seen_ms = live.last_seen_ms.max(at_ms);
        if diagnostics.is_some() {
            live.diagnostics = diagnostics;
        }
        if telemetry.is_some() {
            live.telemetry = telemetry;
        }
    }

    /// Replaces a node's diagnostics without counting as a heartbeat: a kiosk's status
    /// report carries them, but only heartbeats say a node is alive.
    pub fn set_diagnostics(&self, id: &NodeId, diagnostics: serde_json::Map<String, serde_json::Value>) {
        self.nodes.lock().entry(id.clone()).or_default().diagnostics = Some(diagnostics);
    }

    pub fn get(&self, id: &NodeId) -> Option<Live> {
        self.nodes.lock().get(id).cloned()
    }

    /// When the node was last heard from, or the server's start if not since then.
    pub fn last_seen_or_start(&self, id: &NodeId) -> u64 {
        self.nodes.lock().get(id).map(|l| l.last_seen_ms).unwrap_or(self.started_ms)
    }

    pub fn forget(&self, id: &NodeId) {
        self.nodes.lock().remove(id);
    }
}
