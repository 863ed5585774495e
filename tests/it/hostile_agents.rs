//! Hostile or broken agents (issue 9): public enrollment is the attack surface. A
//! flapping node's events are bounded by its budget and still end at its latest
//! value; oversized reports are refused and store nothing; the pending queue has a
//! cap; lists come in pages that together hold every node once.

use crate::common::*;
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The node's `node.agent_changed` events, oldest first.
async fn agent_changes(s: &TestServer, id: &str) -> Vec<Value> {
    events(s, &format!("node={id}&types=node.agent_changed")).await
}

/// A server whose event budget for heartbeat changes is one per `approved` for
/// approved nodes and one per `pending` for pending ones.
async fn with_budgets(approved: Duration, pending: Duration) -> TestServer {
    spawn_app_with(|c| {
        c.heartbeat_event_interval = approved;
        c.pending_heartbeat_event_interval = pending;
    })
    .await
}

/// Two alternating (agent_version, os) pairs; heartbeat `i` reports pair `i % 2`.
fn flap(i: usize) -> Value {
    let (version, os) = [("1.0", "linux"), ("2.0", "windows")][i % 2];
    json!({"agent_version": version, "os": os})
}

/// Flaps 200 times in a row; returns how long that took.
async fn flap_200(s: &TestServer, token: &str) -> Duration {
    let started = Instant::now();
    for i in 0..200 {
        let (status, answer) = heartbeat(s, token, flap(i)).await;
        assert_eq!(status, 200, "{answer}");
    }
    started.elapsed()
}

/// Flaps 200 times; the node's `node.agent_changed` events are no more than a budget
/// of `burst` then one per `interval` allows. How many, and how long the flaps took.
async fn flap_within_budget(
    s: &TestServer,
    id: &str,
    token: &str,
    burst: u64,
    interval: Duration,
) -> (usize, Duration) {
    let elapsed = flap_200(s, token).await;
    let written = agent_changes(s, id).await.len();
    assert!(
        written <= allowed(burst, interval, elapsed),
        "200 flaps in {elapsed:?} wrote {written} node.agent_changed events"
    );
    (written, elapsed)
}

/// The most writes a budget of `burst` then one per `interval` allows in `elapsed`.
fn allowed(burst: u64, interval: Duration, elapsed: Duration) -> usize {
    (burst + elapsed.as_millis() as u64 / interval.as_millis() as u64 + 1) as usize
}

/// Waits until the node's view and the last `node.agent_changed` in its log both say
/// the last reported pair, (2.0, windows).
async fn ends_at_the_latest_value(s: &TestServer, id: &str) {
    let settled = eventually(Duration::from_secs(30), || async {
        let node = node(s, id).await;
        let last = agent_changes(s, id).await.pop().unwrap_or(Value::Null);
        node["os"] == "windows"
            && node["agent_version"] == "2.0"
            && node["change_held"] == false
            && last["data"]["os"] == "windows"
            && last["data"]["agent_version"] == "2.0"
    })
    .await;
    assert!(
        settled,
        "the latest value never reached the log: {} {:?}",
        node(s, id).await,
        agent_changes(s, id).await
    );
}

#[tokio::test]
async fn a_flapping_pending_node_writes_a_couple_of_events_and_ends_at_its_latest_value() {
    let interval = Duration::from_secs(2);
    // Were the pending node given the approved budget, its last value would wait an hour.
    let s = with_budgets(Duration::from_secs(3600), interval).await;
    let (id, token) = enroll(&s, "flapper").await;
    let (written, elapsed) = flap_within_budget(&s, &id, &token, 1, interval).await;
    let (_, node) = get(&s, &format!("/api/v1/nodes/{id}"), ADMIN).await;
    let coalesced = node["coalesced_changes"].as_u64().unwrap();
    // Every other flap goes back to what the log says, which is no change at all.
    assert!(coalesced as usize >= 100 - written, "{node}");
    eprintln!("pending: 200 flaps in {elapsed:?} wrote {written} node.agent_changed, {coalesced} coalesced");
    let (_, health) = get(&s, "/api/v1/health", ADMIN).await;
    assert!(health["nodes"]["heartbeat_changes_coalesced"].as_u64().unwrap() >= coalesced, "{health}");

    // The node stops flapping (and heartbeating): the watchdog writes the held value.
    ends_at_the_latest_value(&s, &id).await;
    let written = agent_changes(&s, &id).await.len();
    assert!(written <= allowed(1, interval, elapsed) + 1, "{written} events in all");
}

