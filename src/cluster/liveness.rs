//! Volatile liveness: when each node last heartbeated and what it last said about
//! itself that is too chatty to be an event (diagnostics, telemetry), and each node's
//! budget for heartbeat-driven events (the change held back until its interval
//! passes). Lost on restart by design; the log keeps the transitions.

use super::nodes::Report;
use hydra_core::ledger::now_ms;
use hydra_events::NodeId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Live {
    pub last_seen_ms: u64,
    pub diagnostics: Option<serde_json::Map<String, serde_json::Value>>,
    pub telemetry: Option<serde_json::Value>,
    /// The node's event budget as a virtual time (GCRA): a write is allowed when now
    /// is at most `burst - 1` intervals before it, and pushes it one interval on.
    pub budget_at_ms: u64,
    /// What the node reported that differs from the log and waits for its budget.
    pub held: Option<Report>,
    /// Heartbeats whose changes were held back and folded into a later write.
    pub coalesced: u64,
}

/// What a heartbeat's changes (the events [`super::nodes::coalescable`] names) do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Written now; the node's budget is spent for one interval.
    Write,
    /// Held until the interval passes (the next heartbeat or the watchdog writes it).
    Hold,
}

pub struct Liveness {
    nodes: Mutex<HashMap<NodeId, Live>>,
    /// Nodes online in the log but not heard from since start-up count from here.
    started_ms: u64,
    /// Heartbeats whose changes were held back, every node, since start-up.
    coalesced_total: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            nodes: Mutex::new(HashMap::new()),
            started_ms: now_ms(),
            coalesced_total: AtomicU64::new(0),
        }
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

    /// What the node says now, over what it said before and is still held back: the
    /// report to decide on, so a held change is never forgotten by a heartbeat that
    /// leaves the field out.
    pub fn with_held(&self, id: &NodeId, report: Report) -> Report {
        match self.nodes.lock().get(id).and_then(|l| l.held.as_ref()) {
            Some(held) => report.over(held),
            None => report,
        }
    }

    /// Spends the node's budget or holds its changes. `changes` says whether `report`
    /// (from [`Liveness::with_held`]) differs from the log in a field that may wait;
    /// when it does not, a held change is obsolete and dropped. The budget is one
    /// write per `interval_ms` (0 = no limit) with bursts of `burst` writes. The
    /// decision is taken under the lock, so two heartbeats of one node never both
    /// spend one budget.
    pub fn spend(
        &self,
        id: &NodeId,
        now: u64,
        (interval_ms, burst): (u64, u32),
        report: &Report,
        changes: bool,
    ) -> Budget {
        let mut nodes = self.nodes.lock();
        let live = nodes.entry(id.clone()).or_default();
        if !changes {
            live.held = None;
            return Budget::Write;
        }
        if take(&mut live.budget_at_ms, now, interval_ms, burst) {
            live.held = None;
            return Budget::Write;
        }
        live.held = Some(match live.held.take() {
            Some(older) => report.clone().over(&older),
            None => report.clone(),
        });
        live.coalesced = live.coalesced.saturating_add(1);
        if live.coalesced == 1 {
            tracing::info!(node = %id, interval_ms, "node's heartbeats change faster than its event budget; \
                holding its changes and writing the latest once per interval");
        }
        self.coalesced_total.fetch_add(1, Ordering::Relaxed);
        Budget::Hold
    }

    /// The nodes with a change held back.
    pub fn held_nodes(&self) -> Vec<NodeId> {
        self.nodes.lock().iter().filter(|(_, l)| l.held.is_some()).map(|(id, _)| id.clone()).collect()
    }

    /// Takes out the held changes whose node's budget (given per node) allows a write
    /// again, spending it: the watchdog writes them.
    pub fn take_due(&self, now: u64, budgets: &[(NodeId, (u64, u32))]) -> Vec<(NodeId, Report)> {
        let mut nodes = self.nodes.lock();
        let mut due = Vec::new();
        for (id, (interval_ms, burst)) in budgets {
            let Some(live) = nodes.get_mut(id) else { continue };
            if live.held.is_none() || !take(&mut live.budget_at_ms, now, *interval_ms, *burst) {
                continue;
            }
            if let Some(report) = live.held.take() {
                due.push((id.clone(), report));
            }
        }
        due
    }

    /// Puts back a change whose write failed, under anything the node said since.
    pub fn restore(&self, id: &NodeId, report: Report) {
        let mut nodes = self.nodes.lock();
        let live = nodes.entry(id.clone()).or_default();
        live.held = Some(match live.held.take() {
            Some(newer) => newer.over(&report),
            None => report,
        });
    }

    /// Heartbeats whose changes were held back, every node, since start-up.
    pub fn coalesced_total(&self) -> u64 {
        self.coalesced_total.load(Ordering::Relaxed)
    }
}

