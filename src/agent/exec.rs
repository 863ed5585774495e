//! The exec loop: long-polls the server for the next command, runs it (one at a time)
//! while watching whether the server still expects it, and delivers the result,
//! retrying through outages. A result waiting to be delivered is kept on disk, so an
//! agent restart does not lose it either.

use super::backoff::{Backoff, PollPace, MIN_POLL};
use super::client::{CallError, ExecCommand, ExecResult, Server};
use super::identity::write_private;
use super::runner::{self, Outcome};
use super::{stopped, Revoked};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The file that holds a result until the server has answered it.
pub const SPOOL_FILE: &str = "pending-result.json";

/// How long a result is retried before it is given up.
const DELIVERY_LIMIT: Duration = Duration::from_secs(5 * 60);

/// A timeout the server leaves out (or sets to 0) is taken as this.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// `?wait=` of the long polls, in seconds.
    pub wait_s: u64,
    /// The state directory, where a result waits for delivery.
    pub state: PathBuf,
}

/// Why a running command was killed before it ended by itself.
#[derive(Debug)]
enum Killed {
    /// The server recorded an end of its own (cancelled, timed out, …): no result.
    Server(String),
    /// The server does not know the command (404): no result.
    Unknown,
    /// The token was revoked while it ran: no result; the agent stops.
    Revoked(String),
    /// The agent is stopping: the result says so and is delivered (or kept on disk).
    Stopping,
}

pub async fn exec_loop(
    server: Server,
    opts: ExecOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Revoked> {
    let spool = opts.state.join(SPOOL_FILE);
    if let Some(pending) = read_spool(&spool) {
        tracing::info!(id = %pending.id, "delivering the result kept from before the restart");
        deliver(&server, pending, &spool, &mut stop).await?;
    }
    let mut pace = PollPace::new("polling for commands");
    loop {
        let asked = Instant::now();
        let polled = tokio::select! {
            r = server.next_command(opts.wait_s) => r,
            _ = stopped(&mut stop) => return Ok(()),
        };
        let pause = match polled {
            Ok(Some(cmd)) => {
                handle(&server, cmd, &opts, &spool, &mut stop).await?;
                pace.answered()
            }
            Ok(None) => pace.empty(asked),
            Err(e) if e.revoked() => return Err(Revoked(e.to_string())),
            Err(e) => pace.failed(&e),
        };
        if *stop.borrow() {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(&mut stop) => return Ok(()),
        }
    }
}

/// An id goes into a URL path: only what the server's ids are made of.
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Runs one command and delivers its result (or not, when the server ended it).
async fn handle(
    server: &Server,
    cmd: ExecCommand,
    opts: &ExecOptions,
    spool: &Path,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Revoked> {
    if !valid_id(&cmd.id) {
        tracing::error!(id = ?cmd.id, "the server sent a command with an id this agent cannot use; not run");
        return Ok(());
    }
    let timeout = match cmd.timeout_ms {
        Some(ms) if ms > 0 => Duration::from_millis(ms),
        _ => DEFAULT_TIMEOUT,
    };
    tracing::info!(id = %cmd.id, timeout = %humantime::format_duration(timeout), "running a command");
    tracing::debug!(id = %cmd.id, command = %cmd.command, "command text");

    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    let cancel = async move {
        if cancel_rx.await.is_err() {
            // The sender is only dropped with this whole function: never a cancel.
            std::future::pending::<()>().await;
        }
    };
    let run = runner::run_command(&cmd.command, timeout, cancel);
    tokio::pin!(run);
    let watching = watch_until_ended(server, &cmd.id, opts.wait_s);
    tokio::pin!(watching);
    let mut cancel_tx = Some(cancel_tx);
    let mut killed: Option<Killed> = None;
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            why = &mut watching, if killed.is_none() => killed = Some(why),
            _ = stopped(stop), if killed.is_none() => killed = Some(Killed::Stopping),
        }
        if let Some(tx) = cancel_tx.take() {
            let _ = tx.send(());
        }
    };
    let result = to_result(&cmd.id, &outcome, matches!(killed, Some(Killed::Stopping)));
    match killed {
        None => {
            tracing::info!(id = %cmd.id, exit_code = %shown_code(outcome.exit_code), timed_out = outcome.timed_out, duration_ms = result.duration_ms, "command ended");
            deliver(server, result, spool, stop).await
        }
        Some(Killed::Server(status)) => {
            tracing::info!(id = %cmd.id, status = %status, "the server ended the command; killed it, no result sent");
            Ok(())
        }
        Some(Killed::Unknown) => {
            tracing::warn!(id = %cmd.id, "the server does not know the command any more; killed it, no result sent");
            Ok(())
        }
        Some(Killed::Revoked(message)) => Err(Revoked(message)),
        Some(Killed::Stopping) => {
            tracing::info!(id = %cmd.id, "the agent is stopping: killed the command; sending its result");
            deliver_once(server, &result, spool).await
        }
    }
}

