//! Exec endpoints. Admin: queue a command, poll its result, list the queue, cancel
//! one or clear all. Agent (node token): long-poll the next command, watch the one in
//! flight (to learn of a cancel or a server-side timeout), post the result.

use super::events::read_envelopes;
use super::extract::node_id;
use super::{Admin, ApiError, ApiJson, AppState, NodeCaller, OnNode};
use crate::cluster::exec::{self, ExecRequest};
use crate::service::config::{millis, parse_duration};
use crate::service::ApiPath;
use crate::service::ApiQuery;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hydra_core::auth::random_hex;
use hydra_core::envelope::rfc3339;
use hydra_core::ledger::now_ms;
use hydra_events::{Event, ExecId, ExecOutput, NodeId, OutputRef};
use hydra_projections::{ExecRecord, ExecStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use utoipa::ToSchema;

/// The longest an agent's long-poll may wait.
const MAX_WAIT_S: u64 = 60;
const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = ExecRequest)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    command: String,
    /// `"60s"`, `"5m"` or a number of seconds.
    #[schema(value_type = Option<Object>)]
    timeout: Option<Value>,
    #[serde(default)]
    retry_on_disconnect: bool,
}

/// `POST /api/v1/nodes/{id}/exec`'s answer: the command is queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    #[schema(value_type = String)]
    id: ExecId,
    #[schema(value_type = String)]
    node_id: NodeId,
    /// `pending`.
    status: &'static str,
    /// `online` or `offline`.
    node_status: &'static str,
    /// Commands before it (the one in flight counted).
    ahead: usize,
    /// When it expires if the node has not taken it (RFC 3339).
    deliver_by: String,
    /// Said when the node is offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// A finished command (`GET …/exec/{exec}/result`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Finished {
    #[schema(value_type = String)]
    id: ExecId,
    #[schema(value_type = String)]
    node_id: NodeId,
    /// `completed`, `failed`, `timed_out`, `cancelled`, `expired`…
    status: &'static str,
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
    truncated: bool,
    duration_ms: Option<u64>,
    reason: Option<String>,
    finished_at: Option<String>,
    /// The output was removed by retention (`exec_output_retention`).
    output_pruned: bool,
}

/// A command not finished yet (`GET …/exec/{exec}/result`, 202).
#[derive(Debug, Serialize, ToSchema)]
pub struct Unfinished {
    #[schema(value_type = String)]
    id: ExecId,
    /// `pending` or `dispatched`.
    status: &'static str,
    attempts: u32,
}

/// A queued or in-flight command as the queue shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedCommand {
    #[schema(value_type = String)]
    id: ExecId,
    #[schema(value_type = String)]
    node_id: NodeId,
    status: &'static str,
    command: String,
    timeout_ms: u64,
    retry_on_disconnect: bool,
    queued_at: String,
    dispatched_at: Option<String>,
    attempts: u32,
    deliver_by: String,
}

/// `GET /api/v1/nodes/{id}/exec/queue`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecQueue {
    #[schema(value_type = String)]
    node_id: NodeId,
    in_flight: Option<QueuedCommand>,
    queued: Vec<QueuedCommand>,
}

/// The next command an agent runs (`GET /api/v1/body/exec`).
#[derive(Debug, Serialize, ToSchema)]
pub struct NextCommand {
    #[schema(value_type = String)]
    id: ExecId,
    command: String,
    timeout_ms: u64,
}

/// `DELETE …/exec/queue/{exec}`: one command cancelled.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    #[schema(value_type = String)]
    id: ExecId,
    /// `cancelled`.
    status: &'static str,
    /// `pending` or `dispatched`: where it was when cancelled.
    was: &'static str,
}

/// `DELETE …/exec/queue`: the queued commands cancelled.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    #[schema(value_type = String)]
    node_id: NodeId,
    cancelled: usize,
    /// The command in flight, which keeps running.
    #[schema(value_type = Option<String>)]
    in_flight: Option<ExecId>,
}

/// `GET /api/v1/body/exec/{exec}/watch`: the command's status now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Watched {
    #[schema(value_type = String)]
    id: ExecId,
    status: &'static str,
}

