//! `hydra-bench exec`: the exec path end to end against a real in-process server.
//!
//! - dispatch: one simulated agent long-polls; each command is timed from the admin's
//!   `POST …/exec` to the moment the agent's pending long-poll returns it;
//! - cli: the real programs, `hydranode run` as the agent and `hydracluster exec` as
//!   the admin, timed per CLI run with process start included;
//! - throughput: a thousand simulated agents long-polling and K submitters queueing
//!   commands round-robin and waiting for each result: submit→result cycles per
//!   second, and where the CPU goes meanwhile.
//!
//! The server gets its own tokio runtime and the clients another, as if they were
//! separate processes, so the thread meters can tell their CPU apart (see fanout.rs).

use super::fanout::{raise_fd_limit, runtime, CLIENT_THREADS, SERVER_THREADS};
use super::stats::{nanos_since, rate, summarize, CpuMeter, Summary, ThreadMeter};
use super::{server_config, ADMIN_TOKEN};
use crate::sim::{self, Fleet, Poll, Posted, SimNode};
use anyhow::{bail, Context};
use futures_util::{stream, StreamExt, TryStreamExt};
use hydra::cluster::config::Config;
use hydra::cluster::server;
use hydra::service::start::Running;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

/// The agents' long-poll wait, as the real agent uses.
const POLL_WAIT_S: u64 = 25;
/// Between the agent's re-poll and the next submit in the dispatch run: long enough
/// for the poll to be parked on the server, as it is when commands come seconds
/// apart, so the figure is the wake-up path and not a poll that finds work waiting.
const PARK: Duration = Duration::from_millis(1);
/// Unmeasured round trips first: connections opened, caches warm.
const WARMUP: usize = 20;
/// How long a submitter waits for one result before counting it lost.
const RESULT_WAIT: Duration = Duration::from_secs(30);
/// Connections being opened at once (the listen backlog must not overflow).
const CONNECTING_AT_ONCE: usize = 128;
/// Enrollments in flight at once while the fleet starts.
const ENROLLING_AT_ONCE: usize = 64;
/// Failed `hydracluster exec` runs after which the CLI section stops trying.
const GIVE_UP_AFTER: usize = 3;
/// Error lines kept for the report; the rest are only counted.
const ERRORS_KEPT: usize = 10;

#[derive(Debug, Clone)]
pub struct ExecSettings {
    /// Measured dispatches of the dispatch run.
    pub dispatches: usize,
    /// Timed `hydracluster exec` runs.
    pub cli_runs: usize,
    /// Where `hydranode` and `hydracluster` are.
    pub bin_dir: PathBuf,
    /// Simulated agents of the throughput run.
    pub agents: usize,
    /// Concurrent submitters of the throughput run.
    pub submitters: usize,
    pub duration: Duration,
    /// Results read back through the admin API and checked after the throughput run.
    pub verify: usize,
}

