//! Admin endpoints for nodes: list (with filters and as-of queries), get, approve,
//! reject, remove, roles, placement, drain, update flags and per-node history.

use super::events::read_envelopes;
use super::page;
use super::uptime;
use super::{Admin, ApiError, ApiJson, AppState, OnNode, Reader};
use crate::cluster::nodes::{self, Placement, RoleRules};
use crate::cluster::Live;
use crate::service::ApiQuery;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hydra_core::audit::{replay, Stop};
use hydra_core::auth::Principal;
use hydra_core::envelope::{envelope_json, rfc3339};
use hydra_core::error::DomainError;
use hydra_core::ledger::now_ms;
use hydra_core::ledger::Decision;
use hydra_events::{NodeId, UpdateTarget};
use hydra_projections::{ClusterViews, NodeView, ProvisionView};
use serde::{Deserialize, Serialize};

/// A node as the API shows it (SPEC §1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeJson {
    pub id: String,
    /// `body` or `head`.
    pub kind: &'static str,
    pub name: String,
    pub ip: String,
    pub roles: Vec<String>,
    pub district: String,
    pub venue: String,
    pub environment: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub status: &'static str,
    pub node_status: &'static str,
    pub last_seen: Option<String>,
    pub provider_status: Option<String>,
    pub provider_version: Option<String>,
    pub agent_version: Option<String>,
    pub os: Option<String>,
    pub wireguard_ip: Option<String>,
    pub stream_status: String,
    pub draining: bool,
    /// The pending flag: asked, not yet carried to the node by a heartbeat answer.
    pub reprovision: bool,
    /// `idle`, `requested`, `provisioning`, `completed` or `failed`.
    pub provision_state: &'static str,
    /// The provisioning record, when the node has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningJson>,
    pub update_node: bool,
    pub update_services: bool,
    pub enrolled_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub diagnostics: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub telemetry: Option<serde_json::Value>,
    /// Heartbeats since start-up whose changes were held back by the node's event
    /// budget and folded into a later write (volatile).
    pub coalesced_changes: u64,
    /// A change the node reported waits for its budget (written when it passes).
    pub change_held: bool,
    /// Uptime over the last 24 hours in percent (`docs/uptime.md`); null before
    /// anything was counted.
    pub uptime_pct: Option<f64>,
}

/// The node with its provisioning record (`views.provision`), if it has one, and its
/// 24-hour uptime.
pub fn node_json(
    n: &NodeView,
    provision: Option<&ProvisionView>,
    live: Option<Live>,
    uptime_pct: Option<f64>,
) -> NodeJson {
    let live = live.unwrap_or_default();
    let last_seen_ms = live.last_seen_ms.max(n.last_seen_ms);
    NodeJson {
        id: n.id.to_string(),
        kind: n.kind.as_str(),
        name: n.name.clone(),
        ip: n.ip.clone(),
        roles: n.roles.clone(),
        district: n.district.clone(),
        venue: n.venue.clone(),
        environment: n.environment.clone(),
        owner: n.owner.clone(),
        status: n.status.as_str(),
        node_status: if n.online { "online" } else { "offline" },
        last_seen: (last_seen_ms > 0).then(|| rfc3339(last_seen_ms)),
        provider_status: n.provider_status.clone(),
        provider_version: n.provider_version.clone(),
        agent_version: n.agent_version.clone(),
        os: n.os.clone(),
        wireguard_ip: n.wireguard_ip.clone(),
        stream_status: n.stream_status.clone(),
        draining: n.draining,
        reprovision: n.reprovision,
        provision_state: provision.map(|p| p.state).unwrap_or_default().as_str(),
        provisioning: provision.map(provisioning_json),
        update_node: n.update_node,
        update_services: n.update_services,
        enrolled_at: rfc3339(n.enrolled_at_ms),
        diagnostics: live.diagnostics.filter(|d| !d.is_empty()),
        telemetry: live.telemetry,
        coalesced_changes: live.coalesced,
        change_held: live.held.is_some(),
        uptime_pct,
    }
}

/// A node's provisioning record (`docs/provisioning.md`); times are RFC 3339.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProvisioningJson {
    /// `idle`, `requested`, `provisioning`, `completed` or `failed`.
    pub state: &'static str,
    pub requested_at: Option<String>,
    /// When the flag reached the node (the deadline counts from here).
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The version the last successful provisioning installed.
    pub version: Option<String>,
    /// The error of the last failed provisioning (`timeout` when the node went silent).
    pub error: Option<String>,
}

