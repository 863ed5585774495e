//! `GET /api/v1/bodies`: the approved bodies as the `/bodies` console page and the
//! session-monitoring runbook read them, in one request: each body's node fields, the
//! GPU figures of its last heartbeat's telemetry, the heads assigned to it and its open
//! anomalies. Also the JSON of one open anomaly, shared with `/api/v1/body-anomalies`.

use super::nodes::{node_json, ListQuery, NodeJson};
use super::page;
use super::{ApiError, AppState, Reader};
use crate::cluster::Live;
use crate::service::ApiQuery;
use axum::extract::State;
use axum::response::Response;
use hydra_core::envelope::rfc3339;
use hydra_core::ledger::now_ms;
use hydra_events::NodeId;
use hydra_projections::{NodeView, ProvisionView};
use serde::Serialize;
use serde_json::{Number, Value};
use std::collections::BTreeMap;

/// A body as the list shows it: the node as `GET /api/v1/nodes` shows it, plus the
/// telemetry figures at the top level, its heads and its anomalies.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BodyJson {
    #[serde(flatten)]
    node: NodeJson,
    /// From the last heartbeat's telemetry; null when the body did not report it.
    #[schema(value_type = Option<f64>)]
    gpu_utilization_pct: Option<Number>,
    #[schema(value_type = Option<f64>)]
    gpu_memory_used_mb: Option<Number>,
    #[schema(value_type = Option<f64>)]
    stream_count: Option<Number>,
    #[schema(value_type = Option<f64>)]
    gpu_mismatch_sec: Option<Number>,
    /// The heads assigned to this body.
    heads: Vec<BodyHead>,
    /// The body's open anomalies.
    anomalies: Vec<AnomalyJson>,
}

/// A head assigned to a body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BodyHead {
    #[schema(value_type = String)]
    id: NodeId,
    /// Null when the head's node is gone.
    name: Option<String>,
    /// The head's stream status (`idle`, `streaming`, …).
    status: String,
}

/// One figure of the body's last telemetry. A figure the body never reported, or
/// reported as something other than a number, is `None` (`null`): unknown is not 0.
/// The telemetry object itself stays in `telemetry`, as the body sent it.
fn figure(telemetry: Option<&Value>, key: &str) -> Option<Number> {
    match telemetry?.get(key)? {
        Value::Number(n) => Some(n.clone()),
        _ => None,
    }
}

/// The limit of the body's own watchdog, in whole seconds, as its telemetry reports it
/// (`watchdog_timeout_s`): after that long the body ends an orphaned stream, or a GPU
/// left busy without one, by itself. None when it reports no such figure.
pub fn watchdog_s(live: Option<&Live>) -> Option<u64> {
    figure(live?.telemetry.as_ref(), "watchdog_timeout_s")?.as_u64()
}

/// An open anomaly: its `type`, since when (RFC 3339) and for how many whole seconds
/// it has lasted at `now` (unix ms); with the body's watchdog limit, when the body
/// should have cleared it by itself (`expected_clear_at`) and whether that time has
/// passed (`overdue`: the watchdog did not do its work, a force-stop is due); both
/// `null` when the body reports no watchdog.
pub fn anomaly_json(kind: &str, since_ms: u64, now_ms: u64, watchdog_s: Option<u64>) -> AnomalyJson {
    let clear_ms = watchdog_s.map(|s| since_ms.saturating_add(s.saturating_mul(1000)));
    AnomalyJson {
        kind: kind.to_owned(),
        since: rfc3339(since_ms),
        for_s: now_ms.saturating_sub(since_ms) / 1000,
        expected_clear_at: clear_ms.map(rfc3339),
        overdue: clear_ms.map(|c| now_ms >= c),
    }
}

/// An open anomaly of a body (see [`anomaly_json`]).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnomalyJson {
    /// The anomaly's type (`gpu_busy_without_stream`, `orphan_stream`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Since when it is open (RFC 3339).
    pub since: String,
    /// How many whole seconds it has lasted.
    pub for_s: u64,
    /// When the body's watchdog should have cleared it (RFC 3339); null when the body
    /// reports no watchdog.
    pub expected_clear_at: Option<String>,
    /// Whether `expected_clear_at` has passed (a force-stop is due); null without a
    /// watchdog.
    pub overdue: Option<bool>,
}