fn timeout_ms(v: Option<&Value>) -> Result<u64, ApiError> {
    let bad = |what: String| {
        ApiError::bad_request(format!("timeout {what} is not valid: give 1s to 24h, like \"60s\" or 60"))
    };
    let ms = match v {
        None | Some(Value::Null) => 60_000,
        Some(Value::Number(n)) => {
            let secs = n.as_f64().filter(|s| s.is_finite()).ok_or_else(|| bad(n.to_string()))?;
            if secs <= 0.0 || secs * 1000.0 > MAX_TIMEOUT_MS as f64 {
                return Err(bad(n.to_string()));
            }
            (secs * 1000.0) as u64
        }
        Some(Value::String(s)) => millis(parse_duration(s).map_err(|_| bad(format!("{s:?}")))?),
        Some(other) => return Err(bad(other.to_string())),
    };
    if !(1000..=MAX_TIMEOUT_MS).contains(&ms) {
        return Err(bad(format!("{ms} ms")));
    }
    Ok(ms)
}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/{id}/exec",
    tag = "exec",
    params(super::openapi::NodePath),
    request_body = SubmitBody,
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 202, description = "Queued", body = Queued),
    )
)]
pub async fn submit(
    State(state): State<AppState>,
    OnNode(Admin(admin), node): OnNode<Admin>,
    ApiJson(body): ApiJson<SubmitBody>,
) -> Result<Response, ApiError> {
    if body.command.trim().is_empty() {
        return Err(ApiError::bad_request("command is empty"));
    }
    if body.command.len() > state.config.exec_max_command_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "command is {} bytes; the limit is {} bytes",
                body.command.len(),
                state.config.exec_max_command_bytes
            ),
        ));
    }
    let timeout_ms = timeout_ms(body.timeout.as_ref())?;
    let exec_id = ExecId::from_random_hex(&random_hex());
    let deliver_by_ms = now_ms().saturating_add(millis(state.config.exec_delivery_deadline));
    let req = ExecRequest {
        command: body.command,
        timeout_ms,
        retry_on_disconnect: body.retry_on_disconnect,
        deliver_by_ms,
    };
    state.ledger.submit(admin.cause(), exec::queue(exec_id.clone(), node.clone(), req)).await?;
    let (online, position) = state.ledger.read(|v| {
        let online = v.nodes.get(&node).is_some_and(|n| n.online);
        let n = v.exec.node(&node);
        let position =
            n.map(|n| n.queue.iter().position(|x| x == &exec_id).unwrap_or(0) + n.in_flight.iter().count());
        (online, position.unwrap_or(0))
    });
    let answer = Queued {
        id: exec_id,
        node_id: node,
        status: "pending",
        node_status: if online { "online" } else { "offline" },
        ahead: position,
        deliver_by: rfc3339(deliver_by_ms),
        note: (!online).then(|| {
            format!(
                "node is offline: the command is queued and runs when it is back, or expires at {}",
                rfc3339(deliver_by_ms)
            )
        }),
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

fn exec_id(raw: &str) -> Result<ExecId, ApiError> {
    ExecId::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn record(state: &AppState, node: &NodeId, id: &ExecId) -> Result<ExecRecord, ApiError> {
    state.ledger.read(|v| {
        if !v.nodes.contains_key(node) {
            return Err(ApiError::not_found(format!("no node {node}")));
        }
        v.exec
            .get(id)
            .filter(|r| &r.node_id == node)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no command {id} on node {node}")))
    })
}

fn record_json(r: &ExecRecord) -> QueuedCommand {
    QueuedCommand {
        id: r.id.clone(),
        node_id: r.node_id.clone(),
        status: r.status.as_str(),
        command: r.command.clone(),
        timeout_ms: r.timeout_ms,
        retry_on_disconnect: r.retry_on_disconnect,
        queued_at: rfc3339(r.queued_at_ms),
        dispatched_at: r.dispatched_at_ms.map(rfc3339),
        attempts: r.attempts,
        deliver_by: rfc3339(r.deliver_by_ms),
    }
}

/// What a finished command printed: from the event that ended it, its output read
/// from the output store (or, for a record older than schema 3, from the record).
pub(super) struct Ended {
    pub output: ExecOutput,
    /// Where the output is stored (the server's own fetches drop it once answered).
    pub refs: [OutputRef; 2],
    /// Retention dropped some of the output: what is missing reads as empty.
    pub pruned: bool,
}

/// The output of a finished command, read from the event that ended it and the
/// output store.
pub(super) async fn ended_output(state: &AppState, r: &ExecRecord) -> Result<Option<Ended>, ApiError> {
    let Some(seq) = r.end_seq else { return Ok(None) };
    let store = state.ledger.store().clone();
    tokio::task::spawn_blocking(move || {
        let envelope = read_envelopes(&store, seq, seq)?.into_iter().next();
        let result = envelope.and_then(|e| match e.event {
            Event::ExecCompleted { output, .. } => Some(output),
            Event::ExecTimedOut { output, .. } => output,
            _ => None,
        });
        let Some(result) = result else { return Ok(None) };
        let mut pruned = false;
        let mut read = |r: &OutputRef| -> Result<String, ApiError> {
            if r.size == 0 {
                return Ok(String::new());
            }
            match store.output(&r.hash)? {
                Some(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
                None => {
                    pruned = true;
                    Ok(String::new())
                }
            }
        };
        let (stdout, stderr) = match &result.inline {
            Some(inline) => (inline.stdout.clone(), inline.stderr.clone()),
            None => (read(&result.stdout)?, read(&result.stderr)?),
        };
        let output = ExecOutput {
            exit_code: result.exit_code,
            stdout,
            stderr,
            truncated: result.truncated,
            duration_ms: result.duration_ms,
        };
        Ok(Some(Ended { output, refs: [result.stdout, result.stderr], pruned }))
    })
    .await
    .map_err(ApiError::internal)?
}

/// `GET …/exec/{execId}/result[?wait=N]`: the result (200) or the state so far (202).
/// With `wait`, it answers the moment the command ends (at most N seconds), so a
/// caller needs one request instead of a polling loop.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{id}/exec/{exec}/result",
    tag = "exec",
    params(super::openapi::NodePath, super::openapi::ExecPath, WaitQuery),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "Finished: status, exit code, output", body = Finished),
        (status = 202, description = "Not finished yet", body = Unfinished),
    )
)]
pub async fn result(
    State(state): State<AppState>,
    _: Admin,
    ApiPath((id, exec)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Response, ApiError> {
    let (node, exec) = (node_id(&id)?, exec_id(&exec)?);
    let finished = long_poll(&state, &node, q.wait, || {
        let r = record(&state, &node, &exec);
        async move {
            let r = r?;
            Ok(r.status.is_finished().then_some(r))
        }
    })
    .await?;
    let Some(r) = finished else {
        let r = record(&state, &node, &exec)?;
        let body = Unfinished { id: r.id, status: r.status.as_str(), attempts: r.attempts };
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    };
    let ended = ended_output(&state, &r).await?;
    let pruned = ended.as_ref().is_some_and(|e| e.pruned);
    let output = ended.map(|e| e.output);
    let duration = output
        .as_ref()
        .map(|o| o.duration_ms)
        .or_else(|| r.dispatched_at_ms.zip(r.finished_at_ms).map(|(a, b)| b.saturating_sub(a)));
    let o = output.unwrap_or(ExecOutput {
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        truncated: false,
        duration_ms: 0,
    });
    let body = Finished {
        id: r.id,
        node_id: r.node_id,
        status: r.status.as_str(),
        exit_code: o.exit_code,
        stdout: o.stdout,
        stderr: o.stderr,
        truncated: o.truncated,
        duration_ms: duration,
        reason: r.reason,
        finished_at: r.finished_at_ms.map(rfc3339),
        output_pruned: pruned,
    };
    Ok(Json(body).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/nodes/{id}/exec/queue",
    tag = "exec",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The queue and the command in flight", body = ExecQueue),
    )
)]
pub async fn queue(
    State(state): State<AppState>,
    OnNode(_, node): OnNode<Admin>,
) -> Result<Json<ExecQueue>, ApiError> {
    state.ledger.read(|v| {
        if !v.nodes.contains_key(&node) {
            return Err(ApiError::not_found(format!("no node {node}")));
        }
        let n = v.exec.node(&node);
        let in_flight = v.exec.in_flight(&node).map(record_json);
        let queued: Vec<QueuedCommand> = n
            .map(|n| n.queue.iter().filter_map(|x| v.exec.get(x)).map(record_json).collect())
            .unwrap_or_default();
        Ok(Json(ExecQueue { node_id: node.clone(), in_flight, queued }))
    })
}

#[utoipa::path(
    delete,
    path = "/api/v1/nodes/{id}/exec/queue/{exec}",
    tag = "exec",
    params(super::openapi::NodePath, super::openapi::ExecPath),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "Cancelled", body = Cancelled),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath((id, exec)): ApiPath<(String, String)>,
) -> Result<Json<Cancelled>, ApiError> {
    let (node, exec) = (node_id(&id)?, exec_id(&exec)?);
    let envelopes = state.ledger.submit(admin.cause(), exec::cancel(node, exec.clone())).await?;
    let was = match envelopes.first().map(|e| &e.event) {
        Some(Event::ExecCancelled { was_dispatched: true, .. }) => "dispatched",
        _ => "pending",
    };
    Ok(Json(Cancelled { id: exec, status: "cancelled", was }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/nodes/{id}/exec/queue",
    tag = "exec",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The queue cleared (the command in flight keeps running)", body = Cleared),
    )
)]
pub async fn clear(
    State(state): State<AppState>,
    OnNode(Admin(admin), node): OnNode<Admin>,
) -> Result<Json<Cleared>, ApiError> {
    let envelopes = state.ledger.submit(admin.cause(), exec::clear(node.clone())).await?;
    let in_flight = state.ledger.read(|v| v.exec.in_flight(&node).map(|r| r.id.clone()));
    Ok(Json(Cleared { node_id: node, cancelled: envelopes.len(), in_flight }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Seconds to wait for an answer (long-poll; at most 60).
    #[serde(default)]
    #[param(required = false, maximum = 60)]
    wait: u64,
}

/// Runs `check` now and again each time an exec event about `node` is committed,
/// until it answers `Some`, `wait_s` seconds pass (at most `MAX_WAIT_S`) or the server
/// stops (a stopping server answers parked requests at once instead of waiting them
/// out). The wake-up is armed before each check, so no event can slip between.
pub(super) async fn long_poll<T, Fut>(
    state: &AppState,
    node: &NodeId,
    wait_s: u64,
    mut check: impl FnMut() -> Fut,
) -> Result<Option<T>, ApiError>
where
    Fut: std::future::Future<Output = Result<Option<T>, ApiError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_s.min(MAX_WAIT_S));
    // Held for the whole wait; the node's entry goes with the last waiter.
    let waiter = state.waiters.of(node);
    let mut stopping = state.stopping.clone();
    let mut parked = None;
    loop {
        let notified = waiter.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(found) = check().await? {
            return Ok(Some(found));
        }
        if tokio::time::Instant::now() >= deadline || *stopping.borrow() {
            return Ok(None);
        }
        parked.get_or_insert_with(|| state.waiters.park());
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
    }
}

