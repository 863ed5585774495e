//! Rolling uptime over the log's online/offline transitions (`views.uptime`): one node's
//! figure and its hour-by-hour or day-by-day history, the whole fleet's figure for
//! a window, and the 24-hour figure of the node list; now or as of a past point.

use super::nodes::{as_of_stop, views_as_of};
use super::page;
use super::{ApiError, AppState, OnNode, Reader};
use crate::service::ApiQuery;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use hydra_core::envelope::rfc3339;
use hydra_core::ledger::now_ms;
use hydra_events::NodeId;
use hydra_projections::{hour_of, ClusterViews, Tally, UptimeView, HOUR_S};
use serde::{Deserialize, Serialize};

/// The windows asked for: the last 24 hours, 7 or 30 days (the buckets kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Window {
    #[default]
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
}

impl Window {
    fn hours(self) -> u64 {
        match self {
            Window::Day => 24,
            Window::Week => 7 * 24,
            Window::Month => 30 * 24,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    #[default]
    Hourly,
    Daily,
}

/// `?window=&as_of=|as_of_seq=` of `GET /api/v1/nodes/{id}/uptime`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UptimeQuery {
    #[serde(default)]
    pub window: Window,
    pub as_of: Option<String>,
    pub as_of_seq: Option<u64>,
}

/// The same and `granularity`, for `…/uptime/history`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[serde(default)]
    pub window: Window,
    #[serde(default)]
    pub granularity: Granularity,
    pub as_of: Option<String>,
    pub as_of_seq: Option<u64>,
}

/// The same and a page (`limit`, `after`), for the fleet's `GET /api/v1/uptime`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FleetQuery {
    #[serde(default)]
    pub window: Window,
    pub as_of: Option<String>,
    pub as_of_seq: Option<u64>,
    pub limit: Option<usize>,
    pub after: Option<String>,
}

/// One node's uptime over a window. The window ends now (or at `as_of`) and starts
/// that many hours before the current hour began, so it is whole hours and the
/// current one so far; `from` is later when the node joined inside it (`clipped`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UptimeJson {
    pub node_id: String,
    pub window: Window,
    pub from: String,
    pub to: String,
    pub clipped: bool,
    /// Up over up + down, in percent (3 decimals); null when nothing was counted yet.
    pub uptime_pct: Option<f64>,
    pub up_seconds: u64,
    pub down_seconds: u64,
}

/// One bucket of a history: an hour or a UTC day, clipped to the window and the
/// node's life.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BucketJson {
    pub start: String,
    pub end: String,
    pub uptime_pct: Option<f64>,
    pub up_seconds: u64,
    pub down_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryJson {
    #[serde(flatten)]
    pub total: UptimeJson,
    pub granularity: Granularity,
    /// Oldest first; their seconds add up to the total's.
    pub buckets: Vec<BucketJson>,
}

/// Percent with 3 decimals, so `99.999` shows and the JSON stays short.
fn pct(t: &Tally) -> Option<f64> {
    t.pct().map(|p| (p * 1000.0).round() / 1000.0)
}

fn grace_s(state: &AppState) -> u64 {
    state.config.uptime_provision_grace.as_secs()
}

/// The first hour of `window` read at `now_s`, and its end.
fn bounds(v: &UptimeView, window: Window, now_s: u64) -> (u64, u64) {
    let to = v.end(now_s);
    (hour_of(to).saturating_sub(window.hours()), to)
}

fn total(id: &NodeId, v: &UptimeView, window: Window, now_s: u64, grace_s: u64) -> UptimeJson {
    let (from_hour, to) = bounds(v, window, now_s);
    let t = v.tally(from_hour, to, grace_s);
    let from = (from_hour * HOUR_S).max(v.since_s);
    UptimeJson {
        node_id: id.to_string(),
        window,
        from: rfc3339(from * 1000),
        to: rfc3339(to * 1000),
        clipped: v.since_s > from_hour * HOUR_S,
        uptime_pct: pct(&t),
        up_seconds: t.up_s,
        down_seconds: t.down_s,
    }
}

