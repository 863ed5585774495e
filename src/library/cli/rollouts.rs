//! The rollout commands: `promote` (which starts one), `rollouts`, and `rollout
//! get|pause|resume|cancel|rollback|retry`.

use super::experiences::experience_path;
use super::ClientArgs;
use crate::service::cli::{items, pretty, s, show};
use crate::service::client::{query, seg};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

// The commands' help is the doc comment of their `Command` variant.

#[derive(Debug, Args)]
pub struct Promote {
    experience: String,
    #[arg(long, value_parser = ["staging", "production"])]
    to: String,
    /// How many nodes reprovision at once [default: the server's].
    #[arg(long)]
    max_parallel: Option<u32>,
    /// Past how many failed nodes the rollout aborts: `3` or `10%`.
    #[arg(long)]
    failure_threshold: Option<String>,
    /// How long one node may take: `30m`, `90s`…
    #[arg(long)]
    node_deadline: Option<String>,
    /// Promote this registered build instead of the source environment's.
    #[arg(long)]
    build: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn promote(a: Promote) -> anyhow::Result<u8> {
    let body = json!({
        "to": a.to,
        "max_parallel": a.max_parallel,
        "failure_threshold": a.failure_threshold,
        "node_deadline": a.node_deadline,
        "build": a.build,
    });
    let path = experience_path(&a.experience, "/promote");
    let v = a.client.client()?.send(Method::POST, &path, Some(body)).await?;
    if a.json {
        pretty(&v);
        return Ok(0);
    }
    let (experience, to) = (&a.experience, &a.to);
    // The id alone on stdout, for scripts; the story on stderr.
    match v["rollout_id"].as_str() {
        Some(id) => {
            println!("{id}");
            eprintln!(
                "promoted {experience} build {} ({}) to {to}: rollout {id} over {} bodies then {} heads ({} skipped)",
                s(&v, "build"),
                s(&v, "version"),
                s(&v, "bodies"),
                s(&v, "heads"),
                s(&v, "skipped")
            );
        }
        None => eprintln!(
            "promoted {experience} build {} ({}) to {to}: no nodes to reprovision, no rollout",
            s(&v, "build"),
            s(&v, "version")
        ),
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct List {
    #[arg(long)]
    json: bool,
    /// running, paused, completed, completed_with_failures, aborted, cancelled.
    #[arg(long)]
    state: Option<String>,
    /// Only this experience's rollouts.
    #[arg(long)]
    experience: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn rollouts(a: List) -> anyhow::Result<u8> {
    let q = query(&[("state", &a.state), ("experience", &a.experience)]);
    let v = a.client.client()?.send(Method::GET, &format!("/api/v1/rollouts{q}"), None).await?;
    show(&v, a.json, |v| print_rollouts(items(v)));
    Ok(0)
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Show a rollout and every node's progress.
    Get(RolloutArgs),
    /// Ask no more nodes until resumed (nodes in flight finish).
    Pause(RolloutArgs),
    /// Carry on with a paused rollout.
    Resume(RolloutArgs),
    /// Stop a rollout for good.
    Cancel(RolloutArgs),
    /// A new rollout that puts back the build the environment had before this one, on
    /// every node it reached (bodies, then heads); prints the new rollout id.
    Rollback(RedoArgs),
    /// A new rollout of the same build over the nodes that failed; prints its id.
    Retry(RedoArgs),
}

#[derive(Debug, Args)]
pub struct RedoArgs {
    /// The rollout id (`r7`).
    pub id: String,
    /// How many nodes reprovision at once [default: the earlier rollout's].
    #[arg(long)]
    pub max_parallel: Option<u32>,
    /// Past how many failed nodes the rollout aborts: `3` or `10%`.
    #[arg(long)]
    pub failure_threshold: Option<String>,
    /// How long one node may take: `30m`, `90s`…
    #[arg(long)]
    pub node_deadline: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The rollout id (`r7`).
    pub id: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `rollout get|pause|resume|cancel|rollback|retry ID`.
pub async fn rollout(command: RolloutCommand) -> anyhow::Result<u8> {
    let (action, a) = match command {
        RolloutCommand::Rollback(a) => return redo(a, "rollback").await,
        RolloutCommand::Retry(a) => return redo(a, "retry").await,
        RolloutCommand::Get(a) => (None, a),
        RolloutCommand::Pause(a) => (Some("pause"), a),
        RolloutCommand::Resume(a) => (Some("resume"), a),
        RolloutCommand::Cancel(a) => (Some("cancel"), a),
    };
    let c = a.client.client()?;
    let v = match action {
        None => c.send(Method::GET, &rollout_path(&a.id, ""), None).await?,
        Some(act) => c.send(Method::POST, &rollout_path(&a.id, &format!("/{act}")), None).await?,
    };
    show(&v, a.json, |v| match action {
        Some(_) => println!("rollout {}: {}", s(v, "id"), s(v, "state")),
        None => print_rollout(v),
    });
    Ok(0)
}

/// `rollout rollback|retry ID`: the new rollout's id alone on stdout, for scripts.
async fn redo(a: RedoArgs, verb: &str) -> anyhow::Result<u8> {
    let body = json!({
        "max_parallel": a.max_parallel,
        "failure_threshold": a.failure_threshold,
        "node_deadline": a.node_deadline,
    });
    let path = rollout_path(&a.id, &format!("/{verb}"));
    let v = a.client.client()?.send(Method::POST, &path, Some(body)).await?;
    show(&v, a.json, |v| {
        eprintln!("{verb} of {} started as rollout {}", a.id, s(v, "rollout_id"));
        println!("{}", s(v, "rollout_id"));
    });
    Ok(0)
}

/// `/api/v1/rollouts/{id}` and what follows it.
fn rollout_path(id: &str, rest: &str) -> String {
    format!("/api/v1/rollouts/{}{rest}", seg(id))
}

/// Rollouts as a table.
pub(super) fn print_rollouts(list: &[Value]) {
    println!(
        "{:<6} {:<20} {:<11} {:<24} {:<4} {:<10} {:<6} STARTED",
        "ID", "EXPERIENCE", "ENV", "STATE", "WAVE", "DONE/TOTAL", "FAILED"
    );
    for r in list {
        let c = &r["counts"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        println!(
            "{:<6} {:<20} {:<11} {:<24} {:<4} {:<10} {:<6} {}",
            s(r, "id"),
            s(r, "experience_id"),
            s(r, "environment"),
            s(r, "state"),
            s(r, "wave"),
            format!("{}/{}", n("completed") + n("failed"), n("total")),
            n("failed"),
            s(r, "started_at"),
        );
    }
}

/// One rollout: its line of the table, its policy, and every node's progress.
fn print_rollout(r: &Value) {
    print_rollouts(std::slice::from_ref(r));
    let p = &r["policy"];
    println!(
        "build {} {}; {}/{}; max_parallel {}, failure threshold {}, node deadline {} ms",
        s(r, "build"),
        s(r, "version"),
        s(r, "district"),
        s(r, "venues"),
        s(p, "max_parallel"),
        s(p, "failure_threshold"),
        s(p, "node_deadline_ms")
    );
    if let Some(reason) = r["reason"].as_str() {
        println!("reason: {reason}");
    }
    println!("{:<24} {:<5} {:<5} {:<13} {:<12} ERROR", "NODE", "KIND", "WAVE", "STATE", "VERSION");
    for n in items(&r["nodes"]) {
        println!(
            "{:<24} {:<5} {:<5} {:<13} {:<12} {}",
            s(n, "node_id"),
            s(n, "kind"),
            s(n, "wave"),
            s(n, "state"),
            s(n, "version"),
            n["error"].as_str().unwrap_or("")
        );
    }
    for k in items(&r["skipped"]) {
        println!("skipped {}: {}", s(k, "node_id"), s(k, "reason"));
    }
}
