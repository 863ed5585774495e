//! Replay and start-up: builds a large, correctly chained log straight into the store
//! (much faster than through the ledger, and byte-for-byte what the ledger would
//! write), then times, each in a fresh process like a real `audit` or restart, a full
//! verified replay, start-up without a snapshot (the whole log is replayed) and
//! start-up from a snapshot (only the tail after it is).

use super::stats::{rate, CpuMeter};
use super::{enrollment, node_ids, write_log};
use hydra_core::audit::{self, Stop};
use hydra_core::ledger::{now_ms, Ledger, LedgerConfig};
use hydra_core::store::Store;
use hydra_events::{Event, NodeId, UpdateTarget};
use hydra_projections::{digest, encode_snapshot, ClusterViews};
use std::path::Path;
use std::time::{Duration, Instant};

/// Size of the replayed fleet.
pub const NODES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct ReplayReport {
    pub events: u64,
    pub nodes: usize,
    /// Time to generate, encode, chain and store the log (not a target; context).
    pub build: Duration,
    pub bytes_on_disk: u64,
    /// `Store::open` in the replaying process (sled's own recovery).
    pub audit_store_open: Duration,
    pub replay: Duration,
    pub replay_cores: f64,
    /// `Ledger::open` with no snapshot: recovery replays and verifies the whole log.
    pub open_without_snapshot: Duration,
    pub snapshot_bytes: u64,
    /// Encoding the views, storing them and flushing.
    pub snapshot_write: Duration,
    /// `Store::open` before the snapshot start-up.
    pub store_open: Duration,
    /// `Ledger::open` from the snapshot (nothing after it to replay).
    pub open_with_snapshot: Duration,
    /// Replay, start-up without and start-up with a snapshot all gave the same views.
    pub digest_matches: bool,
}

impl ReplayReport {
    pub fn replay_per_sec(&self) -> f64 {
        rate(self.events, self.replay)
    }

    pub fn build_per_sec(&self) -> f64 {
        rate(self.events, self.build)
    }
}

/// What a probe process measures (see [`probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Probe {
    /// `Store::open`, then a full verified replay, as `hydracluster audit` does.
    Audit,
    /// `Store::open`, then `Ledger::open`, as `hydracluster serve` starts.
    Open,
}

/// Runs the replay suite on a fresh store in `dir` and removes it afterwards.
/// Blocking: call from a plain thread.
///
/// The log is built in this process, but every measurement runs in a fresh process
/// (`probe_command` re-runs this binary): building churns hundreds of MB through the
/// allocator, and glibc malloc's free lists stay fragmented afterwards, which made an
/// in-process replay several times slower than a real `audit` or restart would be.
pub fn run(
    dir: &Path,
    events: u64,
    probe_command: &dyn Fn(&Path, Probe, bool) -> anyhow::Result<serde_json::Value>,
    progress: &dyn Fn(&str),
) -> anyhow::Result<ReplayReport> {
    anyhow::ensure!(events > 0, "--replay-events must be at least 1");
    let path = dir.join("replay");
    let nodes = NODES.min(events as usize);

    progress(&format!("replay: writing a log of {events} events for {nodes} nodes"));
    let t = Instant::now();
    let bytes_on_disk = {
        let store = Store::open(&path)?;
        build_log(&store, events, nodes)?;
        store.flush()?;
        store.size_on_disk()?
    };
    let build = t.elapsed();

    progress("replay: full verified replay (fresh process)");
    let audit = probe_command(&path, Probe::Audit, false)?;
    anyhow::ensure!(
        audit["events"].as_u64() == Some(events),
        "replayed {} events, expected {events}",
        audit["events"]
    );
    progress("replay: start-up without a snapshot (fresh process), then write a snapshot");
    let full = probe_command(&path, Probe::Open, true)?;
    anyhow::ensure!(full["had_snapshot"] == false, "the log should have had no snapshot yet");
    progress("replay: start-up from the snapshot (fresh process)");
    let snap = probe_command(&path, Probe::Open, false)?;
    anyhow::ensure!(snap["had_snapshot"] == true, "the snapshot was not found at start-up");
    std::fs::remove_dir_all(&path)?;

    let secs = |v: &serde_json::Value, key: &str| Duration::from_secs_f64(v[key].as_f64().unwrap_or(0.0));
    Ok(ReplayReport {
        events,
        nodes,
        build,
        bytes_on_disk,
        audit_store_open: secs(&audit, "store_open"),
        replay: secs(&audit, "replay"),
        replay_cores: audit["replay_cores"].as_f64().unwrap_or(0.0),
        open_without_snapshot: secs(&full, "ledger_open"),
        snapshot_bytes: full["snapshot_bytes"].as_u64().unwrap_or(0),
        snapshot_write: secs(&full, "snapshot_write"),
        store_open: secs(&snap, "store_open"),
        open_with_snapshot: secs(&snap, "ledger_open"),
        digest_matches: audit["digest"] == full["digest"] && full["digest"] == snap["digest"],
    })
}

