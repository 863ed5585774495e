//! The `hydraexperiencelibrary` command line: `serve`, and client commands that talk
//! to a running library over its HTTP API (SPEC §6, §11).

pub use super::config::ServeArgs;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "hydraexperiencelibrary",
    version,
    about = "Hydra's ExperienceLibrary: experiences, builds, promotions and rollouts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the library server.
    Serve(ServeArgs),
    /// Replay the library's log offline (the server stopped), check every record and
    /// print the digest of the rebuilt views, to compare with `GET /api/v1/audit/digest`.
    Audit(AuditArgs),
    /// Rebuild a damaged log from its intact prefix (the server stopped): keeps events
    /// 1..=SEQ, moves the damaged data dir aside and exports what it drops.
    Repair(crate::service::cli::RepairArgs),
    /// Promote an experience: development → staging, or staging → production. Prints
    /// the rollout id (nothing when there were no nodes to reprovision).
    Promote {
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
    },
    /// Show one experience: its builds and what each environment runs.
    Get {
        experience: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The library's health, every experience's environments, and active rollouts.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List rollouts, newest first.
    Rollouts {
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
    },
    /// Show or steer one rollout.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Create an experience.
    Create {
        experience: String,
        #[arg(long)]
        project: String,
        #[arg(long)]
        district: String,
        /// A venue the experience runs at (repeat for several).
        #[arg(long = "venue", required = true)]
        venues: Vec<String>,
        /// Promote every new build to staging at once.
        #[arg(long)]
        auto_promote: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Register a build by hand (for setups without HydraRelease).
    Build {
        experience: String,
        #[arg(long)]
        build: String,
        #[arg(long = "version", value_name = "VERSION")]
        build_version: String,
        #[arg(long)]
        artifact_url: String,
        #[arg(long)]
        sha256: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
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

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The data dir to audit (the server must not be running on it).
    #[arg(long, env = "HYDRAEXPERIENCELIBRARY_DATA", default_value = "./hydra-library-data")]
    pub data: PathBuf,
    #[command(flatten)]
    pub options: crate::service::cli::AuditOptions,
}

/// `hydraexperiencelibrary audit`.
pub fn audit(args: &AuditArgs) -> anyhow::Result<()> {
    crate::service::cli::audit_log::<hydra_projections::LibraryViews>(
        "hydraexperiencelibrary",
        &args.data,
        &args.options,
        ("experiences", |v| v.experiences.len()),
    )
}

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The library server.
    #[arg(long, env = "HYDRAEXPERIENCELIBRARY_SERVER", default_value = "http://127.0.0.1:8090")]
    pub server: String,
    /// Admin or observer token [default: the one in $HYDRAEXPERIENCELIBRARY_DATA or
    /// ./hydra-library-data/admin-token, if any].
    #[arg(long, env = "HYDRAEXPERIENCELIBRARY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A small REST client: errors carry the server's `error` message.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(args: &ClientArgs) -> Client {
        // Without --token, the admin token of a library on this machine, as left by `serve`.
        let token = args.token.clone().or_else(|| {
            let dir = std::env::var_os("HYDRAEXPERIENCELIBRARY_DATA")
                .map(PathBuf::from)
                .unwrap_or_else(|| "./hydra-library-data".into());
            std::fs::read_to_string(dir.join("admin-token")).ok().map(|t| t.trim().to_owned())
        });
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Client { http, base: args.server.trim_end_matches('/').to_owned(), token }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach the library at {url}"))?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("reading the answer from {url}"))?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let msg = value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            if status == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
                bail!("{status}: {msg} (pass --token or set HYDRAEXPERIENCELIBRARY_TOKEN)");
            }
            bail!("{status}: {msg}");
        }
        Ok(value)
    }
}

/// A field as text: strings bare, lists comma-joined, null as `-`.
fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn pretty(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn query(pairs: &[(&str, &Option<String>)]) -> String {
    let pairs: Vec<(&str, &str)> = pairs.iter().filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))).collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
    }
}

