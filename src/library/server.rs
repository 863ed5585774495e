//! Starting and stopping `hydraexperiencelibrary serve`: open its own event log with
//! the same store and ledger as hydracluster, start the rollout driver and the
//! HydraRelease follower, serve HTTP; on shutdown end live streams and stop the
//! writer cleanly.

use super::api::router;
use super::cluster_client::Cluster;
use super::config::LibraryConfig;
use super::state::{LibraryState, Links};
use crate::service::extract::AuthThrottle;
use crate::service::start::{open_service, stop_writer};
use crate::service::SseStats;
use anyhow::Context;
use hydra_core::auth::Tokens;
use hydra_core::ledger::LedgerConfig;
use hydra_projections::LibraryViews;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// A library that is up and answering (stop, wait, serve until a signal).
pub type Running = crate::service::start::Running<LibraryViews>;

/// Opens the library's data dir and starts serving on `config.listen`.
pub async fn start(config: LibraryConfig) -> anyhow::Result<Running> {
    config.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    let limits = config.conn_limits();
    limits.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    let ledger_config = LedgerConfig {
        snapshot_every: config.snapshot_every,
        min_free_bytes: config.min_free_bytes,
        ..LedgerConfig::default()
    };
    let (token, is_new, ledger) = open_service::<LibraryViews>(
        "hydraexperiencelibrary",
        &config.data,
        config.admin_token.as_deref(),
        ledger_config,
    )
    .await?;
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let tokens = Tokens::new(&[("admin".into(), token.clone())], config.observer_token.as_deref(), None);
    let cluster = config
        .cluster_url
        .as_deref()
        .map(|url| Cluster::new(url, config.cluster_token.clone(), config.http_timeout));
    let (stop, stopped) = watch::channel(false);
    let max_body = config.max_body_bytes;
    let (auth_fail_burst, auth_fail_window) = (config.auth_fail_burst, config.auth_fail_window);
    let state = LibraryState {
        config: Arc::new(config),
        ledger: ledger.clone(),
        tokens: Arc::new(tokens),
        stopping: stopped,
        sse: Arc::new(SseStats::default()),
        cluster,
        wake: Arc::new(Notify::new()),
        links: Arc::new(Links::default()),
        auth_throttle: Arc::new(AuthThrottle::new(auth_fail_burst, auth_fail_window)),
        connections: Arc::default(),
    };
    let driver = tokio::spawn(super::driver::run(state.clone()));
    let release = tokio::spawn(super::release::run(state.clone()));
    let app = router(state.clone()).layer(axum::extract::DefaultBodyLimit::max(max_body));
    let handle = ledger.clone();
    let serving = crate::service::serve::serve(listener, app, state, limits);
    let task = tokio::spawn(async move {
        let served = serving.await;
        for task in [driver, release] {
            task.abort();
            let _ = task.await;
        }
        // Every other handle is gone with the router and the tasks.
        stop_writer(ledger).await;
        served.context("serving HTTP")
    });
    Ok(Running { addr, admin_token: token, admin_token_is_new: is_new, stop, task, ledger: Some(handle) })
}
