//! Kiosk heads (SPEC §4): fleet enrollment, the QR payload, the list of heads, each
//! head's stream config and status report, and the admin's assignment and whitelist.

use super::callers::Fleet;
use super::extract::{node_id, principal};
use super::{limits, page, OnNode};
use super::{Admin, ApiError, ApiJson, AppState, NodeCaller, Reader};
use crate::cluster::heads::{self, HeadEnrollment};
use crate::cluster::Live;
use crate::service::ApiPath;
use crate::service::ApiQuery;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hydra_core::auth::{hash_token, new_token, random_hex, Principal};
use hydra_core::envelope::rfc3339;
use hydra_events::NodeId;
use hydra_projections::{HeadView, NodeStatus, NodeView, HEAD_STATUSES};
use serde::{Deserialize, Serialize};

const MAX_DETAIL_CHARS: usize = 512;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = HeadEnrollment)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    name: String,
    district: String,
    venue: String,
}

/// `POST /api/v1/heads`: a kiosk enrolls itself with the fleet token and is approved
/// at once. Its node token is shown once and stored only as a hash.
#[utoipa::path(
    post,
    path = "/api/v1/heads",
    tag = "heads",
    request_body = EnrollBody,
    security(("fleet" = [])),
    responses(
        (status = 201, description = "The new head and its token: the token is shown once", body = Enrolled),
    )
)]
pub async fn enroll(
    State(state): State<AppState>,
    _: Fleet,
    ApiJson(body): ApiJson<EnrollBody>,
) -> Result<impl IntoResponse, ApiError> {
    let enrollment = HeadEnrollment { name: body.name, district: body.district, venue: body.venue };
    let id = NodeId::from_random_hex(&random_hex());
    let token = new_token("hyn_");
    state.ledger.submit("fleet", heads::register(id.clone(), enrollment, hash_token(&token))).await?;
    let body = Enrolled { head_id: id, token, server_url: state.config.server_url.clone() };
    Ok((StatusCode::CREATED, Json(body)))
}

/// A head's enrollment: its id, its node token (shown once) and where to reach the server.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = HeadEnrolled)]
pub struct Enrolled {
    #[schema(value_type = String)]
    head_id: NodeId,
    /// The head's node token (`hyn_…`); only its hash is kept.
    token: String,
    server_url: String,
}

/// What the enrollment QR code encodes for the iPads.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnrollQr {
    server_url: String,
    /// The fleet enrollment token (`POST /api/v1/heads`).
    enrollment_token: String,
}

/// `GET /api/v1/enroll-qr`: what the enrollment QR code encodes for the iPads.
#[utoipa::path(
    get,
    path = "/api/v1/enroll-qr",
    tag = "heads",
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "What the enrollment QR code encodes", body = EnrollQr),
    )
)]
pub async fn enroll_qr(State(state): State<AppState>, _: Admin) -> Result<Json<EnrollQr>, ApiError> {
    let token =
        state.config.fleet_enrollment_token.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| {
            ApiError::not_found(
                "no fleet enrollment token is configured: set fleet_enrollment_token in the config \
             or HYDRACLUSTER_FLEET_ENROLLMENT_TOKEN",
            )
        })?;
    Ok(Json(EnrollQr { server_url: state.config.server_url.clone(), enrollment_token: token.to_owned() }))
}

/// A head as `GET /api/v1/heads` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeadJson {
    id: String,
    name: String,
    district: String,
    venue: String,
    /// `online` or `offline`.
    node_status: &'static str,
    /// RFC 3339; null when never seen.
    last_seen: Option<String>,
    /// The kiosk's own status: `idle`, `streaming` or `error`.
    status: String,
    /// What the kiosk said with its status; absent when it said nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    assigned_body_id: Option<String>,
    assigned_body_name: Option<String>,
    app_id: Option<String>,
    allowed_experiences: Vec<String>,
    /// The kiosk's last diagnostics, as it sent them (volatile); absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    diagnostics: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One head with what it needs from the views, read in one short lock.
struct Snapshot {
    node: NodeView,
    head: HeadView,
    body: Option<NodeView>,
}

