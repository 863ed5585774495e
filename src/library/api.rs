//! The HTTP API of `hydraexperiencelibrary` (SPEC §6): experiences, builds,
//! promotions and rollouts, plus the shared event stream. Handlers stay thin: they
//! read the views or submit a command, and map the answer to JSON.

use super::commands::{self, Control, NewBuild, NewExperience};
use super::state::{self, LibraryState, PromoteError, PromoteRequest};
use crate::service::ApiPath;
use crate::service::{events, Admin, ApiError, ApiJson, ApiQuery, Reader};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use hydra_core::envelope::rfc3339;
use hydra_events::NodeId;
use hydra_projections::{
    rollout_number, ExperienceView, LibraryViews, NodeState, RolloutState, RolloutView, ENVIRONMENTS,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

pub fn router(state: LibraryState) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/readyz", get(crate::service::health::readyz::<LibraryState>))
        .route("/api/v1/readyz", get(crate::service::health::readyz::<LibraryState>))
        .route("/api/v1/experiences", get(list_experiences).post(create_experience))
        // A literal segment wins over `{id}` in axum's router, so `live` is never an id.
        .route("/api/v1/experiences/live", get(live))
        .route("/api/v1/experiences/{id}", get(get_experience))
        .route("/api/v1/experiences/{id}/builds", post(register_build))
        .route("/api/v1/experiences/{id}/promote", post(promote))
        .route("/api/v1/rollouts", get(list_rollouts))
        .route("/api/v1/rollouts/{id}", get(get_rollout))
        .route("/api/v1/rollouts/{id}/{action}", post(action))
        .route("/api/v1/events", get(events::stream::<LibraryState>))
        .route("/api/v1/events/log", get(events::log::<LibraryState>))
        .route("/api/v1/audit/digest", get(events::digest::<LibraryState>))
        .route("/metrics", get(crate::service::metrics::scrape::<LibraryState>))
        .route("/api/v1/backup", crate::service::backup::route::<LibraryState>("hydraexperiencelibrary"))
        .route("/api/v1/openapi.json", crate::service::openapi::route(&document()))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::service::metrics::track::<LibraryState>,
        ))
        .with_state(state)
}