#[derive(Debug, Clone)]
pub struct DispatchReport {
    pub samples: usize,
    /// `POST …/exec` sent → the agent's pending long-poll returned the command.
    pub dispatch: Summary,
    /// `POST …/exec` sent → its 202 (the command durably queued).
    pub submit_ack: Summary,
    /// The agent's `POST …/result` sent → its 200 (the result durably recorded).
    pub result_ack: Summary,
    /// Long-polls that returned another command than the one just submitted.
    pub mismatches: usize,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
pub enum CliOutcome {
    /// The programs are not there or cannot do it yet: nothing was measured.
    Skipped(String),
    /// They are there but the round trip did not work.
    Failed(String),
    Ran(Box<CliReport>),
}

#[derive(Debug, Clone)]
pub struct CliReport {
    pub hydranode: PathBuf,
    pub hydracluster: PathBuf,
    pub node_id: String,
    /// `hydranode enroll` + finding the node + approving it.
    pub enroll: Duration,
    /// The first `hydracluster exec`, agent just started (not in the percentiles).
    pub first: Duration,
    /// Each `hydracluster exec <node> "echo ok"`, process start to exit.
    pub round_trip: Summary,
    /// `hydracluster --version`, process start to exit: the floor of any CLI run.
    pub process_floor: Summary,
    /// The same command through the API with the result polled every millisecond:
    /// the server and the real agent without the CLI's polling schedule.
    pub api_round_trip: Summary,
    pub failed: usize,
    pub failures: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ThroughputReport {
    pub agents: usize,
    pub submitters: usize,
    /// Enroll, approve, one heartbeat each and the first poll of every agent.
    pub setup: Duration,
    /// Submit→result cycles completed.
    pub cycles: u64,
    /// First submit to the last result.
    pub elapsed: Duration,
    pub latency: Summary,
    /// Cycles completed in each second of the run.
    pub per_second: Vec<u64>,
    /// Events appended during the run (three per cycle: queued, dispatched, completed).
    pub events: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// This process, in cores.
    pub cores_busy: f64,
    /// The whole machine, in cores: the difference is other processes' load.
    pub machine_cores: f64,
    pub cores: usize,
    pub server_cores: f64,
    pub client_cores: f64,
    /// Share of the run the writer thread was on a CPU.
    pub writer_busy: f64,
    /// Share of the run the writer was ready to run but the CPUs were taken: with
    /// one writer, time it loses to the HTTP threads on a small machine.
    pub writer_preempted: f64,
    pub sled_io_cores: f64,
    pub verified: usize,
    pub verify_failures: Vec<String>,
    pub fd_limit: u64,
    pub stop: Duration,
}

impl ThroughputReport {
    pub fn per_sec(&self) -> f64 {
        rate(self.cycles, self.elapsed)
    }

    /// The most cycles per second `cpu_us_per_cycle` microseconds of CPU per cycle allow on
    /// every core of this machine.
    pub fn ceiling(&self, cpu_us_per_cycle: f64) -> f64 {
        if cpu_us_per_cycle <= 0.0 {
            return 0.0;
        }
        self.cores as f64 * 1e6 / cpu_us_per_cycle
    }

    /// CPU per cycle of the server side only: its runtime, the writer, sled's I/O.
    pub fn server_side_us(&self) -> f64 {
        self.cpu_us_per_cycle(self.server_cores + self.writer_busy + self.sled_io_cores)
    }

    /// Microseconds of CPU per cycle spent by the threads behind `cores`.
    pub fn cpu_us_per_cycle(&self, cores: f64) -> f64 {
        if self.cycles == 0 {
            return 0.0;
        }
        cores * self.elapsed.as_secs_f64() * 1e6 / self.cycles as f64
    }
}

/// The sections of `hydra-bench exec` that ran.
#[derive(Debug, Default)]
pub struct ExecBench {
    pub dispatch: Option<DispatchReport>,
    pub cli: Option<CliOutcome>,
    pub throughput: Option<ThroughputReport>,
}

/// The two runtimes every run uses: one for the server, one for the clients.
pub struct Harness {
    server: Runtime,
    client: Runtime,
}

impl Harness {
    pub fn new() -> anyhow::Result<Harness> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Harness { server: runtime(SERVER_THREADS, cores)?, client: runtime(CLIENT_THREADS, cores)? })
    }

