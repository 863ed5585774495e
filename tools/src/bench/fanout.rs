//! SSE fan-out: a real server in this process, many subscribers on real HTTP
//! connections, then a burst of appends. Every subscriber must receive every event of
//! the burst, in order and without gaps (a subscriber that falls behind the live
//! broadcast is supposed to catch up from the log transparently); the suite measures
//! the delivered events per second and the lag from ack to delivery.
//!
//! The server, the subscribers and the appenders each get their own tokio runtime, as
//! if they were separate processes: sharing one runtime, 2,000 busy streaming tasks
//! starved the appenders' wake-ups and the "burst" trickled in at ~1,000 events/s,
//! which measured tokio's scheduling rather than the fan-out.

use super::stats::{nanos_since, percentile, rate, CpuMeter, ThreadMeter};
use super::{enroll_all, node_ids, server_config, toggle_stream, ADMIN_TOKEN};
use futures_util::StreamExt;
use hydra::cluster::config::Config;
use hydra::cluster::server;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// Connections being opened at once: enough to connect quickly, few enough not to
/// overflow the listen backlog.
const CONNECTING_AT_ONCE: usize = 128;
/// Lag samples kept over all subscribers: bounds memory whatever the burst size.
const LAG_SAMPLES: u64 = 200_000;
/// Thread names of the three runtimes, also used to measure their CPU time.
pub const SERVER_THREADS: &str = "bench-server";
pub const CLIENT_THREADS: &str = "bench-client";
const BURST_THREADS: &str = "bench-burst";

#[derive(Debug, Clone)]
pub struct FanoutSettings {
    pub subscribers: usize,
    pub burst: u64,
    pub broadcast_capacity: usize,
    /// Concurrent submitters appending the burst.
    pub submitters: usize,
    /// How long the whole burst may take to reach every subscriber.
    pub deliver_timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct Lag {
    pub samples: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Samples received before the submitter saw its ack (the writer publishes before
    /// it answers); counted as zero lag.
    pub before_ack: usize,
}

#[derive(Debug, Clone)]
pub struct FanoutReport {
    pub subscribers: usize,
    pub burst: u64,
    pub broadcast_capacity: usize,
    pub fd_limit: u64,
    /// Until every subscriber had its response headers.
    pub connect: Duration,
    /// First append to last ack.
    pub append: Duration,
    /// First append to last delivery to any subscriber.
    pub delivery: Duration,
    /// Events received over all subscribers.
    pub delivered: u64,
    pub complete: usize,
    /// One line per subscriber that missed events or failed (at most 10 listed).
    pub failures: Vec<String>,
    pub failed: usize,
    pub lag: Lag,
    /// Over burst + delivery: the whole process, the server's runtime (HTTP, SSE
    /// rendering, log catch-up reads), the subscribers' runtime, and the writer thread.
    pub cores_busy: f64,
    pub server_cores: f64,
    pub client_cores: f64,
    pub writer_busy: f64,
    pub stop: Duration,
}

impl FanoutReport {
    pub fn delivered_per_sec(&self) -> f64 {
        rate(self.delivered, self.delivery)
    }

    pub fn append_per_sec(&self) -> f64 {
        rate(self.burst, self.append)
    }
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    received: u64,
    /// The first place where the ids were not contiguous: (expected, got).
    first_gap: Option<(u64, u64)>,
    out_of_order: u64,
    last_id: u64,
    /// When the last chunk arrived, in nanoseconds since the common base.
    last_at: u64,
    /// (seq, receive time) for a sample of the events.
    samples: Vec<(u64, u64)>,
    error: Option<String>,
}

/// Raises the soft open-files limit to the hard limit (each subscriber costs two
/// descriptors in this process: the client socket and the server's) and returns it.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// A multi-threaded runtime whose threads are all named `name` (so that
/// [`ThreadMeter`] can measure it apart from the others).
pub fn runtime(name: &str, workers: usize) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers).thread_name(name).enable_all().build()
}

