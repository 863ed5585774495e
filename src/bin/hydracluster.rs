//! `hydracluster`: the control plane server (`serve`), the offline `audit` and `repair`, and the
//! admin CLI.

use clap::Parser;
use hydra::cluster::cli::{run, Command};
use hydra::logging::init_logging;
use hydra::service::cli::exit_code;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let command = Command::parse();
    init_logging();
    exit_code(run(command).await)
}