    pub fn shutdown(self) {
        for rt in [self.server, self.client] {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }

    fn start_server(&self, data: &Path) -> anyhow::Result<Running> {
        let config = Config {
            // The simulated agents heartbeat once, at the start: they must not be
            // marked offline mid-run, which would evict their commands.
            heartbeat_timeout: Duration::from_secs(3600),
            ..server_config(data)?
        };
        self.server.block_on(server::start(config))
    }

    /// Stops the server (every client connection must be closed first, or the
    /// graceful shutdown waits for them) and removes its data.
    fn stop_server(&self, running: Running, data: &Path) -> anyhow::Result<Duration> {
        let t = Instant::now();
        self.server
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), running.stop()).await })
            .context("the server did not stop within 30 s")??;
        let took = t.elapsed();
        std::fs::remove_dir_all(data)?;
        Ok(took)
    }

    /// The dispatch run: `n` commands, one at a time, to one long-polling agent.
    pub fn dispatch(&self, dir: &Path, n: usize) -> anyhow::Result<DispatchReport> {
        let data = dir.join("exec-dispatch");
        let running = self.start_server(&data)?;
        let base = format!("http://{}", running.addr);
        let http = sim::client(16)?;
        let measured = self.client.block_on(measure_dispatch(&http, &base, n));
        drop(http);
        self.stop_server(running, &data)?;
        measured
    }

    /// The round trip of the real CLI and agent, or why it was not measured.
    pub fn cli(&self, dir: &Path, s: &ExecSettings, progress: &dyn Fn(&str)) -> CliOutcome {
        let node_bin = s.bin_dir.join("hydranode");
        let cluster_bin = s.bin_dir.join("hydracluster");
        let build = "cargo build --release -p hydra --bin hydranode --bin hydracluster";
        for bin in [&node_bin, &cluster_bin] {
            if !bin.is_file() {
                return CliOutcome::Skipped(format!("{} is not there (build it: {build})", bin.display()));
            }
        }
        let agent_help = help_text(&node_bin, &[]);
        if !(agent_help.contains("enroll") && agent_help.contains("run")) {
            return CliOutcome::Skipped(format!(
                "{} has no `enroll` and `run` commands yet (the agent is still under construction); \
                 rebuild it when it is ready: {build}",
                node_bin.display()
            ));
        }
        if !help_text(&cluster_bin, &["exec"]).contains("--admin-token") {
            return CliOutcome::Skipped(format!(
                "{} has no `exec` command; rebuild it: {build}",
                cluster_bin.display()
            ));
        }
        let data = dir.join("exec-cli");
        let running = match self.start_server(&data) {
            Ok(r) => r,
            Err(e) => return CliOutcome::Failed(format!("starting the server: {e:#}")),
        };
        let base = format!("http://{}", running.addr);
        let bins = Bins { node: node_bin, cluster: cluster_bin };
        let measured = self.client.block_on(cli_session(&bins, &base, dir, s.cli_runs, progress));
        if let Err(e) = self.stop_server(running, &data) {
            progress(&format!("cli: stopping the server: {e:#}"));
        }
        match measured {
            Ok(r) => CliOutcome::Ran(Box::new(r)),
            Err(e) => CliOutcome::Failed(format!("{e:#}")),
        }
    }

    /// The throughput run.
    pub fn throughput(
        &self,
        dir: &Path,
        s: &ExecSettings,
        progress: &dyn Fn(&str),
    ) -> anyhow::Result<ThroughputReport> {
        let fd_limit = raise_fd_limit();
        // Each agent: its long-poll and a result post; each submitter one connection;
        // two descriptors each since both ends are in this process.
        let needed = (s.agents as u64 * 2 + s.submitters as u64) * 2 + 256;
        anyhow::ensure!(
            fd_limit >= needed,
            "{} agents and {} submitters need about {needed} open files but the limit is {fd_limit}",
            s.agents,
            s.submitters
        );
        let data = dir.join("exec-throughput");
        let running = self.start_server(&data)?;
        let base = format!("http://{}", running.addr);
        let ledger = running.ledger().clone();
        let http = sim::client(s.agents * 2 + s.submitters + 64)?;
        let measured = self.client.block_on(measure_throughput(&http, &base, &ledger, s, progress));
        // Every handle and connection must be gone for the server to stop.
        drop((ledger, http));
        let stop = self.stop_server(running, &data)?;
        let mut report = measured?;
        report.stop = stop;
        report.fd_limit = fd_limit;
        Ok(report)
    }
}

/// Sends one heartbeat, so that the node is online as a live agent's is.
async fn heartbeat(http: &reqwest::Client, base: &str, node: &SimNode) -> anyhow::Result<()> {
    let r = http
        .post(format!("{base}/api/v1/body/heartbeat"))
        .bearer_auth(&node.token)
        .json(&json!({"agent_version": "bench", "os": "linux", "provider_status": "running"}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "heartbeat of {}: {}", node.id, r.status());
    Ok(())
}

/// Queues `command` on `node` and returns the exec id.
async fn submit(http: &reqwest::Client, url: &str, command: &str) -> anyhow::Result<String> {
    let r = http
        .post(url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"command": command, "timeout": "60s"}))
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    if r.status() != StatusCode::ACCEPTED {
        bail!("POST {url}: {} {}", r.status(), r.text().await.unwrap_or_default());
    }
    let v: Value = r.json().await?;
    Ok(v["id"].as_str().context("a 202 without an id")?.to_owned())
}

