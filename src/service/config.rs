//! What both services' configuration shares: the one duration form every setting
//! accepts (bounded), reading a YAML file straight into a service's config struct, and
//! the `serve` flags both commands take. Each service's keys, defaults and checks live
//! in its own config module (`cluster::config`, `library::config`).

use crate::service::start::Running;
use clap::Args;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Serializer;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One entry of `admin_tokens`: an admin's name, which the `cause` of everything they
/// do carries, and the SHA-256 (hex) of their token, so the file never holds a token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedAdmin {
    pub name: String,
    pub sha256: String,
}

/// The name of the first admin token (configured or generated): reserved.
pub const FIRST_ADMIN: &str = "admin";

/// `admin_tokens` as the token table takes them, or what is wrong with the list
/// (a name that is not 1 to 64 letters, digits and `-_.`, a name used twice or
/// `admin`, a hash that is not 64 hex digits, one hash under two names).
pub fn named_admins(list: &[NamedAdmin]) -> Result<Vec<(String, hydra_core::auth::TokenHash)>, String> {
    let mut out: Vec<(String, hydra_core::auth::TokenHash)> = Vec::with_capacity(list.len());
    for (i, NamedAdmin { name, sha256 }) in list.iter().enumerate() {
        let at = format!("admin_tokens[{i}]");
        let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if !(1..=64).contains(&name.len()) || !name.bytes().all(plain) {
            return Err(format!("{at}: name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"));
        }
        if name == FIRST_ADMIN {
            return Err(format!("{at}: the name {FIRST_ADMIN:?} is the first admin token's; choose another"));
        }
        let mut hash = [0u8; 32];
        if hex::decode_to_slice(sha256, &mut hash).is_err() {
            return Err(format!("{at} ({name}): sha256 must be 64 hex digits, the SHA-256 of the token"));
        }
        if let Some((other, _)) = out.iter().find(|(n, h)| n == name || *h == hash) {
            return Err(format!("{at}: {name:?} repeats the name or the token of {other:?}"));
        }
        out.push((name.clone(), hash));
    }
    Ok(out)
}

/// The longest duration any setting or request accepts (366 days): longer is a
/// mistake, and the bound keeps every sum of times far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

fn too_long(what: impl std::fmt::Display) -> String {
    format!("{what} is too long; the most is 366d")
}

fn bounded(d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(too_long(humantime::format_duration(d)));
    }
    Ok(d)
}

/// Parses `90s`, `1m30s`, `250ms` or a whole number of seconds, up to `MAX_DURATION`.
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

/// A `Duration` setting, as `#[serde(with = "crate::service::config::duration")]`: a
/// number of seconds (`90`, `1.5`) or a string `parse_duration` reads (`"90s"`,
/// `"1m30s"`, `"250ms"`), at most `MAX_DURATION`. Serde's error carries the key.
pub mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(Seconds)
    }

    /// Written the way it is read back (`1m 30s`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

struct Seconds;

impl Visitor<'_> for Seconds {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration like \"90s\", \"250ms\" or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
        bounded(Duration::from_secs(secs)).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
        let secs =
            u64::try_from(secs).map_err(|_| E::custom(format!("{secs} is not a number of seconds")))?;
        self.visit_u64(secs)
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(E::custom(format!("{secs} is not a number of seconds")));
        }
        // Compared before converting: `Duration::from_secs_f64` panics on a huge value.
        if secs > MAX_DURATION.as_secs_f64() {
            return Err(E::custom(too_long(format!("{secs:e}s"))));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        parse_duration(s).map_err(E::custom)
    }
}