/// An experience with every environment's build and every build it ever had.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExperienceJson {
    id: String,
    project: String,
    district: String,
    venues: Vec<String>,
    auto_promote: bool,
    created_at: String,
    /// By environment name (`staging`, `production`, …): the build it runs.
    environments: BTreeMap<String, EnvironmentJson>,
    builds: Vec<BuildJson>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnvironmentJson {
    build: String,
    version: String,
    since: String,
    /// The rollout that brought it, when one did.
    rollout_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildJson {
    build: String,
    version: String,
    artifact_url: String,
    sha256: String,
    registered_at: String,
}

pub fn experience_json(x: &ExperienceView) -> ExperienceJson {
    let environments = x
        .environments
        .iter()
        .map(|(name, e)| {
            let v = EnvironmentJson {
                build: e.build.clone(),
                version: e.version.clone(),
                since: rfc3339(e.since_ms),
                rollout_id: e.rollout_id.clone(),
            };
            (name.clone(), v)
        })
        .collect();
    let builds = x
        .builds
        .iter()
        .map(|(id, b)| BuildJson {
            build: id.clone(),
            version: b.version.clone(),
            artifact_url: b.artifact_url.clone(),
            sha256: b.sha256.clone(),
            registered_at: rfc3339(b.registered_at_ms),
        })
        .collect();
    ExperienceJson {
        id: x.id.clone(),
        project: x.project.clone(),
        district: x.district.clone(),
        venues: x.venues.clone(),
        auto_promote: x.auto_promote,
        created_at: rfc3339(x.created_at_ms),
        environments,
        builds,
    }
}

/// A rollout with its policy, counts, and every node in the order it is asked
/// (bodies, then heads).
pub fn rollout_json(r: &RolloutView) -> RolloutJson {
    let waves = r.bodies.iter().map(|n| (n, "body", 1)).chain(r.heads.iter().map(|n| (n, "head", 2)));
    let mut nodes = Vec::with_capacity(r.nodes.len());
    let mut failures = Vec::new();
    for (id, kind, wave) in waves {
        let Some(p) = r.nodes.get(id) else { continue };
        if p.state == NodeState::Failed {
            failures.push(RolloutFailure { node_id: id.clone(), error: p.error.clone() });
        }
        nodes.push(RolloutNode {
            node_id: id.clone(),
            kind,
            wave,
            state: p.state.as_str(),
            error: p.error.clone(),
            version: p.version.clone(),
            requested_at: p.requested_at_ms.map(rfc3339),
            finished_at: p.finished_at_ms.map(rfc3339),
        });
    }
    let skipped = r
        .skipped
        .iter()
        .map(|s| RolloutSkipped { node_id: s.node_id.clone(), reason: s.reason.clone() })
        .collect();
    RolloutJson {
        id: r.id.clone(),
        experience_id: r.experience_id.clone(),
        environment: r.environment.clone(),
        build: r.build.clone(),
        version: r.version.clone(),
        district: r.district.clone(),
        venues: r.venues.clone(),
        state: r.state.as_str(),
        origin: r
            .origin
            .as_ref()
            .map(|(kind, of)| RolloutOrigin { kind: kind.clone(), rollout_id: of.clone() }),
        wave: r.wave,
        policy: PolicyJson {
            max_parallel: r.policy.max_parallel,
            failure_threshold: r.policy.failure_threshold.to_string(),
            node_deadline_ms: r.policy.node_deadline_ms,
        },
        counts: NodeCounts {
            total: r.total(),
            pending: r.count(NodeState::Pending),
            requested: r.count(NodeState::Requested),
            provisioning: r.count(NodeState::Provisioning),
            completed: r.count(NodeState::Completed),
            failed: r.count(NodeState::Failed),
        },
        nodes,
        failures,
        skipped,
        started_at: rfc3339(r.started_at_ms),
        finished_at: r.finished_at_ms.map(rfc3339),
        reason: r.reason.clone(),
    }
}

/// A rollout (`docs/provisioning.md`); times are RFC 3339.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutJson {
    /// `r7`.
    id: String,
    experience_id: String,
    environment: String,
    build: String,
    version: String,
    district: String,
    venues: Vec<String>,
    /// `running`, `paused`, `completed`, `completed_with_failures`, `aborted` or
    /// `cancelled`.
    state: &'static str,
    /// Set when this rollout rolls back or retries an earlier one.
    origin: Option<RolloutOrigin>,
    /// The wave under way: 1 (bodies) or 2 (heads).
    wave: u8,
    policy: PolicyJson,
    counts: NodeCounts,
    /// Every node in the order it is asked (bodies, then heads).
    nodes: Vec<RolloutNode>,
    /// The nodes that failed, with their error.
    failures: Vec<RolloutFailure>,
    /// The nodes left out, with why.
    skipped: Vec<RolloutSkipped>,
    started_at: String,
    finished_at: Option<String>,
    /// Why the rollout ended as it did (an abort, a cancel).
    reason: Option<String>,
}

/// The rollout this one rolls back or retries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutOrigin {
    /// `rollback` or `retry`.
    kind: String,
    rollout_id: String,
}

/// A rollout's policy.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RolloutPolicy)]
pub struct PolicyJson {
    max_parallel: u32,
    /// A count (`2`) or a percentage (`10%`).
    failure_threshold: String,
    node_deadline_ms: u64,
}

/// How many of a rollout's nodes are in each state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RolloutNodeCounts)]
pub struct NodeCounts {
    total: u32,
    pending: u32,
    requested: u32,
    provisioning: u32,
    completed: u32,
    failed: u32,
}