/// `GET /api/v1/body/exec?wait=N`: the next command, or 204. With `wait`, it answers
/// the moment a command is queued for this node.
#[utoipa::path(
    get,
    path = "/api/v1/body/exec",
    tag = "agent",
    params(WaitQuery),
    security(("node" = [])),
    responses(
        (status = 200, description = "The next command", body = NextCommand),
        (status = 204, description = "Nothing to run within the wait"),
    )
)]
pub async fn next(
    State(state): State<AppState>,
    NodeCaller(node): NodeCaller,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Response, ApiError> {
    let asked_at_seq = state.ledger.committed_seq();
    let sent = long_poll(&state, &node, q.wait, || {
        let (state, node) = (state.clone(), node.clone());
        async move { dispatch_next(&state, &node, asked_at_seq).await }
    })
    .await?;
    Ok(match sent {
        Some(r) => {
            Json(NextCommand { id: r.id, command: r.command, timeout_ms: r.timeout_ms }).into_response()
        }
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Puts the node's next command in flight, if it has one.
async fn dispatch_next(
    state: &AppState,
    node: &NodeId,
    asked_at_seq: u64,
) -> Result<Option<ExecRecord>, ApiError> {
    let has_work = state
        .ledger
        .read(|v| v.exec.node(node).is_some_and(|n| !n.queue.is_empty() || n.in_flight.is_some()));
    if !has_work {
        return Ok(None);
    }
    let envelopes = state
        .ledger
        .submit(format!("node:{node}"), exec::dispatch(node.clone(), now_ms(), asked_at_seq))
        .await?;
    let sent = envelopes.iter().find_map(|e| match &e.event {
        Event::ExecDispatched { exec_id, .. } => Some(exec_id.clone()),
        _ => None,
    });
    let record = sent.and_then(|id| state.ledger.read(|v| v.exec.get(&id).cloned()));
    if let Some(r) = &record {
        let waited_ms = r.dispatched_at_ms.unwrap_or(r.queued_at_ms).saturating_sub(r.queued_at_ms);
        state.cluster_metrics.exec_dispatch_seconds.observe(waited_ms as f64 / 1000.0);
    }
    Ok(record)
}

/// `GET /api/v1/body/exec/{id}/watch?wait=N`: answers when the command in flight is
/// no longer in flight (cancelled, timed out by the server, …), or after the wait.
#[utoipa::path(
    get,
    path = "/api/v1/body/exec/{exec}/watch",
    tag = "agent",
    params(super::openapi::ExecPath, WaitQuery),
    security(("node" = [])),
    responses(
        (status = 200, description = "The command's status", body = Watched),
    )
)]
pub async fn watch(
    State(state): State<AppState>,
    NodeCaller(node): NodeCaller,
    ApiPath(exec): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Json<Watched>, ApiError> {
    let exec = exec_id(&exec)?;
    let status = || {
        state
            .ledger
            .read(|v| v.exec.get(&exec).filter(|r| r.node_id == node).map(|r| r.status))
            .ok_or_else(|| ApiError::not_found(format!("no command {exec} for this node")))
    };
    let ended = long_poll(&state, &node, q.wait, || {
        let s = status();
        async move {
            let s = s?;
            Ok((s != ExecStatus::Dispatched).then_some(s))
        }
    })
    .await?;
    let status = match ended {
        Some(s) => s,
        None => status()?,
    };
    Ok(Json(Watched { id: exec, status: status.as_str() }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = ExecResult)]
pub struct ResultBody {
    id: String,
    exit_code: Option<i32>,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
    #[serde(default)]
    duration_ms: u64,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    timed_out: bool,
}

/// Cuts `s` to at most `cap` bytes on a character boundary; true if it cut.
fn cap(s: &mut String, cap: usize) -> bool {
    if s.len() <= cap {
        return false;
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

#[utoipa::path(
    post,
    path = "/api/v1/body/exec/result",
    tag = "agent",
    request_body = ResultBody,
    security(("node" = [])),
    responses(
        (status = 200, description = "Recorded", body = ResultRecorded),
    )
)]
pub async fn post_result(
    State(state): State<AppState>,
    NodeCaller(node): NodeCaller,
    ApiJson(body): ApiJson<ResultBody>,
) -> Result<Json<ResultRecorded>, ApiError> {
    let exec = exec_id(&body.id)?;
    let limit = state.config.exec_output_cap;
    let (mut stdout, mut stderr) = (body.stdout, body.stderr);
    let cut = cap(&mut stdout, limit) | cap(&mut stderr, limit);
    let output = ExecOutput {
        exit_code: body.exit_code,
        stdout,
        stderr,
        truncated: body.truncated || cut,
        duration_ms: body.duration_ms,
    };
    let envelopes = state
        .ledger
        .submit(format!("node:{node}"), exec::result(node, exec.clone(), output, body.timed_out))
        .await?;
    let status = match envelopes.first().map(|e| &e.event) {
        Some(Event::ExecTimedOut { .. }) => "timed_out",
        _ => "completed",
    };
    Ok(Json(ResultRecorded { id: exec, status }))
}

/// A recorded exec result.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultRecorded {
    #[schema(value_type = String)]
    id: ExecId,
    /// `completed`, or `timed_out` when the agent said its command ran out of time.
    status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timeouts_accept_durations_and_seconds_within_bounds() {
        assert_eq!(timeout_ms(None).unwrap(), 60_000);
        assert_eq!(timeout_ms(Some(&json!("90s"))).unwrap(), 90_000);
        assert_eq!(timeout_ms(Some(&json!(5))).unwrap(), 5_000);
        for bad in
            [json!(0), json!(-3), json!("0s"), json!("forever"), json!(1e12), json!(true), json!("25h")]
        {
            assert!(timeout_ms(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn output_is_cut_on_a_character_boundary() {
        let mut s = "héllo".to_string();
        assert!(cap(&mut s, 2));
        assert_eq!(s, "h");
        let mut t = "ok".to_string();
        assert!(!cap(&mut t, 2));
    }
}
