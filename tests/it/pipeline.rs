//! End to end: `hydrapipeline` against real `hydracluster` processes — status of a live
//! and a dead service, the replayed and filtered timeline, and a watch that survives a
//! kill -9 and restart of the cluster without losing or repeating an event.

use crate::common::pipeline::{hydrapipeline, Watcher};
use crate::common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(15);

/// A `hydracluster serve` on a given address (`127.0.0.1:0` for any), with the test
/// admin and observer tokens, so a restart can come back on the same port.
fn cluster_on(data: &Path, listen: &str) -> ServerProcess {
    ServerProcess::start_on(data, listen.parse().unwrap(), "")
}

async fn head(s: &ServerProcess) -> u64 {
    let (status, body) = request(s, reqwest::Method::GET, "/api/v1/health", None, None).await;
    assert_eq!(status, 200);
    body["last_event_id"].as_u64().unwrap()
}

fn consecutive(ids: &[u64]) -> bool {
    ids.windows(2).all(|w| w[1] == w[0] + 1)
}

#[tokio::test]
async fn status_reports_a_running_cluster_as_ok_and_a_dead_url_as_down_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let s = cluster_on(&dir.path().join("data"), "127.0.0.1:0");
    approved_body(&s, "body-1").await;
    let last = head(&s).await;
    assert!(last >= 2);

    let out = hydrapipeline()
        .args(["--service", &format!("hydracluster={}", s.url)])
        .args(["--service", &format!("dead={}", dead_url())])
        .args(["--token", OBSERVER, "status", "--json", "--timeout", "3s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cluster = &doc["services"][0];
    assert_eq!(cluster["name"], "hydracluster");
    assert_eq!(cluster["health"], "ok");
    assert_eq!(cluster["ok"], true);
    assert_eq!(cluster["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(cluster["last_event_id"], last);
    assert!(cluster["lag_ms"].is_u64(), "{cluster}");
    assert!(cluster["response_ms"].is_u64());
    let dead = &doc["services"][1];
    assert_eq!(dead["ok"], false);
    assert_eq!(dead["health"], "down: connection refused");
    assert!(dead["lag_ms"].is_null());

    // Only the live service: exit code 0, and the table names it.
    let out = hydrapipeline()
        .env("HYDRAPIPELINE_SERVICES", format!("hydracluster={}", s.url))
        .env("HYDRAPIPELINE_TOKEN", OBSERVER)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("SERVICE"), "{table}");
    assert!(table.contains("hydracluster") && table.contains(" ok ") && table.contains(" ms"), "{table}");

    // Health is public, the stream is not: a wrong token is ok but says why there is no lag.
    let out = hydrapipeline()
        .args(["--service", &format!("hydracluster={}", s.url), "--token", "wrong", "status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["services"][0]["lag_ms"].is_null());
    assert_eq!(doc["services"][0]["lag_error"], "token refused (401)");
}

#[tokio::test]
async fn bad_services_are_refused_with_a_clear_error() {
    let out = hydrapipeline().args(["--service", "nonsense", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not NAME=URL"));
    let out = hydrapipeline()
        .args(["--service", "a=http://127.0.0.1:1", "watch", "--since", "b=3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such service"));
}

#[tokio::test]
async fn watch_since_0_prints_the_clusters_events_in_order_and_types_keeps_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let s = cluster_on(&dir.path().join("data"), "127.0.0.1:0");
    for name in ["body-1", "body-2", "body-3"] {
        approved_body(&s, name).await;
    }
    let last = head(&s).await;
    let service = format!("hydracluster={}", s.url);

    let all = Watcher::watch(&[("hydracluster", &s.url)], &["--since", "0"]);
    assert!(
        eventually(LIMIT, || async { all.ids().last() == Some(&last) }).await,
        "saw {:?}",
        all.lines.lock().unwrap()
    );
    assert_eq!(all.ids(), (1..=last).collect::<Vec<_>>());
    let events = all.events();
    assert!(events.iter().all(|e| e["service"] == "hydracluster" && e["at"].is_string()));
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.iter().filter(|t| **t == "node.approved").count(), 3, "{types:?}");
    assert!(types.contains(&"node.enrolled"));

    let approved = Watcher::watch(&[("hydracluster", &s.url)], &["--since", "0", "--types", "node.approved"]);
    assert!(eventually(LIMIT, || async { approved.events().len() >= 3 }).await);
    // A fourth approval arrives live, through the filtered stream.
    let (id, _) = approved_body(&s, "body-4").await;
    assert!(eventually(LIMIT, || async { approved.events().len() >= 4 }).await);
    let events = approved.events();
    assert!(events.iter().all(|e| e["type"] == "node.approved"), "{events:?}");
    assert_eq!(events[3]["data"]["node_id"], id.as_str());
    let ids = approved.ids();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // SIGTERM ends it quietly.
    let mut approved = approved;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(approved.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exited = eventually(LIMIT, || {
        let done = approved.child.try_wait().unwrap().is_some();
        async move { done }
    })
    .await;
    assert!(exited, "watch did not end on SIGTERM");
    assert_eq!(approved.child.wait().unwrap().code(), Some(0));

    // `watch | head -1`: once the reader is gone it ends quietly, even with no new event.
    let mut child = hydrapipeline()
        .args(["--service", &service, "--token", OBSERVER, "watch", "--since", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("node.enrolled"), "{first}");
    let exited = eventually(LIMIT, || {
        let done = child.try_wait().unwrap().is_some();
        async move { done }
    })
    .await;
    assert!(exited, "watch kept running after its reader left");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[tokio::test]
async fn watch_survives_a_kill_9_and_restart_without_losing_or_repeating_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = cluster_on(&data, "127.0.0.1:0");
    enroll(&s, "before").await;
    let start = head(&s).await;

    // Default start: live only, from the head.
    let w = Watcher::watch(&[("hydracluster", &s.url)], &[]);
    let url = s.url.clone();
    assert!(
        eventually(LIMIT, || async { sse_subscribers(&s).await == 1 }).await,
        "the watcher never subscribed"
    );
    approved_body(&s, "a").await;
    let mid = head(&s).await;
    assert!(eventually(LIMIT, || async { w.ids().last() == Some(&mid) }).await, "{:?}", w.lines);

    s.kill9();
    assert!(
        eventually(LIMIT, || async { w.json().iter().any(|v| v["type"] == "source.down") }).await,
        "no source.down: {:?}",
        w.lines
    );
    let addr = url.trim_start_matches("http://").to_string();
    // A new process, with a new client: the old one's pooled connections died with it.
    let s = cluster_on(&data, &addr);
    assert_eq!(s.url, url);
    approved_body(&s, "b").await;
    let end = head(&s).await;
    assert!(end > mid);
    assert!(eventually(LIMIT, || async { w.ids().last() == Some(&end) }).await, "{:?}", w.lines);

    assert_eq!(w.ids(), (start + 1..=end).collect::<Vec<_>>(), "each event exactly once");
    assert!(consecutive(&w.ids()));
    let kinds: Vec<String> = w.json().iter().map(|v| v["type"].as_str().unwrap_or("").to_string()).collect();
    let down = kinds.iter().position(|k| k == "source.down").unwrap();
    let up = kinds.iter().position(|k| k == "source.up").expect("source.up after the restart");
    let first_new = w.json().iter().position(|v| v["id"].as_u64() == Some(mid + 1)).unwrap();
    assert!(down < up && up < first_new, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "source.down").count(), 1, "one line per outage: {kinds:?}");
}

#[tokio::test]
async fn watch_merges_the_history_of_two_services_by_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let a = cluster_on(&dir.path().join("a"), "127.0.0.1:0");
    let b = cluster_on(&dir.path().join("b"), "127.0.0.1:0");
    // Interleaved in time: a, b, a, b (each once the clock has moved past the one
    // before, so no two share a timestamp, which is the merge's only clock).
    for i in 0..2 {
        enroll(&a, &format!("a-{i}")).await;
        clock_passes(hydra_core::ledger::now_ms()).await;
        enroll(&b, &format!("b-{i}")).await;
        clock_passes(hydra_core::ledger::now_ms()).await;
    }
    let (head_a, head_b) = (head(&a).await, head(&b).await);
    let w = Watcher::watch(&[("alpha", &a.url), ("beta", &b.url)], &["--since", "0"]);
    let total = (head_a + head_b) as usize;
    assert!(eventually(LIMIT, || async { w.events().len() >= total }).await, "{:?}", w.lines);
    let events = w.events();
    let at: Vec<std::time::SystemTime> =
        events.iter().map(|e| humantime::parse_rfc3339(e["at"].as_str().unwrap()).unwrap()).collect();
    assert!(at.windows(2).all(|p| p[0] <= p[1]), "not in time order: {events:?}");
    for (name, last) in [("alpha", head_a), ("beta", head_b)] {
        let ids: Vec<u64> =
            events.iter().filter(|e| e["service"] == name).map(|e| e["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, (1..=last).collect::<Vec<_>>(), "{name}");
    }
    // The two services' histories interleave rather than one following the other.
    assert_ne!(events[0]["service"], events[1]["service"], "{events:?}");
}
