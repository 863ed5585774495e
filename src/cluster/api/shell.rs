//! The WebSocket shell (`exec --shell`): a PTY on the node, relayed by the server with
//! no queue. The admin opens `GET /api/v1/nodes/{id}/shell` (a WebSocket); the node's
//! agent learns of the session from `GET /api/v1/body/shell/check` (a long poll) and
//! attaches with `GET /api/v1/body/shell/{session}` (a WebSocket); this side relays
//! the two until either closes.
//!
//! Binary frames are terminal bytes; text frames are JSON control messages:
//! `{"resize":{"cols","rows"}}` towards the agent, `{"exit":N}` towards the admin.
//! The log records that a shell was opened and closed (`shell.opened`,
//! `shell.closed`), never what went through it.

use super::{Admin, ApiError, AppState, NodeCaller, OnNode};
use crate::cluster::shell::{AttachError, Offer, Shells};
use crate::service::ApiPath;
use crate::service::ApiQuery;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use hydra_core::auth::{random_hex, Principal};
use hydra_core::ledger::Decision;
use hydra_events::{Event, NodeId};
use hydra_projections::NodeStatus;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The longest an agent's long poll may wait.
const MAX_WAIT_S: u64 = 60;
/// The largest terminal accepted, either way.
const MAX_SIDE: u16 = 1000;
/// What the admin sends before the agent attaches is kept (up to this) and replayed.
const EARLY_INPUT_CAP: usize = 64 * 1024;

/// The registry as the API uses it: sessions hand over the agent's socket.
pub type ShellRegistry = Shells<WebSocket>;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OpenQuery {
    command: Option<String>,
    cols: Option<u16>,
    rows: Option<u16>,
}

/// `{"resize":{"cols":N,"rows":N}}`, the only message an admin may send as text.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    resize: Size,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Size {
    cols: u16,
    rows: u16,
}

/// `{"exit":N}`, the only text an agent sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Exit {
    exit: i32,
}

fn side(v: Option<u16>, default: u16, name: &str) -> Result<u16, ApiError> {
    match v {
        None => Ok(default),
        Some(n) if (1..=MAX_SIDE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!("{name}={n} is not valid: give 1 to {MAX_SIDE}"))),
    }
}

/// A close frame; the protocol allows 123 bytes of reason, so longer ones are cut.
fn close(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame { code, reason: reason[..end].into() }))
}

/// `GET /api/v1/nodes/{id}/shell?command=&cols=&rows=` (admin, WebSocket).
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{id}/shell",
    tag = "shell",
    params(super::openapi::NodePath, OpenQuery),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 101, description = "WebSocket: binary frames are the terminal, text frames are control messages"),
        (status = 409, description = "The node is not approved", body = crate::service::openapi::ErrorBody),
        (status = 413, description = "The command is longer than exec_max_command_bytes", body = crate::service::openapi::ErrorBody),
        (status = 426, description = "Not a WebSocket request: connect with a WebSocket client", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn open(
    State(state): State<AppState>,
    OnNode(Admin(admin), node): OnNode<Admin>,
    ApiQuery(q): ApiQuery<OpenQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (cols, rows) = (side(q.cols, 80, "cols")?, side(q.rows, 24, "rows")?);
    let command = match q.command {
        Some(c) if c.trim().is_empty() => return Err(ApiError::bad_request("command is empty")),
        Some(c) if c.len() > state.config.exec_max_command_bytes => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "command is {} bytes; the limit is {} bytes",
                    c.len(),
                    state.config.exec_max_command_bytes
                ),
            ))
        }
        other => other,
    };
    state.ledger.read(|v| match v.nodes.get(&node).map(|n| n.status) {
        None => Err(ApiError::not_found(format!("no node {node}"))),
        Some(NodeStatus::Approved) => Ok(()),
        Some(other) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("node {node} is {}: only approved nodes get a shell", other.as_str()),
        )),
    })?;
    let ws = ws.map_err(|e| {
        ApiError::new(e.status(), format!("{}; connect with a WebSocket client", e.body_text()))
    })?;
    let offer = Offer { id: format!("shell-{}", random_hex()), command, cols, rows };
    Ok(ws.on_upgrade(move |socket| admin_side(state, admin, node, offer, socket)))
}

/// Forgets the session however the admin's side ends (even dropped at shutdown).
struct Forget(Arc<ShellRegistry>, String);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.forget(&self.1);
    }
}

/// How waiting for the agent ended, when it did not attach.
enum NotAttached {
    Timeout,
    AdminLeft,
    Stopping,
}

