//! Rolling uptime: per node, when it joined, whether the log says it is online and
//! since when, and the up seconds of each hour of the last 30 days, folded from
//! `node.online`/`node.offline` (and enrolment, removal and `provision.*`), so a 30-day
//! figure is a sum of at most 721 small numbers and replay gives the same answer.

use hydra_events::{Envelope, Event, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

pub const HOUR_S: u64 = 3600;
/// Hourly buckets kept per node: 30 days and the current hour. So 30 days is the
/// longest window there is; older hours are dropped as new ones close.
pub const HOURS_KEPT: u64 = 30 * 24 + 1;
/// Down spans inside provisioning runs kept per node (each is a few words). A node
/// that went offline more often than this inside its runs of the last 30 days loses
/// the grace of the oldest ones; the rule keeps the view bounded whatever the log says.
pub const GRACE_SPANS_KEPT: usize = 256;

/// The hour (index since the epoch) that second `s` falls in.
pub fn hour_of(s: u64) -> u64 {
    s / HOUR_S
}

/// A down interval while a provisioning run was open: its first `grace` seconds after
/// `run_s` count as up. The grace is a setting, applied when read, so the views need
/// no config and changing it changes the figures of the past too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraceSpan {
    pub run_s: u64,
    pub from_s: u64,
    pub to_s: u64,
}

impl GraceSpan {
    /// The seconds of this span inside `[from, to)` and inside the grace of its run.
    fn credit(&self, from: u64, to: u64, grace_s: u64) -> u64 {
        let lo = self.from_s.max(self.run_s).max(from);
        let hi = self.to_s.min(self.run_s.saturating_add(grace_s)).min(to);
        hi.saturating_sub(lo)
    }
}

/// Up and down seconds of some stretch of a node's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub up_s: u64,
    pub down_s: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.up_s += other.up_s;
        self.down_s += other.down_s;
    }

    /// Up as a percentage of the time counted; none when nothing was counted.
    pub fn pct(&self) -> Option<f64> {
        let total = self.up_s + self.down_s;
        (total > 0).then(|| self.up_s as f64 * 100.0 / total as f64)
    }
}

/// One node's uptime record. Times are whole seconds (event times truncated): the
/// hours are exact sums and nothing finer matters for uptime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UptimeView {
    /// When the node joined the fleet (enrolled, registered as a head, imported).
    pub since_s: u64,
    /// What the log says now, and since when: the open interval, counted when read.
    pub online: bool,
    pub open_since_s: u64,
    /// The start of the provisioning run open now, if one is.
    pub provisioning_since_s: Option<u64>,
    /// The hour of `up[0]`.
    pub first_hour: u64,
    /// Up seconds of each hour from `first_hour` to the hour of `open_since_s`, of the
    /// closed intervals only (the rest of each hour since the node joined was down).
    /// Stored as runs: most hours are all up, so a steady node's 30 days are a few
    /// bytes in a snapshot instead of 2 KB.
    #[serde(with = "runs")]
    pub up: VecDeque<u16>,
    /// Closed down spans inside provisioning runs, oldest first.
    pub grace_spans: VecDeque<GraceSpan>,
}

impl UptimeView {
    fn new(at_s: u64) -> Self {
        UptimeView {
            since_s: at_s,
            online: false,
            open_since_s: at_s,
            provisioning_since_s: None,
            first_hour: hour_of(at_s),
            up: VecDeque::from([0]),
            grace_spans: VecDeque::new(),
        }
    }

