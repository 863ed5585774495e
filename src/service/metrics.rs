//! `GET /metrics` of both services (Prometheus text format) and the families they
//! share: HTTP requests by route template and status, the ledger's writer, SSE,
//! connections, the store and the process. One `prometheus_client::Registry` per
//! running service, so that servers sharing a process (the tests) keep their figures
//! apart. Counters and histograms are recorded where things happen; what the service
//! already keeps (the ledger's queue, SSE and connection counts, disk, memory) is read
//! when scraped, by a collector, so it is exact and costs nothing between scrapes.
//! Each service adds its own families (`cluster::metrics`, `library::metrics`).

use super::serve::ConnStats;
use super::{ApiError, Reader, ServiceState, SseStats};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hydra_core::ledger::Ledger;
use hydra_projections::Projection;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

type HttpLabels = [(&'static str, String); 3];
type RouteLabels = [(&'static str, String); 2];

/// A service's registry and the shared instruments its handlers record into.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram>,
    /// From an event's commit to its send to a live SSE subscriber.
    pub sse_delivery_seconds: Histogram,
}

impl Metrics {
    /// The shared families of a service over its ledger, SSE and connection counters;
    /// `own` registers the service's own families in the same registry.
    pub fn new<P: Projection>(
        ledger: &Ledger<P>,
        sse: Arc<SseStats>,
        connections: Arc<ConnStats>,
        own: impl FnOnce(&mut Registry),
    ) -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "hydra_http_requests",
            "HTTP requests answered, by route template, method and status",
            http_requests.clone(),
        );
        let http_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 1 ms … 32 s (long polls and SSE count until their answer starts).
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "hydra_http_request_duration_seconds",
            "Time from a request to the start of its answer, by route template and method",
            http_seconds.clone(),
        );
        let sse_delivery_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "hydra_sse_delivery_lag_seconds",
            "Time from an event's commit to its send to a live SSE subscriber",
            sse_delivery_seconds.clone(),
        );
        let m = ledger.metrics();
        registry.register(
            "hydra_ledger_commands",
            "Commands the writer took, by outcome (appended, unchanged, refused, failed, read_only)",
            m.commands.clone(),
        );
        registry.register("hydra_ledger_events", "Events appended to the log, by type", m.events.clone());
        registry.register(
            "hydra_ledger_batch_commands",
            "Commands folded into one flush (group commit)",
            m.batch_commands.clone(),
        );
        registry.register(
            "hydra_ledger_commit_duration_seconds",
            "Time from taking a batch to answering it: decide, append, fsync, apply, publish",
            m.commit_seconds.clone(),
        );
        registry.register(
            "hydra_ledger_fsync_duration_seconds",
            "Time of the flush (fsync) of one batch",
            m.fsync_seconds.clone(),
        );
        let ledger = ledger.clone();
        registry.register_collector(Box::new(Scraped::new(move |e| {
            shared_figures(e, &ledger, &sse, &connections)
        })));
        own(&mut registry);
        Metrics { registry, http_requests, http_seconds, sse_delivery_seconds }
    }

    /// Counts one answered request.
    pub fn http(&self, route: &str, method: &Method, status: StatusCode, seconds: f64) {
        let (route, method) = (route.to_owned(), method_label(method).to_owned());
        self.http_seconds
            .get_or_create(&[("route", route.clone()), ("method", method.clone())])
            .observe(seconds);
        let labels = [("route", route), ("method", method), ("status", status.as_u16().to_string())];
        self.http_requests.get_or_create(&labels).inc();
    }

    /// The text a scrape gets.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; a collector's error would be a bug.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        text
    }
}

/// The method as a label: the standard ones by name, anything else as `other`, so a
/// client cannot grow the label set.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN.iter().find(|m| *m == method).map_or("other", |m| m.as_str())
}

