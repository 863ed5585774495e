//! Watchdogs: background tasks that turn the passing of time into commands, sent to
//! the ledger like any other client's: the offline checker and the exec deadlines.

use crate::cluster::{exec, nodes, Liveness};
use crate::ledger::{now_ms, Ledger};
use hydra_projections::ClusterViews;
use std::sync::Arc;
use std::time::Duration;

/// Marks online nodes offline once they have been silent for `timeout`.
pub async fn offline_checker(
    ledger: Ledger<ClusterViews>,
    liveness: Arc<Liveness>,
    timeout: Duration,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let cutoff = now_ms().saturating_sub(timeout.as_millis() as u64);
        let silent: Vec<_> = ledger.read(|v| {
            v.nodes
                .values()
                .filter(|n| n.online && liveness.last_seen_or_start(&n.id) <= cutoff)
                .map(|n| n.id.clone())
                .collect()
        });
        for id in silent {
            let live = liveness.clone();
            let command = nodes::mark_offline(id, cutoff, move |id| live.last_seen_or_start(id));
            if let Err(e) = ledger.submit("watchdog:offline", command).await {
                tracing::warn!(error = %e, "offline checker could not record a node offline");
            }
        }
    }
}

/// Ends commands in flight past their timeout plus `grace` (`exec.timed_out`) and
/// queued commands past their delivery deadline (`exec.expired`).
pub async fn exec_deadlines(ledger: Ledger<ClusterViews>, grace: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let grace_ms = grace.as_millis() as u64;
    loop {
        tick.tick().await;
        let now = now_ms();
        let ids = ledger.read(|v| exec::overdue(v, now, grace_ms));
        if ids.is_empty() {
            continue;
        }
        if let Err(e) = ledger.submit("watchdog:exec", exec::end_overdue(ids, now, grace_ms)).await {
            tracing::warn!(error = %e, "exec watchdog could not end overdue commands");
        }
    }
}