fn exec_url(base: &str, node: &str) -> String {
    format!("{base}/api/v1/nodes/{node}/exec")
}

// ---------------------------------------------------------------- dispatch

/// What the dispatch run's agent tells the submitter.
enum AgentSays {
    /// About to long-poll again.
    Polling,
    /// Its long-poll returned this command at this instant.
    Got(String, Instant),
    Failed(String),
}

async fn measure_dispatch(http: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<DispatchReport> {
    let fleet = Fleet {
        count: 1,
        prefix: "bench-dispatch",
        district: "bench",
        venues: &[],
        environment: None,
        concurrency: 1,
    };
    let node = sim::enroll_fleet(http, base, ADMIN_TOKEN, &fleet).await?.remove(0);
    heartbeat(http, base, &node).await?;
    let (tx, mut rx) = mpsc::channel::<AgentSays>(1);
    let result_acks = Arc::new(Mutex::new(Vec::with_capacity(n + WARMUP)));
    let mut agent = JoinSet::new();
    agent.spawn(dispatch_agent(http.clone(), base.to_owned(), node.token.clone(), tx, result_acks.clone()));

    let url = exec_url(base, &node.id);
    let (mut dispatch, mut acks, mut mismatches) = (Vec::with_capacity(n), Vec::with_capacity(n), 0);
    let mut start = Instant::now();
    for i in 0..WARMUP + n {
        if i == WARMUP {
            start = Instant::now();
        }
        let AgentSays::Polling = heard(&mut rx).await? else {
            bail!("the agent sent a command it was not sent")
        };
        tokio::time::sleep(PARK).await;
        let t0 = Instant::now();
        let id = submit(http, &url, &format!("echo {i}")).await?;
        let ack = nanos_since(t0);
        let AgentSays::Got(got, at) = heard(&mut rx).await? else {
            bail!("the agent polled again without a command")
        };
        if got != id {
            mismatches += 1;
        }
        if i >= WARMUP {
            dispatch.push(at.saturating_duration_since(t0).as_nanos() as u64);
            acks.push(ack);
        }
    }
    let elapsed = start.elapsed();
    // Its last result is posted before it says it is polling again.
    let AgentSays::Polling = heard(&mut rx).await? else { bail!("the agent sent a command it was not sent") };
    agent.abort_all();
    let result_ack = result_acks.lock().unwrap_or_else(|e| e.into_inner()).split_off(WARMUP);
    Ok(DispatchReport {
        samples: dispatch.len(),
        dispatch: summarize(dispatch),
        submit_ack: summarize(acks),
        result_ack: summarize(result_ack),
        mismatches,
        elapsed,
    })
}

/// The agent's next word; its failure or silence is the run's error.
async fn heard(rx: &mut mpsc::Receiver<AgentSays>) -> anyhow::Result<AgentSays> {
    match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        Ok(Some(AgentSays::Failed(e))) => bail!("the agent failed: {e}"),
        Ok(Some(said)) => Ok(said),
        Ok(None) => bail!("the agent stopped"),
        Err(_) => bail!("the agent said nothing for 30 s"),
    }
}

/// The agent of the dispatch run: says when it polls and what it got, and posts each
/// result at once.
async fn dispatch_agent(
    http: reqwest::Client,
    base: String,
    token: String,
    tx: mpsc::Sender<AgentSays>,
    result_acks: Arc<Mutex<Vec<u64>>>,
) {
    let mut announce = true;
    loop {
        if announce && tx.send(AgentSays::Polling).await.is_err() {
            return;
        }
        let failed = match sim::next_command(&http, &base, &token, POLL_WAIT_S).await {
            Ok(Poll::Command(c)) => {
                if tx.send(AgentSays::Got(c.id.clone(), Instant::now())).await.is_err() {
                    return;
                }
                let (took, outcome) =
                    sim::simulate(&c.command, Duration::from_millis(c.timeout_ms), Duration::ZERO);
                let t = Instant::now();
                match sim::post_result(&http, &base, &token, &c.id, &outcome, took).await {
                    Ok(Posted::Accepted) => {
                        result_acks.lock().unwrap_or_else(|e| e.into_inner()).push(nanos_since(t));
                        announce = true;
                        None
                    }
                    Ok(other) => Some(format!("result for {}: {other:?}", c.id)),
                    Err(e) => Some(format!("result for {}: {e}", c.id)),
                }
            }
            Ok(Poll::Nothing) => {
                announce = false;
                None
            }
            Ok(Poll::Refused(status)) => Some(format!("long-poll refused: {status}")),
            Err(e) => Some(format!("long-poll: {e}")),
        };
        if let Some(e) = failed {
            let _ = tx.send(AgentSays::Failed(e)).await;
            return;
        }
    }
}

