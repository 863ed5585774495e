//! `hydrapipeline`: the read-only observer of the Hydra services (`status`, `watch`);
//! the logic is in `hydra::pipeline`.

use clap::Parser;
use hydra::pipeline::cli::{Cli, Command};
use hydra::pipeline::{services_or_default, status, watch};

fn main() {
    // An empty variable means "not set" (as `HYDRAPIPELINE_SERVICES= cmd` intends), not
    // one service with an empty name. Still single-threaded here.
    for var in ["HYDRAPIPELINE_SERVICES", "HYDRAPIPELINE_TOKEN"] {
        if std::env::var_os(var).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(var);
        }
    }
    let cli = Cli::parse();
    let services = match services_or_default(cli.services) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hydrapipeline: {e}");
            std::process::exit(2);
        }
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("the tokio runtime starts");
    let code = runtime.block_on(async {
        match cli.command {
            Command::Status(args) => {
                status::run(&services, cli.token.as_deref(), args.timeout, args.json).await
            }
            Command::Watch(args) => {
                let starts = match args.starts(&services) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("hydrapipeline: {e}");
                        return 2;
                    }
                };
                let opts = watch::WatchOptions {
                    services,
                    token: cli.token,
                    types: args.types,
                    starts,
                    json: args.json,
                };
                watch::run(opts).await
            }
        }
    });
    // Follower tasks may still be waiting on the network: do not wait for them.
    runtime.shutdown_background();
    std::process::exit(code);
}
