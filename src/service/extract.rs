//! Request extractors: who is calling (admin, reader, node) and JSON bodies with
//! clear errors. Each looks up what it needs synchronously and holds nothing when it
//! returns, so no lock ever spans the handler that follows. Failed token checks are
//! counted per remote address here too (`AuthThrottle`), so every extractor that
//! checks a token is throttled the same way.

use super::{browser, ApiError, ServiceState};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use hydra_core::auth::Principal;
use hydra_core::envelope::Audience;
use hydra_events::NodeId;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

fn unauthorized() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid token")
}

/// How many addresses the throttle remembers at most: a spray from more addresses
/// than this forgets the oldest windows first instead of growing memory.
pub const AUTH_THROTTLE_MAX_ADDRESSES: usize = 10_000;

/// Failed authentications per remote address: `burst` failures within `window`, then
/// every request from that address that needs a token answers 429 until the window
/// ends (a correct token too, or a guesser could tell a hit from the status).
/// Addresses are independent: one address's failures never block another.
pub struct AuthThrottle {
    burst: u32,
    window: Duration,
    addresses: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    /// When the first failure of the current window happened.
    start: Instant,
    count: u32,
}

impl AuthThrottle {
    /// `burst` 0 turns throttling off.
    pub fn new(burst: u32, window: Duration) -> Self {
        AuthThrottle { burst, window, addresses: Mutex::new(HashMap::new()) }
    }

    /// Err(how long to wait) while `ip` has used up its failures in the current window.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.burst == 0 {
            return Ok(());
        }
        match self.addresses.lock().get(&ip) {
            Some(f) if f.count >= self.burst => {
                let elapsed = now.saturating_duration_since(f.start);
                if elapsed < self.window {
                    Err(self.window - elapsed)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Records a failure. Returns the count when this failure used up the burst, so
    /// the caller logs once per burst (outside the lock).
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Option<u32> {
        if self.burst == 0 {
            return None;
        }
        let mut addresses = self.addresses.lock();
        if !addresses.contains_key(&ip) && addresses.len() >= AUTH_THROTTLE_MAX_ADDRESSES {
            let window = self.window;
            addresses.retain(|_, f| now.saturating_duration_since(f.start) < window);
            if addresses.len() >= AUTH_THROTTLE_MAX_ADDRESSES {
                // Forget the oldest tenth at once, so a sustained spray costs one pass
                // per thousand new addresses rather than one per address.
                let mut starts: Vec<Instant> = addresses.values().map(|f| f.start).collect();
                let cutoff = *starts.select_nth_unstable(AUTH_THROTTLE_MAX_ADDRESSES / 10).1;
                addresses.retain(|_, f| f.start > cutoff);
            }
        }
        let f = addresses.entry(ip).or_insert(Failures { start: now, count: 0 });
        if now.saturating_duration_since(f.start) >= self.window {
            *f = Failures { start: now, count: 0 };
        }
        f.count = f.count.saturating_add(1);
        (f.count == self.burst).then_some(f.count)
    }

    /// How many addresses are remembered now.
    pub fn len(&self) -> usize {
        self.addresses.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn remote_ip(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// A 401 for a token that did not resolve, counted against the caller's address; the
/// failure that uses up the burst is logged once, with the address and the count and
/// never the token.
pub(crate) fn failed_auth<S: ServiceState>(parts: &Parts, state: &S) -> ApiError {
    if let Some(ip) = remote_ip(parts) {
        let throttle = state.auth_throttle();
        if let Some(count) = throttle.failed(ip, Instant::now()) {
            tracing::warn!(
                remote = %ip,
                failures = count,
                window_s = throttle.window.as_secs(),
                "failed authentications from one address; refusing its requests until the window ends"
            );
        }
    }
    unauthorized()
}

pub(crate) fn forbidden(what: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, format!("this token may not {what}"))
}

/// A 429 while the caller's address is throttled for failing too often.
pub(crate) fn throttled<S: ServiceState>(parts: &Parts, state: &S) -> Result<(), ApiError> {
    if let Some(ip) = remote_ip(parts) {
        if let Err(wait) = state.auth_throttle().check(ip, Instant::now()) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ApiError::too_many_requests(
                format!("too many failed authentications from this address; retry in {secs} s"),
                secs.max(1),
            ));
        }
    }
    Ok(())
}

/// The principal behind the `Authorization: Bearer` header or, without one, behind the
/// console's session cookie (401 when there is neither or it is unknown; 429 while the
/// caller's address is throttled for failing too often; 403 for a session's changing
/// request without its CSRF token).
pub(crate) fn principal<S: ServiceState>(parts: &Parts, state: &S) -> Result<Principal, ApiError> {
    throttled(parts, state)?;
    let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return signed_in(parts, state);
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(unauthorized)?;
    state.tokens().resolve(state.store(), token).ok_or_else(|| failed_auth(parts, state))
}

/// The principal of the console session the request's cookie names. A request that
/// changes something must carry the session's CSRF token: a page of this server has
/// it, a page of another site does not.
fn signed_in<S: ServiceState>(parts: &Parts, state: &S) -> Result<Principal, ApiError> {
    // No token and no session guesses nothing: a plain 401, not counted.
    let (Some(sessions), Some(id)) =
        (state.browser_sessions(), browser::cookie(&parts.headers, browser::SESSION_COOKIE))
    else {
        return Err(unauthorized());
    };
    let Some(session) = sessions.get(id, state.tokens(), state.store()) else {
        failed_auth(parts, state);
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "the console session has ended: sign in again"));
    };
    let carried = parts.headers.get(browser::CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !parts.method.is_safe() && !browser::csrf_matches(&session, carried) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("missing or wrong CSRF token (a console page sends it in {})", browser::CSRF_HEADER),
        ));
    }
    Ok(session.principal)
}