// ---------------------------------------------------------------- CLI

struct Bins {
    node: PathBuf,
    cluster: PathBuf,
}

/// `program [args] --help`, stdout and stderr together ("" if it cannot run).
fn help_text(program: &Path, args: &[&str]) -> String {
    match std::process::Command::new(program).args(args).arg("--help").output() {
        Ok(o) => format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        Err(_) => String::new(),
    }
}

/// Runs a program to its end, killed after `limit`.
async fn run_program(
    program: &Path,
    args: &[&str],
    limit: Duration,
) -> anyhow::Result<(Duration, std::process::Output)> {
    let t = Instant::now();
    let mut command = tokio::process::Command::new(program);
    command.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .with_context(|| format!("{} {} did not finish within {limit:?}", program.display(), args.join(" ")))?
        .with_context(|| format!("starting {}", program.display()))?;
    Ok((t.elapsed(), output))
}

fn describe(output: &std::process::Output) -> String {
    format!(
        "exit {}, stdout {:?}, stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr).trim_end()
    )
}

/// The last lines of the agent's log, to say why a round trip failed.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n      ")
}

async fn cli_session(
    bins: &Bins,
    base: &str,
    dir: &Path,
    runs: usize,
    progress: &dyn Fn(&str),
) -> anyhow::Result<CliReport> {
    let http = sim::client(8)?;
    let state = dir.join("hydranode-state");
    let state_arg = state.to_string_lossy().into_owned();
    let t = Instant::now();
    let (_, out) = run_program(
        &bins.node,
        &["enroll", "--server", base, "--name", "bench", "--state", &state_arg],
        Duration::from_secs(30),
    )
    .await?;
    anyhow::ensure!(out.status.success(), "hydranode enroll failed: {}", describe(&out));
    // Found through the admin API rather than from what enroll prints, which is
    // meant for people.
    let pending: Value = http
        .get(format!("{base}/api/v1/nodes?status=pending"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let node_id = pending
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == "bench"))
        .and_then(|n| n["id"].as_str())
        .with_context(|| format!("hydranode enroll succeeded but no pending node is named bench: {pending}"))?
        .to_owned();
    let approve = json!({"roles": ["hydrabody"], "district": "bench", "venue": "bench"});
    http.post(format!("{base}/api/v1/nodes/{node_id}/approve"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&approve)
        .send()
        .await?
        .error_for_status()?;
    let enroll = t.elapsed();

    let log_path = dir.join("hydranode.log");
    let log = std::fs::File::create(&log_path)?;
    let mut agent = tokio::process::Command::new(&bins.node)
        .args(["run", "--state", &state_arg])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} run", bins.node.display()))?;
    progress(&format!("cli: agent {node_id} started; {runs} runs of hydracluster exec"));
    let measured = cli_runs(bins, &http, base, &node_id, runs).await;
    // Whether it was still up says whether a failure was the agent dying.
    let early_exit = agent.try_wait().ok().flatten();
    let _ = agent.kill().await;
    let (first, round_trip, process_floor, api_round_trip, failures, failed) =
        measured.with_context(|| {
            format!(
                "agent {}; its log ({}):\n      {}",
                early_exit.map_or("was running".into(), |s| format!("had exited: {s}")),
                log_path.display(),
                log_tail(&log_path)
            )
        })?;
    Ok(CliReport {
        hydranode: bins.node.clone(),
        hydracluster: bins.cluster.clone(),
        node_id,
        enroll,
        first,
        round_trip,
        process_floor,
        api_round_trip,
        failed,
        failures,
    })
}

type CliRuns = (Duration, Summary, Summary, Summary, Vec<String>, usize);