/// Writes of changes an approved node may make in a row before one per interval
/// applies: a booting agent reports its versions, then its provider, then a stream,
/// within seconds, and none of that should wait.
pub const APPROVED_BURST: u32 = 3;
/// Pending nodes get the smallest budget: one write per (longer) interval, no burst.
pub const PENDING_BURST: u32 = 1;

/// A node's event budget, `(interval_ms, burst)`: `approved` nodes get
/// `heartbeat_event_interval` and [`APPROVED_BURST`], every other node
/// `pending_heartbeat_event_interval` and [`PENDING_BURST`].
pub fn budget(approved: bool, approved_interval: Duration, pending_interval: Duration) -> (u64, u32) {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if approved {
        (ms(approved_interval), APPROVED_BURST)
    } else {
        (ms(pending_interval), PENDING_BURST)
    }
}

/// One write from a budget kept as a virtual time `at` (the generic cell rate
/// algorithm): allowed when `now` is no more than `burst - 1` intervals before `at`;
/// each write moves `at` one interval past `max(at, now)`. Saturating throughout.
fn take(at: &mut u64, now: u64, interval_ms: u64, burst: u32) -> bool {
    if interval_ms == 0 {
        return true;
    }
    let slack = interval_ms.saturating_mul(u64::from(burst.max(1)) - 1);
    if now.saturating_add(slack) < *at {
        return false;
    }
    *at = (*at).max(now).saturating_add(interval_ms);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &str) -> Report {
        Report { os: Some(v.into()), agent_version: Some("1".into()), ..Default::default() }
    }

    #[test]
    fn one_write_per_interval_and_the_latest_value_is_kept() {
        let l = Liveness::default();
        let id = NodeId::parse("node-1").unwrap();
        let b = (500, 1);
        assert_eq!(l.spend(&id, 1_000, b, &os("a"), true), Budget::Write);
        assert_eq!(l.spend(&id, 1_100, b, &os("b"), true), Budget::Hold);
        let r = l.with_held(&id, Report { agent_version: Some("2".into()), ..Default::default() });
        assert_eq!((r.os.as_deref(), r.agent_version.as_deref()), (Some("b"), Some("2")));
        assert_eq!(l.spend(&id, 1_200, b, &r, true), Budget::Hold);
        assert_eq!(l.get(&id).unwrap().coalesced, 2);
        assert_eq!(l.held_nodes(), vec![id.clone()]);
        // Not due yet, then due: taken out once, with the latest of each field.
        assert!(l.take_due(1_400, &[(id.clone(), b)]).is_empty());
        let due = l.take_due(1_500, &[(id.clone(), b)]);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].1.os.as_deref(), due[0].1.agent_version.as_deref()), (Some("b"), Some("2")));
        assert!(l.held_nodes().is_empty());
        // The budget was spent by that write.
        assert_eq!(l.spend(&id, 1_600, b, &os("c"), true), Budget::Hold);
        // A report back to what the log says makes the held change obsolete.
        assert_eq!(l.spend(&id, 1_700, b, &os("b"), false), Budget::Write);
        assert!(l.held_nodes().is_empty());
        assert_eq!(l.coalesced_total(), 3);
    }

    #[test]
    fn a_burst_passes_then_one_write_per_interval() {
        let l = Liveness::default();
        let id = NodeId::parse("node-1").unwrap();
        let b = (1_000, 3);
        let decisions: Vec<_> =
            (0..5).map(|i| l.spend(&id, 10_000 + i, b, &os(&i.to_string()), true)).collect();
        assert_eq!(decisions[..3], [Budget::Write; 3]);
        assert_eq!(decisions[3..], [Budget::Hold; 2]);
        // One interval later, one more write; not two.
        assert_eq!(l.spend(&id, 11_000, b, &os("x"), true), Budget::Write);
        assert_eq!(l.spend(&id, 11_001, b, &os("y"), true), Budget::Hold);
    }

    #[test]
    fn no_interval_means_no_limit() {
        let l = Liveness::default();
        let id = NodeId::parse("node-1").unwrap();
        for i in 0..5 {
            assert_eq!(l.spend(&id, 1_000, (0, 1), &os(&i.to_string()), true), Budget::Write);
        }
        assert_eq!(l.coalesced_total(), 0);
    }
}
