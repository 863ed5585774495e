//! `hydra-bench uptime`: a fleet-wide 30-day uptime query over a fleet whose every
//! node has a full 30 days of hourly buckets (each went offline for ten minutes once a
//! day for 31 days), against a real in-process server started on that log: the
//! fold itself (all nodes' 30-day tally on the shared views) and the HTTP answer
//! (`GET /api/v1/uptime?window=30d`, every page), plus the buckets' size in a snapshot.

use super::stats::memory_mb;
use super::{enrollment, node_ids, server_config, write_log, ADMIN_TOKEN};
use hydra::cluster::server;
use hydra_core::ledger::now_ms;
use hydra_core::store::Store;
use hydra_events::Event;
use hydra_projections::{encode_snapshot, hour_of, ClusterViews};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

const DAY_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone)]
pub struct UptimeSettings {
    pub nodes: usize,
    pub days: u64,
    /// Timed repetitions of each query.
    pub rounds: usize,
}

#[derive(Debug, Clone)]
pub struct UptimeReport {
    pub nodes: usize,
    pub events: u64,
    pub write: Duration,
    pub start: Duration,
    /// All nodes' 30-day tally on the shared views, in memory (median, worst).
    pub fold: (Duration, Duration),
    /// The same over HTTP, all pages of 5,000 (median, worst).
    pub http: (Duration, Duration),
    pub pages: usize,
    /// Bytes of the uptime views in a snapshot, and the RSS after start-up.
    pub snapshot_bytes: usize,
    pub rss_mb: u64,
    /// The fleet's up seconds summed both ways (they must agree).
    pub up_fold: u64,
    pub up_http: u64,
}

/// The log: `nodes` nodes enrolled `days` days ago and online at once, then each
/// silent for ten minutes once a day (last heartbeat 90 s before it is noticed),
/// spread over the day, in time order.
fn fleet_log(nodes: usize, days: u64, start_ms: u64) -> impl Iterator<Item = (u64, String, Event)> {
    let ids = node_ids(nodes, 5);
    let spread = DAY_MS / nodes as u64;
    let first: Vec<(u64, String, Event)> = ids
        .iter()
        .enumerate()
        .flat_map(|(i, id)| {
            [
                (start_ms, "enroll".to_owned(), enrollment(id, i)),
                (start_ms, "heartbeat".to_owned(), Event::NodeOnline { node_id: id.clone() }),
            ]
        })
        .collect();
    let daily = (0..days).flat_map(move |d| {
        let mut day: Vec<(u64, String, Event)> = ids
            .iter()
            .enumerate()
            .flat_map(|(i, id)| {
                let down = start_ms + d * DAY_MS + i as u64 * spread + 60_000;
                let offline = Event::NodeOffline { node_id: id.clone(), last_seen_ms: down - 90_000 };
                [
                    (down, "offline-check".to_owned(), offline),
                    (down + 600_000, "heartbeat".to_owned(), Event::NodeOnline { node_id: id.clone() }),
                ]
            })
            .collect();
        day.sort_by_key(|(at, _, _)| *at);
        day
    });
    first.into_iter().chain(daily)
}

/// Median and worst of `rounds` runs of `f`.
fn timed<T>(
    rounds: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<((Duration, Duration), T)> {
    let mut times = Vec::with_capacity(rounds);
    let mut last = None;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        last = Some(f()?);
        times.push(t.elapsed());
    }
    times.sort();
    Ok((
        (times[times.len() / 2], *times.last().expect("one round at least")),
        last.expect("one round at least"),
    ))
}

