//! End to end: kiosk heads over real HTTP. Fleet enrollment and its tokens, heads
//! heartbeating and reporting their status, the stream config that follows an admin's
//! assignment, every assignment the server must refuse, eligible bodies, the catalog
//! from a stand-in ExperienceLibrary, screenshots and logs through exec, and the QR code.

use crate::common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

async fn spawn_fleet_app() -> TestServer {
    spawn_app_with(|c| {
        with_fleet(c);
        c.experience_library.url = Some("http://library.test:8090".into());
    })
    .await
}

async fn types_in_log(s: &TestServer, query: &str) -> Vec<(String, String)> {
    events(s, query)
        .await
        .iter()
        .map(|e| {
            (e["type"].as_str().unwrap().to_owned(), e["data"]["node_id"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

#[tokio::test]
async fn fleet_enrollment_needs_the_fleet_token_and_the_fleet_token_nothing_else() {
    let body = json!({"name": "iPad Lobby 1", "district": "north", "venue": "arena"});

    // No fleet token configured: no token can enroll a head, and there is no QR payload.
    let bare = spawn_app().await;
    let (status, _) = post(&bare, "/api/v1/heads", FLEET, body.clone()).await;
    assert_eq!(status, 401);
    let (status, err) = get(&bare, "/api/v1/enroll-qr", ADMIN).await;
    assert_eq!(status, 404);
    assert!(err["error"].as_str().unwrap().contains("fleet_enrollment_token"), "{err}");

    let s = spawn_fleet_app().await;
    let (status, _) = request(&s, Method::POST, "/api/v1/heads", None, Some(body.clone())).await;
    assert_eq!(status, 401, "no token");
    let (status, _) = post(&s, "/api/v1/heads", "wrong-fleet-token", body.clone()).await;
    assert_eq!(status, 401, "wrong token");
    let (status, _) = post(&s, "/api/v1/heads", ADMIN, body.clone()).await;
    assert_eq!(status, 403, "an admin token is not the fleet token");
    let (status, err) =
        post(&s, "/api/v1/heads", FLEET, json!({"name": "", "district": "n", "venue": "v"})).await;
    assert_eq!(status, 400, "{err}");

    let (status, head) = post(&s, "/api/v1/heads", FLEET, body).await;
    assert_eq!(status, 201, "{head}");
    let id = head["head_id"].as_str().unwrap();
    assert!(id.starts_with("node-"));
    assert!(head["token"].as_str().unwrap().starts_with("hyn_"));

    // The fleet token opens nothing but head enrollment.
    for path in ["/api/v1/nodes", "/api/v1/heads", "/api/v1/enroll-qr", "/api/v1/events/log"] {
        let (status, _) = get(&s, path, FLEET).await;
        assert_eq!(status, 403, "fleet token on GET {path}");
    }
    let (status, _) = post(&s, &format!("/api/v1/nodes/{id}/drain"), FLEET, json!({"draining": true})).await;
    assert_eq!(status, 403, "fleet token on an admin POST");

    let (status, qr) = get(&s, "/api/v1/enroll-qr", ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!(qr["enrollment_token"], FLEET);
    assert!(qr["server_url"].as_str().unwrap().starts_with("http://"));
    assert_eq!(qr["server_url"], head["server_url"], "the kiosk is told the same server as the QR code");
    let (status, _) = get(&s, "/api/v1/enroll-qr", OBSERVER).await;
    assert_eq!(status, 403, "the QR payload carries a secret: admins only");

    // A head is a node of kind head, approved at once, in the node list.
    let (_, nodes) = get(&s, "/api/v1/nodes?kind=head", ADMIN).await;
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    assert_eq!(nodes[0]["id"], id);
    assert_eq!(nodes[0]["kind"], "head");
    assert_eq!(nodes[0]["status"], "approved");
    assert_eq!((nodes[0]["district"].as_str(), nodes[0]["venue"].as_str()), (Some("north"), Some("arena")));
    let (_, bodies) = get(&s, "/api/v1/nodes?kind=body", ADMIN).await;
    assert_eq!(bodies, json!([]));
}

#[tokio::test]
async fn heads_heartbeat_and_report_their_status_once_per_change() {
    let s = spawn_fleet_app().await;
    let (id, token) = enroll_head(&s, "ipad-1").await;
    let (other, other_token) = enroll_head(&s, "ipad-2").await;

    // It heartbeats at once, with no approval step, through the agents' endpoint.
    let diag = json!({"version": "3.1", "wireguard": "up", "latency_ms": 12});
    let (status, hb) = heartbeat(&s, &token, json!({"diagnostics": diag})).await;
    assert_eq!(status, 200, "{hb}");
    assert_eq!(hb["status"], "approved");
    let (status, heads) = get(&s, "/api/v1/heads", OBSERVER).await;
    assert_eq!(status, 200);
    let mine = heads.as_array().unwrap().iter().find(|h| h["id"] == id.as_str()).unwrap().clone();
    assert_eq!(mine["name"], "ipad-1");
    assert_eq!(mine["node_status"], "online");
    assert!(mine["last_seen"].as_str().unwrap().ends_with('Z'));
    assert_eq!(mine["status"], "idle");
    assert_eq!(mine["diagnostics"], diag);
    assert_eq!(mine["assigned_body_name"], Value::Null);
    assert_eq!((mine["district"].as_str(), mine["venue"].as_str()), (Some("north"), Some("arena")));
    let theirs = heads.as_array().unwrap().iter().find(|h| h["id"] == other.as_str()).unwrap().clone();
    assert_eq!(theirs["node_status"], "offline");
    assert!(theirs.get("diagnostics").is_none(), "empty diagnostics are omitted: {theirs}");

    // A status change is one event; saying it again writes nothing.
    let before = s.ledger().committed_seq();
    let (status, reported) =
        put(&s, &format!("/api/v1/heads/{id}"), &token, json!({"status": "streaming"})).await;
    assert_eq!(status, 200, "{reported}");
    assert_eq!(reported["status"], "streaming");
    assert_eq!(s.ledger().committed_seq(), before + 1);
    for _ in 0..5 {
        let (status, _) =
            put(&s, &format!("/api/v1/heads/{id}"), &token, json!({"status": "streaming"})).await;
        assert_eq!(status, 200);
    }
    assert_eq!(s.ledger().committed_seq(), before + 1, "a repeated status must not append events");
    let (status, reported) = put(
        &s,
        &format!("/api/v1/heads/{id}"),
        &token,
        json!({"status": "error", "detail": "decoder stalled", "diagnostics": {"app": "crashed"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(reported["detail"], "decoder stalled");
    assert_eq!(reported["diagnostics"], json!({"app": "crashed"}));
    assert_eq!(s.ledger().committed_seq(), before + 2);

    // Bad reports and other callers are refused, and write nothing.
    let (status, err) = put(&s, &format!("/api/v1/heads/{id}"), &token, json!({"status": "dancing"})).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("idle, streaming or error"), "{err}");
    let (status, _) = put(&s, &format!("/api/v1/heads/{id}"), &other_token, json!({"status": "idle"})).await;
    assert_eq!(status, 403, "another head's token");
    let (status, _) = put(&s, &format!("/api/v1/heads/{id}"), ADMIN, json!({"status": "idle"})).await;
    assert_eq!(status, 403, "the admin does not speak for the kiosk");
    let (status, _) = put(&s, &format!("/api/v1/heads/{id}"), "nonsense", json!({"status": "idle"})).await;
    assert_eq!(status, 401);
    assert_eq!(s.ledger().committed_seq(), before + 2);

    // The log and the live stream carry head.* events with the head's node id.
    let head_events = types_in_log(&s, &format!("types=head.*&node={id}")).await;
    assert_eq!(
        head_events,
        vec![
            ("head.registered".to_string(), id.clone()),
            ("head.status_changed".to_string(), id.clone()),
            ("head.status_changed".to_string(), id.clone()),
        ]
    );
    let text = sse_until(&s, "/api/v1/events?since=0&types=head.status_changed", ADMIN, |t| {
        t.matches("event: head.status_changed").count() >= 2
    })
    .await;
    assert!(text.contains(&format!("\"node_id\":\"{id}\"")), "{text}");
    assert!(text.contains("\"status\":\"error\""), "{text}");
}

#[tokio::test]
async fn the_stream_config_follows_the_assignment() {
    let s = spawn_fleet_app().await;
    let (body, body_token) = approved_body(&s, "body-1").await;
    heartbeat(&s, &body_token, json!({"wireguard_ip": "10.9.0.5", "provider_status": "running"})).await;
    let (head, token) = enroll_head(&s, "ipad-1").await;
    let (_, other_token) = enroll_head(&s, "ipad-2").await;

    // Unassigned: nowhere to stream from yet.
    let (status, config) = get(&s, &format!("/api/v1/heads/{head}"), &token).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["head_id"], head.as_str());
    assert_eq!(config["stream_url"], Value::Null);
    assert_eq!(config["stream_url_lan"], Value::Null);
    assert_eq!(config["assigned_body_id"], Value::Null);
    assert_eq!(config["experience_library_url"], "http://library.test:8090");
    assert_eq!(config["allowed_experiences"], json!([]));

    let (status, config) = post(
        &s,
        &format!("/api/v1/nodes/{head}/head-assignment"),
        ADMIN,
        json!({"body_id": body, "app_id": "racing-sim"}),
    )
    .await;
    assert_eq!(status, 200, "{config}");
    let (status, config) = get(&s, &format!("/api/v1/heads/{head}"), &token).await;
    assert_eq!(status, 200);
    assert_eq!(config["stream_url"], "10.9.0.5", "the body's wireguard_ip from its heartbeats");
    assert_eq!(config["stream_url_lan"], "10.0.0.7", "the body's enrolled ip");
    assert_eq!(config["assigned_body_id"], body.as_str());
    assert_eq!(config["assigned_body_name"], "body-1");
    assert_eq!(config["app_id"], "racing-sim");
    let (_, heads) = get(&s, "/api/v1/heads", ADMIN).await;
    let listed = heads.as_array().unwrap().iter().find(|h| h["id"] == head.as_str()).unwrap().clone();
    assert_eq!(listed["assigned_body_name"], "body-1");

    // The body's network changes reach the config on the next read.
    heartbeat(&s, &body_token, json!({"wireguard_ip": "10.9.0.6"})).await;
    let (_, config) = get(&s, &format!("/api/v1/heads/{head}"), ADMIN).await;
    assert_eq!(config["stream_url"], "10.9.0.6");

    // The whitelist: deduplicated, each entry checked.
    let (status, config) = post(
        &s,
        &format!("/api/v1/nodes/{head}/allowed-experiences"),
        ADMIN,
        json!({"experiences": ["racing", "space", "racing"]}),
    )
    .await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["allowed_experiences"], json!(["racing", "space"]));
    let (status, _) =
        post(&s, &format!("/api/v1/nodes/{head}/allowed-experiences"), ADMIN, json!({"experiences": [""]}))
            .await;
    assert_eq!(status, 400);
    let long = "x".repeat(129);
    let (status, _) =
        post(&s, &format!("/api/v1/nodes/{head}/allowed-experiences"), ADMIN, json!({"experiences": [long]}))
            .await;
    assert_eq!(status, 400);
    let (_, config) = get(&s, &format!("/api/v1/heads/{head}"), &token).await;
    assert_eq!(config["allowed_experiences"], json!(["racing", "space"]));

    // Who may read it: the head itself and admins; not another head, not an observer.
    let (status, _) = get(&s, &format!("/api/v1/heads/{head}"), &other_token).await;
    assert_eq!(status, 403);
    let (status, _) = get(&s, &format!("/api/v1/heads/{head}"), OBSERVER).await;
    assert_eq!(status, 403);
    let (status, err) = get(&s, &format!("/api/v1/heads/{body}"), ADMIN).await;
    assert_eq!(status, 400, "a body is not a head: {err}");
    assert!(err["error"].as_str().unwrap().contains("not a kiosk head"), "{err}");
    let (status, _) = get(&s, "/api/v1/heads/node-0000000000000000", ADMIN).await;
    assert_eq!(status, 404);

    // Clearing the assignment.
    let (status, config) =
        post(&s, &format!("/api/v1/nodes/{head}/head-assignment"), ADMIN, json!({"body_id": null})).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["stream_url"], Value::Null);
    assert_eq!(config["stream_url_lan"], Value::Null);
    assert_eq!(config["app_id"], Value::Null);

    // Removing a body unpins the heads that stream from it, in the same command.
    post(&s, &format!("/api/v1/nodes/{head}/head-assignment"), ADMIN, json!({"body_id": body})).await;
    let (status, _) = delete(&s, &format!("/api/v1/nodes/{body}"), ADMIN).await;
    assert_eq!(status, 204);
    let (_, config) = get(&s, &format!("/api/v1/heads/{head}"), &token).await;
    assert_eq!(config["assigned_body_id"], Value::Null);
    let assigned = types_in_log(&s, &format!("types=head.assigned,head.unassigned&node={head}")).await;
    let kinds: Vec<&str> = assigned.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        kinds,
        ["head.assigned", "head.assigned", "head.assigned", "head.unassigned"],
        "assign, clear, assign, unpin on removal"
    );
}

/// Ids in `GET /api/v1/heads`.
async fn listed_heads(s: &TestServer) -> Vec<String> {
    let (status, heads) = get(s, "/api/v1/heads", ADMIN).await;
    assert_eq!(status, 200, "{heads}");
    heads.as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_machine_approved_with_a_head_role_is_a_head_until_its_roles_say_otherwise() {
    let s = spawn_app_with(|c| {
        with_fleet(c);
        c.heartbeat_interval = Duration::from_secs(7);
    })
    .await;
    let (body, body_token) = approved_body(&s, "body-1").await;
    heartbeat(&s, &body_token, json!({"provider_status": "running"})).await;

    // A Windows screen enrolls through /enroll like a body and is approved as a head.
    let (screen, screen_token) = enroll(&s, "windows-screen").await;
    approve_at(&s, &screen, &["hydraheadwindows"], "north", "arena").await;
    assert!(listed_heads(&s).await.contains(&screen), "listed with the heads");
    let (_, node) = get(&s, &format!("/api/v1/nodes/{screen}"), ADMIN).await;
    assert_eq!(node["kind"], "head", "{node}");
    let (status, config) = get(&s, &format!("/api/v1/heads/{screen}"), &screen_token).await;
    assert_eq!(status, 200, "its stream config answers: {config}");
    let (status, answer) = heartbeat(&s, &screen_token, json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["kind"], "head", "its agent is told to run as a head: {answer}");
    assert_eq!(answer["heartbeat_interval_s"], 7, "the configured heartbeat_interval");
    let (status, eligible) = get(&s, &format!("/api/v1/bodies/eligible?head={screen}"), ADMIN).await;
    assert_eq!(status, 200, "{eligible}");
    let offered: Vec<&str> = eligible.as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(offered, [body.as_str()], "bodies are offered to it, never a head");
    let (status, answer) =
        post(&s, &format!("/api/v1/nodes/{screen}/head-assignment"), ADMIN, json!({"body_id": body})).await;
    assert_eq!(status, 200, "a head by role can be pinned to a body: {answer}");
    let (status, err) =
        post(&s, &format!("/api/v1/nodes/{body}/head-assignment"), ADMIN, json!({"body_id": screen})).await;
    assert_eq!(status, 400, "a body is not a head: {err}");

    // Its roles change to a body's: it leaves the heads and its assignment, with reasons.
    let (status, answer) =
        post(&s, &format!("/api/v1/nodes/{screen}/roles"), ADMIN, json!({"roles": ["render-node"]})).await;
    assert_eq!(status, 200, "{answer}");
    assert!(!listed_heads(&s).await.contains(&screen), "no longer a head");
    let (_, node) = get(&s, &format!("/api/v1/nodes/{screen}"), ADMIN).await;
    assert_eq!(node["kind"], "body");
    let (status, _) = get(&s, &format!("/api/v1/heads/{screen}"), &screen_token).await;
    assert_eq!(status, 400, "a body has no stream config");
    assert_eq!(heartbeat(&s, &screen_token, json!({})).await.1["kind"], "body", "its agent leaves head mode");
    let (_, log) = get(&s, &format!("/api/v1/events/log?node={screen}"), ADMIN).await;
    let events: Vec<&Value> = log["events"].as_array().unwrap().iter().collect();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["type"] == "node.kind_changed")
        .map(|e| (e["data"]["kind"].as_str().unwrap(), e["data"]["roles"][0].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("head", "hydraheadwindows"), ("body", "render-node")],
        "the history says when and why"
    );
    let unassigned =
        events.iter().find(|e| e["type"] == "head.unassigned").expect("head.unassigned recorded");
    assert_eq!(unassigned["data"]["head_id"], screen.as_str());
    assert_eq!(unassigned["data"]["body_id"], body.as_str());
    assert_eq!(unassigned["data"]["reason"], "no_longer_a_head");
}

/// `hydracluster ARGS…` against the test server, as an admin types it (the server and
/// token from the environment).
fn cli(s: &TestServer, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(hydracluster())
        .args(args)
        .env("HYDRACLUSTER_SERVER", &s.url)
        .env("HYDRACLUSTER_TOKEN", ADMIN)
        .output()
        .unwrap();
    (out.status.success(), all_output(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_pins_heads_and_sets_their_whitelist() {
    let s = spawn_fleet_app().await;
    let (body, body_token) = approved_body(&s, "body-1").await;
    heartbeat(&s, &body_token, json!({"provider_status": "running"})).await;
    let (head, token) = enroll_head(&s, "ipad-1").await;

    let (ok, out) = cli(&s, &["assign", &head, &body, "--app", "racing"]);
    assert!(ok, "{out}");
    assert!(out.contains("pinned to") && out.contains("body-1"), "{out}");
    let (ok, out) = cli(&s, &["allow", &head, "space", "ocean"]);
    assert!(ok, "{out}");
    let (_, config) = get(&s, &format!("/api/v1/heads/{head}"), &token).await;
    assert_eq!(config["assigned_body_id"], body.as_str());
    assert_eq!(config["app_id"], "racing");
    assert_eq!(config["allowed_experiences"], json!(["space", "ocean"]));
    let (ok, out) = cli(&s, &["heads"]);
    assert!(ok && out.contains("ipad-1") && out.contains("body-1"), "{out}");

    let (ok, out) = cli(&s, &["assign", &head, "none"]);
    assert!(ok && out.contains("not pinned"), "{out}");
    let (ok, out) = cli(&s, &["assign", &body, &head]);
    assert!(!ok && out.contains("not a kiosk head"), "a refusal says why: {out}");
}

#[tokio::test]
async fn assignments_to_the_wrong_body_are_refused_with_the_reason() {
    let s = spawn_fleet_app().await;
    let (head, _) = enroll_head(&s, "ipad-1").await;
    let (other_head, _) = enroll_head(&s, "ipad-2").await;

    // Online, but in another venue.
    let (far, far_token) = enroll(&s, "body-far").await;
    approve_at(&s, &far, &["hydrabody"], "north", "hall").await;
    heartbeat(&s, &far_token, json!({})).await;
    // Right venue, but never heard from.
    let (offline, _) = approved_body(&s, "body-off").await;
    let (online, online_token) = approved_body(&s, "body-on").await;
    heartbeat(&s, &online_token, json!({})).await;

    let before = s.ledger().committed_seq();
    let assign = |target: &str, body: Value| {
        let path = format!("/api/v1/nodes/{target}/head-assignment");
        let s = &s;
        async move { post(s, &path, ADMIN, body).await }
    };
    let (status, err) = assign(&head, json!({"body_id": far})).await;
    assert_eq!(status, 409, "{err}");
    assert!(err["error"].as_str().unwrap().contains("north/hall"), "the reason names the venue: {err}");
    let (status, err) = assign(&head, json!({"body_id": offline})).await;
    assert_eq!(status, 409, "{err}");
    assert!(err["error"].as_str().unwrap().contains("offline"), "{err}");
    let (status, err) = assign(&head, json!({"body_id": other_head})).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("kiosk head"), "{err}");
    let (status, _) = assign(&head, json!({"body_id": "node-0000000000000000"})).await;
    assert_eq!(status, 404);
    let (status, _) = assign(&head, json!({"body_id": "not an id"})).await;
    assert_eq!(status, 400);
    let (status, err) = assign(&online, json!({"body_id": online})).await;
    assert_eq!(status, 400, "the path must name a head: {err}");
    assert!(err["error"].as_str().unwrap().contains("not a kiosk head"), "{err}");
    let (status, _) = assign(&head, json!({"app_id": "x"})).await;
    assert_eq!(status, 400, "an app without a body");
    let (status, _) = assign(&head, json!({"body_id": online, "surprise": 1})).await;
    assert_eq!(status, 422, "unknown fields");
    let (status, _) =
        post(&s, &format!("/api/v1/nodes/{head}/head-assignment"), OBSERVER, json!({"body_id": online}))
            .await;
    assert_eq!(status, 403);
    assert_eq!(s.ledger().committed_seq(), before, "refused assignments write nothing");

    let (status, config) = assign(&head, json!({"body_id": online})).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["assigned_body_name"], "body-on");
    // The same assignment again changes nothing.
    let seq = s.ledger().committed_seq();
    assign(&head, json!({"body_id": online})).await;
    assert_eq!(s.ledger().committed_seq(), seq);
}

#[tokio::test]
async fn heads_their_tokens_and_assignments_survive_a_restart() {
    let mut s = spawn_fleet_app().await;
    let (body, body_token) = approved_body(&s, "body-1").await;
    heartbeat(&s, &body_token, json!({"wireguard_ip": "10.9.0.5"})).await;
    let (head, token) = enroll_head(&s, "ipad-1").await;
    post(&s, &format!("/api/v1/nodes/{head}/head-assignment"), ADMIN, json!({"body_id": body})).await;
    post(&s, &format!("/api/v1/nodes/{head}/allowed-experiences"), ADMIN, json!({"experiences": ["racing"]}))
        .await;
    put(&s, &format!("/api/v1/heads/{head}"), &token, json!({"status": "streaming"})).await;
    let (_, digest_before) = get(&s, "/api/v1/audit/digest", ADMIN).await;

    s.restart().await;
    let (_, digest_after) = get(&s, "/api/v1/audit/digest", ADMIN).await;
    assert_eq!(digest_before["digest"], digest_after["digest"], "{digest_before} vs {digest_after}");
    let (status, config) = get(&s, &format!("/api/v1/heads/{head}"), &token).await;
    assert_eq!(status, 200, "the head's token still works: {config}");
    assert_eq!(config["stream_url"], "10.9.0.5");
    assert_eq!(config["allowed_experiences"], json!(["racing"]));
    let (_, heads) = get(&s, "/api/v1/heads", ADMIN).await;
    assert_eq!(heads[0]["status"], "streaming");
    assert_eq!(heads[0]["assigned_body_name"], "body-1");
}

async fn app_with_library(url: Option<String>) -> TestServer {
    spawn_app_with(move |c| {
        with_fleet(c);
        c.experience_library.url = url;
    })
    .await
}

#[tokio::test]
async fn the_catalog_is_the_live_library_list_filtered_by_the_whitelist() {
    let library = crate::common::library::fake_library().await;
    let s = app_with_library(Some(format!("{library}/ok/"))).await;
    let (head, token) = enroll_head(&s, "ipad-1").await;
    let (_, other_token) = enroll_head(&s, "ipad-2").await;
    let path = format!("/api/v1/heads/{head}/experiences");

    // An empty whitelist allows nothing: the kiosk offers only what an admin chose.
    let (status, list) = get(&s, &path, &token).await;
    assert_eq!((status, list), (200, json!([])));
    post(
        &s,
        &format!("/api/v1/nodes/{head}/allowed-experiences"),
        ADMIN,
        json!({"experiences": ["space", "racing", "not-live"]}),
    )
    .await;
    let (status, list) = get(&s, &path, &token).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list,
        json!([
            {"id": "racing", "title": "Racing", "build": {"version": "1.2"}},
            {"id": "space", "title": "Space"},
        ]),
        "the library's order and fields, only whitelisted ids that are live"
    );
    // No body is assigned or even exists: the catalog does not depend on one.
    assert_eq!(get(&s, &path, ADMIN).await.0, 200);

    let (status, _) = get(&s, &path, &other_token).await;
    assert_eq!(status, 403, "another head");
    let (body, _) = approved_body(&s, "body-1").await;
    let (status, err) = get(&s, &format!("/api/v1/heads/{body}/experiences"), ADMIN).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("not a kiosk head"), "{err}");
    let (status, _) = get(&s, "/api/v1/heads/node-0000000000000000/experiences", ADMIN).await;
    assert_eq!(status, 404);

    // Each way the library can fail is a 502 that says which.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for (url, says) in [
        (format!("{library}/fail"), "answered 500"),
        (format!("{library}/bad"), "bad JSON"),
        (down, "unreachable"),
    ] {
        let s = app_with_library(Some(url)).await;
        let (head, token) = enroll_head(&s, "ipad-1").await;
        let (status, err) = get(&s, &format!("/api/v1/heads/{head}/experiences"), &token).await;
        assert_eq!(status, 502, "{err}");
        assert!(err["error"].as_str().unwrap().contains(says), "{says}: {err}");
    }
    let s = app_with_library(None).await;
    let (head, token) = enroll_head(&s, "ipad-1").await;
    let (status, err) = get(&s, &format!("/api/v1/heads/{head}/experiences"), &token).await;
    assert_eq!(status, 503, "{err}");
    assert!(err["error"].as_str().unwrap().contains("experienceLibrary.url"), "{err}");
}

#[tokio::test]
async fn eligible_bodies_follow_the_selection_rules_and_say_why() {
    let s = spawn_fleet_app().await;
    let (head, token) = enroll_head(&s, "ipad-1").await;
    let (other_head, _) = enroll_head(&s, "ipad-2").await;
    let ready = json!({"provider_status": "running", "stream_status": "idle", "wireguard_ip": "10.9.0.1"});
    let (b, b_token) = approved_body(&s, "body-b").await;
    let (a, a_token) = approved_body(&s, "body-a").await;
    heartbeat(&s, &a_token, ready.clone()).await;
    heartbeat(&s, &b_token, ready.clone()).await;
    // Each of these fails one rule.
    let (_, t) = approved_body(&s, "busy").await;
    heartbeat(&s, &t, json!({"provider_status": "running", "stream_status": "streaming"})).await;
    let (_, t) = approved_body(&s, "stopped").await;
    heartbeat(&s, &t, json!({"provider_status": "stopped"})).await;
    let (drained, t) = approved_body(&s, "drained").await;
    heartbeat(&s, &t, ready.clone()).await;
    post(&s, &format!("/api/v1/nodes/{drained}/drain"), ADMIN, json!({"draining": true})).await;
    approved_body(&s, "silent").await;
    let (_, pending_token) = enroll(&s, "pending").await;
    heartbeat(&s, &pending_token, ready.clone()).await;
    let (far, t) = enroll(&s, "far").await;
    approve_at(&s, &far, &[], "north", "hall").await;
    heartbeat(&s, &t, ready.clone()).await;

    let path = format!("/api/v1/bodies/eligible?head={head}");
    let names = |v: &Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_owned()).collect()
    };
    let (status, list) = get(&s, &path, OBSERVER).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(names(&list), ["body-a", "body-b"], "equal load: by name");
    assert_eq!(list[0]["id"], a.as_str());
    assert_eq!(list[0]["wireguard_ip"], "10.9.0.1");
    assert_eq!(list[0]["ip"], "10.0.0.7");
    assert_eq!(list[0]["heads_assigned"], 0);
    assert!(list[0]["rank_reason"].as_str().unwrap().contains("0 heads assigned"), "{list}");

    // Another head on body-a: body-b has fewer heads and comes first.
    post(&s, &format!("/api/v1/nodes/{other_head}/head-assignment"), ADMIN, json!({"body_id": a})).await;
    let (_, list) = get(&s, &path, &token).await;
    assert_eq!(names(&list), ["body-b", "body-a"]);
    assert_eq!(list[1]["heads_assigned"], 1);
    // This head's own body comes first while it is still eligible.
    post(&s, &format!("/api/v1/nodes/{head}/head-assignment"), ADMIN, json!({"body_id": a})).await;
    let (_, list) = get(&s, &path, ADMIN).await;
    assert_eq!(names(&list), ["body-a", "body-b"]);
    assert!(list[0]["rank_reason"].as_str().unwrap().starts_with("current assignment"), "{list}");
    // … and drops out when it starts streaming for someone else.
    heartbeat(&s, &a_token, json!({"stream_status": "streaming"})).await;
    let (_, list) = get(&s, &path, ADMIN).await;
    assert_eq!(names(&list), ["body-b"]);

    let (status, _) = get(&s, &format!("/api/v1/bodies/eligible?head={b}"), ADMIN).await;
    assert_eq!(status, 400, "a body is not a head");
    let (status, _) = get(&s, "/api/v1/bodies/eligible?head=node-0000000000000000", ADMIN).await;
    assert_eq!(status, 404);
    let (status, _) = get(&s, "/api/v1/bodies/eligible", ADMIN).await;
    assert_eq!(status, 400, "no head given");
    let (status, _) = get(&s, &format!("/api/v1/bodies/eligible?head={other_head}"), &token).await;
    assert_eq!(status, 403, "a head asks only for itself");
    let (status, _) = get(&s, &path, &b_token).await;
    assert_eq!(status, 403, "a body's token");
}

/// Plays the head's agent once: takes the next command, which holds `expect`, and
/// answers it with `answer`.
fn agent_answers(
    s: &TestServer,
    token: &str,
    expect: &'static str,
    answer: Value,
) -> tokio::task::JoinHandle<()> {
    let one = answer_one_command(s, token, answer);
    tokio::spawn(async move {
        let cmd = one.await.unwrap();
        let command = cmd["command"].as_str().unwrap();
        assert!(command.contains(expect), "{command}");
    })
}

#[tokio::test]
async fn screenshots_and_logs_come_through_the_exec_channel() {
    let s = spawn_app_with(|c| {
        with_fleet(c);
        c.head_exec_timeout = Duration::from_secs(1);
        c.head_log_path = "/var/log/kiosk.log".into();
    })
    .await;
    let (head, token) = enroll_head(&s, "ipad-1").await;
    let shot = format!("{}/api/v1/heads/{head}/screenshot", s.url);

    // Offline: nothing would answer, so it says so at once.
    let (status, err) = get(&s, &format!("/api/v1/heads/{head}/screenshot"), ADMIN).await;
    assert_eq!(status, 504, "{err}");
    assert!(err["error"].as_str().unwrap().contains("offline"), "{err}");
    heartbeat(&s, &token, json!({})).await;

    // The JPEG bytes travel as base64 (wrapped, as `base64` prints them).
    let agent = agent_answers(&s, &token, "base64", json!({"exit_code": 0, "stdout": "/9j/\n4AA=\n"}));
    let resp = s.http.get(&shot).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), [0xff, 0xd8, 0xff, 0xe0, 0x00]);
    agent.await.unwrap();

    // Stale and absent are 502s that say which.
    let agent = agent_answers(
        &s,
        &token,
        "stat",
        json!({"exit_code": 4, "stderr": "screenshot at /x is 900s old (limit 120s)\n"}),
    );
    let (status, err) = get(&s, &format!("/api/v1/heads/{head}/screenshot"), ADMIN).await;
    assert_eq!(status, 502, "{err}");
    assert!(err["error"].as_str().unwrap().contains("stale"), "{err}");
    agent.await.unwrap();
    let agent = agent_answers(&s, &token, "tail -n 200", json!({"exit_code": 3, "stderr": "no log at /x\n"}));
    let (status, err) = get(&s, &format!("/api/v1/heads/{head}/logs"), ADMIN).await;
    assert_eq!(status, 502, "{err}");
    assert!(err["error"].as_str().unwrap().contains("absent"), "{err}");
    agent.await.unwrap();

    // The log's last lines.
    let agent =
        agent_answers(&s, &token, "/var/log/kiosk.log", json!({"exit_code": 0, "stdout": "one\ntwo\n"}));
    let (status, logs) = get(&s, &format!("/api/v1/heads/{head}/logs"), ADMIN).await;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs, json!({"log_path": "/var/log/kiosk.log", "lines": ["one", "two"]}));
    agent.await.unwrap();
    // What these fetches printed was kept only until answered: the events keep its
    // size, the output store nothing.
    let (_, log) = get(&s, &format!("/api/v1/events/log?types=exec.completed&node={head}"), ADMIN).await;
    let printed: Vec<_> = log["events"].as_array().unwrap().iter().map(|e| &e["data"]["output"]).collect();
    assert!(printed.iter().any(|o| o["stdout_bytes"] == 8), "{log}");
    assert_eq!(s.ledger().store().outputs().count(), 0, "the server's own fetches keep no output");

    // No answer in time: 504, and the command is cancelled rather than left to run late.
    let (status, err) = get(&s, &format!("/api/v1/heads/{head}/screenshot"), ADMIN).await;
    assert_eq!(status, 504, "{err}");
    assert!(err["error"].as_str().unwrap().contains("cancelled"), "{err}");
    let (_, q) = get(&s, &format!("/api/v1/nodes/{head}/exec/queue"), ADMIN).await;
    assert_eq!((q["in_flight"].clone(), q["queued"].clone()), (Value::Null, json!([])), "{q}");
    assert_eq!(types_in_log(&s, &format!("types=exec.cancelled&node={head}")).await.len(), 1);

    // Admins only; a body is not a head.
    let (status, _) = get(&s, &format!("/api/v1/heads/{head}/screenshot"), OBSERVER).await;
    assert_eq!(status, 403);
    let (status, _) = get(&s, &format!("/api/v1/heads/{head}/logs"), &token).await;
    assert_eq!(status, 403);
    let (body, _) = approved_body(&s, "body-1").await;
    assert_eq!(get(&s, &format!("/api/v1/heads/{body}/logs"), ADMIN).await.0, 400);
}

