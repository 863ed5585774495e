//! Stream endpoints: an admin's force-stop of a body's stream (through the exec queue)
//! and the list of open body anomalies.

use super::bodies::{anomaly_json, watchdog_s, AnomalyJson};
use super::remote::{self, Outcome};
use super::{Admin, ApiError, AppState, OnNode, Reader};
use crate::cluster::streams;
use axum::extract::State;
use axum::Json;
use hydra_core::ledger::now_ms;
use hydra_events::NodeId;
use hydra_projections::{ExecStatus, NodeKind, NodeStatus};
use serde::Serialize;

/// `DELETE /api/v1/nodes/{id}/stream`: runs the stop command on the body and waits for
/// it (at most `stream_stop_timeout`), then clears the stream state whatever the body
/// said: `stream.stopped` records how it answered. The command is cancelled when the
/// body does not answer in time, so it cannot stop a later stream by running late.
#[utoipa::path(
    delete,
    path = "/api/v1/nodes/{id}/stream",
    tag = "streams",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "How the body answered the stop", body = StopJson),
    )
)]
pub async fn stop(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
) -> Result<Json<StopJson>, ApiError> {
    let (kind, status) = state
        .ledger
        .read(|v| v.nodes.get(&id).map(|n| (n.kind, n.status)))
        .ok_or_else(|| ApiError::not_found(format!("no node {id}")))?;
    if kind != NodeKind::Body {
        return Err(ApiError::bad_request(format!("node {id} is a head; only bodies stream")));
    }
    if status != NodeStatus::Approved {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            format!("node {id} is {}; it has no stream to stop", status.as_str()),
        ));
    }
    let command = state.config.stream_stop_command.clone();
    let outcome = remote::run(&state, admin.cause(), &id, command, state.config.stream_stop_timeout).await?;
    let (exec, output, reason) = match outcome {
        Outcome::Completed(o) => {
            let said = if o.stderr.is_empty() { o.stdout } else { format!("{}{}", o.stdout, o.stderr) };
            let exec = if o.exit_code == Some(0) { "exec succeeded" } else { "exec failed" };
            (exec, Some(said), None)
        }
        Outcome::Ended(r) => {
            let exec = if r.status == ExecStatus::TimedOut { "timed out" } else { "exec failed" };
            (exec, None, r.reason.or_else(|| Some(r.status.as_str().to_owned())))
        }
        Outcome::NoAnswer => ("timed out", None, Some("the body did not answer in time".to_owned())),
    };
    state.ledger.submit(admin.cause(), streams::stopped(id.clone(), exec.to_owned())).await?;
    Ok(Json(StopJson { status: "ok", node_id: id, exec, output, reason }))
}

/// How the body answered a force-stop.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StopJson {
    /// Always `ok`: the stream state is cleared whatever the body said.
    status: &'static str,
    #[schema(value_type = String)]
    node_id: NodeId,
    /// `exec succeeded`, `exec failed` or `timed out`.
    exec: &'static str,
    /// What the stop command printed (stdout then stderr); null when it did not end.
    output: Option<String>,
    /// Why the command did not complete; absent when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `GET /api/v1/body-anomalies`: every open anomaly, a top-level array (the runbook's
/// jq reads `.[] | select(.body_name==… and .type==…)`), with since when it has lasted.
#[utoipa::path(
    get,
    path = "/api/v1/body-anomalies",
    tag = "streams",
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "Every open anomaly", body = [BodyAnomalyJson]),
    )
)]
pub async fn anomalies(State(state): State<AppState>, _: Reader) -> Json<Vec<BodyAnomalyJson>> {
    let now = now_ms();
    let open: Vec<Open> = state.ledger.read(|v| {
        v.anomalies
            .iter()
            .flat_map(|(node, kinds)| {
                let n = v.nodes.get(node).map(|n| (n.name.clone(), n.district.clone(), n.venue.clone()));
                kinds.iter().map(move |(kind, since)| (node.clone(), n.clone(), kind.clone(), *since))
            })
            .collect()
    });
    // The watchdog limits come from the volatile telemetry, read outside the views' lock.
    Json(
        open.into_iter()
            .map(|(node, n, kind, since)| {
                let anomaly = anomaly_json(&kind, since, now, watchdog_s(state.liveness.get(&node).as_ref()));
                let (body_name, district, venue) = match n {
                    Some((name, district, venue)) => (Some(name), Some(district), Some(venue)),
                    None => (None, None, None),
                };
                BodyAnomalyJson { node_id: node, body_name, district, venue, anomaly }
            })
            .collect(),
    )
}

/// An open anomaly as read from the views: the node, its name, district and venue
/// (none once the node is gone), the anomaly's type and since when (unix ms).
type Open = (NodeId, Option<(String, String, String)>, String, u64);

/// An open anomaly with the body it is on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BodyAnomalyJson {
    #[schema(value_type = String)]
    node_id: NodeId,
    /// The body's name, district and venue; null when its node is gone.
    body_name: Option<String>,
    district: Option<String>,
    venue: Option<String>,
    #[serde(flatten)]
    anomaly: AnomalyJson,
}
