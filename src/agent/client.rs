//! The agent's side of the HTTP protocol with hydracluster: enrollment, heartbeat, the
//! exec endpoints and the shell's check and WebSocket, with errors sorted into what the
//! loops act on (retry, move on, or stop because the token was revoked).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

pub const USER_AGENT: &str = concat!("hydranode/", env!("CARGO_PKG_VERSION"));

/// Time for an ordinary request; long polls get their wait on top of it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A result carries up to 2 MiB of output: give it longer.
const RESULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A node token. Its `Debug` shows nothing, so it cannot reach a log by accident.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(token: String) -> Token {
        Token(token)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: refused, reset, timed out. Worth retrying.
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error status and (usually) `{"error": "..."}`.
    #[error("the server answered {status}: {message}")]
    Status { status: u16, message: String },
    /// A success status with a body this agent does not understand.
    #[error("the server's answer is not what this agent expects: {0}")]
    BadAnswer(String),
}

impl CallError {
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server no longer accepts this node: removed (401: the token is unknown) or
    /// rejected by an admin (403 that says so).
    pub fn revoked(&self) -> bool {
        match self {
            CallError::Status { status: 401, .. } => true,
            CallError::Status { status: 403, message } => message.to_lowercase().contains("rejected"),
            _ => false,
        }
    }

    /// Worth retrying as is: no answer, an overloaded or restarting server.
    pub fn transient(&self) -> bool {
        match self {
            CallError::Unreachable { .. } | CallError::BadAnswer(_) => true,
            CallError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
        }
    }
}

/// Says why a request got no answer, from the innermost causes (reqwest's own message
/// only repeats the URL).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time".into();
    }
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = s.source();
    }
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}

/// Checks a server URL (http or https, with rustls and the webpki roots) and drops a
/// trailing slash, so a typo fails at once with a clear message instead of at every
/// request.
pub fn base_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    if rest.is_none_or(str::is_empty) {
        anyhow::bail!("{url:?} is not a server URL: expected http://HOST[:PORT] or https://HOST");
    }
    Ok(url.to_owned())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("the HTTP client's configuration is static and valid")
}

/// A client without the node token, for artifact servers.
pub(crate) fn plain_http() -> reqwest::Client {
    http()
}

/// Sends, and turns every non-2xx answer into `CallError::Status` with the server's
/// message.
async fn send(req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response, CallError> {
    let resp =
        req.send().await.map_err(|e| CallError::Unreachable { url: url.to_owned(), reason: describe(&e) })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| {
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("no message").to_owned()
            } else {
                text.chars().take(200).collect()
            }
        });
    Err(CallError::Status { status: status.as_u16(), message })
}

async fn json_body<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, CallError> {
    let bytes = resp.bytes().await.map_err(|e| CallError::BadAnswer(describe(&e)))?;
    serde_json::from_slice(&bytes).map_err(|e| CallError::BadAnswer(e.to_string()))
}