async fn admin_side(state: AppState, admin: Principal, node: NodeId, offer: Offer, mut cli: WebSocket) {
    let session = offer.id.clone();
    let command = offer.command.clone();
    let timeout = state.config.shell_attach_timeout;
    let mut attached = state.shells.open(node.clone(), offer);
    let forget = Forget(state.shells.clone(), session.clone());
    let mut stopping = state.stopping.clone();
    tracing::info!(session = %session, node = %node, "shell session waiting for the agent");

    // Whatever the admin types before the agent is there goes through afterwards; the
    // socket is read meanwhile so that an admin who leaves is noticed at once.
    let mut early: Vec<Message> = Vec::new();
    let mut early_bytes = 0usize;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let waited = loop {
        tokio::select! {
            agent = &mut attached => break agent.map_err(|_| NotAttached::AdminLeft),
            _ = &mut deadline => break Err(NotAttached::Timeout),
            _ = stopping.wait_for(|s| *s) => break Err(NotAttached::Stopping),
            msg = cli.recv() => match msg {
                Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => {
                    early_bytes += match &m {
                        Message::Binary(b) => b.len(),
                        Message::Text(t) => t.len(),
                        _ => 0,
                    };
                    if early_bytes <= EARLY_INPUT_CAP {
                        early.push(m);
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => break Err(NotAttached::AdminLeft),
            },
        }
    };
    let agent = match waited {
        Ok(agent) => agent,
        Err(why) => {
            let reason = match why {
                NotAttached::Timeout => {
                    tracing::warn!(session = %session, node = %node, "the agent did not attach in time");
                    format!(
                        "the agent did not attach within {}; is it running?",
                        humantime::format_duration(Duration::from_secs(timeout.as_secs().max(1)))
                    )
                }
                NotAttached::AdminLeft => return,
                NotAttached::Stopping => "the server is stopping".into(),
            };
            let _ = cli.send(close(close_code::ERROR, &reason)).await;
            return;
        }
    };

    let opened = Event::ShellOpened { session_id: session.clone(), node_id: node.clone(), command };
    if let Err(e) = state.ledger.submit(admin.cause(), move |_| Ok(Decision::events(vec![opened]))).await {
        // No shell without its record in the log.
        tracing::error!(session = %session, error = %e, "cannot record the shell; refusing it");
        let reason = "the event log is unavailable; try again";
        let mut agent = agent;
        let _ = agent.send(close(close_code::ERROR, reason)).await;
        let _ = cli.send(close(close_code::ERROR, reason)).await;
        return;
    }
    tracing::info!(session = %session, node = %node, "shell session attached");
    let exit_code = relay(cli, agent, early, stopping).await;
    drop(forget);
    tracing::info!(session = %session, node = %node, exit_code = ?exit_code, "shell session ended");
    let closed = Event::ShellClosed { session_id: session.clone(), node_id: node, exit_code };
    if let Err(e) = state.ledger.submit(admin.cause(), move |_| Ok(Decision::events(vec![closed]))).await {
        tracing::warn!(session = %session, error = %e, "cannot record the end of the shell");
    }
}

/// How a relay ended.
enum End {
    AdminClosed,
    AdminLost,
    AgentClosed(Option<CloseFrame>),
    AgentLost,
    Stopping,
}

/// Relays the two sockets until either side closes (or the server stops); returns the
/// exit code the agent reported, if any.
async fn relay(
    cli: WebSocket,
    agent: WebSocket,
    early: Vec<Message>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Option<i32> {
    let (mut cli_tx, mut cli_rx) = cli.split();
    let (mut agent_tx, mut agent_rx) = agent.split();
    let mut exit_code = None;
    let end = {
        let up = async {
            for m in early {
                if let Some(m) = towards_agent(m) {
                    if agent_tx.send(m).await.is_err() {
                        return End::AgentLost;
                    }
                }
            }
            loop {
                let m = match cli_rx.next().await {
                    Some(Ok(Message::Close(_))) => return End::AdminClosed,
                    Some(Err(_)) | None => return End::AdminLost,
                    Some(Ok(m)) => m,
                };
                if let Some(m) = towards_agent(m) {
                    if agent_tx.send(m).await.is_err() {
                        return End::AgentLost;
                    }
                }
            }
        };
        let down = async {
            loop {
                let m = match agent_rx.next().await {
                    Some(Ok(Message::Close(frame))) => return End::AgentClosed(frame),
                    Some(Err(_)) | None => return End::AgentLost,
                    Some(Ok(m)) => m,
                };
                let m = match m {
                    Message::Binary(b) => Message::Binary(b),
                    Message::Text(t) => match serde_json::from_str::<Exit>(&t) {
                        Ok(e) => {
                            exit_code = Some(e.exit);
                            Message::Text(t)
                        }
                        Err(_) => continue,
                    },
                    _ => continue,
                };
                if cli_tx.send(m).await.is_err() {
                    return End::AdminLost;
                }
            }
        };
        tokio::select! {
            e = up => e,
            e = down => e,
            _ = stopping.wait_for(|s| *s) => End::Stopping,
        }
    };
    // Tell the side still there why it ends.
    match end {
        End::AdminClosed | End::AdminLost => {
            let _ = agent_tx.send(close(close_code::NORMAL, "the admin closed the shell")).await;
        }
        End::AgentClosed(frame) => {
            let frame = frame.unwrap_or(CloseFrame { code: close_code::NORMAL, reason: "".into() });
            let _ = cli_tx.send(Message::Close(Some(frame))).await;
        }
        End::AgentLost => {
            let _ = cli_tx.send(close(close_code::ERROR, "lost the connection to the agent")).await;
        }
        End::Stopping => {
            let _ = agent_tx.send(close(close_code::AWAY, "the server is stopping")).await;
            let _ = cli_tx.send(close(close_code::AWAY, "the server is stopping")).await;
        }
    }
    exit_code
}

/// What of the admin's messages goes to the agent: terminal bytes, and resize
/// messages that parse (re-encoded, so the agent sees only that shape).
fn towards_agent(m: Message) -> Option<Message> {
    match m {
        Message::Binary(b) => Some(Message::Binary(b)),
        Message::Text(t) => match serde_json::from_str::<Control>(&t) {
            Ok(c) if (1..=MAX_SIDE).contains(&c.resize.cols) && (1..=MAX_SIDE).contains(&c.resize.rows) => {
                serde_json::to_string(&c).ok().map(|s| Message::Text(s.into()))
            }
            _ => None,
        },
        _ => None,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Seconds to wait for a session (long-poll).
    #[serde(default)]
    #[param(required = false, maximum = 60)]
    wait: u64,
}

/// `GET /api/v1/body/shell/check?wait=N` (node token): a session waiting for this
/// node, or 204 after the wait. Answers the moment a session is opened.
#[utoipa::path(
    get,
    path = "/api/v1/body/shell/check",
    tag = "agent",
    params(WaitQuery),
    security(("node" = [])),
    responses(
        (status = 200, description = "A session waits", body = ShellOffer),
        (status = 204, description = "No session within the wait"),
    )
)]
pub async fn check(
    State(state): State<AppState>,
    NodeCaller(node): NodeCaller,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(MAX_WAIT_S));
    let waker = state.shells.waker(&node);
    let mut stopping = state.stopping.clone();
    let mut parked = None;
    loop {
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(o) = state.shells.next_offer(&node) {
            let body = ShellOffer { session: o.id, command: o.command, cols: o.cols, rows: o.rows };
            return Ok(Json(body).into_response());
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        parked.get_or_insert_with(|| state.waiters.park());
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
            // A stopping server answers at once rather than hold its shutdown.
            _ = stopping.wait_for(|s| *s) => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

/// A shell session waiting for the agent to attach.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShellOffer {
    /// `shell-<16 hex>`: the session to attach to (`/api/v1/body/shell/{session}`).
    session: String,
    /// The command to run; null for an interactive login shell.
    command: Option<String>,
    cols: u16,
    rows: u16,
}

/// `GET /api/v1/body/shell/{session}` (node token, WebSocket): the agent's side of a
/// session, handed over to the admin's side, which relays.
#[utoipa::path(
    get,
    path = "/api/v1/body/shell/{session}",
    tag = "agent",
    params(("session" = String, Path, description = "The session id the check gave")),
    security(("node" = [])),
    responses(
        (status = 101, description = "WebSocket: binary frames are the terminal, text frames are control messages"),
        (status = 426, description = "Not a WebSocket request: connect with a WebSocket client", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn attach(
    State(state): State<AppState>,
    NodeCaller(node): NodeCaller,
    ApiPath(session): ApiPath<String>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let refused = |e: AttachError| match e {
        AttachError::Unknown => {
            ApiError::not_found(format!("no shell session {session} (over or timed out)"))
        }
        AttachError::OtherNode => {
            ApiError::new(StatusCode::FORBIDDEN, "this shell session is another node's")
        }
        AttachError::Taken => {
            ApiError::new(StatusCode::CONFLICT, "an agent is attached to this session already")
        }
    };
    // Checked before the upgrade, and taken only for a real WebSocket, so that a plain
    // GET cannot use the session up.
    state.shells.check(&node, &session).map_err(refused)?;
    let ws = ws.map_err(|e| {
        ApiError::new(e.status(), format!("{}; connect with a WebSocket client", e.body_text()))
    })?;
    let tx = state.shells.attach(&node, &session).map_err(refused)?;
    Ok(ws.on_upgrade(move |socket| async move {
        if let Err(mut socket) = tx.send(socket) {
            // The admin left (or gave up waiting) in between.
            let _ = socket.send(close(close_code::NORMAL, "the shell session is over")).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_resize_messages_reach_the_agent() {
        let text = |s: &str| Message::Text(s.into());
        let ok = towards_agent(text(r#"{"resize":{"cols":120,"rows":40}}"#));
        assert!(matches!(ok, Some(Message::Text(t)) if t.as_str() == r#"{"resize":{"cols":120,"rows":40}}"#));
        for bad in
            [r#"{"resize":{"cols":0,"rows":40}}"#, r#"{"exit":0}"#, "hello", r#"{"resize":{"cols":5}}"#]
        {
            assert!(towards_agent(text(bad)).is_none(), "{bad}");
        }
        assert!(matches!(towards_agent(Message::Binary(vec![1u8, 2].into())), Some(Message::Binary(_))));
    }

    #[test]
    fn close_reasons_are_cut_to_the_protocol_limit() {
        let Message::Close(Some(f)) = close(1000, &"é".repeat(100)) else { panic!() };
        assert!(f.reason.len() <= 123);
        assert!(f.reason.chars().all(|c| c == 'é'));
    }
}
