//! `hydracluster`: the control plane server (`serve`), the offline `audit` and `repair`, and the
//! admin CLI.

use clap::Parser;
use hydra::cluster::cli::{audit, run_client, Cli, Command};
use hydra::service::backup::restore_cmd;
use hydra::service::cli::{exit_code, init_logging, quiet_on_closed_pipe, repair_log};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    exit_code(match cli.command {
        Command::Serve(args) => args.serve().await.map(|_| 0),
        Command::Audit(args) => audit(&args).map(|_| 0),
        Command::Repair(args) => repair_log::<hydra_projections::ClusterViews>(&args).map(|_| 0),
        Command::Restore(args) => {
            restore_cmd::<hydra_projections::ClusterViews>("hydracluster", &args).map(|_| 0)
        }
        other => {
            quiet_on_closed_pipe();
            run_client(other).await
        }
    })
}