/// One node of a rollout.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutNode {
    #[schema(value_type = String)]
    node_id: NodeId,
    /// `body` or `head`.
    kind: &'static str,
    /// 1 for bodies, 2 for heads.
    wave: u8,
    /// `pending`, `requested`, `provisioning`, `completed` or `failed`.
    state: &'static str,
    error: Option<String>,
    /// The version the node reported installing.
    version: Option<String>,
    requested_at: Option<String>,
    finished_at: Option<String>,
}

/// A node of a rollout that failed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutFailure {
    #[schema(value_type = String)]
    node_id: NodeId,
    error: Option<String>,
}

/// A node a rollout left out.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutSkipped {
    #[schema(value_type = String)]
    node_id: NodeId,
    reason: String,
}

fn no_experience(id: &str) -> ApiError {
    ApiError::not_found(format!("no experience {id}"))
}

fn experience(state: &LibraryState, id: &str) -> Result<ExperienceJson, ApiError> {
    state.ledger.read(|v| v.experiences.get(id).map(experience_json)).ok_or_else(|| no_experience(id))
}

/// The rollout `raw` names, or a 404 that says what a rollout id looks like.
fn find_rollout<R>(
    views: &LibraryViews,
    raw: &str,
    f: impl FnOnce(&RolloutView) -> R,
) -> Result<R, ApiError> {
    if rollout_number(raw).is_none() {
        let shown: String = raw.chars().take(40).collect();
        return Err(ApiError::not_found(format!("no rollout {shown:?}: rollout ids look like r7")));
    }
    views.rollout(raw).map(f).ok_or_else(|| ApiError::not_found(format!("no rollout {raw}")))
}

/// `GET /api/v1/health` of ExperienceLibrary.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the server answers.
    status: &'static str,
    service: &'static str,
    version: &'static str,
    last_event_id: u64,
    experiences: usize,
    rollouts: RolloutCounts,
    cluster: Link,
    release: ReleaseLink,
    driver: Driver,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutCounts {
    active: usize,
    total: usize,
}

/// A followed service: its URL, when configured, and whether its stream is connected.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Link {
    url: Option<String>,
    connected: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReleaseLink {
    url: Option<String>,
    connected: bool,
    /// The last HydraRelease event taken.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Driver {
    /// Rounds of decisions the rollout driver has made since start.
    rounds: u64,
}

#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "health",
    responses(
        (status = 200, description = "Counts, the links to hydracluster and HydraRelease, the driver", body = Health),
    )
)]
async fn health(State(state): State<LibraryState>) -> Json<Health> {
    let (experiences, active, total, cursor) = state.ledger.read(|v| {
        (v.experiences.len(), v.active_rollouts().count(), v.rollouts.len(), v.release_cursor.clone())
    });
    let links = &state.links;
    // "connected" is about a link that exists: without a URL there is nothing to reach.
    let cluster_up = state.config.cluster_url.is_some() && links.cluster_connected.load(Ordering::Relaxed);
    let release_up = state.config.release_url.is_some() && links.release_connected.load(Ordering::Relaxed);
    Json(Health {
        status: "ok",
        service: "hydraexperiencelibrary",
        version: env!("CARGO_PKG_VERSION"),
        last_event_id: state.ledger.committed_seq(),
        experiences,
        rollouts: RolloutCounts { active, total },
        cluster: Link { url: state.config.cluster_url.clone(), connected: cluster_up },
        release: ReleaseLink { url: state.config.release_url.clone(), connected: release_up, cursor },
        driver: Driver { rounds: links.driver_rounds.load(Ordering::Relaxed) },
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/experiences",
    tag = "experiences",
    request_body = NewExperience,
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 201, description = "The experience", body = ExperienceJson),
    )
)]
async fn create_experience(
    State(state): State<LibraryState>,
    Admin(p): Admin,
    ApiJson(body): ApiJson<NewExperience>,
) -> Result<(StatusCode, Json<ExperienceJson>), ApiError> {
    let id = body.id.clone();
    state.ledger.submit(p.cause(), commands::create_experience(body)).await?;
    Ok((StatusCode::CREATED, Json(experience(&state, &id)?)))
}