/// What a service's config brings to the shared loading and `serve` flags: its
/// A secret setting (a token): read and written as a plain string, never shown by
/// `Debug`, so a config printed in a log or an error keeps it out.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// program name and environment variables, its own flags, its checks and its start.
pub trait ServiceConfig: Default + DeserializeOwned + std::fmt::Debug + Send + 'static {
    /// The program, as `serve` names it when it prints the admin token.
    const PROGRAM: &'static str;
    /// `--listen` and `--data` without flag or file (`Default` parses them too).
    const DEFAULT_LISTEN: &'static str;
    const DEFAULT_DATA: &'static str;
    /// The environment variables of the shared flags: each service keeps its own
    /// names, all under its prefix (`shared_settings!`).
    const LISTEN_ENV: &'static str;
    const DATA_ENV: &'static str;
    const CONFIG_ENV: &'static str;
    const ADMIN_TOKEN_ENV: &'static str;
    const OBSERVER_TOKEN_ENV: &'static str;
    /// The client commands' `--server` (default: `DEFAULT_SERVER`) and `--token`.
    const SERVER_ENV: &'static str;
    const TOKEN_ENV: &'static str;
    const DEFAULT_SERVER: &'static str;

    /// The service's own `serve` flags, after the shared ones.
    type Flags: clap::Args + clap::FromArgMatches + std::fmt::Debug + Send + Sync + 'static;
    type Views: hydra_projections::Projection;
    /// The one figure of the views `audit` prints beside the digest.
    const AUDIT_COUNT: (&'static str, fn(&Self::Views) -> usize);

    /// Overrides the settings the flags and environment give: the shared ones
    /// (`apply_shared`), then the service's own.
    fn apply(&mut self, args: &ServeArgs<Self>);
    fn apply_shared(&mut self, args: &ServeArgs<Self>);
    /// Settings the file left to be derived from others, once it is read.
    fn resolve(&mut self) {}
    /// What must hold between settings, checked when the file is read and again
    /// before serving.
    fn check(&self) -> Result<(), String>;
    fn data(&self) -> &Path;
    fn listen(&self) -> SocketAddr;
    /// Where `/metrics` is also served without a token, if anywhere.
    fn metrics_listen(&self) -> Option<SocketAddr>;
    /// The admin token the operator gave, if any (else `serve` keeps a generated one).
    fn admin_token(&self) -> Option<&str>;
    /// The named admins (`admin_tokens`), re-read on SIGHUP.
    fn admin_tokens(&self) -> &[NamedAdmin];
    fn ledger_config(&self) -> hydra_core::ledger::LedgerConfig;
    fn conn_limits(&self) -> super::serve::ConnLimits;
    fn start(self) -> impl Future<Output = anyhow::Result<Running<Self::Views>>> + Send;
}

