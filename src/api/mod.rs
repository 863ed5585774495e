//! The HTTP API of `hydracluster`: routes, shared state, auth extractors and the one
//! mapping from errors to status codes. Only this module knows HTTP.

mod body;
mod enroll;
pub mod events;
mod exec;
pub mod extract;
mod heads;
pub mod health;
mod limits;
mod nodes;
mod page;
mod provision;
mod remote;
pub mod serve;
mod shell;
mod streams;

pub use extract::{Admin, ApiJson, NodeCaller, Reader};

use crate::auth::Tokens;
use crate::cluster::waiters::Waiters;
use crate::cluster::Liveness;
use crate::config::Config;
use crate::error::DomainError;
use crate::ledger::{Ledger, LedgerError};
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hydra_projections::{ClusterViews, Projection};
use std::sync::Arc;

/// Everything a handler can reach. Cheap to clone; holds no lock.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub ledger: Ledger<ClusterViews>,
    pub tokens: Arc<Tokens>,
    pub liveness: Arc<Liveness>,
    pub enroll_limiter: Arc<enroll::RateLimiter>,
    /// Turns true when the server stops, so that live streams end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    pub sse: Arc<SseStats>,
    pub waiters: Arc<Waiters>,
    /// Shell sessions waiting for, or relaying to, a node's agent.
    pub shells: Arc<shell::ShellRegistry>,
    pub auth_throttle: Arc<extract::AuthThrottle>,
    pub connections: Arc<serve::ConnStats>,
}

/// What the event endpoints and the auth extractors need of a service: hydracluster's
/// state and ExperienceLibrary's both provide it, so both serve the same SSE. A
/// service names its ledger, its tokens and its stream settings; the rest follows.
pub trait ServiceState: Clone + Send + Sync + 'static {
    type Views: hydra_projections::Projection;
    fn ledger(&self) -> &Ledger<Self::Views>;
    fn tokens(&self) -> &Tokens;
    /// Turns true when the server stops, so that live streams end.
    fn stopping(&self) -> tokio::sync::watch::Receiver<bool>;
    fn sse(&self) -> &Arc<SseStats>;
    fn keepalive(&self) -> std::time::Duration;
    /// Failed authentications per remote address (see `extract::AuthThrottle`).
    fn auth_throttle(&self) -> &extract::AuthThrottle;
    /// Open, refused and timed-out connections, for `/readyz`.
    fn connections(&self) -> &Arc<serve::ConnStats>;

    fn store(&self) -> &crate::store::Store {
        self.ledger().store()
    }
    fn committed_seq(&self) -> u64 {
        self.ledger().committed_seq()
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<crate::ledger::Published>> {
        self.ledger().subscribe()
    }
    /// The seq of the last event applied to the shared views.
    fn applied_seq(&self) -> u64 {
        self.ledger().read(|v| v.last_seq())
    }
    /// The last applied seq and the digest of the live views (copied out of the lock
    /// first: the digest encodes all of them).
    fn digest(&self) -> (u64, String) {
        let views = self.ledger().read(|v| v.clone());
        (views.last_seq(), hydra_projections::digest(&views))
    }
}

impl ServiceState for AppState {
    type Views = ClusterViews;
    fn ledger(&self) -> &Ledger<ClusterViews> {
        &self.ledger
    }
    fn tokens(&self) -> &Tokens {
        &self.tokens
    }
    fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.clone()
    }
    fn sse(&self) -> &Arc<SseStats> {
        &self.sse
    }
    fn keepalive(&self) -> std::time::Duration {
        self.config.sse_keepalive
    }
    fn auth_throttle(&self) -> &extract::AuthThrottle {
        &self.auth_throttle
    }
    fn connections(&self) -> &Arc<serve::ConnStats> {
        &self.connections
    }
}

/// Counters about live subscribers, shown in `/readyz`.
#[derive(Debug, Default)]
pub struct SseStats {
    pub subscribers: std::sync::atomic::AtomicU64,
    /// Times a subscriber fell behind the live broadcast and read from the log instead.
    pub lag_recoveries: std::sync::atomic::AtomicU64,
}

