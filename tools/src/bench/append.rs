//! Durable appends through the ledger: N concurrent submitters (tokio tasks) each
//! submit one-event commands in a loop; a submit returns only once its event is
//! flushed, applied and published, so the measured latency is the ack latency a
//! client would see, and the rate shows how well group commit amortises the flush.

use super::stats::{nanos_since, rate, summarize, CpuMeter, Summary, ThreadMeter};
use super::{enroll_all, node_ids, toggle_stream};
use hydra_core::ledger::{Ledger, LedgerConfig};
use hydra_core::store::Store;
use hydra_projections::ClusterViews;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The fleet the appends are about: large enough that views lookups are realistic.
pub const NODES: usize = 1000;

#[derive(Debug, Clone)]
pub struct AppendRun {
    pub submitters: usize,
    /// Stream-change events acknowledged during the timed window.
    pub events: u64,
    pub elapsed: Duration,
    pub latency: Summary,
    /// Every event in the log at the end (enrollments included).
    pub log_events: u64,
    /// The store's size on disk after the run (the segments and sled's files).
    pub bytes_on_disk: u64,
    pub cores_busy: f64,
    /// Share of the time the writer thread was on a CPU (1.0 = saturated).
    pub writer_busy: f64,
    /// Cores used by sled's I/O threads (they write the log buffers).
    pub sled_io_cores: f64,
}

impl AppendRun {
    pub fn per_sec(&self) -> f64 {
        rate(self.events, self.elapsed)
    }

    pub fn bytes_per_event(&self) -> f64 {
        if self.log_events == 0 {
            0.0
        } else {
            self.bytes_on_disk as f64 / self.log_events as f64
        }
    }
}

/// Runs `submitters` concurrent submitters for `duration` on a fresh store in `dir`,
/// then removes the store (the next run must start fresh, and disk is not free).
pub async fn run(dir: &Path, submitters: usize, duration: Duration) -> anyhow::Result<AppendRun> {
    let path = dir.join(format!("append-{submitters}"));
    let open_path = path.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&open_path)).await??;
    let ledger = Ledger::<ClusterViews>::open(store.clone(), LedgerConfig::default())?;
    let ids = Arc::new(node_ids(NODES, 4));
    enroll_all(&ledger, &ids).await?;

    let meter = CpuMeter::start();
    let writer = ThreadMeter::start("hydra-ledger");
    let sled_io = ThreadMeter::start("sled-io");
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for k in 0..submitters {
        let ledger = ledger.clone();
        let ids = ids.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            // Each submitter walks the fleet on its own stride, so concurrent commands
            // mostly touch different nodes, as independent clients would.
            let mut next = k;
            while Instant::now() < deadline {
                let id = ids[next % ids.len()].clone();
                next += submitters;
                let t0 = Instant::now();
                ledger.submit("bench:stream", toggle_stream(id)).await?;
                latencies.push(nanos_since(t0));
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = start.elapsed();
    let cores_busy = meter.cores_busy();
    let writer_busy = writer.cores_busy();
    let sled_io_cores = sled_io.cores_busy();
    let log_events = ledger.committed_seq();

    // Stop the writer (it writes its final snapshot), then measure the files.
    tokio::task::spawn_blocking(move || ledger.shutdown()).await?;
    let bytes_on_disk = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        store.flush()?;
        Ok(store.size_on_disk()?)
    })
    .await??;
    std::fs::remove_dir_all(&path)?;
    Ok(AppendRun {
        submitters,
        events: latencies.len() as u64,
        elapsed,
        latency: summarize(latencies),
        log_events,
        bytes_on_disk,
        cores_busy,
        writer_busy,
        sled_io_cores,
    })
}

/// The encoded size of one typical appended envelope, to compare with the bytes the
/// store takes per event.
pub fn typical_event_bytes() -> usize {
    let node_id = node_ids(1, 4).remove(0);
    let envelope = hydra_events::Envelope {
        seq: 123_456,
        at_ms: hydra_core::ledger::now_ms(),
        schema: hydra_events::CURRENT_SCHEMA,
        cause: "bench:stream".into(),
        prev_hash: [7; 32],
        event: hydra_events::Event::NodeStreamChanged { node_id, stream_status: "streaming".into() },
    };
    hydra_events::encode(&envelope).len()
}
