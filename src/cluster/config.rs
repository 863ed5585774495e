//! Configuration of `hydracluster serve`: built-in defaults, overridden by the YAML
//! config file, overridden by environment variables and flags (clap merges those two).

use hydra_core::names::path_safe;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The roles a node may be given when none are configured.
pub const DEFAULT_ROLES: [&str; 5] =
    ["render-node", "hydraguard-air", "hydraheadflatscreen", "hydraheadwindows", "hydrabody"];

/// The roles that make a node a head unless the config says otherwise.
pub const DEFAULT_HEAD_ROLES: [&str; 2] = ["hydraheadflatscreen", "hydraheadwindows"];

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data: PathBuf,
    /// The URL agents are told to use; defaults to `http://<listen>`.
    pub server_url: String,
    /// An admin token given by the operator; otherwise one is generated in the data dir.
    pub admin_token: Option<String>,
    pub observer_token: Option<String>,
    pub fleet_enrollment_token: Option<String>,
    pub role_catalog: Vec<String>,
    /// The roles that make a node a head (a kiosk), whatever way it enrolled.
    pub head_roles: Vec<String>,
    /// What a role needs on the node (a role without one is a name only): delivered
    /// with the heartbeat answer and installed by `hydranode` on reprovision.
    pub role_recipes: BTreeMap<String, RoleRecipe>,
    pub heartbeat_timeout: Duration,
    /// How often agents heartbeat (`heartbeat_interval_s` in every heartbeat answer);
    /// shorter than `heartbeat_timeout`.
    pub heartbeat_interval: Duration,
    pub offline_check_interval: Duration,
    /// Enrollments allowed per remote address per minute (and as a burst).
    pub enroll_per_minute: u32,
    pub max_body_bytes: usize,
    pub snapshot_every: u64,
    /// Mutations are refused (503, read-only) while the data dir's filesystem has less
    /// free space than this, so that a stop's final snapshot can always finish.
    pub min_free_bytes: u64,
    pub broadcast_capacity: usize,
    pub sse_keepalive: Duration,
    /// Open connections allowed (0: derived from the file-descriptor limit), how long
    /// a new connection may take to send its request header, and how long a keep-alive
    /// connection may sit with no request in flight.
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub experience_library_url: Option<String>,
    /// How long a head's catalog request waits for ExperienceLibrary.
    pub experience_library_timeout: Duration,
    /// Where a head keeps its latest screenshot and its log (`~/` is the agent's home).
    pub head_screenshot_path: String,
    pub head_log_path: String,
    /// A screenshot older than this is stale: the kiosk stopped taking them.
    pub head_screenshot_max_age: Duration,
    /// How long a screenshot or log request waits for the head's agent to answer.
    pub head_exec_timeout: Duration,
    /// How long past its timeout an in-flight command may stay before the watchdog
    /// records it as timed out.
    pub exec_timeout_grace: Duration,
    /// How long a queued command waits for its node before it expires.
    pub exec_delivery_deadline: Duration,
    /// Largest stdout and stderr kept per command (each); the rest is cut and marked.
    pub exec_output_cap: usize,
    /// Largest command text (and `--file` script).
    pub exec_max_command_bytes: usize,
    pub exec_watchdog_interval: Duration,
    /// How long an admin's shell waits for the node's agent to attach.
    pub shell_attach_timeout: Duration,
    /// How long after `provision.started` a node may stay silent before its
    /// provisioning is recorded as failed (`timeout`).
    pub provision_deadline: Duration,
    pub provision_watchdog_interval: Duration,
    /// What a force-stop runs on the body, and how long it waits for the answer.
    pub stream_stop_command: String,
    pub stream_stop_timeout: Duration,
    /// How often the body anomalies are checked, and the GPU utilisation (percent)
    /// from which an idle body counts as busy.
    pub anomaly_check_interval: Duration,
    pub gpu_busy_threshold_pct: f64,
    /// Largest serialized size of one agent-supplied map (a heartbeat's `diagnostics`
    /// or `telemetry`, a head's `diagnostics`); over it the request is refused (413).
    pub max_diagnostics_bytes: usize,
    /// At most one write of heartbeat-driven changes (versions, os, ip, provider and
    /// stream status) per node per interval, for approved nodes; changes in between
    /// are folded into the next write (the latest value wins). 0 = no limit.
    pub heartbeat_event_interval: Duration,
    /// The same for nodes not approved (pending): the smallest budget, since anyone
    /// who can reach `/enroll` has such a node.
    pub pending_heartbeat_event_interval: Duration,
    /// Pending nodes at most; `POST /enroll` is refused (503) until an admin approves,
    /// rejects or removes some.
    pub max_pending_nodes: usize,
    /// Failed authentications allowed per remote address within `auth_fail_window`
    /// before that address gets 429 until the window ends (0: never throttle).
    pub auth_fail_burst: u32,
    pub auth_fail_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let listen: SocketAddr = "127.0.0.1:8080".parse().expect("valid address");
        Config {
            listen,
            data: PathBuf::from("./hydra-data"),
            server_url: format!("http://{listen}"),
            admin_token: None,
            observer_token: None,
            fleet_enrollment_token: None,
            role_catalog: DEFAULT_ROLES.iter().map(|s| s.to_string()).collect(),
            head_roles: DEFAULT_HEAD_ROLES.iter().map(|s| s.to_string()).collect(),
            role_recipes: BTreeMap::new(),
            heartbeat_timeout: Duration::from_secs(90),
            heartbeat_interval: Duration::from_secs(30),
            offline_check_interval: Duration::from_secs(5),
            enroll_per_minute: 30,
            max_body_bytes: 1024 * 1024,
            snapshot_every: 10_000,
            min_free_bytes: 128 * 1024 * 1024,
            broadcast_capacity: 4096,
            sse_keepalive: Duration::from_secs(15),
            max_connections: 0,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            experience_library_url: None,
            experience_library_timeout: Duration::from_secs(5),
            head_screenshot_path: "~/.hydranode/head/screenshot.jpg".into(),
            head_log_path: "~/.hydranode/head/head.log".into(),
            head_screenshot_max_age: Duration::from_secs(120),
            head_exec_timeout: Duration::from_secs(15),
            exec_timeout_grace: Duration::from_secs(15),
            exec_delivery_deadline: Duration::from_secs(3600),
            exec_output_cap: 1024 * 1024,
            exec_max_command_bytes: 256 * 1024,
            exec_watchdog_interval: Duration::from_secs(1),
            shell_attach_timeout: Duration::from_secs(30),
            provision_deadline: Duration::from_secs(30 * 60),
            provision_watchdog_interval: Duration::from_secs(5),
            stream_stop_command: "hydra-stream-stop || true".into(),
            stream_stop_timeout: Duration::from_secs(10),
            anomaly_check_interval: Duration::from_secs(10),
            gpu_busy_threshold_pct: 50.0,
            max_diagnostics_bytes: 4096,
            heartbeat_event_interval: Duration::from_secs(10),
            pending_heartbeat_event_interval: Duration::from_secs(60),
            max_pending_nodes: 1000,
            auth_fail_burst: 20,
            auth_fail_window: Duration::from_secs(60),
        }
    }
}

