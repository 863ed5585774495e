//! Stream sessions (a head streaming from its assigned body): the list with its
//! filters, one session, and its logs — the body's and the head's lines of the
//! session's time window, read through the exec channel side by side.

use super::extract::node_id;
use super::heads::{log_command, read_on_node};
use super::{Admin, ApiError, AppState, Reader};
use crate::service::ApiPath;
use crate::service::ApiQuery;
use axum::extract::State;
use axum::Json;
use hydra_core::envelope::rfc3339;
use hydra_core::ledger::now_ms;
use hydra_events::NodeId;
use hydra_projections::{ClusterViews, SessionView};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Sessions per answer when the request does not say, and the most it may ask for
/// (more than the view keeps: every open session plus every finished one kept).
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 5000;
/// Lines read from the end of each side's log before the window is cut out of them.
pub const LOG_LINES: u32 = 1000;

/// `?head=&body=&active=&since=&limit=`, every one optional. Strings, checked by hand
/// so that each 400 names the parameter and what it takes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    head: Option<String>,
    body: Option<String>,
    active: Option<String>,
    since: Option<String>,
    limit: Option<String>,
}

/// A checked [`ListQuery`].
#[derive(Debug, Default, PartialEq)]
pub struct Filter {
    head: Option<NodeId>,
    body: Option<NodeId>,
    active: Option<bool>,
    /// Unix ms: sessions still open at or after it.
    since_ms: Option<u64>,
    limit: usize,
}

fn bad(param: &str, value: &str, takes: &str) -> ApiError {
    let shown: String = value.chars().take(80).collect();
    ApiError::bad_request(format!("{param}={shown:?}: {takes}"))
}

impl ListQuery {
    pub fn checked(self) -> Result<Filter, ApiError> {
        let node = |param: &str, v: Option<String>| {
            v.filter(|v| !v.is_empty())
                .map(|v| node_id(&v).map_err(|e| bad(param, &v, &e.message)))
                .transpose()
        };
        let active = match self.active.as_deref() {
            None | Some("") => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(v) => return Err(bad("active", v, "expected true or false")),
        };
        let since_ms = self.since.filter(|v| !v.is_empty()).map(|v| time_ms(&v)).transpose()?;
        let limit = match self.limit.filter(|v| !v.is_empty()) {
            None => DEFAULT_LIMIT,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(bad("limit", &v, &format!("expected a number from 1 to {MAX_LIMIT}"))),
            },
        };
        Ok(Filter { head: node("head", self.head)?, body: node("body", self.body)?, active, since_ms, limit })
    }
}

/// `since`: an RFC 3339 time (`2026-11-29T10:00:00Z`) or unix milliseconds.
fn time_ms(v: &str) -> Result<u64, ApiError> {
    let takes = "expected an RFC 3339 time (2026-11-29T10:00:00Z) or unix milliseconds";
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(v).map_err(|_| bad("since", v, takes))?;
    let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad("since", v, takes))?;
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Filter {
    fn matches(&self, s: &SessionView) -> bool {
        self.head.as_ref().is_none_or(|h| h == &s.head_id)
            && self.body.as_ref().is_none_or(|b| b == &s.body_id)
            && self.active.is_none_or(|a| a == s.ended_at_ms.is_none())
            && self.since_ms.is_none_or(|t| s.ended_at_ms.is_none_or(|end| end >= t))
    }
}

/// The matching sessions, newest first (by the seq of their start), at most `limit`.
pub fn select(views: &ClusterViews, f: &Filter) -> Vec<SessionView> {
    let s = &views.sessions;
    let mut found: Vec<&SessionView> =
        s.active.values().chain(s.finished.iter()).filter(|s| f.matches(s)).collect();
    found.sort_by_key(|s| std::cmp::Reverse(s.started_seq));
    found.into_iter().take(f.limit).cloned().collect()
}

/// A session as the API shows it; names are the nodes' current ones (`null` once a
/// node is removed).
fn session_json(s: &SessionView, names: &BTreeMap<NodeId, String>, now: u64) -> SessionJson {
    let end = s.ended_at_ms.unwrap_or(now);
    SessionJson {
        id: s.id.clone(),
        head_id: s.head_id.clone(),
        head_name: names.get(&s.head_id).cloned(),
        body_id: s.body_id.clone(),
        body_name: names.get(&s.body_id).cloned(),
        started_at: rfc3339(s.started_at_ms),
        ended_at: s.ended_at_ms.map(rfc3339),
        duration_s: end.saturating_sub(s.started_at_ms) / 1000,
        active: s.ended_at_ms.is_none(),
        end_reason: s.end_reason.clone(),
    }
}