/// The answer to `POST /enroll`.
#[derive(Debug, Deserialize)]
pub struct Enrolled {
    pub node_id: String,
    pub token: String,
    #[serde(default)]
    pub server_url: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

pub async fn enroll(base: &str, name: &str, ip: Option<&str>) -> Result<Enrolled, CallError> {
    let url = format!("{base}/enroll");
    let mut body = serde_json::json!({ "name": name });
    if let Some(ip) = ip {
        body["ip"] = Value::from(ip);
    }
    let resp = send(http().post(&url).timeout(REQUEST_TIMEOUT).json(&body), &url).await?;
    json_body(resp).await
}

/// `GET /api/v1/body/rekey?node_id=…`: the id of the token re-issue waiting for this
/// node (404 when there is none). No token: the node's own was revoked.
pub async fn rekey_pending(base: &str, node_id: &str) -> Result<String, CallError> {
    #[derive(Deserialize)]
    struct Pending {
        rekey_id: String,
    }
    let url = format!("{base}/api/v1/body/rekey");
    let resp = send(http().get(&url).query(&[("node_id", node_id)]).timeout(REQUEST_TIMEOUT), &url).await?;
    json_body::<Pending>(resp).await.map(|p| p.rekey_id)
}

/// `POST /api/v1/body/rekey`: the signed claim; the answer holds the new token.
pub async fn rekey_claim(
    base: &str,
    node_id: &str,
    rekey_id: &str,
    signature: &str,
) -> Result<Token, CallError> {
    #[derive(Deserialize)]
    struct Claimed {
        token: String,
    }
    let url = format!("{base}/api/v1/body/rekey");
    let body = serde_json::json!({ "node_id": node_id, "rekey_id": rekey_id, "signature": signature });
    let resp = send(http().post(&url).timeout(REQUEST_TIMEOUT).json(&body), &url).await?;
    json_body::<Claimed>(resp).await.map(|c| Token::new(c.token))
}

/// The answer to `POST /api/v1/heads` (a kiosk's fleet enrollment).
#[derive(Debug, Deserialize)]
pub struct EnrolledHead {
    pub head_id: String,
    pub token: String,
    #[serde(default)]
    pub server_url: Option<String>,
}

/// `POST /api/v1/heads` with the fleet enrollment token: a head is approved at once.
pub async fn enroll_head(
    base: &str,
    fleet_token: &str,
    name: &str,
    district: &str,
    venue: &str,
) -> Result<EnrolledHead, CallError> {
    let url = format!("{base}/api/v1/heads");
    let body = serde_json::json!({ "name": name, "district": district, "venue": venue });
    let req = http().post(&url).bearer_auth(fleet_token).timeout(REQUEST_TIMEOUT).json(&body);
    let resp = send(req, &url).await?;
    json_body(resp).await
}

/// A command handed to this node by `GET /api/v1/body/exec`.
#[derive(Debug, Clone, Deserialize)]
pub struct ExecCommand {
    pub id: String,
    pub command: String,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// What `POST /api/v1/body/exec/result` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    pub id: String,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    pub truncated: bool,
    pub timed_out: bool,
}

/// The node's view of one server: its URL and the node token.
#[derive(Debug, Clone)]
pub struct Server {
    http: reqwest::Client,
    base: String,
    token: Token,
}

impl Server {
    pub fn new(base: String, token: Token) -> Server {
        Server { http: http(), base, token }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn get(&self, url: &str, timeout: Duration) -> reqwest::RequestBuilder {
        self.http.get(url).bearer_auth(self.token.expose()).timeout(timeout)
    }

    fn post(&self, url: &str, timeout: Duration) -> reqwest::RequestBuilder {
        self.http.post(url).bearer_auth(self.token.expose()).timeout(timeout)
    }

    /// `POST /api/v1/body/heartbeat`; the answer is the node's desired state.
    pub async fn heartbeat(&self, body: &Value) -> Result<Value, CallError> {
        let url = format!("{}/api/v1/body/heartbeat", self.base);
        let resp = send(self.post(&url, REQUEST_TIMEOUT).json(body), &url).await?;
        json_body(resp).await
    }

    /// `PUT /api/v1/heads/{id}`: a head's own status report.
    pub async fn report_head(&self, id: &str, body: &Value) -> Result<(), CallError> {
        let url = format!("{}/api/v1/heads/{id}", self.base);
        let req = self.http.put(&url).bearer_auth(self.token.expose()).timeout(REQUEST_TIMEOUT).json(body);
        send(req, &url).await.map(drop)
    }

    /// `GET /api/v1/body/exec?wait=N`: the next command, or None (204).
    pub async fn next_command(&self, wait_s: u64) -> Result<Option<ExecCommand>, CallError> {
        let url = format!("{}/api/v1/body/exec?wait={wait_s}", self.base);
        let timeout = REQUEST_TIMEOUT + Duration::from_secs(wait_s);
        let resp = send(self.get(&url, timeout), &url).await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        json_body(resp).await.map(Some)
    }

    /// `GET /api/v1/body/exec/{id}/watch?wait=N`: the command's status on the server
    /// ("dispatched" while it still expects a result).
    pub async fn watch(&self, id: &str, wait_s: u64) -> Result<String, CallError> {
        #[derive(Deserialize)]
        struct Watch {
            status: String,
        }
        let url = format!("{}/api/v1/body/exec/{id}/watch?wait={wait_s}", self.base);
        let timeout = REQUEST_TIMEOUT + Duration::from_secs(wait_s);
        let resp = send(self.get(&url, timeout), &url).await?;
        json_body::<Watch>(resp).await.map(|w| w.status)
    }

    /// `POST /api/v1/body/exec/result`.
    pub async fn post_result(&self, result: &ExecResult) -> Result<(), CallError> {
        let url = format!("{}/api/v1/body/exec/result", self.base);
        send(self.post(&url, RESULT_TIMEOUT).json(result), &url).await.map(drop)
    }

    /// `PUT /api/v1/body/rekey-key`: registers the key that claims re-issued tokens.
    pub async fn register_rekey_key(&self, public_key: &str) -> Result<(), CallError> {
        let url = format!("{}/api/v1/body/rekey-key", self.base);
        let body = serde_json::json!({ "public_key": public_key });
        let req = self.http.put(&url).bearer_auth(self.token.expose()).timeout(REQUEST_TIMEOUT).json(&body);
        send(req, &url).await.map(drop)
    }

    /// `POST /api/v1/body/provision-result`.
    pub async fn provision_result(&self, body: &Value) -> Result<(), CallError> {
        let url = format!("{}/api/v1/body/provision-result", self.base);
        send(self.post(&url, REQUEST_TIMEOUT).json(body), &url).await.map(drop)
    }

    /// `GET /api/v1/body/shell/check?wait=N`: a shell session waiting for this node,
    /// or None (204).
    pub async fn shell_check(&self, wait_s: u64) -> Result<Option<ShellOffer>, CallError> {
        let url = format!("{}/api/v1/body/shell/check?wait={wait_s}", self.base);
        let timeout = REQUEST_TIMEOUT + Duration::from_secs(wait_s);
        let resp = send(self.get(&url, timeout), &url).await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        json_body(resp).await.map(Some)
    }

    /// Attaches to a shell session: `GET /api/v1/body/shell/{session}` as a
    /// WebSocket (ws:// or wss:// after the server URL).
    pub async fn shell_socket(&self, session: &str) -> Result<ShellSocket, CallError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION, USER_AGENT as UA};
        let url = ws_url(&format!("{}/api/v1/body/shell/{session}", self.base));
        let unreachable = |reason: String| CallError::Unreachable { url: url.clone(), reason };
        let mut req = url.as_str().into_client_request().map_err(|e| unreachable(e.to_string()))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", self.token.expose()))
            .map_err(|_| unreachable("the node token cannot go in a header".into()))?;
        req.headers_mut().insert(AUTHORIZATION, bearer);
        req.headers_mut().insert(UA, HeaderValue::from_static(USER_AGENT));
        let connected = tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .map_err(|_| unreachable("no answer in time".into()))?;
        match connected {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status();
                let message = resp
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                    .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_owned());
                Err(CallError::Status { status: status.as_u16(), message })
            }
            Err(e) => Err(unreachable(e.to_string())),
        }
    }
}