/// Path segments come from the command line: escape them so that an odd id stays
/// one segment.
fn seg(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_experience(x: &Value) {
    let auto = if x["auto_promote"] == true { ", auto-promote" } else { "" };
    println!("{} (project {}, {}/{}{auto})", s(x, "id"), s(x, "project"), s(x, "district"), s(x, "venues"));
    for env in hydra_projections::ENVIRONMENTS {
        let e = &x["environments"][env];
        if e.is_null() {
            println!("  {env:<12} -");
        } else {
            let rollout = e["rollout_id"].as_str().map(|r| format!(" (rollout {r})")).unwrap_or_default();
            println!("  {env:<12} {} {} since {}{rollout}", s(e, "build"), s(e, "version"), s(e, "since"));
        }
    }
}

fn print_rollouts(list: &[Value]) {
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

fn link(v: &Value) -> String {
    match v["url"].as_str() {
        None => "not configured".into(),
        Some(url) if v["connected"] == true => format!("{url} (connected)"),
        Some(url) => format!("{url} (not connected)"),
    }
}

/// Runs a client command; returns the process exit code.
pub async fn run_client(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Serve(_) | Command::Audit(_) | Command::Repair(_) => unreachable!("handled by main"),
        Command::Promote {
            experience,
            to,
            max_parallel,
            failure_threshold,
            node_deadline,
            build,
            json: as_json,
            client,
        } => {
            let body = json!({
                "to": to,
                "max_parallel": max_parallel,
                "failure_threshold": failure_threshold,
                "node_deadline": node_deadline,
                "build": build,
            });
            let path = format!("/api/v1/experiences/{}/promote", seg(&experience));
            let v = Client::new(&client).send(Method::POST, &path, Some(body)).await?;
            if as_json {
                pretty(&v);
                return Ok(0);
            }
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
        }
        Command::Get { experience, json: as_json, client } => {
            let v = Client::new(&client)
                .send(Method::GET, &format!("/api/v1/experiences/{}", seg(&experience)), None)
                .await?;
            if as_json {
                pretty(&v);
            } else {
                print_experience(&v);
                let builds = items(&v["builds"]);
                if !builds.is_empty() {
                    println!("builds:");
                    for b in builds {
                        println!(
                            "  {:<20} {:<12} {} {}",
                            s(b, "build"),
                            s(b, "version"),
                            s(b, "registered_at"),
                            s(b, "artifact_url")
                        );
                    }
                }
            }
        }
        Command::Status { json: as_json, client } => {
            let c = Client::new(&client);
            let health = c.send(Method::GET, "/api/v1/health", None).await?;
            let experiences = c.send(Method::GET, "/api/v1/experiences", None).await?;
            let mut active = c.send(Method::GET, "/api/v1/rollouts?state=running", None).await?;
            let paused = c.send(Method::GET, "/api/v1/rollouts?state=paused", None).await?;
            if let (Some(a), Some(p)) = (active.as_array_mut(), paused.as_array()) {
                a.extend(p.iter().cloned());
            }
            if as_json {
                pretty(&json!({ "health": health, "experiences": experiences, "active_rollouts": active }));
                return Ok(0);
            }
            println!(
                "hydraexperiencelibrary {} at {}: {}, last event {}",
                s(&health, "version"),
                client.server,
                s(&health, "status"),
                s(&health, "last_event_id")
            );
            println!("cluster: {}", link(&health["cluster"]));
            let release = &health["release"];
            let cursor =
                release["cursor"].as_str().map(|c| format!(", at build event {c}")).unwrap_or_default();
            println!("release: {}{cursor}", link(release));
            let list = items(&experiences);
            println!("experiences: {}", list.len());
            for x in list {
                print_experience(x);
            }
            let active = items(&active);
            if active.is_empty() {
                println!("active rollouts: none");
            } else {
                println!("active rollouts: {}", active.len());
                print_rollouts(active);
            }
        }
        Command::Rollouts { json: as_json, state, experience, client } => {
            let q = query(&[("state", &state), ("experience", &experience)]);
            let v = Client::new(&client).send(Method::GET, &format!("/api/v1/rollouts{q}"), None).await?;
            if as_json {
                pretty(&v);
            } else {
                print_rollouts(items(&v));
            }
        }
        Command::Rollout { command } => {
            let (action, a) = match command {
                RolloutCommand::Rollback(a) => return redo(a, "rollback").await,
                RolloutCommand::Retry(a) => return redo(a, "retry").await,
                RolloutCommand::Get(a) => (None, a),
                RolloutCommand::Pause(a) => (Some("pause"), a),
                RolloutCommand::Resume(a) => (Some("resume"), a),
                RolloutCommand::Cancel(a) => (Some("cancel"), a),
            };
            let c = Client::new(&a.client);
            let v = match action {
                None => c.send(Method::GET, &format!("/api/v1/rollouts/{}", seg(&a.id)), None).await?,
                Some(act) => {
                    c.send(Method::POST, &format!("/api/v1/rollouts/{}/{act}", seg(&a.id)), None).await?
                }
            };
            if a.json {
                pretty(&v);
            } else if action.is_some() {
                println!("rollout {}: {}", s(&v, "id"), s(&v, "state"));
            } else {
                print_rollout(&v);
            }
        }
        Command::Create { experience, project, district, venues, auto_promote, json: as_json, client } => {
            let body = json!({
                "id": experience,
                "project": project,
                "district": district,
                "venues": venues,
                "auto_promote": auto_promote,
            });
            let v = Client::new(&client).send(Method::POST, "/api/v1/experiences", Some(body)).await?;
            if as_json {
                pretty(&v);
            } else {
                println!("created {}", s(&v, "id"));
            }
        }
        Command::Build { experience, build, build_version, artifact_url, sha256, json: as_json, client } => {
            let body = json!({ "build": build, "version": build_version, "artifact_url": artifact_url, "sha256": sha256 });
            let path = format!("/api/v1/experiences/{}/builds", seg(&experience));
            let v = Client::new(&client).send(Method::POST, &path, Some(body)).await?;
            if as_json {
                pretty(&v);
                return Ok(0);
            }
            if v["duplicate"] == true {
                println!("build {build} of {experience} was registered already");
            } else {
                println!(
                    "registered build {build} ({}) as {experience}'s development build",
                    s(&v, "version")
                );
            }
            if let Some(err) = v["promotion_error"].as_str() {
                eprintln!("error: auto-promotion to staging failed: {err}");
                return Ok(1);
            }
            if let Some(p) = v.get("promotion").filter(|p| !p.is_null()) {
                match p["rollout_id"].as_str() {
                    Some(id) => println!("auto-promoted to staging: rollout {id}"),
                    None => println!("auto-promoted to staging (no nodes to reprovision)"),
                }
            }
        }
    }
    Ok(0)
}

/// `rollout rollback|retry ID`: the new rollout's id alone on stdout, for scripts.
async fn redo(a: RedoArgs, verb: &str) -> anyhow::Result<u8> {
    let body = json!({
        "max_parallel": a.max_parallel,
        "failure_threshold": a.failure_threshold,
        "node_deadline": a.node_deadline,
    });
    let path = format!("/api/v1/rollouts/{}/{verb}", seg(&a.id));
    let v = Client::new(&a.client).send(Method::POST, &path, Some(body)).await?;
    if a.json {
        pretty(&v);
    } else {
        eprintln!("{verb} of {} started as rollout {}", a.id, s(&v, "rollout_id"));
        println!("{}", s(&v, "rollout_id"));
    }
    Ok(0)
}
