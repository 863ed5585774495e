//! `hydranode`: the Linux node agent; the logic lives in `hydra::agent`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = hydra::agent::cli::Cli::parse();
    hydra::logging::init_logging();
    hydra::agent::cli::main(cli).await
}
