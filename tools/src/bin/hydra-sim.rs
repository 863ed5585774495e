//! `hydra-sim`: a fleet of simulated node agents in one process, against a real
//! hydracluster. Each agent enrolls through `/enroll`, is approved through the admin
//! API, then heartbeats like a real one (provider up or down, streams starting and
//! stopping, now and then an outage long enough to go offline) and, alongside, runs
//! the exec loop: long-poll a command, pretend to run it, post the result.
//!
//! With `--heads N` it also registers N kiosk heads with the fleet enrollment token;
//! they heartbeat the same way (no exec loop). Every simulated node, body or head,
//! answers a heartbeat that carries `"reprovision": true` by "installing" for
//! `--provision-ms` (heartbeating on meanwhile) and posting its provision result, a
//! failure for `--provision-fail-pct` percent of them. `--environment` places the
//! whole fleet in production (the default) or staging.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use hydra_tools::bench::fanout::raise_fd_limit;
use hydra_tools::sim::{self, Poll, Posted, SimNode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long one exec long-poll waits on the server.
const EXEC_WAIT_S: u64 = 25;
/// A `sleep` shorter than this is not worth a watch request for a cancel.
const WATCH_ABOVE: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
#[command(name = "hydra-sim", about = "Run a fleet of simulated Hydra agents against a server")]
struct Args {
    /// The hydracluster server.
    #[arg(long, env = "HYDRACLUSTER_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Admin token (to approve the simulated nodes).
    #[arg(long, env = "HYDRACLUSTER_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Read the admin token from this file instead (e.g. ./hydra-data/admin-token).
    #[arg(long, default_value = "./hydra-data/admin-token")]
    admin_token_file: std::path::PathBuf,
    /// How many agents.
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Seconds between heartbeats of one agent.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// District the nodes are placed in.
    #[arg(long, default_value = "sim-district")]
    district: String,
    /// Venues, round-robin.
    #[arg(long, value_delimiter = ',', default_value = "hall-a,hall-b,hall-c")]
    venues: Vec<String>,
    /// Percent chance per heartbeat that an agent changes something (stream, provider).
    #[arg(long, default_value_t = 5)]
    churn: u32,
    /// Percent chance per heartbeat that an agent goes silent for a while.
    #[arg(long, default_value_t = 1)]
    outages: u32,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    seconds: Option<u64>,
    /// Milliseconds of pretend work per exec command (`sleep N` sleeps N seconds
    /// instead, up to the command's timeout; `exit N` ends with code N).
    #[arg(long, default_value_t = 20)]
    exec_work_ms: u64,
    /// Heartbeats only: no exec loop.
    #[arg(long)]
    no_exec: bool,
    /// Enrollments in flight at once while the fleet starts.
    #[arg(long, default_value_t = 32)]
    enroll_concurrency: usize,
    /// How many kiosk heads, registered with the fleet enrollment token in the same
    /// district and venues (heartbeats only, no exec loop).
    #[arg(long, default_value_t = 0)]
    heads: usize,
    /// The fleet enrollment token (needed with --heads).
    #[arg(long, env = "HYDRACLUSTER_FLEET_ENROLLMENT_TOKEN", hide_env_values = true)]
    fleet_token: Option<String>,
    /// The environment every simulated node (body or head) is placed in.
    #[arg(long, value_enum, default_value_t = Environment::Production)]
    environment: Environment,
    /// Milliseconds a simulated reinstall takes, from the heartbeat answer carrying
    /// `"reprovision": true` to the provision result (the node heartbeats meanwhile).
    #[arg(long, default_value_t = 2000)]
    provision_ms: u64,
    /// Percent of the reinstalls that report `{"success":false,"error":"simulated failure"}`.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    provision_fail_pct: u32,
    /// The version a successful reinstall reports.
    #[arg(long, default_value = "sim-provisioned")]
    provision_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Environment {
    Production,
    Staging,
}

impl Environment {
    fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Staging => "staging",
        }
    }
}