    /// Closes the open interval at `at_s` (never before it began: a clock that went
    /// back closes an empty interval) and opens the next one there.
    fn close(&mut self, at_s: u64) {
        let (from, to) = (self.open_since_s, at_s.max(self.open_since_s));
        self.cover(hour_of(to));
        if self.online {
            let mut h = hour_of(from).max(self.first_hour);
            while h * HOUR_S < to {
                let lo = from.max(h * HOUR_S);
                let hi = to.min((h + 1) * HOUR_S);
                let slot = &mut self.up[(h - self.first_hour) as usize];
                // An hour holds at most 3600 seconds, so this never saturates.
                *slot = slot.saturating_add(hi.saturating_sub(lo) as u16);
                h += 1;
            }
        } else if let Some(run_s) = self.provisioning_since_s {
            if to > from {
                if self.grace_spans.len() == GRACE_SPANS_KEPT {
                    self.grace_spans.pop_front();
                }
                self.grace_spans.push_back(GraceSpan { run_s, from_s: from, to_s: to });
            }
        }
        self.open_since_s = to;
        let kept_from = self.first_hour * HOUR_S;
        while self.grace_spans.front().is_some_and(|s| s.to_s <= kept_from) {
            self.grace_spans.pop_front();
        }
    }

    /// Buckets up to `hour`, dropping those more than `HOURS_KEPT` before it.
    fn cover(&mut self, hour: u64) {
        let last = self.first_hour + self.up.len() as u64 - 1;
        if hour <= last {
            return;
        }
        let keep_from = (hour + 1).saturating_sub(HOURS_KEPT);
        if keep_from > last {
            self.up.clear();
            self.first_hour = keep_from;
        } else {
            while self.first_hour < keep_from {
                self.up.pop_front();
                self.first_hour += 1;
            }
        }
        while self.first_hour + (self.up.len() as u64) <= hour {
            self.up.push_back(0);
        }
    }

    /// The end of any window read now: `now_s`, but never before what the log has
    /// recorded of the node.
    pub fn end(&self, now_s: u64) -> u64 {
        now_s.max(self.open_since_s)
    }

    /// Up and down seconds in `[from_hour's start, to_s)`, clipped to the node's life
    /// and to the hours kept, where `to_s` is an hour's start or at least `end(..)`
    /// (the buckets cannot be split); down time within `grace_s` of the start of a
    /// provisioning run counts as up.
    pub fn tally(&self, from_hour: u64, to_s: u64, grace_s: u64) -> Tally {
        let from = (from_hour.max(self.first_hour) * HOUR_S).max(self.since_s);
        if to_s <= from {
            return Tally::default();
        }
        let mut t = Tally::default();
        let closed_end = to_s.min(self.open_since_s);
        if closed_end > from {
            let lo = (hour_of(from) - self.first_hour) as usize;
            let hi = (hour_of(closed_end - 1) - self.first_hour) as usize;
            let up: u64 = self.up.range(lo..=hi).map(|&u| u as u64).sum();
            t.up_s += up;
            t.down_s += (closed_end - from).saturating_sub(up);
        }
        let open_from = from.max(self.open_since_s);
        let open = to_s.saturating_sub(open_from);
        if self.online {
            t.up_s += open;
        } else {
            t.down_s += open;
        }
        if grace_s > 0 {
            let open_span = match (self.online, self.provisioning_since_s) {
                (false, Some(run_s)) => Some(GraceSpan { run_s, from_s: self.open_since_s, to_s }),
                _ => None,
            };
            let credit: u64 =
                self.grace_spans.iter().chain(open_span.iter()).map(|s| s.credit(from, to_s, grace_s)).sum();
            let credit = credit.min(t.down_s);
            t.up_s += credit;
            t.down_s -= credit;
        }
        t
    }

    /// The same, hour by hour: each hour's start and end (clipped to the node's life
    /// and to `to_s`) and its tally, oldest first; they add up to `tally`.
    pub fn hourly(&self, from_hour: u64, to_s: u64, grace_s: u64) -> Vec<(u64, u64, Tally)> {
        let first = from_hour.max(self.first_hour).max(hour_of(self.since_s));
        let mut out = Vec::new();
        let mut h = first;
        while h * HOUR_S < to_s {
            let start = (h * HOUR_S).max(self.since_s);
            let end = ((h + 1) * HOUR_S).min(to_s);
            if end > start {
                out.push((start, end, self.tally(h, end, grace_s)));
            }
            h += 1;
        }
        out
    }
}