/// Middleware of both routers: counts and times every request under its route
/// template (`/api/v1/nodes/{id}`, never the id), or `unmatched` for the fallback.
pub async fn track<S: ServiceState>(State(state): State<S>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    state.metrics().http(&route, &method, response.status(), started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics` on the main listener: observers and admins.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "Every `hydra_…` family in the Prometheus text format 0.0.4 (docs/metrics.md)", body = String, content_type = "text/plain"),
    )
)]
pub async fn scrape<S: ServiceState>(State(state): State<S>, _: Reader) -> Response {
    text(&state)
}

/// `GET /metrics` on `metrics_listen`: no token (the address is the protection).
pub async fn scrape_open<S: ServiceState>(State(state): State<S>) -> Response {
    text(&state)
}

fn text<S: ServiceState>(state: &S) -> Response {
    let body = state.metrics().render();
    ([(header::CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], body)
        .into_response()
}

/// The router of `metrics_listen`: `/metrics` and nothing else.
pub fn open_router<S: ServiceState>(state: S) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape_open::<S>))
        .fallback(|| async { ApiError::not_found("only /metrics is served on this address") })
        .with_state(state)
}

/// A collector whose figures are read at each scrape by a function.
pub struct Scraped<F>(F);

impl<F> Scraped<F>
where
    F: Fn(&mut DescriptorEncoder) -> fmt::Result + Send + Sync + 'static,
{
    pub fn new(f: F) -> Scraped<F> {
        Scraped(f)
    }
}

impl<F> fmt::Debug for Scraped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scraped")
    }
}

impl<F> Collector for Scraped<F>
where
    F: Fn(&mut DescriptorEncoder) -> fmt::Result + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        (self.0)(&mut encoder)
    }
}

/// Labels of one series of a scraped family.
pub type Labels = Vec<(&'static str, &'static str)>;

/// One series of a scraped gauge family: its labels and its value.
pub type GaugeSeries = (Labels, i64);

/// A gauge family: one series per label set.
pub fn gauges(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = GaugeSeries>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, &sentence(help), None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge without labels.
pub fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, &sentence(help), None, MetricType::Gauge)?)
}

/// A counter family read from a count kept elsewhere (`name` without `_total`).
pub fn counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, &sentence(help), None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter without labels read from a count kept elsewhere.
pub fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, &sentence(help), None, MetricType::Counter)?)
}

/// Help text ending in a full stop, as the registry writes it for what it holds.
fn sentence(help: &str) -> String {
    format!("{help}.")
}

fn shared_figures<P: Projection>(
    e: &mut DescriptorEncoder,
    ledger: &Ledger<P>,
    sse: &SseStats,
    connections: &ConnStats,
) -> fmt::Result {
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    gauge(
        e,
        "hydra_ledger_queue_depth",
        "Commands waiting for the writer (sent, not yet taken into a batch)",
        int(ledger.queue_depth() as u64),
    )?;
    gauge(
        e,
        "hydra_ledger_committed_seq",
        "Sequence number of the last durable event",
        int(ledger.committed_seq()),
    )?;
    let writes = ledger.write_status();
    gauge(
        e,
        "hydra_ledger_read_only",
        "1 while the log takes no writes (disk full, or a failed write)",
        i64::from(writes.refusal.is_some()),
    )?;
    if let Ok(bytes) = ledger.store().size_on_disk() {
        gauge(e, "hydra_store_bytes", "Bytes the event store occupies on disk", int(bytes))?;
    }
    gauge(
        e,
        "hydra_store_free_bytes",
        "Free bytes on the data dir's filesystem at the writer's last check",
        int(writes.free_bytes),
    )?;
    gauge(e, "hydra_sse_subscribers", "Live SSE subscribers", int(sse.subscribers.load(Ordering::Relaxed)))?;
    counter(
        e,
        "hydra_sse_log_fallbacks",
        "Times a subscriber fell behind the live broadcast and read from the log instead",
        sse.lag_recoveries.load(Ordering::Relaxed),
    )?;
    gauge(
        e,
        "hydra_connections_open",
        "Open HTTP connections",
        int(connections.current.load(Ordering::Relaxed)),
    )?;
    counter(
        e,
        "hydra_connections_refused",
        "Connections closed at once: the cap and its reserve were full",
        connections.refused.load(Ordering::Relaxed),
    )?;
    if let Some(rss) = resident_bytes() {
        gauge(e, "hydra_process_resident_memory_bytes", "Resident memory of the process", int(rss))?;
    }
    if let Some(fds) = open_fds() {
        gauge(e, "hydra_process_open_fds", "Open file descriptors of the process", int(fds))?;
    }
    Ok(())
}

/// RSS from `/proc/self/statm` (pages); none where there is no procfs.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).ok()?))
}

/// Entries of `/proc/self/fd` (the directory's own descriptor while it is read is one
/// of them: subtracted).
fn open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}
