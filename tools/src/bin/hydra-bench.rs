//! `hydra-bench`: measures Hydra on this machine. `hydra-bench ledger` runs, in one
//! go, the disk's raw sync rate, durable appends through the ledger, replay and
//! start-up, and SSE fan-out from a real in-process server; `hydra-bench exec` the
//! exec path: dispatch latency to a long-polling agent, the round trip of the real
//! CLI and agent, and submit→result throughput over a thousand simulated agents.
//! Each prints a report with every figure beside its target (or one JSON object with
//! `--json`). `hydra-bench soak` floods a real release `hydracluster` with SSE clients
//! that vanish mid catch-up and with slowloris connections, printing its RSS and open
//! descriptors before, during and after. `hydra-bench rollout-report` reads a finished ExperienceLibrary rollout
//! from the library and hydracluster and prints where its time went
//! (tools/rollout-bench.sh runs one against a simulated fleet).

use clap::{Parser, Subcommand, ValueEnum};
use hydra_tools::bench::exec::{ExecBench, ExecSettings, Harness};
use hydra_tools::bench::fanout::FanoutSettings;
use hydra_tools::bench::fsync::SyncKind;
use hydra_tools::bench::replay::Probe;
use hydra_tools::bench::report::LedgerBench;
use hydra_tools::bench::stats::memory_mb;
use hydra_tools::bench::uptime::{self, UptimeSettings};
use hydra_tools::bench::{append, fanout, fsync, replay};
use hydra_tools::bench::{rollout, soak, Bench, Suite};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "hydra-bench", about = "Benchmarks of Hydra: the event log and the exec path")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Disk sync floor, durable appends, replay/start-up and SSE fan-out.
    Ledger(LedgerArgs),
    /// Exec: dispatch latency, the real CLI's round trip, submit→result throughput.
    Exec(ExecArgs),
    /// Where the time of one ExperienceLibrary rollout went (reads both services' logs).
    RolloutReport(RolloutReportArgs),
    /// RSS and descriptors of a real hydracluster under SSE and slowloris floods.
    Soak(SoakArgs),
    /// A fleet-wide 30-day uptime query over a fleet with full hourly buckets.
    Uptime(UptimeArgs),
    /// The writer's cost of one dispatch cycle as a node's queue grows.
    ExecQueue(ExecQueueArgs),
    /// The cost of one round of the rollout driver as a rollout grows.
    RolloutScale(RolloutScaleArgs),
    /// Internal: one replay or start-up measurement in a fresh process; prints JSON.
    #[command(hide = true)]
    Probe {
        #[arg(long)]
        path: PathBuf,
        #[arg(long, value_enum)]
        what: Probe,
        #[arg(long)]
        write_snapshot: bool,
    },
}

#[derive(clap::Args)]
struct ExecQueueArgs {
    /// Queue depths to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,100,1000,10000,100000")]
    depths: Vec<usize>,
    /// Dispatch cycles per depth.
    #[arg(long, default_value_t = 2_000)]
    cycles: usize,
}

#[derive(clap::Args)]
struct RolloutScaleArgs {
    /// Rollout sizes (bodies) to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    bodies: Vec<usize>,
    /// Rounds per size at most (a round asks for up to 8 bodies).
    #[arg(long, default_value_t = 300)]
    rounds: usize,
}