pub fn run(dir: &Path, s: &UptimeSettings, progress: &dyn Fn(&str)) -> anyhow::Result<UptimeReport> {
    anyhow::ensure!(s.nodes > 0 && s.days > 0, "--nodes and --days must be at least 1");
    let data = dir.join("uptime");
    let start_ms = now_ms().saturating_sub(s.days * DAY_MS + 3_600_000);
    progress(&format!("uptime: writing {} days of a {}-node fleet", s.days, s.nodes));
    let t = Instant::now();
    let events = write_log(&Store::open(&data)?, fleet_log(s.nodes, s.days, start_ms))?;
    let write = t.elapsed();

    progress(&format!("uptime: starting a server on {events} events"));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let t = Instant::now();
    let running = runtime.block_on(server::start(server_config(&data)?))?;
    let start = t.elapsed();
    let rss_mb = memory_mb().0;
    let ledger = running.ledger().clone();
    let snapshot_bytes = ledger.read(|v| {
        let only = ClusterViews { uptime: v.uptime.clone(), ..ClusterViews::default() };
        encode_snapshot(&only).len() - encode_snapshot(&ClusterViews::default()).len()
    });

    progress("uptime: all nodes' 30-day tally in memory");
    let grace_s = 30 * 60;
    let (fold, up_fold) = timed(s.rounds, || {
        let now_s = now_ms() / 1000;
        Ok(ledger.read(|v| {
            v.uptime
                .values()
                .map(|u| {
                    let to = u.end(now_s);
                    u.tally(hour_of(to) - 30 * 24, to, grace_s).up_s
                })
                .sum::<u64>()
        }))
    })?;

    progress("uptime: GET /api/v1/uptime?window=30d, every page");
    let url = format!("http://{}/api/v1/uptime", running.addr);
    let client = reqwest::Client::new();
    let (http, (pages, up_http)) = timed(s.rounds, || {
        runtime.block_on(async {
            let (mut pages, mut up, mut after) = (0, 0u64, None::<String>);
            loop {
                let mut q = vec![("window", "30d".to_owned()), ("limit", "5000".to_owned())];
                q.extend(after.clone().map(|a| ("after", a)));
                let r =
                    client.get(&url).query(&q).bearer_auth(ADMIN_TOKEN).send().await?.error_for_status()?;
                let next =
                    r.headers().get("x-hydra-next-after").and_then(|h| h.to_str().ok()).map(str::to_owned);
                let items: Vec<serde_json::Value> = r.json().await?;
                up += items.iter().filter_map(|i| i["up_seconds"].as_u64()).sum::<u64>();
                pages += 1;
                match next {
                    Some(n) => after = Some(n),
                    None => return Ok::<_, anyhow::Error>((pages, up)),
                }
            }
        })
    })?;
    runtime.block_on(running.stop())?;
    Ok(UptimeReport {
        nodes: s.nodes,
        events,
        write,
        start,
        fold,
        http,
        pages,
        snapshot_bytes,
        rss_mb,
        up_fold,
        up_http,
    })
}

impl UptimeReport {
    /// The two ways of asking must count the same (a second apart at most, per node).
    pub fn failures(&self) -> Vec<String> {
        let slack = self.nodes as u64 * 2;
        if self.up_fold.abs_diff(self.up_http) > slack {
            return vec![format!("the fold counted {} s up, HTTP {} s", self.up_fold, self.up_http)];
        }
        Vec::new()
    }

    pub fn text(&self) -> String {
        let mut o = String::new();
        let per_node = self.snapshot_bytes as f64 / self.nodes as f64;
        let _ = writeln!(o, "Hydra uptime benchmark: {} nodes, 30 days of hourly buckets each", self.nodes);
        let _ = writeln!(
            o,
            "  log: {} events written in {:.1?}; server start-up {:.1?}",
            self.events, self.write, self.start
        );
        let _ = writeln!(
            o,
            "  fleet 30-day tally in memory: median {:.2?}, worst {:.2?}",
            self.fold.0, self.fold.1
        );
        let _ = writeln!(
            o,
            "  GET /api/v1/uptime?window=30d ({} pages of 5000): median {:.2?}, worst {:.2?}",
            self.pages, self.http.0, self.http.1
        );
        let _ = writeln!(
            o,
            "  uptime views in a snapshot: {:.1} MB ({per_node:.0} bytes a node); RSS after start-up {} MB",
            self.snapshot_bytes as f64 / 1e6,
            self.rss_mb
        );
        let _ = writeln!(o, "  fleet up seconds: {} (memory), {} (HTTP)", self.up_fold, self.up_http);
        for f in self.failures() {
            let _ = writeln!(o, "FAILURE: {f}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_log_is_in_time_order_and_fills_every_hour() {
        let start = 1_700_000_000_000 / DAY_MS * DAY_MS;
        let log: Vec<_> = fleet_log(3, 31, start).collect();
        assert_eq!(log.len(), 3 * 2 + 31 * 3 * 2);
        assert!(log.windows(2).all(|w| w[0].0 <= w[1].0));
        let mut views = ClusterViews::default();
        for (i, (at_ms, cause, event)) in log.into_iter().enumerate() {
            use hydra_projections::Projection;
            views.apply(&hydra_events::Envelope {
                seq: i as u64 + 1,
                at_ms,
                schema: hydra_events::CURRENT_SCHEMA,
                cause,
                prev_hash: hydra_events::ZERO_HASH,
                event,
            });
        }
        let u = views.uptime.values().next().unwrap();
        assert_eq!(u.up.len() as u64, hydra_projections::HOURS_KEPT);
        assert_eq!(
            u.first_hour * hydra_projections::HOUR_S * 1000 + 30 * DAY_MS,
            u.open_since_s / 3600 * 3600 * 1000
        );
    }
}