/// A stream session: a head streaming from its assigned body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionJson {
    id: String,
    #[schema(value_type = String)]
    head_id: NodeId,
    /// The head's current name; null once the node is removed.
    head_name: Option<String>,
    #[schema(value_type = String)]
    body_id: NodeId,
    /// The body's current name; null once the node is removed.
    body_name: Option<String>,
    /// RFC 3339.
    started_at: String,
    /// RFC 3339; null while the session is open.
    ended_at: Option<String>,
    /// Whole seconds, up to now while the session is open.
    duration_s: u64,
    active: bool,
    /// Why the session ended; null while it is open.
    end_reason: Option<String>,
}

/// Sessions and the names of their nodes, read in one go.
fn read(state: &AppState, pick: impl FnOnce(&ClusterViews) -> Vec<SessionView>) -> Vec<SessionJson> {
    let (sessions, names) = state.ledger.read(|v| {
        let sessions = pick(v);
        let names: BTreeMap<NodeId, String> = sessions
            .iter()
            .flat_map(|s| [&s.head_id, &s.body_id])
            .filter_map(|id| v.nodes.get(id).map(|n| (id.clone(), n.name.clone())))
            .collect();
        (sessions, names)
    });
    let now = now_ms();
    sessions.iter().map(|s| session_json(s, &names, now)).collect()
}

/// `GET /api/v1/sessions`: admin or observer.
#[utoipa::path(
    get,
    path = "/api/v1/sessions",
    tag = "sessions",
    params(ListQuery),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "Stream sessions, newest first", body = [SessionJson]),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _: Reader,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<SessionJson>>, ApiError> {
    let filter = q.checked()?;
    Ok(Json(read(&state, |v| select(v, &filter))))
}

fn find(state: &AppState, id: &str) -> Result<(SessionView, SessionJson), ApiError> {
    let not_found = || {
        let shown: String = id.chars().take(80).collect();
        ApiError::not_found(format!(
            "no session {shown:?} (the view keeps every open session and the last {} finished; \
             the log has them all: /api/v1/events/log?types=session.*)",
            hydra_projections::SESSIONS_KEPT
        ))
    };
    let s = state.ledger.read(|v| v.sessions.get(id).cloned()).ok_or_else(not_found)?;
    let json = read(state, |_| vec![s.clone()]).pop().ok_or_else(not_found)?;
    Ok((s, json))
}

/// `GET /api/v1/sessions/{id}`: admin or observer.
#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "A stream session id")),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The session", body = SessionJson),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    _: Reader,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionJson>, ApiError> {
    Ok(Json(find(&state, &id)?.1))
}

/// `GET /api/v1/sessions/{id}/logs`: admins only (a log may hold anything). Both sides
/// are read at once through the exec channel; one that fails (offline, no answer in
/// time, no log) says why in its `error` and the other is still answered.
#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/logs",
    tag = "sessions",
    params(("id" = String, Path, description = "A stream session id")),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "Both sides' logs around the session", body = SessionLogs),
        (status = 502, description = "A node answered with an error", body = crate::service::openapi::ErrorBody),
        (status = 504, description = "A node did not answer in time", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn logs(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionLogs>, ApiError> {
    let (s, json) = find(&state, &id)?;
    let window = (s.started_at_ms, s.ended_at_ms.unwrap_or_else(now_ms));
    let side = |node: NodeId, path: String| {
        let (state, cause) = (state.clone(), admin.cause());
        async move {
            let read = read_on_node(&state, cause, &node, log_command(&path, LOG_LINES), "log").await;
            side_json(&path, read.map(|o| o.stdout).map_err(|e| e.message), window)
        }
    };
    let (body, head) = tokio::join!(
        side(s.body_id.clone(), state.config.body_log_path.clone()),
        side(s.head_id.clone(), state.config.head_log_path.clone()),
    );
    Ok(Json(SessionLogs {
        session: json,
        window: Window { from: rfc3339(window.0), to: rfc3339(window.1) },
        body,
        head,
    }))
}

/// Both sides' logs around a session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionLogs {
    session: SessionJson,
    /// The session's time window (RFC 3339, inclusive); `to` is now while it is open.
    window: Window,
    body: LogSide,
    head: LogSide,
}

/// A time window (RFC 3339).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = SessionWindow)]
pub struct Window {
    from: String,
    to: String,
}

/// One node's side of a session's logs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogSide {
    /// Where the log is on the node (`body_log_path` / `head_log_path`).
    log_path: String,
    /// The lines inside the window (all of the tail when `windowed` is false).
    lines: Vec<String>,
    /// Whether the lines could be cut to the window by their own times.
    windowed: bool,
    /// Why this side could not be read; null when it was.
    error: Option<String>,
}

