//! Rolling uptime end to end: a log written with controlled timestamps (a scripted
//! sequence of online/offline transitions and provisioning runs) served by a real
//! server gives the hand-computed figures, now, as of a past time or seq and after a
//! restart; the audit's digest covers it; the node list, the fleet endpoint and the
//! CLI show the same; a live node's figure adds up.

use crate::common::*;
use hydra_core::store::{Record, Store};
use hydra_events::{Envelope, Event, NodeId, CURRENT_SCHEMA, ZERO_HASH};
use serde_json::Value;

const H: u64 = 3600;

fn id(s: &str) -> NodeId {
    NodeId::parse(s).unwrap()
}

/// A data dir whose log holds `events` at their times (unix seconds), chained and
/// indexed as the ledger writes them.
fn data_dir_with(events: Vec<(u64, Event)>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut prev_hash = ZERO_HASH;
    for (i, (at_s, event)) in events.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let envelope = Envelope {
            seq,
            at_ms: at_s * 1000,
            schema: CURRENT_SCHEMA,
            cause: "script".into(),
            prev_hash,
            event,
        };
        let bytes = hydra_events::encode(&envelope);
        prev_hash = hydra_events::hash(&bytes);
        store.append(&[Record { seq, bytes: &bytes, node_id: envelope.event.node_id() }], &[]).unwrap();
    }
    store.set_layout_version(hydra_migrations::LAYOUT_VERSION).unwrap();
    store.flush().unwrap();
    dir
}

fn enrolled(node: &str) -> Event {
    Event::NodeEnrolled { node_id: id(node), name: node.into(), ip: "10.0.0.1".into() }
}
fn online(node: &str) -> Event {
    Event::NodeOnline { node_id: id(node) }
}
fn went_offline(node: &str, last_seen_s: u64) -> Event {
    Event::NodeOffline { node_id: id(node), last_seen_ms: last_seen_s * 1000 }
}
fn started(node: &str) -> Event {
    Event::ProvisionStarted { node_id: id(node) }
}
fn completed(node: &str) -> Event {
    Event::ProvisionCompleted { node_id: id(node), version: Some("1.0".into()) }
}

/// The script, from `t0` (an hour's start two days ago), every node offline at its end:
/// - node-a: online at 0:10, offline 5:00 (last heartbeat 4:58:30), online 6:30,
///   offline 20:00 (last heartbeat 19:59), online 23:00, offline 24:00.
///   Up: 17,310 + 48,540 + 3,600 = 69,450 s.
/// - node-b: online at 0:00, reinstalls from 1:00 (silent from 1:05 to 2:00, beyond
///   the 30-minute grace), offline 3:00. Up: 3,900 + 1,500 of grace + 3,600 = 9,000 s.
/// - node-c: the same, silent from 1:05 to 1:20 only (inside the grace). Up: 10,800 s.
fn script(t0: u64) -> Vec<(u64, Event)> {
    let mut e = vec![(t0, enrolled("node-a")), (t0, enrolled("node-b")), (t0, enrolled("node-c"))];
    e.extend([
        (t0 + 600, online("node-a")),
        (t0 + 5 * H, went_offline("node-a", t0 + 5 * H - 90)),
        (t0 + 6 * H + 1800, online("node-a")),
        (t0 + 20 * H, went_offline("node-a", t0 + 20 * H - 60)),
        (t0 + 23 * H, online("node-a")),
        (t0 + 24 * H, went_offline("node-a", t0 + 24 * H)),
    ]);
    e.extend([
        (t0, online("node-b")),
        (t0 + H, started("node-b")),
        (t0 + H + 900, went_offline("node-b", t0 + H + 300)),
        (t0 + 2 * H, online("node-b")),
        (t0 + 2 * H, completed("node-b")),
        (t0 + 3 * H, went_offline("node-b", t0 + 3 * H)),
    ]);
    e.extend([
        (t0, online("node-c")),
        (t0 + H, started("node-c")),
        (t0 + H + 600, went_offline("node-c", t0 + H + 300)),
        (t0 + H + 1200, online("node-c")),
        (t0 + H + 1200, completed("node-c")),
        (t0 + 3 * H, went_offline("node-c", t0 + 3 * H)),
    ]);
    e.sort_by_key(|(at, _)| *at);
    e
}

