//! The rollout driver: follows hydracluster's `provision.*` events (catching up from
//! its event log first, then live over SSE resumed by Last-Event-ID), records what
//! they mean for each running rollout, moves rollouts along (`commands::next_steps`)
//! and sends the reprovision requests they decide on. It also carries out pending
//! auto-promotions.
//!
//! Every decision is a ledger command, recorded before it is acted on; what this
//! task keeps in memory (which requests it has sent) is rebuilt after a restart by
//! catching up with hydracluster first and asking again only for nodes it has no
//! word of (hydracluster answers "already" for one it is working on).

use super::cluster_client::{Cluster, ClusterError, Requested};
use super::commands::{self, ClusterReport};
use super::state::{promote, LibraryState, PromoteRequest};
use crate::service::sse_client::{follow, SseItem, SseSource};
use futures_util::StreamExt;
use hydra_events::NodeId;
use hydra_projections::{LibraryViews, NodeState};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// How often a failed auto-promotion (hydracluster down…) is tried again.
const AUTO_PROMOTE_RETRY: Duration = Duration::from_secs(5);

pub async fn run(state: LibraryState) {
    let (reports, mut reported) = mpsc::channel::<Input>(1024);
    // The follower holds a ledger handle: it must end with the driver, or the writer
    // would wait for it at shutdown.
    let _follower = state
        .cluster
        .clone()
        .map(|cluster| AbortOnDrop(tokio::spawn(follow_cluster(state.clone(), cluster, reports.clone()))));
    if state.cluster.is_none() && state.ledger.read(|v| v.active_rollouts().count()) > 0 {
        tracing::warn!("rollouts are running but no hydracluster is configured; they wait until one is");
    }
    let mut posted = Posted::default();
    // Nothing is asked of hydracluster before its events up to now are recorded.
    let mut caught_up = state.cluster.is_none();
    let mut tick = tokio::time::interval(state.config.rollout.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_auto_attempt: Option<Instant> = None;
    loop {
        let mut next = tokio::select! {
            input = reported.recv() => match input {
                Some(input) => Some(input),
                None => return,
            },
            _ = state.wake.notified() => None,
            _ = tick.tick() => None,
        };
        // Take whatever else arrived too, so a burst of events is one round of decisions.
        while let Some(input) = next.take().or_else(|| reported.try_recv().ok()) {
            match input {
                Input::Cluster { seq, node_id, report } => record(&state, node_id, seq, report).await,
                Input::CaughtUp => caught_up = true,
                Input::Sent { rollout_id, node_id, outcome } => {
                    sent(&state, &mut posted, rollout_id, node_id, outcome).await
                }
            }
        }
        if last_auto_attempt.is_none_or(|t| t.elapsed() >= AUTO_PROMOTE_RETRY) && auto_promote(&state).await {
            last_auto_attempt = Some(Instant::now());
        }
        if !caught_up {
            continue;
        }
        advance_all(&state).await;
        if let Some(cluster) = &state.cluster {
            request_new(&state, cluster, &mut posted, &reports);
        }
        state.links.driver_rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How long after a failed reprovision request (hydracluster down or busy) it is sent
/// again.
const RETRY_REQUEST: Duration = Duration::from_secs(3);

/// What this process has asked of hydracluster: requests sent (or being sent), and
/// those to send again once hydracluster is back. Volatile: rebuilt after a restart.
#[derive(Default)]
struct Posted {
    sent: HashSet<(String, NodeId)>,
    retry_at: HashMap<(String, NodeId), Instant>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Input {
    Cluster {
        seq: u64,
        node_id: NodeId,
        report: ClusterReport,
    },
    /// The cluster's log has been read up to where the live stream starts.
    CaughtUp,
    Sent {
        rollout_id: String,
        node_id: NodeId,
        outcome: Result<Requested, ClusterError>,
    },
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

async fn record(state: &LibraryState, node_id: NodeId, seq: u64, report: ClusterReport) {
    // Most cluster events are about nodes no rollout waits for: decide on a read.
    let wanted = state.ledger.read(|v| {
        !commands::record_cluster(node_id.clone(), seq, report.clone())(v).is_ok_and(|d| d.events.is_empty())
    });
    if !wanted {
        return;
    }
    let cause = format!("hydracluster:{seq}");
    if let Err(e) = state.ledger.submit(cause, commands::record_cluster(node_id, seq, report)).await {
        tracing::error!(error = %e, "recording a cluster event failed");
    }
}

async fn sent(
    state: &LibraryState,
    posted: &mut Posted,
    rollout_id: String,
    node_id: NodeId,
    outcome: Result<Requested, ClusterError>,
) {
    match outcome {
        Ok(_) => {}
        Err(e) if e.is_transient() => {
            // Asked again a little later; the node deadline bounds how long.
            tracing::warn!(rollout = %rollout_id, node = %node_id, error = %e, "reprovision request failed; retrying");
            let key = (rollout_id, node_id);
            posted.sent.remove(&key);
            posted.retry_at.insert(key, Instant::now() + RETRY_REQUEST);
        }
        Err(e) => {
            let cause = format!("rollout:{rollout_id}");
            let command = commands::node_refused(rollout_id, node_id, e.to_string());
            if let Err(e) = state.ledger.submit(cause, command).await {
                tracing::error!(error = %e, "recording a refused reprovision failed");
            }
        }
    }
}

/// Moves every running rollout along as far as it goes now.
async fn advance_all(state: &LibraryState) {
    let now = now_ms();
    let due: Vec<String> = state.ledger.read(|v| {
        v.active_rollouts()
            .filter(|r| !commands::next_steps(r, now).is_empty())
            .map(|r| r.id.clone())
            .collect()
    });
    for id in due {
        let cause = format!("rollout:{id}");
        if let Err(e) = state.ledger.submit(cause, commands::advance(id, now)).await {
            tracing::error!(error = %e, "advancing a rollout failed");
        }
    }
}

/// Sends a reprovision request for every node a rollout has asked for and this
/// process has not sent yet (after a restart: those hydracluster has no word of).
fn request_new(state: &LibraryState, cluster: &Cluster, posted: &mut Posted, reports: &mpsc::Sender<Input>) {
    let asked: HashSet<(String, NodeId)> = state.ledger.read(requested_nodes).into_iter().collect();
    posted.sent.retain(|key| asked.contains(key));
    posted.retry_at.retain(|key, _| asked.contains(key));
    let now = Instant::now();
    for key in asked {
        if posted.retry_at.get(&key).is_some_and(|t| *t > now) || !posted.sent.insert(key.clone()) {
            continue;
        }
        posted.retry_at.remove(&key);
        let (cluster, reports) = (cluster.clone(), reports.clone());
        tokio::spawn(async move {
            let (rollout_id, node_id) = key;
            let outcome = cluster.reprovision(&node_id).await;
            let _ = reports.send(Input::Sent { rollout_id, node_id, outcome }).await;
        });
    }
}

/// Nodes of running rollouts that were asked for and have no word from hydracluster.
fn requested_nodes(v: &LibraryViews) -> Vec<(String, NodeId)> {
    v.active_rollouts()
        .flat_map(|r| {
            r.nodes
                .iter()
                .filter(|(_, p)| p.state == NodeState::Requested)
                .map(|(n, _)| (r.id.clone(), n.clone()))
        })
        .collect()
}

/// Promotes to staging every `auto_promote` experience whose development build is not
/// staging's yet and that has no staging rollout going. Level-triggered, so an
/// auto-promotion lost to a crash, or held back by a running rollout, happens later.
/// Returns true when it tried and failed (to space out retries).
async fn auto_promote(state: &LibraryState) -> bool {
    let due: Vec<String> = state.ledger.read(|v| {
        v.experiences
            .values()
            .filter(|x| x.auto_promote)
            .filter(|x| {
                let dev = x.environments.get("development").map(|e| &e.build);
                dev.is_some() && dev != x.environments.get("staging").map(|e| &e.build)
            })
            .filter(|x| !v.active_rollouts().any(|r| r.experience_id == x.id && r.environment == "staging"))
            .map(|x| x.id.clone())
            .collect()
    });
    let mut failed = false;
    for id in due {
        let req = PromoteRequest { to: "staging".into(), auto: true, ..PromoteRequest::default() };
        match promote(state, "auto_promote".into(), &id, &req).await {
            Ok(p) => {
                tracing::info!(experience = %id, build = %p.build, rollout = ?p.rollout_id, "auto-promoted to staging")
            }
            Err(e) => {
                tracing::warn!(experience = %id, error = %e, "auto-promotion failed; will retry");
                failed = true;
            }
        }
    }
    failed
}

/// Where to read hydracluster's events from: the lowest position any running
/// rollout has accounted for, or hydracluster's head when none is running.
fn cursor(v: &LibraryViews) -> Option<u64> {
    v.active_rollouts().map(|r| r.cluster_seq).min()
}

/// Reads hydracluster's log from the cursor to its head, then follows its SSE stream
/// from there; each `provision.*` event goes to the driver in order.
async fn follow_cluster(state: LibraryState, cluster: Cluster, out: mpsc::Sender<Input>) {
    let retry = state.config.reconnect_delay;
    let head = loop {
        match catch_up(&state, &cluster, &out).await {
            Ok(head) => break head,
            Err(e) => {
                state.links.set_cluster(false);
                tracing::warn!(error = %e, "cannot read hydracluster's events yet; retrying");
                tokio::time::sleep(retry.max(Duration::from_millis(200))).await;
            }
        }
    };
    if out.send(Input::CaughtUp).await.is_err() {
        return;
    }
    let source = SseSource {
        url: format!("{}/api/v1/events?types=provision.*", cluster.url),
        token: state.config.cluster_token.clone(),
        last_event_id: Some(head.to_string()),
        retry,
    };
    let mut events = std::pin::pin!(follow(source));
    while let Some(item) = events.next().await {
        match item {
            SseItem::Connected { resumed_from } => {
                state.links.set_cluster(true);
                tracing::info!(resumed_from = ?resumed_from, "following hydracluster's events");
            }
            SseItem::Down { reason } => {
                state.links.set_cluster(false);
                tracing::warn!(%reason, "hydracluster's event stream is down; reconnecting");
            }
            SseItem::Event { id, kind, data } => {
                let Some(input) = parse_cluster_event(id.as_deref(), &kind, &data) else { continue };
                if out.send(input).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Pages through `GET /api/v1/events/log?types=provision.*` from the cursor to the
/// head; returns the head it reached.
async fn catch_up(
    state: &LibraryState,
    cluster: &Cluster,
    out: &mpsc::Sender<Input>,
) -> Result<u64, ClusterError> {
    let Some(mut since) = state.ledger.read(cursor) else {
        return cluster.last_event_id().await;
    };
    loop {
        let page = cluster.events_page(since, "provision.*").await?;
        for e in &page.events {
            let (Some(seq), Some(kind)) =
                (e.get("seq").and_then(|s| s.as_u64()), e.get("type").and_then(|t| t.as_str()))
            else {
                continue;
            };
            if let Some(input) = parse_cluster_value(seq, kind, e.get("data")) {
                let _ = out.send(input).await;
            }
        }
        if page.next_since >= page.head || page.next_since <= since {
            return Ok(page.next_since.max(since));
        }
        since = page.next_since;
    }
}

fn parse_cluster_event(id: Option<&str>, kind: &str, data: &str) -> Option<Input> {
    let seq = id?.parse::<u64>().ok()?;
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    parse_cluster_value(seq, kind, value.get("data"))
}

fn parse_cluster_value(seq: u64, kind: &str, data: Option<&serde_json::Value>) -> Option<Input> {
    let data = data?;
    let node_id = NodeId::parse(data.get("node_id")?.as_str()?).ok()?;
    let text = |k: &str| data.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let report = match kind {
        "provision.started" => ClusterReport::Started,
        "provision.completed" => ClusterReport::Completed { version: text("version") },
        "provision.failed" => {
            ClusterReport::Failed { error: text("error").unwrap_or_else(|| "failed".into()) }
        }
        _ => return None,
    };
    Some(Input::Cluster { seq, node_id, report })
}
