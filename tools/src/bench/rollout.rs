//! `hydra-bench rollout-report`: where the time of one ExperienceLibrary rollout went.
//! Reads the rollout (`GET /api/v1/rollouts/{id}` on the library), the library's
//! `rollout.*` events and hydracluster's `provision.*` events, matches them per node
//! and prints the total, each wave's duration and three per-node legs: request →
//! cluster `provision.started` (waits for the node's next heartbeat), started →
//! completed (the install itself) and cluster `provision.completed` → library
//! `rollout.node_completed` (SSE delivery and the driver).

use anyhow::{bail, Context};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Events read per page of `GET /api/v1/events/log` (the server's maximum).
const PAGE: u64 = 10_000;

/// Where to read, and with which tokens.
#[derive(Debug, Clone)]
pub struct Source {
    pub cluster: String,
    pub cluster_token: String,
    pub library: String,
    pub library_token: String,
    pub rollout: String,
}

/// Milliseconds since the epoch of an RFC 3339 UTC time as Hydra writes it
/// (`2026-11-22T19:15:21.123Z`; fraction optional, any number of digits).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let ms = frac.chars().chain("000".chars()).take(3).collect::<String>().parse::<i64>().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

/// Mean, median and 95th percentile of a set of durations in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub count: usize,
    pub mean: f64,
    pub p50: i64,
    pub p95: i64,
    pub max: i64,
}

pub fn spread(samples: &[i64]) -> Option<Spread> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    // Nearest rank, like `stats::percentile` (not used here so that this file also
    // builds when included into the binary by path).
    let at = |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    Some(Spread {
        count: sorted.len(),
        mean: sorted.iter().sum::<i64>() as f64 / sorted.len() as f64,
        p50: at(0.50),
        p95: at(0.95),
        max: at(1.0),
    })
}

/// What happened to one node, in epoch milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTimes {
    pub wave: u8,
    /// Library `rollout.node_requested`.
    pub requested: Option<i64>,
    /// Cluster `provision.started` (the first at or after the request).
    pub started: Option<i64>,
    /// Cluster `provision.completed` or `provision.failed` after the start.
    pub finished: Option<i64>,
    pub failed: bool,
    /// Library `rollout.node_completed` or `rollout.node_failed`.
    pub recorded: Option<i64>,
}

/// The figures of one rollout.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub started: Option<i64>,
    pub finished: Option<i64>,
    /// The event that ended the rollout: `rollout.completed`, `.aborted` or `.cancelled`.
    pub end: String,
    /// Per wave: started, completed.
    pub waves: BTreeMap<u8, (Option<i64>, Option<i64>)>,
    pub nodes: BTreeMap<String, NodeTimes>,
    /// A slot's idle time: from a node's `rollout.node_completed`/`node_failed` to the
    /// next `rollout.node_requested` that is not part of a wave's first batch.
    pub refill: Vec<i64>,
}

fn at(e: &Value) -> Option<i64> {
    e["at"].as_str().and_then(parse_rfc3339_ms)
}

/// Matches the library's events of `rollout` and the cluster's `provision.*` events
/// per node. Events must be in log order (as the logs give them).
pub fn timeline(rollout: &str, library: &[Value], cluster: &[Value]) -> Timeline {
    let mut t = Timeline::default();
    // The last node result of the current wave (none right after a wave starts).
    let mut last_result: Option<i64> = None;
    for e in library.iter().filter(|e| e["data"]["rollout_id"].as_str() == Some(rollout)) {
        match e["type"].as_str().unwrap_or_default() {
            "rollout.wave_started" => last_result = None,
            "rollout.node_completed" | "rollout.node_failed" => last_result = at(e).or(last_result),
            "rollout.node_requested" => {
                if let (Some(r), Some(f)) = (at(e), last_result) {
                    t.refill.push(r - f);
                }
            }
            _ => {}
        }
        let node = e["data"]["node_id"].as_str().map(str::to_owned);
        let wave = e["data"]["wave"].as_u64().map(|w| w as u8);
        match (e["type"].as_str().unwrap_or_default(), node, wave) {
            ("rollout.started", ..) => t.started = at(e),
            (end @ ("rollout.completed" | "rollout.aborted" | "rollout.cancelled"), ..) => {
                t.finished = at(e);
                t.end = end.to_owned();
            }
            ("rollout.wave_started", _, Some(w)) => t.waves.entry(w).or_default().0 = at(e),
            ("rollout.wave_completed", _, Some(w)) => t.waves.entry(w).or_default().1 = at(e),
            ("rollout.node_requested", Some(n), w) => {
                // A node asked again (after a transient refusal) counts from the last ask.
                let times = t.nodes.entry(n).or_default();
                *times = NodeTimes { wave: w.unwrap_or(0), requested: at(e), ..NodeTimes::default() };
            }
            ("rollout.node_completed" | "rollout.node_failed", Some(n), _) => {
                if let Some(times) = t.nodes.get_mut(&n) {
                    times.recorded = times.recorded.or(at(e));
                }
            }
            _ => {}
        }
    }
    for e in cluster {
        let Some(times) = e["data"]["node_id"].as_str().and_then(|n| t.nodes.get_mut(n)) else { continue };
        let (Some(when), Some(requested)) = (at(e), times.requested) else { continue };
        if when < requested {
            continue; // an earlier provisioning of the same node
        }
        match e["type"].as_str().unwrap_or_default() {
            "provision.started" if times.started.is_none() => times.started = Some(when),
            "provision.completed" | "provision.failed"
                if times.started.is_some() && times.finished.is_none() =>
            {
                times.finished = Some(when);
                times.failed = e["type"] == "provision.failed";
            }
            _ => {}
        }
    }
    t
}