#[tokio::test]
async fn a_flapping_approved_node_has_its_own_budget_and_flags_never_wait() {
    let interval = Duration::from_secs(2);
    let s = with_budgets(interval, Duration::from_secs(3600)).await;
    let (id, token) = approved_body(&s, "flapper").await;
    let (written, elapsed) = flap_within_budget(&s, &id, &token, 3, interval).await;
    eprintln!("approved: 200 flaps in {elapsed:?} wrote {written} node.agent_changed");

    // Its budget is spent, yet an update flag reaches it with its very next heartbeat.
    let (status, _) = post(&s, &format!("/api/v1/nodes/{id}/update-node"), ADMIN, json!({})).await;
    assert_eq!(status, 200);
    let (_, answer) = heartbeat(&s, &token, flap(0)).await;
    assert_eq!(answer["update_node"], true, "{answer}");
    // And the last reported value still lands in the log.
    let (_, answer) = heartbeat(&s, &token, flap(1)).await;
    assert_eq!(answer["update_node"], false, "{answer}");
    ends_at_the_latest_value(&s, &id).await;
}

#[tokio::test]
async fn oversized_reports_are_refused_naming_the_field_and_store_nothing() {
    let s = spawn_app_with(with_fleet).await;
    let (id, token) = enroll(&s, "chatty").await;
    let (status, _) =
        heartbeat(&s, &token, json!({"agent_version": "1.0", "diagnostics": {"disk": "ok"}})).await;
    assert_eq!(status, 200);
    let before = s.ledger().committed_seq();

    let many: serde_json::Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!(1))).collect();
    let cases = [
        (json!({"diagnostics": {"blob": "x".repeat(900_000)}}), 413, vec!["diagnostics", "4096"]),
        (json!({"telemetry": {"blob": "x".repeat(8000)}}), 413, vec!["telemetry", "4096"]),
        (json!({"diagnostics": many}), 413, vec!["diagnostics", "65 keys", "64"]),
        (json!({"diagnostics": {"k".repeat(80): 1}}), 422, vec!["diagnostics key", "kkkk", "64"]),
        (json!({"diagnostics": {"log": "z".repeat(2000)}}), 422, vec!["diagnostics.log", "1024"]),
        (json!({"telemetry": [1, 2]}), 422, vec!["telemetry", "object"]),
        (json!({"os": "o".repeat(300)}), 422, vec!["os", "256"]),
    ];
    for (body, want, words) in cases {
        // Each also carries a real change, which must not be written either.
        let mut body = body;
        body["agent_version"] = json!("9.9");
        let (status, err) = heartbeat(&s, &token, body).await;
        assert_eq!(status, want, "{err}");
        let message = err["error"].as_str().unwrap();
        for w in words {
            assert!(message.contains(w), "{message:?} should say {w:?}");
        }
    }
    assert_eq!(s.ledger().committed_seq(), before, "a refused heartbeat wrote an event");
    let (_, node) = get(&s, &format!("/api/v1/nodes/{id}"), ADMIN).await;
    assert_eq!(node["diagnostics"], json!({"disk": "ok"}));
    assert_eq!(node["agent_version"], "1.0");
    assert!(node.get("telemetry").is_none(), "{node}");

    // A kiosk's status report is bounded the same way.
    let (head_id, head_token) = enroll_head(&s, "kiosk").await;
    let path = format!("/api/v1/heads/{head_id}");
    let put = |body: Value| put(&s, &path, &head_token, body);
    let before = s.ledger().committed_seq();
    let (status, err) =
        put(json!({"status": "streaming", "diagnostics": {"blob": "x".repeat(10_000)}})).await;
    assert_eq!(status, 413, "{err}");
    assert!(err["error"].as_str().unwrap().contains("diagnostics"), "{err}");
    let (status, err) = put(json!({"status": "streaming", "detail": "d".repeat(600)})).await;
    assert_eq!(status, 422, "{err}");
    assert!(err["error"].as_str().unwrap().contains("512"), "{err}");
    assert_eq!(s.ledger().committed_seq(), before, "a refused status report wrote an event");
    let (_, heads) = get(&s, "/api/v1/heads", ADMIN).await;
    assert_eq!(heads[0]["status"], "idle", "{heads}");
    assert!(heads[0].get("diagnostics").is_none(), "{heads}");
}