fn rfc3339(s: u64) -> String {
    hydra_core::envelope::rfc3339(s * 1000)
}

fn seconds(v: &Value, key: &str) -> u64 {
    let t = humantime::parse_rfc3339(v[key].as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn figures(v: &Value) -> (u64, u64) {
    (v["up_seconds"].as_u64().unwrap(), v["down_seconds"].as_u64().unwrap())
}

/// `(up, down)` of each node over 7 days read now: up as scripted, down the rest of
/// the window from the node's enrolment (`from`) to now (`to`).
async fn week_now(s: &TestServer, t0: u64) -> Vec<u64> {
    let mut ups = Vec::new();
    for node in ["node-a", "node-b", "node-c"] {
        let (status, v) = get(s, &format!("/api/v1/nodes/{node}/uptime?window=7d"), OBSERVER).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            (v["window"].as_str(), v["clipped"].as_bool(), seconds(&v, "from")),
            (Some("7d"), Some(true), t0)
        );
        let (up, down) = figures(&v);
        assert_eq!(up + down, seconds(&v, "to") - t0, "{v}");
        ups.push(up);
    }
    ups
}

#[tokio::test]
async fn a_scripted_log_gives_the_hand_computed_uptime_now_as_of_and_after_a_restart() {
    let now = hydra_core::ledger::now_ms() / 1000;
    let t0 = now / H * H - 48 * H;
    let mut s = serve_dir(data_dir_with(script(t0)), |_| {}).await.unwrap();

    assert_eq!(week_now(&s, t0).await, [69_450, 9_000, 10_800]);

    // As of the end of node-a's first day: both figures exact, and by the hour.
    let day_end = rfc3339(t0 + 24 * H);
    let (_, v) = get(&s, &format!("/api/v1/nodes/node-a/uptime?window=24h&as_of={day_end}"), ADMIN).await;
    assert_eq!(figures(&v), (69_450, 24 * H - 69_450), "{v}");
    assert_eq!(
        (seconds(&v, "from"), seconds(&v, "to"), v["clipped"].as_bool()),
        (t0, t0 + 24 * H, Some(false))
    );
    assert_eq!(v["uptime_pct"], 80.382, "{v}");
    let as_of_day = v;
    let path = format!("/api/v1/nodes/node-a/uptime/history?window=24h&granularity=hourly&as_of={day_end}");
    let (_, h) = get(&s, &path, ADMIN).await;
    let buckets = h["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 24, "{h}");
    assert_eq!(
        (figures(&buckets[0]), figures(&buckets[4]), figures(&buckets[6])),
        ((3000, 600), (3510, 90), (1800, 1800))
    );
    let sum = buckets.iter().map(figures).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(sum, (69_450, 24 * H - 69_450), "the hours add up to the window");
    let (_, d) = get(&s, &path.replace("hourly", "daily"), ADMIN).await;
    // Days are UTC days, the first from the window's start.
    let days = d["buckets"].as_array().unwrap();
    let day_sum = days.iter().map(figures).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(day_sum, sum, "{d}");
    assert_eq!(seconds(&days[0], "start"), t0);
    assert!(days[1..].iter().all(|b| seconds(b, "start").is_multiple_of(86_400)), "{d}");

    // As of a seq: node-b's log up to its return at 2:00 (the run still open).
    let (_, log) = get(&s, "/api/v1/events/log?types=node.online&node=node-b", ADMIN).await;
    let seq = log["events"].as_array().unwrap().last().unwrap()["seq"].as_u64().unwrap();
    let (_, v) = get(&s, &format!("/api/v1/nodes/node-b/uptime?window=24h&as_of_seq={seq}"), ADMIN).await;
    assert_eq!(figures(&v), (H + 300 + 1500, H - 300 - 1500), "{v}");

    // The node list's 24 hours: every node has been offline all of them.
    let (_, nodes) = get(&s, "/api/v1/nodes", ADMIN).await;
    let pcts: Vec<&Value> = nodes.as_array().unwrap().iter().map(|n| &n["uptime_pct"]).collect();
    assert_eq!(pcts, [&serde_json::json!(0.0); 3], "{nodes}");
    // The fleet endpoint agrees with the node's.
    let (status, fleet) =
        get(&s, &format!("/api/v1/uptime?window=24h&as_of={day_end}&limit=1"), OBSERVER).await;
    assert_eq!(status, 200);
    assert_eq!(fleet[0], as_of_day, "{fleet}");

    // Without the grace, node-b's silence is all down, node-c's too.
    s.restart_with(|c| c.uptime_provision_grace = std::time::Duration::ZERO).await;
    assert_eq!(week_now(&s, t0).await, [69_450, 7_500, 9_900]);

    // A restart (from the snapshot the stop wrote) answers the same, and so does the
    // offline audit's replay.
    s.restart().await;
    assert_eq!(week_now(&s, t0).await, [69_450, 9_000, 10_800]);
    let (_, v) = get(&s, &format!("/api/v1/nodes/node-a/uptime?window=24h&as_of={day_end}"), ADMIN).await;
    assert_eq!(v, as_of_day);
    let (_, live) = get(&s, "/api/v1/audit/digest", ADMIN).await;
    s.stop().await;
    let (ok, out) = offline(&["audit", "--json"], s.dir.path());
    assert!(ok, "{out}");
    let report: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(report["digest"], live["digest"], "{out}");
}

#[tokio::test]
async fn the_cli_shows_a_nodes_uptime_the_fleets_and_the_column_of_the_node_list() {
    let now = hydra_core::ledger::now_ms() / 1000;
    let t0 = now / H * H - 48 * H;
    let s = serve_dir(data_dir_with(script(t0)), |_| {}).await.unwrap();
    let out = admin_cli(&s, &["uptime", "node-a", "--window", "7d", "--json"]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(figures(&v).0, 69_450);
    let out = admin_cli(&s, &["uptime", "node-c", "--window", "7d", "--history", "daily"]).await;
    let shown = text(&out.stdout);
    assert!(
        shown.contains("START") && shown.contains("node-c 7d: ") && shown.contains("10800 s up"),
        "{shown}"
    );
    let out = admin_cli(&s, &["uptime"]).await;
    let shown = text(&out.stdout);
    assert!(["node-a", "node-b", "node-c", "0.000%"].iter().all(|w| shown.contains(w)), "{shown}");
    let out = admin_cli(&s, &["nodes"]).await;
    let shown = text(&out.stdout);
    assert!(shown.lines().next().unwrap().ends_with("UPTIME_24H") && shown.contains("0.000%"), "{shown}");
    let out = admin_cli(&s, &["uptime", "node-a", "--window", "1h"]).await;
    assert!(!out.status.success() && all_output(&out).contains("24h, 7d, 30d"), "{}", all_output(&out));
}

#[tokio::test]
async fn a_live_nodes_uptime_adds_up_and_ends_with_the_node() {
    let (s, node, token) = app_with_body(|_| {}).await;
    heartbeat(&s, &token, serde_json::json!({})).await;
    assert_eq!(node_status(&s, &node).await, "online");
    let (status, v) = get(&s, &format!("/api/v1/nodes/{node}/uptime"), OBSERVER).await;
    assert_eq!(status, 200, "{v}");
    let (up, down) = figures(&v);
    assert_eq!(up + down, seconds(&v, "to") - seconds(&v, "from"), "{v}");
    assert_eq!((v["window"].as_str(), v["clipped"].as_bool()), (Some("24h"), Some(true)));
    let (_, h) = get(&s, &format!("/api/v1/nodes/{node}/uptime/history"), OBSERVER).await;
    let sum =
        h["buckets"].as_array().unwrap().iter().map(figures).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert!(sum.0 + sum.1 >= up + down, "read later, never less: {h} {v}");
    delete(&s, &format!("/api/v1/nodes/{node}"), ADMIN).await;
    let (status, _) = get(&s, &format!("/api/v1/nodes/{node}/uptime"), ADMIN).await;
    assert_eq!(status, 404);
}

async fn node_status(s: &TestServer, id: &str) -> String {
    node(s, id).await["node_status"].as_str().unwrap().to_owned()
}