async fn cli_runs(
    bins: &Bins,
    http: &reqwest::Client,
    base: &str,
    node_id: &str,
    runs: usize,
) -> anyhow::Result<CliRuns> {
    let exec = ["exec", node_id, "echo ok", "--server", base, "--admin-token", ADMIN_TOKEN];
    // The first run waits for the agent to start and connect; the limits keep a
    // broken agent from stretching the whole benchmark past its two minutes.
    let (first, out) = run_program(&bins.cluster, &exec, Duration::from_secs(30)).await?;
    anyhow::ensure!(
        out.status.success() && out.stdout == b"ok\n",
        "the first hydracluster exec did not print ok: {}",
        describe(&out)
    );
    let (mut times, mut failures, mut failed) = (Vec::with_capacity(runs), Vec::new(), 0);
    for _ in 0..runs {
        let failure = match run_program(&bins.cluster, &exec, Duration::from_secs(10)).await {
            Ok((took, out)) if out.status.success() && out.stdout == b"ok\n" => {
                times.push(took.as_nanos() as u64);
                continue;
            }
            Ok((_, out)) => describe(&out),
            Err(e) => format!("{e:#}"),
        };
        failed += 1;
        if failures.len() < ERRORS_KEPT {
            failures.push(failure);
        }
        if failed >= GIVE_UP_AFTER {
            failures.push(format!("gave up after {failed} failed runs"));
            break;
        }
    }
    let mut floor = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (took, out) = run_program(&bins.cluster, &["--version"], Duration::from_secs(10)).await?;
        anyhow::ensure!(out.status.success(), "hydracluster --version: {}", describe(&out));
        floor.push(took.as_nanos() as u64);
    }
    let url = exec_url(base, node_id);
    let mut api = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let id = submit(http, &url, "echo ok").await?;
        let result_url = format!("{url}/{id}/result");
        loop {
            let r = http.get(&result_url).bearer_auth(ADMIN_TOKEN).send().await?;
            if r.status() == StatusCode::OK {
                let v: Value = r.json().await?;
                anyhow::ensure!(v["status"] == "completed" && v["stdout"] == "ok\n", "API round trip: {v}");
                break;
            }
            anyhow::ensure!(r.status() == StatusCode::ACCEPTED, "GET {result_url}: {}", r.status());
            anyhow::ensure!(t.elapsed() < Duration::from_secs(30), "no result for {id} within 30 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        api.push(nanos_since(t));
    }
    Ok((first, summarize(times), summarize(floor), summarize(api), failures, failed))
}

// ---------------------------------------------------------------- throughput

/// Results as the agents post them, matched with the submitters waiting for them.
/// Either side may come first: an agent can post a result before the submitter has
/// even read the exec id from its 202.
#[derive(Default)]
struct Results {
    slots: Mutex<HashMap<String, Slot>>,
}

enum Slot {
    Waiting(oneshot::Sender<()>),
    Done,
}

impl Results {
    fn done(&self, id: String) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.remove(&id) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(());
            }
            _ => {
                slots.insert(id, Slot::Done);
            }
        }
    }

    async fn wait(&self, id: String) -> bool {
        let rx = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(Slot::Done) = slots.remove(&id) {
                return true;
            }
            let (tx, rx) = oneshot::channel();
            slots.insert(id, Slot::Waiting(tx));
            rx
        };
        rx.await.is_ok()
    }
}

/// Errors counted over all tasks, with the first few kept to show.
#[derive(Default)]
struct Errors {
    count: AtomicU64,
    kept: Mutex<Vec<String>>,
}

impl Errors {
    fn add(&self, e: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < ERRORS_KEPT {
            kept.push(e);
        }
    }
}

struct Shared {
    http: reqwest::Client,
    base: String,
    results: Results,
    errors: Errors,
}

/// One completed cycle kept for the read-back check: node index, exec id, number.
type Done = (usize, String, usize);

