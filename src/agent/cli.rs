//! The `hydranode` command line (`enroll`, `run`) and its exit codes.

use super::enroll::{enroll, EnrollOptions, HeadEnrollment};
use super::run::{run, Ended, RunOptions};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The exit code when the server no longer accepts this node's token, so that a
/// service manager (or a script) can tell "enroll again" from a transient failure.
pub const EXIT_REVOKED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "hydranode",
    version,
    about = "Hydra's node agent for Linux: enrolls this machine, heartbeats and runs commands",
    after_help = "Exit codes: 0 done, 1 error, 2 usage, 3 the server no longer accepts this node's token (enroll again)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enroll this machine with a hydracluster server: as a body (it then waits for an
    /// admin's approval), or with --fleet-token as a kiosk head (approved at once).
    Enroll(EnrollArgs),
    /// Run the agent: heartbeats and commands, until SIGTERM or SIGINT.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The hydracluster server, e.g. http://10.0.0.1:8080.
    #[arg(long)]
    pub server: String,
    /// The machine's name [default: the host name, sanitised].
    #[arg(long)]
    pub name: Option<String>,
    /// The address to register [default: the one the server sees].
    #[arg(long)]
    pub ip: Option<String>,
    /// State directory [default: ~/.hydranode].
    #[arg(long, env = "HYDRANODE_STATE")]
    pub state: Option<PathBuf>,
    /// Enroll again even if the state directory holds an identity (it is replaced).
    #[arg(long)]
    pub force: bool,
    /// Enroll as a kiosk head with the fleet enrollment token (needs --district and --venue).
    #[arg(long, env = "HYDRANODE_FLEET_TOKEN", requires_all = ["district", "venue"], conflicts_with = "ip")]
    pub fleet_token: Option<String>,
    /// The head's district (head enrollment only).
    #[arg(long, requires = "fleet_token")]
    pub district: Option<String>,
    /// The head's venue (head enrollment only).
    #[arg(long, requires = "fleet_token")]
    pub venue: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// State directory [default: ~/.hydranode].
    #[arg(long, env = "HYDRANODE_STATE")]
    pub state: Option<PathBuf>,
    /// The server to talk to, instead of the one kept at enrollment.
    #[arg(long)]
    pub server: Option<String>,
    /// Time between heartbeats (e.g. 30s, 500ms, or plain seconds) [default: what the
    /// server's heartbeat answer says, `heartbeat_interval_s`; 30s until it has answered].
    #[arg(long, value_parser = parse_interval)]
    pub heartbeat_interval: Option<Duration>,
    /// How long each poll for commands waits on the server, in seconds (the server allows up to 60).
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub exec_wait: u64,
    /// JSON file with provider_status, provider_version, stream_status, wireguard_ip,
    /// diagnostics, telemetry (and head_status, head_detail on a head); read at every
    /// heartbeat [default: <state>/status.json].
    #[arg(long)]
    pub status_file: Option<PathBuf>,
    /// Send one heartbeat and exit (0 when it was accepted).
    #[arg(long)]
    pub once: bool,
}

/// Durations as humantime (`30s`, `1m`, `200ms`) or plain seconds.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = match s.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))?,
    };
    if d < Duration::from_millis(10) {
        return Err(format!("{s:?}: the interval must be at least 10ms"));
    }
    Ok(d)
}

pub async fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Enroll(a) => {
            let head = match (a.fleet_token, a.district, a.venue) {
                (Some(fleet_token), Some(district), Some(venue)) => {
                    Some(HeadEnrollment { fleet_token, district, venue })
                }
                _ => None,
            };
            let opts = EnrollOptions {
                server: a.server,
                name: a.name,
                ip: a.ip,
                state: a.state,
                force: a.force,
                head,
            };
            enroll(opts).await.map(|()| Ended::Done)
        }
        Command::Run(a) => {
            run(RunOptions {
                state: a.state,
                server: a.server,
                heartbeat_interval: a.heartbeat_interval,
                exec_wait_s: a.exec_wait,
                status_file: a.status_file,
                once: a.once,
            })
            .await
        }
    };
    match result {
        Ok(Ended::Done) => ExitCode::SUCCESS,
        Ok(Ended::Revoked(message)) => {
            let why = if message.to_lowercase().contains("rejected") {
                "it was rejected by an admin"
            } else {
                "it was removed or rejected"
            };
            eprintln!(
                "error: the server no longer accepts this node's token: {why}; enroll again \
                 (`hydranode enroll --server URL --force`) and have an admin approve the new node [{message}]"
            );
            ExitCode::from(EXIT_REVOKED)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_enrollment_needs_district_and_venue() {
        let parse = |args: &[&str]| {
            let base = ["hydranode", "enroll", "--server", "http://x:1"];
            Cli::try_parse_from(base.iter().chain(args)).map(|c| match c.command {
                Command::Enroll(a) => (a.fleet_token, a.district, a.venue),
                Command::Run(_) => unreachable!(),
            })
        };
        assert_eq!(parse(&[]).unwrap(), (None, None, None));
        let head = parse(&["--fleet-token", "f", "--district", "d", "--venue", "v"]).unwrap();
        assert_eq!(head, (Some("f".into()), Some("d".into()), Some("v".into())));
        assert!(parse(&["--fleet-token", "f", "--district", "d"]).is_err());
        assert!(parse(&["--district", "d", "--venue", "v"]).is_err());
        assert!(parse(&["--fleet-token", "f", "--district", "d", "--venue", "v", "--ip", "1.2.3.4"]).is_err());
    }

    #[test]
    fn intervals_parse_as_durations_or_seconds() {
        assert_eq!(parse_interval("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_interval("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_interval("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
