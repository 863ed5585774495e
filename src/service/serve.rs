//! Accepting connections, for hydracluster and ExperienceLibrary alike: a cap on open
//! connections below the file-descriptor limit (with a small reserve that only health
//! checks and admins may use once the cap is reached), a header-read timeout, an idle
//! keep-alive timeout, accept errors that back off instead of spinning, and graceful
//! shutdown. Counts are shown in `/readyz` under `connections`.

use super::{ApiError, ServiceState};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use hydra_core::auth::Principal;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

/// Descriptors kept free for everything that is not an incoming connection: sled's
/// files, the data dir, outgoing HTTP clients, the agents' shells, logs.
const FD_HEADROOM: u64 = 256;

/// Paths answered on a reserve connection to anyone: what load balancers and
/// operators probe.
const HEALTH_PATHS: [&str; 3] = ["/api/v1/health", "/readyz", "/api/v1/readyz"];

/// Longest pause between retries after the listener fails (EMFILE, ENOBUFS, …).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// The header-read timeout of a reserve connection: a health check sends its header
/// at once, and a slowloris flood must not keep the reserve for long.
const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// The connection settings of a service.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections allowed; 0 derives it from the file-descriptor limit.
    pub max_connections: usize,
    /// How long a new connection may take to send its first request header.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit with no request in flight.
    pub idle_timeout: Duration,
}

impl ConnLimits {
    pub fn check(&self) -> Result<(), String> {
        if self.header_read_timeout.is_zero() || self.idle_timeout.is_zero() {
            return Err("header_read_timeout and idle_timeout must be longer than zero".into());
        }
        Ok(())
    }
}

/// Counters shown in `/readyz` (`connections`).
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections open now (normal and reserve; an upgraded WebSocket counts until
    /// its socket closes).
    pub current: AtomicU64,
    /// The cap in force, and the reserve above it.
    pub limit: AtomicU64,
    pub reserve: AtomicU64,
    /// Connections taken while the cap was reached, served from the reserve.
    pub over_limit: AtomicU64,
    /// Connections closed at once because the cap and the reserve were both full.
    pub refused: AtomicU64,
    /// Connections closed by the header-read or the idle timeout.
    pub timed_out: AtomicU64,
    /// Accept errors (EMFILE and the like) the listener backed off from.
    pub accept_errors: AtomicU64,
}

impl ConnStats {
    /// The `/readyz` component.
    pub fn json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "ok": true,
            "current": get(&self.current),
            "limit": get(&self.limit),
            "reserve": get(&self.reserve),
            "over_limit": get(&self.over_limit),
            "refused": get(&self.refused),
            "timed_out": get(&self.timed_out),
            "accept_errors": get(&self.accept_errors),
        })
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the soft limit in force
/// (`None` where it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: getrlimit/setrlimit only read and write the struct handed to them.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

/// The cap and the reserve for a configured `max_connections` (0 = derive) and a
/// descriptor limit: both together stay `FD_HEADROOM` below the limit, so accepting
/// never fails with EMFILE because of incoming connections.
pub fn caps(configured: usize, fd_limit: Option<u64>) -> (usize, usize) {
    let room = fd_limit.map(|l| usize::try_from(l.saturating_sub(FD_HEADROOM)).unwrap_or(usize::MAX).max(8));
    let reserve_for = |n: usize| (n / 32).clamp(4, 64);
    let derived = |room: usize| {
        let reserve = reserve_for(room).min(room / 2);
        (room - reserve, reserve)
    };
    match (configured, room) {
        (0, Some(room)) => derived(room),
        (0, None) => derived(1024),
        (n, Some(room)) if n.saturating_add(reserve_for(n)) > room => {
            tracing::warn!(
                max_connections = n,
                fd_limit = fd_limit.unwrap_or(0),
                "max_connections does not fit below the file-descriptor limit; lowered"
            );
            derived(room)
        }
        (n, _) => (n, reserve_for(n)),
    }
}

