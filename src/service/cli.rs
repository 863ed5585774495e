//! The kit both command lines share: logging, exit codes, the offline `audit` and
//! `repair`, where a client command finds its token, and the helpers that print JSON
//! answers as text.

use crate::service::client::{Client, Timeouts};
use anyhow::bail;
use clap::Args;
use hydra_core::audit::{replay_into, Stop};
use hydra_core::store::Store;
use hydra_projections::Projection;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Logs to stderr, filtered by `HYDRA_LOG` (default `info`): the same in every program.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HYDRA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// For client commands: a CLI piped into `head` should end quietly, not panic on a
/// closed pipe.
pub fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread
    // relies on it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The exit code of a command's result; an error is printed with its causes.
pub fn exit_code(result: anyhow::Result<u8>) -> std::process::ExitCode {
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Where a client command's token comes from: its flag or variable, else the
/// `admin-token` file that `serve` left in the data dir of a server on this machine.
pub struct TokenSource {
    /// How the operator gives it, for the message when there is none.
    pub flag: &'static str,
    pub env: &'static str,
    /// The variable naming the server's data dir, and the data dir without it.
    pub data_env: &'static str,
    pub default_data: &'static str,
}

impl TokenSource {
    /// The token given, else the data dir's; without either the command stops here:
    /// every client command needs one, and a 401 would say less.
    pub fn token(&self, given: Option<&str>) -> anyhow::Result<String> {
        if let Some(t) = given {
            return Ok(t.to_owned());
        }
        let dir =
            std::env::var_os(self.data_env).map(PathBuf::from).unwrap_or_else(|| self.default_data.into());
        match std::fs::read_to_string(dir.join("admin-token")) {
            Ok(t) => Ok(t.trim().to_owned()),
            Err(_) => bail!("no admin token: pass --{} or set {}", self.flag, self.env),
        }
    }

    /// The client of a CLI command: the server named, with the token found.
    pub fn client(&self, server: &str, given: Option<&str>) -> anyhow::Result<Client> {
        Ok(Client::new(server, Some(self.token(given)?), Timeouts::CLI))
    }
}

/// The options of `audit` past its data dir (which each program reads from its own
/// variable).
#[derive(Debug, Args)]
pub struct AuditOptions {
    /// Replay only up to this sequence number (to compare with an older digest).
    #[arg(long)]
    pub upto: Option<u64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// The damaged data dir (the server must not be running on it).
    #[arg(long)]
    pub data: PathBuf,
    /// Keep events 1..=SEQ, the last good seq that `serve` and `audit` name.
    #[arg(long, value_name = "SEQ")]
    pub truncate_after: u64,
    /// Go on when the node tokens cannot be read (every node must enroll again).
    #[arg(long)]
    pub drop_tokens: bool,
}

/// `repair`: rebuilds the data dir from events 1..=SEQ (see `hydra_core::repair`) and says
/// what it did.
pub fn repair_log<P: Projection>(args: &RepairArgs) -> anyhow::Result<()> {
    let r = hydra_core::repair::repair::<P>(&args.data, args.truncate_after, args.drop_tokens)?;
    println!("repaired {}: kept events 1..={}", args.data.display(), r.kept);
    println!("the damaged data dir, untouched: {}", r.damaged_copy.display());
    println!("{} readable events past seq {} exported to {}", r.dropped, r.kept, r.dropped_file.display());
    println!(
        "node tokens carried over: {} ({} of nodes no longer in the log dropped)",
        r.tokens_kept, r.tokens_dropped
    );
    Ok(())
}

/// The offline audit of a service's log (the server must not be running on it):
/// replays every record from seq 1 with every check, and prints the digest of the
/// rebuilt views, to compare with the live `GET /api/v1/audit/digest`. `count` names
/// one figure of the views to show (`nodes`, `experiences`).
pub fn audit_log<P: Projection>(
    program: &str,
    data: &Path,
    options: &AuditOptions,
    count: (&str, fn(&P) -> usize),
) -> anyhow::Result<()> {
    if !data.join("log").exists() {
        bail!("no event log in {}", data.display());
    }
    let damaged = |e: hydra_core::store::StoreError| match hydra_core::repair::refusal(data, program, &e) {
        Some(message) => anyhow::anyhow!("the log failed the audit: {message}"),
        None => anyhow::Error::new(e).context("the log failed the audit"),
    };
    let store = Store::open(data).map_err(|e| {
        if hydra_core::store::in_use(data) {
            anyhow::anyhow!("a server is running on {}: stop it first ({e})", data.display())
        } else {
            damaged(e)
        }
    })?;
    let head = store.last_seq().map_err(damaged)?;
    hydra_core::audit::check_watermark(&store, head).map_err(damaged)?;
    let stop = options.upto.map(Stop::AtSeq).unwrap_or(Stop::End);
    let started = std::time::Instant::now();
    let r = replay_into::<P>(&store, stop, head).map_err(damaged)?;
    if options.upto.is_none() {
        hydra_core::audit::audit_index(&store, head).map_err(damaged)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let (name, counter) = count;
    if options.json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "events": r.events, "seq": r.views.last_seq(), "digest": r.digest, name: counter(&r.views)})
        );
    } else {
        println!("log ok: {} events, sequence contiguous, hash chain intact", r.events);
        println!("{name}: {}", counter(&r.views));
        println!("seq: {}", r.views.last_seq());
        println!("digest: {}", r.digest);
        println!("replayed in {secs:.3} s");
    }
    Ok(())
}

/// A field as text: strings bare, lists comma-joined, null as `-`.
pub fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// The entries of a JSON list; none when it is not one.
pub fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// A JSON answer as `--json` prints it.
pub fn pretty(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints an answer: as it came with `--json` (scripts read it), else by `text`.
pub fn show(v: &Value, json: bool, text: impl FnOnce(&Value)) {
    if json {
        pretty(v)
    } else {
        text(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_comes_from_the_flag_then_the_data_dir_else_the_command_stops() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap().to_owned();
        // A data-dir variable no one sets, so the default dir is the temporary one.
        let source = TokenSource {
            flag: "admin-token",
            env: "HYDRA_TEST_TOKEN",
            data_env: "HYDRA_TEST_UNSET_DATA_DIR",
            // The fields are `&'static str`, as in the CLIs: a test may leak one.
            default_data: Box::leak(data.into_boxed_str()),
        };
        let err = source.token(None).unwrap_err();
        assert_eq!(err.to_string(), "no admin token: pass --admin-token or set HYDRA_TEST_TOKEN");
        std::fs::write(dir.path().join("admin-token"), "from-the-file\n").unwrap();
        assert_eq!(source.token(None).unwrap(), "from-the-file");
        assert_eq!(source.token(Some("given")).unwrap(), "given");
    }
}