fn provisioning_json(p: &ProvisionView) -> ProvisioningJson {
    ProvisioningJson {
        state: p.state.as_str(),
        requested_at: p.requested_at_ms.map(rfc3339),
        started_at: p.started_at_ms.map(rfc3339),
        finished_at: p.finished_at_ms.map(rfc3339),
        version: p.version.clone(),
        error: p.error.clone(),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub(super) district: Option<String>,
    pub(super) venue: Option<String>,
    /// Nodes with this role.
    pub(super) role: Option<String>,
    /// `pending`, `approved` or `rejected`.
    pub(super) status: Option<String>,
    /// `online` or `offline`.
    pub(super) node_status: Option<String>,
    /// `body` or `head`.
    pub(super) kind: Option<String>,
    /// The fleet as it was after this event (replayed from the log).
    pub(super) as_of_seq: Option<u64>,
    /// The fleet as it was at this time (RFC 3339), replayed from the log.
    pub(super) as_of: Option<String>,
    /// Nodes per page (default 500, at most 5000); the next page's `after` is in the
    /// `X-Hydra-Next-After` header.
    pub(super) limit: Option<usize>,
    pub(super) after: Option<String>,
}

impl ListQuery {
    pub(super) fn matches(&self, n: &NodeView) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.district, &n.district)
            && eq(&self.venue, &n.venue)
            && eq(&self.status, n.status.as_str())
            && eq(&self.node_status, if n.online { "online" } else { "offline" })
            && eq(&self.kind, n.kind.as_str())
            && self.role.as_deref().is_none_or(|r| n.roles.iter().any(|x| x == r))
    }
}

/// `GET /api/v1/nodes`: one page of the matching nodes in id order.
#[utoipa::path(
    get,
    path = "/api/v1/nodes",
    tag = "nodes",
    params(ListQuery),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "One page of the matching nodes in id order", body = [NodeJson], headers(("X-Hydra-Next-After" = String, description = "The `after` of the next page, when there is one"))),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _: Reader,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    if let Some(s) = &q.status {
        if !["pending", "approved", "rejected"].contains(&s.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown status {s:?}: expected pending, approved or rejected"
            )));
        }
    }
    let (limit, after) = page::bounds(q.limit, q.after.as_deref())?;
    let (now_s, grace_s) = uptime::day_reading(&state);
    if let Some(stop) = as_of_stop(q.as_of_seq, &q.as_of)? {
        // The fleet as it was: replay the log up to that point (liveness is not in
        // the log, so diagnostics are absent and last_seen is the logged one).
        let (views, at_ms) = views_as_of(&state, stop).await?;
        let (found, next) = page::page(&views.nodes, after.as_ref(), limit, |_, n| q.matches(n));
        let nodes: Vec<NodeJson> = found
            .into_iter()
            .map(|(id, n)| {
                let pct = uptime::day_pct(&views, id, at_ms / 1000, grace_s);
                node_json(n, views.provision.get(id), None, pct)
            })
            .collect();
        return Ok(page::answer(nodes, next));
    }
    type Found = (NodeView, Option<ProvisionView>, Option<f64>);
    let (nodes, next): (Vec<Found>, _) = state.ledger.read(|v| {
        let (found, next) = page::page(&v.nodes, after.as_ref(), limit, |_, n| q.matches(n));
        let found = found
            .into_iter()
            .map(|(id, n)| (n.clone(), v.provision.get(id).cloned(), uptime::day_pct(v, id, now_s, grace_s)))
            .collect();
        (found, next)
    });
    let out: Vec<NodeJson> =
        nodes.iter().map(|(n, p, pct)| node_json(n, p.as_ref(), state.liveness.get(&n.id), *pct)).collect();
    Ok(page::answer(out, next))
}

/// Where `?as_of_seq=` or `?as_of=` (RFC 3339) stops a replay, if one was asked.
pub(super) fn as_of_stop(as_of_seq: Option<u64>, as_of: &Option<String>) -> Result<Option<Stop>, ApiError> {
    Ok(match (as_of_seq, as_of) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give as_of_seq or as_of, not both")),
        (Some(seq), None) => Some(Stop::AtSeq(seq)),
        (None, Some(t)) => {
            let at = humantime::parse_rfc3339_weak(t)
                .map_err(|e| ApiError::bad_request(format!("as_of {t:?} is not an RFC 3339 time: {e}")))?;
            let ms = at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
            Some(Stop::AtTime(ms))
        }
        (None, None) => None,
    })
}