/// `up` in snapshots: `(value, count)` runs of equal hours.
mod runs {
    use super::HOURS_KEPT;
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::VecDeque;

    pub fn serialize<S: Serializer>(up: &VecDeque<u16>, s: S) -> Result<S::Ok, S::Error> {
        let mut runs: Vec<(u16, u16)> = Vec::new();
        for &hour in up {
            match runs.last_mut() {
                Some((value, count)) if *value == hour => *count += 1,
                _ => runs.push((hour, 1)),
            }
        }
        runs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<u16>, D::Error> {
        let runs: Vec<(u16, u16)> = Vec::deserialize(d)?;
        let mut up = VecDeque::new();
        for (value, count) in runs {
            if up.len() + count as usize > HOURS_KEPT as usize {
                return Err(D::Error::custom("more hours than an uptime record keeps"));
            }
            up.extend(std::iter::repeat_n(value, count as usize));
        }
        Ok(up)
    }
}

/// Every node's uptime record.
pub type UptimeViews = BTreeMap<NodeId, UptimeView>;

pub(crate) fn apply(views: &mut UptimeViews, envelope: &Envelope) {
    let at_s = envelope.at_ms / 1000;
    match &envelope.event {
        Event::NodeEnrolled { node_id, .. } | Event::HeadRegistered { node_id, .. } => {
            views.insert(node_id.clone(), UptimeView::new(at_s));
        }
        // An import with `--update` keeps the record of a node already here.
        Event::NodeImported { node_id, .. } => {
            views.entry(node_id.clone()).or_insert_with(|| UptimeView::new(at_s));
        }
        Event::NodeRemoved { node_id } => {
            views.remove(node_id);
        }
        Event::NodeOnline { node_id } => {
            if let Some(v) = views.get_mut(node_id).filter(|v| !v.online) {
                v.close(at_s);
                v.online = true;
            }
        }
        Event::NodeOffline { node_id, last_seen_ms } => {
            if let Some(v) = views.get_mut(node_id).filter(|v| v.online) {
                // Down from the last heartbeat, not from when the timeout noticed it;
                // never before the interval began nor after the event.
                let at = at_s.max(v.open_since_s);
                v.close((last_seen_ms / 1000).clamp(v.open_since_s, at));
                v.online = false;
            }
        }
        Event::ProvisionStarted { node_id } => {
            if let Some(v) = views.get_mut(node_id) {
                v.close(at_s);
                v.provisioning_since_s = Some(v.open_since_s);
            }
        }
        Event::ProvisionCompleted { node_id, .. } | Event::ProvisionFailed { node_id, .. } => {
            if let Some(v) = views.get_mut(node_id) {
                v.close(at_s);
                v.provisioning_since_s = None;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydra_events::{CURRENT_SCHEMA, ZERO_HASH};

    const H: u64 = HOUR_S;
    /// A day start, so that hours are easy to count from it.
    const T0: u64 = 1_700_000_000 / 86_400 * 86_400;

    fn id() -> NodeId {
        NodeId::parse("node-u1").unwrap()
    }

    /// The views after `events`, each at its own time (seconds).
    fn fold(events: Vec<(u64, Event)>) -> UptimeViews {
        let mut views = UptimeViews::new();
        for (i, (at_s, event)) in events.into_iter().enumerate() {
            let envelope = Envelope {
                seq: i as u64 + 1,
                at_ms: at_s * 1000 + 999, // the milliseconds are dropped
                schema: CURRENT_SCHEMA,
                cause: "test".into(),
                prev_hash: ZERO_HASH,
                event,
            };
            apply(&mut views, &envelope);
        }
        views
    }

    fn enrolled(at: u64) -> (u64, Event) {
        (at, Event::NodeEnrolled { node_id: id(), name: "b".into(), ip: "10.0.0.1".into() })
    }
    fn online(at: u64) -> (u64, Event) {
        (at, Event::NodeOnline { node_id: id() })
    }
    fn offline(at: u64, last_seen_s: u64) -> (u64, Event) {
        (at, Event::NodeOffline { node_id: id(), last_seen_ms: last_seen_s * 1000 })
    }
    fn started(at: u64) -> (u64, Event) {
        (at, Event::ProvisionStarted { node_id: id() })
    }
    fn completed(at: u64) -> (u64, Event) {
        (at, Event::ProvisionCompleted { node_id: id(), version: None })
    }

    fn view(events: Vec<(u64, Event)>) -> UptimeView {
        fold(events).remove(&id()).expect("the node has a record")
    }

    fn tally(up_s: u64, down_s: u64) -> Tally {
        Tally { up_s, down_s }
    }

    /// The scripted day the integration test also uses: enrolled at 0, online at
    /// 0:10, offline at 5:00 (last heartbeat 4:58:30), online at 6:30, offline at
    /// 20:00 (last seen 19:59), online at 23:00, read at 24:00.
    fn scripted_day() -> UptimeView {
        view(vec![
            enrolled(T0),
            online(T0 + 600),
            offline(T0 + 5 * H, T0 + 5 * H - 90),
            online(T0 + 6 * H + 1800),
            offline(T0 + 20 * H, T0 + 20 * H - 60),
            online(T0 + 23 * H),
        ])
    }

    #[test]
    fn a_scripted_day_gives_the_hand_computed_figure() {
        let v = scripted_day();
        let now = T0 + 24 * H;
        // up: 0:10→4:58:30 (17310 s), 6:30→19:59 (48540 s), 23:00→24:00 (3600 s)
        let up = 17_310 + 48_540 + 3_600;
        assert_eq!(v.tally(hour_of(now) - 24, v.end(now), 0), tally(up, 24 * H - up));
        // An earlier window reads the open interval up to its own end.
        assert_eq!(v.tally(hour_of(T0), T0 + 6 * H, 0), tally(17_310, 6 * H - 17_310));
        // Hour 4 holds 58:30 up, hour 5 none, hour 6 the last half.
        let hours = v.hourly(hour_of(T0), now, 0);
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[0], (T0, T0 + H, tally(3000, 600)));
        assert_eq!(hours[4].2, tally(3510, 90));
        assert_eq!(hours[5].2, tally(0, H));
        assert_eq!(hours[6].2, tally(1800, 1800));
        assert_eq!(hours[23].2, tally(H, 0));
    }

    #[test]
    fn the_window_is_clipped_to_the_nodes_life() {
        let v = view(vec![enrolled(T0 + 1800), online(T0 + 2400)]);
        let now = T0 + 2 * H;
        // A 24-hour window on a node 90 minutes old counts those 90 minutes.
        assert_eq!(v.tally(hour_of(now) - 24, now, 0), tally(H + 1200, 600));
        let hours = v.hourly(hour_of(now) - 24, now, 0);
        assert_eq!(hours, vec![(T0 + 1800, T0 + H, tally(1200, 600)), (T0 + H, T0 + 2 * H, tally(H, 0))]);
    }

    #[test]
    fn history_adds_up_to_the_window() {
        let v = scripted_day();
        for (from_hour, to) in [(hour_of(T0), T0 + 24 * H), (hour_of(T0) + 3, T0 + 30 * H + 17)] {
            let mut sum = Tally::default();
            for (_, _, t) in v.hourly(from_hour, to, 600) {
                sum.add(t);
            }
            assert_eq!(sum, v.tally(from_hour, to, 600));
            assert_eq!(sum.up_s + sum.down_s, to - from_hour * H);
        }
    }

    #[test]
    fn provisioning_counts_as_up_within_the_grace_only() {
        // Online, provisioning starts at 1:00, the node is silent from 1:05 (last
        // seen) to 2:00, provisioning completes at 2:00.
        let v = view(vec![
            enrolled(T0),
            online(T0),
            started(T0 + H),
            offline(T0 + H + 900, T0 + H + 300),
            online(T0 + 2 * H),
            completed(T0 + 2 * H),
        ]);
        let to = T0 + 3 * H;
        let down = H - 300;
        assert_eq!(v.tally(hour_of(T0), to, 0), tally(3 * H - down, down), "no grace");
        assert_eq!(
            v.tally(hour_of(T0), to, 30 * 60),
            tally(3 * H - down + 1500, down - 1500),
            "half in grace"
        );
        assert_eq!(v.tally(hour_of(T0), to, 2 * H), tally(3 * H, 0), "all of it in grace");
        // Down after the run is down, whatever the grace.
        let v = view(vec![
            enrolled(T0),
            online(T0),
            started(T0 + H),
            completed(T0 + H + 60),
            offline(T0 + 2 * H, T0 + 2 * H),
        ]);
        assert_eq!(v.tally(hour_of(T0), to, 3 * H), tally(2 * H, H));
        // A run still open while down: the open interval gets its grace too.
        let v = view(vec![enrolled(T0), online(T0), started(T0 + H), offline(T0 + H + 600, T0 + H)]);
        assert_eq!(v.tally(hour_of(T0), to, 30 * 60), tally(H + 1800, H + 1800));
    }

    #[test]
    fn old_hours_are_dropped_and_a_long_interval_fills_only_the_kept_ones() {
        let v = view(vec![enrolled(T0), online(T0), offline(T0 + 90 * 24 * H, T0 + 90 * 24 * H)]);
        assert_eq!(v.up.len() as u64, HOURS_KEPT);
        assert_eq!(v.first_hour, hour_of(T0) + 90 * 24 - (HOURS_KEPT - 1));
        let now = T0 + 90 * 24 * H;
        // 30 days of up, then the current hour's start; nothing older is counted.
        assert_eq!(v.tally(hour_of(now) - 30 * 24, now, 0), tally(30 * 24 * H, 0));
        assert_eq!(v.tally(0, now, 0), tally(30 * 24 * H, 0), "a longer window is clipped to what is kept");
    }

    #[test]
    fn clocks_that_go_back_give_no_negative_durations() {
        // The offline event is stamped before the online one, its last heartbeat even
        // earlier: nothing is counted backwards and nothing wraps.
        let mut events = vec![enrolled(T0 + H), online(T0 + 2 * H), offline(T0 + H, T0)];
        let v = view(events.clone());
        assert_eq!((v.online, v.open_since_s), (false, T0 + 2 * H));
        events.push(online(T0));
        let back = view(events);
        assert_eq!(
            (back.online, back.open_since_s, back.tally(hour_of(T0), T0 + 2 * H, 0)),
            (true, T0 + 2 * H, tally(0, H))
        );
        // Read "now" before the last transition: the window ends at the transition.
        assert_eq!(v.end(T0), T0 + 2 * H);
        assert_eq!(v.tally(hour_of(T0), v.end(T0), 0), tally(0, H));
    }

    #[test]
    fn a_snapshot_keeps_the_hours_as_runs() {
        let uptime =
            fold(vec![enrolled(T0), online(T0 + 600), offline(T0 + 40 * 24 * H, T0 + 40 * 24 * H - 90)]);
        let mut views = crate::ClusterViews { uptime, ..Default::default() };
        views.uptime.get_mut(&id()).unwrap().up[7] = 1234;
        let bytes = crate::encode_snapshot(&views);
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
        let back: crate::ClusterViews = crate::decode_snapshot(&bytes).unwrap();
        assert_eq!(back, views);
    }

    #[test]
    fn removal_forgets_and_a_new_enrolment_starts_afresh() {
        let mut events = vec![enrolled(T0), online(T0)];
        events.push((T0 + H, Event::NodeRemoved { node_id: id() }));
        assert!(fold(events.clone()).is_empty());
        events.push(enrolled(T0 + 2 * H));
        let v = view(events);
        assert_eq!((v.since_s, v.online), (T0 + 2 * H, false));
    }
}
