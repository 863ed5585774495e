//! The request id: every request gets one (the caller's `x-request-id` when it is a
//! sane token, a new one otherwise), sees it in the answer's `x-request-id`, and
//! carries it in a `request` span, so every log line of the request names it, and in
//! the `cause` of every event it brings about.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a caller; longer ones are replaced.
pub const MAX_LEN: usize = 64;

/// Wraps every request of a service: the id, the span, and one debug line at the end.
pub async fn layer(req: Request, next: Next) -> Response {
    let id = req.headers().get(&HEADER).and_then(|v| v.to_str().ok()).filter(|v| usable(v));
    let id = id.map_or_else(hydra_core::auth::random_hex, str::to_owned);
    // The path, never the query: a query may carry what is not for the log.
    let span =
        tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let started = std::time::Instant::now();
    let mut response =
        hydra_core::ledger::with_request_id(id.clone(), next.run(req)).instrument(span.clone()).await;
    span.in_scope(|| {
        let status = response.status().as_u16();
        tracing::debug!(status, elapsed_ms = started.elapsed().as_millis() as u64, "answered");
    });
    // `usable` let through only visible ASCII, which is always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// Whether a caller's request id may be kept: 1 to 64 letters, digits and `-_.:`, so
/// it can neither break a log line nor stretch an event.
fn usable(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_short_plain_ids_are_kept() {
        for ok in ["abc", "3f2a-11ee-b962", "req_1.2:3", &"a".repeat(64)] {
            assert!(super::usable(ok), "{ok}");
        }
        for bad in ["", "a b", "a\nb", "ä", "x\"y", &"a".repeat(65)] {
            assert!(!super::usable(bad), "{bad:?}");
        }
    }
}