/// The node list's query (its filters and pages) without what cannot apply: the kind
/// and status are fixed, and telemetry is live only, so there is no as-of list.
fn bodies_query(mut q: ListQuery) -> Result<ListQuery, ApiError> {
    let fixed = [("kind", q.kind.is_some()), ("status", q.status.is_some())];
    let live = [("as_of", q.as_of.is_some()), ("as_of_seq", q.as_of_seq.is_some())];
    if let Some((name, _)) = fixed.iter().find(|(_, given)| *given) {
        return Err(ApiError::bad_request(format!(
            "{name} is not a filter of /api/v1/bodies: it lists approved bodies (see /api/v1/nodes)"
        )));
    }
    if let Some((name, _)) = live.iter().find(|(_, given)| *given) {
        return Err(ApiError::bad_request(format!(
            "{name} is not a filter of /api/v1/bodies: telemetry is live only (see /api/v1/nodes)"
        )));
    }
    // Approved only: a pending node is not in the fleet yet (no placement, no roles,
    // and a force-stop refuses it); `GET /api/v1/nodes?status=pending` has them.
    q.kind = Some("body".into());
    q.status = Some("approved".into());
    Ok(q)
}

/// What one read of the views gives for a body.
struct Found {
    node: NodeView,
    provision: Option<ProvisionView>,
    heads: Vec<BodyHead>,
    anomalies: Vec<(String, u64)>,
    uptime_pct: Option<f64>,
}

/// `GET /api/v1/bodies` (admin or observer): one page of the matching bodies in id
/// order; the filters of `GET /api/v1/nodes` but `kind`, `status` and `as_of*`.
#[utoipa::path(
    get,
    path = "/api/v1/bodies",
    tag = "bodies",
    params(("district" = Option<String>, Query), ("venue" = Option<String>, Query), ("role" = Option<String>, Query), ("node_status" = Option<String>, Query, description = "online or offline"), ("limit" = Option<usize>, Query, description = "Bodies per page (default 500, at most 5000)"), ("after" = Option<String>, Query, description = "The X-Hydra-Next-After of the page before")),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "One page of the approved bodies: each node with its GPU figures, heads and anomalies", body = [BodyJson], headers(("X-Hydra-Next-After" = String, description = "The `after` of the next page, when there is one"))),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _: Reader,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let q = bodies_query(q)?;
    let (limit, after) = page::bounds(q.limit, q.after.as_deref())?;
    let now = now_ms();
    let (now_s, grace_s) = super::uptime::day_reading(&state);
    let (found, next): (Vec<Found>, _) = state.ledger.read(|v| {
        let (found, next) = page::page(&v.nodes, after.as_ref(), limit, |_, n| q.matches(n));
        // One pass over the heads for the whole page, not one per body.
        let mut heads: BTreeMap<&NodeId, Vec<BodyHead>> =
            found.iter().map(|(id, _)| (*id, Vec::new())).collect();
        for (head, h) in &v.heads {
            let Some(list) = h.assigned_body.as_ref().and_then(|b| heads.get_mut(b)) else { continue };
            let name = v.nodes.get(head).map(|n| n.name.clone());
            list.push(BodyHead { id: head.clone(), name, status: h.status.clone() });
        }
        let found = found
            .into_iter()
            .map(|(id, n)| Found {
                node: n.clone(),
                provision: v.provision.get(id).cloned(),
                heads: heads.remove(id).unwrap_or_default(),
                anomalies: v
                    .anomalies
                    .get(id)
                    .into_iter()
                    .flatten()
                    .map(|(kind, since)| (kind.clone(), *since))
                    .collect(),
                uptime_pct: super::uptime::day_pct(v, id, now_s, grace_s),
            })
            .collect();
        (found, next)
    });
    let out: Vec<BodyJson> = found
        .into_iter()
        .map(|f| {
            let live = state.liveness.get(&f.node.id);
            let watchdog = watchdog_s(live.as_ref());
            let node = node_json(&f.node, f.provision.as_ref(), live, f.uptime_pct);
            let t = node.telemetry.as_ref();
            BodyJson {
                gpu_utilization_pct: figure(t, "gpu_utilization_pct"),
                gpu_memory_used_mb: figure(t, "gpu_memory_used_mb"),
                stream_count: figure(t, "stream_count"),
                gpu_mismatch_sec: figure(t, "gpu_mismatch_sec"),
                node,
                heads: f.heads,
                anomalies: f
                    .anomalies
                    .iter()
                    .map(|(kind, since)| anomaly_json(kind, *since, now, watchdog))
                    .collect(),
            }
        })
        .collect();
    Ok(page::answer(out, next))
}