#[utoipa::path(
    get,
    path = "/api/v1/experiences",
    tag = "experiences",
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "Every experience with its environments and builds", body = [ExperienceJson]),
    )
)]
async fn list_experiences(State(state): State<LibraryState>, Reader(_): Reader) -> Json<Vec<ExperienceJson>> {
    // Copied out under the read lock, rendered after it: the writer waits for readers.
    let all: Vec<_> = state.ledger.read(|v| v.experiences.values().cloned().collect());
    Json(all.iter().map(experience_json).collect())
}

#[utoipa::path(
    get,
    path = "/api/v1/experiences/{id}",
    tag = "experiences",
    params(("id" = String, Path, description = "An experience id", example = "space-race")),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The experience with its environments and builds", body = ExperienceJson),
    )
)]
async fn get_experience(
    State(state): State<LibraryState>,
    Reader(_): Reader,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ExperienceJson>, ApiError> {
    Ok(Json(experience(&state, &id)?))
}

/// Registers a build by hand (setups without HydraRelease). With `auto_promote`, a
/// new build goes on to staging at once, as one from HydraRelease would; a failed
/// promotion leaves the build registered and is reported beside it.
#[utoipa::path(
    post,
    path = "/api/v1/experiences/{id}/builds",
    tag = "experiences",
    params(("id" = String, Path, description = "An experience id", example = "space-race")),
    request_body = NewBuild,
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 201, description = "Registered (and, with auto_promote, its promotion to staging)", body = Registered),
        (status = 200, description = "Already registered: `duplicate` is true", body = Registered),
    )
)]
async fn register_build(
    State(state): State<LibraryState>,
    Admin(p): Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<NewBuild>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    let build = body.build.clone();
    let recorded = state.ledger.submit(p.cause(), commands::register_build(id.clone(), body, None)).await?;
    let duplicate = recorded.is_empty();
    let (mut answer, auto_promote) = state
        .ledger
        .read(|v| {
            let x = v.experiences.get(&id)?;
            let b = x.builds.get(&build)?;
            let answer = Registered {
                experience_id: id.clone(),
                build: build.clone(),
                version: b.version.clone(),
                artifact_url: b.artifact_url.clone(),
                sha256: b.sha256.clone(),
                registered_at: rfc3339(b.registered_at_ms),
                duplicate,
                promotion: None,
            };
            Some((answer, x.auto_promote))
        })
        .ok_or_else(|| no_experience(&id))?;
    if duplicate {
        return Ok((StatusCode::OK, Json(answer)));
    }
    if auto_promote {
        let req = PromoteRequest { to: "staging".into(), auto: true, ..Default::default() };
        match state::promote(&state, p.cause(), &id, &req).await {
            Ok(promoted) => {
                answer.promotion = Some(Promotion { promotion: Some(promoted), promotion_error: None })
            }
            Err(e) => {
                tracing::warn!(experience = %id, build = %build, error = %e, "auto-promotion failed");
                answer.promotion = Some(Promotion { promotion: None, promotion_error: Some(e.to_string()) });
            }
        }
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

/// A registered build.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registered {
    experience_id: String,
    build: String,
    version: String,
    artifact_url: String,
    sha256: String,
    /// RFC 3339.
    registered_at: String,
    /// The build was registered before: nothing changed.
    duplicate: bool,
    /// With auto_promote (a new build only): how its promotion to staging went.
    #[serde(flatten)]
    promotion: Option<Promotion>,
}

/// How a build's auto-promotion went: `promotion` (null when it failed), and
/// `promotion_error` only when it failed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Promotion {
    promotion: Option<state::Promoted>,
    #[serde(skip_serializing_if = "Option::is_none")]
    promotion_error: Option<String>,
}

impl From<PromoteError> for ApiError {
    fn from(e: PromoteError) -> Self {
        match e {
            PromoteError::Domain(d) => d.into(),
            PromoteError::Ledger(l) => l.into(),
            cluster @ PromoteError::Cluster(_) => ApiError::new(StatusCode::BAD_GATEWAY, cluster.to_string()),
        }
    }
}