/// A node's uptime over the last 24 hours (the node list's `uptime_pct`).
pub(super) fn day_pct(views: &ClusterViews, id: &NodeId, now_s: u64, grace_s: u64) -> Option<f64> {
    let v = views.uptime.get(id)?;
    let (from_hour, to) = bounds(v, Window::Day, now_s);
    pct(&v.tally(from_hour, to, grace_s))
}

/// The node list's `uptime_pct` reading: the grace setting and this moment.
pub(super) fn day_reading(state: &AppState) -> (u64, u64) {
    (now_ms() / 1000, grace_s(state))
}

fn bucket(start: u64, end: u64, t: &Tally) -> BucketJson {
    BucketJson {
        start: rfc3339(start * 1000),
        end: rfc3339(end * 1000),
        uptime_pct: pct(t),
        up_seconds: t.up_s,
        down_seconds: t.down_s,
    }
}

fn history_of(id: &NodeId, v: &UptimeView, q: &HistoryQuery, now_s: u64, grace_s: u64) -> HistoryJson {
    let (from_hour, to) = bounds(v, q.window, now_s);
    let hours = v.hourly(from_hour, to, grace_s);
    let buckets = match q.granularity {
        Granularity::Hourly => hours.iter().map(|(start, end, t)| bucket(*start, *end, t)).collect(),
        Granularity::Daily => {
            let mut days: Vec<(u64, u64, Tally)> = Vec::new();
            for (start, end, t) in hours {
                match days.last_mut() {
                    Some(day) if day.0 / 86_400 == start / 86_400 => {
                        day.1 = end;
                        day.2.add(t);
                    }
                    _ => days.push((start, end, t)),
                }
            }
            days.iter().map(|(start, end, t)| bucket(*start, *end, t)).collect()
        }
    };
    HistoryJson { total: total(id, v, q.window, now_s, grace_s), granularity: q.granularity, buckets }
}

/// Runs `read` on the node's uptime record, now or as of a past point (the time to
/// read at is that point: `as_of`, or the time of event `as_of_seq`). 404 for a node
/// the views do not have.
async fn on_node<T: Send + 'static>(
    state: &AppState,
    id: &NodeId,
    as_of_seq: Option<u64>,
    as_of: &Option<String>,
    read: impl FnOnce(&UptimeView, u64) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let found = match as_of_stop(as_of_seq, as_of)? {
        Some(stop) => {
            let (views, at_ms) = views_as_of(state, stop).await?;
            views.uptime.get(id).map(|v| read(v, at_ms / 1000))
        }
        None => {
            let now_s = now_ms() / 1000;
            state.ledger.read(|views| views.uptime.get(id).map(|v| read(v, now_s)))
        }
    };
    found.ok_or_else(|| ApiError::not_found(format!("no node {id}")))
}

/// `GET /api/v1/nodes/{id}/uptime` (admin or observer).
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{id}/uptime",
    tag = "uptime",
    params(super::openapi::NodePath, UptimeQuery),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses((status = 200, description = "The node's uptime over the window", body = UptimeJson)),
)]
pub async fn node(
    State(state): State<AppState>,
    OnNode(_, id): OnNode<Reader>,
    ApiQuery(q): ApiQuery<UptimeQuery>,
) -> Result<Json<UptimeJson>, ApiError> {
    let (grace, node) = (grace_s(&state), id.clone());
    let json =
        on_node(&state, &id, q.as_of_seq, &q.as_of, move |v, now_s| total(&node, v, q.window, now_s, grace))
            .await?;
    Ok(Json(json))
}

