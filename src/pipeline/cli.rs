//! hydrapipeline's command line (clap derive): the options, their environment variables
//! and the help texts that document them.

use super::format::TypeFilter;
use super::Service;
use clap::{Args, Parser, Subcommand};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "hydrapipeline",
    version,
    about = "Read-only observer of the Hydra services: health, event lag and one merged event timeline",
    long_about = "Read-only observer of the Hydra services: health, event lag and one merged event \
timeline.\n\nIt only ever sends GET requests, so an observer token is enough \
(HYDRACLUSTER_OBSERVER_TOKEN on the cluster); the same token is sent to every service.\n\n\
Services: --service NAME=URL (repeatable) or HYDRAPIPELINE_SERVICES=name=url,name=url; \
default hydracluster=http://127.0.0.1:8080,hydraexperiencelibrary=http://127.0.0.1:8090.",
    after_help = "Examples:\n  \
hydrapipeline status\n  \
hydrapipeline --service hydracluster=http://10.0.0.5:8080 --token \"$OBSERVER\" status --json\n  \
hydrapipeline watch --types 'provision.*,rollout.*'\n  \
hydrapipeline watch --since 0 --json | jq -c 'select(.type == \"exec.completed\")'"
)]
pub struct Cli {
    /// A service to observe, as NAME=URL (repeatable; comma-separated in the environment).
    #[arg(
        long = "service",
        value_name = "NAME=URL",
        env = "HYDRAPIPELINE_SERVICES",
        value_delimiter = ',',
        global = true
    )]
    pub services: Vec<Service>,

    /// Bearer token sent to every service (an observer token is enough).
    #[arg(long, env = "HYDRAPIPELINE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Each service's health, version, newest event id and event lag. Exit code 0 when every
    /// service is ok, 1 otherwise.
    #[command(long_about = "Each service's health, version, newest event id and event lag.\n\n\
For every service: GET {url}/api/v1/health (public). HEALTH is `ok`, or `down: <why>` \
(connection refused, timed out, HTTP 500, ...).\n\n\
LAG is measured, not estimated: hydrapipeline opens the service's event stream \
(GET {url}/api/v1/events with Last-Event-ID = newest id - 1 and the token) and times how \
long, in milliseconds, the newest event takes to arrive: connection, authentication, \
the read from the service's log and delivery together. It is what a subscriber \
(a watcher, the ExperienceLibrary) waits before it sees the newest event. It is `-` \
(null in JSON) when the service has no events yet or the stream is refused; JSON then \
says why in lag_error (e.g. \"token refused (401)\").\n\n\
--json prints one document: {\"services\":[{\"name\",\"url\",\"health\",\"ok\",\"version\",\
\"last_event_id\",\"lag_ms\",\"lag_error\"?,\"response_ms\"}]} (response_ms: the health \
request's round trip).\n\nExit code: 0 when every service is ok, 1 otherwise.")]
    Status(StatusArgs),

    /// One merged live timeline of every service's events, until Ctrl-C.
    #[command(long_about = "One merged live timeline of every service's events, until Ctrl-C \
(or SIGTERM, or the reader of stdout going away).\n\n\
By default only new events are shown: each service is followed from its newest event \
at the time it is first reached (a service that is down is retried and followed from its \
head once it answers). --since ID replays every service's history after event ID \
(0 = everything); --since NAME=ID does so for one service. The replayed history is read \
from each service's /api/v1/events/log and merged by event time across services; after \
that, events print in the order they arrive.\n\n\
Lines: `HH:MM:SS.mmm  SERVICE  TYPE  key=value...` (event time, UTC). --json prints one \
object per line: {\"service\",\"id\",\"type\",\"at\",\"cause\",\"data\"}.\n\n\
When a service's stream drops, a `source.down` line says so (JSON: {\"service\",\"type\":\
\"source.down\",\"reason\"}); the stream is resumed with Last-Event-ID, so no event is \
lost or repeated, and `source.up` says when it is back.")]
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,

    /// How long to wait for each service's health answer and for its newest event.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only these event types: exact names or prefixes like `provision.*` (comma-separated).
    #[arg(long, value_name = "TYPES", value_delimiter = ',')]
    pub types: Vec<TypeFilter>,

    /// Replay history after event ID first: `ID` for every service, `NAME=ID` for one (repeatable).
    #[arg(long, value_name = "ID|NAME=ID")]
    pub since: Vec<Since>,

    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Where `--since` starts a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    All(u64),
    One(String, u64),
}

impl FromStr for Since {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let seq = |v: &str| {
            v.trim().parse::<u64>().map_err(|_| format!("{v:?} is not an event id (a number like 0 or 42)"))
        };
        match s.split_once('=') {
            Some((name, id)) if !name.trim().is_empty() => Ok(Since::One(name.trim().to_string(), seq(id)?)),
            Some(_) => Err(format!("{s:?}: expected ID or NAME=ID")),
            None => Ok(Since::All(seq(s)?)),
        }
    }
}

impl WatchArgs {
    /// The resume point for each service (None = live, from its head), checking that
    /// every `NAME=ID` names a configured service.
    pub fn starts(&self, services: &[Service]) -> Result<Vec<Option<u64>>, String> {
        for s in &self.since {
            if let Since::One(name, _) = s {
                if !services.iter().any(|svc| &svc.name == name) {
                    let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                    return Err(format!("--since {name}=…: no such service (known: {})", known.join(", ")));
                }
            }
        }
        Ok(services
            .iter()
            .map(|svc| {
                // A per-service start wins over the global one, whatever the order given.
                let one = self.since.iter().rev().find_map(|s| match s {
                    Since::One(n, id) if n == &svc.name => Some(*id),
                    _ => None,
                });
                let all = self.since.iter().rev().find_map(|s| match s {
                    Since::All(id) => Some(*id),
                    _ => None,
                });
                one.or(all)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_applies_per_service_over_the_global_start() {
        let cli = Cli::try_parse_from([
            "hydrapipeline",
            "--service",
            "a=http://x:1",
            "--service",
            "b=http://y:2",
            "watch",
            "--since",
            "b=7",
            "--since",
            "3",
        ])
        .unwrap();
        let Command::Watch(w) = cli.command else { panic!("watch") };
        assert_eq!(w.starts(&cli.services).unwrap(), vec![Some(3), Some(7)]);
        let bad =
            Cli::try_parse_from(["hydrapipeline", "--service", "a=http://x:1", "watch", "--since", "c=1"])
                .unwrap();
        let Command::Watch(w) = bad.command else { panic!("watch") };
        assert!(w.starts(&bad.services).unwrap_err().contains("no such service"));
        assert!(Cli::try_parse_from(["hydrapipeline", "watch", "--since", "x"]).is_err());
        assert!(Cli::try_parse_from(["hydrapipeline", "--service", "nonsense", "status"]).is_err());
        assert!(Cli::try_parse_from(["hydrapipeline", "watch", "--types", "Bad!"]).is_err());
    }
}