/// 201 when a rollout started, 200 when the environment only changed its build (no
/// nodes to reprovision, or no cluster configured).
#[utoipa::path(
    post,
    path = "/api/v1/experiences/{id}/promote",
    tag = "experiences",
    params(("id" = String, Path, description = "An experience id", example = "space-race")),
    request_body = PromoteRequest,
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 201, description = "A rollout started", body = state::Promoted),
        (status = 200, description = "The environment changed its build; no nodes to reprovision", body = state::Promoted),
        (status = 502, description = "hydracluster could not list the nodes: nothing was promoted", body = crate::service::openapi::ErrorBody),
    )
)]
async fn promote(
    State(state): State<LibraryState>,
    Admin(p): Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<PromoteRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let promoted = state::promote(&state, p.cause(), &id, &req).await?;
    let status = if promoted.rollout_id.is_some() { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!(promoted))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RolloutQuery {
    state: Option<String>,
    experience: Option<String>,
}

pub(crate) const ROLLOUT_STATES: [RolloutState; 6] = [
    RolloutState::Running,
    RolloutState::Paused,
    RolloutState::Completed,
    RolloutState::CompletedWithFailures,
    RolloutState::Aborted,
    RolloutState::Cancelled,
];

/// Newest first.
#[utoipa::path(
    get,
    path = "/api/v1/rollouts",
    tag = "rollouts",
    params(RolloutQuery),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "Rollouts, newest first", body = [RolloutJson]),
    )
)]
async fn list_rollouts(
    State(state): State<LibraryState>,
    Reader(_): Reader,
    ApiQuery(q): ApiQuery<RolloutQuery>,
) -> Result<Json<Vec<RolloutJson>>, ApiError> {
    let wanted = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(ROLLOUT_STATES.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = ROLLOUT_STATES.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!("unknown rollout state {s:?}: use one of {}", names.join(", ")))
        })?),
    };
    let experience = q.experience.filter(|e| !e.is_empty());
    // Copied out under the read lock, rendered after it: the writer waits for readers.
    let picked: Vec<_> = state.ledger.read(|v| {
        v.rollouts
            .values()
            .rev()
            .filter(|r| wanted.is_none() || wanted == Some(r.state))
            .filter(|r| experience.is_none() || experience.as_ref() == Some(&r.experience_id))
            .cloned()
            .collect()
    });
    Ok(Json(picked.iter().map(rollout_json).collect()))
}

