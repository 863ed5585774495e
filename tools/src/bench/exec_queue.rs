//! `hydra-bench exec-queue`: what one dispatch cycle costs the writer as a node's queue
//! grows. For each depth, one node has that many commands queued; each cycle queues
//! one more, runs the dispatch decision the agent's poll runs (`exec::dispatch`),
//! applies its `exec.dispatched` and then the command's `exec.completed`, so the depth
//! stays put. The same work the writer does per cycle (it applies each event twice:
//! its own views and the shared ones), without the disk and HTTP around it.

use hydra::cluster::exec;
use hydra_core::ledger::now_ms;
use hydra_events::{Event, ExecId, ExecResult, NodeId, OutputRef};
use hydra_projections::{fold_into, ClusterViews, Projection};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DepthReport {
    pub depth: usize,
    pub cycles: usize,
    pub elapsed: Duration,
    /// One pass of the exec watchdog's search (`exec::overdue`) at this depth, none
    /// of the commands due: the mean of 100.
    pub watchdog_pass: Duration,
}

impl DepthReport {
    pub fn per_cycle(&self) -> Duration {
        self.elapsed / self.cycles.max(1) as u32
    }
}

fn queued(node: &NodeId, n: usize) -> Event {
    Event::ExecQueued {
        exec_id: ExecId::parse(&format!("exec-{n}")).expect("an exec id"),
        node_id: node.clone(),
        command: "echo ok".into(),
        timeout_ms: 60_000,
        retry_on_disconnect: false,
        deliver_by_ms: u64::MAX,
    }
}

/// Runs `cycles` dispatch cycles on a node with `depth` commands queued.
pub fn run_depth(depth: usize, cycles: usize) -> anyhow::Result<DepthReport> {
    let node = NodeId::parse("node-0123456789abcdef").expect("a node id");
    let mut views = ClusterViews::default();
    fold_into(
        &mut views,
        vec![
            Event::NodeEnrolled { node_id: node.clone(), name: "body".into(), ip: "10.0.0.1".into() },
            Event::NodeApproved {
                node_id: node.clone(),
                roles: vec!["hydrabody".into()],
                district: "d".into(),
                venue: "v".into(),
                environment: "production".into(),
                owner: None,
            },
        ],
    );
    fold_into(&mut views, (0..depth).map(|n| queued(&node, n)));
    let empty = OutputRef::of(b"");
    let started = Instant::now();
    for cycle in 0..cycles {
        fold_into(&mut views, vec![queued(&node, depth + cycle)]);
        let decision = exec::dispatch(node.clone(), now_ms(), views.last_seq())(&views)
            .map_err(|e| anyhow::anyhow!("dispatch refused: {e}"))?;
        let dispatched = decision.events.iter().find_map(|e| match e {
            Event::ExecDispatched { exec_id, .. } => Some(exec_id.clone()),
            _ => None,
        });
        let exec_id = dispatched.ok_or_else(|| anyhow::anyhow!("nothing dispatched at cycle {cycle}"))?;
        fold_into(&mut views, decision.events);
        let output = ExecResult {
            exit_code: Some(0),
            stdout: empty,
            stderr: empty,
            truncated: false,
            duration_ms: 1,
            inline: None,
        };
        fold_into(&mut views, vec![Event::ExecCompleted { exec_id, node_id: node.clone(), output }]);
    }
    let elapsed = started.elapsed();
    let left = views.exec.node(&node).map_or(0, |n| n.queue.len());
    anyhow::ensure!(left == depth, "the queue ended at {left}, not {depth}");
    let started = Instant::now();
    for _ in 0..100 {
        let due = exec::overdue(&views, now_ms(), 1_000);
        anyhow::ensure!(due.is_empty(), "{} commands due", due.len());
    }
    let watchdog_pass = started.elapsed() / 100;
    Ok(DepthReport { depth, cycles, elapsed, watchdog_pass })
}

pub fn text(reports: &[DepthReport]) -> String {
    let mut o = String::new();
    let _ =
        writeln!(o, "Dispatch cycles by queue depth (one node; queue, dispatch, complete; writer-side CPU)");
    let _ = writeln!(o, "   queued      cycles   per cycle   cycles/s   watchdog pass");
    for r in reports {
        let per = r.per_cycle();
        let _ = writeln!(
            o,
            "   {:>7}  {:>9}  {:>8.1} us  {:>9.0}  {:>11.1} us",
            r.depth,
            r.cycles,
            per.as_secs_f64() * 1e6,
            1.0 / per.as_secs_f64().max(1e-12),
            r.watchdog_pass.as_secs_f64() * 1e6
        );
    }
    o
}
