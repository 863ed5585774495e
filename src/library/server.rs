//! Starting and stopping `hydraexperiencelibrary serve`: open its own event log with
//! the same store and ledger as hydracluster, start the rollout driver and the
//! HydraRelease follower, serve HTTP; on shutdown end live streams and stop the
//! writer cleanly.

use super::api::router;
use super::cluster_client::Cluster;
use super::config::LibraryConfig;
use super::state::{LibraryState, Links};
use crate::service::extract::AuthThrottle;
use crate::service::metrics::Metrics;
use crate::service::start;
use crate::service::SseStats;
use hydra_projections::LibraryViews;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// A library that is up and answering (stop, wait, serve until a signal).
pub type Running = start::Running<LibraryViews>;

/// Opens the library's data dir and starts serving on `config.listen`.
pub async fn start(config: LibraryConfig) -> anyhow::Result<Running> {
    let opened = start::open(&config).await?;
    let ledger = opened.ledger.clone();
    let tokens = start::tokens(&config, &opened, config.observer_token.as_deref(), None)?;
    let cluster = config
        .cluster_url
        .as_deref()
        .map(|url| Cluster::new(url, config.cluster_token.clone(), config.http_timeout));
    let (stop, stopped) = watch::channel(false);
    let max_body = config.max_body_bytes;
    let (auth_fail_burst, auth_fail_window) = (config.auth_fail_burst, config.auth_fail_window);
    let (sse, connections) = (Arc::new(SseStats::default()), Arc::default());
    let metrics = Metrics::new(&ledger, Arc::clone(&sse), Arc::clone(&connections), |r| {
        super::metrics::register(r, ledger.clone())
    });
    let state = LibraryState {
        config: Arc::new(config),
        ledger: ledger.clone(),
        tokens: Arc::new(tokens),
        stopping: stopped,
        sse,
        cluster,
        wake: Arc::new(Notify::new()),
        links: Arc::new(Links::default()),
        auth_throttle: Arc::new(AuthThrottle::new(auth_fail_burst, auth_fail_window)),
        connections,
        metrics: Arc::new(metrics),
    };
    let driver = tokio::spawn(super::driver::run(state.clone()));
    let release = tokio::spawn(super::release::run(state.clone()));
    let app = router(state.clone()).layer(axum::extract::DefaultBodyLimit::max(max_body));
    Ok(start::launch(opened, app, state, stop, vec![driver, release]))
}