/// An exit code for the log: the number, or "none" when the command did not start.
fn shown_code(code: Option<i32>) -> String {
    code.map_or_else(|| "none".into(), |c| c.to_string())
}

fn to_result(id: &str, o: &Outcome, agent_stopping: bool) -> ExecResult {
    let mut stderr = o.stderr.clone();
    if agent_stopping && o.cancelled {
        // Says why the command ended early, since the server did not ask for it.
        stderr.push_str("\n[hydranode: killed because the agent is stopping]\n");
    }
    ExecResult {
        id: id.to_owned(),
        exit_code: o.exit_code,
        stdout: o.stdout.clone(),
        stderr,
        duration_ms: o.duration.as_millis().try_into().unwrap_or(u64::MAX),
        truncated: o.truncated,
        timed_out: o.timed_out,
    }
}

/// Long-polls the command's status until the server no longer expects a result.
/// Errors other than 404 and a revoked token are retried: losing the watch must not
/// kill a command the server still wants.
async fn watch_until_ended(server: &Server, id: &str, wait_s: u64) -> Killed {
    let mut backoff = Backoff::default();
    loop {
        let asked = Instant::now();
        let pause = match server.watch(id, wait_s).await {
            Ok(status) if status == "dispatched" => {
                backoff.reset();
                MIN_POLL.saturating_sub(asked.elapsed())
            }
            Ok(status) => return Killed::Server(status),
            Err(e) if e.status() == Some(404) => return Killed::Unknown,
            Err(e) if e.revoked() => return Killed::Revoked(e.to_string()),
            Err(e) => {
                tracing::debug!(id = %id, error = %e, "watching the command failed; retrying");
                backoff.next_delay()
            }
        };
        tokio::time::sleep(pause).await;
    }
}

fn read_spool(path: &Path) -> Option<ExecResult> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(result) => Some(result),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "dropping an unreadable kept result");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

fn keep(spool: &Path, result: &ExecResult) {
    let json = serde_json::to_vec(result).expect("a result serialises");
    // Output may be sensitive: 0600 like the token.
    if let Err(e) = write_private(spool, &json, 0o600) {
        tracing::warn!(error = %format!("{e:#}"), "cannot keep the result on disk; delivering from memory only");
    }
}

fn forget(spool: &Path) {
    let _ = std::fs::remove_file(spool);
}

/// What to do with the server's answer to a result.
enum Answer {
    Done,
    Retry(CallError),
    Shrink,
    Revoked(String),
}

fn judge(id: &str, posted: Result<(), CallError>) -> Answer {
    match posted {
        Ok(()) => {
            tracing::info!(id = %id, "result recorded");
            Answer::Done
        }
        Err(e) if e.revoked() => Answer::Revoked(e.to_string()),
        Err(e) if e.status() == Some(409) => {
            tracing::info!(id = %id, error = %e, "the server no longer expects this result (cancelled, timed out or a duplicate)");
            Answer::Done
        }
        Err(e) if e.status() == Some(413) => Answer::Shrink,
        Err(e) if e.transient() => Answer::Retry(e),
        Err(e) => {
            tracing::warn!(id = %id, error = %e, "the server refused the result; dropping it");
            Answer::Done
        }
    }
}

