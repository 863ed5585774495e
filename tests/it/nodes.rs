//! End to end: the node lifecycle over real HTTP, from enrollment to removal, and
//! every kind of bad input an attacker or a broken agent could send.

use crate::common::*;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

async fn place(s: &TestServer, id: &str, placement: serde_json::Value) -> (u16, serde_json::Value) {
    post(s, &format!("/api/v1/nodes/{id}/placement"), ADMIN, placement).await
}

#[tokio::test]
async fn a_node_goes_from_enrollment_to_approval_to_removal() {
    let s = spawn_app().await;
    let (id, token) = enroll(&s, "body-1").await;
    assert!(id.starts_with("node-") && token.starts_with("hyn_"));

    // Pending: may heartbeat (shows online) but gets no roles.
    let (status, hb) = heartbeat(&s, &token, json!({"provider_status": "running"})).await;
    assert_eq!(status, 200);
    assert_eq!(hb["status"], "pending");
    assert_eq!(hb["roles"], json!([]));
    let (_, node) = get(&s, &format!("/api/v1/nodes/{id}"), ADMIN).await;
    assert_eq!(node["status"], "pending");
    assert_eq!(node["node_status"], "online");
    assert_eq!(node["ip"], "10.0.0.7");
    assert!(node["last_seen"].as_str().unwrap().ends_with('Z'));

    let (status, node) = post(
        &s,
        &format!("/api/v1/nodes/{id}/approve"),
        ADMIN,
        json!({"roles": ["hydrabody", "render-node"], "district": "north", "venue": "arena", "environment": "staging"}),
    )
    .await;
    assert_eq!(status, 200, "{node}");
    assert_eq!(node["status"], "approved");
    assert_eq!(node["environment"], "staging");
    let (_, hb) = heartbeat(&s, &token, json!({})).await;
    assert_eq!(hb["roles"], json!(["hydrabody", "render-node"]));

    let (status, node) =
        post(&s, &format!("/api/v1/nodes/{id}/roles"), ADMIN, json!({"roles": ["hydraguard-air"]})).await;
    assert_eq!(status, 200);
    assert_eq!(node["roles"], json!(["hydraguard-air"]));

    let (status, node) = place(&s, &id, json!({"district": "south", "venue": "hall", "owner": "ops"})).await;
    assert_eq!(status, 200);
    assert_eq!((node["district"].as_str(), node["venue"].as_str()), (Some("south"), Some("hall")));
    assert_eq!(node["environment"], "production", "placement without environment means production");

    let (_, node) = post(&s, &format!("/api/v1/nodes/{id}/drain"), ADMIN, json!({"draining": true})).await;
    assert_eq!(node["draining"], true);

    // Remove: the node's token stops working.
    assert_eq!(delete(&s, &format!("/api/v1/nodes/{id}"), ADMIN).await.0, 204);
    let (status, _) = heartbeat(&s, &token, json!({})).await;
    assert_eq!(status, 401);
    let (status, _) = get(&s, &format!("/api/v1/nodes/{id}"), ADMIN).await;
    assert_eq!(status, 404);
    // The log forgets nothing: the history is still there.
    let (status, history) = get(&s, &format!("/api/v1/nodes/{id}/history"), ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!(
        types(history["events"].as_array().unwrap()),
        [
            "node.enrolled",
            "node.online",
            "node.provider_changed",
            "node.approved",
            "node.roles_changed",
            "node.placement_changed",
            "node.drain_changed",
            "node.removed"
        ]
    );
}

#[tokio::test]
async fn heartbeats_that_change_nothing_write_nothing() {
    let (s, _, token) = app_with_body(|_| {}).await;
    let report = json!({"provider_status": "running", "agent_version": "2.1", "stream_status": "idle",
                        "telemetry": {"gpu_utilization_pct": 12}, "diagnostics": {"disk": "ok"}});
    heartbeat(&s, &token, report.clone()).await;
    let before = s.ledger().committed_seq();
    for _ in 0..20 {
        let (status, _) = heartbeat(&s, &token, report.clone()).await;
        assert_eq!(status, 200);
    }
    assert_eq!(s.ledger().committed_seq(), before, "quiet heartbeats must not append events");
    let (_, log) = get(&s, "/api/v1/events/log?types=node.stream_changed", ADMIN).await;
    assert!(log["events"].as_array().unwrap().is_empty(), "idle is the default: no stream event");

    heartbeat(&s, &token, json!({"stream_status": "streaming"})).await;
    assert_eq!(s.ledger().committed_seq(), before + 1);
    let (_, nodes) = get(&s, "/api/v1/nodes", ADMIN).await;
    assert_eq!(nodes[0]["stream_status"], "streaming");
    assert_eq!(nodes[0]["diagnostics"], json!({"disk": "ok"}));
}

#[tokio::test]
async fn update_flags_reach_the_node_exactly_once() {
    let (s, id, token) = app_with_body(|_| {}).await;
    let (status, node) = post(&s, &format!("/api/v1/nodes/{id}/update-node"), ADMIN, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(node["update_node"], true);
    let (_, first) = heartbeat(&s, &token, json!({})).await;
    let (_, second) = heartbeat(&s, &token, json!({})).await;
    assert_eq!(first["update_node"], true);
    assert_eq!(first["update_services"], false);
    assert_eq!(second["update_node"], false);
}

#[tokio::test]
async fn list_filters_by_district_venue_role_and_status() {
    let s = spawn_app().await;
    let (a, _) = approved_body(&s, "body-a").await;
    let (b, _) = enroll(&s, "pending-b").await;
    let (_, v) = get(&s, "/api/v1/nodes?district=north&venue=arena", ADMIN).await;
    assert_eq!(ids(v.as_array().unwrap()), vec![a.clone()]);
    let (_, v) = get(&s, "/api/v1/nodes?role=hydrabody", ADMIN).await;
    assert_eq!(ids(v.as_array().unwrap()), vec![a.clone()]);
    let (_, v) = get(&s, "/api/v1/nodes?status=pending", ADMIN).await;
    assert_eq!(ids(v.as_array().unwrap()), vec![b]);
    let (_, v) = get(&s, "/api/v1/nodes?district=south", OBSERVER).await;
    assert!(ids(v.as_array().unwrap()).is_empty());
    let (status, v) = get(&s, "/api/v1/nodes?status=sleeping", ADMIN).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("sleeping"));
}

#[tokio::test]
async fn the_enrollment_page_prefills_safely_and_the_form_enrolls() {
    let s = spawn_app().await;
    let page = s
        .http
        .get(format!("{}/enroll?name=kiosk-7&ip=%22%3E%3Cscript%3E", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("value=\"kiosk-7\""));
    assert!(!page.contains("<script>"), "pre-filled values must be escaped");
    assert!(page.contains("If an agent stopped"));

    let resp = s
        .http
        .post(format!("{}/enroll", s.url))
        .form(&[("name", "kiosk-7"), ("ip", "192.168.4.20")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let html = resp.text().await.unwrap();
    assert!(html.contains("hyn_"), "the token is shown once on the result page");
    let (_, nodes) = get(&s, "/api/v1/nodes", ADMIN).await;
    assert_eq!(nodes[0]["name"], "kiosk-7");
    assert_eq!(nodes[0]["ip"], "192.168.4.20", "the submitted ip overrides the remote address");
}

#[tokio::test]
async fn enrollment_without_an_ip_uses_the_remote_address() {
    let s = spawn_app().await;
    let (status, body) = request(&s, Method::POST, "/enroll", None, Some(json!({"name": "b"}))).await;
    assert_eq!(status, 201, "{body}");
    let (_, node) = get(&s, &format!("/api/v1/nodes/{}", body["node_id"].as_str().unwrap()), ADMIN).await;
    assert_eq!(node["ip"], "127.0.0.1");
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let (s, id, token) = app_with_body(|c| c.max_body_bytes = 4096).await;
    let before = s.ledger().committed_seq();
    let (_, digest_before) = get(&s, "/api/v1/audit/digest", ADMIN).await;

    let raw = |path: String, body: &'static str, token: &'static str| {
        let http = s.http.clone();
        async move {
            let r = http
                .post(path)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let roles_url = format!("{}/api/v1/nodes/{id}/roles", s.url);
    // Malformed JSON.
    let (status, body) = raw(roles_url.clone(), "{\"roles\": [", ADMIN).await;
    assert_eq!(status, 400, "{body}");
    // Wrong shape.
    let (status, body) = raw(roles_url.clone(), "{\"roles\": \"hydrabody\"}", ADMIN).await;
    assert_eq!(status, 422, "{body}");
    // Unknown field where it matters (a typo must not pass silently).
    let (status, body) = raw(roles_url.clone(), "{\"roles\": [], \"rolse\": []}", ADMIN).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("rolse"));
    // Unknown role: the 400 names it.
    let (status, body) =
        post(&s, &format!("/api/v1/nodes/{id}/roles"), ADMIN, json!({"roles": ["hydrabody", "chef"]})).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("\"chef\""), "{body}");
    // Unknown and malformed ids.
    let (status, _) = post(&s, "/api/v1/nodes/node-doesnotexist/roles", ADMIN, json!({"roles": []})).await;
    assert_eq!(status, 404);
    let (status, body) = get(&s, "/api/v1/nodes/..%2Fetc", ADMIN).await;
    assert_eq!(status, 400, "{body}");
    // Oversized body.
    let big = json!({"roles": ["x".repeat(10_000)]});
    let (status, body) = post(&s, &format!("/api/v1/nodes/{id}/roles"), ADMIN, big).await;
    assert_eq!(status, 413, "{body}");
    // Invalid names and ips at enrollment.
    for bad in [
        json!({"name": "", "ip": "10.0.0.1"}),
        json!({"name": "a b<c>", "ip": "10.0.0.1"}),
        json!({"name": "ok", "ip": "999.1.1.1"}),
    ] {
        let (status, body) = request(&s, Method::POST, "/enroll", None, Some(bad)).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().is_some());
    }
    // Bad heartbeat fields.
    let (status, _) = heartbeat(&s, &token, json!({"stream_status": "dancing"})).await;
    assert_eq!(status, 400);
    // Bad environment, empty district.
    let (status, body) = place(&s, &id, json!({"district": "n", "venue": "v", "environment": "qa"})).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("qa"));
    let (status, _) = place(&s, &id, json!({"district": " ", "venue": "v"})).await;
    assert_eq!(status, 400);
    // Approving twice is a conflict.
    let (status, _) =
        post(&s, &format!("/api/v1/nodes/{id}/approve"), ADMIN, json!({"district": "n", "venue": "v"})).await;
    assert_eq!(status, 409);

    assert_eq!(s.ledger().committed_seq(), before, "rejected requests append nothing");
    let (_, digest_after) = get(&s, "/api/v1/audit/digest", ADMIN).await;
    assert_eq!(digest_before, digest_after, "rejected requests change no view");
}

#[tokio::test]
async fn tokens_are_checked_by_kind_401_for_unknown_403_for_wrong_kind() {
    let (s, id, token) = app_with_body(|_| {}).await;
    let (status, _) = request(&s, Method::GET, "/api/v1/nodes", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = get(&s, "/api/v1/nodes", "hyn_forged").await;
    assert_eq!(status, 401);
    let (status, body) = get(&s, "/api/v1/nodes", &token).await;
    assert_eq!(status, 403, "a node token on an admin route: {body}");
    let (status, _) =
        post(&s, &format!("/api/v1/nodes/{id}/drain"), OBSERVER, json!({"draining": true})).await;
    assert_eq!(status, 403, "observers read, never write");
    let (status, _) = get(&s, "/api/v1/nodes", OBSERVER).await;
    assert_eq!(status, 200);
    let (status, _) = heartbeat(&s, ADMIN, json!({})).await;
    assert_eq!(status, 403, "an admin token is not a node token");
    // A rejected node's token is revoked with the rejection.
    let (other, other_token) = enroll(&s, "body-2").await;
    post(&s, &format!("/api/v1/nodes/{other}/reject"), ADMIN, json!({})).await;
    let (status, body) = heartbeat(&s, &other_token, json!({})).await;
    assert_eq!(status, 401, "{body}");
    // The admin token never reaches the log or the stream.
    let (_, log) = get(&s, "/api/v1/events/log?limit=1000", ADMIN).await;
    let text = log.to_string();
    assert!(!text.contains(ADMIN) && !text.contains(&token) && !text.contains(&other_token));
}

#[tokio::test]
async fn an_enrollment_flood_is_rate_limited_per_address() {
    let s = spawn_app_with(|c| c.enroll_per_minute = 3).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(try_enroll(&s, &format!("flood-{i}")).await.0);
    }
    assert_eq!(statuses, vec![201, 201, 201, 429, 429]);
    let (_, nodes) = get(&s, "/api/v1/nodes", ADMIN).await;
    assert_eq!(nodes.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn silent_nodes_go_offline_and_come_back() {
    let (s, id, token) = app_with_body(quick_offline).await;
    heartbeat(&s, &token, json!({})).await;
    let went_offline =
        eventually(Duration::from_secs(10), || async { node(&s, &id).await["node_status"] == "offline" });
    assert!(went_offline.await);
    heartbeat(&s, &token, json!({})).await;
    assert_eq!(node(&s, &id).await["node_status"], "online");
    let log = events(&s, &format!("node={id}&types=node.online,node.offline")).await;
    assert_eq!(types(&log), ["node.online", "node.offline", "node.online"]);
}

#[tokio::test]
async fn health_is_public_and_summarises_the_fleet() {
    let s = spawn_app().await;
    approved_body(&s, "body-1").await;
    enroll(&s, "body-2").await;
    let health: serde_json::Value =
        s.http.get(format!("{}/api/v1/health", s.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["nodes"]["total"], 2);
    assert_eq!(health["nodes"]["pending"], 1);
    let ready = s.http.get(format!("{}/readyz", s.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// A path segment that is not UTF-8 once decoded (`%FF`) is a JSON 400 saying so on
/// every route with an id, as the OpenAPI document says every error is: not axum's
/// plain-text rejection.
#[tokio::test]
async fn a_path_id_that_does_not_decode_is_a_json_error() {
    let s = spawn_app().await;
    for path in [
        "/api/v1/sessions/%FF",
        "/api/v1/sessions/%FF/logs",
        "/api/v1/heads/%FF",
        "/api/v1/heads/%FF/experiences",
        "/api/v1/nodes/node-a/exec/%FF/result",
        "/api/v1/library/rollouts/%FF",
        "/api/v1/nodes/%FF",
    ] {
        let (status, body) = get(&s, path, ADMIN).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("UTF-8")), "{path}: {body}");
    }
}