/// How the simulated nodes answer a reprovision request.
struct Provisioning {
    work: Duration,
    fail_pct: u32,
    version: String,
}

#[derive(Default)]
struct Stats {
    heartbeats: AtomicU64,
    errors: AtomicU64,
    silent: AtomicU64,
    /// Commands whose result the server accepted.
    commands: AtomicU64,
    /// Results the server no longer wanted (409), and commands given up because the
    /// server said they were cancelled or timed out while they ran.
    dropped: AtomicU64,
    exec_errors: AtomicU64,
    /// Commands running right now.
    running: AtomicU64,
    /// Reprovision flags received from heartbeat answers.
    provisions: AtomicU64,
    /// Provision results the server accepted: successes and simulated failures.
    provisioned: AtomicU64,
    provision_failed: AtomicU64,
    /// Provision results the server refused (409 included) or that could not be sent.
    provision_errors: AtomicU64,
}

/// A tiny xorshift generator: the simulation needs variety, not cryptography.
struct Rng(u64);

impl Rng {
    fn percent(&mut self, p: u32) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 100) < p as u64
    }
}

/// What one agent task needs; the client is shared by the whole fleet.
#[derive(Clone)]
struct Agent {
    http: reqwest::Client,
    base: Arc<str>,
    node: Arc<SimNode>,
    stats: Arc<Stats>,
    provisioning: Arc<Provisioning>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = match &args.admin_token {
        Some(t) => t.clone(),
        None => std::fs::read_to_string(&args.admin_token_file)
            .with_context(|| format!("no --admin-token and cannot read {}", args.admin_token_file.display()))?
            .trim()
            .to_owned(),
    };
    let fleet_token = match (args.heads, &args.fleet_token) {
        (0, _) => String::new(),
        (_, Some(t)) if !t.is_empty() => t.clone(),
        _ => anyhow::bail!("--heads needs --fleet-token or HYDRACLUSTER_FLEET_ENROLLMENT_TOKEN"),
    };
    let environment = match args.environment {
        // Production is the server's default: the fleet enrolls exactly as before.
        Environment::Production => None,
        other => Some(other.as_str()),
    };
    // Each agent may hold a long-poll, a heartbeat and a result post at once.
    let fd_limit = raise_fd_limit();
    let wanted = args.nodes as u64 * if args.no_exec { 1 } else { 3 } + args.heads as u64 * 2 + 64;
    if fd_limit < wanted {
        eprintln!(
            "warning: {} agents may need {wanted} open files; the limit is {fd_limit}",
            args.nodes + args.heads
        );
    }
    let http = sim::client((args.nodes + args.heads) * 2 + 64)?;
    let base: Arc<str> = args.server.trim_end_matches('/').into();
    let started = Instant::now();
    let fleet = sim::Fleet {
        count: args.nodes,
        prefix: "sim-body",
        district: &args.district,
        venues: &args.venues,
        environment,
        concurrency: args.enroll_concurrency,
    };
    let nodes = sim::enroll_fleet(&http, &base, &token, &fleet).await?;
    println!(
        "enrolled and approved {} agents in {:.1}s ({})",
        args.nodes,
        started.elapsed().as_secs_f64(),
        args.environment.as_str()
    );
    let heads = if args.heads > 0 {
        let started = Instant::now();
        let heads_fleet = sim::Fleet { count: args.heads, prefix: "sim-head", ..fleet.clone() };
        let heads = sim::register_heads(&http, &base, &fleet_token, &token, &heads_fleet).await?;
        println!("registered {} heads in {:.1}s", args.heads, started.elapsed().as_secs_f64());
        heads
    } else {
        Vec::new()
    };

