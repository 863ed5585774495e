//! The `hydra-bench` suites — `ledger` (disk fsync floor, durable appends, replay and
//! start-up, SSE fan-out) and `exec` (dispatch latency, the CLI round trip, exec
//! throughput), `rollout-report` (where a rollout's time goes) and `soak` (memory and
//! descriptors of a real server under SSE and slowloris floods) — and the helpers they
//! share: realistic events and timing.

pub mod append;
pub mod exec;
pub mod exec_queue;
pub mod exec_report;
pub mod fanout;
pub mod fsync;
pub mod replay;
pub mod report;
pub mod rollout;
pub mod rollout_scale;
pub mod soak;
pub mod stats;
pub mod uptime;

use hydra::cluster::config::Config;
use hydra_core::error::DomainError;
use hydra_core::ledger::{Decision, Ledger};
use hydra_events::{Event, NodeId};
use hydra_projections::ClusterViews;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The admin token of the servers the suites start.
pub const ADMIN_TOKEN: &str = "bench-admin";

/// The config of a server a suite starts in this process: loopback on a free port,
/// its data in `data`, [`ADMIN_TOKEN`], and enrollment not rate-limited, since a
/// suite enrolls a whole fleet at once.
pub fn server_config(data: &Path) -> anyhow::Result<Config> {
    Ok(Config {
        listen: "127.0.0.1:0".parse()?,
        data: data.to_path_buf(),
        server_url: "http://127.0.0.1:0".into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        enroll_per_minute: 0,
        ..Config::default()
    })
}

/// A finished run of one suite: the figures of its sections, and what every report
/// starts and ends with (where it ran, on how many cores, how long it all took).
#[derive(Debug)]
pub struct Bench<S> {
    /// The scratch directory, removed afterwards.
    pub dir: PathBuf,
    pub cores: usize,
    pub wall: Duration,
    pub sections: S,
}

/// What a suite (`ledger`, `exec`) puts into the report between its first line and
/// its total.
pub trait Suite {
    /// The suite's name in the report's first line.
    const NAME: &'static str;
    /// What the first line says of the setup before the scratch dir (`"loopback; "`).
    const SETUP: &'static str;
    /// Correctness failures (not missed performance targets): they fail the run.
    fn failures(&self) -> Vec<String>;
    /// The numbered sections of the text report.
    fn write_text(&self, o: &mut String);
    /// The sections as one JSON object; the run's own keys are added to it.
    fn json(&self) -> Value;
}

impl<S: Suite> Bench<S> {
    /// The report as readable text: every figure with its target beside it.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "Hydra {} benchmark ({} cores; {}scratch dir {}, removed afterwards)",
            S::NAME,
            self.cores,
            S::SETUP,
            self.dir.display()
        );
        self.sections.write_text(&mut o);
        let _ = writeln!(o, "\nTotal wall time: {:.1?}", self.wall);
        for f in self.sections.failures() {
            let _ = writeln!(o, "FAILURE: {f}");
        }
        o
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let mut v = self.sections.json();
        v["scratch_dir"] = json!(self.dir.display().to_string());
        v["cores"] = json!(self.cores);
        v["wall_seconds"] = json!(self.wall.as_secs_f64());
        v["failures"] = json!(self.sections.failures());
        v
    }
}

/// `count` node ids `node-0000`, `node-0001`, … zero-padded to `width` digits, so
/// that they sort like a real fleet's and have a realistic length.
pub fn node_ids(count: usize, width: usize) -> Vec<NodeId> {
    (0..count)
        .map(|i| NodeId::parse(&format!("node-{i:0width$}")).expect("generated ids are valid"))
        .collect()
}

/// The enrollment of node number `i`, as the enrollment form would produce it.
pub fn enrollment(node_id: &NodeId, i: usize) -> Event {
    Event::NodeEnrolled {
        node_id: node_id.clone(),
        name: format!("body-{i}"),
        ip: format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff),
    }
}

/// A command that flips a node between "idle" and "streaming". It reads the current
/// view like real commands do, so the writer's per-command work is representative.
pub fn toggle_stream(
    node_id: NodeId,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> + Send + 'static {
    move |views| {
        let idle = views.nodes.get(&node_id).is_none_or(|n| n.stream_status == "idle");
        let stream_status = if idle { "streaming" } else { "idle" }.to_owned();
        Ok(Decision::events(vec![Event::NodeStreamChanged { node_id, stream_status }]))
    }
}

/// Enrolls every node in `ids` through the ledger, 500 per command so that no single
/// batch is unusually large.
pub async fn enroll_all(ledger: &Ledger<ClusterViews>, ids: &[NodeId]) -> anyhow::Result<()> {
    for (chunk_no, chunk) in ids.chunks(500).enumerate() {
        let events: Vec<Event> =
            chunk.iter().enumerate().map(|(j, id)| enrollment(id, chunk_no * 500 + j)).collect();
        ledger.submit("bench:enroll", move |_| Ok(Decision::events(events))).await?;
    }
    Ok(())
}

/// Events written per `Store::append` by [`write_log`], each followed by a flush, as
/// the ledger does. Not more: sled 0.34 frees replaced pages through crossbeam-epoch
/// only after the writing thread unpins, and with 10,000-record batches garbage piled
/// up faster than it was reclaimed: 6 GB resident after 1M events, never given back
/// even after the store was dropped. With 1,000 and a flush each, ~0.5 GB, released on
/// drop.
const WRITE_BATCH: usize = 1_000;

/// Writes `events` (time in unix ms, cause, event; times never decreasing) to `store`
/// from seq 1, chained exactly as the ledger chains them (`prev_hash` = hash of the
/// previous encoded envelope), with the per-node index, and marks the layout current
/// as the ledger does on a new store. Returns the number written.
pub fn write_log(
    store: &hydra_core::store::Store,
    events: impl IntoIterator<Item = (u64, String, Event)>,
) -> anyhow::Result<u64> {
    use hydra_core::store::Record;
    use hydra_events::{Envelope, CURRENT_SCHEMA, ZERO_HASH};
    let mut events = events.into_iter().peekable();
    let mut prev_hash = ZERO_HASH;
    let mut seq = 0u64;
    while events.peek().is_some() {
        let mut envelopes = Vec::with_capacity(WRITE_BATCH);
        let mut encoded = Vec::with_capacity(WRITE_BATCH);
        for (at_ms, cause, event) in events.by_ref().take(WRITE_BATCH) {
            seq += 1;
            let envelope = Envelope { seq, at_ms, schema: CURRENT_SCHEMA, cause, prev_hash, event };
            let bytes = hydra_events::encode(&envelope);
            prev_hash = hydra_events::hash(&bytes);
            envelopes.push(envelope);
            encoded.push(bytes);
        }
        let records: Vec<Record<'_>> = envelopes
            .iter()
            .zip(&encoded)
            .map(|(e, b)| Record { seq: e.seq, bytes: b, node_id: e.event.node_id() })
            .collect();
        store.append(&records, &[])?;
        store.flush()?;
    }
    store.set_layout_version(hydra_migrations::LAYOUT_VERSION)?;
    Ok(seq)
}
