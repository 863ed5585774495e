//! `hydranode`: the Linux node agent (enrollment, heartbeats, exec, provisioning).
//!
//! - `cli`: the command line and exit codes (3: the token was revoked).
//! - `enroll`, `identity`: `hydranode enroll` and the state directory.
//! - `run`: the loops side by side until a signal: `heartbeat`, `exec` and `shell`;
//!   `head`: on a kiosk head, its status report from the status file.
//! - `provision`: role recipes on reprovision (download, sha256, unpack, hook,
//!   `current` switch, result).
//! - `runner`: one command in its own process group, capped output, timeout, cancel.
//! - `shell`: terminals on a PTY for `exec --shell`, relayed over a WebSocket.
//! - `client`: the HTTP protocol with hydracluster; `backoff`: retry delays.

pub mod backoff;
pub mod cli;
pub mod client;
pub mod enroll;
pub mod exec;
pub mod head;
pub mod heartbeat;
pub mod identity;
pub mod provision;
pub mod rekey;
pub mod run;
pub mod runner;
pub mod shell;

/// The server no longer accepts this node's token; the message says what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked(pub String);

/// Resolves once the stop flag is set (or its sender is gone, which means the same).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
