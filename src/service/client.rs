//! The one REST client of Hydra's command lines, also under each service's calls to
//! the other: a base URL, an optional bearer token, connect and request timeouts, path
//! segments escaped by one function, and one error text for a failed call.

use crate::service::page::NEXT_AFTER;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use std::time::Duration;

/// How long a call may take to connect, and in all.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl Timeouts {
    /// For a person at a terminal: a server that takes no connection in 5 s is down,
    /// and 60 s covers the longest wait a command asks the server for (exec's 25 s
    /// long-poll) while a hung server still ends the command.
    pub const CLI: Timeouts = Timeouts { connect: Duration::from_secs(5), request: Duration::from_secs(60) };
}

/// No answer: the connection failed, timed out or broke, or the URL cannot be asked.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach {url}: {reason}")]
pub struct Unreachable {
    pub url: String,
    pub reason: String,
}

/// Why a call failed. Its text is the one the CLIs print: the status and the server's
/// message, or the URL that could not be reached and why.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    /// The server answered with an error status.
    #[error("{status}: {}", refusal_text(.error, .body))]
    Refused { url: String, status: StatusCode, error: Option<String>, body: String },
}

/// The server's `{"error": …}` message, else what it sent.
fn refusal_text<'a>(error: &'a Option<String>, body: &'a str) -> &'a str {
    error.as_deref().unwrap_or(body)
}

/// Why a paged list could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("expected a JSON array from {url}, got {got}")]
    NotAList { url: String, got: String },
    /// A server that names the same next page twice would keep the client asking forever.
    #[error("{url}: the server named the same next page twice ({next})")]
    SamePageTwice { url: String, next: String },
}

/// What the server answered, whatever its status.
#[derive(Debug)]
pub struct Answer {
    /// The URL asked, without its query: what error texts name.
    pub url: String,
    pub status: StatusCode,
    /// The next page's cursor, when the answer is one page of a list.
    pub next: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON: `null` when empty, a JSON string of the text when it is not JSON.
    pub fn value(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }

    /// The message of the server's `{"error": …}` answer, if it sent one.
    pub fn error_message(&self) -> Option<String> {
        let value: Value = serde_json::from_slice(&self.body).ok()?;
        value.get("error")?.as_str().map(str::to_owned)
    }

    /// The JSON answer of a successful call; a refusal otherwise.
    pub fn success(self) -> Result<Value, CallError> {
        let value = self.value();
        if self.status.is_success() {
            return Ok(value);
        }
        let body = match value {
            Value::String(text) => text,
            other => other.to_string(),
        };
        Err(CallError::Refused { error: self.error_message(), url: self.url, status: self.status, body })
    }
}

/// One server's REST API. Cloning shares the connections.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    request_timeout: Duration,
}

/// Shows where the client goes, never its token.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("token", &self.token.is_some()).finish()
    }
}

impl Client {
    /// A client of the server at `base` (a trailing `/` is dropped), sending `token`
    /// as a bearer token when there is one.
    pub fn new(base: &str, token: Option<String>, timeouts: Timeouts) -> Client {
        let http = reqwest::Client::builder().connect_timeout(timeouts.connect).build().unwrap_or_default();
        Client::reusing(&http, base, token, timeouts.request)
    }