#[utoipa::path(
    get,
    path = "/api/v1/rollouts/{id}",
    tag = "rollouts",
    params(("id" = String, Path, description = "A rollout id (r7)")),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The rollout with its policy, counts and nodes", body = RolloutJson),
    )
)]
async fn get_rollout(
    State(state): State<LibraryState>,
    Reader(_): Reader,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RolloutJson>, ApiError> {
    Ok(Json(state.ledger.read(|v| find_rollout(v, &id, rollout_json))?))
}

/// `POST /api/v1/rollouts/{id}/{action}`: `pause`, `resume` or `cancel` (see
/// `control`), or `rollback` or `retry` (see `redo`).
#[utoipa::path(
    post,
    path = "/api/v1/rollouts/{id}/{action}",
    tag = "rollouts",
    params(("id" = String, Path, description = "A rollout id (r7)"), ("action" = String, Path, description = "pause, resume, cancel, rollback or retry")),
    request_body(content = state::PolicyOverrides, description = "For rollback and retry: overrides of the earlier policy (optional)"),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The rollout after a pause, resume or cancel", body = RolloutJson),
        (status = 201, description = "A rollback or retry started", body = Redone),
        (status = 502, description = "hydracluster could not list the nodes", body = crate::service::openapi::ErrorBody),
    )
)]
async fn action(
    State(state): State<LibraryState>,
    Admin(p): Admin,
    ApiPath((id, action)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    Ok(match action.as_str() {
        "rollback" => redo(state, p.cause(), id, commands::Redo::Rollback, &body).await?.into_response(),
        "retry" => redo(state, p.cause(), id, commands::Redo::Retry, &body).await?.into_response(),
        _ => control(state, p.cause(), id, &action).await?.into_response(),
    })
}

/// `pause`, `resume` or `cancel`; answers the rollout after the change. Doing what
/// is already done (pausing a paused rollout) changes nothing and is not an error.
async fn control(
    state: LibraryState,
    cause: String,
    id: String,
    action: &str,
) -> Result<Json<RolloutJson>, ApiError> {
    let what = Control::parse(action).ok_or_else(|| ApiError::not_found("no such endpoint"))?;
    // The id's shape is checked here so that a malformed one gets the same clear 404
    // as on GET.
    state.ledger.read(|v| find_rollout(v, &id, |_| ()))?;
    state.ledger.submit(cause, commands::control(id.clone(), what)).await?;
    if what == Control::Resume {
        state.wake.notify_one();
    }
    Ok(Json(state.ledger.read(|v| find_rollout(v, &id, rollout_json))?))
}

/// 201 `{"rollout_id"}`, like promote. The body is optional: `{}` or nothing keeps
/// the earlier rollout's policy.
async fn redo(
    state: LibraryState,
    cause: String,
    id: String,
    what: commands::Redo,
    body: &[u8],
) -> Result<(StatusCode, Json<Redone>), ApiError> {
    let overrides: state::PolicyOverrides = if body.iter().all(u8::is_ascii_whitespace) {
        state::PolicyOverrides::default()
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?
    };
    state.ledger.read(|v| find_rollout(v, &id, |_| ()))?;
    let rollout_id = state::redo(&state, cause, &id, what, &overrides).await?;
    Ok((StatusCode::CREATED, Json(Redone { rollout_id, kind: what.as_str(), of: id })))
}

/// A rollback or retry that started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Redone {
    /// The new rollout.
    rollout_id: String,
    /// `rollback` or `retry`.
    kind: &'static str,
    /// The rollout it rolls back or retries.
    of: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LiveQuery {
    district: Option<String>,
    venue: Option<String>,
    environment: Option<String>,
}

/// Public: kiosks and hydracluster's catalog ask without a token. Always an array
/// (hydracluster's client refuses anything else), in experience id order.
#[utoipa::path(
    get,
    path = "/api/v1/experiences/live",
    tag = "experiences",
    params(LiveQuery),
    responses(
        (status = 200, description = "The experiences live in the venue's environment (public: kiosks ask without a token)", body = [LiveExperience]),
    )
)]
async fn live(
    State(state): State<LibraryState>,
    ApiQuery(q): ApiQuery<LiveQuery>,
) -> Result<Json<Vec<LiveExperience>>, ApiError> {
    let district =
        q.district.filter(|d| !d.is_empty()).ok_or_else(|| ApiError::bad_request("district is required"))?;
    let venue =
        q.venue.filter(|v| !v.is_empty()).ok_or_else(|| ApiError::bad_request("venue is required"))?;
    let environment = q.environment.filter(|e| !e.is_empty()).unwrap_or_else(|| "production".into());
    if !ENVIRONMENTS.contains(&environment.as_str()) {
        return Err(ApiError::bad_request(format!(
            "unknown environment {environment:?}: use one of {}",
            ENVIRONMENTS.join(", ")
        )));
    }
    let list = state.ledger.read(|v| {
        v.experiences
            .values()
            .filter(|x| x.district == district && x.venues.contains(&venue))
            .filter_map(|x| {
                let e = x.environments.get(&environment)?;
                let b = x.builds.get(&e.build)?;
                Some(LiveExperience {
                    id: x.id.clone(),
                    project: x.project.clone(),
                    build: e.build.clone(),
                    version: e.version.clone(),
                    artifact_url: b.artifact_url.clone(),
                    sha256: b.sha256.clone(),
                    environment: environment.clone(),
                })
            })
            .collect()
    });
    Ok(Json(list))
}

