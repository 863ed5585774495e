//! Starting and stopping `hydracluster serve`: open the store, recover the views,
//! start the writer, the watchdogs and the HTTP server; on shutdown, end live streams,
//! stop the writer cleanly (final snapshot) and return.
use super::api::{router, AppState};
use super::config::Config;
use super::watchdogs;
use crate::service::start::{self, Running};
use tokio::sync::watch;

/// Opens the data dir and starts serving on `config.listen` (port 0 picks one).
pub async fn start(mut config: Config) -> anyhow::Result<Running> {
    let opened = start::open(&config).await?;
    if config.listen.port() == 0 && config.server_url.ends_with(":0") {
        config.server_url = format!("http://{}", opened.addr);
    }
    let ledger = opened.ledger.clone();
    let tokens = start::tokens(
        &config,
        &opened,
        config.observer_token.as_deref(),
        config.fleet_enrollment_token.as_deref(),
    )?;
    let (stop, stopped) = watch::channel(false);
    let state = AppState::new(config, ledger.clone(), tokens, stopped);
    let checker = tokio::spawn(watchdogs::offline_checker(
        ledger.clone(),
        state.liveness.clone(),
        state.config.heartbeat_timeout,
        state.config.offline_check_interval,
    ));
    let wake = tokio::spawn(crate::cluster::waiters::run(ledger.clone(), state.waiters.clone()));
    let deadlines = tokio::spawn(watchdogs::exec_deadlines(
        ledger.clone(),
        state.config.exec_timeout_grace,
        state.config.exec_watchdog_interval,
        state.cluster_metrics.exec_watchdog_timeouts.clone(),
    ));
    let retention = tokio::spawn(watchdogs::output_retention(
        ledger.clone(),
        state.config.exec_output_retention,
        state.config.exec_watchdog_interval,
    ));
    let provisioning = tokio::spawn(watchdogs::provision_deadlines(
        ledger.clone(),
        state.config.provision_deadline,
        state.config.provision_watchdog_interval,
    ));
    let anomalies = tokio::spawn(watchdogs::body_anomalies(
        ledger.clone(),
        state.liveness.clone(),
        state.config.gpu_busy_threshold_pct,
        state.config.anomaly_check_interval,
    ));
    let (approved, pending) =
        (state.config.heartbeat_event_interval, state.config.pending_heartbeat_event_interval);
    let held = watchdogs::held_changes_tick(approved, pending).map(|every| {
        tokio::spawn(watchdogs::held_changes(
            ledger.clone(),
            state.liveness.clone(),
            approved,
            pending,
            every,
        ))
    });
    let app = router(state.clone());
    let tasks =
        [checker, wake, deadlines, retention, provisioning, anomalies].into_iter().chain(held).collect();
    Ok(start::launch(opened, app, state, stop, tasks))
}