    /// A client over an existing connection pool (whose connect timeout stays), so
    /// that calls to a base given per call still reuse connections.
    pub fn reusing(http: &reqwest::Client, base: &str, token: Option<String>, request: Duration) -> Client {
        Client {
            http: http.clone(),
            base: base.trim_end_matches('/').to_owned(),
            token,
            request_timeout: request,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The URL of `path` (which may carry a query). Refused when parsing would change
    /// the path (a `..` segment is dropped with its parent): the request would go to
    /// another resource than the one named.
    pub fn url(&self, path: &str) -> Result<Url, Unreachable> {
        let url = format!("{}{path}", self.base);
        let unreachable = |reason: String| Unreachable { url: url.clone(), reason };
        let parsed = Url::parse(&url).map_err(|e| unreachable(e.to_string()))?;
        let wanted = path.split(['?', '#']).next().unwrap_or_default();
        if !parsed.path().ends_with(wanted) {
            return Err(unreachable(format!("the path would become {}", parsed.path())));
        }
        Ok(parsed)
    }

    /// One call: the answer whatever its status, or why there was none. `query` is
    /// added to any query `path` has.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, Unreachable> {
        self.request(method, path, query, |req| match body {
            Some(b) => req.json(b),
            None => req,
        })
        .await
    }

    /// `call` with a body sent as it is (a file), of `content_type`, instead of JSON.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Answer, Unreachable> {
        self.request(method, path, query, |req| {
            req.header(reqwest::header::CONTENT_TYPE, content_type).body(body)
        })
        .await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Answer, Unreachable> {
        let url = self.url(path)?;
        let shown = format!("{}{}", self.base, path.split('?').next().unwrap_or_default());
        let unreachable = |e: reqwest::Error| Unreachable { url: shown.clone(), reason: describe(&e) };
        let mut req = self.http.request(method, url).timeout(self.request_timeout);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = body(req).send().await.map_err(unreachable)?;
        let status = resp.status();
        let next = resp.headers().get(NEXT_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = resp.bytes().await.map_err(unreachable)?.to_vec();
        Ok(Answer { url: shown, status, next, body })
    }

    /// A GET whose body the caller reads as it comes (a backup of any size): the
    /// response once its status is a success, else the refusal, read whole. The
    /// request timeout bounds the wait for the answer's head; the caller bounds each
    /// read of the body with `request_timeout`, so a stalled server still ends the call.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, CallError> {
        let url = self.url(path)?;
        let shown = format!("{}{}", self.base, path.split('?').next().unwrap_or_default());
        let unreachable = |reason: String| Unreachable { url: shown.clone(), reason };
        let mut req = self.http.get(url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match tokio::time::timeout(self.request_timeout, req.send()).await {
            Ok(sent) => sent.map_err(|e| unreachable(describe(&e)))?,
            Err(_) => return Err(unreachable("timed out".into()).into()),
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| unreachable(describe(&e)))?.to_vec();
        Err(Answer { url: shown, status, next: None, body }.success().expect_err("not a success"))
    }

    /// How long one call, or one read of a streamed body, may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The JSON answer of a call, or why it failed.
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, CallError> {
        self.call(method, path, &[], body.as_ref()).await?.success()
    }

    /// Every entry of a paged list (`GET /api/v1/nodes`, `/heads`): asks again with
    /// `after=` for as long as the answer names a next page.
    pub async fn list(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<Value>, ListError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut pairs = query.to_vec();
            if let Some(a) = &after {
                pairs.push(("after", a));
            }
            let answer = self.call(Method::GET, path, &pairs, None).await.map_err(CallError::from)?;
            let (url, next) = (answer.url.clone(), answer.next.clone());
            match answer.success()? {
                Value::Array(items) => all.extend(items),
                other => return Err(ListError::NotAList { url, got: other.to_string() }),
            }
            match next {
                Some(n) if after.as_ref() == Some(&n) => {
                    return Err(ListError::SamePageTwice { url, next: n })
                }
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
    }
}

/// A path segment from outside (an id typed by an operator): escaped so that it stays
/// one segment, whatever `/`, `?`, `#` or `%` it holds.
pub fn seg(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `?k=v&…` of the pairs that have a value, or nothing.
pub fn query(pairs: &[(&str, &Option<String>)]) -> String {
    let pairs: Vec<(&str, &str)> = pairs.iter().filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))).collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
    }
}