/// Runs the fan-out suite. Blocking: call it outside any tokio runtime.
pub fn run(dir: &Path, s: &FanoutSettings, progress: &dyn Fn(&str)) -> anyhow::Result<FanoutReport> {
    let fd_limit = raise_fd_limit();
    let needed = s.subscribers as u64 * 2 + 256;
    anyhow::ensure!(
        fd_limit >= needed,
        "{} subscribers need about {needed} open files but the limit is {fd_limit}; raise `ulimit -n`",
        s.subscribers
    );
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let server_rt = runtime(SERVER_THREADS, cores)?;
    let client_rt = runtime(CLIENT_THREADS, cores)?;
    let burst_rt = runtime(BURST_THREADS, 1)?;

    let data = dir.join("sse");
    let config = Config { broadcast_capacity: s.broadcast_capacity, ..server_config(&data)? };
    let running = server_rt.block_on(server::start(config))?;
    let ledger = running.ledger().clone();
    let ids = Arc::new(node_ids(super::append::NODES, 4));
    burst_rt.block_on(enroll_all(&ledger, &ids))?;
    let since = ledger.committed_seq();
    // Nothing else appends (no node is online, so the offline watchdog stays quiet),
    // so the burst will be exactly these seqs; checked after it is acknowledged.
    let target = since + s.burst;
    let url = format!("http://{}/api/v1/events?since={since}", running.addr);

    // One client for all: its pool opens a connection per stream, since an SSE
    // response holds its HTTP/1.1 connection for as long as it lasts.
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(s.subscribers)
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let base = Instant::now();
    let stride = (s.subscribers as u64 * s.burst / LAG_SAMPLES).max(1);
    let (connected_tx, mut connected_rx) = mpsc::channel::<Result<(), String>>(s.subscribers.max(1));
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));

    progress(&format!("fan-out: opening {} SSE connections", s.subscribers));
    let t = Instant::now();
    // The delivery deadline also bounds connecting, so that a broken run still ends.
    let deadline = tokio::time::Instant::now() + s.deliver_timeout + Duration::from_secs(120);
    let mut subscribers = Vec::with_capacity(s.subscribers);
    for idx in 0..s.subscribers {
        let sub =
            Subscriber { idx: idx as u64, since, target, stride, base, connected: connected_tx.clone() };
        let request = client.get(&url).bearer_auth(ADMIN_TOKEN);
        let gate = gate.clone();
        subscribers.push(client_rt.spawn(async move {
            let permit = gate.acquire_owned().await.expect("the gate is never closed");
            let response = request.send().await;
            drop(permit);
            sub.listen(response, deadline).await
        }));
    }
    drop(connected_tx);
    let connect_errors = client_rt.block_on(async {
        let mut errors = Vec::new();
        for _ in 0..s.subscribers {
            match tokio::time::timeout(Duration::from_secs(120), connected_rx.recv()).await {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) => errors.push(e),
                Ok(None) => break,
                Err(_) => anyhow::bail!("subscribers did not connect within 120 s"),
            }
        }
        Ok(errors)
    })?;
    let connect = t.elapsed();
    progress(&format!(
        "fan-out: {} connected in {:.2?} ({} failed); appending {} events",
        s.subscribers - connect_errors.len(),
        connect,
        connect_errors.len(),
        s.burst
    ));

    // The burst, with the ack instant of each seq, indexed by seq - since - 1.
    let meter = CpuMeter::start();
    let server_meter = ThreadMeter::start(SERVER_THREADS);
    let client_meter = ThreadMeter::start(CLIENT_THREADS);
    let writer_meter = ThreadMeter::start("hydra-ledger");
    let acks: Arc<Vec<AtomicU64>> = Arc::new((0..s.burst).map(|_| AtomicU64::new(0)).collect());
    let burst_start = nanos_since(base);
    burst_rt.block_on(append_burst(&ledger, &ids, s, since, &acks, base))?;
    let last_ack = nanos_since(base);
    let head = ledger.committed_seq();
    drop(ledger);
    anyhow::ensure!(head == target, "the log ends at seq {head} after the burst, expected {target}");
    progress(&format!(
        "fan-out: burst acknowledged in {:.2?}; waiting for delivery",
        Duration::from_nanos(last_ack - burst_start)
    ));

    let seen: Vec<Seen> = client_rt.block_on(async {
        let mut out = Vec::with_capacity(subscribers.len());
        for handle in subscribers {
            out.push(handle.await?);
        }
        anyhow::Ok(out)
    })?;
    let cores_busy = meter.cores_busy();
    let server_cores = server_meter.cores_busy();
    let client_cores = client_meter.cores_busy();
    let writer_busy = writer_meter.cores_busy();
    drop(client);

    let t = Instant::now();
    server_rt.block_on(running.stop())?;
    let stop = t.elapsed();
    for rt in [server_rt, client_rt, burst_rt] {
        rt.shutdown_timeout(Duration::from_secs(5));
    }
    std::fs::remove_dir_all(&data)?;

    let expected = target - since;
    let mut failures = Vec::new();
    let mut failed = 0;
    let mut lags = Vec::new();
    let mut before_ack = 0;
    let mut delivered = 0;
    let mut last_delivery = burst_start;
    for (i, v) in seen.iter().enumerate() {
        delivered += v.received;
        last_delivery = last_delivery.max(v.last_at);
        let ok = v.error.is_none() && v.received == expected && v.first_gap.is_none() && v.last_id == target;
        if !ok {
            failed += 1;
            if failures.len() < 10 {
                failures.push(describe_failure(i, v, expected));
            }
        }
        for &(seq, at) in &v.samples {
            let ack = acks.get((seq - since - 1) as usize).map_or(0, |a| a.load(Ordering::Relaxed));
            if ack == 0 {
                continue;
            }
            if at < ack {
                before_ack += 1;
            }
            lags.push(at.saturating_sub(ack));
        }
    }
    lags.sort_unstable();
    let at = |q: f64| Duration::from_nanos(percentile(&lags, q).unwrap_or(0));
    let lag = Lag { samples: lags.len(), p50: at(0.5), p99: at(0.99), max: at(1.0), before_ack };
    Ok(FanoutReport {
        subscribers: s.subscribers,
        burst: expected,
        broadcast_capacity: s.broadcast_capacity,
        fd_limit,
        connect,
        append: Duration::from_nanos(last_ack - burst_start),
        delivery: Duration::from_nanos(last_delivery - burst_start),
        delivered,
        complete: seen.len() - failed,
        failures,
        failed,
        lag,
        cores_busy,
        server_cores,
        client_cores,
        writer_busy,
        stop,
    })
}

