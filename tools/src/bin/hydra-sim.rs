//! `hydra-sim`: a fleet of simulated node agents in one process, against a real
//! hydracluster. Each agent enrolls through `/enroll`, is approved through the admin
//! API, then heartbeats like a real one: provider up or down, streams starting and
//! stopping, and now and then an outage long enough to go offline.

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
}

#[derive(Default)]
struct Stats {
    heartbeats: AtomicU64,
    errors: AtomicU64,
    silent: AtomicU64,
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
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let base = args.server.trim_end_matches('/').to_owned();
    let started = Instant::now();
    let mut agents = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let name = format!("sim-body-{i:05}");
        let ip = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256);
        let r = http.post(format!("{base}/enroll")).json(&json!({"name": name, "ip": ip})).send().await?;
        if !r.status().is_success() {
            bail!("enrolling {name}: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        let body: Value = r.json().await?;
        let id = body["node_id"].as_str().unwrap_or_default().to_owned();
        let node_token = body["token"].as_str().unwrap_or_default().to_owned();
        let venue = &args.venues[i % args.venues.len()];
        let approve = json!({"roles": ["hydrabody"], "district": args.district, "venue": venue});
        let r = http
            .post(format!("{base}/api/v1/nodes/{id}/approve"))
            .bearer_auth(&token)
            .json(&approve)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("approving {id}: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        agents.push((i, node_token));
    }
    println!("enrolled and approved {} agents in {:.1}s", args.nodes, started.elapsed().as_secs_f64());

    let stats = Arc::new(Stats::default());
    for (i, node_token) in agents {
        let (http, base, stats) = (http.clone(), base.clone(), stats.clone());
        let (interval, churn, outages) = (args.interval, args.churn, args.outages);
        tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((i as u64 + 1) * 0x2545_F491_4F6C_DD1D));
            let mut streaming = false;
            let mut provider = "running";
            // Spread the first heartbeats over one interval.
            tokio::time::sleep(Duration::from_secs_f64(interval * (i % 100) as f64 / 100.0)).await;
            loop {
                if rng.percent(outages) {
                    stats.silent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs_f64(interval * 30.0)).await;
                    stats.silent.fetch_sub(1, Ordering::Relaxed);
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
                });
                let sent = http
                    .post(format!("{base}/api/v1/body/heartbeat"))
                    .bearer_auth(&node_token)
                    .json(&report)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => stats.heartbeats.fetch_add(1, Ordering::Relaxed),
                    _ => stats.errors.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_secs_f64(interval)).await;
            }
        });
    }

    let deadline = args.seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let hb = stats.heartbeats.load(Ordering::Relaxed);
        let health: Value = match http.get(format!("{base}/api/v1/health")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        println!(
            "agents {}  heartbeats/s {:.0}  errors {}  silent now {}  | server: online {} offline {} events {}",
            args.nodes,
            (hb - last) as f64 / 2.0,
            stats.errors.load(Ordering::Relaxed),
            stats.silent.load(Ordering::Relaxed),
            health["nodes"]["online"],
            health["nodes"]["offline"],
            health["last_event_id"],
        );
        last = hb;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
    }
}