/// One side of the logs answer.
fn side_json(path: &str, read: Result<String, String>, window: (u64, u64)) -> LogSide {
    match read {
        Ok(text) => {
            let (lines, windowed) = in_window(&text, window);
            let lines = lines.into_iter().map(str::to_owned).collect();
            LogSide { log_path: path.to_owned(), lines, windowed, error: None }
        }
        Err(e) => LogSide { log_path: path.to_owned(), lines: Vec::new(), windowed: false, error: Some(e) },
    }
}

/// The time a log line starts with, unix ms: an RFC 3339 time in UTC as its first
/// word (or first two, with a space for the `T`), bracketed or not.
pub fn line_time(line: &str) -> Option<u64> {
    let mut words = line.split_whitespace().map(|w| w.trim_start_matches('[').trim_end_matches([']', ':']));
    let first = words.next()?;
    let parse = |s: &str| {
        let t = humantime::parse_rfc3339_weak(s).ok()?;
        u64::try_from(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
    };
    parse(first).or_else(|| parse(&format!("{first} {}", words.next()?)))
}

/// The lines of `text` inside `window` (inclusive), and whether it could cut one: a
/// line without a time of its own (a continuation, a stack trace) goes with the last
/// timed line before it, and those before the first timed line are left out. When no
/// line carries a time, every line is kept and `windowed` is false: the caller sees
/// the log's tail, not the session's part of it.
pub fn in_window(text: &str, (from, to): (u64, u64)) -> (Vec<&str>, bool) {
    let lines: Vec<&str> = text.lines().collect();
    if !lines.iter().any(|l| line_time(l).is_some()) {
        return (lines, false);
    }
    let mut keep = false;
    let kept = lines
        .into_iter()
        .filter(|l| {
            if let Some(t) = line_time(l) {
                keep = (from..=to).contains(&t);
            }
            keep
        })
        .collect();
    (kept, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<Filter, ApiError> {
        let s = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        serde_urlencoded::from_str::<ListQuery>(&s).unwrap().checked()
    }

    #[test]
    fn bad_parameters_are_refused_with_their_name() {
        for (pairs, name) in [
            (&[("active", "yes")][..], "active="),
            (&[("since", "yesterday")][..], "since="),
            (&[("limit", "0")][..], "limit="),
            (&[("limit", "5001")][..], "limit="),
            (&[("head", "not a node")][..], "head="),
            (&[("body", "x/y")][..], "body="),
        ] {
            let e = q(pairs).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.message.starts_with(name), "{}", e.message);
        }
        let f = q(&[("active", "false"), ("since", "2026-11-29T10:00:00Z"), ("limit", "5")]).unwrap();
        assert_eq!((f.active, f.since_ms, f.limit), (Some(false), Some(1_795_946_400_000), 5));
        assert_eq!(q(&[("since", "1500")]).unwrap().since_ms, Some(1500));
        assert_eq!(q(&[]).unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn log_lines_are_cut_to_the_window_by_their_own_times() {
        let ms = |s: &str| line_time(s).unwrap();
        assert_eq!(ms("2026-11-29T10:00:00Z x"), 1_795_946_400_000);
        assert_eq!(ms("[2026-11-29T10:00:00.250Z] x"), 1_795_946_400_250);
        assert_eq!(ms("2026-11-29 10:00:01 INFO x"), 1_795_946_401_000);
        assert_eq!(ms("2026-11-29T10:00:00.123456Z  INFO hydranode: x"), 1_795_946_400_123);
        assert_eq!(line_time("no time here"), None);
        let text = "before\n2026-11-29T09:59:59Z early\n2026-11-29T10:00:00Z first\n  continued\n\
                    2026-11-29T10:00:05Z last\n2026-11-29T10:00:06Z late\n  late too\n";
        let window = (ms("2026-11-29T10:00:00Z"), ms("2026-11-29T10:00:05Z"));
        assert_eq!(
            in_window(text, window),
            (vec!["2026-11-29T10:00:00Z first", "  continued", "2026-11-29T10:00:05Z last"], true)
        );
        assert_eq!(in_window("a\nb\n", window), (vec!["a", "b"], false));
    }
}