/// An experience live in an environment: the build a kiosk installs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LiveExperience {
    id: String,
    project: String,
    build: String,
    version: String,
    artifact_url: String,
    sha256: String,
    /// The environment asked for (`production` unless said).
    environment: String,
}

/// ExperienceLibrary's OpenAPI document: the paths of its handlers (each documented by
/// the `#[utoipa::path]` on the handler) and the shared ones. A new route goes into
/// `paths(...)` here; the test `every_served_route_is_documented` fails until it does.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    health,
    create_experience,
    list_experiences,
    get_experience,
    register_build,
    promote,
    list_rollouts,
    get_rollout,
    action,
    live,
))]
struct LibraryApi;

/// The document `GET /api/v1/openapi.json` serves.
pub fn document() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    crate::service::openapi::document(
        LibraryApi::openapi(),
        "hydraexperiencelibrary",
        "ExperienceLibrary: experiences, their builds and promotions, rollouts across the fleet, \
         the event log. Errors are `{\"error\": \"…\"}` with the status. See docs/api.md.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::config::LibraryConfig;
    use crate::library::state::Links;
    use crate::service::extract::AuthThrottle;
    use hydra_core::auth::Tokens;
    use hydra_core::ledger::{Ledger, LedgerConfig};
    use hydra_core::store::Store;
    use std::sync::Arc;

    #[tokio::test]
    async fn every_served_route_is_documented() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ledger =
            Ledger::open(store, LedgerConfig { min_free_bytes: 0, ..LedgerConfig::default() }).unwrap();
        let config = LibraryConfig { data: dir.path().to_owned(), ..LibraryConfig::default() };
        let (sse, connections) = (Arc::default(), Arc::default());
        let metrics =
            crate::service::metrics::Metrics::new(&ledger, Arc::clone(&sse), Arc::clone(&connections), |r| {
                crate::library::metrics::register(r, ledger.clone())
            });
        let state = LibraryState {
            config: Arc::new(config),
            ledger,
            tokens: Arc::new(Tokens::new(&[("admin".into(), "hya_test".into())], None, None)),
            stopping: tokio::sync::watch::channel(false).1,
            sse,
            cluster: None,
            wake: Arc::default(),
            links: Arc::new(Links::default()),
            auth_throttle: Arc::new(AuthThrottle::new(0, std::time::Duration::from_secs(60))),
            connections,
            metrics: Arc::new(metrics),
        };
        let doc = crate::service::openapi::testing::check(router(state), include_str!("api.rs"), &[]).await;
        let live = &doc["paths"]["/api/v1/experiences/live"]["get"];
        assert!(live["security"].is_null(), "the live list is public");
        let promote = &doc["paths"]["/api/v1/experiences/{id}/promote"]["post"]["responses"]["201"];
        assert_eq!(promote["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Promoted");
    }

    /// A registered build's answer: no `promotion` without auto-promotion; a failed
    /// one gives `promotion: null` beside its `promotion_error`.
    #[test]
    fn a_registered_builds_promotion_fields_appear_only_when_asked() {
        let registered = |promotion| Registered {
            experience_id: "space-race".into(),
            build: "b1".into(),
            version: "1.0".into(),
            artifact_url: "https://example.com/a.zip".into(),
            sha256: "ab".into(),
            registered_at: "2026-11-29T10:00:00Z".into(),
            duplicate: false,
            promotion,
        };
        let plain = serde_json::to_value(registered(None)).unwrap();
        assert_eq!(plain["duplicate"], false);
        assert!(plain.get("promotion").is_none() && plain.get("promotion_error").is_none(), "{plain}");
        let failed = Promotion { promotion: None, promotion_error: Some("no cluster".into()) };
        let failed = serde_json::to_value(registered(Some(failed))).unwrap();
        assert_eq!((&failed["promotion"], &failed["promotion_error"]), (&Value::Null, &json!("no cluster")));
        assert!(failed.as_object().unwrap().contains_key("promotion"), "{failed}");
    }
}
