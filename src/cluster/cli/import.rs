//! `hydracluster import FILE`: a node file sent as it is to a running server, or with
//! `--data` imported offline into a stopped server's data dir through the same command
//! (`cluster::import::run`), so that the events and tokens land exactly as they would
//! through the server. Prints what was created, updated and left unchanged, or every
//! problem as `FILE:LINE: …`; the exit code is 1 when the file is refused.

use super::ClientArgs;
use crate::cluster::config::Config;
use crate::cluster::import::{self, Import, ImportError, Outcome, Refusal, Rules};
use crate::cluster::nodes::RoleRules;
use crate::service::cli::pretty;
use anyhow::Context;
use clap::Args;
use hydra_core::auth::Tokens;
use reqwest::Method;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The node file: a YAML list of nodes, or a map with a `nodes:` list (docs/import.md).
    file: PathBuf,
    /// Check the file against the fleet and say what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replace the nodes that differ from the server's (else they refuse the whole file).
    #[arg(long)]
    update: bool,
    /// Import offline into this data dir (the server stopped) instead of through --server.
    #[arg(long)]
    data: Option<PathBuf>,
    /// With --data: the server's config file, for its role_catalog and head_roles.
    #[arg(long, requires = "data")]
    config: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn import(a: ImportArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    // The name alone: where the file sat on the admin's machine is no one's business.
    let name = a.file.file_name().map_or_else(|| "nodes.yaml".into(), |n| n.to_string_lossy().into_owned());
    let answer = match &a.data {
        Some(data) => offline(data, a.config.as_deref(), name, text, a.update, a.dry_run).await?,
        None => online(&a.client, &name, text, a.update, a.dry_run).await?,
    };
    match answer {
        Ok(outcome) => {
            if a.json {
                pretty(&serde_json::to_value(&outcome)?);
            } else {
                print_outcome(&outcome);
            }
            Ok(0)
        }
        Err(refusal) => {
            if a.json {
                let mut v = serde_json::to_value(&refusal)?;
                v["error"] = refusal.to_string().into();
                pretty(&v);
            } else {
                print_refusal(&refusal);
            }
            Ok(1)
        }
    }
}

/// `POST /api/v1/nodes/import` with the file as its body.
async fn online(
    client: &ClientArgs,
    name: &str,
    text: String,
    update: bool,
    dry_run: bool,
) -> anyhow::Result<Result<Outcome, Refusal>> {
    let flag = |b: bool| if b { "true" } else { "false" };
    let query = [("name", name), ("update", flag(update)), ("dry_run", flag(dry_run))];
    let answer = client
        .client()?
        .call_raw(Method::POST, "/api/v1/nodes/import", &query, "application/yaml", text.into_bytes())
        .await?;
    // A refusal of the file lists its problems or conflicts; any other error (another
    // import under way, a bad token) is said as every command says it.
    if matches!(answer.status.as_u16(), 409 | 422) {
        if let Ok(refusal) = serde_json::from_slice::<Refusal>(&answer.body) {
            return Ok(Err(refusal));
        }
    }
    let value = answer.success()?;
    Ok(Ok(serde_json::from_value(value).context("reading the server's answer")?))
}

/// The same command as the server's, on the data dir itself: opened as `serve` opens
/// it (sled's lock refuses a dir a server is running on), then closed with a snapshot.
async fn offline(
    data: &Path,
    config: Option<&Path>,
    name: String,
    text: String,
    update: bool,
    dry_run: bool,
) -> anyhow::Result<Result<Outcome, Refusal>> {
    if hydra_core::store::in_use(data) {
        anyhow::bail!(
            "a server is running on {}: stop it, or import through it with --server",
            data.display()
        );
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating data dir {}", data.display()))?;
    let mut config = match config {
        Some(path) => crate::service::config::load::<Config>(path)?,
        None => Config::default(),
    };
    // The data dir named on the command line, whatever the file says.
    config.data = data.to_owned();
    let file = import::file_name(name)?;
    let roles = RoleRules { catalog: config.role_catalog.clone(), head_roles: config.head_roles.clone() };
    // The server's own tokens, as `serve` would have them (the admin token it keeps
    // in the data dir unless the config gives one).
    let admin = config
        .admin_token
        .clone()
        .or_else(|| std::fs::read_to_string(data.join("admin-token")).ok().map(|t| t.trim().to_owned()));
    let admins: Vec<(String, String)> = admin.into_iter().map(|t| ("admin".to_owned(), t)).collect();
    let tokens =
        Tokens::new(&admins, config.observer_token.as_deref(), config.fleet_enrollment_token.as_deref());
    let reserved = |h: &hydra_core::auth::TokenHash| tokens.is_configured(h);
    let nodes = match import::parse(&text, &Rules { roles: &roles, reserved: &reserved }) {
        Ok(nodes) => nodes,
        // A refused file opens nothing.
        Err(problems) => return Ok(Err(Refusal { file, problems, conflicts: Vec::new() })),
    };
    let ledger = crate::service::start::open_ledger(&config).await?;
    let result = import::run(&ledger, Import { file, nodes, update, dry_run }).await;
    crate::service::start::stop_writer(ledger).await;
    match result {
        Ok(outcome) => Ok(Ok(outcome)),
        Err(ImportError::Refused(refusal)) => Ok(Err(refusal)),
        Err(e) => Err(e.into()),
    }
}

fn print_outcome(o: &Outcome) {
    let (create, update) = if o.dry_run { ("would create", "would update") } else { ("created", "updated") };
    for id in &o.created {
        println!("{create} {id}");
    }
    for c in &o.updated {
        println!("{update} {} (line {}): {}", c.node_id, c.line, c.changes.join(", "));
    }
    let written = if o.dry_run {
        "dry run: nothing written".to_owned()
    } else {
        format!("{} events written", o.events)
    };
    println!(
        "{}: {} created, {} updated, {} unchanged ({written})",
        o.file,
        o.created.len(),
        o.updated.len(),
        o.unchanged.len()
    );
}

fn print_refusal(r: &Refusal) {
    for p in &r.problems {
        eprintln!("{}:{}: {}", r.file, p.line, p.message);
    }
    for c in &r.conflicts {
        eprintln!("{}:{}: {} differs: {}", r.file, c.line, c.node_id, c.changes.join(", "));
    }
    eprintln!("error: {r}");
}