/// The views as they were at `stop`, replayed from the log, and that moment (unix ms):
/// the `as_of` time, or the time of the last event replayed.
pub(super) async fn views_as_of(state: &AppState, stop: Stop) -> Result<(ClusterViews, u64), ApiError> {
    let store = state.ledger.store().clone();
    let head = state.ledger.committed_seq();
    let views: ClusterViews = tokio::task::spawn_blocking(move || replay(&store, stop, head))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?
        .views;
    let at_ms = match stop {
        Stop::AtTime(ms) => ms,
        _ => views.last_at_ms,
    };
    Ok((views, at_ms))
}

fn find(state: &AppState, id: &NodeId) -> Result<(NodeView, Option<ProvisionView>), ApiError> {
    state
        .ledger
        .read(|v| v.nodes.get(id).map(|n| (n.clone(), v.provision.get(id).cloned())))
        .ok_or_else(|| ApiError::not_found(format!("no node {id}")))
}

/// The node's 24-hour uptime now.
fn day_pct_now(state: &AppState, id: &NodeId) -> Option<f64> {
    let (now_s, grace_s) = uptime::day_reading(state);
    state.ledger.read(|v| uptime::day_pct(v, id, now_s, grace_s))
}

#[utoipa::path(
    get,
    path = "/api/v1/nodes/{id}",
    tag = "nodes",
    params(super::openapi::NodePath),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The node", body = NodeJson),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    OnNode(_, id): OnNode<Reader>,
) -> Result<Json<NodeJson>, ApiError> {
    let (n, p) = find(&state, &id)?;
    Ok(Json(node_json(&n, p.as_ref(), state.liveness.get(&id), day_pct_now(&state, &id))))
}

/// Answers with the node as it is after the command.
pub(super) fn current(state: &AppState, id: &NodeId) -> Result<Json<NodeJson>, ApiError> {
    let (n, p) = find(state, id)?;
    Ok(Json(node_json(&n, p.as_ref(), state.liveness.get(id), day_pct_now(state, id))))
}

/// Runs an admin's command about node `id`, then answers with the node as it is after.
pub(super) async fn act(
    state: &AppState,
    admin: &Principal,
    id: &NodeId,
    command: impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> + Send + 'static,
) -> Result<Json<NodeJson>, ApiError> {
    state.ledger.submit(admin.cause(), command).await?;
    current(state, id)
}

#[utoipa::path(
    delete,
    path = "/api/v1/nodes/{id}",
    tag = "nodes",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 204, description = "Removed; its token no longer works"),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
) -> Result<impl IntoResponse, ApiError> {
    state.ledger.submit(admin.cause(), nodes::remove(id.clone())).await?;
    state.liveness.forget(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    #[serde(default)]
    roles: Vec<String>,
    district: String,
    venue: String,
    environment: Option<String>,
    owner: Option<String>,
}

/// Where the body puts the node; the command checks it. No environment means production.
fn asked_placement(
    district: String,
    venue: String,
    environment: Option<String>,
    owner: Option<String>,
) -> Placement {
    Placement { district, venue, environment: environment.unwrap_or_else(|| "production".into()), owner }
}

pub(super) fn role_rules(state: &AppState) -> RoleRules {
    RoleRules { catalog: state.config.role_catalog.clone(), head_roles: state.config.head_roles.clone() }
}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/{id}/approve",
    tag = "nodes",
    params(super::openapi::NodePath),
    request_body = ApproveBody,
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The node as it is after the command", body = NodeJson),
    )
)]
pub async fn approve(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
    ApiJson(body): ApiJson<ApproveBody>,
) -> Result<Json<NodeJson>, ApiError> {
    let placement = asked_placement(body.district, body.venue, body.environment, body.owner);
    act(&state, &admin, &id, nodes::approve(id.clone(), body.roles, placement, role_rules(&state))).await
}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/{id}/reject",
    tag = "nodes",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The node as it is after the command", body = NodeJson),
    )
)]
pub async fn reject(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
) -> Result<Json<NodeJson>, ApiError> {
    act(&state, &admin, &id, nodes::reject(id.clone())).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolesBody {
    roles: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/{id}/roles",
    tag = "nodes",
    params(super::openapi::NodePath),
    request_body = RolesBody,
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The node as it is after the command", body = NodeJson),
    )
)]
pub async fn roles(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
    ApiJson(body): ApiJson<RolesBody>,
) -> Result<Json<NodeJson>, ApiError> {
    act(&state, &admin, &id, nodes::set_roles(id.clone(), body.roles, role_rules(&state))).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementBody {
    district: String,
    venue: String,
    environment: Option<String>,
    owner: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/{id}/placement",
    tag = "nodes",
    params(super::openapi::NodePath),
    request_body = PlacementBody,
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The node as it is after the command", body = NodeJson),
    )
)]
pub async fn placement(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
    ApiJson(body): ApiJson<PlacementBody>,
) -> Result<Json<NodeJson>, ApiError> {
    let p = asked_placement(body.district, body.venue, body.environment, body.owner);
    act(&state, &admin, &id, nodes::set_placement(id.clone(), p)).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    draining: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/{id}/drain",
    tag = "nodes",
    params(super::openapi::NodePath),
    request_body = DrainBody,
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The node as it is after the command", body = NodeJson),
    )
)]
pub async fn drain(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
    ApiJson(body): ApiJson<DrainBody>,
) -> Result<Json<NodeJson>, ApiError> {
    act(&state, &admin, &id, nodes::set_drain(id.clone(), body.draining)).await
}