impl AppState {
    pub fn new(
        config: Config,
        ledger: Ledger<ClusterViews>,
        tokens: Tokens,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> AppState {
        let limiter = enroll::RateLimiter::new(config.enroll_per_minute);
        let (config_burst, config_window) = (config.auth_fail_burst, config.auth_fail_window);
        AppState {
            config: Arc::new(config),
            ledger,
            tokens: Arc::new(tokens),
            liveness: Arc::new(Liveness::default()),
            enroll_limiter: Arc::new(limiter),
            stopping,
            sse: Arc::new(SseStats::default()),
            waiters: Arc::new(Waiters::default()),
            shells: Arc::default(),
            auth_throttle: Arc::new(extract::AuthThrottle::new(config_burst, config_window)),
            connections: Arc::default(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/enroll", get(enroll::page).post(enroll::submit))
        .route("/api/v1/health", get(health::health))
        .route("/readyz", get(health::readyz::<AppState>))
        .route("/api/v1/readyz", get(health::readyz::<AppState>))
        .route("/api/v1/nodes", get(nodes::list))
        .route("/api/v1/nodes/{id}", get(nodes::get_one).delete(nodes::remove))
        .route("/api/v1/nodes/{id}/approve", post(nodes::approve))
        .route("/api/v1/nodes/{id}/reject", post(nodes::reject))
        .route("/api/v1/nodes/{id}/roles", post(nodes::roles))
        .route("/api/v1/nodes/{id}/placement", post(nodes::placement))
        .route("/api/v1/nodes/{id}/drain", post(nodes::drain))
        .route("/api/v1/nodes/{id}/update-node", post(nodes::update_node))
        .route("/api/v1/nodes/{id}/update-services", post(nodes::update_services))
        .route("/api/v1/nodes/{id}/history", get(nodes::history))
        .route("/api/v1/nodes/{id}/reprovision", post(provision::request))
        .route("/api/v1/nodes/{id}/stream", axum::routing::delete(streams::stop))
        .route("/api/v1/body-anomalies", get(streams::anomalies))
        .route("/api/v1/nodes/{id}/head-assignment", post(heads::assign))
        .route("/api/v1/nodes/{id}/allowed-experiences", post(heads::allowed_experiences))
        .route("/api/v1/heads", get(heads::list).post(heads::enroll))
        .route("/api/v1/heads/{id}", get(heads::config).put(heads::report))
        .route("/api/v1/enroll-qr", get(heads::enroll_qr))
        .route("/api/v1/bodies/eligible", get(heads::eligible))
        .route("/api/v1/heads/{id}/experiences", get(heads::experiences))
        .route("/api/v1/heads/{id}/screenshot", get(heads::screenshot))
        .route("/api/v1/heads/{id}/logs", get(heads::logs))
        .route("/api/v1/nodes/{id}/exec", post(exec::submit))
        .route("/api/v1/nodes/{id}/exec/{exec}/result", get(exec::result))
        .route("/api/v1/nodes/{id}/exec/queue", get(exec::queue).delete(exec::clear))
        .route("/api/v1/nodes/{id}/exec/queue/{exec}", axum::routing::delete(exec::cancel))
        .route("/api/v1/nodes/{id}/shell", get(shell::open))
        .route("/api/v1/body/heartbeat", post(body::heartbeat))
        .route("/api/v1/body/provision-result", post(provision::result))
        .route("/api/v1/body/exec", get(exec::next))
        .route("/api/v1/body/exec/{exec}/watch", get(exec::watch))
        .route(
            "/api/v1/body/exec/result",
            // Two capped outputs plus room for JSON escaping.
            post(exec::post_result)
                .layer(axum::extract::DefaultBodyLimit::max(state.config.exec_output_cap * 4 + 64 * 1024)),
        )
        .route("/api/v1/body/shell/check", get(shell::check))
        .route("/api/v1/body/shell/{session}", get(shell::attach))
        .route("/api/v1/events", get(events::stream::<AppState>))
        .route("/api/v1/events/log", get(events::log::<AppState>))
        .route("/api/v1/audit/digest", get(events::digest::<AppState>))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// An error answer: a status and a message that says what was wrong, as
/// `{"error": "..."}`. Our own failures say nothing of internals.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (429s).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), retry_after: None }
    }
    /// A 429 with a `Retry-After` of `secs`.
    pub fn too_many_requests(message: impl Into<String>, secs: u64) -> Self {
        ApiError { retry_after: Some(secs), ..Self::new(StatusCode::TOO_MANY_REQUESTS, message) }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, m),
            DomainError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            DomainError::Invalid(m) => Self::new(StatusCode::BAD_REQUEST, m),
            DomainError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, m),
            DomainError::Unavailable(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Domain(d) => d.into(),
            LedgerError::Unavailable(m) => {
                tracing::error!(error = %m, "ledger unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "the event log is unavailable; retry")
            }
            LedgerError::ReadOnly(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_damage() {
            // Logged in full; the caller learns it is the server's log, not the request.
            tracing::error!(error = %e, "the event log is damaged; stop the server, then audit and repair it");
            return Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("the event log is damaged: {e}"));
        }
        Self::internal(e)
    }
}
