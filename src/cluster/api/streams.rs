//! Stream endpoints: an admin's force-stop of a body's stream (through the exec queue)
//! and the list of open body anomalies.

use super::bodies::{anomaly_json, watchdog_s};
use super::remote::{self, Outcome};
use super::{Admin, ApiError, AppState, OnNode, Reader};
use crate::cluster::streams;
use axum::extract::State;
use axum::Json;
use hydra_core::ledger::now_ms;
use hydra_events::NodeId;
use hydra_projections::{ExecStatus, NodeKind, NodeStatus};
use serde_json::{json, Map, Value};

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
        (status = 200, description = "`{status, node_id, exec, output, reason?}`: how the body answered the stop", body = Object),
    )
)]
pub async fn stop(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
) -> Result<Json<Value>, ApiError> {
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
    let mut answer = json!({"status": "ok", "node_id": id, "exec": exec, "output": output});
    if let Some(reason) = reason {
        answer["reason"] = json!(reason);
    }
    Ok(Json(answer))
}

/// `GET /api/v1/body-anomalies`: every open anomaly, a top-level array (the runbook's
/// jq reads `.[] | select(.body_name==… and .type==…)`), with since when it has lasted.
#[utoipa::path(
    get,
    path = "/api/v1/body-anomalies",
    tag = "streams",
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "Every open anomaly", body = [Object]),
    )
)]
pub async fn anomalies(State(state): State<AppState>, _: Reader) -> Json<Vec<Map<String, Value>>> {
    let now = now_ms();
    let open: Vec<(NodeId, Map<String, Value>, String, u64)> = state.ledger.read(|v| {
        v.anomalies
            .iter()
            .flat_map(|(node, kinds)| {
                let n = v.nodes.get(node);
                kinds.iter().map(move |(kind, since)| {
                    let mut a = Map::new();
                    a.insert("node_id".into(), json!(node));
                    a.insert("body_name".into(), json!(n.map(|n| &n.name)));
                    a.insert("district".into(), json!(n.map(|n| &n.district)));
                    a.insert("venue".into(), json!(n.map(|n| &n.venue)));
                    (node.clone(), a, kind.clone(), *since)
                })
            })
            .collect()
    });
    // The watchdog limits come from the volatile telemetry, read outside the views' lock.
    Json(
        open.into_iter()
            .map(|(node, mut a, kind, since)| {
                a.extend(anomaly_json(&kind, since, now, watchdog_s(state.liveness.get(&node).as_ref())));
                a
            })
            .collect(),
    )
}