#[tokio::test]
async fn the_enroll_page_shows_the_fleet_qr_code_only_to_an_admin() {
    let s = spawn_fleet_app().await;
    // Console sessions: an admin's shows the code, an observer's does not; a token in a
    // cookie is no sign-in.
    let admin_session = crate::console::session(&s, &crate::console::browser(), ADMIN).await.0;
    let observer_session = crate::console::session(&s, &crate::console::browser(), OBSERVER).await.0;
    let page = |token: Option<(&'static str, String)>| {
        let mut req = s.http.get(format!("{}/enroll", s.url));
        if let Some((name, value)) = token {
            req = req.header(name, value);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.text().await.unwrap()
        }
    };
    for who in [
        None,
        Some(("authorization", format!("Bearer {OBSERVER}"))),
        Some(("authorization", "Bearer wrong".to_string())),
        Some(("cookie", observer_session)),
        Some(("cookie", format!("hydra_admin={ADMIN}"))),
    ] {
        let html = page(who.clone()).await;
        assert!(!html.contains(FLEET), "the fleet token leaked to {who:?}");
        assert!(!html.contains("<svg"), "{who:?}");
        assert!(html.contains("Enroll a machine"));
    }
    for who in
        [("authorization", format!("Bearer {ADMIN}")), ("cookie", format!("theme=dark; {admin_session}"))]
    {
        let html = page(Some(who.clone())).await;
        assert!(html.contains("<svg"), "{who:?}: {html}");
        assert!(!html.contains("<?xml"), "inline SVG has no XML declaration");
    }
}
