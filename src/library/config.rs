//! `hydraexperiencelibrary serve` settings: flags and environment (SPEC §11), an
//! optional YAML file, and the defaults of a rollout.

use crate::service::config::{duration, millis, set_opt, shared_settings, ServeArgs, ServiceConfig};
use hydra_core::ledger::LedgerConfig;
use hydra_events::{FailureThreshold, RolloutPolicy};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Every setting of `hydraexperiencelibrary serve`, read straight from the YAML file
/// (a key left out keeps its default, an unknown key is refused).
/// `docs/configuration.md` lists exactly the keys the file takes (a test checks it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LibraryConfig {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub admin_token: Option<String>,
    /// More admins, each with a name, as hashes of their tokens; re-read on SIGHUP.
    pub admin_tokens: Vec<crate::service::config::NamedAdmin>,
    /// A read-only token for watchers (`hydrapipeline`).
    pub observer_token: Option<String>,
    /// A second address serving only `/metrics`, without a token.
    pub metrics_listen: Option<SocketAddr>,
    /// hydracluster, and its admin token: rollouts list nodes and ask for reprovisions.
    pub cluster_url: Option<String>,
    pub cluster_token: Option<String>,
    /// HydraRelease's SSE stream (full URL), and the token it wants, if any.
    pub release_url: Option<String>,
    pub release_token: Option<String>,
    /// Defaults of every rollout (a promotion may override them), and the tick.
    pub rollout: RolloutDefaults,
    #[serde(with = "duration")]
    pub sse_keepalive: Duration,
    /// Open connections allowed (0: from the fd limit), header-read and idle timeouts.
    pub max_connections: usize,
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Mutations are refused while the data dir's filesystem has less free space.
    pub min_free_bytes: u64,
    /// Failed authentications allowed per remote address within `auth_fail_window`
    /// before that address gets 429 until the window ends (0: never throttle).
    pub auth_fail_burst: u32,
    #[serde(with = "duration")]
    pub auth_fail_window: Duration,
    // Fixed, not read from the file (the reference says so); tests shorten them.
    /// Pause between reconnects to hydracluster's or HydraRelease's stream.
    #[serde(skip)]
    pub reconnect_delay: Duration,
    #[serde(skip)]
    pub http_timeout: Duration,
    #[serde(skip)]
    pub snapshot_every: u64,
    #[serde(skip)]
    pub max_body_bytes: usize,
}

impl Default for LibraryConfig {
    fn default() -> Self {
        LibraryConfig {
            listen: Self::DEFAULT_LISTEN.parse().expect("valid default address"),
            data: PathBuf::from(Self::DEFAULT_DATA),
            admin_token: None,
            admin_tokens: Vec::new(),
            observer_token: None,
            metrics_listen: None,
            cluster_url: None,
            cluster_token: None,
            release_url: None,
            release_token: None,
            rollout: RolloutDefaults::default(),
            reconnect_delay: Duration::from_millis(500),
            http_timeout: Duration::from_secs(10),
            sse_keepalive: Duration::from_secs(15),
            max_connections: 0,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            snapshot_every: 10_000,
            max_body_bytes: 1 << 20,
            min_free_bytes: 128 * 1024 * 1024,
            auth_fail_burst: 20,
            auth_fail_window: Duration::from_secs(60),
        }
    }
}

/// The `rollout` section: the policy a promotion starts from, and how often running
/// rollouts are looked at even when nothing happened (deadlines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutDefaults {
    pub max_parallel: u32,
    /// `3` (nodes) or `10%` (of the rollout's nodes).
    #[serde(with = "threshold")]
    pub failure_threshold: FailureThreshold,
    #[serde(with = "duration")]
    pub node_deadline: Duration,
    #[serde(with = "duration")]
    pub tick: Duration,
}

impl Default for RolloutDefaults {
    fn default() -> Self {
        RolloutDefaults {
            max_parallel: 10,
            failure_threshold: FailureThreshold::Percent(10),
            node_deadline: Duration::from_secs(30 * 60),
            tick: Duration::from_secs(1),
        }
    }
}

impl RolloutDefaults {
    /// The policy a promotion, rollback or retry starts from.
    pub fn policy(&self) -> RolloutPolicy {
        RolloutPolicy {
            max_parallel: self.max_parallel,
            failure_threshold: self.failure_threshold,
            node_deadline_ms: millis(self.node_deadline),
        }
    }
}

/// A failure threshold as operators write it (`"3"`, `"10%"`).
mod threshold {
    use hydra_events::FailureThreshold;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FailureThreshold, D::Error> {
        FailureThreshold::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(t: &FailureThreshold, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }
}

/// `hydraexperiencelibrary serve`'s own flags, after the shared ones (`ServeArgs`).
#[derive(Debug, clap::Args)]
pub struct ServeFlags {
    /// hydracluster, whose nodes rollouts reprovision.
    #[arg(long, env = "HYDRAEXPERIENCELIBRARY_CLUSTER_URL")]
    pub cluster_url: Option<String>,
    /// hydracluster's admin token.
    #[arg(long, env = "HYDRAEXPERIENCELIBRARY_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// HydraRelease's SSE stream (full URL), followed for `build.uploaded`.
    #[arg(long, env = "HYDRAEXPERIENCELIBRARY_RELEASE_URL")]
    pub release_url: Option<String>,
    #[arg(long, env = "HYDRAEXPERIENCELIBRARY_RELEASE_TOKEN", hide_env_values = true)]
    pub release_token: Option<String>,
}

impl ServiceConfig for LibraryConfig {
    shared_settings!(
        program: "hydraexperiencelibrary",
        env: "HYDRAEXPERIENCELIBRARY",
        listen: "127.0.0.1:8090",
        data: "./hydra-library-data",
        views: hydra_projections::LibraryViews,
        audit_count: ("experiences", |v| v.experiences.len())
    );

