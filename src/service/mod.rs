//! The kit both servers share: the state a service exposes to the shared handlers,
//! the one mapping from errors to HTTP answers, auth extractors, the event stream,
//! health, the accept loop, start and stop, and the clients the CLIs use.

pub mod backup;
pub mod browser;
pub mod cli;
pub mod client;
pub mod config;
pub mod events;
pub mod extract;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod request;
pub mod serve;
pub mod sse_client;
pub mod start;

pub use extract::{Admin, ApiJson, ApiPath, ApiQuery, OnNode, Reader};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hydra_core::auth::Tokens;
use hydra_core::error::DomainError;
use hydra_core::ledger::{Ledger, LedgerError};
use hydra_core::store::StoreError;
use hydra_projections::Projection;
use std::sync::Arc;

/// What the event endpoints and the auth extractors need of a service: hydracluster's
/// state and ExperienceLibrary's both provide it, so both serve the same SSE. A
/// service names its ledger, its tokens and its stream settings; the rest follows.
pub trait ServiceState: Clone + Send + Sync + 'static {
    type Views: hydra_projections::Projection;
    fn ledger(&self) -> &Ledger<Self::Views>;
    fn tokens(&self) -> &Arc<Tokens>;
    /// Turns true when the server stops, so that live streams end.
    fn stopping(&self) -> tokio::sync::watch::Receiver<bool>;
    fn sse(&self) -> &Arc<SseStats>;
    fn keepalive(&self) -> std::time::Duration;
    /// Failed authentications per remote address (see `extract::AuthThrottle`).
    fn auth_throttle(&self) -> &extract::AuthThrottle;
    /// Open, refused and timed-out connections, for `/readyz`.
    fn connections(&self) -> &Arc<serve::ConnStats>;
    /// The service's registry (`/metrics`) and the shared instruments.
    fn metrics(&self) -> &metrics::Metrics;
    /// The console's signed-in browsers, for a service that serves the console.
    fn browser_sessions(&self) -> Option<&browser::Sessions> {
        None
    }
    /// The service's own components for `/readyz`, beside the shared ones.
    fn components(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    fn store(&self) -> &hydra_core::store::Store {
        self.ledger().store()
    }
    fn committed_seq(&self) -> u64 {
        self.ledger().committed_seq()
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<hydra_core::ledger::Published>> {
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

/// Counters about live subscribers, shown in `/readyz`.
#[derive(Debug, Default)]
pub struct SseStats {
    pub subscribers: std::sync::atomic::AtomicU64,
    /// Times a subscriber fell behind the live broadcast and read from the log instead.
    pub lag_recoveries: std::sync::atomic::AtomicU64,
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
