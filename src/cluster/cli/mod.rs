//! The `hydracluster` command line: `serve`, `audit`, `repair`, and the admin commands
//! that talk to a running server over its REST API, one file per family (`nodes`,
//! `exec`, `heads`, `streams`, `log`) with a function per command.

use crate::service::cli::ServiceCommand;
use clap::{Args, Parser};

mod exec;
mod heads;
mod import;
mod log;
mod nodes;
mod shell;
mod streams;
mod uptime;

#[derive(Debug, Parser)]
#[command(name = "hydracluster", version, about = "Hydra's control plane: server and admin CLI")]
pub enum Command {
    #[command(flatten)]
    Service(ServiceCommand<crate::cluster::config::Config>),
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
    /// Re-issue a node's token: the old one is refused at once. An agent with a
    /// registered key takes the new one itself; otherwise it is printed, to deliver.
    Rekey(NodeArgs),
    /// Replace a node's roles.
    Roles(nodes::Roles),
    /// Move a node to a district and venue (and environment).
    Placement(nodes::Placement),
    /// Drain a node (or undrain it with --off).
    Drain(nodes::Drain),
    /// A node's events, oldest first.
    History(NodeJsonArgs),
    /// Rolling uptime of a node (or of every node) over the last 24h, 7d or 30d.
    Uptime(uptime::Uptime),
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
    /// Bring an existing fleet in from a node file, without touching the machines: each
    /// agent keeps the token it has. Through --server, or offline with --data (the
    /// server stopped). Exit code 1 when the file is refused (nothing is written).
    Import(import::ImportArgs),
    /// The live server's state digest and sequence number.
    Digest {
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The server and token of every admin command (`--server`, `--token`).
pub type ClientArgs = crate::service::cli::ClientArgs<crate::cluster::config::Config>;

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

/// Runs a command; returns the process exit code.
pub async fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Service(c) => c.run().await,
        Command::Nodes(a) => nodes::nodes(a).await,
        Command::Node(a) => nodes::node(a).await,
        Command::Approve(a) => nodes::approve(a).await,
        Command::Reject(a) => nodes::reject(a).await,
        Command::Remove(a) => nodes::remove(a).await,
        Command::Rekey(a) => nodes::rekey(a).await,
        Command::Roles(a) => nodes::roles(a).await,
        Command::Placement(a) => nodes::placement(a).await,
        Command::Drain(a) => nodes::drain(a).await,
        Command::History(a) => nodes::history(a).await,
        Command::Uptime(a) => uptime::uptime(a).await,
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
        Command::Import(a) => import::import(a).await,
    }
}