    let stats = Arc::new(Stats::default());
    let provisioning = Arc::new(Provisioning {
        work: Duration::from_millis(args.provision_ms),
        fail_pct: args.provision_fail_pct,
        version: args.provision_version.clone(),
    });
    let work = Duration::from_millis(args.exec_work_ms);
    let agent_of = |node: SimNode| Agent {
        http: http.clone(),
        base: base.clone(),
        node: Arc::new(node),
        stats: stats.clone(),
        provisioning: provisioning.clone(),
    };
    for head in heads {
        // Heads get their own random streams: index past the bodies'.
        let node = SimNode { index: args.nodes + head.index, ..head };
        let agent = agent_of(node);
        let (silent_tx, _) = watch::channel(false);
        tokio::spawn(heartbeat_loop(agent, args.interval, args.churn, args.outages, silent_tx));
    }
    for node in nodes {
        let agent = agent_of(node);
        // The exec loop stays quiet while its machine is "down".
        let (silent_tx, silent_rx) = watch::channel(false);
        if !args.no_exec {
            tokio::spawn(exec_loop(agent.clone(), work, args.interval, silent_rx));
        }
        tokio::spawn(heartbeat_loop(agent, args.interval, args.churn, args.outages, silent_tx));
    }

    let deadline = args.seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let (mut last_hb, mut last_cmds) = (0, 0);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let hb = stats.heartbeats.load(Ordering::Relaxed);
        let cmds = stats.commands.load(Ordering::Relaxed);
        let health: Value = match http.get(format!("{base}/api/v1/health")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        let exec = if args.no_exec {
            String::new()
        } else {
            format!(
                "  commands run {cmds} ({:.0}/s, {} running, {} dropped, {} errors)",
                (cmds - last_cmds) as f64 / 2.0,
                stats.running.load(Ordering::Relaxed),
                stats.dropped.load(Ordering::Relaxed),
                stats.exec_errors.load(Ordering::Relaxed),
            )
        };
        let provisions = stats.provisions.load(Ordering::Relaxed);
        let provision = if provisions == 0 {
            String::new()
        } else {
            format!(
                "  reprovisions {provisions} (done {}, failed {}, errors {})",
                stats.provisioned.load(Ordering::Relaxed),
                stats.provision_failed.load(Ordering::Relaxed),
                stats.provision_errors.load(Ordering::Relaxed),
            )
        };
        println!(
            "agents {}  heartbeats/s {:.0}  errors {}  silent now {}{exec}{provision}  | server: online {} offline {} events {}",
            args.nodes + args.heads,
            (hb - last_hb) as f64 / 2.0,
            stats.errors.load(Ordering::Relaxed),
            stats.silent.load(Ordering::Relaxed),
            health["nodes"]["online"],
            health["nodes"]["offline"],
            health["last_event_id"],
        );
        (last_hb, last_cmds) = (hb, cmds);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
    }
}

async fn heartbeat_loop(a: Agent, interval: f64, churn: u32, outages: u32, silent: watch::Sender<bool>) {
    let i = a.node.index;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut streaming = false;
    let mut provider = "running";
    // A reinstall in hand, said in every heartbeat like the real agent does, so a flag
    // whose answer was lost is carried again.
    let in_hand = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Spread the first heartbeats over one interval.
    tokio::time::sleep(Duration::from_secs_f64(interval * (i % 100) as f64 / 100.0)).await;
    loop {
        if rng.percent(outages) {
            a.stats.silent.fetch_add(1, Ordering::Relaxed);
            silent.send_replace(true);
            tokio::time::sleep(Duration::from_secs_f64(interval * 30.0)).await;
            silent.send_replace(false);
            a.stats.silent.fetch_sub(1, Ordering::Relaxed);
        }
        if rng.percent(churn) {
            streaming = !streaming;
        }
        if rng.percent(churn / 2) {
            provider = if provider == "running" { "sunshine_api_unreachable" } else { "running" };
        }
        let report = json!({
            "agent_version": "sim-1.0",
            "os": "linux",
            "provider_status": provider,
            "provider_version": "sunshine-0.23",
            "stream_status": if streaming { "streaming" } else { "idle" },
            "telemetry": {"gpu_utilization_pct": if streaming { 70 } else { 3 }, "stream_count": streaming as u8},
            "provisioning": in_hand.load(Ordering::SeqCst),
        });
        let sent = a
            .http
            .post(format!("{}/api/v1/body/heartbeat", a.base))
            .bearer_auth(&a.node.token)
            .json(&report)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                a.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                let answer: Value = r.json().await.unwrap_or_default();
                if sim::reprovision_requested(&answer) {
                    // Reinstall alongside: the heartbeats go on meanwhile.
                    let success = !rng.percent(a.provisioning.fail_pct);
                    in_hand.store(true, Ordering::SeqCst);
                    tokio::spawn(reprovision(a.clone(), success, in_hand.clone()));
                }
            }
            _ => {
                a.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        };
        tokio::time::sleep(Duration::from_secs_f64(interval)).await;
    }
}

