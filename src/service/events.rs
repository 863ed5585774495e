//! The event stream: `GET /api/v1/events` (SSE: catch-up from the log, then live; a
//! subscriber that falls behind the broadcast goes back to the log and misses
//! nothing), `GET /api/v1/events/log` (JSON pages) and the live state digest.

use super::ApiQuery;
use super::{ApiError, Reader, ServiceState, SseStats};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use hydra_core::envelope::{envelope_json, Audience};
use hydra_core::ledger::Published;
use hydra_core::store::{Store, StoreError};
use hydra_events::Envelope;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// How many events one read of the log returns while catching up. A subscriber holds
/// at most one chunk while its client reads, so this bounds what a slow or vanished
/// client costs (512 made 3,000 half-read catch-ups take ~750 MiB).
const CATCH_UP_CHUNK: u64 = 64;

/// Catch-up reads running at once, across subscribers: thousands of subscribers
/// connecting together would otherwise grow tokio's blocking pool towards 512
/// threads, each keeping its stack and allocator caches for a while after.
static CATCH_UP_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// The live event rendered once per audience and shared by every subscriber of it.
fn rendered(p: &Published, audience: Audience) -> &str {
    let cache = match audience {
        Audience::Admin => &p.json,
        Audience::Observer => &p.observer_json,
    };
    cache.get_or_init(|| envelope_json(&p.envelope, audience).to_string())
}

/// Reads and decodes events `from..=to` from the log.
pub fn read_envelopes(store: &Store, from: u64, to: u64) -> Result<Vec<Envelope>, StoreError> {
    store
        .range(from, to)
        .map(|item| {
            let (seq, bytes) = item?;
            hydra_events::decode(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("event {seq} does not decode: {e}")))
        })
        .collect()
}

/// `?types=` and `?node=`: which events a subscriber wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exact names, or prefixes when written `provision.*`.
    types: Vec<(String, bool)>,
    node: Option<String>,
}

impl Filter {
    pub fn parse(types: Option<&str>, node: Option<&str>) -> Result<Filter, ApiError> {
        let mut out = Vec::new();
        for t in types.unwrap_or("").split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (name, prefix) = match t.strip_suffix('*') {
                Some(p) => (p.to_owned(), true),
                None => (t.to_owned(), false),
            };
            if !name.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_') {
                return Err(ApiError::bad_request(format!(
                    "bad type filter {t:?}: use names like exec.completed or provision.*"
                )));
            }
            out.push((name, prefix));
        }
        Ok(Filter { types: out, node: node.filter(|n| !n.is_empty()).map(str::to_owned) })
    }

    pub fn matches(&self, e: &Envelope) -> bool {
        let name = e.event.type_name();
        let type_ok = self.types.is_empty()
            || self
                .types
                .iter()
                .any(|(t, prefix)| if *prefix { name.starts_with(t.as_str()) } else { name == t });
        let node_ok =
            self.node.as_deref().is_none_or(|n| e.event.node_id().is_some_and(|id| id.as_str() == n));
        type_ok && node_ok
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Resume after this seq (a `Last-Event-ID` header wins).
    since: Option<u64>,
    /// Event types, comma-separated (`node.approved,exec.completed`).
    types: Option<String>,
    /// Only the events about this node.
    node: Option<String>,
}

/// What a subscriber resumes after: `Last-Event-ID` (a reconnect) wins over `?since=`.
fn resume_point(headers: &HeaderMap, since: Option<u64>) -> Result<u64, ApiError> {
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event sequence number")),
        None => Ok(since.unwrap_or(0)),
    }
}

