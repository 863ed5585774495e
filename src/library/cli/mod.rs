//! The `hydraexperiencelibrary` command line: `serve`, `audit`, `repair`, and client
//! commands that talk to a running library over its HTTP API (SPEC §6, §11), one file
//! per family (`experiences`, `builds`, `rollouts`, `status`) with a function per command.

use crate::service::cli::ServiceCommand;
use clap::Parser;

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
pub enum Command {
    #[command(flatten)]
    Service(ServiceCommand<super::config::LibraryConfig>),
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

/// The server and token of every client command (`--server`, `--token`).
pub type ClientArgs = crate::service::cli::ClientArgs<super::config::LibraryConfig>;

/// Runs a command; returns the process exit code.
pub async fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Service(c) => c.run().await,
        Command::Promote(a) => rollouts::promote(a).await,
        Command::Get(a) => experiences::get(a).await,
        Command::Status(a) => status::status(a).await,
        Command::Rollouts(a) => rollouts::rollouts(a).await,
        Command::Rollout { command } => rollouts::rollout(command).await,
        Command::Create(a) => experiences::create(a).await,
        Command::Build(a) => builds::build(a).await,
    }
}