    fn apply(&mut self, args: &ServeArgs<Self>) {
        self.apply_shared(args);
        set_opt(&mut self.cluster_url, &args.own.cluster_url);
        set_opt(&mut self.cluster_token, &args.own.cluster_token);
        set_opt(&mut self.release_url, &args.own.release_url);
        set_opt(&mut self.release_token, &args.own.release_token);
    }

    /// A rollout can make progress, and the URLs are URLs.
    fn check(&self) -> Result<(), String> {
        if self.rollout.max_parallel == 0 {
            return Err("rollout.max_parallel must be at least 1".into());
        }
        if self.rollout.policy().node_deadline_ms == 0 {
            return Err("rollout.node_deadline must be longer than zero".into());
        }
        for (name, url) in [("cluster url", &self.cluster_url), ("release url", &self.release_url)] {
            if let Some(u) = url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(format!("{name} {u:?} must start with http:// or https://"));
                }
            }
        }
        Ok(())
    }

    fn ledger_config(&self) -> LedgerConfig {
        LedgerConfig {
            snapshot_every: self.snapshot_every,
            min_free_bytes: self.min_free_bytes,
            ..LedgerConfig::default()
        }
    }

    fn start(self) -> impl std::future::Future<Output = anyhow::Result<super::server::Running>> + Send {
        super::server::start(self)
    }
}

impl LibraryConfig {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::config::{from_yaml, testing};

    /// The file read and checked, as `serve --config` does.
    fn read(yaml: &str) -> Result<LibraryConfig, String> {
        let c = from_yaml::<LibraryConfig>(yaml)?;
        c.check()?;
        Ok(c)
    }

    #[test]
    fn the_file_sets_rollout_defaults_and_rejects_unknown_keys() {
        let c = read(
            "cluster_url: http://c:8080\nrollout:\n  max_parallel: 3\n  failure_threshold: \"2\"\n  node_deadline: 90s\n",
        )
        .unwrap();
        assert_eq!(c.cluster_url.as_deref(), Some("http://c:8080"));
        assert_eq!(c.rollout.max_parallel, 3);
        assert_eq!(c.rollout.failure_threshold, FailureThreshold::Count(2));
        assert_eq!(c.rollout.policy().node_deadline_ms, 90_000);
        // Keys left out keep their defaults, in the section too.
        assert_eq!(c.rollout.tick, Duration::from_secs(1));
        assert_eq!(c.http_timeout, Duration::from_secs(10));
        let err = read("rollout:\n  max_paralel: 3\n").unwrap_err();
        assert!(err.contains("max_paralel"), "{err}");
        let err = read("rollout:\n  failure_threshold: lots\n").unwrap_err();
        assert!(err.contains("bad failure threshold"), "{err}");
        let err = read("cluster_url: c:8080\n").unwrap_err();
        assert!(err.contains("http://"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = read("idle_timout: 5s\n").unwrap_err();
        assert!(err.contains("unknown field `idle_timout`"), "{err}");
        // Fixed settings are not keys of the file.
        let err = read("http_timeout: 5s\n").unwrap_err();
        assert!(err.contains("unknown field `http_timeout`"), "{err}");
        let err = read("rollout:\n  node_deadline: 400d\n").unwrap_err();
        assert!(err.starts_with("rollout.node_deadline: ") && err.contains("too long"), "{err}");
        let err = read("rollout:\n  tick: 1e30\n").unwrap_err();
        assert!(err.starts_with("rollout.tick: ") && err.contains("too long"), "{err}");
        let err = read("auth_fail_burst: -1\n").unwrap_err();
        assert!(err.starts_with("auth_fail_burst: "), "{err}");
        let err = read("rollout:\n  node_deadline: 0\n").unwrap_err();
        assert!(err.contains("rollout.node_deadline"), "{err}");
    }

    #[test]
    fn fractional_seconds_are_read() {
        let c = read("sse_keepalive: 0.5\nrollout:\n  tick: 0.2\n  node_deadline: 90.5\n").unwrap();
        assert_eq!(c.sse_keepalive, Duration::from_millis(500));
        assert_eq!(c.rollout.tick, Duration::from_millis(200));
        assert_eq!(c.rollout.policy().node_deadline_ms, 90_500);
    }

    #[test]
    fn the_reference_lists_every_key() {
        testing::assert_documented(&LibraryConfig::default(), "hydraexperiencelibrary");
    }

    #[test]
    fn serve_keeps_its_environment_variables() {
        let names: Vec<String> = testing::env_vars::<LibraryConfig>().into_iter().map(|(_, e)| e).collect();
        assert_eq!(
            names,
            [
                "HYDRAEXPERIENCELIBRARY_LISTEN",
                "HYDRAEXPERIENCELIBRARY_DATA",
                "HYDRAEXPERIENCELIBRARY_CONFIG",
                "HYDRAEXPERIENCELIBRARY_ADMIN_TOKEN",
                "HYDRAEXPERIENCELIBRARY_OBSERVER_TOKEN",
                "HYDRAEXPERIENCELIBRARY_CLUSTER_URL",
                "HYDRAEXPERIENCELIBRARY_CLUSTER_TOKEN",
                "HYDRAEXPERIENCELIBRARY_RELEASE_URL",
                "HYDRAEXPERIENCELIBRARY_RELEASE_TOKEN",
            ]
        );
    }
}