/// What every service's config has under the same names, in its `ServiceConfig`
/// impl: the program, its default address and data dir, the variables of the shared
/// flags under the program's prefix (`HYDRACLUSTER` gives `HYDRACLUSTER_LISTEN`,
/// `HYDRACLUSTER_DATA`…) and the accessors of the shared fields (`listen`, `data`,
/// `admin_token`, `observer_token`, the connection limits).
macro_rules! shared_settings {
    (
        program: $program:literal,
        env: $prefix:literal,
        listen: $listen:literal,
        data: $data:literal,
        views: $views:ty,
        audit_count: ($what:literal, $count:expr)
    ) => {
        type Flags = ServeFlags;
        type Views = $views;
        const AUDIT_COUNT: (&'static str, fn(&Self::Views) -> usize) = ($what, $count);
        const PROGRAM: &'static str = $program;
        const DEFAULT_LISTEN: &'static str = $listen;
        const DEFAULT_DATA: &'static str = $data;
        const DEFAULT_SERVER: &'static str = concat!("http://", $listen);
        const LISTEN_ENV: &'static str = concat!($prefix, "_LISTEN");
        const DATA_ENV: &'static str = concat!($prefix, "_DATA");
        const CONFIG_ENV: &'static str = concat!($prefix, "_CONFIG");
        const ADMIN_TOKEN_ENV: &'static str = concat!($prefix, "_ADMIN_TOKEN");
        const OBSERVER_TOKEN_ENV: &'static str = concat!($prefix, "_OBSERVER_TOKEN");
        const SERVER_ENV: &'static str = concat!($prefix, "_SERVER");
        const TOKEN_ENV: &'static str = concat!($prefix, "_TOKEN");

        fn data(&self) -> &std::path::Path {
            &self.data
        }

        fn listen(&self) -> std::net::SocketAddr {
            self.listen
        }

        fn metrics_listen(&self) -> Option<std::net::SocketAddr> {
            self.metrics_listen
        }

        fn admin_token(&self) -> Option<&str> {
            self.admin_token.as_deref()
        }

        fn admin_tokens(&self) -> &[crate::service::config::NamedAdmin] {
            &self.admin_tokens
        }

        fn conn_limits(&self) -> crate::service::serve::ConnLimits {
            crate::service::serve::ConnLimits {
                max_connections: self.max_connections,
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.idle_timeout,
            }
        }

        fn apply_shared(&mut self, args: &crate::service::config::ServeArgs<Self>) {
            crate::service::config::set(&mut self.listen, &args.listen);
            crate::service::config::set(&mut self.data, &args.data);
            crate::service::config::set_opt(&mut self.admin_token, &args.admin_token);
            crate::service::config::set_opt(&mut self.observer_token, &args.observer_token);
        }
    };
}
pub(crate) use shared_settings;

/// A service's config from YAML text: keys left out keep their defaults; an unknown
/// key or a bad value is an error that names the key (serde_yaml writes its path).
pub fn from_yaml<C: ServiceConfig>(text: &str) -> Result<C, String> {
    let mut config: C = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    config.resolve();
    Ok(config)
}

/// Reads and checks a config file; every error names the file.
pub fn load<C: ServiceConfig>(path: &Path) -> anyhow::Result<C> {
    let in_file = |e: String| anyhow::anyhow!("config file {}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| in_file(e.to_string()))?;
    let config: C = from_yaml(&text).map_err(in_file)?;
    config.check().map_err(in_file)?;
    named_admins(config.admin_tokens()).map_err(in_file)?;
    Ok(config)
}

/// `serve`'s flags: the ones both services take, then the service's own. Each reads
/// the service's environment variable (`HYDRACLUSTER_LISTEN`,
/// `HYDRAEXPERIENCELIBRARY_LISTEN`…); flags and environment win over the file.
#[derive(Debug, Args)]
pub struct ServeArgs<C: ServiceConfig> {
    #[arg(long, env = C::LISTEN_ENV, help = format!("Address to listen on [default: {}]", C::DEFAULT_LISTEN))]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = C::DATA_ENV, help = format!("Data directory [default: {}]", C::DEFAULT_DATA))]
    pub data: Option<PathBuf>,
    /// YAML config file (overridden by flags and environment).
    #[arg(long, env = C::CONFIG_ENV)]
    pub config: Option<PathBuf>,
    /// Use this admin token instead of a generated one.
    #[arg(long, env = C::ADMIN_TOKEN_ENV, hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A read-only token for watchers.
    #[arg(long, env = C::OBSERVER_TOKEN_ENV, hide_env_values = true)]
    pub observer_token: Option<String>,
    #[command(flatten)]
    pub own: C::Flags,
}

/// `slot` takes `flag` when one was given.
pub fn set<T: Clone>(slot: &mut T, flag: &Option<T>) {
    if let Some(v) = flag {
        *slot = v.clone();
    }
}

/// The same for an optional setting: a flag given replaces it, none keeps it.
pub fn set_opt<T: Clone>(slot: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        slot.clone_from(flag);
    }
}

impl<C: ServiceConfig> ServeArgs<C> {
    /// The defaults, then the YAML file, then flags and environment.
    pub fn config(&self) -> anyhow::Result<C> {
        let mut config = match &self.config {
            Some(path) => load(path)?,
            None => C::default(),
        };
        config.apply(self);
        config.check().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(config)
    }

    /// Runs `serve` until a stop signal; on SIGHUP, reads the settings again and puts
    /// their `admin_tokens` in force.
    pub async fn serve(self) -> anyhow::Result<()> {
        let config = self.config()?;
        let data = config.data().to_owned();
        let running = config.start().await?;
        let reload = tokio::spawn(reload_admins_on_hangup(self, running.tokens.clone()));
        let served = running.until_signal(C::PROGRAM, &data).await;
        reload.abort();
        served
    }
}

/// On each SIGHUP, the named admins of the settings as they are now (file, then flags
/// and environment). A file that no longer reads or checks changes nothing: the
/// admins in force stay, and the log says why.
async fn reload_admins_on_hangup<C: ServiceConfig>(
    args: ServeArgs<C>,
    tokens: std::sync::Arc<hydra_core::auth::Tokens>,
) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: admin tokens are read at start only");
            return;
        };
        while hangups.recv().await.is_some() {
            let named =
                args.config().and_then(|c| named_admins(c.admin_tokens()).map_err(anyhow::Error::msg));
            match named {
                Ok(named) => {
                    tokens.set_named_admins(named);
                    tracing::info!(admins = ?tokens.admin_names(), "SIGHUP: admin tokens reloaded");
                }
                Err(e) => {
                    tracing::error!("SIGHUP: settings refused, the admin tokens in force are kept: {e:#}")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (args, tokens);
}

/// Test helpers each service's config tests use.
#[cfg(test)]
pub mod testing {
    use super::*;
    use std::collections::BTreeMap;

    /// The keys a config accepts, as the reference writes them, with their defaults:
    /// top-level keys, and `section.key` inside a section (a map that is empty by
    /// default, such as `role_recipes`, is one key).
    pub fn keys(config: &impl serde::Serialize) -> BTreeMap<String, serde_json::Value> {
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
            match v.as_object() {
                Some(map) if !map.is_empty() => {
                    for (k, v) in map {
                        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        walk(&key, v, out);
                    }
                }
                _ => {
                    out.insert(prefix.to_owned(), v.clone());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk("", &serde_json::to_value(config).expect("a config serializes"), &mut out);
        out
    }

    /// The key table under `heading` in the page: each row's backticked first column,
    /// with its default column.
    pub fn documented(page: &str, heading: &str) -> BTreeMap<String, String> {
        let section =
            page.split("\n## ").find(|s| s.lines().next() == Some(heading)).expect("the section is there");
        section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| {
                let (key, rest) = l.split_once('`')?;
                let default = rest.trim_start_matches(" |").split(" | ").next()?.trim();
                Some((key.to_owned(), default.to_owned()))
            })
            .collect()
    }

    /// Whether the reference's default column (its first backticked value, when it
    /// has one) says `value`; a placeholder such as `http://<listen>` is not checked.
    fn says(column: &str, value: &serde_json::Value) -> bool {
        use serde_json::Value;
        let Some(written) = column.split('`').nth(1).map(|w| w.replace("\\|", "|")) else {
            return true;
        };
        match value {
            _ if written.contains('<') => true,
            Value::Null => true,
            Value::Number(n) => written.parse::<f64>().ok() == n.as_f64(),
            Value::Array(items) => {
                written == items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
            }
            Value::String(s) => match (parse_duration(s), parse_duration(&written)) {
                (Ok(a), Ok(b)) => a == b,
                _ => *s == written,
            },
            _ => true,
        }
    }

    /// Fails naming the keys the reference misses, the ones it has in excess and the
    /// ones whose default it misstates.
    pub fn assert_documented(config: &impl serde::Serialize, heading: &str) {
        let page = include_str!("../../docs/configuration.md");
        let (accepted, listed) = (keys(config), documented(page, heading));
        let missing: Vec<_> = accepted.keys().filter(|k| !listed.contains_key(*k)).collect();
        let extra: Vec<_> = listed.keys().filter(|k| !accepted.contains_key(*k)).collect();
        let wrong: Vec<_> = accepted
            .iter()
            .filter_map(|(k, v)| Some((k, v, listed.get(k)?)))
            .filter(|(_, v, column)| !says(column, v))
            .map(|(k, v, column)| format!("{k}: the default is {v}, the page says {column}"))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty() && wrong.is_empty(),
            "docs/configuration.md, section {heading}: keys accepted but not listed {missing:?}, \
             listed but not accepted {extra:?}, defaults misstated {wrong:?}"
        );
    }

    /// The environment variable of each `serve` flag, by the flag's name.
    pub fn env_vars<C: ServiceConfig>() -> Vec<(String, String)> {
        let command = ServeArgs::<C>::augment_args(clap::Command::new("serve"));
        command
            .get_arguments()
            .filter_map(|a| Some((a.get_long()?.to_owned(), a.get_env()?.to_str()?.to_owned())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_reads_as_a_string_and_never_shows() {
        let secret: Secret = serde_json::from_str("\"hya_0123\"").unwrap();
        assert_eq!(secret.0, "hya_0123");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(<secret>)");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"hya_0123\"");
    }

    #[derive(serde::Deserialize)]
    struct One {
        #[serde(with = "duration")]
        d: Duration,
    }

    fn read(yaml: &str) -> Result<Duration, String> {
        serde_yaml::from_str::<One>(yaml).map(|o| o.d).map_err(|e| e.to_string())
    }

    #[test]
    fn durations_are_seconds_or_humantime_and_bounded() {
        assert_eq!(read("d: 90"), Ok(Duration::from_secs(90)));
        assert_eq!(read("d: 1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(read("d: 90s"), Ok(Duration::from_secs(90)));
        assert_eq!(read("d: \"250ms\""), Ok(Duration::from_millis(250)));
        assert_eq!(read("d: 366d"), Ok(MAX_DURATION));
        // Huge values are refused, not a panic in `from_secs_f64`; the error names the key.
        for huge in ["1e30", "1e300", "31622400.5", "18446744073709551615", "400d", ".inf"] {
            let e = read(&format!("d: {huge}")).unwrap_err();
            assert!(e.starts_with("d: "), "{huge}: {e}");
            assert!(e.contains("too long") || e.contains("not a number"), "{huge}: {e}");
        }
        for bad in ["-1", "-0.5", "soon", "[1]", "~"] {
            assert!(read(&format!("d: {bad}")).is_err(), "{bad}");
        }
        assert!(parse_duration("18446744073709553").is_err());
        assert_eq!(parse_duration("366d"), Ok(MAX_DURATION));
    }

    #[test]
    fn a_duration_is_written_as_it_is_read() {
        #[derive(serde::Serialize)]
        struct Out {
            #[serde(with = "duration")]
            d: Duration,
        }
        let yaml = serde_yaml::to_string(&Out { d: Duration::from_millis(90_250) }).unwrap();
        assert_eq!(read(&yaml), Ok(Duration::from_millis(90_250)));
    }

    #[test]
    fn millis_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
