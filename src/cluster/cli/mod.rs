//! The `hydracluster` command line: `serve`, `audit`, `repair`, and the admin commands
//! that talk to a running server over its REST API, one file per family (`nodes`,
//! `exec`, `heads`, `streams`, `log`) with a function per command.

use crate::service::backup::{BackupCommand, RestoreArgs};
use crate::service::cli::{AuditOptions, RepairArgs, TokenSource};
use crate::service::client::Client;
use clap::{Args, Parser, Subcommand};
use hydra_projections::ClusterViews;
use std::path::PathBuf;

mod exec;
mod heads;
mod log;
mod nodes;
mod shell;
mod streams;

pub use crate::cluster::config::ServeArgs;
pub use log::audit;

#[derive(Debug, Parser)]
#[command(name = "hydracluster", version, about = "Hydra's control plane: server and admin CLI")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane server.
    Serve(ServeArgs),
    /// Replay a data dir's log offline: check it and print the state digest.
    Audit(AuditArgs),
    /// Rebuild a damaged log from its intact prefix (the server stopped): keeps events
    /// 1..=SEQ, moves the damaged data dir aside and exports what it drops.
    Repair(RepairArgs),
    /// Write a backup of the log: from the running server (a consistent copy as of
    /// one seq while it keeps taking writes), or offline with --data. Prints the seq
    /// and digest it recorded.
    Backup(BackupCommand<ClientArgs>),
    /// Restore a backup into a new or empty data dir: every record and the checksum
    /// verified, the digest compared with the one the backup recorded.
    Restore(RestoreArgs),
    /// List nodes.
    Nodes(nodes::List),
    /// Show one node.
    Node(NodeJsonArgs),
    /// Approve a pending node, giving it roles and a place.
    Approve(nodes::Approve),
    /// Reject a pending node.
    Reject(NodeArgs),
    /// Remove a node from the fleet (its token stops working).
    Remove(NodeArgs),
    /// Replace a node's roles.
    Roles(nodes::Roles),
    /// Move a node to a district and venue (and environment).
    Placement(nodes::Placement),
    /// Drain a node (or undrain it with --off).
    Drain(nodes::Drain),
    /// A node's events, oldest first.
    History(NodeJsonArgs),
    /// Run a command on a node through the exec queue and wait for its result.
    /// The exit code follows the remote command's (124 timed out, 130 cancelled,
    /// 125 failed or expired before it could run). With --shell, a live terminal
    /// instead.
    Exec(exec::Exec),
    /// Ask a node to reinstall its roles on its next heartbeat.
    Reprovision(NodeArgs),
    /// Force-stop a body's stream (through its exec channel).
    StreamStop(NodeArgs),
    /// List the kiosk heads.
    Heads(heads::List),
    /// Pin a head to a body (`none` clears the assignment).
    Assign(heads::Assign),
    /// Set the experiences a head may offer (none: it offers nothing).
    Allow(heads::Allow),
    /// Bodies in an anomalous state (orphan streams, busy GPUs without a stream).
    Anomalies(streams::Anomalies),
    /// A node's exec queue: the command in flight and those waiting.
    Queue(NodeJsonArgs),
    /// Cancel a queued or in-flight command.
    Cancel(exec::Cancel),
    /// The live server's state digest and sequence number.
    Digest {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The data dir to audit (the server must not be running on it).
    #[arg(long, env = "HYDRACLUSTER_DATA", default_value = "./hydra-data")]
    pub data: PathBuf,
    #[command(flatten)]
    pub options: AuditOptions,
}

/// The server and token of every admin command. `--token` is accepted too, as the
/// library's CLI spells it.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The hydracluster server.
    #[arg(long, env = "HYDRACLUSTER_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Admin token [default: the one in $HYDRACLUSTER_DATA or ./hydra-data/admin-token].
    #[arg(long, alias = "token", env = "HYDRACLUSTER_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// Where the admin commands find their token.
const TOKEN: TokenSource = TokenSource {
    flag: "admin-token",
    env: "HYDRACLUSTER_TOKEN",
    data_env: "HYDRACLUSTER_DATA",
    default_data: "./hydra-data",
};

impl ClientArgs {
    /// A client of the server, with the token given or the local server's; an error
    /// when there is none.
    fn client(&self) -> anyhow::Result<Client> {
        TOKEN.client(&self.server, self.admin_token.as_deref())
    }
}

/// The arguments of a command about one node: its id, and the server.
#[derive(Debug, Args)]
pub struct NodeArgs {
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// The same and `--json`, for the commands that print what they read.
#[derive(Debug, Args)]
pub struct NodeJsonArgs {
    id: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs an admin command against a server; returns the process exit code.
pub async fn run_client(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Nodes(a) => nodes::nodes(a).await,
        Command::Node(a) => nodes::node(a).await,
        Command::Approve(a) => nodes::approve(a).await,
        Command::Reject(a) => nodes::reject(a).await,
        Command::Remove(a) => nodes::remove(a).await,
        Command::Roles(a) => nodes::roles(a).await,
        Command::Placement(a) => nodes::placement(a).await,
        Command::Drain(a) => nodes::drain(a).await,
        Command::History(a) => nodes::history(a).await,
        Command::Reprovision(a) => nodes::reprovision(a).await,
        Command::Exec(a) => exec::exec(a).await,
        Command::Queue(a) => exec::queue(a).await,
        Command::Cancel(a) => exec::cancel(a).await,
        Command::StreamStop(a) => streams::stream_stop(a).await,
        Command::Anomalies(a) => streams::anomalies(a).await,
        Command::Heads(a) => heads::heads(a).await,
        Command::Assign(a) => heads::assign(a).await,
        Command::Allow(a) => heads::allow(a).await,
        Command::Digest { client } => log::digest(&client).await,
        Command::Backup(a) => {
            let client = || a.client.client();
            crate::service::backup::backup_cmd::<ClusterViews>("hydracluster", &a.backup, client)
                .await
                .map(|_| 0)
        }
        Command::Serve(_) | Command::Audit(_) | Command::Repair(_) | Command::Restore(_) => {
            unreachable!("handled by main")
        }
    }
}