/// A simulated reinstall: takes the provisioning time, then reports how it went.
async fn reprovision(a: Agent, success: bool, in_hand: Arc<std::sync::atomic::AtomicBool>) {
    a.stats.provisions.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(a.provisioning.work).await;
    let p = &a.provisioning;
    let posted = sim::post_provision_result(&a.http, &a.base, &a.node.token, success, &p.version).await;
    let counter = match posted {
        Ok(Posted::Accepted) if success => &a.stats.provisioned,
        Ok(Posted::Accepted) => &a.stats.provision_failed,
        Ok(Posted::Discarded | Posted::Refused(_)) | Err(_) => &a.stats.provision_errors,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    in_hand.store(false, Ordering::SeqCst);
}

/// Long-polls for commands and runs them one at a time, like the real agent.
async fn exec_loop(a: Agent, work: Duration, interval: f64, mut silent: watch::Receiver<bool>) {
    // Spread the first long-polls too: thousands of connections opened in the same
    // millisecond would overflow the server's listen backlog.
    let i = a.node.index;
    tokio::time::sleep(Duration::from_secs_f64(interval * (i % 100) as f64 / 100.0)).await;
    loop {
        if silent.wait_for(|down| !*down).await.is_err() {
            return; // the heartbeat task is gone: the agent is shutting down.
        }
        match sim::next_command(&a.http, &a.base, &a.node.token, EXEC_WAIT_S).await {
            Ok(Poll::Command(cmd)) => run_one(&a, cmd, work).await,
            Ok(Poll::Nothing) => {}
            Ok(Poll::Refused(_)) => {
                // Removed or rejected: ask again rarely rather than hammer the server.
                a.stats.exec_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(_) => {
                a.stats.exec_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn run_one(a: &Agent, cmd: sim::Assigned, work: Duration) {
    let timeout = Duration::from_millis(cmd.timeout_ms);
    let (took, outcome) = sim::simulate(&cmd.command, timeout, work);
    a.stats.running.fetch_add(1, Ordering::Relaxed);
    let ran = if took > WATCH_ABOVE {
        // A long command watches for a cancel or a server-side timeout, as the real
        // agent does, and gives up when one comes.
        tokio::select! {
            _ = tokio::time::sleep(took) => true,
            _ = sim::stopped(&a.http, &a.base, &a.node.token, &cmd.id) => false,
        }
    } else {
        tokio::time::sleep(took).await;
        true
    };
    a.stats.running.fetch_sub(1, Ordering::Relaxed);
    if !ran {
        a.stats.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let counter = match sim::post_result(&a.http, &a.base, &a.node.token, &cmd.id, &outcome, took).await {
        Ok(Posted::Accepted) => &a.stats.commands,
        Ok(Posted::Discarded) => &a.stats.dropped,
        Ok(Posted::Refused(_)) | Err(_) => &a.stats.exec_errors,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}
