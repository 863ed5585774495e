//! Watchdogs: background tasks that turn the passing of time into commands, sent to
//! the ledger like any other client's: the offline checker, the exec and provisioning
//! deadlines, the body anomaly pass, the write of heartbeat changes held back by a
//! node's event budget, and the retention of command outputs.

use crate::cluster::{exec, liveness, nodes, provision, streams, Liveness};
use hydra_core::error::DomainError;
use hydra_core::ledger::{now_ms, Decision, Ledger};
use hydra_events::{Envelope, Event};
use hydra_projections::{ClusterViews, NodeStatus};
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Duration;

/// Marks online nodes offline once they have been silent for `timeout`.
pub async fn offline_checker(
    ledger: Ledger<ClusterViews>,
    liveness: Arc<Liveness>,
    timeout: Duration,
    every: Duration,
) {
    let mut tick = ticks(every);
    loop {
        tick.tick().await;
        let cutoff = now_ms().saturating_sub(crate::service::config::millis(timeout));
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
pub async fn exec_deadlines(
    ledger: Ledger<ClusterViews>,
    grace: Duration,
    every: Duration,
    timeouts: Counter,
) {
    let count = move |events: &[Arc<Envelope>]| {
        let timed_out = events.iter().filter(|e| matches!(e.event, Event::ExecTimedOut { .. })).count();
        timeouts.inc_by(timed_out as u64);
    };
    end_overdue(ledger, "watchdog:exec", grace, every, exec::overdue, exec::end_overdue, count).await
}

/// Fails provisioning that has run longer than `deadline` since `provision.started`
/// (`provision.failed` with `timeout`): a node that died mid-install never answers.
pub async fn provision_deadlines(ledger: Ledger<ClusterViews>, deadline: Duration, every: Duration) {
    let (overdue, end) = (provision::overdue, provision::end_overdue);
    end_overdue(ledger, "watchdog:provision", deadline, every, overdue, end, |_: &[Arc<Envelope>]| {}).await
}

/// Each `every`, finds what is past `deadline` on the committed views and, when there
/// is something, submits the command that ends it (which decides again); `ended` sees
/// the events it wrote.
async fn end_overdue<T, C>(
    ledger: Ledger<ClusterViews>,
    cause: &'static str,
    deadline: Duration,
    every: Duration,
    overdue: impl Fn(&ClusterViews, u64, u64) -> Vec<T>,
    end: impl Fn(Vec<T>, u64, u64) -> C,
    ended: impl Fn(&[Arc<Envelope>]),
) where
    C: FnOnce(&ClusterViews) -> Result<Decision, DomainError> + Send + 'static,
{
    let mut tick = ticks(every);
    let deadline_ms = crate::service::config::millis(deadline);
    loop {
        tick.tick().await;
        let now = now_ms();
        let ids = ledger.read(|v| overdue(v, now, deadline_ms));
        if ids.is_empty() {
            continue;
        }
        match ledger.submit(cause, end(ids, now, deadline_ms)).await {
            Ok(events) => ended(&events),
            Err(e) => tracing::warn!(error = %e, watchdog = cause, "could not end what is overdue"),
        }
    }
}

/// Drops command outputs older than `retention` from the output store each `every`
/// (the events keep their hashes and sizes; results then say `output_pruned`). A
/// deletion needs no flush of its own: one lost to a crash is redone at the next tick.
pub async fn output_retention(ledger: Ledger<ClusterViews>, retention: Duration, every: Duration) {
    let mut tick = ticks(every);
    let retention_ms = crate::service::config::millis(retention);
    loop {
        tick.tick().await;
        let store = ledger.store().clone();
        let cutoff = now_ms().saturating_sub(retention_ms);
        match tokio::task::spawn_blocking(move || store.prune_outputs(cutoff)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(outputs = n, "pruned command outputs past exec_output_retention"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not prune command outputs"),
            Err(e) => tracing::warn!(error = %e, "the output pruning task failed"),
        }
    }
}

/// A tick every `every`; a tick missed while busy is not made up in a burst.
fn ticks(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Opens and closes body anomalies each `every`: compares the conditions now (views,
/// plus the volatile telemetry for the GPU) with the anomalies open in the log.
pub async fn body_anomalies(
    ledger: Ledger<ClusterViews>,
    liveness: Arc<Liveness>,
    gpu_threshold_pct: f64,
    every: Duration,
) {
    let mut tick = ticks(every);
    loop {
        tick.tick().await;
        let bodies: Vec<_> = ledger.read(|v| v.nodes.keys().cloned().collect());
        let gpu_busy: streams::GpuBusy = bodies
            .into_iter()
            .filter_map(|id| {
                let telemetry = liveness.get(&id).and_then(|l| l.telemetry)?;
                Some((id, streams::gpu_busy(&telemetry, gpu_threshold_pct)))
            })
            .collect();
        if ledger.read(|v| streams::anomaly_events(v, &gpu_busy).is_empty()) {
            continue;
        }
        if let Err(e) = ledger.submit("watchdog:anomalies", streams::reconcile(gpu_busy)).await {
            tracing::warn!(error = %e, "anomaly watchdog could not record a change");
        }
    }
}

/// How often held heartbeat changes are looked at: a fraction of the shorter budget
/// interval, so that a held change waits at most about one interval and a half.
/// `None` when neither interval limits anything.
pub fn held_changes_tick(approved: Duration, pending: Duration) -> Option<Duration> {
    let shortest = [approved, pending].into_iter().filter(|d| !d.is_zero()).min()?;
    Some((shortest / 2).clamp(Duration::from_millis(50), Duration::from_secs(5)))
}

/// Writes the heartbeat changes held back by a node's event budget once its interval
/// (`approved` or, for every other node, `pending`) has passed, so that the log ends
/// at the latest value a node reported even when it stops heartbeating.
pub async fn held_changes(
    ledger: Ledger<ClusterViews>,
    liveness: Arc<Liveness>,
    approved: Duration,
    pending: Duration,
    every: Duration,
) {
    let mut tick = ticks(every);
    loop {
        tick.tick().await;
        let held = liveness.held_nodes();
        if held.is_empty() {
            continue;
        }
        let budgets: Vec<_> = ledger.read(|v| {
            held.into_iter()
                .map(|id| {
                    let ok = v.nodes.get(&id).is_some_and(|n| n.status == NodeStatus::Approved);
                    (id, liveness::budget(ok, approved, pending))
                })
                .collect()
        });
        for (id, report) in liveness.take_due(now_ms(), &budgets) {
            // The node's own report, only late: its cause is the node's.
            let command = nodes::heartbeat(id.clone(), report.clone(), nodes::Part::Changes);
            if let Err(e) = ledger.submit(format!("node:{id}"), command).await {
                tracing::warn!(node = %id, error = %e, "could not write a node's held heartbeat changes");
                liveness.restore(&id, report);
            }
        }
    }
}
