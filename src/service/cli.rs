//! The kit both command lines share: exit codes, the offline `audit` and
//! `repair`, where a client command finds its token, and the helpers that print JSON
//! answers as text.

use crate::service::backup::{backup_cmd, restore_cmd, BackupCommand, RestoreArgs};
use crate::service::client::{Client, Timeouts};
use crate::service::config::{ServeArgs, ServiceConfig};
use anyhow::bail;
use clap::{Args, Subcommand};
use hydra_core::audit::{replay_into, Stop};
use hydra_core::store::Store;
use hydra_projections::Projection;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// For client commands: a CLI piped into `head` should end quietly, not panic on a
/// closed pipe.
fn quiet_on_closed_pipe() {
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

/// The server and token of every client command, the same in both programs:
/// `--server` and `--token` (or `--admin-token`), each with its variable under the
/// program's prefix; without a token, the one `serve` left in the local data dir.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs<C: ServiceConfig> {
    #[arg(long, env = C::SERVER_ENV, default_value = C::DEFAULT_SERVER, help = format!("The {} server", C::PROGRAM))]
    pub server: String,
    #[arg(long, alias = "admin-token", env = C::TOKEN_ENV, hide_env_values = true,
          help = format!("Admin token [default: the one in ${} or {}/admin-token]", C::DATA_ENV, C::DEFAULT_DATA))]
    pub token: Option<String>,
    #[arg(skip)]
    _service: std::marker::PhantomData<fn() -> C>,
}

impl<C: ServiceConfig> ClientArgs<C> {
    /// A client of the server, with the token given or the local server's; an error
    /// when there is none. Every client command starts here, so this is also where its
    /// output learns to end quietly on a closed pipe (a server's must not).
    pub fn client(&self) -> anyhow::Result<Client> {
        quiet_on_closed_pipe();
        let data = std::env::var_os(C::DATA_ENV).map(PathBuf::from).unwrap_or_else(|| C::DEFAULT_DATA.into());
        let token = token(self.token.as_deref(), &data, C::TOKEN_ENV)?;
        Ok(Client::new(&self.server, Some(token), Timeouts::CLI))
    }
}

/// The token given, else the data dir's; without either the command stops here:
/// every client command needs one, and a 401 would say less.
fn token(given: Option<&str>, data: &Path, env: &str) -> anyhow::Result<String> {
    if let Some(t) = given {
        return Ok(t.to_owned());
    }
    match std::fs::read_to_string(data.join("admin-token")) {
        Ok(t) => Ok(t.trim().to_owned()),
        Err(_) => bail!("no admin token: pass --token or set {env}"),
    }
}

/// The commands every service's program has about its own data dir, the same in both:
/// each binary flattens them into its own command list.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand<C: ServiceConfig> {
    /// Run the server.
    Serve(ServeArgs<C>),
    /// Replay the data dir's log offline (the server stopped): check every record and
    /// print the digest of the rebuilt views, to compare with `GET /api/v1/audit/digest`.
    Audit(AuditArgs<C>),
    /// Rebuild a damaged log from its intact prefix (the server stopped): keeps events
    /// 1..=SEQ, moves the damaged data dir aside and exports what it drops.
    Repair(RepairArgs),
    /// Bring a data dir written by an older version to this one's layout (the server
    /// stopped). Safe to run again; finishes a migration that was cut short.
    Migrate(DataArgs<C>),
    /// Write a backup of the log: from the running server (a consistent copy as of
    /// one seq while it keeps taking writes), or offline with --data. Prints the seq
    /// and digest it recorded.
    Backup(BackupCommand<ClientArgs<C>>),
    /// Restore a backup into a new or empty data dir: every record and the checksum
    /// verified, the digest compared with the one the backup recorded.
    Restore(RestoreArgs),
}

impl<C: ServiceConfig> ServiceCommand<C> {
    /// Runs the command; returns the process exit code.
    pub async fn run(self) -> anyhow::Result<u8> {
        match self {
            ServiceCommand::Serve(args) => args.serve().await?,
            ServiceCommand::Audit(args) => audit_log::<C>(&args)?,
            ServiceCommand::Repair(args) => repair_log::<C::Views>(&args)?,
            ServiceCommand::Migrate(args) => migrate::<C>(&args.data)?,
            ServiceCommand::Backup(a) => {
                backup_cmd::<C::Views>(C::PROGRAM, &a.backup, || a.client.client()).await?
            }
            ServiceCommand::Restore(args) => restore_cmd::<C::Views>(C::PROGRAM, &args)?,
        }
        Ok(0)
    }
}

/// The data dir of an offline command (the server must not be running on it).
#[derive(Debug, Args)]
pub struct DataArgs<C: ServiceConfig> {
    #[arg(long, env = C::DATA_ENV, default_value = C::DEFAULT_DATA,
          help = "The data dir (the server must not be running on it)")]
    pub data: PathBuf,
    #[arg(skip)]
    _service: std::marker::PhantomData<C>,
}