/// How long one leg of the way took a node, in milliseconds (None where an end is
/// missing).
type Leg = fn(&NodeTimes) -> Option<i64>;

fn secs(ms: i64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

fn spread_line(name: &str, samples: &[i64]) -> String {
    match spread(samples) {
        Some(s) => format!(
            "  {name:<46} n={:<4} mean {:>8.0} ms  p50 {:>6} ms  p95 {:>6} ms  max {:>6} ms\n",
            s.count, s.mean, s.p50, s.p95, s.max
        ),
        None => format!("  {name:<46} no samples\n"),
    }
}

/// The text report of a rollout (its JSON as the library shows it) and its timeline.
pub fn text(rollout: &Value, t: &Timeline) -> String {
    let mut out = String::new();
    let c = &rollout["counts"];
    let _ = writeln!(
        out,
        "rollout {} of {} to {}: {}  (nodes {}, completed {}, failed {}, skipped {}; max_parallel {})",
        rollout["id"].as_str().unwrap_or("?"),
        rollout["experience_id"].as_str().unwrap_or("?"),
        rollout["environment"].as_str().unwrap_or("?"),
        rollout["state"].as_str().unwrap_or("?"),
        c["total"],
        c["completed"],
        c["failed"],
        rollout["skipped"].as_array().map_or(0, Vec::len),
        rollout["policy"]["max_parallel"],
    );
    match (t.started, t.finished) {
        (Some(s), Some(f)) => {
            let _ = writeln!(out, "total (rollout.started -> {}): {}", t.end, secs(f - s));
        }
        _ => {
            let _ = writeln!(out, "total: not finished");
        }
    }
    for (wave, (s, f)) in &t.waves {
        let what = if *wave == 1 { "bodies" } else { "heads" };
        let n = t.nodes.values().filter(|n| n.wave == *wave).count();
        match (s, f) {
            (Some(s), Some(f)) => {
                let _ = writeln!(out, "wave {wave} ({what}, {n} nodes): {}", secs(f - s));
            }
            _ => {
                let _ = writeln!(out, "wave {wave} ({what}, {n} nodes): not finished");
            }
        }
    }
    let _ = writeln!(out, "per node:");
    let legs: [(&str, Leg); 4] = [
        ("(a) library request -> cluster provision.started", |n| Some(n.started? - n.requested?)),
        ("(b) provision.started -> provision.completed", |n| Some(n.finished? - n.started?)),
        ("(c) provision.completed -> rollout.node_completed", |n| Some(n.recorded? - n.finished?)),
        ("    request -> rollout.node_completed (a+b+c)", |n| Some(n.recorded? - n.requested?)),
    ];
    for (name, leg) in legs {
        out += &spread_line(name, &t.nodes.values().filter_map(leg).collect::<Vec<_>>());
    }
    out += &spread_line("(d) node result -> next node requested (slot refill)", &t.refill);
    let missing: Vec<&String> = t
        .nodes
        .iter()
        .filter(|(_, n)| n.recorded.is_none() || n.started.is_none())
        .map(|(id, _)| id)
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            out,
            "nodes without a full timeline: {} (first: {})",
            missing.len(),
            missing.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    out
}

async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Value> {
    let r = http.get(url).bearer_auth(token).send().await.with_context(|| format!("GET {url}"))?;
    if !r.status().is_success() {
        bail!("GET {url}: {} {}", r.status(), r.text().await.unwrap_or_default());
    }
    Ok(r.json().await?)
}

/// Every event of `types` in a service's log, in order.
async fn read_log(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    types: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut events = Vec::new();
    let mut since = 0u64;
    loop {
        let url = format!("{base}/api/v1/events/log?since={since}&limit={PAGE}&types={types}");
        let page = get_json(http, &url, token).await?;
        events.extend(page["events"].as_array().cloned().unwrap_or_default());
        let (next, head) = (page["next_since"].as_u64().unwrap_or(since), page["head"].as_u64().unwrap_or(0));
        if next >= head || next <= since {
            return Ok(events);
        }
        since = next;
    }
}

/// Reads everything and returns the report's text.
pub async fn report(src: &Source) -> anyhow::Result<String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let (library, cluster) = (src.library.trim_end_matches('/'), src.cluster.trim_end_matches('/'));
    let rollout =
        get_json(&http, &format!("{library}/api/v1/rollouts/{}", src.rollout), &src.library_token).await?;
    let lib_events = read_log(&http, library, &src.library_token, "rollout.*").await?;
    let cluster_events = read_log(&http, cluster, &src.cluster_token, "provision.*").await?;
    let t = timeline(&src.rollout, &lib_events, &cluster_events);
    Ok(text(&rollout, &t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc3339_times_parse_to_epoch_milliseconds() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_rfc3339_ms("2000-03-01T00:00:00.000Z"), Some(951_868_800_000));
        assert_eq!(parse_rfc3339_ms("2026-11-22T19:15:21.123Z"), Some(1_795_374_921_123));
        for bad in
            ["", "2026-11-22", "2026-13-01T00:00:00Z", "2026-11-22T19:15:21.1x3Z", "2026-11-22T19:15:21"]
        {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn spread_gives_mean_and_nearest_rank_percentiles() {
        let samples: Vec<i64> = (1..=100).collect();
        let s = spread(&samples).unwrap();
        assert_eq!((s.count, s.p50, s.p95, s.max), (100, 50, 95, 100));
        assert!((s.mean - 50.5).abs() < 1e-9);
        assert_eq!(spread(&[]), None);
    }

    fn ev(kind: &str, at_ms: i64, data: Value) -> Value {
        let secs = at_ms / 1000;
        json!({"type": kind, "at": format!("2026-01-01T00:00:{:02}.{:03}Z", secs, at_ms % 1000), "data": data})
    }

    #[test]
    fn refills_count_from_the_last_node_result_of_the_wave() {
        let r = "r1";
        let library = vec![
            ev("rollout.wave_started", 0, json!({"rollout_id": r, "wave": 1})),
            ev("rollout.node_requested", 10, json!({"rollout_id": r, "node_id": "b1", "wave": 1})),
            ev("rollout.node_completed", 2500, json!({"rollout_id": r, "node_id": "b1"})),
            ev("rollout.node_requested", 2530, json!({"rollout_id": r, "node_id": "b2", "wave": 1})),
            ev("rollout.node_failed", 5000, json!({"rollout_id": r, "node_id": "b2"})),
            ev("rollout.wave_started", 5100, json!({"rollout_id": r, "wave": 2})),
            ev("rollout.node_requested", 5150, json!({"rollout_id": r, "node_id": "h1", "wave": 2})),
        ];
        assert_eq!(timeline(r, &library, &[]).refill, vec![30]);
    }

    #[test]
    fn nodes_are_matched_across_the_two_logs() {
        let r = "r1";
        let library = vec![
            ev("rollout.started", 0, json!({"rollout_id": r})),
            ev("rollout.wave_started", 0, json!({"rollout_id": r, "wave": 1})),
            ev("rollout.node_requested", 100, json!({"rollout_id": r, "node_id": "b1", "wave": 1})),
            ev("rollout.node_requested", 100, json!({"rollout_id": "other", "node_id": "b2", "wave": 1})),
            ev("rollout.node_completed", 3500, json!({"rollout_id": r, "node_id": "b1"})),
            ev("rollout.wave_completed", 3500, json!({"rollout_id": r, "wave": 1})),
            ev("rollout.completed", 3600, json!({"rollout_id": r})),
        ];
        let cluster = vec![
            ev("provision.completed", 50, json!({"node_id": "b1"})), // before the request
            ev("provision.requested", 120, json!({"node_id": "b1"})),
            ev("provision.started", 900, json!({"node_id": "b1"})),
            ev("provision.completed", 2950, json!({"node_id": "b1"})),
            ev("provision.started", 950, json!({"node_id": "b2"})),
        ];
        let t = timeline(r, &library, &cluster);
        assert_eq!((t.started, t.finished), (Some(1_767_225_600_000), Some(1_767_225_603_600)));
        assert_eq!(t.nodes.len(), 1);
        let b1 = &t.nodes["b1"];
        let base = 1_767_225_600_000;
        assert_eq!(
            (b1.requested, b1.started, b1.finished, b1.recorded, b1.failed),
            (Some(base + 100), Some(base + 900), Some(base + 2950), Some(base + 3500), false)
        );
        assert_eq!(t.waves[&1], (Some(base), Some(base + 3500)));
        assert!(t.refill.is_empty(), "the first request of a wave is no refill");
        let text = text(&json!({"id": r, "state": "completed"}), &t);
        assert!(text.contains("total (rollout.started -> rollout.completed): 3.60 s"), "{text}");
        assert!(text.contains("wave 1 (bodies, 1 nodes): 3.50 s"), "{text}");
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for leg in [
            "(a) library request -> cluster provision.started n=1 mean 800 ms",
            "(b) provision.started -> provision.completed n=1 mean 2050 ms",
            "(c) provision.completed -> rollout.node_completed n=1 mean 550 ms",
            "request -> rollout.node_completed (a+b+c) n=1 mean 3400 ms",
            "(d) node result -> next node requested (slot refill) no samples",
        ] {
            assert!(flat.contains(leg), "{leg} in {text}");
        }
    }
}