#[derive(clap::Args)]
struct UptimeArgs {
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Days of history (31 fills every node's 30 days of buckets).
    #[arg(long, default_value_t = 31)]
    days: u64,
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Where the scratch directory goes [default: the current directory].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SoakArgs {
    /// The hydracluster binary [default: next to this one].
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Events in the log before the floods.
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// SSE clients that read half their catch-up and vanish.
    #[arg(long, default_value_t = 3_000)]
    sse_clients: usize,
    /// Slowloris connections (a request header that never ends).
    #[arg(long, default_value_t = 3_000)]
    slowloris: usize,
    /// The server's RLIMIT_NOFILE, to flood past it (default: this process's).
    #[arg(long)]
    server_fd_limit: Option<u64>,
    /// Seconds the slowloris sockets are held (past the header-read timeout).
    #[arg(long, default_value_t = 15)]
    hold: u64,
    /// Extra YAML for the server's config (e.g. "header_read_timeout: 5s").
    #[arg(long, default_value = "")]
    config: String,
    /// Where the scratch data dir goes [default: the current directory].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RolloutReportArgs {
    /// The hydracluster server.
    #[arg(long)]
    cluster: String,
    /// The hydraexperiencelibrary server.
    #[arg(long)]
    library: String,
    /// A token the library accepts for reading (admin or observer); also used for
    /// hydracluster unless --cluster-token is given.
    #[arg(long, env = "HYDRA_BENCH_TOKEN", hide_env_values = true)]
    token: String,
    /// A token hydracluster accepts for reading its event log (admin or observer).
    #[arg(long, env = "HYDRA_BENCH_CLUSTER_TOKEN", hide_env_values = true)]
    cluster_token: Option<String>,
    /// The rollout's id (`rollout_id` of the promotion).
    #[arg(long)]
    rollout: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    Fsync,
    Append,
    Replay,
    Fanout,
}

#[derive(clap::Args)]
struct LedgerArgs {
    /// Where to create the scratch directory (default: the current directory; /tmp is
    /// often a tmpfs, whose "fsync" measures nothing).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds per durable-append run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Events in the replayed log.
    #[arg(long, default_value_t = 1_000_000)]
    replay_events: u64,
    /// SSE subscribers of the fan-out run.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Events appended in the fan-out burst.
    #[arg(long, default_value_t = 20_000)]
    burst: u64,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
    /// Seconds of each raw sync measurement.
    #[arg(long, default_value_t = 3.0)]
    fsync_seconds: f64,
    /// Concurrent submitters of the durable-append runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64, 512])]
    submitters: Vec<usize>,
    /// The server's broadcast capacity in the fan-out run (the server's default is
    /// 4096; a subscriber further behind than this reads from the log instead).
    #[arg(long, default_value_t = 32_768)]
    broadcast_capacity: usize,
    /// Concurrent submitters appending the fan-out burst.
    #[arg(long, default_value_t = 256)]
    burst_submitters: usize,
    /// Seconds the fan-out burst may take to reach every subscriber.
    #[arg(long, default_value_t = 300)]
    deliver_timeout: u64,
    /// Run only these sections (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExecSection {
    Dispatch,
    Cli,
    Throughput,
}

#[derive(clap::Args)]
struct ExecArgs {
    /// Where to create the scratch directory (default: the current directory; /tmp is
    /// often a tmpfs, whose "fsync" measures nothing).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Measured commands of the dispatch-latency run.
    #[arg(long, default_value_t = 2000)]
    dispatches: usize,
    /// Timed `hydracluster exec` runs.
    #[arg(long, default_value_t = 50)]
    cli_runs: usize,
    /// Where hydranode and hydracluster are (default: beside this program, i.e.
    /// target/release after `cargo build --release -p hydra --bin hydranode --bin hydracluster`).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Simulated agents of the throughput run.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Concurrent submitters of the throughput run.
    #[arg(long, default_value_t = 256)]
    submitters: usize,
    /// Seconds of the throughput run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Results read back and checked after the throughput run.
    #[arg(long, default_value_t = 200)]
    verify: usize,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
    /// Run only these sections (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<ExecSection>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ledger(args) => {
            run_suite(&args.dir, args.json, |dir, progress| run_ledger(&args, dir, progress))
        }
        Command::Exec(args) => {
            run_suite(&args.dir, args.json, |dir, progress| run_exec(&args, dir, progress))
        }
        Command::RolloutReport(args) => {
            let source = rollout::Source {
                cluster_token: args.cluster_token.unwrap_or_else(|| args.token.clone()),
                cluster: args.cluster,
                library: args.library,
                library_token: args.token,
                rollout: args.rollout,
            };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            print!("{}", runtime.block_on(rollout::report(&source))?);
            Ok(())
        }
        Command::Soak(args) => {
            let settings = soak::SoakSettings {
                cluster: match args.cluster {
                    Some(c) => c,
                    None => std::env::current_exe()?.with_file_name("hydracluster"),
                },
                events: args.events,
                sse_clients: args.sse_clients,
                slowloris: args.slowloris,
                server_fd_limit: args.server_fd_limit,
                hold: Duration::from_secs(args.hold),
                config: args.config.replace("\\n", "\n"),
            };
            let base = args.dir.unwrap_or_else(|| PathBuf::from("."));
            std::fs::create_dir_all(&base)?;
            let scratch = tempfile::Builder::new().prefix("hydra-soak-").tempdir_in(&base)?;
            soak::run(&settings, scratch.path(), &mut |l| println!("{l}"))?;
            Ok(())
        }
        Command::Uptime(args) => {
            let settings = UptimeSettings { nodes: args.nodes, days: args.days, rounds: args.rounds };
            let base = args.dir.unwrap_or_else(|| PathBuf::from("."));
            std::fs::create_dir_all(&base)?;
            let scratch = tempfile::Builder::new().prefix("hydra-bench-").tempdir_in(&base)?;
            let wall = Instant::now();
            let progress = |msg: &str| eprintln!("[{:>6.1}s] {msg}", wall.elapsed().as_secs_f64());
            let report = uptime::run(scratch.path(), &settings, &progress)?;
            print!("{}", report.text());
            anyhow::ensure!(report.failures().is_empty(), "the uptime figures disagree");
            Ok(())
        }
        Command::ExecQueue(args) => {
            let reports: Vec<_> = args
                .depths
                .iter()
                .map(|&depth| hydra_tools::bench::exec_queue::run_depth(depth, args.cycles))
                .collect::<anyhow::Result<_>>()?;
            print!("{}", hydra_tools::bench::exec_queue::text(&reports));
            Ok(())
        }
        Command::RolloutScale(args) => {
            let reports: Vec<_> = args
                .bodies
                .iter()
                .map(|&bodies| hydra_tools::bench::rollout_scale::run_size(bodies, args.rounds))
                .collect::<anyhow::Result<_>>()?;
            print!("{}", hydra_tools::bench::rollout_scale::text(&reports));
            Ok(())
        }
        Command::Probe { path, what, write_snapshot } => {
            let out = replay::probe(&path, what, write_snapshot)?;
            println!("{out}");
            Ok(())
        }
    }
}

