//! A reconnecting Server-Sent Events follower: one stream of events across any number
//! of connections, resuming each time with `Last-Event-ID` so nothing is skipped or
//! repeated. Used by `hydrapipeline` and by services that follow another's events.

use eventsource_client::{Client, ClientBuilder, Error as EsError, ReconnectOptions, SSE};
use futures_util::{Stream, StreamExt};
use std::time::Duration;

/// What a followed SSE stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    /// (Re)connected; `resumed_from` is the Last-Event-ID sent, if any.
    Connected {
        resumed_from: Option<String>,
    },
    Event {
        id: Option<String>,
        kind: String,
        data: String,
    },
    /// The connection failed or dropped; it will be retried after a pause. Said once
    /// per outage, not once per retry.
    Down {
        reason: String,
    },
}

/// Where to follow from.
#[derive(Debug, Clone)]
pub struct SseSource {
    /// Full URL incl. path and query, e.g. `http://h:8080/api/v1/events?types=provision.*`.
    pub url: String,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Resume point for the first connection.
    pub last_event_id: Option<String>,
    /// Pause between reconnect attempts; doubles per failed attempt up to [`MAX_RETRY`].
    pub retry: Duration,
}

/// The longest pause between reconnect attempts (unless `retry` itself is longer).
pub const MAX_RETRY: Duration = Duration::from_secs(5);

/// With no byte for this long (the servers send keep-alive comments far more often)
/// the connection is taken as dead; a half-open TCP connection would otherwise hang.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Follows the stream forever: reconnects after any failure with Last-Event-ID = the id
/// of the last event yielded (or the starting one), so no event is skipped or repeated
/// across reconnects. Ends only when dropped.
pub fn follow(source: SseSource) -> impl Stream<Item = SseItem> + Send + 'static {
    async_stream::stream! {
        let SseSource { url, token, mut last_event_id, retry } = source;
        let retry = retry.max(Duration::from_millis(10));
        let max_pause = MAX_RETRY.max(retry);
        let mut pause = retry;
        // True from the first failure until the next successful connection, so an
        // outage is reported once however many attempts it takes.
        let mut down = false;
        loop {
            // A fresh client per connection with its own reconnect disabled: the
            // library would otherwise resume with the id of the last event *it* saw,
            // which is None after an event without an id.
            let client = match build_client(&url, token.as_deref(), last_event_id.as_deref()) {
                Ok(c) => c,
                Err(reason) => {
                    if !down {
                        down = true;
                        yield SseItem::Down { reason };
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(max_pause);
                    continue;
                }
            };
            let mut stream = client.stream();
            let reason = loop {
                match stream.next().await {
                    Some(Ok(SSE::Connected(_))) => {
                        down = false;
                        pause = retry;
                        yield SseItem::Connected { resumed_from: last_event_id.clone() };
                    }
                    Some(Ok(SSE::Event(ev))) => {
                        if ev.id.is_some() {
                            last_event_id.clone_from(&ev.id);
                        }
                        yield SseItem::Event { id: ev.id, kind: ev.event_type, data: ev.data };
                    }
                    Some(Ok(SSE::Comment(_))) => {}
                    Some(Err(e)) => break describe(&e),
                    None => break "stream ended".to_string(),
                }
            };
            drop(stream);
            if !down {
                down = true;
                yield SseItem::Down { reason };
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(max_pause);
        }
    }
}

fn build_client(
    url: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
) -> Result<Box<dyn Client>, String> {
    let mut builder = ClientBuilder::for_url(url).map_err(|e| format!("bad URL {url}: {e}"))?;
    if let Some(t) = token {
        builder =
            builder.header("Authorization", &format!("Bearer {t}")).map_err(|e| format!("bad token: {e}"))?;
    }
    if let Some(id) = last_event_id {
        builder = builder.last_event_id(id.to_string());
    }
    let builder = builder
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .reconnect(ReconnectOptions::reconnect(false).retry_initial(false).build());
    if url.starts_with("http://") {
        // Plain HTTP needs no TLS roots: the TLS build reads the system's CA store on
        // every call and panics when it is empty (a minimal container).
        return Ok(Box::new(builder.build_http()));
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Box::new(builder.build()) as Box<dyn Client>))
        .map_err(|_| "TLS unavailable: no CA certificates found on this machine".to_string())
}

/// A short human reason for a failed or ended connection.
pub fn describe(e: &EsError) -> String {
    match e {
        EsError::UnexpectedResponse(r, _) => {
            let status = r.status();
            match status {
                401 | 403 => format!("token refused ({status})"),
                _ => format!("HTTP {status}"),
            }
        }
        EsError::TimedOut => "timed out".to_string(),
        EsError::Eof | EsError::StreamClosed => "stream closed by the server".to_string(),
        EsError::UnexpectedEof => "connection dropped mid-event".to_string(),
        EsError::HttpStream(inner) => error_reason(inner.as_ref()),
        other => other.to_string(),
    }
}