/// Serves `app` on `listener` until the service's stop signal, then waits for the
/// open connections to finish (live streams end on the same signal).
pub fn serve<S: ServiceState>(
    listener: TcpListener,
    app: Router,
    state: S,
    limits: ConnLimits,
) -> impl Future<Output = io::Result<()>> + Send {
    let app = app.layer(axum::middleware::from_fn(super::request::layer));
    let (cap, reserve) = caps(limits.max_connections, raise_fd_limit());
    let stats = state.connections().clone();
    stats.limit.store(cap as u64, Ordering::Relaxed);
    stats.reserve.store(reserve as u64, Ordering::Relaxed);
    tracing::info!(max_connections = cap, reserve, "connection limits");
    accept_loop(listener, app, state, limits, cap, reserve, stats)
}

/// Connections allowed on `metrics_listen`: a few scrapers, never the main cap.
const METRICS_CONNECTIONS: usize = 16;

/// Serves `app` on the `metrics_listen` socket: the same loop and timeouts, with a
/// small cap, no reserve (so the main listener's reserve message never shows here)
/// and counts of its own, so scrapers never take the API's connections.
pub fn serve_metrics<S: ServiceState>(
    listener: TcpListener,
    app: Router,
    state: S,
    limits: ConnLimits,
) -> impl Future<Output = io::Result<()>> + Send {
    let stats = Arc::new(ConnStats::default());
    accept_loop(listener, app, state, limits, METRICS_CONNECTIONS, 0, stats)
}

async fn accept_loop<S: ServiceState>(
    listener: TcpListener,
    app: Router,
    state: S,
    limits: ConnLimits,
    cap: usize,
    reserve: usize,
    stats: Arc<ConnStats>,
) -> io::Result<()> {
    let normal = Arc::new(Semaphore::new(cap));
    let spare = Arc::new(Semaphore::new(reserve));
    // Every connection task holds a sender; all are gone when `recv` yields None.
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    let mut stopping = state.stopping();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(error = %e, "accepting connections failed; backing off until it works again");
                    failing = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopping.wait_for(|s| *s) => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        if failing {
            tracing::info!("accepting connections again");
            failing = false;
        }
        backoff = ACCEPT_BACKOFF_MIN;
        let (slot, reserved) = match normal.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match spare.clone().try_acquire_owned() {
                Ok(p) => {
                    stats.over_limit.fetch_add(1, Ordering::Relaxed);
                    (p, true)
                }
                Err(_) => {
                    // Closing at once answers the client quickly and frees the fd.
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                }
            },
        };
        stats.current.fetch_add(1, Ordering::Relaxed);
        let io = Counted { stream, _slot: slot, stats: stats.clone() };
        let conn = Connection {
            stats: stats.clone(),
            app: app.clone(),
            state: state.clone(),
            limits,
            reserved,
            peer,
            activity: Arc::new(Activity::new(reserved)),
        };
        let alive = alive.clone();
        tokio::spawn(async move {
            conn.run(io).await;
            drop(alive);
        });
    }
    drop(listener);
    drop(alive);
    let _ = all_done.recv().await;
    Ok(())
}

/// Errors that concern one connection only: accept the next at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection and what it needs to serve it.
struct Connection<S> {
    app: Router,
    state: S,
    limits: ConnLimits,
    /// Taken from the reserve: one request, health checks and admins only.
    reserved: bool,
    peer: SocketAddr,
    activity: Arc<Activity>,
    stats: Arc<ConnStats>,
}