/// `GET /api/v1/nodes/{id}/uptime/history` (admin or observer).
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{id}/uptime/history",
    tag = "uptime",
    params(super::openapi::NodePath, HistoryQuery),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses((status = 200, description = "The total and its hourly or daily buckets, oldest first", body = HistoryJson)),
)]
pub async fn history(
    State(state): State<AppState>,
    OnNode(_, id): OnNode<Reader>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryJson>, ApiError> {
    let (grace, node) = (grace_s(&state), id.clone());
    let (as_of_seq, as_of) = (q.as_of_seq, q.as_of.clone());
    let json =
        on_node(&state, &id, as_of_seq, &as_of, move |v, now_s| history_of(&node, v, &q, now_s, grace))
            .await?;
    Ok(Json(json))
}

/// One page of `views`' nodes' uptime, in id order.
fn fleet_page(
    views: &ClusterViews,
    after: Option<&NodeId>,
    limit: usize,
    window: Window,
    now_s: u64,
    grace_s: u64,
) -> (Vec<UptimeJson>, Option<NodeId>) {
    let (found, next) = page::page(&views.uptime, after, limit, |_, _| true);
    (found.into_iter().map(|(id, v)| total(id, v, window, now_s, grace_s)).collect(), next)
}

/// `GET /api/v1/uptime` (admin or observer): every node's uptime over the window, a
/// page at a time (`limit`, `after`, `X-Hydra-Next-After` as for `/api/v1/nodes`).
#[utoipa::path(
    get,
    path = "/api/v1/uptime",
    tag = "uptime",
    params(FleetQuery),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "One page of every node's uptime in id order", body = [UptimeJson], headers(("X-Hydra-Next-After" = String, description = "The `after` of the next page, when there is one"))),
    )
)]
pub async fn fleet(
    State(state): State<AppState>,
    _: Reader,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> Result<Response, ApiError> {
    let (limit, after) = page::bounds(q.limit, q.after.as_deref())?;
    let grace = grace_s(&state);
    let (items, next) = match as_of_stop(q.as_of_seq, &q.as_of)? {
        Some(stop) => {
            let (views, at_ms) = views_as_of(&state, stop).await?;
            fleet_page(&views, after.as_ref(), limit, q.window, at_ms / 1000, grace)
        }
        None => {
            let now_s = now_ms() / 1000;
            state.ledger.read(|views| fleet_page(views, after.as_ref(), limit, q.window, now_s, grace))
        }
    };
    Ok(page::answer(items, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydra_events::Event;
    use hydra_projections::Projection;

    #[test]
    fn daily_buckets_follow_utc_days_and_add_up() {
        // Enrolled at 20:00 on a day, online at once, read 30 hours later.
        let day = 1_700_000_000 / 86_400 * 86_400;
        let id = NodeId::parse("node-d1").unwrap();
        let events = vec![
            Event::NodeEnrolled { node_id: id.clone(), name: "b".into(), ip: "10.0.0.1".into() },
            Event::NodeOnline { node_id: id.clone() },
        ];
        let mut views = ClusterViews::default();
        for (seq, event) in events.into_iter().enumerate() {
            views.apply(&hydra_events::Envelope {
                seq: seq as u64 + 1,
                at_ms: (day + 20 * HOUR_S) * 1000,
                schema: hydra_events::CURRENT_SCHEMA,
                cause: "test".into(),
                prev_hash: hydra_events::ZERO_HASH,
                event,
            });
        }
        let v = &views.uptime[&id];
        let q = HistoryQuery {
            window: Window::Week,
            granularity: Granularity::Daily,
            as_of: None,
            as_of_seq: None,
        };
        let h = history_of(&id, v, &q, day + 50 * HOUR_S, 0);
        let spans: Vec<(u64, String)> = h.buckets.iter().map(|b| (b.up_seconds, b.start.clone())).collect();
        assert_eq!(
            spans,
            [
                (4 * HOUR_S, rfc3339((day + 20 * HOUR_S) * 1000)),
                (24 * HOUR_S, rfc3339((day + 24 * HOUR_S) * 1000)),
                (2 * HOUR_S, rfc3339((day + 48 * HOUR_S) * 1000))
            ]
        );
        assert_eq!((h.total.up_seconds, h.total.down_seconds, h.total.clipped), (30 * HOUR_S, 0, true));
    }
}
