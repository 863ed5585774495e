//! Configuration of `hydracluster serve`: built-in defaults, overridden by the YAML
//! config file, overridden by environment variables and flags (clap merges those two).

use crate::service::config::{duration, set, set_opt, shared_settings, ServeArgs, ServiceConfig};
use hydra_core::ledger::LedgerConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

// The CLI's `exec --timeout` reads its duration through this path (the CLI is being
// split into files elsewhere; it can import `service::config` directly afterwards).

/// The roles a node may be given when none are configured.
pub const DEFAULT_ROLES: [&str; 5] =
    ["render-node", "hydraguard-air", "hydraheadflatscreen", "hydraheadwindows", "hydrabody"];

/// The roles that make a node a head unless the config says otherwise.
pub const DEFAULT_HEAD_ROLES: [&str; 2] = ["hydraheadflatscreen", "hydraheadwindows"];

/// Every setting of `hydracluster serve`, read straight from the YAML file: a key left
/// out keeps its default, an unknown key is refused (a typo must not be ignored).
/// `docs/configuration.md` lists exactly these keys (a test checks it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data: PathBuf,
    /// The URL agents are told to use; defaults to `http://<listen>`. Left out of the
    /// file it reads as empty, which `resolve` turns into `http://<listen>` of the
    /// file's `listen` (the `Default` impl has the default listen's).
    #[serde(default)]
    pub server_url: String,
    /// An admin token given by the operator; otherwise one is generated in the data dir.
    pub admin_token: Option<String>,
    /// More admins, each with a name, as hashes of their tokens; re-read on SIGHUP.
    pub admin_tokens: Vec<crate::service::config::NamedAdmin>,
    pub observer_token: Option<String>,
    /// A second address serving only `/metrics`, without a token.
    pub metrics_listen: Option<SocketAddr>,
    pub fleet_enrollment_token: Option<String>,
    #[serde(alias = "roleCatalog")]
    pub role_catalog: Vec<String>,
    /// The roles that make a node a head (a kiosk), whatever way it enrolled.
    #[serde(alias = "headRoles")]
    pub head_roles: Vec<String>,
    /// What a role needs on the node (a role without one is a name only): delivered
    /// with the heartbeat answer and installed by `hydranode` on reprovision.
    #[serde(alias = "roleRecipes")]
    pub role_recipes: BTreeMap<String, RoleRecipe>,
    #[serde(with = "duration")]
    pub heartbeat_timeout: Duration,
    /// How often agents heartbeat (`heartbeat_interval_s` in every heartbeat answer);
    /// shorter than `heartbeat_timeout`.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    #[serde(with = "duration")]
    pub offline_check_interval: Duration,
    /// Enrollments allowed per remote address per minute (and as a burst).
    pub enroll_per_minute: u32,
    pub max_body_bytes: usize,
    /// Largest node file `POST /api/v1/nodes/import` takes (about 300 bytes a node).
    pub max_import_bytes: usize,
    /// 0 counts as 1 (see `server::start`).
    pub snapshot_every: u64,
    /// Mutations are refused (503, read-only) while the data dir's filesystem has less
    /// free space than this, so that a stop's final snapshot can always finish.
    pub min_free_bytes: u64,
    pub broadcast_capacity: usize,
    #[serde(with = "duration")]
    pub sse_keepalive: Duration,
    /// Open connections allowed (0: derived from the file-descriptor limit), how long
    /// a new connection may take to send its request header, and how long a keep-alive
    /// connection may sit with no request in flight.
    pub max_connections: usize,
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Where ExperienceLibrary is, for the kiosks' catalog (the `experienceLibrary`
    /// section, as SPEC §11 names it).
    #[serde(rename = "experienceLibrary", alias = "experience_library")]
    pub experience_library: ExperienceLibraryLink,
    /// Where a head keeps its latest screenshot and its log (`~/` is the agent's home).
    pub head_screenshot_path: String,
    pub head_log_path: String,
    /// Where a body keeps its log, read for a stream session's logs.
    pub body_log_path: String,
    /// A screenshot older than this is stale: the kiosk stopped taking them.
    #[serde(with = "duration")]
    pub head_screenshot_max_age: Duration,
    /// How long a screenshot or log request waits for the head's agent to answer.
    #[serde(with = "duration")]
    pub head_exec_timeout: Duration,
    /// How long past its timeout an in-flight command may stay before the watchdog
    /// records it as timed out.
    #[serde(with = "duration")]
    pub exec_timeout_grace: Duration,
    /// How long a queued command waits for its node before it expires.
    #[serde(with = "duration")]
    pub exec_delivery_deadline: Duration,
    /// Largest stdout and stderr kept per command (each); the rest is cut and marked.
    pub exec_output_cap: usize,
    /// How long a command's output is kept in the output store (the event that
    /// refers to it stays; its result then says `output_pruned`).
    #[serde(with = "duration")]
    pub exec_output_retention: Duration,
    /// Largest command text (and `--file` script).
    pub exec_max_command_bytes: usize,
    #[serde(with = "duration")]
    pub exec_watchdog_interval: Duration,
    /// How long an admin's shell waits for the node's agent to attach.
    #[serde(with = "duration")]
    pub shell_attach_timeout: Duration,
    /// How long after `provision.started` a node may stay silent before its
    /// provisioning is recorded as failed (`timeout`).
    #[serde(with = "duration")]
    pub provision_deadline: Duration,
    #[serde(with = "duration")]
    pub provision_watchdog_interval: Duration,
    /// Down time within this long of a provisioning run's start counts as up in the
    /// rolling uptime (a reinstall reboots the machine); applied when read.
    #[serde(with = "duration")]
    pub uptime_provision_grace: Duration,
    /// What a force-stop runs on the body, and how long it waits for the answer.
    pub stream_stop_command: String,
    #[serde(with = "duration")]
    pub stream_stop_timeout: Duration,
    /// How often the body anomalies are checked, and the GPU utilisation (percent)
    /// from which an idle body counts as busy.
    #[serde(with = "duration")]
    pub anomaly_check_interval: Duration,
    pub gpu_busy_threshold_pct: f64,
    /// Largest serialized size of one agent-supplied map (a heartbeat's `diagnostics`
    /// or `telemetry`, a head's `diagnostics`); over it the request is refused (413).
    pub max_diagnostics_bytes: usize,
    /// At most one write of heartbeat-driven changes (versions, os, ip, provider and
    /// stream status) per node per interval, for approved nodes; changes in between
    /// are folded into the next write (the latest value wins). 0 = no limit.
    #[serde(with = "duration")]
    pub heartbeat_event_interval: Duration,
    /// The same for nodes not approved (pending): the smallest budget, since anyone
    /// who can reach `/enroll` has such a node.
    #[serde(with = "duration")]
    pub pending_heartbeat_event_interval: Duration,
    /// Pending nodes at most; `POST /enroll` is refused (503) until an admin approves,
    /// rejects or removes some.
    pub max_pending_nodes: usize,
    /// Failed authentications allowed per remote address within `auth_fail_window`
    /// before that address gets 429 until the window ends (0: never throttle).
    pub auth_fail_burst: u32,
    #[serde(with = "duration")]
    pub auth_fail_window: Duration,
    /// A console sign-in ends after this long without a request from its browser.
    #[serde(with = "duration")]
    pub console_session_idle: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let listen: SocketAddr = Self::DEFAULT_LISTEN.parse().expect("valid address");
        Config {
            listen,
            data: PathBuf::from(Self::DEFAULT_DATA),
            server_url: format!("http://{listen}"),
            admin_token: None,
            admin_tokens: Vec::new(),
            observer_token: None,
            metrics_listen: None,
            fleet_enrollment_token: None,
            role_catalog: DEFAULT_ROLES.iter().map(|s| s.to_string()).collect(),
            head_roles: DEFAULT_HEAD_ROLES.iter().map(|s| s.to_string()).collect(),
            role_recipes: BTreeMap::new(),
            heartbeat_timeout: Duration::from_secs(90),
            heartbeat_interval: Duration::from_secs(30),
            offline_check_interval: Duration::from_secs(5),
            enroll_per_minute: 30,
            max_body_bytes: 1024 * 1024,
            max_import_bytes: 8 * 1024 * 1024,
            snapshot_every: 10_000,
            min_free_bytes: 128 * 1024 * 1024,
            broadcast_capacity: 4096,
            sse_keepalive: Duration::from_secs(15),
            max_connections: 0,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            experience_library: ExperienceLibraryLink::default(),
            head_screenshot_path: "~/.hydranode/head/screenshot.jpg".into(),
            head_log_path: "~/.hydranode/head/head.log".into(),
            body_log_path: "~/.hydranode/body.log".into(),
            head_screenshot_max_age: Duration::from_secs(120),
            head_exec_timeout: Duration::from_secs(15),
            exec_timeout_grace: Duration::from_secs(15),
            exec_delivery_deadline: Duration::from_secs(3600),
            exec_output_cap: 1024 * 1024,
            exec_output_retention: Duration::from_secs(30 * 24 * 3600),
            exec_max_command_bytes: 256 * 1024,
            exec_watchdog_interval: Duration::from_secs(1),
            shell_attach_timeout: Duration::from_secs(30),
            provision_deadline: Duration::from_secs(30 * 60),
            provision_watchdog_interval: Duration::from_secs(5),
            uptime_provision_grace: Duration::from_secs(30 * 60),
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
            console_session_idle: Duration::from_secs(12 * 3600),
        }
    }
}