/// The YAML file: every key optional, unknown keys refused (a typo must not be ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub server_url: Option<String>,
    pub admin_token: Option<String>,
    pub observer_token: Option<String>,
    pub fleet_enrollment_token: Option<String>,
    #[serde(alias = "roleCatalog")]
    pub role_catalog: Option<Vec<String>>,
    #[serde(alias = "headRoles")]
    pub head_roles: Option<Vec<String>>,
    #[serde(alias = "roleRecipes")]
    pub role_recipes: Option<BTreeMap<String, RoleRecipe>>,
    pub heartbeat_timeout: Option<DurationValue>,
    pub heartbeat_interval: Option<DurationValue>,
    pub offline_check_interval: Option<DurationValue>,
    pub enroll_per_minute: Option<u32>,
    pub max_body_bytes: Option<usize>,
    pub snapshot_every: Option<u64>,
    pub min_free_bytes: Option<u64>,
    pub broadcast_capacity: Option<usize>,
    pub sse_keepalive: Option<DurationValue>,
    pub max_connections: Option<usize>,
    pub header_read_timeout: Option<DurationValue>,
    pub idle_timeout: Option<DurationValue>,
    #[serde(rename = "experienceLibrary", alias = "experience_library")]
    pub experience_library: Option<LibraryConfig>,
    pub head_screenshot_path: Option<String>,
    pub head_log_path: Option<String>,
    pub head_screenshot_max_age: Option<DurationValue>,
    pub head_exec_timeout: Option<DurationValue>,
    pub exec_timeout_grace: Option<DurationValue>,
    pub exec_delivery_deadline: Option<DurationValue>,
    pub exec_output_cap: Option<usize>,
    pub exec_max_command_bytes: Option<usize>,
    pub exec_watchdog_interval: Option<DurationValue>,
    pub shell_attach_timeout: Option<DurationValue>,
    pub provision_deadline: Option<DurationValue>,
    pub provision_watchdog_interval: Option<DurationValue>,
    pub stream_stop_command: Option<String>,
    pub stream_stop_timeout: Option<DurationValue>,
    pub anomaly_check_interval: Option<DurationValue>,
    pub gpu_busy_threshold_pct: Option<f64>,
    pub max_diagnostics_bytes: Option<usize>,
    pub heartbeat_event_interval: Option<DurationValue>,
    pub pending_heartbeat_event_interval: Option<DurationValue>,
    pub max_pending_nodes: Option<usize>,
    pub auth_fail_burst: Option<u32>,
    pub auth_fail_window: Option<DurationValue>,
}