/// Posts a result until the server answers it, through outages, for up to
/// `DELIVERY_LIMIT`. Stopping the agent leaves it on disk for the next start.
async fn deliver(
    server: &Server,
    mut result: ExecResult,
    spool: &Path,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Revoked> {
    keep(spool, &result);
    let give_up = Instant::now() + DELIVERY_LIMIT;
    let mut backoff = Backoff::default();
    loop {
        let posted = tokio::select! {
            r = server.post_result(&result) => r,
            _ = stopped(stop) => {
                tracing::info!(id = %result.id, "stopping before the result was delivered; it is kept for the next start");
                return Ok(());
            }
        };
        match judge(&result.id, posted) {
            Answer::Done => {
                forget(spool);
                return Ok(());
            }
            Answer::Revoked(message) => {
                forget(spool);
                return Err(Revoked(message));
            }
            Answer::Shrink => {
                if !shrink(&mut result) {
                    tracing::error!(id = %result.id, "the server refuses even a shortened result as too large; dropping it");
                    forget(spool);
                    return Ok(());
                }
                tracing::warn!(id = %result.id, "the result is too large for the server; sending a shorter one (truncated)");
                keep(spool, &result);
            }
            Answer::Retry(e) => {
                if Instant::now() >= give_up {
                    tracing::error!(id = %result.id, error = %e, "could not deliver the result for 5 minutes; giving up");
                    forget(spool);
                    return Ok(());
                }
                tracing::warn!(id = %result.id, error = %e, "delivering the result failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stopped(stop) => {
                        tracing::info!(id = %result.id, "stopping before the result was delivered; it is kept for the next start");
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// One attempt, for when the agent is stopping; on failure the result stays on disk.
async fn deliver_once(server: &Server, result: &ExecResult, spool: &Path) -> Result<(), Revoked> {
    keep(spool, result);
    match tokio::time::timeout(Duration::from_secs(5), server.post_result(result)).await {
        Ok(posted) => match judge(&result.id, posted) {
            Answer::Done => forget(spool),
            Answer::Revoked(message) => {
                forget(spool);
                return Err(Revoked(message));
            }
            Answer::Retry(_) | Answer::Shrink => {
                tracing::info!(id = %result.id, "the result could not be delivered now; it is kept for the next start");
            }
        },
        Err(_) => tracing::info!(id = %result.id, "no answer in time; the result is kept for the next start"),
    }
    Ok(())
}

/// Halves both outputs (at a character boundary) and marks the result truncated;
/// false when they are already small, so the size was not the output's fault.
fn shrink(result: &mut ExecResult) -> bool {
    const FLOOR: usize = 4 * 1024;
    if result.stdout.len() <= FLOOR && result.stderr.len() <= FLOOR {
        return false;
    }
    for text in [&mut result.stdout, &mut result.stderr] {
        if text.len() > FLOOR {
            let mut cut = text.len() / 2;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
    }
    result.truncated = true;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(stdout: &str, stderr: &str) -> ExecResult {
        ExecResult {
            id: "exec-1".into(),
            exit_code: Some(0),
            stdout: stdout.into(),
            stderr: stderr.into(),
            duration_ms: 1,
            truncated: false,
            timed_out: false,
        }
    }

    #[test]
    fn shrinking_halves_big_outputs_at_char_boundaries() {
        let mut r = result(&"é".repeat(10_000), "small");
        assert!(shrink(&mut r));
        assert!(r.truncated);
        assert_eq!(r.stdout.chars().count(), 5_000);
        assert_eq!(r.stderr, "small");
        let mut r = result("small", "small");
        assert!(!shrink(&mut r));
    }

    #[test]
    fn ids_are_checked_before_they_go_into_a_url() {
        assert!(valid_id("exec-0123abcd"));
        assert!(!valid_id("../nodes"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(""));
    }

    #[test]
    fn a_kept_result_round_trips_and_garbage_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join(SPOOL_FILE);
        assert_eq!(read_spool(&spool), None);
        let r = result("out", "err");
        keep(&spool, &r);
        assert_eq!(read_spool(&spool), Some(r));
        std::fs::write(&spool, "garbage").unwrap();
        assert_eq!(read_spool(&spool), None);
        assert!(!spool.exists());
    }
}
