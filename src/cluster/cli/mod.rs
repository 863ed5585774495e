//! The `hydracluster` command line: `serve`, `audit`, and the admin commands that talk
//! to a running server over its REST API.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use hydra_core::audit::{replay_into, Stop};
use hydra_core::store::Store;
use hydra_projections::{ClusterViews, Projection};
use std::path::PathBuf;

mod shell;

pub use crate::cluster::config::ServeArgs;

#[derive(Debug, Parser)]
#[command(name = "hydracluster", version, about = "Hydra's control plane: server and admin CLI")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane server.
    Serve(ServeArgs),
    /// Replay a data dir's log offline: check it and print the state digest.
    Audit(AuditArgs),
    /// Rebuild a damaged log from its intact prefix (the server stopped): keeps events
    /// 1..=SEQ, moves the damaged data dir aside and exports what it drops.
    Repair(RepairArgs),
    /// List nodes.
    Nodes(NodesArgs),
    /// Show one node.
    Node {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Approve a pending node, giving it roles and a place.
    Approve {
        id: String,
        /// Comma-separated roles from the RoleCatalog.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        #[arg(long)]
        district: String,
        #[arg(long)]
        venue: String,
        #[arg(long)]
        environment: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reject a pending node.
    Reject {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a node from the fleet (its token stops working).
    Remove {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace a node's roles.
    Roles {
        id: String,
        /// Comma-separated roles from the RoleCatalog (empty to clear).
        #[arg(value_delimiter = ',')]
        roles: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move a node to a district and venue (and environment).
    Placement {
        id: String,
        #[arg(long)]
        district: String,
        #[arg(long)]
        venue: String,
        #[arg(long)]
        environment: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Drain a node (or undrain it with --off).
    Drain {
        id: String,
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A node's events, oldest first.
    History {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a command on a node through the exec queue and wait for its result.
    /// The exit code follows the remote command's (124 timed out, 130 cancelled,
    /// 125 failed or expired before it could run). With --shell, a live terminal
    /// instead.
    Exec {
        /// The node's id.
        node: String,
        /// The command (run with bash -c on Linux agents). With --shell, optional: without
        /// it, an interactive login shell.
        command: Option<String>,
        /// How long the command may run: "60s", "5m", or seconds.
        #[arg(long, default_value = "60s")]
        timeout: String,
        /// Send this file's content as the command (no shell quoting problems).
        #[arg(long, conflicts_with = "command")]
        file: Option<PathBuf>,
        /// Print the result object as JSON (scripts read .stdout).
        #[arg(long)]
        json: bool,
        /// If the node drops while running it, run it again when it is back.
        #[arg(long)]
        retry_on_disconnect: bool,
        /// A live terminal on the node (a PTY, relayed by the server; no queue). Exits
        /// with the remote shell's code. --timeout does not apply: it lasts until the
        /// shell exits.
        #[arg(long, conflicts_with_all = ["file", "json", "retry_on_disconnect"])]
        shell: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask a node to reinstall its roles on its next heartbeat.
    Reprovision {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Force-stop a body's stream (through its exec channel).
    StreamStop {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the kiosk heads.
    Heads {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pin a head to a body (`none` clears the assignment).
    Assign {
        head: String,
        body: String,
        /// The app the kiosk starts on that body.
        #[arg(long)]
        app: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set the experiences a head may offer (none: it offers nothing).
    Allow {
        head: String,
        experiences: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Bodies in an anomalous state (orphan streams, busy GPUs without a stream).
    Anomalies {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A node's exec queue: the command in flight and those waiting.
    Queue {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a queued or in-flight command.
    Cancel {
        id: String,
        exec: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The live server's state digest and sequence number.
    Digest {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The data dir to audit (the server must not be running on it).
    #[arg(long, env = "HYDRACLUSTER_DATA", default_value = "./hydra-data")]
    pub data: PathBuf,
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

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The hydracluster server.
    #[arg(long, env = "HYDRACLUSTER_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Admin token [default: the one in $HYDRACLUSTER_DATA or ./hydra-data/admin-token].
    #[arg(long, env = "HYDRACLUSTER_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub district: Option<String>,
    #[arg(long)]
    pub venue: Option<String>,
    #[arg(long)]
    pub role: Option<String>,
    #[arg(long)]
    pub status: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs the audit: exit status 0 and the digest when the log is sound.
pub fn audit(args: &AuditArgs) -> anyhow::Result<()> {
    audit_log::<ClusterViews>("hydracluster", &args.data, args.upto, args.json, ("nodes", |v| v.nodes.len()))
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
    data: &std::path::Path,
    upto: Option<u64>,
    json: bool,
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
    let stop = upto.map(Stop::AtSeq).unwrap_or(Stop::End);
    let started = std::time::Instant::now();
    let r = replay_into::<P>(&store, stop, head).map_err(damaged)?;
    if upto.is_none() {
        hydra_core::audit::audit_index(&store, head).map_err(damaged)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let (name, counter) = count;
    if json {
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

/// A small blocking-free REST client for the admin commands.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let token = match &args.admin_token {
            Some(t) => t.clone(),
            None => {
                let dir = std::env::var_os("HYDRACLUSTER_DATA")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| "./hydra-data".into());
                std::fs::read_to_string(dir.join("admin-token")).map(|t| t.trim().to_owned()).map_err(
                    |_| anyhow::anyhow!("no admin token: pass --admin-token or set HYDRACLUSTER_TOKEN"),
                )?
            }
        };
        Ok(Client { http: reqwest::Client::new(), base: args.server.trim_end_matches('/').to_owned(), token })
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(self.exchange(method, path, body).await?.0)
    }

    /// Every entry of a paged list (`GET /api/v1/nodes`, `/heads`): asks again with
    /// `after=` for as long as the answer names a next page.
    pub async fn list(&self, path: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page = match &after {
                Some(a) => format!("{path}{sep}{}", serde_urlencoded::to_string([("after", a)])?),
                None => path.to_owned(),
            };
            let (value, next) = self.exchange(reqwest::Method::GET, &page, None).await?;
            match value {
                serde_json::Value::Array(items) => all.extend(items),
                other => bail!("expected a JSON array from {path}, got {other}"),
            }
            match next {
                Some(n) if after.as_ref() != Some(&n) => after = Some(n),
                Some(n) => bail!("{path}: the server named the same next page twice ({n})"),
                None => return Ok(all),
            }
        }
    }

    /// One request: the JSON answer and the next page's cursor, if the answer names one.
    async fn exchange(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(serde_json::Value, Option<String>)> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let next = resp.headers().get("x-hydra-next-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        let value: serde_json::Value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        if !status.is_success() {
            let msg = value
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            bail!("{status}: {msg}");
        }
        Ok((value, next))
    }
}

fn s(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(a)) => {
            a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(",")
        }
        Some(serde_json::Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// Prints nodes as a table.
pub fn print_nodes(nodes: &[serde_json::Value]) {
    println!(
        "{:<22} {:<18} {:<16} {:<9} {:<8} {:<24} {:<20} LAST_SEEN",
        "ID", "NAME", "IP", "STATUS", "LIVE", "ROLES", "DISTRICT/VENUE"
    );
    for n in nodes {
        let place = format!("{}/{}", s(n, "district"), s(n, "venue"));
        println!(
            "{:<22} {:<18} {:<16} {:<9} {:<8} {:<24} {:<20} {}",
            s(n, "id"),
            s(n, "name"),
            s(n, "ip"),
            s(n, "status"),
            s(n, "node_status"),
            s(n, "roles"),
            place,
            s(n, "last_seen")
        );
    }
}

fn query(pairs: &[(&str, &Option<String>)]) -> String {
    let pairs: Vec<(&str, &str)> = pairs.iter().filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))).collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
    }
}

/// Runs an admin command against a server; returns the process exit code.
pub async fn run_client(command: Command) -> anyhow::Result<u8> {
    use reqwest::Method;
    use serde_json::json;
    let pretty = |v: &serde_json::Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    match command {
        Command::Nodes(a) => {
            let c = Client::new(&a.client)?;
            let q = query(&[
                ("district", &a.district),
                ("venue", &a.venue),
                ("role", &a.role),
                ("status", &a.status),
            ]);
            let nodes = c.list(&format!("/api/v1/nodes{q}")).await?;
            if a.json {
                pretty(&serde_json::Value::Array(nodes));
            } else {
                print_nodes(&nodes);
            }
        }
        Command::Node { id, json: as_json, client } => {
            let v = Client::new(&client)?.send(Method::GET, &format!("/api/v1/nodes/{id}"), None).await?;
            if as_json {
                pretty(&v);
            } else {
                print_nodes(std::slice::from_ref(&v));
            }
        }
        Command::Approve { id, roles, district, venue, environment, owner, client } => {
            let body = json!({"roles": roles, "district": district, "venue": venue, "environment": environment, "owner": owner});
            let v = Client::new(&client)?
                .send(Method::POST, &format!("/api/v1/nodes/{id}/approve"), Some(body))
                .await?;
            print_nodes(std::slice::from_ref(&v));
        }
        Command::Reject { id, client } => {
            let v =
                Client::new(&client)?.send(Method::POST, &format!("/api/v1/nodes/{id}/reject"), None).await?;
            print_nodes(std::slice::from_ref(&v));
        }
        Command::Remove { id, client } => {
            Client::new(&client)?.send(Method::DELETE, &format!("/api/v1/nodes/{id}"), None).await?;
            println!("removed {id}");
        }
        Command::Roles { id, roles, client } => {
            let roles: Vec<String> = roles.into_iter().filter(|r| !r.is_empty()).collect();
            let v = Client::new(&client)?
                .send(Method::POST, &format!("/api/v1/nodes/{id}/roles"), Some(json!({"roles": roles})))
                .await?;
            print_nodes(std::slice::from_ref(&v));
        }
        Command::Placement { id, district, venue, environment, owner, client } => {
            let body =
                json!({"district": district, "venue": venue, "environment": environment, "owner": owner});
            let v = Client::new(&client)?
                .send(Method::POST, &format!("/api/v1/nodes/{id}/placement"), Some(body))
                .await?;
            print_nodes(std::slice::from_ref(&v));
        }
        Command::Drain { id, off, client } => {
            let v = Client::new(&client)?
                .send(Method::POST, &format!("/api/v1/nodes/{id}/drain"), Some(json!({"draining": !off})))
                .await?;
            print_nodes(std::slice::from_ref(&v));
        }
        Command::History { id, json: as_json, client } => {
            let v =
                Client::new(&client)?.send(Method::GET, &format!("/api/v1/nodes/{id}/history"), None).await?;
            if as_json {
                pretty(&v);
            } else {
                for e in v["events"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    println!(
                        "{:>8}  {}  {:<24} {:<28} {}",
                        e["seq"],
                        s(e, "at"),
                        s(e, "type"),
                        s(e, "cause"),
                        e["data"]
                    );
                }
            }
        }
        Command::Reprovision { id, client } => {
            let v = Client::new(&client)?
                .send(Method::POST, &format!("/api/v1/nodes/{id}/reprovision"), None)
                .await?;
            println!("{id}: reprovision requested ({})", s(&v, "provision_state"));
        }
        Command::StreamStop { id, client } => {
            let v = Client::new(&client)?
                .send(Method::DELETE, &format!("/api/v1/nodes/{id}/stream"), None)
                .await?;
            println!("{id}: stream cleared; {}", s(&v, "exec"));
            if let Some(out) = v["output"].as_str().filter(|o| !o.is_empty()) {
                print!("{out}");
            }
        }
        Command::Heads { json: as_json, client } => {
            let heads = Client::new(&client)?.list("/api/v1/heads").await?;
            if as_json {
                pretty(&serde_json::Value::Array(heads));
            } else {
                println!(
                    "{:<22} {:<20} {:<8} {:<10} {:<20} {:<20} LAST_SEEN",
                    "ID", "NAME", "LIVE", "STATUS", "DISTRICT/VENUE", "BODY"
                );
                for h in &heads {
                    let place = format!("{}/{}", s(h, "district"), s(h, "venue"));
                    println!(
                        "{:<22} {:<20} {:<8} {:<10} {:<20} {:<20} {}",
                        s(h, "id"),
                        s(h, "name"),
                        s(h, "node_status"),
                        s(h, "status"),
                        place,
                        s(h, "assigned_body_name"),
                        s(h, "last_seen")
                    );
                }
            }
        }
        Command::Assign { head, body, app, client } => {
            let body_id = (body != "none").then_some(body);
            let payload = serde_json::json!({ "body_id": body_id, "app_id": app });
            let v = Client::new(&client)?
                .send(Method::POST, &format!("/api/v1/nodes/{head}/head-assignment"), Some(payload))
                .await?;
            match v["assigned_body_id"].as_str() {
                Some(b) => println!("{head}: pinned to {b} ({})", s(&v, "assigned_body_name")),
                None => println!("{head}: not pinned to any body"),
            }
        }
        Command::Allow { head, experiences, client } => {
            let payload = serde_json::json!({ "experiences": experiences });
            let v = Client::new(&client)?
                .send(Method::POST, &format!("/api/v1/nodes/{head}/allowed-experiences"), Some(payload))
                .await?;
            println!("{head}: allows {}", v["allowed_experiences"]);
        }
        Command::Anomalies { json: as_json, client } => {
            let v = Client::new(&client)?.send(Method::GET, "/api/v1/body-anomalies", None).await?;
            if as_json {
                pretty(&v);
            } else {
                let list = v.as_array().map(Vec::as_slice).unwrap_or(&[]);
                if list.is_empty() {
                    println!("no anomalies");
                }
                for a in list {
                    println!(
                        "{:<22} {:<20} {:<26} since {} ({}s)",
                        s(a, "node_id"),
                        s(a, "name"),
                        s(a, "kind"),
                        s(a, "since"),
                        a["for_s"]
                    );
                }
            }
        }
        Command::Queue { id, json: as_json, client } => {
            let v = Client::new(&client)?
                .send(Method::GET, &format!("/api/v1/nodes/{id}/exec/queue"), None)
                .await?;
            if as_json {
                pretty(&v);
            } else {
                let line = |c: &serde_json::Value| {
                    println!("{:<24} {:<10} {}", s(c, "id"), s(c, "status"), s(c, "command"))
                };
                if !v["in_flight"].is_null() {
                    line(&v["in_flight"]);
                }
                for c in v["queued"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    line(c);
                }
            }
        }
        Command::Cancel { id, exec, client } => {
            let v = Client::new(&client)?
                .send(Method::DELETE, &format!("/api/v1/nodes/{id}/exec/queue/{exec}"), None)
                .await?;
            println!("{exec}: cancelled (was {})", s(&v, "was"));
        }
        Command::Digest { client } => {
            let v = Client::new(&client)?.send(Method::GET, "/api/v1/audit/digest", None).await?;
            println!("seq: {}\ndigest: {}", v["seq"], s(&v, "digest"));
        }
        Command::Exec { node, command, timeout, file, json: as_json, retry_on_disconnect, shell, client } => {
            if shell {
                return shell::run(&Client::new(&client)?, &node, command).await;
            }
            let command = match (command, file) {
                (Some(c), None) => c,
                (None, Some(f)) => {
                    std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?
                }
                _ => bail!("give the command, or --file with a script"),
            };
            let timeout = crate::cluster::config::parse_duration(&timeout)
                .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
            return exec(&Client::new(&client)?, &node, command, timeout, retry_on_disconnect, as_json).await;
        }
        Command::Serve(_) | Command::Audit(_) | Command::Repair(_) => unreachable!("handled by main"),
    }
    Ok(0)
}

/// Queues a command, waits for its end and prints it. The wait is bounded: past the
/// timeout plus a margin (the server's watchdog answers first in normal operation),
/// the command is cancelled and the exit code is 124. Ctrl-C cancels it too.
async fn exec(
    c: &Client,
    node: &str,
    command: String,
    timeout: std::time::Duration,
    retry_on_disconnect: bool,
    as_json: bool,
) -> anyhow::Result<u8> {
    use reqwest::Method;
    let body = serde_json::json!({
        "command": command,
        "timeout": timeout.as_secs_f64(),
        "retry_on_disconnect": retry_on_disconnect,
    });
    let queued = c.send(Method::POST, &format!("/api/v1/nodes/{node}/exec"), Some(body)).await?;
    let id = queued["id"].as_str().unwrap_or_default().to_owned();
    if let Some(note) = queued["note"].as_str() {
        eprintln!("note: {note}");
    }
    let cancel = || async {
        let _ = c.send(Method::DELETE, &format!("/api/v1/nodes/{node}/exec/queue/{id}"), None).await;
    };
    let deadline = tokio::time::Instant::now() + timeout + std::time::Duration::from_secs(30);
    let result = loop {
        // The server holds the request until the command ends (up to 25 s a round).
        let path = format!("/api/v1/nodes/{node}/exec/{id}/result?wait=25");
        let r = tokio::select! {
            r = c.send(Method::GET, &path, None) => r?,
            _ = tokio::signal::ctrl_c() => {
                cancel().await;
                eprintln!("interrupted: cancelled {id}");
                return Ok(130);
            }
        };
        let status = r["status"].as_str().unwrap_or_default();
        if status != "pending" && status != "dispatched" {
            break r;
        }
        if tokio::time::Instant::now() >= deadline {
            cancel().await;
            eprintln!("error: no result for {id} within its timeout ({}s); cancelled it", timeout.as_secs());
            return Ok(124);
        }
    };
    let status = result["status"].as_str().unwrap_or_default();
    if as_json {
        println!("{result}");
    } else {
        use std::io::Write;
        let _ = std::io::stdout().write_all(result["stdout"].as_str().unwrap_or_default().as_bytes());
        let _ = std::io::stderr().write_all(result["stderr"].as_str().unwrap_or_default().as_bytes());
        if result["truncated"] == true {
            eprintln!("note: the output was cut at the server's limit");
        }
        match status {
            "completed" => {}
            "timed_out" => eprintln!("error: {id} timed out after {}s", timeout.as_secs()),
            other => eprintln!("error: {id} {other}: {}", s(&result, "reason")),
        }
    }
    Ok(match status {
        "completed" => result["exit_code"].as_i64().map(|c| c.clamp(0, 255) as u8).unwrap_or(1),
        "timed_out" => 124,
        "cancelled" => 130,
        _ => 125,
    })
}

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