/// An admin: may read and change everything.
pub struct Admin(pub Principal);

impl<S: ServiceState> FromRequestParts<S> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match principal(parts, state)? {
            p @ Principal::Admin { .. } => Ok(Admin(p)),
            _ => Err(forbidden("use admin endpoints")),
        }
    }
}

/// An admin or an observer: may read views and events, change nothing.
pub struct Reader(pub Principal);

impl Reader {
    /// What this reader may see of an event: all of it for admins, no command text
    /// or output for observers.
    pub fn audience(&self) -> Audience {
        match self.0 {
            Principal::Admin { .. } => Audience::Admin,
            _ => Audience::Observer,
        }
    }
}

impl<S: ServiceState> FromRequestParts<S> for Reader {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match principal(parts, state)? {
            p @ (Principal::Admin { .. } | Principal::Observer) => Ok(Reader(p)),
            _ => Err(forbidden("read fleet views")),
        }
    }
}

/// A query string whose errors say what was wrong: 400 with serde's message (which
/// names the parameter).
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let query = axum::extract::Query::<T>::from_request_parts(parts, state).await;
        query.map(|q| ApiQuery(q.0)).map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// Path parameters whose errors say what was wrong: 400 with axum's message (a segment
/// that is not UTF-8 once decoded, say), as JSON like every other error.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let path = axum::extract::Path::<T>::from_request_parts(parts, state).await;
        path.map(|p| ApiPath(p.0)).map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// A JSON body whose errors say what was wrong: 400 for malformed JSON, 422 for the
/// wrong shape, 413 for too large, 415 for a missing content type.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let message = match &rejection {
        JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => rejection.body_text(),
        JsonRejection::MissingJsonContentType(_) => {
            "expected a JSON body with Content-Type: application/json".into()
        }
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "request body too large".into(),
        _ => rejection.body_text(),
    };
    ApiError::new(status, message)
}

/// A caller (`Admin`, `Reader`) acting on the node the path names (`/nodes/{id}/…`),
/// with the id parsed. The caller is checked first, so a stranger learns nothing from
/// the id's 400.
pub struct OnNode<C>(pub C, pub NodeId);

impl<S: ServiceState, C: FromRequestParts<S, Rejection = ApiError> + Send> FromRequestParts<S> for OnNode<C> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = C::from_request_parts(parts, state).await?;
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        Ok(OnNode(caller, node_id(&raw)?))
    }
}

/// Parses a node id from the path, with a 400 that says what a node id looks like.
pub(crate) fn node_id(raw: &str) -> Result<NodeId, ApiError> {
    NodeId::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(i))
    }

    #[test]
    fn an_address_is_refused_after_its_burst_until_the_window_ends() {
        let t = AuthThrottle::new(3, Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(t.failed(ip(1), start), None);
        assert_eq!(t.failed(ip(1), start), None);
        assert!(t.check(ip(1), start).is_ok());
        assert_eq!(t.failed(ip(1), start), Some(3), "the third failure is the one logged");
        assert_eq!(t.check(ip(1), start + Duration::from_secs(20)), Err(Duration::from_secs(40)));
        assert!(t.check(ip(2), start).is_ok(), "other addresses are not affected");
        let later = start + Duration::from_secs(60);
        assert!(t.check(ip(1), later).is_ok(), "the window ended");
        assert_eq!(t.failed(ip(1), later), None, "a new window starts from one");
    }

    #[test]
    fn a_spray_from_many_addresses_stays_bounded() {
        let t = AuthThrottle::new(20, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..3 * AUTH_THROTTLE_MAX_ADDRESSES as u32 {
            // Spread over the window, so the oldest are the ones forgotten.
            t.failed(ip(i), now + Duration::from_millis(u64::from(i)));
        }
        assert!(t.len() <= AUTH_THROTTLE_MAX_ADDRESSES);
        assert!(t.len() > AUTH_THROTTLE_MAX_ADDRESSES / 2, "only the oldest were forgotten");
        assert!(t.check(ip(3 * AUTH_THROTTLE_MAX_ADDRESSES as u32 - 1), now).is_ok());
        // Expired windows are the first to go when the map is full.
        let t = AuthThrottle::new(20, Duration::from_secs(60));
        for i in 0..AUTH_THROTTLE_MAX_ADDRESSES as u32 {
            t.failed(ip(i), now);
        }
        t.failed(ip(u32::MAX), now + Duration::from_secs(61));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn zero_turns_it_off() {
        let t = AuthThrottle::new(0, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(t.failed(ip(1), now), None);
        }
        assert!(t.check(ip(1), now).is_ok() && t.is_empty());
    }
}
