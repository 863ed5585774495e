//! `hydraexperiencelibrary serve` settings: flags and environment (SPEC §11), an
//! optional YAML file, and the defaults of a rollout.

use hydra_events::{FailureThreshold, RolloutPolicy};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct LibraryConfig {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub admin_token: Option<String>,
    /// A read-only token for watchers (`hydrapipeline`).
    pub observer_token: Option<String>,
    /// hydracluster, and its admin token: rollouts list nodes and ask for reprovisions.
    pub cluster_url: Option<String>,
    pub cluster_token: Option<String>,
    /// HydraRelease's SSE stream (full URL), and the token it wants, if any.
    pub release_url: Option<String>,
    pub release_token: Option<String>,
    /// Defaults of every rollout; a promotion may override them.
    pub rollout: RolloutPolicy,
    /// How often running rollouts are looked at even when nothing happened
    /// (deadlines).
    pub rollout_tick: Duration,
    /// Pause between reconnects to hydracluster's or HydraRelease's stream.
    pub reconnect_delay: Duration,
    pub http_timeout: Duration,
    pub sse_keepalive: Duration,
    /// Open connections allowed (0: from the fd limit), header-read and idle timeouts.
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub snapshot_every: u64,
    pub max_body_bytes: usize,
    /// Mutations are refused while the data dir's filesystem has less free space.
    pub min_free_bytes: u64,
    /// Failed authentications allowed per remote address within `auth_fail_window`
    /// before that address gets 429 until the window ends (0: never throttle).
    pub auth_fail_burst: u32,
    pub auth_fail_window: Duration,
}

impl Default for LibraryConfig {
    fn default() -> Self {
        LibraryConfig {
            listen: "127.0.0.1:8090".parse().expect("valid default address"),
            data: PathBuf::from("./hydra-library-data"),
            admin_token: None,
            observer_token: None,
            cluster_url: None,
            cluster_token: None,
            release_url: None,
            release_token: None,
            rollout: RolloutPolicy {
                max_parallel: 10,
                failure_threshold: FailureThreshold::Percent(10),
                node_deadline_ms: 30 * 60 * 1000,
            },
            rollout_tick: Duration::from_secs(1),
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

/// The YAML file: the same settings as the flags, plus rollout defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct File {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    admin_token: Option<String>,
    observer_token: Option<String>,
    cluster_url: Option<String>,
    cluster_token: Option<String>,
    release_url: Option<String>,
    release_token: Option<String>,
    rollout: Option<RolloutFile>,
    sse_keepalive: Option<Humantime>,
    min_free_bytes: Option<u64>,
    auth_fail_burst: Option<u32>,
    auth_fail_window: Option<Humantime>,
    max_connections: Option<usize>,
    header_read_timeout: Option<Humantime>,
    idle_timeout: Option<Humantime>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutFile {
    max_parallel: Option<u32>,
    failure_threshold: Option<String>,
    node_deadline: Option<Humantime>,
    tick: Option<Humantime>,
}

#[derive(Debug)]
struct Humantime(Duration);

impl<'de> Deserialize<'de> for Humantime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::cluster::config::parse_duration(&s).map(Humantime).map_err(serde::de::Error::custom)
    }
}

impl LibraryConfig {
    /// Applies a YAML config file over the defaults. Flags and environment are
    /// applied after, by the caller, so they win.
    pub fn load_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        self.apply_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn apply_yaml(&mut self, text: &str) -> Result<(), String> {
        let f: File = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = f.$field { self.$field = v.into(); } )* };
        }
        set!(listen, data);
        for (slot, value) in [
            (&mut self.admin_token, f.admin_token),
            (&mut self.observer_token, f.observer_token),
            (&mut self.cluster_url, f.cluster_url),
            (&mut self.cluster_token, f.cluster_token),
            (&mut self.release_url, f.release_url),
            (&mut self.release_token, f.release_token),
        ] {
            if value.is_some() {
                *slot = value;
            }
        }
        if let Some(v) = f.min_free_bytes {
            self.min_free_bytes = v;
        }
        if let Some(k) = f.sse_keepalive {
            self.sse_keepalive = k.0;
        }
        if let Some(n) = f.auth_fail_burst {
            self.auth_fail_burst = n;
        }
        if let Some(w) = f.auth_fail_window {
            self.auth_fail_window = w.0;
        }
        if let Some(n) = f.max_connections {
            self.max_connections = n;
        }
        for (slot, value) in
            [(&mut self.header_read_timeout, f.header_read_timeout), (&mut self.idle_timeout, f.idle_timeout)]
        {
            if let Some(v) = value {
                *slot = v.0;
            }
        }
        if let Some(r) = f.rollout {
            if let Some(n) = r.max_parallel {
                self.rollout.max_parallel = n;
            }
            if let Some(t) = r.failure_threshold {
                self.rollout.failure_threshold = FailureThreshold::parse(&t)?;
            }
            if let Some(d) = r.node_deadline {
                self.rollout.node_deadline_ms = crate::cluster::config::millis(d.0);
            }
            if let Some(t) = r.tick {
                self.rollout_tick = t.0;
            }
        }
        self.check()
    }

    /// The connection settings of the HTTP server.
    pub fn conn_limits(&self) -> crate::service::serve::ConnLimits {
        crate::service::serve::ConnLimits {
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if self.rollout.max_parallel == 0 {
            return Err("rollout.max_parallel must be at least 1".into());
        }
        if self.rollout.node_deadline_ms == 0 {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_sets_rollout_defaults_and_rejects_unknown_keys() {
        let mut c = LibraryConfig::default();
        c.apply_yaml(
            "cluster_url: http://c:8080\nrollout:\n  max_parallel: 3\n  failure_threshold: \"2\"\n  node_deadline: 90s\n",
        )
        .unwrap();
        assert_eq!(c.cluster_url.as_deref(), Some("http://c:8080"));
        assert_eq!(c.rollout.max_parallel, 3);
        assert_eq!(c.rollout.failure_threshold, FailureThreshold::Count(2));
        assert_eq!(c.rollout.node_deadline_ms, 90_000);
        let err = LibraryConfig::default().apply_yaml("rollout:\n  max_paralel: 3\n").unwrap_err();
        assert!(err.contains("max_paralel"), "{err}");
        let err = LibraryConfig::default().apply_yaml("rollout:\n  failure_threshold: lots\n").unwrap_err();
        assert!(err.contains("bad failure threshold"), "{err}");
        let err = LibraryConfig::default().apply_yaml("cluster_url: c:8080\n").unwrap_err();
        assert!(err.contains("http://"), "{err}");
    }
}
