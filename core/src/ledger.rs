//! The ledger: the single writer of an event log. It checks each command against the
//! current views, turns it into events, appends them, flushes once for every command
//! it has in hand (group commit), applies them to the shared views, publishes them,
//! and only then answers.
//!
//! It runs on its own OS thread because sled's writes and flushes block; async callers
//! talk to it through a channel and wait on a oneshot answer.

use crate::audit::{check_watermark, read_checked, Chain};
use crate::error::DomainError;
use crate::metrics::{LedgerMetrics, Outcome};
use crate::store::{Record, Store, StoreError, TokenWrite};
use hydra_events::{Envelope, Event, Hash, NodeId, CURRENT_SCHEMA, ZERO_HASH};
use hydra_projections::{decode_snapshot, encode_snapshot, Projection};
use parking_lot::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot};

tokio::task_local! {
    /// The id of the HTTP request this task serves, set by the services' request layer
    /// (`with_request_id`): every event a request causes names it in its `cause`, so
    /// the log and the server's log lines of that request can be matched.
    static REQUEST_ID: String;
}

/// Runs `f` as the work of request `id`: what it submits to a ledger carries
/// ` request:<id>` after its cause.
pub async fn with_request_id<F: std::future::Future>(id: String, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

/// `cause`, followed by the id of the request this task serves, if it serves one.
fn with_request(cause: String) -> String {
    REQUEST_ID.try_with(|id| format!("{cause} request:{id}")).unwrap_or(cause)
}

/// What a command decided: the events to append, and the token writes and command
/// outputs (stored by hash, which the events carry) that must be exactly as durable
/// as they are.
#[derive(Debug, Default)]
pub struct Decision {
    pub events: Vec<Event>,
    pub tokens: Vec<TokenWrite>,
    pub outputs: Vec<Vec<u8>>,
}

impl Decision {
    pub fn events(events: Vec<Event>) -> Self {
        Decision { events, ..Decision::default() }
    }
}

/// A command: a plain function from the current views to a decision. It runs on the
/// ledger thread against the views as they are after every earlier command, so it
/// must be quick and must not block.
pub type Command<P> = Box<dyn FnOnce(&P) -> Result<Decision, DomainError> + Send>;

/// An event as published to live subscribers. `json` is rendered once, by the first
/// subscriber that needs it, and shared by all the others; `observer_json` likewise for
/// observers, who never see command text or output.
#[derive(Debug)]
pub struct Published {
    pub envelope: Envelope,
    pub json: OnceLock<String>,
    pub observer_json: OnceLock<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    /// The log takes no writes (disk full, or a write failed); reads still work. The
    /// message says why and what brings writes back.
    #[error("{0}")]
    ReadOnly(String),
}

#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Write a projection snapshot every this many events.
    pub snapshot_every: u64,
    /// Capacity of the live broadcast; a subscriber further behind reads the log.
    pub broadcast_capacity: usize,
    /// The most commands folded into one flush.
    pub max_batch: usize,
    /// Stop taking more commands into a batch once it holds this many events: sled
    /// keeps memory it never gives back after very large batches.
    pub max_batch_events: usize,
    /// Refuse new mutations while the data dir's filesystem has less free space than
    /// this: the reserve lets a stop's final snapshot (and sled's own) always finish.
    pub min_free_bytes: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            snapshot_every: 10_000,
            broadcast_capacity: 4096,
            max_batch: 4096,
            max_batch_events: 2048,
            min_free_bytes: 128 * 1024 * 1024,
        }
    }
}

struct Request<P> {
    cause: String,
    command: Command<P>,
    reply: oneshot::Sender<Result<Vec<Arc<Envelope>>, LedgerError>>,
}

/// The handle every handler and watchdog uses: cheap to clone.
pub struct Ledger<P: Projection> {
    tx: mpsc::Sender<Request<P>>,
    views: Arc<RwLock<P>>,
    committed: Arc<AtomicU64>,
    live: broadcast::Sender<Arc<Published>>,
    store: Store,
    writes: Arc<WriteHealth>,
    min_free_bytes: u64,
    thread: Arc<parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>>,
    metrics: LedgerMetrics,
}

