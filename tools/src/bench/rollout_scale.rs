//! `hydra-bench rollout-scale`: what one round of the library's rollout driver costs as
//! a rollout grows. For each size, a rollout over that many bodies (8 at a time) is
//! driven with the library's own commands: each round runs `commands::advance` (what
//! the driver runs for each active rollout) and applies its events, then every body it
//! asked reports started and completed. The time is the advance alone, per round: the
//! writer's and the driver's CPU, without HTTP or disk.

use hydra::library::commands::{self, ClusterReport, NewBuild, NewExperience, Targets};
use hydra_core::ledger::Decision;
use hydra_events::{Event, FailureThreshold, NodeId, RolloutPolicy};
use hydra_projections::{fold_into, LibraryViews};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct SizeReport {
    pub bodies: usize,
    pub rounds: usize,
    /// The advance commands alone, all rounds.
    pub advancing: Duration,
}

/// Runs a command on `views` and applies its events, as the ledger would.
fn run(
    views: &mut LibraryViews,
    command: impl FnOnce(&LibraryViews) -> Result<Decision, hydra_core::error::DomainError>,
) -> Vec<Event> {
    let events = command(views).expect("the command is accepted").events;
    fold_into(views, events.iter().cloned());
    events
}

/// Drives a rollout over `bodies` bodies, `rounds` rounds at most.
pub fn run_size(bodies: usize, rounds: usize) -> anyhow::Result<SizeReport> {
    let mut views = LibraryViews::default();
    let experience = NewExperience {
        id: "space".into(),
        project: "space-game".into(),
        district: "d1".into(),
        venues: vec!["v1".into()],
        auto_promote: false,
    };
    run(&mut views, commands::create_experience(experience));
    let build = NewBuild {
        build: "b1".into(),
        version: "1.0".into(),
        artifact_url: "https://release.example/b1".into(),
        sha256: "a".repeat(64),
    };
    run(&mut views, commands::register_build("space".into(), build, None));
    let ids: Vec<NodeId> =
        (0..bodies).map(|i| NodeId::parse(&format!("node-{i:016x}")).expect("an id")).collect();
    let targets = Targets { bodies: ids, heads: Vec::new(), skipped: Vec::new(), cluster_since: 0 };
    let policy = RolloutPolicy {
        max_parallel: 8,
        failure_threshold: FailureThreshold::Count(0),
        node_deadline_ms: u64::MAX,
    };
    let promote =
        commands::promote("space".into(), "staging".into(), "b1".into(), None, Some(targets), policy, true);
    run(&mut views, promote);
    let (key, rollout) = views
        .rollouts
        .iter()
        .next()
        .map(|(key, r)| (*key, r.id.clone()))
        .ok_or_else(|| anyhow::anyhow!("no rollout started"))?;

    let mut advancing = Duration::ZERO;
    let mut cluster_seq = 0;
    for round in 0..rounds {
        let started = Instant::now();
        let events = run(&mut views, commands::advance(rollout.clone(), 0));
        advancing += started.elapsed();
        let asked: Vec<NodeId> = events
            .iter()
            .filter_map(|e| match e {
                Event::RolloutNodeRequested { node_id, .. } => Some(node_id.clone()),
                _ => None,
            })
            .collect();
        if asked.is_empty() {
            anyhow::ensure!(
                round > 0 && views.rollouts[&key].state.is_final(),
                "the rollout stalled at round {round}"
            );
            return Ok(SizeReport { bodies, rounds: round + 1, advancing });
        }
        for node in asked {
            for report in [ClusterReport::Started, ClusterReport::Completed { version: Some("1.0".into()) }] {
                cluster_seq += 1;
                run(&mut views, commands::record_cluster(node.clone(), cluster_seq, report));
            }
        }
    }
    Ok(SizeReport { bodies, rounds, advancing })
}

pub fn text(reports: &[SizeReport]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Rollout driver rounds by rollout size (8 at a time; advance + apply per round)");
    let _ = writeln!(o, "   bodies   rounds   per round");
    for r in reports {
        let per = r.advancing / r.rounds.max(1) as u32;
        let _ = writeln!(o, "   {:>6}  {:>7}  {:>8.1} us", r.bodies, r.rounds, per.as_secs_f64() * 1e6);
    }
    o
}