/// A role's recipe: the artifact to download (http or https), its version (a
/// directory name on the node) and sha256, and an optional shell command run in the
/// unpacked directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRecipe {
    pub artifact_url: String,
    pub version: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<String>,
}

impl RoleRecipe {
    /// What is wrong with the recipe for `role`, if anything.
    pub fn check(&self, role: &str) -> Result<(), String> {
        let url = self.artifact_url.trim();
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(str::is_empty) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "role_recipes.{role}.artifact_url {url:?} must be an http:// or https:// URL"
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("role_recipes.{role}.sha256 must be 64 hex characters"));
        }
        if !path_safe(&self.version) {
            return Err(format!(
                "role_recipes.{role}.version {:?} must be letters, digits, '.', '_', '-' or '+'",
                self.version
            ));
        }
        if self.install.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(format!("role_recipes.{role}.install is empty; leave it out instead"));
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryConfig {
    pub url: Option<String>,
    pub timeout: Option<DurationValue>,
}

/// A duration written as `90s`, `5m`, `250ms` or a plain number of seconds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "serde_yaml::Value")]
pub struct DurationValue(pub Duration);

impl TryFrom<serde_yaml::Value> for DurationValue {
    type Error = String;
    fn try_from(v: serde_yaml::Value) -> Result<Self, String> {
        match v {
            serde_yaml::Value::Number(n) => n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| format!("{n} is not a number of seconds"))
                .and_then(bounded)
                .map(DurationValue),
            serde_yaml::Value::String(s) => parse_duration(&s).map(DurationValue),
            other => Err(format!("expected a duration like \"90s\", found {other:?}")),
        }
    }
}

/// The longest duration any setting or request accepts (366 days): longer is a
/// mistake, and the bound keeps every sum of times far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

fn bounded(d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!("{} is too long; the most is 366d", humantime::format_duration(d)));
    }
    Ok(d)
}

/// Parses `90s`, `1m30s`, `250ms` or a plain number of seconds, up to `MAX_DURATION`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e}); try \"90s\""))?
        }
    };
    bounded(d)
}

