//! The `hydraexperiencelibrary` command line: `serve`, `audit`, `repair`, and client
//! commands that talk to a running library over its HTTP API (SPEC §6, §11), one file
//! per family (`experiences`, `builds`, `rollouts`, `status`) with a function per command.

pub use super::config::ServeArgs;
use crate::service::backup::{BackupCommand, RestoreArgs};
use crate::service::cli::{AuditOptions, RepairArgs, TokenSource};
use crate::service::client::Client;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

mod builds;
mod experiences;
mod rollouts;
mod status;

#[derive(Debug, Parser)]
#[command(
    name = "hydraexperiencelibrary",
    version,
    about = "Hydra's ExperienceLibrary: experiences, builds, promotions and rollouts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the library server.
    Serve(ServeArgs),
    /// Replay the library's log offline (the server stopped), check every record and
    /// print the digest of the rebuilt views, to compare with `GET /api/v1/audit/digest`.
    Audit(AuditArgs),
    /// Rebuild a damaged log from its intact prefix (the server stopped): keeps events
    /// 1..=SEQ, moves the damaged data dir aside and exports what it drops.
    Repair(RepairArgs),
    /// Write a backup of the log: from the running library (a consistent copy as of
    /// one seq while it keeps taking writes), or offline with --data. Prints the seq
    /// and digest it recorded.
    Backup(BackupCommand<ClientArgs>),
    /// Restore a backup into a new or empty data dir: every record and the checksum
    /// verified, the digest compared with the one the backup recorded.
    Restore(RestoreArgs),
    /// Promote an experience: development → staging, or staging → production. Prints
    /// the rollout id (nothing when there were no nodes to reprovision).
    Promote(rollouts::Promote),
    /// Show one experience: its builds and what each environment runs.
    Get(experiences::Get),
    /// The library's health, every experience's environments, and active rollouts.
    Status(status::Status),
    /// List rollouts, newest first.
    Rollouts(rollouts::List),
    /// Show or steer one rollout.
    Rollout {
        #[command(subcommand)]
        command: rollouts::RolloutCommand,
    },
    /// Create an experience.
    Create(experiences::Create),
    /// Register a build by hand (for setups without HydraRelease).
    Build(builds::Build),
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The data dir to audit (the server must not be running on it).
    #[arg(long, env = "HYDRAEXPERIENCELIBRARY_DATA", default_value = "./hydra-library-data")]
    pub data: PathBuf,
    #[command(flatten)]
    pub options: AuditOptions,
}

/// `hydraexperiencelibrary audit`.
pub fn audit(args: &AuditArgs) -> anyhow::Result<()> {
    crate::service::cli::audit_log::<hydra_projections::LibraryViews>(
        "hydraexperiencelibrary",
        &args.data,
        &args.options,
        ("experiences", |v| v.experiences.len()),
    )
}

/// The server and token of every client command. `--admin-token` is accepted too, as
/// hydracluster's CLI spells it.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The library server.
    #[arg(long, env = "HYDRAEXPERIENCELIBRARY_SERVER", default_value = "http://127.0.0.1:8090")]
    pub server: String,
    /// Admin or observer token [default: the one in $HYDRAEXPERIENCELIBRARY_DATA or
    /// ./hydra-library-data/admin-token].
    #[arg(long, alias = "admin-token", env = "HYDRAEXPERIENCELIBRARY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Where the client commands find their token.
const TOKEN: TokenSource = TokenSource {
    flag: "token",
    env: "HYDRAEXPERIENCELIBRARY_TOKEN",
    data_env: "HYDRAEXPERIENCELIBRARY_DATA",
    default_data: "./hydra-library-data",
};

impl ClientArgs {
    /// A client of the library, with the token given or the local library's; an
    /// error when there is none.
    fn client(&self) -> anyhow::Result<Client> {
        TOKEN.client(&self.server, self.token.as_deref())
    }
}

/// Runs a client command; returns the process exit code.
pub async fn run_client(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Promote(a) => rollouts::promote(a).await,
        Command::Get(a) => experiences::get(a).await,
        Command::Status(a) => status::status(a).await,
        Command::Rollouts(a) => rollouts::rollouts(a).await,
        Command::Rollout { command } => rollouts::rollout(command).await,
        Command::Create(a) => experiences::create(a).await,
        Command::Build(a) => builds::build(a).await,
        Command::Backup(a) => {
            let client = || a.client.client();
            crate::service::backup::backup_cmd::<hydra_projections::LibraryViews>(
                "hydraexperiencelibrary",
                &a.backup,
                client,
            )
            .await
            .map(|_| 0)
        }
        Command::Serve(_) | Command::Audit(_) | Command::Repair(_) | Command::Restore(_) => {
            unreachable!("handled by main")
        }
    }
}
