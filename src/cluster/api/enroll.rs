//! Public enrollment: `GET /enroll` (an HTML form, pre-filled from `?name=`/`?ip=`,
//! with recovery instructions) and `POST /enroll` (form or JSON), rate limited per
//! remote address and capped by the number of pending nodes. The node token is shown
//! once and stored only as a hash.

use super::{ApiError, AppState};
use crate::cluster::console::escape;
use crate::cluster::nodes;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use hydra_core::auth::{hash_token, new_token, random_hex};
use hydra_events::NodeId;
use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// A token bucket per remote address: `per_minute` enrollments, refilled evenly.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `addr`; false when the bucket is empty. 0 means unlimited.
    pub fn allow(&self, addr: IpAddr, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let capacity = self.per_minute as f64;
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Forget full buckets so that a spray of addresses cannot grow this forever.
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs() < 60);
        }
        let (tokens, at) = buckets.entry(addr).or_insert((capacity, now));
        let refill = now.duration_since(*at).as_secs_f64() * capacity / 60.0;
        *tokens = (*tokens + refill).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The remote address of the connection, when the server recorded it.
pub struct RemoteAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for RemoteAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RemoteAddr(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct Prefill {
    name: Option<String>,
    ip: Option<String>,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em}\
label{display:block;margin:.8em 0 .2em}input{width:100%;padding:.4em}button{margin-top:1em;padding:.5em 1.5em}\
code,pre{background:#f3f3f3;padding:.1em .3em}";

pub async fn page(
    State(state): State<AppState>,
    query: Result<Query<Prefill>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Html<String> {
    let kiosk_qr = kiosk_qr_section(&state, &headers);
    let p = query.map(|q| q.0).unwrap_or_default();
    let name = escape(p.name.as_deref().unwrap_or(""));
    let ip = escape(p.ip.as_deref().unwrap_or(""));
    let server = escape(&state.config.server_url);
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Enroll a machine · Hydra</title>\
<style>{STYLE}</style></head><body>\
<h1>Enroll a machine</h1>\
<p>Submit this form from the machine (or for it). It joins the fleet as <b>pending</b> \
until an admin approves it and gives it roles.</p>\
<form method=post action=/enroll>\
<label for=name>Machine name</label><input id=name name=name value=\"{name}\" required maxlength=64 \
pattern=\"[A-Za-z0-9._-]+\">\
<label for=ip>IP address (leave empty to use the address this request comes from)</label>\
<input id=ip name=ip value=\"{ip}\">\
<button type=submit>Enroll</button></form>\
<h2>If an agent stopped</h2><ol>\
<li>On the machine, check the agent: <code>hydranode run --state ~/.hydranode</code> \
(or the service that runs it) and read its last lines.</li>\
<li>If it says its token is invalid, the node was removed or rejected: enroll again here \
(<code>hydranode enroll --server {server} --name NAME</code>) and ask an admin to approve the new node.</li>\
<li>If it cannot reach <code>{server}</code>, check the network and the server's \
<a href=/api/v1/health>health</a>.</li></ol>{kiosk_qr}</body></html>"
    ))
}

/// Whether the request comes from an admin: an admin token in `Authorization: Bearer`,
/// or an admin's console session. Anything else (no token, a wrong one, an observer's)
/// is simply not an admin: the page stays public.
fn is_admin(state: &AppState, headers: &HeaderMap) -> bool {
    let admin = |p: &hydra_core::auth::Principal| matches!(p, hydra_core::auth::Principal::Admin { .. });
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let by_token =
        bearer.and_then(|t| state.tokens.resolve(state.ledger.store(), t)).is_some_and(|p| admin(&p));
    by_token
        || state
            .browsers
            .of(headers, &state.tokens, state.ledger.store())
            .is_some_and(|(_, s)| admin(&s.principal))
}

/// The fleet-enrollment QR code for kiosks, only for an admin: it carries the fleet
/// token, which enrolls any device.
fn kiosk_qr_section(state: &AppState, headers: &HeaderMap) -> String {
    let Some(token) = state.config.fleet_enrollment_token.as_deref().filter(|t| !t.is_empty()) else {
        return String::new();
    };
    if !is_admin(state, headers) {
        return "<h2>Kiosks</h2><p>Admins: <a href=\"/login?next=/enroll\">sign in to the console</a> (or \
send the admin token as <code>Authorization: Bearer</code>) to see the kiosk enrollment QR code.</p>"
            .into();
    }
    let payload = serde_json::json!({ "server_url": state.config.server_url, "enrollment_token": token });
    let svg = match qrcode::QrCode::new(payload.to_string()) {
        Ok(code) => code.render::<qrcode::render::svg::Color>().min_dimensions(240, 240).build(),
        Err(e) => {
            tracing::error!(error = %e, "cannot draw the enrollment QR code");
            return "<h2>Kiosks</h2><p>The enrollment QR code cannot be drawn; see the server log.</p>"
                .into();
        }
    };
    // Inline SVG goes without its XML declaration.
    let svg = svg.find("<svg").map_or(svg.as_str(), |at| &svg[at..]);
    format!(
        "<h2>Kiosks</h2><p>Scan with a kiosk to enroll it (this code holds the fleet \
enrollment token: do not share it).</p>{svg}"
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    name: String,
    #[serde(default)]
    ip: Option<String>,
}

pub async fn submit(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(addr) = remote {
        if !state.enroll_limiter.allow(addr, Instant::now()) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many enrollments from this address; wait a minute and retry",
            ));
        }
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let is_json = content_type.starts_with("application/json");
    let form: EnrollBody = if is_json {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        serde_urlencoded::from_bytes(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid form: {e}")))?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json or application/x-www-form-urlencoded",
        ));
    };
    // Checked before the queue, so that a bad name is told as such whatever the queue.
    let name = nodes::machine_name(form.name.trim())?;
    let ip = match form.ip.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(ip) => ip.parse::<IpAddr>().map_err(|_| {
            ApiError::bad_request(format!("invalid ip {ip:?}: expected an IPv4 or IPv6 address"))
        })?,
        None => {
            remote.ok_or_else(|| ApiError::bad_request("no ip given and the remote address is unknown"))?
        }
    };
    // The global cap, decided on the committed views first so that a full queue
    // costs a refused enrollment no write (the writer decides again).
    let max_pending = state.config.max_pending_nodes;
    state.ledger.read(|v| nodes::pending_room(v, max_pending))?;
    let id = NodeId::from_random_hex(&random_hex());
    let token = new_token("hyn_");
    let cause = format!("enroll:{ip}");
    state
        .ledger
        .submit(
            cause,
            nodes::enroll(id.clone(), name.clone(), ip.to_string(), hash_token(&token), max_pending),
        )
        .await?;
    let server_url = state.config.server_url.clone();
    if is_json {
        let body = serde_json::json!({
            "node_id": id, "token": token, "server_url": server_url, "status": "pending",
        });
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    }
    let html = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Enrolled · Hydra</title>\
<style>{STYLE}</style></head><body><h1>Enrolled: {name}</h1>\
<p>Node id: <code>{id}</code> — status <b>pending</b> until an admin approves it.</p>\
<p>Node token (shown <b>once</b>; store it on the machine, e.g. in \
<code>~/.hydranode/token</code> with mode 0600):</p><pre>{token}</pre>\
<p>Server: <code>{server}</code></p></body></html>",
        name = escape(&name),
        server = escape(&server_url),
    );
    Ok((StatusCode::CREATED, Html(html)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_empties_and_refills_per_address() {
        let limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.allow(a, t0));
        assert!(limiter.allow(a, t0));
        assert!(!limiter.allow(a, t0));
        assert!(limiter.allow(b, t0));
        assert!(limiter.allow(a, t0 + Duration::from_secs(30)));
    }

    #[test]
    fn prefilled_values_are_escaped() {
        assert_eq!(escape("<script>\"x\""), "&lt;script&gt;&quot;x&quot;");
    }
}