impl<S: ServiceState> Connection<S> {
    async fn run(self, io: Counted) {
        let Connection { app, state, limits, reserved, peer, activity, stats } = self;
        let mut stopping = state.stopping();
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                let state = state.clone();
                let activity = activity.clone();
                async move { Ok::<_, Infallible>(answer(app, &state, reserved, peer, &activity, req).await) }
            })
        };
        // No hyper timer: both timeouts are ours, so that a connection with a request
        // in flight (an SSE stream, a long poll) is never cut, and an idle keep-alive
        // connection gets its own deadline.
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.keep_alive(!reserved);
        let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
        tokio::pin!(conn);
        let mut shutting_down = false;
        loop {
            let changed = activity.changed.notified();
            let deadline = activity.deadline(&limits);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    return;
                }
                _ = changed => {}
                _ = sleep_until(deadline) => {
                    if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                        // Nothing in flight: dropping the connection loses nothing.
                        stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                _ = stopping.wait_for(|s| *s), if !shutting_down => {
                    if activity.idle() {
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Serves one request: on a reserve connection only health checks and admins get
/// through; everyone else is told the server is at its limit.
async fn answer<S: ServiceState>(
    app: Router,
    state: &S,
    reserved: bool,
    peer: SocketAddr,
    activity: &Arc<Activity>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let in_flight = InFlight::begin(activity.clone());
    let response = if reserved && !priority(state, &req) {
        let limit = state.connections().limit.load(Ordering::Relaxed);
        let mut r = axum::response::IntoResponse::into_response(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the server is at its connection limit ({limit}); only health checks and admins are \
                 served now; retry shortly"
            ),
        ));
        r.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        r
    } else {
        req.extensions_mut().insert(ConnectInfo(peer));
        match app.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    };
    // The request is in flight until its body is sent (or dropped): an SSE stream or a
    // long poll keeps its connection out of the idle timeout.
    response.map(|body| Body::new(Tracked { body, _in_flight: in_flight }))
}

/// A health path, or a request with an admin's bearer token.
fn priority<S: ServiceState>(state: &S, req: &Request<Incoming>) -> bool {
    if HEALTH_PATHS.contains(&req.uri().path()) {
        return true;
    }
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    token.is_some_and(|t| matches!(state.tokens().resolve(state.store(), t), Some(Principal::Admin { .. })))
}

/// What a connection is doing: requests in flight, and since when it has been idle.
struct Activity {
    /// A reserve connection (shorter header-read timeout).
    reserved: bool,
    state: parking_lot::Mutex<ActivityState>,
    /// Poked whenever a request starts or ends, so the deadline is looked at again.
    changed: Notify,
}

struct ActivityState {
    in_flight: usize,
    /// When the connection was accepted, or its last response ended.
    idle_since: Instant,
    /// Whether a request has been seen: before it the header-read timeout applies,
    /// after it the idle timeout.
    served: bool,
}

impl Activity {
    fn new(reserved: bool) -> Activity {
        Activity {
            reserved,
            state: parking_lot::Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: Instant::now(),
                served: false,
            }),
            changed: Notify::new(),
        }
    }

    /// When the connection is to be closed; none while a request is in flight.
    fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        let s = self.state.lock();
        if s.in_flight > 0 {
            return None;
        }
        let timeout = match (s.served, self.reserved) {
            (true, _) => limits.idle_timeout,
            (false, false) => limits.header_read_timeout,
            (false, true) => limits.header_read_timeout.min(RESERVE_HEADER_TIMEOUT),
        };
        Some(s.idle_since + timeout)
    }

    fn idle(&self) -> bool {
        self.state.lock().in_flight == 0
    }
}

/// Counts a request in flight until dropped (with the response body).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> InFlight {
        {
            let mut s = activity.state.lock();
            s.in_flight += 1;
            s.served = true;
        }
        activity.changed.notify_one();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut s = self.0.state.lock();
            s.in_flight -= 1;
            s.idle_since = Instant::now();
        }
        self.0.changed.notify_one();
    }
}

/// A response body that ends its request's time in flight when it is done.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A socket holding its slot: the count stays right for as long as the descriptor is
/// open, also after a WebSocket upgrade takes it out of hyper's hands.
struct Counted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    stats: Arc<ConnStats>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stats.current.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::caps;

    #[test]
    fn the_cap_and_its_reserve_stay_below_the_fd_limit() {
        let (cap, reserve) = caps(0, Some(1024));
        assert_eq!(cap + reserve, 1024 - 256);
        assert!(reserve >= 4);
        // A configured cap is kept, with a reserve above it when there is room.
        assert_eq!(caps(20, Some(20_000)), (20, 4));
        // Too close to the limit: lowered so that cap + reserve fit.
        let (cap, reserve) = caps(50_000, Some(20_000));
        assert_eq!(cap + reserve, 20_000 - 256);
        assert_eq!(caps(0, None).0 + caps(0, None).1, 1024);
    }
}