/// The last error in `e`'s chain of sources: what happened, under the layers that
/// repeat the URL.
pub fn innermost<'e>(mut e: &'e (dyn std::error::Error + 'static)) -> &'e (dyn std::error::Error + 'static) {
    while let Some(next) = e.source() {
        e = next;
    }
    e
}

/// The innermost cause of a network error, which names what happened ("connection
/// refused") rather than the layers it went through.
pub fn error_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let s = innermost(e).to_string();
    let lower = s.to_ascii_lowercase();
    if lower.contains("connection refused") {
        "connection refused".to_string()
    } else if lower.contains("connection reset") {
        "connection reset".to_string()
    } else if lower.contains("timed out") || lower.contains("deadline") {
        "timed out".to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::sse::{Event, Sse};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A server that numbers events 1..=10; the first connection is cut after event 3
    /// (and sends one id-less event, which must not reset the resume point), and every
    /// connection resumes after the Last-Event-ID it was sent.
    async fn flaky_server() -> (String, Arc<parking_lot::Mutex<Vec<Option<String>>>>) {
        let connections = Arc::new(AtomicUsize::new(0));
        let seen_ids: Arc<parking_lot::Mutex<Vec<Option<String>>>> = Arc::default();
        let seen = seen_ids.clone();
        let app = axum::Router::new().route(
            "/events",
            get(move |headers: axum::http::HeaderMap| {
                let n = connections.fetch_add(1, Ordering::SeqCst);
                let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
                seen.lock().push(last.clone());
                let from = last.as_deref().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                async move {
                    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sesame") {
                        return axum::http::StatusCode::UNAUTHORIZED.into_response();
                    }
                    let stream = async_stream::stream! {
                        for seq in from + 1..=10 {
                            if n == 0 && seq == 4 {
                                yield Ok::<_, Infallible>(Event::default().event("note").data("no id"));
                                return; // drop the first connection
                            }
                            yield Ok(Event::default().id(seq.to_string()).event("tick").data(format!("{seq}")));
                        }
                        std::future::pending::<()>().await;
                    };
                    Sse::new(stream).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/events"), seen_ids)
    }

    fn source(url: String, token: Option<String>, last_event_id: Option<String>, retry_ms: u64) -> SseSource {
        SseSource { url, token, last_event_id, retry: Duration::from_millis(retry_ms) }
    }

    #[tokio::test]
    async fn a_dropped_connection_resumes_after_the_last_event_without_skipping_or_repeating() {
        let (url, seen_ids) = flaky_server().await;
        let source = source(url, Some("sesame".into()), None, 50);
        let mut stream = Box::pin(follow(source));
        let mut items = Vec::new();
        let mut ticks = 0;
        while ticks < 10 {
            let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .unwrap_or_else(|_| panic!("stalled after {items:?}"))
                .expect("follow never ends");
            if matches!(&item, SseItem::Event { kind, .. } if kind == "tick") {
                ticks += 1;
            }
            items.push(item);
        }
        let ids: Vec<u64> = items
            .iter()
            .filter_map(|i| match i {
                SseItem::Event { id: Some(id), kind, .. } if kind == "tick" => id.parse().ok(),
                _ => None,
            })
            .collect();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>(), "items: {items:?}");
        assert!(matches!(items[0], SseItem::Connected { resumed_from: None }));
        let downs = items.iter().filter(|i| matches!(i, SseItem::Down { .. })).count();
        assert_eq!(downs, 1, "items: {items:?}");
        assert!(items.contains(&SseItem::Connected { resumed_from: Some("3".into()) }), "items: {items:?}");
        assert_eq!(seen_ids.lock().clone(), vec![None, Some("3".to_string())]);
    }

    #[tokio::test]
    async fn a_refused_token_is_reported_down_once_and_retried() {
        let (url, seen_ids) = flaky_server().await;
        let source = source(url, Some("wrong".into()), Some("5".into()), 20);
        let mut s = Box::pin(follow(source));
        let first = tokio::time::timeout(Duration::from_secs(5), s.next()).await.unwrap().unwrap();
        assert_eq!(first, SseItem::Down { reason: "token refused (401)".into() });
        // Retries continue quietly: no second Down while the outage lasts.
        let more = tokio::time::timeout(Duration::from_millis(300), s.next()).await;
        assert!(more.is_err(), "unexpected item {more:?}");
        let attempts = seen_ids.lock().clone();
        assert!(attempts.len() >= 2, "retried: {attempts:?}");
        assert!(attempts.iter().all(|a| a.as_deref() == Some("5")));
    }

    #[tokio::test]
    async fn a_dead_address_is_reported_as_connection_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let source = source(format!("http://{addr}/events"), None, None, 20);
        let mut s = Box::pin(follow(source));
        let first = tokio::time::timeout(Duration::from_secs(5), s.next()).await.unwrap().unwrap();
        assert_eq!(first, SseItem::Down { reason: "connection refused".into() });
    }
}
