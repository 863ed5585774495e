//! `hydranode run`: the heartbeat, exec, shell and provisioning loops side by side until a signal, or
//! until the server revokes the token; `--once` sends one heartbeat and returns.

use super::client::{self, Server};
use super::exec::{exec_loop, ExecOptions};
use super::head::{head_loop, Reports};
use super::heartbeat::{heartbeat_loop, Beats, Direction};
use super::identity::Kind;
use super::provision::provision_loop;
use super::shell::shell_loop;
use super::{identity, Revoked};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub state: Option<PathBuf>,
    pub server: Option<String>,
    /// `None`: follow the server's `heartbeat_interval_s`.
    pub heartbeat_interval: Option<Duration>,
    pub exec_wait_s: u64,
    pub status_file: Option<PathBuf>,
    pub once: bool,
}

/// How the agent ended, when it ended on its own terms.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// A signal, or `--once` done.
    Done,
    /// The server no longer accepts the token (removed or rejected).
    Revoked(String),
}

/// How long the loops get to wind down after a signal: enough to kill a running
/// command's group and try to deliver its result once.
const WIND_DOWN: Duration = Duration::from_secs(15);

/// Runs the agent until a signal (or `--once` is done). When the server stops taking
/// the token and has a re-issue pending for this node, the agent claims its new token
/// and starts again with it; otherwise it ends with `Revoked`.
pub async fn run(opts: RunOptions) -> anyhow::Result<Ended> {
    let dir = identity::state_dir(opts.state.clone())?;
    loop {
        let ended = run_with_token(&opts, &dir).await?;
        if !matches!(ended, Ended::Revoked(_)) || !rekeyed(&opts, &dir).await {
            return Ok(ended);
        }
    }
}

/// Whether a re-issued token was claimed (tried a few times over about half a minute
/// while the server cannot be reached).
async fn rekeyed(opts: &RunOptions, dir: &std::path::Path) -> bool {
    let Ok((identity, _)) = identity::load(dir) else { return false };
    let Ok(base) = client::base_url(opts.server.as_deref().unwrap_or(&identity.server_url)) else {
        return false;
    };
    let mut pause = Duration::from_secs(1);
    for _ in 0..5 {
        match super::rekey::claim(dir, &base, &identity.node_id).await {
            Ok(claimed) => return claimed,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "claiming a re-issued token failed; trying again")
            }
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    false
}

async fn run_with_token(opts: &RunOptions, dir: &std::path::Path) -> anyhow::Result<Ended> {
    let opts = opts.clone();
    let dir = dir.to_owned();
    let (identity, token) = identity::load(&dir)?;
    let base = client::base_url(opts.server.as_deref().unwrap_or(&identity.server_url))?;
    let server = Server::new(base.clone(), token);
    super::rekey::register(&server, &super::rekey::key(&dir)?).await;
    let status_file = opts.status_file.unwrap_or_else(|| dir.join("status.json"));

    let head = identity.kind == Kind::Head;
    if opts.once {
        let mut beats = Beats::new(status_file.clone());
        let beat = match beats.beat(&server).await {
            Ok(_) => Ok(Ended::Done),
            Err(e) if e.revoked() => return Ok(Ended::Revoked(e.to_string())),
            Err(e) => Err(e).context("the heartbeat failed"),
        };
        if head && beat.is_ok() {
            match Reports::new(status_file).tick(&server, &identity.node_id).await {
                Err(e) if e.revoked() => return Ok(Ended::Revoked(e.to_string())),
                Err(e) => return Err(e).context("the head status report failed"),
                Ok(()) => {}
            }
        }
        return beat;
    }

    tracing::info!(
        node_id = %identity.node_id,
        name = %identity.name,
        kind = if head { "head" } else { "body" },
        server = %base,
        interval = %opts.heartbeat_interval.map(|i| humantime::format_duration(i).to_string()).unwrap_or_else(|| "as the server says".into()),
        "hydranode {} running",
        env!("CARGO_PKG_VERSION")
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Provisioning runs in its own task, one at a time: heartbeats go on meanwhile.
    let (jobs_tx, jobs_rx) = tokio::sync::mpsc::channel(2);
    let in_hand = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut provisioning =
        tokio::spawn(provision_loop(server.clone(), dir.clone(), jobs_rx, in_hand.clone(), stop_rx.clone()));
    let (direction_tx, direction) = tokio::sync::watch::channel(Direction {
        head,
        interval: opts.heartbeat_interval.unwrap_or(Direction::DEFAULT_INTERVAL),
    });
    let mut beating = tokio::spawn(heartbeat_loop(
        server.clone(),
        opts.heartbeat_interval.is_none(),
        direction_tx,
        status_file.clone(),
        jobs_tx,
        in_hand,
        stop_rx.clone(),
    ));
    // A head also reports its kiosk status, for as long as the server says it is one
    // (a machine enrolled as a body becomes a head when its roles make it one).
    let mut reporting = tokio::spawn(report_while_head(
        server.clone(),
        identity.node_id.clone(),
        direction,
        status_file,
        stop_rx.clone(),
    ));
    // Shells have their own loop, so a busy exec queue never holds a terminal back.
    let mut shelling = tokio::spawn(shell_loop(server.clone(), opts.exec_wait_s, stop_rx.clone()));
    let exec_opts = ExecOptions { wait_s: opts.exec_wait_s, state: dir };
    let mut executing = tokio::spawn(exec_loop(server, exec_opts, stop_rx));

    let first = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("stopping");
            None
        }
        r = &mut beating => Some(r),
        r = &mut executing => Some(r),
        r = &mut shelling => Some(r),
        r = &mut provisioning => Some(r),
        r = &mut reporting => Some(r),
    };
    let _ = stop_tx.send(true);
    let mut ended = match first {
        None | Some(Ok(Ok(()))) => Ended::Done,
        Some(Ok(Err(Revoked(message)))) => Ended::Revoked(message),
        Some(Err(join)) => return Err(join).context("an agent loop failed"),
    };
    // Let the other loops finish: a running command is killed and its result sent,
    // open shells are hung up.
    let rest = async {
        for task in [&mut beating, &mut executing, &mut shelling, &mut provisioning, &mut reporting] {
            if task.is_finished() {
                continue;
            }
            if let Ok(Err(Revoked(message))) = task.await {
                if ended == Ended::Done {
                    ended = Ended::Revoked(message);
                }
            }
        }
    };
    if tokio::time::timeout(WIND_DOWN, rest).await.is_err() {
        tracing::warn!("the agent loops did not stop in time");
    }
    Ok(ended)
}

/// Runs the head's status reports while the server's answers say this node is a head;
/// ends only when the agent stops (or the reports find the token revoked).
async fn report_while_head(
    server: Server,
    node_id: String,
    mut direction: tokio::sync::watch::Receiver<Direction>,
    status_file: PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Revoked> {
    loop {
        let beats_ended = tokio::select! {
            became = direction.wait_for(|d| d.head) => became.is_err(),
            _ = super::stopped(&mut stop) => return Ok(()),
        };
        if beats_ended {
            // The heartbeat loop says why it ended; this one waits for the stop.
            super::stopped(&mut stop).await;
            return Ok(());
        }
        tracing::info!("reporting as a kiosk head");
        let interval = direction.borrow().interval;
        tokio::select! {
            r = head_loop(server.clone(), node_id.clone(), interval, status_file.clone(), stop.clone()) => return r,
            _ = direction.wait_for(|d| !d.head) => tracing::info!("no longer a head: status reports stop"),
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
