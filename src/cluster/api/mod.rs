//! The HTTP API of `hydracluster`: its routes and the state its handlers reach. The
//! shared kit (errors, extractors, the event stream, health) is `crate::service`.

mod bodies;
mod body;
mod callers;
mod enroll;
mod exec;
mod heads;
mod health;
mod import;
mod library;
mod nodes;
mod openapi;
mod provision;
mod rekey;
mod remote;
mod sessions;
mod shell;
mod streams;
#[cfg(test)]
mod tests;
mod uptime;

use crate::service::{events, extract, limits, page, serve};
use crate::service::{Admin, ApiError, ApiJson, OnNode, Reader, ServiceState, SseStats};
use callers::NodeCaller;

use crate::cluster::config::Config;
use crate::cluster::waiters::Waiters;
use crate::cluster::Liveness;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use hydra_core::auth::Tokens;
use hydra_core::ledger::Ledger;
use hydra_projections::ClusterViews;
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
    /// An import is under way: a second one waits its turn (see `import::import`).
    pub importing: Arc<std::sync::atomic::AtomicBool>,
    /// The console's signed-in browsers.
    pub browsers: Arc<crate::service::browser::Sessions>,
    /// `/metrics`: the registry and the shared instruments, and hydracluster's own.
    pub metrics: Arc<crate::service::metrics::Metrics>,
    pub cluster_metrics: crate::cluster::metrics::ClusterMetrics,
}

impl ServiceState for AppState {
    type Views = ClusterViews;
    fn ledger(&self) -> &Ledger<ClusterViews> {
        &self.ledger
    }
    fn tokens(&self) -> &Arc<Tokens> {
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
    fn metrics(&self) -> &crate::service::metrics::Metrics {
        &self.metrics
    }
    fn browser_sessions(&self) -> Option<&crate::service::browser::Sessions> {
        Some(&self.browsers)
    }
    fn components(&self) -> serde_json::Map<String, serde_json::Value> {
        let parked = serde_json::json!({ "ok": true, "parked": self.waiters.parked() });
        serde_json::Map::from_iter([("long_polls".to_owned(), parked)])
    }
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
        let browsers = Arc::new(crate::service::browser::Sessions::new(config.console_session_idle));
        let (sse, connections) = (Arc::new(SseStats::default()), Arc::<serve::ConnStats>::default());
        let cluster_metrics = crate::cluster::metrics::ClusterMetrics::default();
        let metrics = crate::service::metrics::Metrics::new(&ledger, sse.clone(), connections.clone(), |r| {
            cluster_metrics.register(r, ledger.clone())
        });
        AppState {
            config: Arc::new(config),
            ledger,
            tokens: Arc::new(tokens),
            liveness: Arc::new(Liveness::default()),
            enroll_limiter: Arc::new(limiter),
            stopping,
            sse,
            waiters: Arc::new(Waiters::default()),
            shells: Arc::default(),
            auth_throttle: Arc::new(extract::AuthThrottle::new(config_burst, config_window)),
            connections,
            importing: Arc::default(),
            browsers,
            metrics: Arc::new(metrics),
            cluster_metrics,
        }
    }
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/enroll", get(enroll::page).post(enroll::submit))
        .route("/api/v1/health", get(health::health))
        .route("/readyz", get(crate::service::health::readyz::<AppState>))
        .route("/api/v1/readyz", get(crate::service::health::readyz::<AppState>))
        .route("/api/v1/nodes", get(nodes::list))
        .route(
            "/api/v1/nodes/import",
            post(import::import).layer(axum::extract::DefaultBodyLimit::max(state.config.max_import_bytes)),
        )
        .route("/api/v1/nodes/{id}", get(nodes::get_one).delete(nodes::remove))
        .route("/api/v1/nodes/{id}/approve", post(nodes::approve))
        .route("/api/v1/nodes/{id}/reject", post(nodes::reject))
        .route("/api/v1/nodes/{id}/roles", post(nodes::roles))
        .route("/api/v1/nodes/{id}/placement", post(nodes::placement))
        .route("/api/v1/nodes/{id}/drain", post(nodes::drain))
        .route("/api/v1/nodes/{id}/update-node", post(nodes::update_node))
        .route("/api/v1/nodes/{id}/update-services", post(nodes::update_services))
        .route("/api/v1/nodes/{id}/history", get(nodes::history))
        .route("/api/v1/nodes/{id}/token", post(rekey::reissue))
        .route("/api/v1/nodes/{id}/uptime", get(uptime::node))
        .route("/api/v1/nodes/{id}/uptime/history", get(uptime::history))
        .route("/api/v1/uptime", get(uptime::fleet))
        .route("/api/v1/nodes/{id}/reprovision", post(provision::request))
        .route("/api/v1/nodes/{id}/stream", axum::routing::delete(streams::stop))
        .route("/api/v1/body-anomalies", get(streams::anomalies))
        .route("/api/v1/bodies", get(bodies::list))
        .route("/api/v1/nodes/{id}/head-assignment", post(heads::assign))
        .route("/api/v1/nodes/{id}/allowed-experiences", post(heads::allowed_experiences))
        .route("/api/v1/heads", get(heads::list).post(heads::enroll))
        .route("/api/v1/heads/{id}", get(heads::config).put(heads::report))
        .route("/api/v1/enroll-qr", get(heads::enroll_qr))
        .route("/api/v1/bodies/eligible", get(heads::eligible))
        .route("/api/v1/heads/{id}/experiences", get(heads::experiences))
        .route("/api/v1/heads/{id}/screenshot", get(heads::screenshot))
        .route("/api/v1/heads/{id}/logs", get(heads::logs))
        .route("/api/v1/sessions", get(sessions::list))
        .route("/api/v1/sessions/{id}", get(sessions::get_one))
        .route("/api/v1/sessions/{id}/logs", get(sessions::logs))
        .route("/api/v1/nodes/{id}/exec", post(exec::submit))
        .route("/api/v1/nodes/{id}/exec/{exec}/result", get(exec::result))
        .route("/api/v1/nodes/{id}/exec/queue", get(exec::queue).delete(exec::clear))
        .route("/api/v1/nodes/{id}/exec/queue/{exec}", axum::routing::delete(exec::cancel))
        .route("/api/v1/nodes/{id}/shell", get(shell::open))
        .route("/api/v1/body/heartbeat", post(body::heartbeat))
        .route("/api/v1/body/provision-result", post(provision::result))
        .route("/api/v1/body/rekey-key", axum::routing::put(rekey::register_key))
        .route("/api/v1/body/rekey", get(rekey::pending).post(rekey::claim))
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
        .route("/metrics", get(crate::service::metrics::scrape::<AppState>))
        .route("/api/v1/backup", crate::service::backup::route::<AppState>("hydracluster"))
        .route("/api/v1/library/rollouts", get(library::rollouts))
        .route("/api/v1/library/rollouts/{id}", get(library::rollout))
        .route("/api/v1/library/rollouts/{id}/{action}", post(library::act))
        .route("/api/v1/library/events", get(library::events))
        .route("/api/v1/openapi.json", crate::service::openapi::route(&openapi::document()))
        .merge(crate::cluster::console::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::service::metrics::track::<AppState>,
        ))
        .with_state(state)
}