/// `audit`'s flags.
#[derive(Debug, Args)]
pub struct AuditArgs<C: ServiceConfig> {
    #[command(flatten)]
    pub data: DataArgs<C>,
    #[command(flatten)]
    pub options: AuditOptions,
}

/// `migrate`: says what it did, step by step.
fn migrate<C: ServiceConfig>(data: &Path) -> anyhow::Result<()> {
    offline_data(data)?;
    let what = format!("cannot migrate {}", data.display());
    let m = hydra_core::migrate::migrate(data).map_err(|e| refused(C::PROGRAM, data, &what, e))?;
    if let Some(to) = m.finished_interrupted {
        println!("found a migration to layout {to} that was cut short: finishing it");
    }
    for step in &m.steps {
        println!("layout {} -> {}: {}", step.from, step.from + 1, step.what);
    }
    if let Some((before, after)) = m.sled_bytes {
        println!("sled's directory rewritten without the events: {before} -> {after} bytes");
    }
    if m.steps.is_empty() {
        println!("{}: layout {} is current, nothing to do", data.display(), m.to);
    } else {
        println!("migrated {}: layout {} -> {}", data.display(), m.from, m.to);
    }
    Ok(())
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

/// An offline command's first check: a log to work on, and no server holding it.
fn offline_data(data: &Path) -> anyhow::Result<()> {
    if !data.join("log").exists() {
        bail!("no event log in {}", data.display());
    }
    if hydra_core::store::in_use(data) {
        bail!("a server is running on {}: stop it first", data.display());
    }
    Ok(())
}

/// Why an offline command cannot go on with `data` after `what` failed: the refusal
/// (damage, another layout) that names the way on, or the error itself.
fn refused(program: &str, data: &Path, what: &str, e: hydra_core::store::StoreError) -> anyhow::Error {
    match hydra_core::repair::refusal(data, program, &e) {
        Some(message) => anyhow::anyhow!("{what}: {message}"),
        None => anyhow::Error::new(e).context(what.to_owned()),
    }
}

/// The offline audit of a service's log (the server must not be running on it):
/// replays every record from seq 1 with every check, and prints the digest of the
/// rebuilt views, to compare with the live `GET /api/v1/audit/digest`, and the one
/// figure of the views the service names (`nodes`, `experiences`).
pub fn audit_log<C: ServiceConfig>(args: &AuditArgs<C>) -> anyhow::Result<()> {
    let (program, data, options) = (C::PROGRAM, args.data.data.as_path(), &args.options);
    offline_data(data)?;
    let damaged = |e| refused(program, data, "the log failed the audit", e);
    let store = Store::open(data).map_err(damaged)?;
    let head = store.last_seq().map_err(damaged)?;
    hydra_core::audit::check_watermark(&store, head).map_err(damaged)?;
    let stop = options.upto.map(Stop::AtSeq).unwrap_or(Stop::End);
    let started = std::time::Instant::now();
    let r = replay_into::<C::Views>(&store, stop, head).map_err(damaged)?;
    // The outputs are checked against the whole log; with --upto, against its part.
    let outputs = hydra_core::audit::audit_outputs(&store, r.views.last_seq()).map_err(damaged)?;
    if options.upto.is_none() {
        hydra_core::audit::audit_index(&store, head).map_err(damaged)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let (name, counter) = C::AUDIT_COUNT;
    if options.json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "events": r.events, "seq": r.views.last_seq(), "digest": r.digest, name: counter(&r.views),
                "outputs": {"present": outputs.present, "pruned": outputs.pruned}})
        );
    } else {
        println!("log ok: {} events, sequence contiguous, hash chain intact", r.events);
        println!("{name}: {}", counter(&r.views));
        println!("outputs: {} present (hashes checked), {} pruned", outputs.present, outputs.pruned);
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

    /// clap's own checks (no two flags with one name, defaults that parse…) over the
    /// four programs' command lines, shared parts included.
    #[test]
    fn every_program_s_command_line_is_consistent() {
        use clap::CommandFactory;
        crate::cluster::cli::Command::command().debug_assert();
        crate::library::cli::Command::command().debug_assert();
        crate::agent::cli::Cli::command().debug_assert();
        crate::pipeline::cli::Cli::command().debug_assert();
    }

    #[test]
    fn a_token_comes_from_the_flag_then_the_data_dir_else_the_command_stops() {
        let dir = tempfile::tempdir().unwrap();
        let err = token(None, dir.path(), "HYDRA_TEST_TOKEN").unwrap_err();
        assert_eq!(err.to_string(), "no admin token: pass --token or set HYDRA_TEST_TOKEN");
        std::fs::write(dir.path().join("admin-token"), "from-the-file\n").unwrap();
        assert_eq!(token(None, dir.path(), "HYDRA_TEST_TOKEN").unwrap(), "from-the-file");
        assert_eq!(token(Some("given"), dir.path(), "HYDRA_TEST_TOKEN").unwrap(), "given");
    }
}