async fn measure_throughput(
    http: &reqwest::Client,
    base: &str,
    ledger: &hydra_core::ledger::Ledger<hydra_projections::ClusterViews>,
    s: &ExecSettings,
    progress: &dyn Fn(&str),
) -> anyhow::Result<ThroughputReport> {
    let t = Instant::now();
    progress(&format!("throughput: enrolling and approving {} agents", s.agents));
    let venues = ["hall-a".to_owned(), "hall-b".to_owned()];
    let fleet = Fleet {
        count: s.agents,
        prefix: "bench-agent",
        district: "bench",
        venues: &venues,
        environment: None,
        concurrency: ENROLLING_AT_ONCE,
    };
    let nodes = Arc::new(sim::enroll_fleet(http, base, ADMIN_TOKEN, &fleet).await?);
    stream::iter(nodes.iter())
        .map(|n| heartbeat(http, base, n))
        .buffer_unordered(ENROLLING_AT_ONCE)
        .try_collect::<Vec<()>>()
        .await?;

    let shared = Arc::new(Shared {
        http: http.clone(),
        base: base.to_owned(),
        results: Results::default(),
        errors: Errors::default(),
    });
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let (connected_tx, mut connected_rx) = mpsc::channel::<Result<(), String>>(s.agents.max(1));
    let mut agents = JoinSet::new();
    for node in nodes.iter() {
        agents.spawn(throughput_agent(
            shared.clone(),
            node.token.clone(),
            gate.clone(),
            connected_tx.clone(),
        ));
    }
    drop(connected_tx);
    for _ in 0..s.agents {
        match tokio::time::timeout(Duration::from_secs(60), connected_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => bail!("an agent could not connect: {e}"),
            Ok(None) => bail!("the agents stopped"),
            Err(_) => bail!("the agents did not connect within 60 s"),
        }
    }
    let setup = t.elapsed();
    // Let the last long-polls reach the server and park.
    tokio::time::sleep(Duration::from_millis(300)).await;
    progress(&format!(
        "throughput: {} agents long-polling (setup {setup:.2?}); {} submitters for {:?}",
        s.agents, s.submitters, s.duration
    ));

    let urls: Arc<Vec<String>> = Arc::new(nodes.iter().map(|n| exec_url(base, &n.id)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let seconds = s.duration.as_secs() as usize + RESULT_WAIT.as_secs() as usize + 2;
    let per_second: Arc<Vec<AtomicU64>> = Arc::new((0..seconds).map(|_| AtomicU64::new(0)).collect());
    let meter = CpuMeter::start();
    let machine = CpuMeter::machine();
    let server_meter = ThreadMeter::start(SERVER_THREADS);
    let client_meter = ThreadMeter::start(CLIENT_THREADS);
    let writer_meter = ThreadMeter::start("hydra-ledger");
    let sled_meter = ThreadMeter::start("sled-io");
    let seq0 = ledger.committed_seq();
    let start = Instant::now();
    let deadline = start + s.duration;
    let mut submitters = JoinSet::new();
    for _ in 0..s.submitters {
        let (shared, urls, next, per_second) =
            (shared.clone(), urls.clone(), next.clone(), per_second.clone());
        submitters.spawn(async move {
            let (mut latencies, mut done): (Vec<u64>, Vec<Done>) = (Vec::new(), Vec::new());
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let node = n % urls.len();
                let t0 = Instant::now();
                let id = match submit(&shared.http, &urls[node], &format!("echo {n}")).await {
                    Ok(id) => id,
                    Err(e) => {
                        shared.errors.add(format!("{e:#}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                match tokio::time::timeout(RESULT_WAIT, shared.results.wait(id.clone())).await {
                    Ok(true) => {}
                    _ => {
                        shared.errors.add(format!("no result for {id} within {RESULT_WAIT:?}"));
                        continue;
                    }
                }
                latencies.push(nanos_since(t0));
                if let Some(slot) = per_second.get(start.elapsed().as_secs() as usize) {
                    slot.fetch_add(1, Ordering::Relaxed);
                }
                done.push((node, id, n));
            }
            (latencies, done)
        });
    }
    let (mut latencies, mut done) = (Vec::new(), Vec::new());
    while let Some(joined) = submitters.join_next().await {
        let (l, d) = joined?;
        latencies.extend(l);
        done.extend(d);
    }
    let elapsed = start.elapsed();
    let (cores_busy, server_cores, client_cores) =
        (meter.cores_busy(), server_meter.cores_busy(), client_meter.cores_busy());
    let machine_cores = machine.cores_busy();
    let ((writer_busy, writer_preempted), sled_io_cores) = (writer_meter.shares(), sled_meter.cores_busy());
    let events = ledger.committed_seq() - seq0;
    progress(&format!(
        "throughput: {} cycles in {elapsed:.2?}; reading {} results back",
        latencies.len(),
        s.verify.min(done.len())
    ));

    let (verified, verify_failures) = verify(&shared, &urls, &done, s.verify).await;
    agents.abort_all();
    while agents.join_next().await.is_some() {}
    let used = (elapsed.as_secs() as usize + 1).min(per_second.len());
    let per_second = per_second[..used].iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let error_samples = shared.errors.kept.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(ThroughputReport {
        agents: s.agents,
        submitters: s.submitters,
        setup,
        cycles: latencies.len() as u64,
        elapsed,
        latency: summarize(latencies),
        per_second,
        events,
        errors: shared.errors.count.load(Ordering::Relaxed),
        error_samples,
        cores_busy,
        machine_cores,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        server_cores,
        client_cores,
        writer_busy,
        writer_preempted,
        sled_io_cores,
        verified,
        verify_failures,
        fd_limit: 0,
        stop: Duration::ZERO,
    })
}

/// A simulated agent of the throughput run: opens its connection through `gate`,
/// then long-polls and posts each result at once (no pretend work: the run measures
/// the server's exec path).
async fn throughput_agent(
    shared: Arc<Shared>,
    token: String,
    gate: Arc<Semaphore>,
    connected: mpsc::Sender<Result<(), String>>,
) {
    let (http, base) = (&shared.http, shared.base.as_str());
    let first = {
        let _permit = gate.acquire().await;
        // wait=0: answered at once, so every agent is known to be connected.
        sim::next_command(http, base, &token, 0).await
    };
    let said = match first {
        Ok(Poll::Nothing) => Ok(()),
        Ok(Poll::Command(c)) => Err(format!("a command {} before any was submitted", c.id)),
        Ok(Poll::Refused(status)) => Err(format!("first long-poll refused: {status}")),
        Err(e) => Err(format!("first long-poll: {e}")),
    };
    let ok = said.is_ok();
    let _ = connected.send(said).await;
    if !ok {
        return;
    }
    loop {
        match sim::next_command(http, base, &token, POLL_WAIT_S).await {
            Ok(Poll::Command(c)) => {
                let (took, outcome) =
                    sim::simulate(&c.command, Duration::from_millis(c.timeout_ms), Duration::ZERO);
                match sim::post_result(http, base, &token, &c.id, &outcome, took).await {
                    Ok(Posted::Accepted) => shared.results.done(c.id),
                    Ok(other) => shared.errors.add(format!("result for {}: {other:?}", c.id)),
                    Err(e) => shared.errors.add(format!("result for {}: {e}", c.id)),
                }
            }
            Ok(Poll::Nothing) => {}
            Ok(Poll::Refused(status)) => {
                shared.errors.add(format!("long-poll refused: {status}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                shared.errors.add(format!("long-poll: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads `count` results, spread over the run, back through the admin API and checks
/// each is the completed output of its own command.
async fn verify(shared: &Shared, urls: &[String], done: &[Done], count: usize) -> (usize, Vec<String>) {
    let count = count.min(done.len());
    let picked = (0..count).map(|i| &done[i * done.len() / count.max(1)]);
    let failures: Vec<String> = stream::iter(picked)
        .map(|(node, id, n)| async move {
            let url = format!("{}/{id}/result", urls[*node]);
            let answer = shared.http.get(&url).bearer_auth(ADMIN_TOKEN).send().await;
            let v: Value = match answer {
                Ok(r) if r.status() == StatusCode::OK => r.json().await.unwrap_or_default(),
                Ok(r) => return Some(format!("GET {url}: {}", r.status())),
                Err(e) => return Some(format!("GET {url}: {e}")),
            };
            let expected = format!("sim: echo {n}\n");
            let right = v["status"] == "completed" && v["exit_code"] == 0 && v["stdout"] == expected.as_str();
            (!right).then(|| format!("{id}: expected completed, exit 0, stdout {expected:?}; got {v}"))
        })
        .buffer_unordered(16)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    (count, failures)
}