/// Appends the burst with `s.submitters` concurrent one-event commands and records,
/// for each seq, when its submitter got the ack.
async fn append_burst(
    ledger: &hydra_core::ledger::Ledger<hydra_projections::ClusterViews>,
    ids: &Arc<Vec<hydra_events::NodeId>>,
    s: &FanoutSettings,
    since: u64,
    acks: &Arc<Vec<AtomicU64>>,
    base: Instant,
) -> anyhow::Result<()> {
    let remaining = Arc::new(AtomicU64::new(s.burst));
    let mut submitters = JoinSet::new();
    for _ in 0..s.submitters.max(1) {
        let ledger = ledger.clone();
        let ids = ids.clone();
        let acks = acks.clone();
        let remaining = remaining.clone();
        submitters.spawn(async move {
            while let Ok(left) =
                remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1))
            {
                let id = ids[left as usize % ids.len()].clone();
                let envelopes = ledger.submit("bench:burst", toggle_stream(id)).await?;
                let now = nanos_since(base);
                for e in envelopes {
                    if let Some(slot) = e.seq.checked_sub(since + 1).and_then(|i| acks.get(i as usize)) {
                        slot.store(now, Ordering::Relaxed);
                    }
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = submitters.join_next().await {
        done??;
    }
    Ok(())
}

fn describe_failure(i: usize, v: &Seen, expected: u64) -> String {
    let mut s = format!("subscriber {i}: received {} of {expected}", v.received);
    if let Some((want, got)) = v.first_gap {
        s.push_str(&format!(", first gap: expected id {want}, got {got}"));
    }
    if v.out_of_order > 0 {
        s.push_str(&format!(", {} ids out of sequence", v.out_of_order));
    }
    if let Some(e) = &v.error {
        s.push_str(&format!(", error: {e}"));
    }
    s
}

struct Subscriber {
    idx: u64,
    since: u64,
    /// The last seq of the burst: the subscriber is done once it has seen it.
    target: u64,
    stride: u64,
    base: Instant,
    connected: mpsc::Sender<Result<(), String>>,
}

impl Subscriber {
    /// Reads the stream until it has seen the target seq, the stream fails, or the
    /// deadline passes.
    async fn listen(
        self,
        response: reqwest::Result<reqwest::Response>,
        deadline: tokio::time::Instant,
    ) -> Seen {
        let mut seen = Seen::default();
        let response = match response.and_then(|r| r.error_for_status()) {
            Ok(r) => r,
            Err(e) => {
                let error = format!("connect: {e}");
                let _ = self.connected.send(Err(error.clone())).await;
                seen.error = Some(error);
                return seen;
            }
        };
        let _ = self.connected.send(Ok(())).await;
        // One timer for the whole stream rather than one per chunk: with a thousand
        // streams, per-chunk timers are a measurable share of the client's work.
        let read = self.read(response, &mut seen);
        if tokio::time::timeout_at(deadline, read).await.is_err() {
            seen.error = Some("timed out waiting for the rest of the burst".into());
        }
        seen
    }

    async fn read(&self, response: reqwest::Response, seen: &mut Seen) {
        let mut body = response.bytes_stream();
        let mut partial = Vec::new();
        let mut expected = self.since + 1;
        while expected <= self.target {
            let bytes = match body.next().await {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    seen.error = Some(format!("stream failed: {e}"));
                    return;
                }
                None => {
                    seen.error = Some("the server ended the stream".into());
                    return;
                }
            };
            // One clock read per chunk: a chunk carries events that arrived together.
            let now = nanos_since(self.base);
            seen.last_at = now;
            for_each_id(&mut partial, &bytes, |id| {
                if id != expected {
                    seen.first_gap.get_or_insert((expected, id));
                    seen.out_of_order += 1;
                }
                seen.received += 1;
                seen.last_id = id;
                expected = id + 1;
                if (id + self.idx).is_multiple_of(self.stride) {
                    seen.samples.push((id, now));
                }
            });
        }
    }
}

/// Feeds a chunk of an SSE body and calls `on_id` for every complete `id:` line.
/// `partial` carries an unfinished line over to the next chunk.
fn for_each_id(partial: &mut Vec<u8>, chunk: &[u8], mut on_id: impl FnMut(u64)) {
    let mut rest = chunk;
    while let Some(nl) = memchr::memchr(b'\n', rest) {
        if partial.is_empty() {
            id_line(&rest[..nl], &mut on_id);
        } else {
            partial.extend_from_slice(&rest[..nl]);
            id_line(partial, &mut on_id);
            partial.clear();
        }
        rest = &rest[nl + 1..];
    }
    partial.extend_from_slice(rest);
}

fn id_line(line: &[u8], on_id: &mut impl FnMut(u64)) {
    if let Some(value) = line.strip_prefix(b"id:") {
        let text = std::str::from_utf8(value).unwrap_or("").trim();
        if let Ok(id) = text.parse() {
            on_id(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_across_chunk_boundaries() {
        let stream =
            b"id: 7\nevent: node.stream_changed\ndata: {\"id: 9\"}\n\n:keep-alive\n\nid: 8\ndata: x\n\n";
        for split in 0..stream.len() {
            let mut partial = Vec::new();
            let mut ids = Vec::new();
            for_each_id(&mut partial, &stream[..split], |id| ids.push(id));
            for_each_id(&mut partial, &stream[split..], |id| ids.push(id));
            assert_eq!(ids, vec![7, 8], "split at {split}");
        }
    }
}