/// Whether the log takes writes, kept by the writer and read by `/readyz` and health.
#[derive(Debug, Default)]
pub struct WriteHealth {
    /// Why writes are refused; `None` while the log takes them.
    refusal: parking_lot::Mutex<Option<String>>,
    /// Free bytes on the data dir's filesystem at the writer's last check.
    free_bytes: AtomicU64,
    /// Commands refused because the log takes no writes, since start.
    refused: AtomicU64,
}

/// A copy of `WriteHealth` for a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteStatus {
    pub refusal: Option<String>,
    pub free_bytes: u64,
    pub min_free_bytes: u64,
    pub refused: u64,
}

impl<P: Projection> Clone for Ledger<P> {
    fn clone(&self) -> Self {
        Ledger {
            tx: self.tx.clone(),
            views: self.views.clone(),
            committed: self.committed.clone(),
            live: self.live.clone(),
            store: self.store.clone(),
            writes: self.writes.clone(),
            min_free_bytes: self.min_free_bytes,
            thread: self.thread.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<P: Projection> Ledger<P> {
    /// Opens the log: loads the newest usable snapshot, replays the rest (checking
    /// sequence continuity and the hash chain), and starts the writer thread.
    pub fn open(store: Store, config: LedgerConfig) -> Result<Ledger<P>, StoreError> {
        let (ledger, writer, rx) = Self::unstarted(store, config)?;
        let thread = std::thread::Builder::new().name("hydra-ledger".into()).spawn(move || writer.run(rx))?;
        *ledger.thread.lock() = Some(thread);
        Ok(ledger)
    }

    /// The handle and its writer, recovered but not yet running (tests drive the
    /// writer's batches by hand).
    #[allow(clippy::type_complexity)]
    fn unstarted(
        store: Store,
        config: LedgerConfig,
    ) -> Result<(Ledger<P>, Writer<P>, mpsc::Receiver<Request<P>>), StoreError> {
        let recovered = recover::<P>(&store)?;
        let views = Arc::new(RwLock::new(recovered.views.clone()));
        let committed = Arc::new(AtomicU64::new(recovered.views.last_seq()));
        let (live, _) = broadcast::channel(config.broadcast_capacity.max(16));
        let (tx, rx) = mpsc::channel(16_384);
        let writes = Arc::new(WriteHealth::default());
        let min_free_bytes = config.min_free_bytes;
        // Said before the first command arrives, so that a server started on a full
        // disk shows it at once.
        let free = store.free_bytes().ok();
        if let Some(free) = free {
            writes.free_bytes.store(free, Ordering::Relaxed);
            if free < min_free_bytes {
                *writes.refusal.lock() = Some(disk_full_message(free, min_free_bytes));
            }
        }
        // Written here, off the writer's path, when there is room; else once there is.
        let now = std::time::Instant::now();
        let ballast_due =
            if free.is_none_or(|f| f < min_free_bytes.saturating_add(2 * crate::store::BALLAST_BYTES)) {
                Some(now)
            } else if store.ensure_ballast() {
                None
            } else {
                Some(now + std::time::Duration::from_secs(60))
            };
        let metrics = LedgerMetrics::default();
        let writer = Writer {
            metrics: metrics.clone(),
            store: store.clone(),
            config,
            writes: writes.clone(),
            failed: None,
            ballast_due,
            committed_hash: recovered.prev_hash,
            views: recovered.views,
            shared: views.clone(),
            committed: committed.clone(),
            live: live.clone(),
            prev_hash: recovered.prev_hash,
            last_at_ms: 0,
            last_snapshot: recovered.snapshot_seq,
            last_watermark: std::time::Instant::now(),
        };
        let ledger = Ledger {
            tx,
            views,
            committed,
            live,
            store,
            writes,
            min_free_bytes,
            thread: Arc::new(parking_lot::Mutex::new(None)),
            metrics,
        };
        Ok((ledger, writer, rx))
    }

    /// Submits a command and waits until its events are durable and applied.
    pub async fn submit(
        &self,
        cause: impl Into<String>,
        command: impl FnOnce(&P) -> Result<Decision, DomainError> + Send + 'static,
    ) -> Result<Vec<Arc<Envelope>>, LedgerError> {
        let (reply, answer) = oneshot::channel();
        let request = Request { cause: with_request(cause.into()), command: Box::new(command), reply };
        self.tx.send(request).await.map_err(|_| LedgerError::Unavailable("the ledger has stopped".into()))?;
        answer.await.map_err(|_| LedgerError::Unavailable("the ledger stopped before answering".into()))?
    }

    /// Runs `f` on the committed views. Keep `f` short: the writer waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&P) -> R) -> R {
        f(&self.views.read())
    }

    /// The sequence number of the last event that is durable, applied and published.
    pub fn committed_seq(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.live.subscribe()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The writer's instruments (commands, events by type, batch, commit and fsync).
    pub fn metrics(&self) -> &LedgerMetrics {
        &self.metrics
    }

    /// Commands sent and not yet taken by the writer into a batch.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Whether the log takes writes and, if not, why.
    pub fn write_status(&self) -> WriteStatus {
        WriteStatus {
            refusal: self.writes.refusal.lock().clone(),
            free_bytes: self.writes.free_bytes.load(Ordering::Relaxed),
            min_free_bytes: self.min_free_bytes,
            refused: self.writes.refused.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting commands once every handle is dropped; waits for the writer to
    /// write a final snapshot. Call from the last owner at shutdown.
    pub fn shutdown(self) {
        let thread = self.thread.lock().take();
        drop(self);
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// What start-up recovered from the store.
pub struct Recovered<P> {
    pub views: P,
    pub prev_hash: Hash,
    pub snapshot_seq: u64,
}

/// Loads the newest usable snapshot and replays the log after it, checking that
/// sequence numbers are contiguous, that every record decodes and that the hash chain
/// holds, from seq 1 (the records under the snapshot are read and checked, not
/// applied). A damaged log is reported with the sequence number where it breaks; it is
/// never "repaired" by dropping events.
pub fn recover<P: Projection>(store: &Store) -> Result<Recovered<P>, StoreError> {
    let last = store.last_seq()?;
    let layout = store.layout_version()?;
    hydra_migrations::servable(layout, store.migrating()?, last > 0 || store.holds_legacy_events()?)?;
    if layout < hydra_migrations::LAYOUT_VERSION {
        // A new store: it starts in this build's layout.
        store.set_layout_version(hydra_migrations::LAYOUT_VERSION)?;
        store.flush()?;
    }

    let first = store.first_seq()?;
    if last > 0 && first != 1 {
        return Err(StoreError::Corrupt(format!(
            "the log starts at seq {first}, expected 1: its beginning is missing"
        )));
    }
    let mut start: Option<(u64, P)> = None;
    for item in store.snapshots_newest_first() {
        // Snapshots are optional: one that cannot be read means replaying from further back.
        let (seq, bytes) = match item {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!(error = %e, "projection snapshot not readable; ignored");
                continue;
            }
        };
        if seq > last {
            return Err(StoreError::Corrupt(format!(
                "a snapshot covers the log up to seq {seq} but the log ends at seq {last}: \
                 acknowledged events are missing"
            )));
        }
        match decode_snapshot::<P>(&bytes) {
            Ok(views) if views.last_seq() == seq => {
                start = Some((seq, views));
                break;
            }
            Ok(_) => tracing::warn!(seq, "snapshot does not match its key; ignored"),
            Err(e) => tracing::warn!(seq, error = %e, "snapshot not usable; ignored"),
        }
    }
    let (snapshot_seq, mut views) = start.unwrap_or_default();
    // The events under the snapshot are not replayed, but they are served (SSE
    // catch-up, `/events/log`, history): read and check every one, so that a log sled
    // can no longer read (damage it does not see at open) is refused, not served.
    let mut prev_hash = ZERO_HASH;
    let mut expected = 1;
    for item in store.range(1, snapshot_seq) {
        let (seq, bytes) = item?;
        if seq != expected {
            return Err(StoreError::Corrupt(format!(
                "gap in the log: expected seq {expected}, found seq {seq}"
            )));
        }
        // The chain alone proves each record whole, so the event is not decoded.
        let (said, prev) = hydra_events::decode_link(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("event {seq} does not decode: {e}")))?;
        if said != seq {
            return Err(StoreError::Corrupt(format!("event stored under seq {seq} says it is seq {said}")));
        }
        if prev != prev_hash {
            return Err(StoreError::Corrupt(format!(
                "hash chain broken at seq {seq}: the event before it was altered or removed"
            )));
        }
        if seq == snapshot_seq {
            // The last one has no successor here to vouch for it: decode it whole.
            check_record(seq, expected, &bytes, &prev_hash)?;
        }
        prev_hash = hydra_events::hash(&bytes);
        expected = seq + 1;
    }
    if expected != snapshot_seq + 1 {
        return Err(StoreError::Corrupt(format!("event {expected} under the snapshot is missing")));
    }
    // The node of every replayed event, to check the index against in one scan of it
    // rather than a point read per event.
    let mut about = std::collections::HashMap::new();
    let mut chain = Chain { next: expected, prev_hash };
    read_checked(store, last, &mut chain, |envelope| {
        if let Some(node) = envelope.event.node_id() {
            about.insert(envelope.seq, node.clone());
        }
        views.apply(&envelope);
        true
    })?;
    let prev_hash = chain.prev_hash;
    if chain.next != last + 1 {
        return Err(StoreError::Corrupt(format!(
            "the log ends at seq {} but its last key is {last}",
            chain.next - 1
        )));
    }
    // Every index entry past the snapshot must point at an event about its node, and
    // every such event must have its entry. Both are in the same record (its header
    // names the node), so a mismatch is damage or a bug, never a crash's leftover.
    check_index(store, snapshot_seq, last, &mut about)?;
    none_unindexed(about)?;
    check_watermark(store, last)?;
    Ok(Recovered { views, prev_hash, snapshot_seq })
}

/// Checks one record of the log: its key follows the previous one, it decodes, it
/// says the same sequence number as its key and it chains to the previous record.
pub fn check_record(seq: u64, expected: u64, bytes: &[u8], prev_hash: &Hash) -> Result<Envelope, StoreError> {
    if seq != expected {
        return Err(StoreError::Corrupt(format!("gap in the log: expected seq {expected}, found seq {seq}")));
    }
    let envelope = hydra_events::decode(bytes)
        .map_err(|e| StoreError::Corrupt(format!("event {seq} does not decode: {e}")))?;
    if envelope.seq != seq {
        return Err(StoreError::Corrupt(format!(
            "event stored under seq {seq} says it is seq {}",
            envelope.seq
        )));
    }
    if &envelope.prev_hash != prev_hash {
        return Err(StoreError::Corrupt(format!(
            "hash chain broken at seq {seq}: the event before it was altered or removed"
        )));
    }
    Ok(envelope)
}

/// What `check_index` left in `about`: events about a node that the index does not
/// list; any is damage, named by the first.
pub fn none_unindexed(about: std::collections::HashMap<u64, NodeId>) -> Result<(), StoreError> {
    match about.into_iter().min_by_key(|(seq, _)| *seq) {
        Some((seq, node)) => Err(StoreError::Corrupt(format!(
            "event {seq} is about node {node} but the per-node index does not list it"
        ))),
        None => Ok(()),
    }
}

/// Checks the per-node index entries for events after `after` against `about` (seq →
/// node of every event after `after` that is about a node, as the caller read them
/// from the log): each entry must point at an event about its node, or it is damage,
/// named by seq and node. The entries found are taken out of `about`, so what is left
/// are the events without an entry. One scan of the index, no read per event;
/// start-up checks the entries after its snapshot, `audit` all of them.
pub fn check_index(
    store: &Store,
    after: u64,
    head: u64,
    about: &mut std::collections::HashMap<u64, NodeId>,
) -> Result<(), StoreError> {
    for (node, seq) in store.index_entries_after(after)? {
        if about.get(&seq).is_some_and(|n| n.as_str() == node) {
            about.remove(&seq);
            continue;
        }
        // Damage: read the event only now, to say what the entry points at.
        let why = if seq > head {
            format!("the log ends at seq {head}")
        } else {
            match store.get(seq)? {
                None => format!("event {seq} is missing"),
                Some(bytes) => match hydra_events::decode(&bytes) {
                    Err(e) => format!("event {seq} does not decode: {e}"),
                    Ok(e) => match e.event.node_id() {
                        Some(other) => format!("event {seq} is about node {other}"),
                        None => format!("event {seq} is about no node"),
                    },
                },
            }
        };
        return Err(StoreError::Corrupt(format!(
            "the per-node index lists seq {seq} for node {node}, but {why}"
        )));
    }
    Ok(())
}

struct Writer<P: Projection> {
    store: Store,
    config: LedgerConfig,
    /// The writer's own copy of the views, ahead of the shared ones by the batch in
    /// hand, so that each command sees the effect of the commands before it.
    views: P,
    shared: Arc<RwLock<P>>,
    committed: Arc<AtomicU64>,
    live: broadcast::Sender<Arc<Published>>,
    writes: Arc<WriteHealth>,
    /// Set when an append or flush failed: the store may hold part of a batch that was
    /// never acknowledged, so nothing more is written until a restart replays the disk.
    failed: Option<String>,
    /// When to make sure `<data>/ballast` is there (see `store::BALLAST_BYTES`); None once
    /// it is. A failed write of it is tried again a minute later, not every batch.
    ballast_due: Option<std::time::Instant>,
    /// The hash of the last acknowledged event: where `prev_hash` goes back to when a
    /// batch fails.
    committed_hash: Hash,
    prev_hash: Hash,
    last_at_ms: u64,
    last_snapshot: u64,
    last_watermark: std::time::Instant,
    metrics: LedgerMetrics,
}

type Pending = (oneshot::Sender<Result<Vec<Arc<Envelope>>, LedgerError>>, std::ops::Range<usize>);

impl<P: Projection> Writer<P> {
    fn run(mut self, mut rx: mpsc::Receiver<Request<P>>) {
        let mut batch = std::collections::VecDeque::with_capacity(self.config.max_batch);
        while let Some(first) = rx.blocking_recv() {
            batch.push_back(first);
            while batch.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(r) => batch.push_back(r),
                    Err(_) => break,
                }
            }
            while !batch.is_empty() {
                self.commit(&mut batch);
            }
        }
        // The free-space reserve exists for this last snapshot; after a failed write
        // nothing more is written.
        if self.failed.is_none() && self.views.last_seq() > self.last_snapshot {
            self.snapshot();
            if let Err(e) = self.store.flush() {
                tracing::error!(error = %e, "final flush failed");
            }
        }
        if let Err(e) = self.store.set_watermark(self.views.last_seq()) {
            tracing::warn!(error = %e, "final watermark not written");
        }
    }

    /// Decides, appends, flushes and publishes commands from the front of `batch`,
    /// stopping early once the batch holds `max_batch_events` events.
    fn commit(&mut self, batch: &mut std::collections::VecDeque<Request<P>>) {
        let mut envelopes: Vec<Envelope> = Vec::new();
        let mut encoded: Vec<Vec<u8>> = Vec::new();
        let mut tokens: Vec<TokenWrite> = Vec::new();
        let mut outputs: Vec<Vec<u8>> = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        let started = std::time::Instant::now();
        if let Some(reason) = self.refusal() {
            self.writes.refused.fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.metrics.command(Outcome::ReadOnly, batch.len() as u64);
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(LedgerError::ReadOnly(reason.clone())));
            }
            return;
        }
        let now = now_ms();
        while envelopes.len() < self.config.max_batch_events {
            let Some(request) = batch.pop_front() else { break };
            let decision = match catch(request.command, &self.views) {
                Ok(d) => d,
                Err(e) => {
                    let outcome =
                        if matches!(e, LedgerError::Domain(_)) { Outcome::Refused } else { Outcome::Failed };
                    self.metrics.command(outcome, 1);
                    let _ = request.reply.send(Err(e));
                    continue;
                }
            };
            let start = envelopes.len();
            for event in decision.events {
                self.last_at_ms = self.last_at_ms.max(now);
                let envelope = Envelope {
                    seq: self.views.last_seq() + 1,
                    at_ms: self.last_at_ms,
                    schema: CURRENT_SCHEMA,
                    cause: request.cause.clone(),
                    prev_hash: self.prev_hash,
                    event,
                };
                let bytes = hydra_events::encode(&envelope);
                self.prev_hash = hydra_events::hash(&bytes);
                self.views.apply(&envelope);
                envelopes.push(envelope);
                encoded.push(bytes);
            }
            tokens.extend(decision.tokens);
            outputs.extend(decision.outputs);
            pending.push((request.reply, start..envelopes.len()));
        }
        if envelopes.is_empty() && tokens.is_empty() {
            self.metrics.command(Outcome::Unchanged, pending.len() as u64);
            for (reply, _) in pending {
                let _ = reply.send(Ok(Vec::new()));
            }
            return;
        }
        let records: Vec<Record<'_>> = envelopes
            .iter()
            .zip(&encoded)
            .map(|(e, b)| Record { seq: e.seq, bytes: b, node_id: e.event.node_id() })
            .collect();
        let written = self
            .store
            .put_outputs(self.last_at_ms, &outputs)
            .and_then(|_| self.store.append(&records, &tokens))
            .and_then(|_| {
                let fsync = std::time::Instant::now();
                let flushed = self.store.flush();
                self.metrics.fsync_seconds.observe(fsync.elapsed().as_secs_f64());
                flushed
            });
        if let Err(e) = written {
            // The disk state is now unknown: part of the batch may be on disk, and sled
            // refuses every write after an I/O error. Nothing of the batch was
            // acknowledged: answer every caller, go back to the acknowledged views and
            // stay read-only. On restart the log on disk is the truth and is replayed.
            let reason = if e.is_disk_full() {
                format!(
                    "the disk is full ({e}); the server is read-only: free space on the data dir's \
                     filesystem and restart it"
                )
            } else {
                format!("the event log could not be written ({e}); the server is read-only until restarted")
            };
            tracing::error!(error = %e, "append failed; the log is read-only until a restart");
            self.metrics.command(Outcome::Failed, pending.len() as u64);
            for (reply, _) in pending {
                let _ = reply.send(Err(LedgerError::ReadOnly(reason.clone())));
            }
            drop(records);
            self.views = self.shared.read().clone();
            self.prev_hash = self.committed_hash;
            *self.writes.refusal.lock() = Some(reason.clone());
            self.failed = Some(reason);
            return;
        }
        self.committed_hash = self.prev_hash;
        drop(records);
        let envelopes: Vec<Arc<Envelope>> = envelopes.into_iter().map(Arc::new).collect();
        {
            let mut shared = self.shared.write();
            for e in &envelopes {
                shared.apply(e);
            }
        }
        for e in &envelopes {
            self.committed.store(e.seq, Ordering::SeqCst);
            let _ = self.live.send(Arc::new(Published {
                envelope: (**e).clone(),
                json: OnceLock::new(),
                observer_json: OnceLock::new(),
            }));
        }
        // Recorded before the answers, so that a caller who got one sees it counted.
        for e in &envelopes {
            self.metrics.events.get_or_create(&[("type", e.event.type_name())]).inc();
        }
        let unchanged = pending.iter().filter(|(_, range)| range.is_empty()).count() as u64;
        self.metrics.command(Outcome::Unchanged, unchanged);
        self.metrics.command(Outcome::Appended, pending.len() as u64 - unchanged);
        self.metrics.batch_commands.observe(pending.len() as f64);
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        for (reply, range) in pending {
            let _ = reply.send(Ok(envelopes[range].to_vec()));
        }
        if self.views.last_seq() >= self.last_snapshot + self.config.snapshot_every {
            self.snapshot();
        }
        // At most once a second (one extra fsync), so the check costs nothing at load.
        if self.last_watermark.elapsed() >= std::time::Duration::from_secs(1) {
            match self.store.set_watermark(self.views.last_seq()) {
                Ok(()) => self.last_watermark = std::time::Instant::now(),
                Err(e) => tracing::warn!(error = %e, "watermark not written"),
            }
        }
    }

    /// Why the next batch must be refused: a failed write earlier, or less free space
    /// than the reserve. Says so once in the log when it starts and when it ends.
    fn refusal(&mut self) -> Option<String> {
        if let Some(reason) = &self.failed {
            return Some(reason.clone());
        }
        let floor = self.config.min_free_bytes;
        // Unknown is not full: the write itself will say if it fails.
        let free = self.store.free_bytes().unwrap_or(u64::MAX);
        self.writes.free_bytes.store(free, Ordering::Relaxed);
        let mut refusal = self.writes.refusal.lock();
        if free < floor {
            let reason = disk_full_message(free, floor);
            if refusal.is_none() {
                tracing::error!(free_bytes = free, min_free_bytes = floor, "disk full: the log is read-only");
            }
            *refusal = Some(reason.clone());
            Some(reason)
        } else {
            if refusal.take().is_some() {
                tracing::info!(free_bytes = free, "disk space is back: the log takes writes again");
            }
            drop(refusal);
            let now = std::time::Instant::now();
            if self.ballast_due.is_some_and(|due| now >= due)
                && free >= floor.saturating_add(2 * crate::store::BALLAST_BYTES)
            {
                self.ballast_due =
                    (!self.store.ensure_ballast()).then(|| now + std::time::Duration::from_secs(60));
            }
            None
        }
    }

    fn snapshot(&mut self) {
        let seq = self.views.last_seq();
        let bytes = encode_snapshot(&self.views);
        match self.store.put_snapshot(seq, &bytes, 3) {
            Ok(()) => self.last_snapshot = seq,
            Err(e) => tracing::warn!(error = %e, "snapshot not written; will retry"),
        }
    }
}

fn disk_full_message(free: u64, floor: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    format!(
        "the disk is full: {} MiB free on the data dir's filesystem, below the {} MiB reserve \
         (min_free_bytes); the server is read-only and takes writes again by itself once space is freed",
        free / MIB,
        floor.div_ceil(MIB)
    )
}

/// Runs a command, turning a panic inside it into an error for that one caller
/// instead of taking the writer down.
fn catch<P>(command: Command<P>, views: &P) -> Result<Decision, LedgerError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| command(views))) {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(LedgerError::Domain(e)),
        Err(_) => Err(LedgerError::Unavailable("the command failed unexpectedly".into())),
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydra_projections::ClusterViews;

    /// Writes `events` as a log, chained, with no index entries at all.
    fn unindexed_log(store: &Store, events: Vec<Event>) {
        store.set_layout_version(hydra_migrations::LAYOUT_VERSION).unwrap();
        let mut prev = ZERO_HASH;
        for (i, event) in events.into_iter().enumerate() {
            let envelope = Envelope {
                seq: i as u64 + 1,
                at_ms: 1,
                schema: CURRENT_SCHEMA,
                cause: "test".into(),
                prev_hash: prev,
                event,
            };
            let bytes = hydra_events::encode(&envelope);
            prev = hydra_events::hash(&bytes);
            store.append(&[Record { seq: envelope.seq, bytes: &bytes, node_id: None }], &[]).unwrap();
        }
        store.flush().unwrap();
    }

    type Answer = oneshot::Receiver<Result<Vec<Arc<Envelope>>, LedgerError>>;

    /// A writer on a fresh store, not running: each test hands it batches itself.
    fn writer(max_batch_events: usize) -> (tempfile::TempDir, Ledger<ClusterViews>, Writer<ClusterViews>) {
        let dir = tempfile::tempdir().unwrap();
        let config = LedgerConfig { max_batch_events, min_free_bytes: 0, ..LedgerConfig::default() };
        let (ledger, writer, _rx) = Ledger::unstarted(Store::open(dir.path()).unwrap(), config).unwrap();
        (dir, ledger, writer)
    }

    fn request(
        command: impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> + Send + 'static,
    ) -> (Request<ClusterViews>, Answer) {
        let (reply, answer) = oneshot::channel();
        (Request { cause: "test".into(), command: Box::new(command), reply }, answer)
    }

    fn enrolled(name: &str) -> Event {
        Event::NodeEnrolled {
            node_id: NodeId::parse(name).unwrap(),
            name: name.into(),
            ip: "10.0.0.1".into(),
        }
    }

    /// Enrolls `name`; refused when `after` is named and not enrolled yet.
    fn enroll(name: &'static str, after: Option<&'static str>) -> (Request<ClusterViews>, Answer) {
        request(move |v: &ClusterViews| match after {
            Some(a) if !v.nodes.contains_key(&NodeId::parse(a).unwrap()) => {
                Err(DomainError::NotFound(format!("no node {a}")))
            }
            _ => Ok(Decision::events(vec![enrolled(name)])),
        })
    }

    fn seqs(answer: &mut Answer) -> Result<Vec<u64>, LedgerError> {
        answer.try_recv().expect("answered").map(|es| es.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn a_refused_or_panicking_command_mid_batch_costs_only_its_own_caller() {
        let (dir, ledger, mut writer) = writer(2048);
        let (a, mut a_answer) = enroll("node-a", None);
        // Sees node-a, which only the command before it in the same batch decided.
        let (b, mut b_answer) = enroll("node-b", Some("node-a"));
        let (refused, mut refused_answer) = enroll("node-c", Some("node-x"));
        let (panics, mut panic_answer) = request(|_| panic!("a bug in a command"));
        let (d, mut d_answer) = enroll("node-d", None);
        let mut batch = [a, b, refused, panics, d].into_iter().collect();
        writer.commit(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(seqs(&mut a_answer).unwrap(), vec![1]);
        assert_eq!(seqs(&mut b_answer).unwrap(), vec![2]);
        assert!(matches!(seqs(&mut refused_answer), Err(LedgerError::Domain(DomainError::NotFound(_)))));
        assert!(
            matches!(seqs(&mut panic_answer), Err(LedgerError::Unavailable(m)) if m.contains("unexpectedly"))
        );
        assert_eq!(seqs(&mut d_answer).unwrap(), vec![3], "no gap where the refused ones were");
        assert_eq!(ledger.committed_seq(), 3);
        assert_eq!(ledger.read(|v| v.nodes.len()), 3);
        // The writer goes on, and what it wrote replays to the same views.
        let (e, mut e_answer) = enroll("node-e", None);
        writer.commit(&mut [e].into_iter().collect());
        assert_eq!(seqs(&mut e_answer).unwrap(), vec![4]);
        drop((ledger, writer));
        let recovered = recover::<ClusterViews>(&Store::open(dir.path()).unwrap()).unwrap();
        assert_eq!(recovered.views.nodes.len(), 4);
        assert_eq!(recovered.views.last_seq, 4);
    }

    #[test]
    fn a_batch_stops_taking_commands_once_it_holds_max_batch_events() {
        let (_dir, ledger, mut writer) = writer(3);
        let two = |a: &'static str, b: &'static str| {
            request(move |_| Ok(Decision::events(vec![enrolled(a), enrolled(b)])))
        };
        let (first, mut first_answer) = two("node-a", "node-b");
        let (second, mut second_answer) = two("node-c", "node-d");
        let (third, mut third_answer) = two("node-e", "node-f");
        let mut batch = [first, second, third].into_iter().collect::<std::collections::VecDeque<_>>();
        writer.commit(&mut batch);
        // Two commands made 4 events, past the 3 allowed: the third waits, unanswered.
        assert_eq!(batch.len(), 1);
        assert_eq!(seqs(&mut first_answer).unwrap(), vec![1, 2]);
        assert_eq!(seqs(&mut second_answer).unwrap(), vec![3, 4]);
        assert!(third_answer.try_recv().is_err(), "answered before its batch was written");
        assert_eq!(ledger.committed_seq(), 4);
        writer.commit(&mut batch);
        assert_eq!(seqs(&mut third_answer).unwrap(), vec![5, 6]);
    }

    #[test]
    fn start_up_refuses_an_event_whose_record_does_not_name_its_node() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = NodeId::parse("node-a").unwrap();
        let enrolled = Event::NodeEnrolled { node_id: a.clone(), name: "a".into(), ip: "10.0.0.1".into() };
        unindexed_log(&store, vec![enrolled, Event::NodeOnline { node_id: a.clone() }]);
        assert!(store.node_seqs(&a, 0, 10).unwrap().is_empty());
        let err = recover::<ClusterViews>(&store).err().expect("refused");
        assert!(err.is_damage(), "{err}");
        assert!(
            err.to_string().contains("event 1 is about node node-a but the per-node index does not list it"),
            "{err}"
        );
        assert!(crate::audit::audit_index(&store, 2).is_err());
    }
}