fn snapshot(n: &NodeView, h: &HeadView, nodes: &std::collections::BTreeMap<NodeId, NodeView>) -> Snapshot {
    let body = h.assigned_body.as_ref().and_then(|b| nodes.get(b)).cloned();
    Snapshot { node: n.clone(), head: h.clone(), body }
}

fn head_json(s: Snapshot, live: Option<Live>) -> HeadJson {
    let live = live.unwrap_or_default();
    let last_seen_ms = live.last_seen_ms.max(s.node.last_seen_ms);
    HeadJson {
        id: s.node.id.to_string(),
        name: s.node.name,
        district: s.node.district,
        venue: s.node.venue,
        node_status: if s.node.online { "online" } else { "offline" },
        last_seen: (last_seen_ms > 0).then(|| rfc3339(last_seen_ms)),
        status: s.head.status,
        detail: s.head.detail,
        assigned_body_id: s.head.assigned_body.map(|b| b.to_string()),
        assigned_body_name: s.body.map(|b| b.name),
        app_id: s.head.app_id,
        allowed_experiences: s.head.allowed_experiences,
        diagnostics: live.diagnostics.filter(|d| !d.is_empty()),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /api/v1/heads`: one page of the heads in id order (admin or observer).
#[utoipa::path(
    get,
    path = "/api/v1/heads",
    tag = "heads",
    params(ListQuery),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "One page of the heads in id order", body = [HeadJson], headers(("X-Hydra-Next-After" = String, description = "The `after` of the next page, when there is one"))),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _: Reader,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let (limit, after) = page::bounds(q.limit, q.after.as_deref())?;
    let (heads, next): (Vec<Snapshot>, _) = state.ledger.read(|v| {
        let (found, next) = page::page(&v.heads, after.as_ref(), limit, |id, _| v.nodes.contains_key(id));
        (
            found
                .into_iter()
                .filter_map(|(id, h)| v.nodes.get(id).map(|n| snapshot(n, h, &v.nodes)))
                .collect(),
            next,
        )
    });
    let out: Vec<HeadJson> = heads
        .into_iter()
        .map(|s| {
            let live = state.liveness.get(&s.node.id);
            head_json(s, live)
        })
        .collect();
    Ok(page::answer(out, next))
}

fn find(state: &AppState, id: &NodeId) -> Result<Snapshot, ApiError> {
    state.ledger.read(|v| heads::head(v, id).map(|(n, h)| snapshot(n, h, &v.nodes))).map_err(ApiError::from)
}

/// The stream config a kiosk polls: where to stream from and what it may offer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = HeadConfig)]
pub struct ConfigJson {
    #[schema(value_type = String)]
    head_id: NodeId,
    district: String,
    venue: String,
    /// The assigned body's WireGuard address; null without a body or a tunnel.
    stream_url: Option<String>,
    /// The assigned body's LAN address; null without a body or an address.
    stream_url_lan: Option<String>,
    experience_library_url: Option<String>,
    allowed_experiences: Vec<String>,
    #[schema(value_type = Option<String>)]
    assigned_body_id: Option<NodeId>,
    assigned_body_name: Option<String>,
    app_id: Option<String>,
}

fn config_json(state: &AppState, s: &Snapshot) -> ConfigJson {
    let body = s.body.as_ref();
    ConfigJson {
        head_id: s.node.id.clone(),
        district: s.node.district.clone(),
        venue: s.node.venue.clone(),
        stream_url: body.and_then(|b| b.wireguard_ip.clone()),
        stream_url_lan: body.map(|b| b.ip.clone()).filter(|ip| !ip.is_empty()),
        experience_library_url: state.config.experience_library.url.clone(),
        allowed_experiences: s.head.allowed_experiences.clone(),
        assigned_body_id: s.head.assigned_body.clone(),
        assigned_body_name: body.map(|b| b.name.clone()),
        app_id: s.head.app_id.clone(),
    }
}

/// Admin, or the head itself; any other token is refused before the id is looked up,
/// so a head cannot learn which other nodes exist.
fn admin_or_self(parts: &Parts, state: &AppState, id: &NodeId) -> Result<(), ApiError> {
    match principal(parts, state)? {
        Principal::Admin { .. } => Ok(()),
        Principal::Node(caller) if &caller == id => {
            match state.ledger.read(|v| v.nodes.get(&caller).map(|n| n.status)) {
                None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid token")),
                Some(NodeStatus::Rejected) => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this node was rejected by an admin; enroll again",
                )),
                Some(_) => Ok(()),
            }
        }
        Principal::Node(_) => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "a head may only read its own config"))
        }
        _ => Err(ApiError::new(StatusCode::FORBIDDEN, "this token may not read a head's config")),
    }
}

/// `GET /api/v1/heads/{id}`: the head's stream config (its own token, or admin).
#[utoipa::path(
    get,
    path = "/api/v1/heads/{id}",
    tag = "heads",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = []), ("node" = [])),
    responses(
        (status = 200, description = "The head's stream config (admin, or the head itself)", body = ConfigJson),
    )
)]
pub async fn config(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    parts: Parts,
) -> Result<Json<ConfigJson>, ApiError> {
    let id = node_id(&id)?;
    admin_or_self(&parts, &state, &id)?;
    let s = find(&state, &id)?;
    Ok(Json(config_json(&state, &s)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = HeadStatus)]
pub struct StatusBody {
    status: String,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    diagnostics: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `PUT /api/v1/heads/{id}`: the kiosk reports its status (its own token only). Only a
/// change is an event; diagnostics are volatile, like a heartbeat's.
#[utoipa::path(
    put,
    path = "/api/v1/heads/{id}",
    tag = "heads",
    params(super::openapi::NodePath),
    request_body = StatusBody,
    security(("node" = [])),
    responses(
        (status = 200, description = "The head after its report", body = HeadJson),
    )
)]
pub async fn report(
    State(state): State<AppState>,
    NodeCaller(caller): NodeCaller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Json<HeadJson>, ApiError> {
    let id = node_id(&id)?;
    if caller != id {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "a head may only report its own status"));
    }
    if !HEAD_STATUSES.contains(&body.status.as_str()) {
        return Err(ApiError::bad_request(format!(
            "status must be idle, streaming or error, got {:?}",
            body.status.chars().take(80).collect::<String>()
        )));
    }
    // Everything is checked before anything is stored.
    if let Some(d) = &body.diagnostics {
        limits::check_map("diagnostics", d, state.config.max_diagnostics_bytes)?;
    }
    let detail = match body.detail {
        Some(d) if d.chars().count() > MAX_DETAIL_CHARS => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "detail is {} characters; at most {MAX_DETAIL_CHARS} are accepted",
                    d.chars().count()
                ),
            ))
        }
        Some(d) if d.chars().any(|c| c.is_control() && c != '\n') => {
            return Err(ApiError::bad_request("detail must be printable characters (and newlines) only"))
        }
        Some(d) if d.trim().is_empty() => None,
        other => other,
    };
    let changed = state
        .ledger
        .read(|v| heads::head(v, &id).map(|(_, h)| h.status != body.status || h.detail != detail))?;
    // Decide on the committed views first, so that a kiosk repeating itself never
    // reaches the writer (which decides again).
    if changed {
        state
            .ledger
            .submit(format!("node:{id}"), heads::report_status(id.clone(), body.status, detail))
            .await?;
    }
    if let Some(d) = body.diagnostics {
        state.liveness.set_diagnostics(&id, d);
    }
    let s = find(&state, &id)?;
    let live = state.liveness.get(&id);
    Ok(Json(head_json(s, live)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = HeadAssignment)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    body_id: Option<String>,
    #[serde(default)]
    app_id: Option<String>,
}

/// `POST /api/v1/nodes/{id}/head-assignment`: pin a head to a body, or clear it with
/// `{"body_id": null}`. Answers with the head's stream config.
#[utoipa::path(
    post,
    path = "/api/v1/nodes/{id}/head-assignment",
    tag = "heads",
    params(super::openapi::NodePath),
    request_body = AssignBody,
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The head's stream config", body = ConfigJson),
    )
)]
pub async fn assign(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
    ApiJson(body): ApiJson<AssignBody>,
) -> Result<Json<ConfigJson>, ApiError> {
    let body_id = body.body_id.as_deref().map(node_id).transpose()?;
    state.ledger.submit(admin.cause(), heads::assign(id.clone(), body_id, body.app_id)).await?;
    let s = find(&state, &id)?;
    Ok(Json(config_json(&state, &s)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = AllowedExperiences)]
#[serde(deny_unknown_fields)]
pub struct AllowedBody {
    experiences: Vec<String>,
}

/// `POST /api/v1/nodes/{id}/allowed-experiences`: the head's whitelist, replaced whole.
#[utoipa::path(
    post,
    path = "/api/v1/nodes/{id}/allowed-experiences",
    tag = "heads",
    params(super::openapi::NodePath),
    request_body = AllowedBody,
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The head's stream config", body = ConfigJson),
    )
)]
pub async fn allowed_experiences(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
    ApiJson(body): ApiJson<AllowedBody>,
) -> Result<Json<ConfigJson>, ApiError> {
    state.ledger.submit(admin.cause(), heads::allow_experiences(id.clone(), body.experiences)).await?;
    let s = find(&state, &id)?;
    Ok(Json(config_json(&state, &s)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EligibleQuery {
    head: String,
}

/// `GET /api/v1/bodies/eligible?head={id}`: the bodies a head may stream from, best
/// first, each with why it is where it is (admin, observer, or the head itself).
#[utoipa::path(
    get,
    path = "/api/v1/bodies/eligible",
    tag = "heads",
    params(("head" = String, Query, description = "The head (node-…)")),
    security(("admin" = []), ("observer" = []), ("console_session" = []), ("node" = [])),
    responses(
        (status = 200, description = "The bodies the head may stream from, best first, each with why", body = [EligibleJson]),
    )
)]
pub async fn eligible(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<EligibleQuery>, axum::extract::rejection::QueryRejection>,
    parts: Parts,
) -> Result<Json<Vec<EligibleJson>>, ApiError> {
    let axum::extract::Query(q) = query.map_err(|_| ApiError::bad_request("give the head: ?head=node-…"))?;
    let id = node_id(&q.head)?;
    if !matches!(principal(&parts, &state)?, Principal::Observer) {
        admin_or_self(&parts, &state, &id)?;
    }
    let found = state.ledger.read(|v| heads::eligible_bodies(v, &id))?;
    Ok(Json(
        found
            .into_iter()
            .map(|e| EligibleJson {
                id: e.body.id,
                name: e.body.name,
                wireguard_ip: e.body.wireguard_ip,
                ip: Some(e.body.ip).filter(|ip| !ip.is_empty()),
                heads_assigned: e.heads_assigned,
                rank_reason: e.rank_reason,
            })
            .collect(),
    ))
}

/// A body a head may stream from.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EligibleJson {
    #[schema(value_type = String)]
    id: NodeId,
    name: String,
    wireguard_ip: Option<String>,
    /// The body's LAN address; null when it has none.
    ip: Option<String>,
    /// How many heads are pinned to this body now (this head included).
    heads_assigned: usize,
    /// Why the body is where it is in the list.
    rank_reason: String,
}

/// `GET /api/v1/heads/{id}/experiences`: the library's experiences live at the head's
/// venue that its whitelist allows (an empty whitelist allows nothing). It does not
/// depend on any body: a kiosk shows its catalog even when no body is free.
#[utoipa::path(
    get,
    path = "/api/v1/heads/{id}/experiences",
    tag = "heads",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = []), ("node" = [])),
    responses(
        (status = 200, description = "The experiences the head may show (from ExperienceLibrary, as it answers)", body = [crate::library::api::LiveExperience]),
        (status = 502, description = "ExperienceLibrary did not answer well", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn experiences(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    parts: Parts,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let id = node_id(&id)?;
    admin_or_self(&parts, &state, &id)?;
    let s = find(&state, &id)?;
    let library = super::library::configured(&state)?;
    let items = crate::cluster::library_client::live_experiences(&library, &s.node.district, &s.node.venue)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(Json(crate::cluster::library_client::allowed(items, &s.head.allowed_experiences)))
}

/// Exit codes of the commands below that say why there is nothing to show.
const EXIT_ABSENT: i32 = 3;
const EXIT_STALE: i32 = 4;

/// `GET /api/v1/heads/{id}/screenshot`: the kiosk's latest screenshot (admin), fetched
/// through the exec channel. 504 when the head does not answer in time, 502 when the
/// screenshot is missing or older than `head_screenshot_max_age`.
#[utoipa::path(
    get,
    path = "/api/v1/heads/{id}/screenshot",
    tag = "heads",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The kiosk's last screenshot", content_type = "image/jpeg", body = Vec<u8>),
        (status = 502, description = "The head answered with something else", body = crate::service::openapi::ErrorBody),
        (status = 504, description = "The head did not answer in time", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn screenshot(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
) -> Result<axum::response::Response, ApiError> {
    find(&state, &id)?;
    let command =
        screenshot_command(&state.config.head_screenshot_path, state.config.head_screenshot_max_age);
    let output = read_on_node(&state, admin.cause(), &id, command, "screenshot").await?;
    let bytes = super::remote::decode_base64(&output.stdout).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_GATEWAY, "the head sent a screenshot that is not valid base64")
    })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "image/jpeg"), (axum::http::header::CACHE_CONTROL, "no-store")],
        bytes,
    )
        .into_response())
}

/// The command that prints the screenshot as base64, or exits 3 (absent) or 4 (stale).
/// `stat -c` is GNU, `stat -f` BSD/macOS: it tries both, so one command serves every kiosk.
fn screenshot_command(path: &str, max_age: std::time::Duration) -> String {
    let max_age = max_age.as_secs();
    format!(
        "f={p}; [ -f \"$f\" ] || {{ echo \"no screenshot at $f\" >&2; exit {EXIT_ABSENT}; }}\n\
         m=$(stat -c %Y \"$f\" 2>/dev/null || stat -f %m \"$f\") || exit 5\n\
         age=$(( $(date +%s) - m ))\n\
         [ \"$age\" -le {max_age} ] || {{ echo \"screenshot at $f is ${{age}}s old (limit {max_age}s)\" >&2; exit {EXIT_STALE}; }}\n\
         base64 < \"$f\"",
        p = super::remote::shell_path(path),
    )
}

/// The command that prints the log's last `lines` lines, or exits 3 when there is no log.
pub(super) fn log_command(path: &str, lines: u32) -> String {
    format!(
        "f={p}; [ -f \"$f\" ] || {{ echo \"no log at $f\" >&2; exit {EXIT_ABSENT}; }}\ntail -n {lines} \"$f\"",
        p = super::remote::shell_path(path),
    )
}

/// `GET /api/v1/heads/{id}/logs`: the last 200 lines of the kiosk's log (admin),
/// through the exec channel, as `{"log_path","lines"}`.
#[utoipa::path(
    get,
    path = "/api/v1/heads/{id}/logs",
    tag = "heads",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The kiosk's last log lines", body = HeadLogs),
        (status = 502, description = "The head answered with an error", body = crate::service::openapi::ErrorBody),
        (status = 504, description = "The head did not answer in time", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn logs(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
) -> Result<Json<HeadLogs>, ApiError> {
    find(&state, &id)?;
    let path = state.config.head_log_path.clone();
    let command = log_command(&path, 200);
    let output = read_on_node(&state, admin.cause(), &id, command, "log").await?;
    let lines = output.stdout.lines().map(str::to_owned).collect();
    Ok(Json(HeadLogs { log_path: path, lines }))
}

/// The last lines of a kiosk's log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeadLogs {
    /// Where the log is on the kiosk (`head_log_path`).
    log_path: String,
    /// Oldest first.
    lines: Vec<String>,
}

/// Runs a read-only command on a node (a head, or a body for a session's logs) and
/// turns every way it can fail into 404 (no such node), 504 (no answer in time) or
/// 502 (it answered, but there is nothing good to show).
pub(super) async fn read_on_node(
    state: &AppState,
    cause: String,
    id: &NodeId,
    command: String,
    what: &str,
) -> Result<hydra_events::ExecOutput, ApiError> {
    use super::remote::{run, Outcome};
    let gateway = |m: String| ApiError::new(StatusCode::BAD_GATEWAY, m);
    let timeout = state.config.head_exec_timeout;
    let Some((kind, online)) = state.ledger.read(|v| v.nodes.get(id).map(|n| (n.kind.as_str(), n.online)))
    else {
        return Err(ApiError::not_found(format!("no node {id}")));
    };
    if !online {
        // Nothing would run it: say so now rather than after the whole timeout.
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{kind} {id} is offline: it cannot send its {what}"),
        ));
    }
    match run(state, cause, id, command, timeout).await? {
        Outcome::NoAnswer => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{kind} {id} did not send its {what} within {}s; the command was cancelled",
                timeout.as_secs().max(1)
            ),
        )),
        Outcome::Ended(r) if r.status == hydra_projections::ExecStatus::TimedOut => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("reading the {what} on {kind} {id} timed out"),
        )),
        Outcome::Ended(r) => Err(gateway(format!(
            "reading the {what} on {kind} {id} {}{}",
            r.status.as_str(),
            r.reason.map(|why| format!(": {why}")).unwrap_or_default()
        ))),
        Outcome::Completed(o) if o.exit_code == Some(0) && o.truncated => {
            Err(gateway(format!("the {what} of {kind} {id} is larger than exec_output_cap")))
        }
        Outcome::Completed(o) if o.exit_code == Some(0) => Ok(o),
        Outcome::Completed(o) => {
            let said = o.stderr.trim();
            let why = match o.exit_code {
                Some(EXIT_ABSENT) => "absent",
                Some(EXIT_STALE) => "stale",
                _ => "unreadable",
            };
            Err(gateway(format!(
                "the {what} of {kind} {id} is {why} (exit {}): {}",
                o.exit_code.map_or("none".into(), |c| c.to_string()),
                if said.is_empty() { "no message" } else { said }
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sh(command: &str) -> (Option<i32>, String, String) {
        let out = std::process::Command::new("sh").arg("-c").arg(command).output().unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (out.status.code(), text(out.stdout), text(out.stderr))
    }

    /// The commands really run in a POSIX shell: fresh, stale and absent files.
    #[test]
    fn screenshot_and_log_commands_say_fresh_stale_or_absent() {
        let dir = tempfile::tempdir().unwrap();
        let shot = dir.path().join("it's a shot.jpg");
        std::fs::write(&shot, [0xffu8, 0xd8, 0xff, 0xe0, 0x00, 0x10]).unwrap();
        let shot = shot.to_str().unwrap();
        let (code, out, _) = sh(&screenshot_command(shot, Duration::from_secs(60)));
        assert_eq!(code, Some(0));
        assert_eq!(super::super::remote::decode_base64(&out).unwrap(), [0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10]);
        let old = format!("touch -t 200001010000 '{}'", shot.replace('\'', r"'\''"));
        assert_eq!(sh(&old).0, Some(0));
        let (code, _, err) = sh(&screenshot_command(shot, Duration::from_secs(60)));
        assert_eq!(code, Some(EXIT_STALE), "{err}");
        assert!(err.contains("old (limit 60s)"), "{err}");
        let (code, _, err) = sh(&screenshot_command("/nonexistent/x.jpg", Duration::from_secs(60)));
        assert_eq!((code, err.trim()), (Some(EXIT_ABSENT), "no screenshot at /nonexistent/x.jpg"));

        let log = dir.path().join("head.log");
        let lines: String = (1..=250).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, lines).unwrap();
        let (code, out, _) = sh(&log_command(log.to_str().unwrap(), 200));
        assert_eq!(code, Some(0));
        assert_eq!(out.lines().count(), 200);
        assert_eq!(out.lines().next(), Some("line 51"));
        assert_eq!(sh(&log_command("/nonexistent/head.log", 200)).0, Some(EXIT_ABSENT));
    }
}