/// One measurement on the store at `path`, meant to run in a process of its own;
/// returns its timings (seconds) as JSON. With `write_snapshot` (only for `Open`),
/// afterwards writes a snapshot of the views at the head, as the writer does every
/// `snapshot_every` events, and times it.
pub fn probe(path: &Path, what: Probe, write_snapshot: bool) -> anyhow::Result<serde_json::Value> {
    let t = Instant::now();
    let store = Store::open(path)?;
    let store_open = t.elapsed().as_secs_f64();
    let head = store.last_seq()?;
    let had_snapshot = store.snapshots_newest_first().next().is_some();
    match what {
        Probe::Audit => {
            let meter = CpuMeter::start();
            let t = Instant::now();
            let replayed = audit::replay(&store, Stop::End, head)?;
            let replay = t.elapsed().as_secs_f64();
            Ok(serde_json::json!({
                "store_open": store_open,
                "replay": replay,
                "replay_cores": meter.cores_busy(),
                "events": replayed.events,
                "digest": replayed.digest,
                "had_snapshot": had_snapshot,
            }))
        }
        Probe::Open => {
            let t = Instant::now();
            let ledger = Ledger::<ClusterViews>::open(store.clone(), LedgerConfig::default())?;
            let ledger_open = t.elapsed().as_secs_f64();
            let views = ledger.read(|v| v.clone());
            // Shutting down writes a final snapshot when the views are past the last
            // one; the explicit one below then replaces it with identical content.
            ledger.shutdown();
            let mut out = serde_json::json!({
                "store_open": store_open,
                "ledger_open": ledger_open,
                "events": views.last_seq,
                "digest": digest(&views),
                "had_snapshot": had_snapshot,
            });
            if write_snapshot {
                let t = Instant::now();
                let bytes = encode_snapshot(&views);
                store.put_snapshot(head, &bytes, 3)?;
                store.flush()?;
                out["snapshot_write"] = t.elapsed().as_secs_f64().into();
                out["snapshot_bytes"] = bytes.len().into();
            }
            Ok(out)
        }
    }
}

/// Writes a log of `events` events of a plausible fleet history, one millisecond
/// apart and in the past (see `write_log`).
fn build_log(store: &Store, events: u64, nodes: usize) -> anyhow::Result<()> {
    let ids = node_ids(nodes, 5);
    let base_ms = now_ms().saturating_sub(events);
    let log = (1..=events).map(|seq| {
        let (cause, event) = event_at(seq, &ids);
        (base_ms + seq, cause, event)
    });
    write_log(store, log)?;
    Ok(())
}

/// The event at `seq` of a plausible fleet history: every node enrolls, then is
/// approved, then the rest is the day-to-day traffic of a running fleet (stream
/// changes most often, then online/offline, provider and agent reports…).
fn event_at(seq: u64, ids: &[NodeId]) -> (String, Event) {
    let nodes = ids.len() as u64;
    let i = seq - 1;
    if i < nodes {
        return ("enroll".into(), enrollment(&ids[i as usize], i as usize));
    }
    if i < 2 * nodes {
        let node_id = ids[(i - nodes) as usize].clone();
        let district = format!("district-{}", i % 7);
        let event = Event::NodeApproved {
            node_id,
            roles: vec!["hydrabody".into(), "render-node".into()],
            district,
            venue: format!("venue-{}", i % 31),
            environment: "production".into(),
            owner: None,
        };
        return ("admin:bench".into(), event);
    }
    // 7919 is prime, so consecutive events visit the nodes in a scattered order.
    let node_id = ids[((i * 7919) % nodes) as usize].clone();
    let cause = format!("node:{node_id}");
    let round = i / nodes;
    let event = match i % 10 {
        0..=4 => Event::NodeStreamChanged {
            node_id,
            stream_status: if round.is_multiple_of(2) { "streaming" } else { "idle" }.into(),
        },
        5 => Event::NodeOnline { node_id },
        6 => Event::NodeOffline { node_id, last_seen_ms: i },
        7 => Event::NodeProviderChanged {
            node_id,
            provider_status: Some("running".into()),
            provider_version: Some("1.4.2".into()),
        },
        8 => Event::NodeAgentChanged {
            node_id,
            agent_version: Some("0.9.1".into()),
            os: Some("linux-6.8".into()),
        },
        _ => Event::NodeUpdateDelivered { node_id, target: UpdateTarget::Services },
    };
    (cause, event)
}