async fn flag_update(
    state: AppState,
    OnNode(Admin(admin), id): OnNode<Admin>,
    target: UpdateTarget,
) -> Result<Json<NodeJson>, ApiError> {
    act(&state, &admin, &id, nodes::request_update(id.clone(), target)).await
}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/{id}/update-node",
    tag = "nodes",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The node as it is after the command", body = NodeJson),
    )
)]
pub async fn update_node(
    State(state): State<AppState>,
    on: OnNode<Admin>,
) -> Result<Json<NodeJson>, ApiError> {
    flag_update(state, on, UpdateTarget::Node).await
}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/{id}/update-services",
    tag = "nodes",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The node as it is after the command", body = NodeJson),
    )
)]
pub async fn update_services(
    State(state): State<AppState>,
    on: OnNode<Admin>,
) -> Result<Json<NodeJson>, ApiError> {
    flag_update(state, on, UpdateTarget::Services).await
}

/// A page of a node's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct History {
    #[schema(value_type = String)]
    node_id: NodeId,
    /// Envelopes, oldest first: `seq`, `at`, `type`, `cause`, the event's fields.
    #[schema(value_type = Vec<Object>)]
    events: Vec<serde_json::Value>,
    /// Ask again with `since=next_since` for the next page.
    next_since: u64,
    /// The server's time (RFC 3339).
    now: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Events after this seq (default 0).
    #[serde(default)]
    #[param(required = false)]
    since: u64,
    /// Events per page (default 1000, clamped to 1..=10000).
    limit: Option<usize>,
}

/// The node's events from the per-node index (no full scan), oldest first. Removed
/// nodes keep their history: the log forgets nothing.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{id}/history",
    tag = "nodes",
    params(super::openapi::NodePath, HistoryQuery),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The node's events, oldest first", body = History),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    OnNode(reader, id): OnNode<Reader>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let store = state.ledger.store().clone();
    let head = state.ledger.committed_seq();
    let node = id.clone();
    let envelopes = tokio::task::spawn_blocking(move || {
        let seqs = store.node_seqs(&node, q.since, limit)?;
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs.into_iter().filter(|s| *s <= head) {
            // An index entry is checked against the event it points to.
            out.extend(
                read_envelopes(&store, seq, seq)?.into_iter().filter(|e| e.event.node_id() == Some(&node)),
            );
        }
        Ok::<_, hydra_core::store::StoreError>(out)
    })
    .await
    .map_err(ApiError::internal)??;
    if envelopes.is_empty() && q.since == 0 {
        return Err(ApiError::not_found(format!("no events for node {id}")));
    }
    let next = envelopes.last().map(|e| e.seq).unwrap_or(q.since);
    let audience = reader.audience();
    let events: Vec<serde_json::Value> = envelopes.iter().map(|e| envelope_json(e, audience)).collect();
    Ok(Json(History { node_id: id, events, next_since: next, now: rfc3339(now_ms()) }))
}
