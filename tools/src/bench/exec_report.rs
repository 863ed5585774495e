//! The report of `hydra-bench exec`'s sections (see [`super::Bench`] for the whole
//! report): every figure with its target beside it.

use super::exec::{CliOutcome, ExecBench};
use super::report::{ms, thousands, verdict, write_check};
use super::stats::Summary;
use super::Suite;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Duration;

/// A queued command must reach a connected, long-polling agent within this (p50).
pub const TARGET_DISPATCH_P50: Duration = Duration::from_millis(5);
/// Submit→result cycles per second over a thousand agents.
pub const TARGET_CYCLES: f64 = 5_000.0;

fn percentiles(s: &Summary) -> String {
    format!("p50 {:>9}   p99 {:>9}   max {:>9}", ms(s.p50), ms(s.p99), ms(s.max))
}

/// One row of latencies: `label`, padded by the caller to line up with the rows
/// around it, then p50, p99 and max.
fn latency_row(o: &mut String, label: &str, s: &Summary) {
    let _ = writeln!(o, "   {label}{}", percentiles(s));
}

fn summary_json(s: &Summary) -> Value {
    json!({
        "count": s.count,
        "p50_ms": s.p50.as_secs_f64() * 1e3,
        "p99_ms": s.p99.as_secs_f64() * 1e3,
        "max_ms": s.max.as_secs_f64() * 1e3,
    })
}