/// hydracluster's link to ExperienceLibrary: its URL (`GET /api/v1/heads/{id}/experiences`
/// and the console's rollout pages answer 503 without one), how long a request waits
/// for it, and the library token the rollout pages read and act with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperienceLibraryLink {
    pub url: Option<String>,
    #[serde(with = "duration")]
    pub timeout: Duration,
    pub token: Option<crate::service::config::Secret>,
    /// Or a file holding it (read at each use, so a token the library writes at its
    /// first start, or rotates, is picked up).
    pub token_file: Option<std::path::PathBuf>,
}

impl Default for ExperienceLibraryLink {
    fn default() -> Self {
        ExperienceLibraryLink { url: None, timeout: Duration::from_secs(5), token: None, token_file: None }
    }
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
        if !hydra_core::names::path_safe(&self.version) {
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

impl Config {
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
            if !hydra_core::names::path_safe(role) {
                return Err(format!(
                    "role {role:?} has a recipe, so it must be letters, digits, '.', '_', '-' or '+'"
                ));
            }
            recipe.check(role)?;
        }
        Ok(())
    }
}

/// `hydracluster serve`'s own flags, after the shared ones (`ServeArgs`).
#[derive(Debug, clap::Args)]
pub struct ServeFlags {
    /// The URL agents are told to use [default: http://<listen>].
    #[arg(long, env = "HYDRACLUSTER_SERVER_URL")]
    pub server_url: Option<String>,
    #[arg(long, env = "HYDRACLUSTER_FLEET_ENROLLMENT_TOKEN", hide_env_values = true)]
    pub fleet_enrollment_token: Option<String>,
}