/// A shell session offered by `GET /api/v1/body/shell/check`.
#[derive(Debug, Clone, Deserialize)]
pub struct ShellOffer {
    pub session: String,
    /// None: an interactive login shell.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default = "default_cols")]
    pub cols: u16,
    #[serde(default = "default_rows")]
    pub rows: u16,
}

fn default_cols() -> u16 {
    80
}

fn default_rows() -> u16 {
    24
}

/// The agent's end of a shell session.
pub type ShellSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The WebSocket URL for an http(s) one.
pub fn ws_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked_and_trimmed() {
        assert_eq!(base_url("http://10.0.0.1:8080/").unwrap(), "http://10.0.0.1:8080");
        assert_eq!(base_url("https://hydra.example.net").unwrap(), "https://hydra.example.net");
        assert!(base_url("10.0.0.1:8080").is_err());
        assert!(base_url("http://").is_err());
    }

    #[test]
    fn websocket_urls_follow_the_server_url() {
        assert_eq!(
            ws_url("http://10.0.0.1:8080/api/v1/body/shell/x"),
            "ws://10.0.0.1:8080/api/v1/body/shell/x"
        );
        assert_eq!(ws_url("https://hydra.example.net/a"), "wss://hydra.example.net/a");
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let t = Token::new("hyn_secret".into());
        assert!(!format!("{t:?}").contains("secret"));
        let s = Server::new("http://x".into(), t);
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn revoked_means_401_or_a_rejection() {
        let e = |status, m: &str| CallError::Status { status, message: m.into() };
        assert!(e(401, "missing or invalid token").revoked());
        assert!(e(403, "this node was rejected by an admin; enroll again").revoked());
        assert!(!e(403, "this token may not act as a node").revoked());
        assert!(!e(500, "internal error").revoked());
        assert!(e(503, "").transient() && e(429, "").transient());
        assert!(!e(409, "").transient() && !e(404, "").transient());
    }
}