impl Suite for ExecBench {
    const NAME: &'static str = "exec";
    const SETUP: &'static str = "loopback; ";

    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = &self.dispatch {
            if d.mismatches > 0 {
                out.push(format!(
                    "{} long-polls returned another command than the one submitted",
                    d.mismatches
                ));
            }
        }
        match &self.cli {
            Some(CliOutcome::Failed(why)) => out.push(format!("CLI round trip: {why}")),
            Some(CliOutcome::Ran(c)) if c.failed > 0 => out.push(format!(
                "{} of {} hydracluster exec runs failed",
                c.failed,
                c.round_trip.count + c.failed
            )),
            _ => {}
        }
        if let Some(t) = &self.throughput {
            if t.errors > 0 {
                out.push(format!("{} errors during the throughput run", t.errors));
            }
            if !t.verify_failures.is_empty() {
                out.push(format!(
                    "{} of {} results read back were wrong",
                    t.verify_failures.len(),
                    t.verified
                ));
            }
        }
        out
    }

    fn write_text(&self, o: &mut String) {
        if let Some(d) = &self.dispatch {
            let _ = writeln!(
                o,
                "\n1. Dispatch latency: one simulated agent long-polling, {} commands one at a time ({:.1?})",
                thousands(d.samples as f64),
                d.elapsed
            );
            let _ = writeln!(
                o,
                "   POST exec -> the agent's pending long-poll returns it   {}   target p50 < {}: {}",
                percentiles(&d.dispatch),
                ms(TARGET_DISPATCH_P50),
                verdict(d.dispatch.p50 < TARGET_DISPATCH_P50)
            );
            latency_row(o, "POST exec -> its 202 (durably queued)                   ", &d.submit_ack);
            latency_row(o, "the agent's result POST -> its 200 (durably recorded)   ", &d.result_ack);
            let _ = writeln!(
                o,
                "   (each dispatch is two durable appends, exec.queued then exec.dispatched, plus the wake-up; \
                 the old design polled every 30 s)"
            );
            let failure =
                (d.mismatches > 0).then(|| format!("{} long-polls returned another command", d.mismatches));
            write_check(o, "every long-poll returned the command just submitted: OK", failure, &[]);
        }

        match &self.cli {
            None => {}
            Some(CliOutcome::Skipped(why)) => {
                let _ = writeln!(o, "\n2. Round trip of the real CLI and agent: SKIPPED, {why}");
            }
            Some(CliOutcome::Failed(why)) => {
                let _ = writeln!(o, "\n2. Round trip of the real CLI and agent: FAILED");
                let _ = writeln!(o, "   {why}");
            }
            Some(CliOutcome::Ran(c)) => {
                let _ = writeln!(
                    o,
                    "\n2. Round trip of the real CLI and agent ({}, node {})",
                    c.hydranode.display(),
                    c.node_id
                );
                let _ = writeln!(
                    o,
                    "   hydranode enroll + approve: {:.2?}; first exec, agent just started: {:.2?}",
                    c.enroll, c.first
                );
                let runs = c.round_trip.count;
                let label =
                    format!("hydracluster exec <node> \"echo ok\", process start to exit, {runs} runs   ");
                latency_row(o, &label, &c.round_trip);
                latency_row(
                    o,
                    "of which starting a process (hydracluster --version)         ",
                    &c.process_floor,
                );
                latency_row(
                    o,
                    "the same through the API, result polled every 1 ms           ",
                    &c.api_round_trip,
                );
                let failure =
                    (c.failed > 0).then(|| format!("{} runs did not print ok or exit 0:", c.failed));
                write_check(o, "every run printed ok and exited 0: OK", failure, &c.failures);
            }
        }

        if let Some(t) = &self.throughput {
            let _ = writeln!(
                o,
                "\n3. Throughput: {} simulated agents long-polling, {} submitters queueing round-robin, {:.0} s",
                thousands(t.agents as f64),
                t.submitters,
                t.elapsed.as_secs_f64()
            );
            let _ = writeln!(
                o,
                "   setup (enroll, approve, heartbeat, first poll of every agent): {:.2?}",
                t.setup
            );
            let _ = writeln!(
                o,
                "   {} submit->result cycles in {:.2?} = {} cycles/s   target >= {}/s: {}",
                thousands(t.cycles as f64),
                t.elapsed,
                thousands(t.per_sec()),
                thousands(TARGET_CYCLES),
                verdict(t.per_sec() >= TARGET_CYCLES)
            );
            latency_row(o, "cycle latency (POST exec sent -> result accepted)   ", &t.latency);
            let per_second: Vec<String> = t.per_second.iter().map(|c| thousands(*c as f64)).collect();
            let _ = writeln!(
                o,
                "   cycles completed in each second of the run (the last one partial): {}",
                per_second.join(" ")
            );
            let _ = writeln!(
                o,
                "   events appended: {} ({:.2} per cycle: queued, dispatched, completed)",
                thousands(t.events as f64),
                t.events as f64 / t.cycles.max(1) as f64
            );
            let _ = writeln!(
                o,
                "   CPU: {:.2} cores in all = server runtime {:.2} + clients' runtime {:.2} + writer {:.2} + sled-io {:.2} + rest",
                t.cores_busy, t.server_cores, t.client_cores, t.writer_busy, t.sled_io_cores
            );
            let _ = writeln!(
                o,
                "   the whole machine meanwhile: {:.2} of {} cores busy ({:.2} taken by other processes)",
                t.machine_cores,
                t.cores,
                (t.machine_cores - t.cores_busy).max(0.0)
            );
            let _ = writeln!(
                o,
                "   CPU per cycle: server runtime {:.0} us, clients {:.0} us, writer {:.0} us, sled-io {:.0} us",
                t.cpu_us_per_cycle(t.server_cores),
                t.cpu_us_per_cycle(t.client_cores),
                t.cpu_us_per_cycle(t.writer_busy),
                t.cpu_us_per_cycle(t.sled_io_cores),
            );
            let all = t.cpu_us_per_cycle(t.cores_busy);
            let _ = writeln!(
                o,
                "   ceiling from CPU alone on {} cores: {}/s at {all:.0} us per cycle in all; \
                 {}/s for the server side alone ({:.0} us: runtime, writer, sled-io), agents elsewhere",
                t.cores,
                thousands(t.ceiling(all)),
                thousands(t.ceiling(t.server_side_us())),
                t.server_side_us()
            );
            let blocked = (1.0 - t.writer_busy - t.writer_preempted).max(0.0);
            let _ = writeln!(
                o,
                "   writer thread: on a CPU {:.0}%, runnable but waiting for a CPU {:.0}%, blocked {:.0}% \
                 (flushing to disk, or waiting for commands)",
                t.writer_busy * 100.0,
                t.writer_preempted * 100.0,
                blocked * 100.0
            );
            let failure = (t.errors > 0).then(|| format!("{} errors, first ones:", t.errors));
            write_check(o, "no errors", failure, &t.error_samples);
            let wrong = &t.verify_failures;
            let failure = (!wrong.is_empty())
                .then(|| format!("{} of {} results read back were wrong:", wrong.len(), t.verified));
            let ok = format!(
                "{} results read back through the admin API: each its own command's output: OK",
                t.verified
            );
            write_check(o, &ok, failure, &wrong[..wrong.len().min(10)]);
            let _ = writeln!(o, "   server stopped in {:.2?} (fd limit {})", t.stop, t.fd_limit);
        }
    }

    fn json(&self) -> Value {
        let cli = self.cli.as_ref().map(|c| match c {
            CliOutcome::Skipped(why) => json!({"outcome": "skipped", "reason": why}),
            CliOutcome::Failed(why) => json!({"outcome": "failed", "reason": why}),
            CliOutcome::Ran(c) => json!({
                "outcome": "ran",
                "hydranode": c.hydranode.display().to_string(),
                "hydracluster": c.hydracluster.display().to_string(),
                "node_id": c.node_id,
                "enroll_seconds": c.enroll.as_secs_f64(),
                "first_seconds": c.first.as_secs_f64(),
                "round_trip": summary_json(&c.round_trip),
                "process_floor": summary_json(&c.process_floor),
                "api_round_trip": summary_json(&c.api_round_trip),
                "failed": c.failed,
                "failures": c.failures,
            }),
        });
        json!({
            "dispatch": self.dispatch.as_ref().map(|d| json!({
                "samples": d.samples,
                "seconds": d.elapsed.as_secs_f64(),
                "dispatch": summary_json(&d.dispatch),
                "submit_ack": summary_json(&d.submit_ack),
                "result_ack": summary_json(&d.result_ack),
                "mismatches": d.mismatches,
                "target_p50_ms": TARGET_DISPATCH_P50.as_secs_f64() * 1e3,
                "target_met": d.dispatch.p50 < TARGET_DISPATCH_P50,
            })),
            "cli": cli,
            "throughput": self.throughput.as_ref().map(|t| json!({
                "agents": t.agents,
                "submitters": t.submitters,
                "setup_seconds": t.setup.as_secs_f64(),
                "cycles": t.cycles,
                "seconds": t.elapsed.as_secs_f64(),
                "cycles_per_sec": t.per_sec(),
                "latency": summary_json(&t.latency),
                "per_second": t.per_second,
                "events": t.events,
                "errors": t.errors,
                "error_samples": t.error_samples,
                "cores_busy": t.cores_busy,
                "machine_cores_busy": t.machine_cores,
                "server_cores": t.server_cores,
                "client_cores": t.client_cores,
                "writer_busy": t.writer_busy,
                "writer_preempted": t.writer_preempted,
                "sled_io_cores": t.sled_io_cores,
                "server_cpu_us_per_cycle": t.cpu_us_per_cycle(t.server_cores),
                "client_cpu_us_per_cycle": t.cpu_us_per_cycle(t.client_cores),
                "writer_cpu_us_per_cycle": t.cpu_us_per_cycle(t.writer_busy),
                "cpu_us_per_cycle": t.cpu_us_per_cycle(t.cores_busy),
                "server_side_cpu_us_per_cycle": t.server_side_us(),
                "ceiling_cycles_per_sec": t.ceiling(t.cpu_us_per_cycle(t.cores_busy)),
                "server_side_ceiling_cycles_per_sec": t.ceiling(t.server_side_us()),
                "verified": t.verified,
                "verify_failures": t.verify_failures,
                "fd_limit": t.fd_limit,
                "stop_seconds": t.stop.as_secs_f64(),
                "target_cycles_per_sec": TARGET_CYCLES,
                "target_met": t.per_sec() >= TARGET_CYCLES,
            })),
        })
    }
}