impl ServiceConfig for Config {
    shared_settings!(
        program: "hydracluster",
        env: "HYDRACLUSTER",
        listen: "127.0.0.1:8080",
        data: "./hydra-data",
        views: hydra_projections::ClusterViews,
        audit_count: ("nodes", |v| v.nodes.len())
    );

    fn apply(&mut self, args: &ServeArgs<Self>) {
        // A server URL that follows the listen address keeps following it.
        let follows = self.server_url == format!("http://{}", self.listen);
        self.apply_shared(args);
        if follows {
            self.server_url = format!("http://{}", self.listen);
        }
        set(&mut self.server_url, &args.own.server_url);
        set_opt(&mut self.fleet_enrollment_token, &args.own.fleet_enrollment_token);
    }

    fn resolve(&mut self) {
        if self.server_url.is_empty() {
            self.server_url = format!("http://{}", self.listen);
        }
    }

    /// What must hold between settings, checked when the file is read and at start-up:
    /// the recipes, and a heartbeat interval that fits in the heartbeat timeout.
    fn check(&self) -> Result<(), String> {
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

    fn ledger_config(&self) -> LedgerConfig {
        LedgerConfig {
            // 0 counts as 1: a snapshot after every event.
            snapshot_every: self.snapshot_every.max(1),
            broadcast_capacity: self.broadcast_capacity,
            min_free_bytes: self.min_free_bytes,
            ..LedgerConfig::default()
        }
    }

    fn start(
        self,
    ) -> impl std::future::Future<Output = anyhow::Result<crate::service::start::Running>> + Send {
        crate::cluster::server::start(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::config::{from_yaml, parse_duration, testing, MAX_DURATION};

    fn read(yaml: &str) -> Result<Config, String> {
        from_yaml::<Config>(yaml)
    }

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
        let c = read(
            "listen: 127.0.0.1:9000\nheartbeat_timeout: 2m\nrole_catalog: [a, b]\n\
             experienceLibrary:\n  url: http://lib:8090\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.server_url, "http://127.0.0.1:9000");
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(120));
        assert_eq!(c.role_catalog, vec!["a", "b"]);
        assert_eq!(c.experience_library.url.as_deref(), Some("http://lib:8090"));
        assert_eq!(c.experience_library.timeout, Duration::from_secs(5));
        // Keys left out keep their defaults.
        assert_eq!(c.head_roles, Config::default().head_roles);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
    }

    #[test]
    fn the_spellings_operators_use_are_read() {
        let c = read(
            "roleCatalog: [a]\nheadRoles: [a]\nroleRecipes: {}\n\
             experience_library:\n  url: http://lib:8090\n  timeout: 1.5\n",
        )
        .unwrap();
        assert_eq!((c.role_catalog, c.head_roles), (vec!["a".to_owned()], vec!["a".to_owned()]));
        assert_eq!(c.experience_library.url.as_deref(), Some("http://lib:8090"));
        assert_eq!(c.experience_library.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn a_server_url_follows_listen_unless_given() {
        let c = read("server_url: https://hydra.example.net\nlisten: 0.0.0.0:9000\n").unwrap();
        assert_eq!(c.server_url, "https://hydra.example.net");
        assert_eq!(read("{}").unwrap().server_url, Config::default().server_url);
    }

    #[test]
    fn provisioning_and_stream_keys_are_read() {
        let c0 = Config::default();
        assert_eq!(c0.provision_deadline, Duration::from_secs(1800));
        assert_eq!(c0.stream_stop_command, "hydra-stream-stop || true");
        let c = read(
            "provision_deadline: 45m\nprovision_watchdog_interval: 2s\nstream_stop_command: stop-it\n\
             stream_stop_timeout: 3s\nanomaly_check_interval: 1s\ngpu_busy_threshold_pct: 75\n",
        )
        .unwrap();
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
        let c = read(&yaml).unwrap();
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
        assert!(read("role_recipes: {a: {artifact_url: x, version: 1}}").is_err());
    }

    #[test]
    fn agent_abuse_limits_are_read() {
        assert_eq!(Config::default().heartbeat_event_interval, Duration::from_secs(10));
        let c = read(
            "max_diagnostics_bytes: 1024\nheartbeat_event_interval: 2s\n\
             pending_heartbeat_event_interval: 5m\nmax_pending_nodes: 7\n",
        )
        .unwrap();
        assert_eq!(c.max_diagnostics_bytes, 1024);
        assert_eq!(c.heartbeat_event_interval, Duration::from_secs(2));
        assert_eq!(c.pending_heartbeat_event_interval, Duration::from_secs(300));
        assert_eq!(c.max_pending_nodes, 7);
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_errors() {
        let e = read("heartbeat_timout: 5s").unwrap_err();
        assert!(e.contains("unknown field `heartbeat_timout`"), "{e}");
        let e = read("experienceLibrary:\n  urll: x\n").unwrap_err();
        assert!(e.contains("experienceLibrary") && e.contains("`urll`"), "{e}");
        let e = read("heartbeat_timeout: soon").unwrap_err();
        assert!(e.starts_with("heartbeat_timeout: "), "{e}");
        let e = read("max_pending_nodes: many").unwrap_err();
        assert!(e.starts_with("max_pending_nodes: "), "{e}");
        // Too long for a Duration (from_secs_f64 would panic), or past the bound; the
        // error names the key.
        for huge in ["1e30", "400d", "18446744073709551615", "31622400.5"] {
            let e = read(&format!("heartbeat_timeout: {huge}")).unwrap_err();
            assert!(e.starts_with("heartbeat_timeout: ") && e.contains("too long"), "{huge}: {e}");
        }
        assert!(parse_duration("18446744073709553").is_err());
        assert_eq!(parse_duration("366d"), Ok(MAX_DURATION));
        let config = read("auth_fail_burst: 5\nauth_fail_window: 10s").unwrap();
        assert_eq!((config.auth_fail_burst, config.auth_fail_window), (5, Duration::from_secs(10)));
    }

    #[test]
    fn fractional_seconds_are_read() {
        let c = read("heartbeat_interval: 0.5\nheader_read_timeout: 2.25\n").unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.header_read_timeout, Duration::from_millis(2250));
    }

    #[test]
    fn a_bad_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hydra.yaml");
        std::fs::write(&path, "listen: 127.0.0.1:9000\nheartbeat_timout: 5s\n").unwrap();
        let e = format!("{:#}", crate::service::config::load::<Config>(&path).unwrap_err());
        assert!(e.contains("hydra.yaml") && e.contains("heartbeat_timout"), "{e}");
        std::fs::write(&path, "heartbeat_interval: 2m\n").unwrap();
        let e = format!("{:#}", crate::service::config::load::<Config>(&path).unwrap_err());
        assert!(e.contains("hydra.yaml") && e.contains("heartbeat_interval"), "{e}");
    }

    #[test]
    fn the_reference_lists_every_key() {
        testing::assert_documented(&Config::default(), "hydracluster");
    }

    #[test]
    fn serve_keeps_its_environment_variables() {
        let env = testing::env_vars::<Config>();
        let names: Vec<&str> = env.iter().map(|(_, e)| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "HYDRACLUSTER_LISTEN",
                "HYDRACLUSTER_DATA",
                "HYDRACLUSTER_CONFIG",
                "HYDRACLUSTER_ADMIN_TOKEN",
                "HYDRACLUSTER_OBSERVER_TOKEN",
                "HYDRACLUSTER_SERVER_URL",
                "HYDRACLUSTER_FLEET_ENROLLMENT_TOKEN",
            ]
        );
        assert!(env.iter().all(|(flag, e)| e.ends_with(&flag.to_uppercase().replace('-', "_"))), "{env:?}");
    }

    #[test]
    fn serve_flags_override_the_file() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs<Config>,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hydra.yaml");
        std::fs::write(
            &path,
            "listen: 127.0.0.1:9000\nobserver_token: from-file\nfleet_enrollment_token: f\n",
        )
        .unwrap();
        let args = Cli::parse_from([
            "serve".as_ref(),
            "--config".as_ref(),
            path.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:9001".as_ref(),
            "--observer-token".as_ref(),
            "from-flag".as_ref(),
        ])
        .serve;
        let c = args.config().unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.server_url, "http://127.0.0.1:9001", "a derived server URL follows --listen");
        assert_eq!(c.observer_token.as_deref(), Some("from-flag"));
        assert_eq!(c.fleet_enrollment_token.as_deref(), Some("f"));
    }
}