/// The live event stream: the log from the resume point on, then live.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(StreamQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this seq (a reconnect)")),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses((status = 200, description = "Server-sent events: `id` is the seq, `event` the type, `data` the event's JSON", content_type = "text/event-stream", body = String))
)]
pub async fn stream<S: ServiceState>(
    State(state): State<S>,
    reader: Reader,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let filter = Filter::parse(q.types.as_deref(), q.node.as_deref())?;
    let since = resume_point(&headers, q.since)?;
    let head = state.committed_seq();
    if since > head {
        // Every id this server gave out is at most its head: the client comes from
        // another server, or this one was restored from an older backup.
        return Err(ApiError::bad_request(format!(
            "resume point {since} is beyond the head of the log ({head}): this server never \
             sent that event; resume from {head} or earlier"
        )));
    }
    let keepalive = KeepAlive::new().interval(state.keepalive()).text("keep-alive");
    let events = subscription(state, since, filter, reader.audience());
    let mut response = Sse::new(events).keep_alive(keepalive).into_response();
    // Hydra keeps the whole log, so every id resumes exactly; say where we resumed.
    let h = response.headers_mut();
    h.insert("x-hydra-resumed-from", HeaderValue::from(since));
    h.insert("x-hydra-head", HeaderValue::from(head));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

enum Item {
    Live(Arc<Published>),
    Logged(Box<Envelope>),
}

fn sse_event(item: &Item, audience: Audience) -> SseEvent {
    let (envelope, json) = match item {
        Item::Live(p) => (&p.envelope, rendered(p, audience).to_owned()),
        Item::Logged(e) => (&**e, envelope_json(e, audience).to_string()),
    };
    SseEvent::default().id(envelope.seq.to_string()).event(envelope.event.type_name()).data(json)
}

/// The subscription: subscribe to the live broadcast first, then read the log from
/// the resume point up to the committed head, then go on live, skipping anything
/// already sent. Whenever the live feed skips ahead (lag), read the gap from the log.
fn subscription<S: ServiceState>(
    state: S,
    since: u64,
    filter: Filter,
    audience: Audience,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream::stream! {
        let _guard = SubscriberGuard::new(state.sse().clone());
        let mut live = state.subscribe();
        let mut stopping = state.stopping();
        let mut sent = since;
        loop {
            // Catch up from the log to the committed head.
            let head = state.committed_seq();
            while sent < head {
                let to = head.min(sent + CATCH_UP_CHUNK);
                let store = state.store().clone();
                let from = sent + 1;
                let chunk = {
                    let _reading = CATCH_UP_READS.acquire().await;
                    tokio::task::spawn_blocking(move || read_envelopes(&store, from, to)).await
                };
                let chunk = match chunk {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "SSE catch-up read failed; closing the stream");
                        return;
                    }
                    Err(_) => return,
                };
                for e in chunk {
                    sent = e.seq;
                    if filter.matches(&e) {
                        yield Ok(sse_event(&Item::Logged(Box::new(e)), audience));
                    }
                }
            }
            // Live, until the feed lags or skips.
            loop {
                let received = tokio::select! {
                    r = live.recv() => r,
                    _ = stopping.wait_for(|s| *s) => return,
                };
                match received {
                    Ok(p) => {
                        let seq = p.envelope.seq;
                        if seq <= sent {
                            continue;
                        }
                        if seq > sent + 1 {
                            // Something between was not seen live: it is committed
                            // (this later event is), so catch up from the log, chunk
                            // by chunk, through this one.
                            break;
                        }
                        sent = seq;
                        if filter.matches(&p.envelope) {
                            let lag_ms = hydra_core::ledger::now_ms().saturating_sub(p.envelope.at_ms);
                            state.metrics().sse_delivery_seconds.observe(lag_ms as f64 / 1000.0);
                            yield Ok(sse_event(&Item::Live(p), audience));
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        state.sse().lag_recoveries.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

/// Counts a subscriber for as long as its stream lives.
struct SubscriberGuard(Arc<SseStats>);

impl SubscriberGuard {
    fn new(stats: Arc<SseStats>) -> Self {
        stats.subscribers.fetch_add(1, Ordering::Relaxed);
        SubscriberGuard(stats)
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Events after this seq (default 0).
    #[serde(default)]
    #[param(required = false)]
    since: u64,
    /// Events per page (default 500, clamped to 1..=10000).
    limit: Option<u64>,
    /// Event types, comma-separated.
    types: Option<String>,
    /// Only the events about this node.
    node: Option<String>,
}

/// A page of the log as JSON, for scripts: `{"events","next_since","head"}`.
/// Ask again with `since=next_since` until `next_since == head`.
#[utoipa::path(
    get,
    path = "/api/v1/events/log",
    tag = "events",
    params(LogQuery),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses((status = 200, description = "A page of the log", body = LogPage))
)]
pub async fn log<S: ServiceState>(
    State(state): State<S>,
    reader: Reader,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    let filter = Filter::parse(q.types.as_deref(), q.node.as_deref())?;
    let limit = q.limit.unwrap_or(500).clamp(1, 10_000);
    let head = state.committed_seq();
    // Never wraps: a `since` at or past the head gives an empty page whose
    // `next_since` is the head.
    let to = head.min(q.since.saturating_add(limit));
    let store = state.store().clone();
    let from = q.since.saturating_add(1);
    let envelopes = tokio::task::spawn_blocking(move || read_envelopes(&store, from, to))
        .await
        .map_err(ApiError::internal)??;
    let audience = reader.audience();
    let events: Vec<_> =
        envelopes.iter().filter(|e| filter.matches(e)).map(|e| envelope_json(e, audience)).collect();
    Ok(Json(LogPage { events, next_since: to, head }))
}

/// A page of `GET /api/v1/events/log`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct LogPage {
    /// Envelopes: `seq`, `at`, `type`, `cause`, the event's fields.
    #[schema(value_type = Vec<Object>)]
    events: Vec<serde_json::Value>,
    /// Ask again with `since=next_since` until it equals `head`.
    next_since: u64,
    head: u64,
}

/// The digest of the live views.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Digest {
    seq: u64,
    /// blake3 of the views' snapshot encoding, hex.
    digest: String,
}

/// The digest of the live views, to compare with `audit`.
#[utoipa::path(
    get,
    path = "/api/v1/audit/digest",
    tag = "events",
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses((status = 200, description = "The last applied seq and the digest of the live views", body = Digest))
)]
pub async fn digest<S: ServiceState>(State(state): State<S>, _: Reader) -> Json<Digest> {
    let (seq, digest) = state.digest();
    Json(Digest { seq, digest })
}