/// What went wrong with a request, in a few words: `timed out`, or the innermost
/// cause (`Connection refused`, no such host, …).
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    super::sse_client::innermost(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Path;
    use axum::http::StatusCode as Code;
    use axum::routing::get;
    use axum::Json;
    use serde_json::json;
    use std::collections::HashMap;

    /// A server on a free local port: `/api/v1/echo/{id}` answers the id it got,
    /// `/api/v1/missing` a 404 with the usual `{"error": …}`, `/api/v1/plain` a 500
    /// with a text body. Also counts the requests it saw.
    async fn server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let seen = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = axum::Router::new()
            .route("/api/v1/echo/{id}", get(|Path(id): Path<String>| async move { Json(json!({"id": id})) }))
            .route(
                "/api/v1/missing",
                get(|| async { (Code::NOT_FOUND, Json(json!({"error": "no such node: node-x"}))) }),
            )
            .route("/api/v1/plain", get(|| async { (Code::INTERNAL_SERVER_ERROR, "it broke") }))
            .route("/api/v1/pages", get(pages))
            .fallback(|| async { (Code::IM_A_TEAPOT, "fallback") })
            .layer(axum::middleware::from_fn(move |req, next: axum::middleware::Next| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move { next.run(req).await }
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/"), seen)
    }

    /// Three pages (`after` absent, `a`, `b`), or with `?stuck=1`, always the first.
    async fn pages(
        axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let after = if q.contains_key("stuck") { None } else { q.get("after").map(String::as_str) };
        let (items, next) = match after {
            None => (json!([1]), Some("a")),
            Some("a") => (json!([2, 3]), Some("b")),
            _ => (json!([4]), None),
        };
        let mut resp = Json(items).into_response();
        if let Some(n) = next {
            resp.headers_mut().insert(NEXT_AFTER, n.parse().unwrap());
        }
        resp
    }

    #[tokio::test]
    async fn a_list_follows_every_page_and_stops_on_a_loop() {
        let (base, _) = server().await;
        let c = Client::new(&base, None, Timeouts::CLI);
        let all = c.list("/api/v1/pages", &[("x", "1")]).await.unwrap();
        assert_eq!(all, [json!(1), json!(2), json!(3), json!(4)]);
        let err = c.list("/api/v1/pages?stuck=1", &[]).await.unwrap_err();
        assert!(matches!(err, ListError::SamePageTwice { .. }), "{err}");
        assert!(
            err.to_string().ends_with("/api/v1/pages: the server named the same next page twice (a)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_hostile_id_stays_one_segment() {
        let (base, _) = server().await;
        let c = Client::new(&base, None, Timeouts::CLI);
        let hostile = "../x?y#z %/";
        let v = c.send(Method::GET, &format!("/api/v1/echo/{}", seg(hostile)), None).await.unwrap();
        assert_eq!(v, json!({"id": hostile}));
    }

    #[tokio::test]
    async fn a_dot_segment_is_refused_before_anything_is_sent() {
        let (base, seen) = server().await;
        let c = Client::new(&base, None, Timeouts::CLI);
        for id in ["..", "."] {
            let err = c.send(Method::DELETE, &format!("/api/v1/echo/{}/x", seg(id)), None).await.unwrap_err();
            assert!(matches!(err, CallError::Unreachable(_)), "{err}");
            assert!(err.to_string().contains("the path would become"), "{err}");
        }
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached the server");
    }

    #[tokio::test]
    async fn a_refusal_reads_status_and_the_servers_message() {
        let (base, _) = server().await;
        let c = Client::new(&base, Some("t".into()), Timeouts::CLI);
        let err = c.send(Method::GET, "/api/v1/missing", None).await.unwrap_err();
        assert_eq!(err.to_string(), "404 Not Found: no such node: node-x");
        // Without an `{"error": …}`, what the server sent.
        let err = c.send(Method::GET, "/api/v1/plain", None).await.unwrap_err();
        assert_eq!(err.to_string(), "500 Internal Server Error: it broke");
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_url() {
        // A port that was free a moment ago: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = Client::new(&format!("http://127.0.0.1:{port}"), None, Timeouts::CLI);
        let err = c.send(Method::GET, "/api/v1/nodes?status=pending", None).await.unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(&format!("cannot reach http://127.0.0.1:{port}/api/v1/nodes: ")), "{text}");
        assert!(text.to_ascii_lowercase().contains("refused"), "{text}");
    }

    #[test]
    fn query_keeps_the_pairs_that_have_a_value() {
        assert_eq!(query(&[("a", &None)]), "");
        assert_eq!(
            query(&[("a", &Some("x y&z".into())), ("b", &None), ("c", &Some("1".into()))]),
            "?a=x+y%26z&c=1"
        );
    }
}