#[tokio::test]
async fn the_pending_queue_is_capped_until_an_admin_decides() {
    let s = spawn_app_with(|c| c.max_pending_nodes = 3).await;
    let ids = enroll_n(&s, "queued", 3).await;
    let enroll_one = |name: &'static str| try_enroll(&s, name);
    let before = s.ledger().committed_seq();
    let (status, err) = enroll_one("one-too-many").await;
    assert_eq!(status, 503, "{err}");
    let message = err["error"].as_str().unwrap();
    assert!(message.contains("pending queue is full") && message.contains("approve"), "{message}");
    assert_eq!(s.ledger().committed_seq(), before, "a refused enrollment wrote an event");

    approve_at(&s, &ids[0], &[], "north", "arena").await;
    assert_eq!(enroll_one("after-approval").await.0, 201);
    assert_eq!(enroll_one("full-again").await.0, 503);
    let (status, _) = post(&s, &format!("/api/v1/nodes/{}/reject", ids[1]), ADMIN, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(enroll_one("after-rejection").await.0, 201);
}

#[tokio::test]
async fn lists_come_in_pages_that_hold_every_node_once() {
    let s = spawn_app_with(with_fleet).await;
    // One more than the default page, so that the CLI and the library must follow pages.
    let count = 501;
    let mut enrolled: Vec<String> = stream::iter(0..count)
        .map(|i| {
            let s = &s;
            async move { approved_body(s, &format!("body-{i:04}")).await.0 }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    enrolled.sort();

    let (nodes, pages) = all_pages(&s, "/api/v1/nodes", 100).await;
    assert_eq!(pages, 6);
    assert_eq!(ids(&nodes), enrolled, "every node exactly once, in id order");
    // The default page is 500, with a cursor to the rest.
    let resp = s.http.get(format!("{}/api/v1/nodes", s.url)).bearer_auth(ADMIN).send().await.unwrap();
    let next = resp.headers().get("x-hydra-next-after").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(resp.json::<Vec<Value>>().await.unwrap().len(), 500);
    assert_eq!(next.as_deref(), Some(enrolled[499].as_str()));

    refused_queries(
        &s,
        "/api/v1/nodes",
        &[("limit=5001", "5000"), ("limit=0", "5000"), ("after=nonsense", "node-")],
    )
    .await;

    // The CLI lists every node, across pages.
    let out = admin_cli(&s, &["nodes", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&listed), enrolled);
    // So does ExperienceLibrary's client, which picks rollout targets from it.
    let cluster =
        hydra::library::cluster_client::Cluster::new(&s.url, Some(ADMIN.into()), Duration::from_secs(30));
    let venue = cluster.nodes("north", "arena").await.unwrap();
    let mut got: Vec<String> = venue.into_iter().map(|n| n.id).collect();
    got.sort();
    assert_eq!(got, enrolled);

    // Heads page the same way.
    for i in 0..3 {
        enroll_head(&s, &format!("kiosk-{i}")).await;
    }
    let (heads, pages) = all_pages(&s, "/api/v1/heads", 2).await;
    assert_eq!((heads.len(), pages), (3, 2));
    let mut sorted = ids(&heads);
    sorted.sort();
    assert_eq!(ids(&heads), sorted);
    assert_eq!(get(&s, "/api/v1/heads?limit=9999", ADMIN).await.0, 400);
}