/// Runs a suite in a fresh scratch directory under `dir` (the current directory by
/// default; removed afterwards), with progress lines on stderr, then prints its
/// report and exits with 1 if anything measured was wrong.
fn run_suite<S: Suite>(
    dir: &Option<PathBuf>,
    json: bool,
    run: impl FnOnce(&Path, &dyn Fn(&str)) -> anyhow::Result<S>,
) -> anyhow::Result<()> {
    let wall = Instant::now();
    let progress = |msg: &str| {
        let (rss, peak) = memory_mb();
        eprintln!("[{:>6.1}s, RSS {rss} MB, peak {peak} MB] {msg}", wall.elapsed().as_secs_f64());
    };
    let base = dir.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&base)?;
    let scratch = tempfile::Builder::new().prefix("hydra-bench-").tempdir_in(&base)?;
    let dir = scratch.path().canonicalize()?;
    let sections = run(&dir, &progress)?;
    drop(scratch);
    let bench = Bench {
        dir,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        wall: wall.elapsed(),
        sections,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&bench.to_json())?);
    } else {
        print!("{}", bench.text());
    }
    if !bench.sections.failures().is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// Runs `hydra-bench probe` (this same binary) and returns the JSON it prints.
fn probe_in_child(path: &Path, what: Probe, write_snapshot: bool) -> anyhow::Result<serde_json::Value> {
    let what = what.to_possible_value().expect("no variant is skipped");
    let what = what.get_name();
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.arg("probe").arg("--path").arg(path).args(["--what", what]);
    if write_snapshot {
        command.arg("--write-snapshot");
    }
    let output = command.stderr(std::process::Stdio::inherit()).output()?;
    anyhow::ensure!(output.status.success(), "hydra-bench probe --what {what} failed: {}", output.status);
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn run_ledger(args: &LedgerArgs, dir: &Path, progress: &dyn Fn(&str)) -> anyhow::Result<LedgerBench> {
    let wants = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let mut bench = LedgerBench::default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    if wants(Section::Fsync) {
        let seconds = Duration::from_secs_f64(args.fsync_seconds);
        for kind in [SyncKind::Fdatasync, SyncKind::SyncFileRange] {
            progress(&format!("fsync: {} for {seconds:?}", kind.name()));
            let measured = fsync::measure(dir, kind, seconds)?;
            match kind {
                SyncKind::Fdatasync => bench.fdatasync = Some(measured),
                SyncKind::SyncFileRange => bench.sync_file_range = Some(measured),
            }
        }
    }

    if wants(Section::Append) {
        for &n in &args.submitters {
            progress(&format!("append: {n} submitters for {} s", args.seconds));
            let run = runtime.block_on(append::run(dir, n, Duration::from_secs(args.seconds)))?;
            progress(&format!("append: {n} submitters: {:.0} events/s", run.per_sec()));
            bench.appends.push(run);
        }
    }

    if wants(Section::Replay) {
        let r = replay::run(dir, args.replay_events, &probe_in_child, progress)?;
        progress(&format!("replay: {:.0} events/s", r.replay_per_sec()));
        bench.replay = Some(r);
    }

    if wants(Section::Fanout) {
        let settings = FanoutSettings {
            subscribers: args.subscribers,
            burst: args.burst,
            broadcast_capacity: args.broadcast_capacity,
            submitters: args.burst_submitters,
            deliver_timeout: Duration::from_secs(args.deliver_timeout),
        };
        bench.fanout = Some(fanout::run(dir, &settings, progress)?);
    }

    // A writer thread that failed to stop must not hang the exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(bench)
}

fn run_exec(args: &ExecArgs, dir: &Path, progress: &dyn Fn(&str)) -> anyhow::Result<ExecBench> {
    let wants = |s: ExecSection| args.only.is_empty() || args.only.contains(&s);
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let settings = ExecSettings {
        dispatches: args.dispatches,
        cli_runs: args.cli_runs,
        bin_dir,
        agents: args.agents,
        submitters: args.submitters,
        duration: Duration::from_secs(args.seconds),
        verify: args.verify,
    };
    let mut bench = ExecBench::default();
    let harness = Harness::new()?;
    if wants(ExecSection::Dispatch) {
        progress(&format!("dispatch: {} commands to one long-polling agent", settings.dispatches));
        let d = harness.dispatch(dir, settings.dispatches)?;
        progress(&format!("dispatch: p50 {:.2?}, p99 {:.2?}", d.dispatch.p50, d.dispatch.p99));
        bench.dispatch = Some(d);
    }
    if wants(ExecSection::Cli) {
        progress("cli: hydranode enroll/run and hydracluster exec");
        bench.cli = Some(harness.cli(dir, &settings, progress));
    }
    if wants(ExecSection::Throughput) {
        bench.throughput = Some(harness.throughput(dir, &settings, progress)?);
    }
    harness.shutdown();
    Ok(bench)
}