/// Whole milliseconds of `d`, saturating: a duration too long for a `u64` of
/// milliseconds becomes `u64::MAX`, which every range check then refuses.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Config {
    /// The connection settings of the HTTP server.
    pub fn conn_limits(&self) -> crate::service::serve::ConnLimits {
        crate::service::serve::ConnLimits {
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
        }
    }

    /// Reads a config file over the defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let file: FileConfig =
            serde_yaml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
        let mut config = Config::default();
        config.merge_file(file);
        config.check_recipes().map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
        Ok(config)
    }

    /// What must hold between settings, checked once at start-up: the recipes, and a
    /// heartbeat interval that fits in the heartbeat timeout.
    pub fn check(&self) -> Result<(), String> {
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.heartbeat_timeout {
            return Err(format!(
                "heartbeat_interval ({}) must be more than 0 and less than heartbeat_timeout ({}), or every \
                 node would go offline between two heartbeats",
                humantime::format_duration(self.heartbeat_interval),
                humantime::format_duration(self.heartbeat_timeout)
            ));
        }
        self.check_recipes()
    }

    /// Every recipe is well formed and for a role of the catalog (whose name becomes a
    /// directory on the node, so it must be path-safe).
    pub fn check_recipes(&self) -> Result<(), String> {
        for (role, recipe) in &self.role_recipes {
            if !self.role_catalog.contains(role) {
                return Err(format!(
                    "role_recipes has a recipe for {role:?}, which is not in role_catalog ({})",
                    self.role_catalog.join(", ")
                ));
            }
            if !path_safe(role) {
                return Err(format!(
                    "role {role:?} has a recipe, so it must be letters, digits, '.', '_', '-' or '+'"
                ));
            }
            recipe.check(role)?;
        }
        Ok(())
    }

    pub fn merge_file(&mut self, f: FileConfig) {
        if let Some(v) = f.listen {
            self.listen = v;
            self.server_url = format!("http://{v}");
        }
        if let Some(v) = f.data {
            self.data = v;
        }
        if let Some(v) = f.server_url {
            self.server_url = v;
        }
        self.admin_token = f.admin_token.or(self.admin_token.take());
        self.observer_token = f.observer_token.or(self.observer_token.take());
        self.fleet_enrollment_token = f.fleet_enrollment_token.or(self.fleet_enrollment_token.take());
        if let Some(v) = f.role_catalog {
            self.role_catalog = v;
        }
        if let Some(v) = f.head_roles {
            self.head_roles = v;
        }
        if let Some(v) = f.role_recipes {
            self.role_recipes = v;
        }
        if let Some(v) = f.heartbeat_timeout {
            self.heartbeat_timeout = v.0;
        }
        if let Some(v) = f.heartbeat_interval {
            self.heartbeat_interval = v.0;
        }
        if let Some(v) = f.offline_check_interval {
            self.offline_check_interval = v.0;
        }
        if let Some(v) = f.enroll_per_minute {
            self.enroll_per_minute = v;
        }
        if let Some(v) = f.max_body_bytes {
            self.max_body_bytes = v;
        }
        if let Some(v) = f.snapshot_every {
            self.snapshot_every = v.max(1);
        }
        if let Some(v) = f.min_free_bytes {
            self.min_free_bytes = v;
        }
        if let Some(v) = f.broadcast_capacity {
            self.broadcast_capacity = v;
        }
        if let Some(v) = f.sse_keepalive {
            self.sse_keepalive = v.0;
        }
        if let Some(v) = f.max_connections {
            self.max_connections = v;
        }
        if let Some(v) = f.header_read_timeout {
            self.header_read_timeout = v.0;
        }
        if let Some(v) = f.idle_timeout {
            self.idle_timeout = v.0;
        }
        if let Some(library) = f.experience_library {
            if let Some(url) = library.url {
                self.experience_library_url = Some(url);
            }
            if let Some(v) = library.timeout {
                self.experience_library_timeout = v.0;
            }
        }
        if let Some(v) = f.head_screenshot_path {
            self.head_screenshot_path = v;
        }
        if let Some(v) = f.head_log_path {
            self.head_log_path = v;
        }
        if let Some(v) = f.head_screenshot_max_age {
            self.head_screenshot_max_age = v.0;
        }
        if let Some(v) = f.head_exec_timeout {
            self.head_exec_timeout = v.0;
        }
        if let Some(v) = f.exec_timeout_grace {
            self.exec_timeout_grace = v.0;
        }
        if let Some(v) = f.exec_delivery_deadline {
            self.exec_delivery_deadline = v.0;
        }
        if let Some(v) = f.exec_output_cap {
            self.exec_output_cap = v;
        }
        if let Some(v) = f.exec_max_command_bytes {
            self.exec_max_command_bytes = v;
        }
        if let Some(v) = f.exec_watchdog_interval {
            self.exec_watchdog_interval = v.0;
        }
        if let Some(v) = f.shell_attach_timeout {
            self.shell_attach_timeout = v.0;
        }
        if let Some(v) = f.provision_deadline {
            self.provision_deadline = v.0;
        }
        if let Some(v) = f.provision_watchdog_interval {
            self.provision_watchdog_interval = v.0;
        }
        if let Some(v) = f.stream_stop_command {
            self.stream_stop_command = v;
        }
        if let Some(v) = f.stream_stop_timeout {
            self.stream_stop_timeout = v.0;
        }
        if let Some(v) = f.anomaly_check_interval {
            self.anomaly_check_interval = v.0;
        }
        if let Some(v) = f.gpu_busy_threshold_pct {
            self.gpu_busy_threshold_pct = v;
        }
        if let Some(v) = f.max_diagnostics_bytes {
            self.max_diagnostics_bytes = v;
        }
        if let Some(v) = f.heartbeat_event_interval {
            self.heartbeat_event_interval = v.0;
        }
        if let Some(v) = f.pending_heartbeat_event_interval {
            self.pending_heartbeat_event_interval = v.0;
        }
        if let Some(v) = f.max_pending_nodes {
            self.max_pending_nodes = v;
        }
        if let Some(v) = f.auth_fail_burst {
            self.auth_fail_burst = v;
        }
        if let Some(v) = f.auth_fail_window {
            self.auth_fail_window = v.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_interval_must_fit_in_the_timeout() {
        let mut c = Config::default();
        assert!(c.check().is_ok());
        c.heartbeat_interval = c.heartbeat_timeout;
        assert!(c.check().unwrap_err().contains("less than heartbeat_timeout"));
        c.heartbeat_interval = Duration::ZERO;
        assert!(c.check().is_err());
    }

    #[test]
    fn a_config_file_overrides_the_defaults() {
        let file: FileConfig = serde_yaml::from_str(
            "listen: 127.0.0.1:9000\nheartbeat_timeout: 2m\nrole_catalog: [a, b]\n\
             experienceLibrary:\n  url: http://lib:8090\n",
        )
        .unwrap();
        let mut c = Config::default();
        c.merge_file(file);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.server_url, "http://127.0.0.1:9000");
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(120));
        assert_eq!(c.role_catalog, vec!["a", "b"]);
        assert_eq!(c.experience_library_url.as_deref(), Some("http://lib:8090"));
    }

    #[test]
    fn provisioning_and_stream_keys_are_read() {
        let file: FileConfig = serde_yaml::from_str(
            "provision_deadline: 45m\nprovision_watchdog_interval: 2s\nstream_stop_command: stop-it\n\
             stream_stop_timeout: 3s\nanomaly_check_interval: 1s\ngpu_busy_threshold_pct: 75\n",
        )
        .unwrap();
        let mut c = Config::default();
        assert_eq!(c.provision_deadline, Duration::from_secs(1800));
        assert_eq!(c.stream_stop_command, "hydra-stream-stop || true");
        c.merge_file(file);
        assert_eq!(c.provision_deadline, Duration::from_secs(2700));
        assert_eq!(c.provision_watchdog_interval, Duration::from_secs(2));
        assert_eq!(c.stream_stop_command, "stop-it");
        assert_eq!(c.stream_stop_timeout, Duration::from_secs(3));
        assert_eq!(c.anomaly_check_interval, Duration::from_secs(1));
        assert_eq!(c.gpu_busy_threshold_pct, 75.0);
    }

    #[test]
    fn role_recipes_are_read_and_checked() {
        let sha = "ab".repeat(32);
        let yaml = format!(
            "role_catalog: [hydrabody, render-node]\nrole_recipes:\n  hydrabody:\n    artifact_url: http://a/b.tar.gz\n    \
             version: 1.2.0\n    sha256: {sha}\n    install: ./install.sh\n"
        );
        let mut c = Config::default();
        c.merge_file(serde_yaml::from_str(&yaml).unwrap());
        assert_eq!(c.check_recipes(), Ok(()));
        let r = &c.role_recipes["hydrabody"];
        assert_eq!((r.version.as_str(), r.install.as_deref()), ("1.2.0", Some("./install.sh")));

        let bad = |edit: &dyn Fn(&mut Config)| {
            let mut c2 = c.clone();
            edit(&mut c2);
            c2.check_recipes().unwrap_err()
        };
        let e = bad(&|c| c.role_catalog = vec!["render-node".into()]);
        assert!(e.contains("not in role_catalog"), "{e}");
        let e = bad(&|c| c.role_recipes.get_mut("hydrabody").unwrap().sha256 = "abc".into());
        assert!(e.contains("64 hex"), "{e}");
        let e = bad(&|c| c.role_recipes.get_mut("hydrabody").unwrap().artifact_url = "ftp://x/y".into());
        assert!(e.contains("http"), "{e}");
        let e = bad(&|c| c.role_recipes.get_mut("hydrabody").unwrap().version = "../x".into());
        assert!(e.contains("version"), "{e}");
        assert!(
            serde_yaml::from_str::<FileConfig>("role_recipes: {a: {artifact_url: x, version: 1}}").is_err()
        );
    }

    #[test]
    fn agent_abuse_limits_are_read() {
        let file: FileConfig = serde_yaml::from_str(
            "max_diagnostics_bytes: 1024\nheartbeat_event_interval: 2s\n\
             pending_heartbeat_event_interval: 5m\nmax_pending_nodes: 7\n",
        )
        .unwrap();
        let mut c = Config::default();
        assert_eq!(c.heartbeat_event_interval, Duration::from_secs(10));
        c.merge_file(file);
        assert_eq!(c.max_diagnostics_bytes, 1024);
        assert_eq!(c.heartbeat_event_interval, Duration::from_secs(2));
        assert_eq!(c.pending_heartbeat_event_interval, Duration::from_secs(300));
        assert_eq!(c.max_pending_nodes, 7);
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_errors() {
        assert!(serde_yaml::from_str::<FileConfig>("heartbeat_timout: 5s").is_err());
        assert!(serde_yaml::from_str::<FileConfig>("heartbeat_timeout: soon").is_err());
        // Too long for a Duration (from_secs_f64 would panic), or past the bound.
        assert!(serde_yaml::from_str::<FileConfig>("heartbeat_timeout: 1e30").is_err());
        assert!(serde_yaml::from_str::<FileConfig>("heartbeat_timeout: 400d").is_err());
        assert!(serde_yaml::from_str::<FileConfig>("heartbeat_timeout: 18446744073709551615").is_err());
        assert!(parse_duration("18446744073709553").is_err());
        assert_eq!(parse_duration("366d"), Ok(MAX_DURATION));
        let c: FileConfig = serde_yaml::from_str("auth_fail_burst: 5\nauth_fail_window: 10s").unwrap();
        let mut config = Config::default();
        config.merge_file(c);
        assert_eq!((config.auth_fail_burst, config.auth_fail_window), (5, Duration::from_secs(10)));
    }
}
