//! End to end: `hydraexperiencelibrary`'s HTTP API on a real in-process server (no
//! cluster configured): experiences, builds, promotion, the public live list, auth,
//! body errors, SSE, and the CLI binary against the same server.

use crate::common::library::{spawn_library, TestLibrary};
use crate::common::{dead_url, who, ADMIN, OBSERVER};
use eventsource_client::{self as es, Client as _};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

async fn spawn_lib() -> TestLibrary {
    spawn_library(|_| {}).await
}

async fn spawn_lib_with(cluster_url: Option<String>) -> TestLibrary {
    spawn_library(|c| c.cluster_url = cluster_url).await
}

/// A library (following `cluster_url` when given) with the experience `space` at v1
/// and its build b1.
async fn lib_with_b1(cluster_url: Option<String>) -> TestLibrary {
    let lib = spawn_lib_with(cluster_url).await;
    lib.create("space", &["v1"], false).await;
    lib.build("space", "b1", "1.0").await;
    lib
}

impl TestLibrary {
    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    async fn raw_post(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, id: &str, venues: &[&str], auto_promote: bool) -> Value {
        let body = json!({"id": id, "project": "space-game", "district": "d1", "venues": venues, "auto_promote": auto_promote});
        let (status, v) = self.admin("POST", "/api/v1/experiences", Some(body)).await;
        assert_eq!(status, 201, "{v}");
        v
    }

    async fn build(&self, id: &str, build: &str, version: &str) -> (u16, Value) {
        let body = build_body(build, version);
        self.admin("POST", &format!("/api/v1/experiences/{id}/builds"), Some(body)).await
    }

    async fn promote(&self, id: &str, to: &str) -> (u16, Value) {
        self.admin("POST", &format!("/api/v1/experiences/{id}/promote"), Some(json!({"to": to}))).await
    }
}

fn build_body(build: &str, version: &str) -> Value {
    json!({
        "build": build,
        "version": version,
        "artifact_url": format!("https://artifacts.example/{build}.zip"),
        "sha256": "ab".repeat(32),
    })
}

fn error(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_else(|| panic!("an error message in {v}"))
}

#[tokio::test]
async fn experiences_are_created_listed_and_read_with_clear_refusals() {
    let mut lib = spawn_lib().await;
    let x = lib.create("space", &["v2", "v1", "v1"], false).await;
    assert_eq!(x["id"], "space");
    assert_eq!(x["venues"], json!(["v1", "v2"]), "sorted, without repeats");
    assert_eq!(x["auto_promote"], false);
    assert_eq!(x["environments"], json!({}));
    assert_eq!(x["builds"], json!([]));
    assert!(x["created_at"].as_str().unwrap().ends_with('Z'));
    lib.create("ocean", &["v1"], true).await;

    let (status, list) = lib.admin("GET", "/api/v1/experiences", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ocean", "space"]);
    let (status, one) = lib.call("GET", "/api/v1/experiences/space", Some(OBSERVER), None).await;
    assert_eq!((status, &one), (200, &x));
    let (status, v) = lib.admin("GET", "/api/v1/experiences/nope", None).await;
    assert_eq!(status, 404);
    assert!(error(&v).contains("nope"));

    let refused = [
        (json!({"id": "space", "project": "p", "district": "d1", "venues": ["v1"]}), 409, "exists already"),
        (
            json!({"id": "no spaces", "project": "p", "district": "d1", "venues": ["v1"]}),
            400,
            "experience id",
        ),
        (json!({"id": "x1", "project": "p", "district": "d1", "venues": []}), 400, "venues"),
        (
            json!({"id": "x1", "project": "p", "district": "d1", "venues": ["v\n1"]}),
            400,
            "venue must be 1 to 64 printable characters",
        ),
    ];
    for (body, want, says) in refused {
        let (status, v) = lib.admin("POST", "/api/v1/experiences", Some(body)).await;
        assert_eq!(status, want, "{v}");
        assert!(error(&v).contains(says), "{v}");
    }
    // Places follow hydracluster's rule: a venue it accepts, like `Hall A`, is fine here.
    let spaced = json!({"id": "x2", "project": "p", "district": "North Side", "venues": ["Hall A"]});
    let (status, v) = lib.admin("POST", "/api/v1/experiences", Some(spaced)).await;
    assert_eq!(status, 201, "{v}");
    lib.stop().await;
}

#[tokio::test]
async fn builds_register_once_and_a_changed_build_is_refused() {
    let mut lib = spawn_lib().await;
    lib.create("space", &["v1"], false).await;
    let (status, v) = lib.build("space", "b1", "1.0").await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["duplicate"], false);
    assert_eq!(v["build"], "b1");
    assert!(v.get("promotion").is_none(), "no auto-promotion asked: {v}");

    let (status, v) = lib.build("space", "b1", "1.0").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["duplicate"], true);

    let (status, v) = lib.build("space", "b1", "1.1").await;
    assert_eq!(status, 409, "{v}");
    assert!(error(&v).contains("registered already"), "{v}");

    let (status, _) = lib.build("nope", "b1", "1.0").await;
    assert_eq!(status, 404);
    let mut bad = build_body("b2", "2.0");
    bad["sha256"] = json!("xyz");
    let (status, v) = lib.admin("POST", "/api/v1/experiences/space/builds", Some(bad)).await;
    assert_eq!(status, 400);
    assert!(error(&v).contains("sha256"), "{v}");

    let (_, x) = lib.admin("GET", "/api/v1/experiences/space", None).await;
    assert_eq!(x["environments"]["development"]["build"], "b1");
    assert_eq!(x["builds"].as_array().unwrap().len(), 1);
    assert_eq!(x["builds"][0]["sha256"], "ab".repeat(32));
    lib.stop().await;
}

#[tokio::test]
async fn promotion_moves_builds_through_environments_without_a_cluster() {
    let mut lib = spawn_lib().await;
    lib.create("space", &["v1"], false).await;

    let (status, v) = lib.promote("space", "staging").await;
    assert_eq!(status, 409, "no development build yet: {v}");
    assert!(error(&v).contains("no development build"), "{v}");
    let (status, v) = lib.promote("space", "qa").await;
    assert_eq!(status, 400, "{v}");
    assert!(error(&v).contains("staging or production"), "{v}");
    let (status, _) = lib.promote("nope", "staging").await;
    assert_eq!(status, 404);

    lib.build("space", "b1", "1.0").await;
    let (status, v) = lib.promote("space", "staging").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rollout_id"], Value::Null, "no cluster: nothing to reprovision");
    assert_eq!((v["environment"].as_str(), v["build"].as_str()), (Some("staging"), Some("b1")));
    let (status, v) = lib.promote("space", "production").await;
    assert_eq!(status, 200, "{v}");

    let (_, x) = lib.admin("GET", "/api/v1/experiences/space", None).await;
    for env in ["development", "staging", "production"] {
        assert_eq!(x["environments"][env]["build"], "b1", "{env}: {x}");
        assert_eq!(x["environments"][env]["version"], "1.0");
    }
    assert_eq!(x["environments"]["production"]["rollout_id"], Value::Null);

    let body = json!({"to": "staging", "max_parallel": 0});
    let (status, v) = lib.admin("POST", "/api/v1/experiences/space/promote", Some(body)).await;
    assert_eq!(status, 400, "{v}");
    let body = json!({"to": "staging", "node_deadline": "soon"});
    let (status, v) = lib.admin("POST", "/api/v1/experiences/space/promote", Some(body)).await;
    assert_eq!(status, 400, "{v}");
    assert!(error(&v).contains("node_deadline"), "{v}");

    // Auto-promotion: a new build goes on to staging in the same request.
    lib.create("ocean", &["v1"], true).await;
    let (status, v) = lib.build("ocean", "o1", "0.1").await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["promotion"]["environment"], "staging", "{v}");
    assert!(v.get("promotion_error").is_none(), "{v}");
    let (_, x) = lib.admin("GET", "/api/v1/experiences/ocean", None).await;
    assert_eq!(x["environments"]["staging"]["build"], "o1");

    let (status, list) = lib.admin("GET", "/api/v1/rollouts", None).await;
    assert_eq!((status, list), (200, json!([])), "no cluster, no rollouts");
    lib.stop().await;
}

#[tokio::test]
async fn a_pinned_build_is_promoted_and_numeric_build_ids_are_the_same_build_as_strings() {
    let mut lib = spawn_lib().await;
    lib.create("space", &["v1"], false).await;
    // HydraRelease may send the build as a number: `1` and `"1"` are one build.
    let numeric = json!({"build": 1, "version": "1.0", "artifact_url": "https://a.example/1.zip", "sha256": "ab".repeat(32)});
    let (status, v) = lib.admin("POST", "/api/v1/experiences/space/builds", Some(numeric)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["build"], "1", "shown back as a string");
    let (status, v) = lib.build("space", "1", "1.0").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["duplicate"], true, "\"1\" is the build registered as 1: {v}");
    let bad = json!({"build": [1], "version": "1", "artifact_url": "https://a.example/x.zip", "sha256": "ab".repeat(32)});
    let (status, v) = lib.admin("POST", "/api/v1/experiences/space/builds", Some(bad)).await;
    assert!(status == 400 || status == 422, "{status} {v}");
    assert!(error(&v).contains("build must be a string or a whole number"), "{v}");

    // A later build is the development build; an operator pins the earlier one.
    lib.build("space", "2", "2.0").await;
    let pin = |build: Value| json!({"to": "staging", "build": build});
    let (status, v) = lib.admin("POST", "/api/v1/experiences/space/promote", Some(pin(json!("9")))).await;
    assert_eq!(status, 404, "{v}");
    assert!(error(&v).contains("no build \"9\""), "the unknown build is named: {v}");
    let (status, v) = lib.admin("POST", "/api/v1/experiences/space/promote", Some(pin(json!(1)))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["build"].as_str(), v["version"].as_str()), (Some("1"), Some("1.0")), "{v}");
    let (_, x) = lib.admin("GET", "/api/v1/experiences/space", None).await;
    assert_eq!(x["environments"]["staging"]["build"], "1");
    assert_eq!(x["environments"]["development"]["build"], "2", "the development build is untouched");
    lib.stop().await;
}

#[tokio::test]
async fn the_live_list_is_public_and_holds_only_production_builds_of_the_venue() {
    let mut lib = spawn_lib().await;
    lib.create("space", &["v1", "v2"], false).await;
    lib.create("ocean", &["v1"], false).await;
    lib.create("desert", &["v3"], false).await;
    for x in ["space", "ocean", "desert"] {
        lib.build(x, &format!("{x}-1"), "1.0").await;
        lib.promote(x, "staging").await;
    }
    lib.promote("space", "production").await;
    lib.promote("desert", "production").await;
    // A newer development build must not leak into the live list.
    lib.build("space", "space-2", "2.0").await;

    let (status, v) = lib.call("GET", "/api/v1/experiences/live?district=d1&venue=v1", None, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!([{
            "id": "space",
            "project": "space-game",
            "build": "space-1",
            "version": "1.0",
            "artifact_url": "https://artifacts.example/space-1.zip",
            "sha256": "ab".repeat(32),
            "environment": "production",
        }])
    );
    let (_, v) = lib
        .call("GET", "/api/v1/experiences/live?district=d1&venue=v1&environment=staging", None, None)
        .await;
    let ids: Vec<&str> = v.as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ocean", "space"]);
    let (_, v) = lib.call("GET", "/api/v1/experiences/live?district=d2&venue=v1", None, None).await;
    assert_eq!(v, json!([]), "another district: an empty array, not an error");

    let (status, v) = lib.call("GET", "/api/v1/experiences/live?district=d1", None, None).await;
    assert_eq!(status, 400);
    assert!(error(&v).contains("venue"), "{v}");
    let (status, _) = lib.call("GET", "/api/v1/experiences/live?venue=v1", None, None).await;
    assert_eq!(status, 400);
    let (status, _) =
        lib.call("GET", "/api/v1/experiences/live?district=d1&venue=v1&environment=qa", None, None).await;
    assert_eq!(status, 400);

    // hydracluster's own client accepts the answer.
    let library = hydra::cluster::library_client::library(&lib.url, None, Duration::from_secs(5));
    let items = hydra::cluster::library_client::live_experiences(&library, "d1", "v3").await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(hydra::cluster::library_client::experience_id(&items[0]).as_deref(), Some("desert"));
    lib.stop().await;
}

#[tokio::test]
async fn tokens_bodies_and_unknown_paths_get_clear_errors() {
    let mut lib = spawn_lib().await;
    let create = json!({"id": "space", "project": "p", "district": "d1", "venues": ["v1"]});
    let (status, v) = lib.call("POST", "/api/v1/experiences", None, Some(create.clone())).await;
    assert_eq!(status, 401, "{v}");
    let (status, _) = lib.call("GET", "/api/v1/experiences", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = lib.call("GET", "/api/v1/experiences", Some("wrong"), None).await;
    assert_eq!(status, 401);
    let (status, v) = lib.call("POST", "/api/v1/experiences", Some(OBSERVER), Some(create.clone())).await;
    assert_eq!(status, 403, "{v}");
    let (status, _) = lib.call("POST", "/api/v1/rollouts/r1/pause", Some(OBSERVER), None).await;
    assert_eq!(status, 403);
    let (status, _) = lib.call("GET", "/api/v1/experiences", Some(OBSERVER), None).await;
    assert_eq!(status, 200, "an observer may read");
    let (status, _) = lib.call("GET", "/api/v1/rollouts", Some(OBSERVER), None).await;
    assert_eq!(status, 200);

    let (status, v) = lib.raw_post("/api/v1/experiences", "application/json", b"{\"id\": ".to_vec()).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = lib.raw_post("/api/v1/experiences", "application/json", br#"{"id": 7}"#.to_vec()).await;
    assert_eq!(status, 422, "{v}");
    let (status, v) =
        lib.raw_post("/api/v1/experiences", "text/plain", create.to_string().into_bytes()).await;
    assert_eq!(status, 415, "{v}");
    let mut big = create.clone();
    big["project"] = json!("p".repeat(2 << 20));
    let (status, v) =
        lib.raw_post("/api/v1/experiences", "application/json", big.to_string().into_bytes()).await;
    assert_eq!(status, 413, "{v}");
    let unknown_field =
        json!({"id": "space", "project": "p", "district": "d1", "venues": ["v1"], "colour": 1});
    let (status, _) = lib.admin("POST", "/api/v1/experiences", Some(unknown_field)).await;
    assert_eq!(status, 422);

    let (status, v) = lib.admin("GET", "/api/v1/rollouts/r9", None).await;
    assert_eq!(status, 404);
    assert!(error(&v).contains("r9"), "{v}");
    let (status, v) = lib.admin("GET", "/api/v1/rollouts/zz", None).await;
    assert_eq!(status, 404);
    assert!(error(&v).contains("look like r7"), "{v}");
    let (status, _) = lib.admin("POST", "/api/v1/rollouts/r9/pause", None).await;
    assert_eq!(status, 404);
    let (status, _) = lib.admin("POST", "/api/v1/rollouts/r9/explode", None).await;
    assert_eq!(status, 404);
    let (status, v) = lib.admin("GET", "/api/v1/rollouts?state=lost", None).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = lib.admin("GET", "/api/v1/nothing-here", None).await;
    assert_eq!(status, 404);
    assert_eq!(error(&v), "no such endpoint");
    let (status, _) = lib.admin("DELETE", "/api/v1/experiences", None).await;
    assert_eq!(status, 405);

    let (status, h) = lib.call("GET", "/api/v1/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(h["service"], "hydraexperiencelibrary");
    assert_eq!(h["experiences"], 0);
    assert_eq!(h["rollouts"], json!({"active": 0, "total": 0}));
    assert_eq!(h["cluster"], json!({"url": null, "connected": false}));
    assert_eq!(h["release"]["url"], Value::Null);
    let (status, r) = lib.call("GET", "/readyz", None, None).await;
    assert_eq!((status, &r["ready"]), (200, &json!(true)));
    lib.stop().await;
}

#[tokio::test]
async fn the_event_stream_carries_experience_and_build_events_to_an_observer() {
    let mut lib = lib_with_b1(None).await;

    let client = es::ClientBuilder::for_url(&format!("{}/api/v1/events?since=0", lib.url))
        .unwrap()
        .header("Authorization", &format!("Bearer {OBSERVER}"))
        .unwrap()
        .reconnect(es::ReconnectOptions::reconnect(false).build())
        .build();
    let mut stream = client.stream();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let next = tokio::time::timeout(Duration::from_secs(20), stream.next()).await.expect("events arrive");
        if let es::SSE::Event(e) = next.expect("stream open").expect("no stream error") {
            seen.push((e.event_type.clone(), serde_json::from_str::<Value>(&e.data).unwrap()));
        }
    }
    assert_eq!(seen[0].0, "experience.created");
    assert_eq!(seen[0].1["data"]["experience_id"], "space");
    assert_eq!(seen[1].0, "build.registered");
    assert_eq!(seen[1].1["data"]["build"], "b1");
    assert_eq!(who(&seen[1].1), "admin:admin");
    drop(stream);
    lib.stop().await;
}

#[tokio::test]
async fn the_cli_reads_an_experience_and_lists_rollouts() {
    let mut lib = lib_with_b1(None).await;
    let bin = env!("CARGO_BIN_EXE_hydraexperiencelibrary");
    let url = lib.url.clone();
    let run = move |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .env("HYDRAEXPERIENCELIBRARY_SERVER", &url)
            .env("HYDRAEXPERIENCELIBRARY_TOKEN", OBSERVER)
            .env_remove("HYDRAEXPERIENCELIBRARY_DATA")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["get", "space", "--json"])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{err}");
    let x: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(x["environments"]["development"]["build"], "b1");

    let (code, out, err) = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["rollouts"])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("ID"), "a table header: {out}");

    let (code, _, err) = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["get", "nope"])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1));
    assert!(err.contains("no experience nope"), "{err}");

    // The observer token may not change anything: the server's refusal is shown.
    let (code, _, err) =
        tokio::task::spawn_blocking(move || run(&["promote", "space", "--to", "staging"])).await.unwrap();
    assert_eq!(code, Some(1));
    assert!(err.contains("403"), "{err}");
    lib.stop().await;
}

/// A stand-in for hydracluster: a venue with two online bodies, one offline body and
/// one head, all in staging; it accepts reprovision requests and never reports
/// progress, so a rollout stays where the test puts it.
pub(crate) async fn fake_cluster() -> String {
    use axum::response::sse::{Event as SseEvent, Sse};
    use axum::routing::{get, post};
    let node = |id: &str, kind: &str, online: bool| {
        json!({"id": id, "kind": kind, "environment": "staging", "status": "approved",
               "node_status": if online { "online" } else { "offline" }, "district": "d1", "venue": "v1"})
    };
    let nodes = json!([
        node("node-b1", "body", true),
        node("node-b2", "body", true),
        node("node-b3", "body", false),
        node("node-h1", "head", true),
    ]);
    let app = axum::Router::new()
        .route("/api/v1/health", get(|| async { axum::Json(json!({"status": "ok", "last_event_id": 40})) }))
        .route("/api/v1/nodes", get(move || async move { axum::Json(nodes) }))
        .route(
            "/api/v1/nodes/{id}/reprovision",
            post(|| async { axum::Json(json!({"provision_state": "requested"})) }),
        )
        .route(
            "/api/v1/events/log",
            get(|| async { axum::Json(json!({"events": [], "next_since": 40, "head": 40})) }),
        )
        .route(
            "/api/v1/events",
            get(|| async {
                Sse::new(futures_util::stream::pending::<Result<SseEvent, std::convert::Infallible>>())
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_promotion_over_a_venue_starts_a_rollout_that_can_be_paused_resumed_and_cancelled() {
    let mut lib = lib_with_b1(Some(fake_cluster().await)).await;
    let body = json!({"to": "staging", "max_parallel": 1, "failure_threshold": "1", "node_deadline": "10m"});
    let (status, p) = lib.admin("POST", "/api/v1/experiences/space/promote", Some(body)).await;
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["rollout_id"], "r1");
    assert_eq!(
        (p["bodies"].as_u64(), p["heads"].as_u64(), p["skipped"].as_u64()),
        (Some(2), Some(1), Some(1))
    );

    let (status, again) = lib.promote("space", "staging").await;
    assert_eq!(status, 409, "one rollout at a time: {again}");
    assert!(error(&again).contains("rollout r1"), "{again}");

    let (status, r) = lib.call("GET", "/api/v1/rollouts/r1", Some(OBSERVER), None).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!((r["experience_id"].as_str(), r["environment"].as_str()), (Some("space"), Some("staging")));
    assert_eq!((r["build"].as_str(), r["version"].as_str()), (Some("b1"), Some("1.0")));
    assert_eq!(
        r["policy"],
        json!({"max_parallel": 1, "failure_threshold": "1", "node_deadline_ms": 600_000})
    );
    assert_eq!(r["counts"]["total"], 3);
    let nodes: Vec<(&str, &str, u64)> = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node_id"].as_str().unwrap(), n["kind"].as_str().unwrap(), n["wave"].as_u64().unwrap()))
        .collect();
    assert_eq!(nodes, [("node-b1", "body", 1), ("node-b2", "body", 1), ("node-h1", "head", 2)]);
    assert_eq!(r["skipped"], json!([{"node_id": "node-b3", "reason": "offline"}]));
    assert_eq!(r["failures"], json!([]));
    assert!(r["started_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r["finished_at"], Value::Null);

    let (status, r) = lib.admin("POST", "/api/v1/rollouts/r1/pause", None).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("paused")), "{r}");
    let (_, list) = lib.admin("GET", "/api/v1/rollouts?state=paused&experience=space", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = lib.admin("GET", "/api/v1/rollouts?state=running", None).await;
    assert_eq!(list, json!([]));
    let (_, h) = lib.call("GET", "/api/v1/health", None, None).await;
    assert_eq!(h["rollouts"], json!({"active": 1, "total": 1}));

    let (status, r) = lib.admin("POST", "/api/v1/rollouts/r1/resume", None).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("running")), "{r}");
    let (status, r) = lib.admin("POST", "/api/v1/rollouts/r1/cancel", None).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("cancelled")), "{r}");
    assert!(r["finished_at"].as_str().is_some());
    let (status, v) = lib.admin("POST", "/api/v1/rollouts/r1/resume", None).await;
    assert_eq!(status, 409, "{v}");
    assert!(error(&v).contains("cancelled"), "{v}");

    let (_, x) = lib.admin("GET", "/api/v1/experiences/space", None).await;
    assert_eq!(x["environments"]["staging"]["rollout_id"], "r1");

    // The CLI's table and detail views of the same rollout.
    let bin = env!("CARGO_BIN_EXE_hydraexperiencelibrary");
    let url = lib.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["rollout", "get", "r1"])
            .env("HYDRAEXPERIENCELIBRARY_SERVER", &url)
            .env("HYDRAEXPERIENCELIBRARY_TOKEN", ADMIN)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("cancelled") && text.contains("node-h1") && text.contains("skipped node-b3"),
        "{text}"
    );
    lib.stop().await;
}

#[tokio::test]
async fn a_promotion_that_cannot_reach_hydracluster_is_a_502_and_promotes_nothing() {
    // A port that was just free: nothing listens there.
    let mut lib = spawn_lib_with(Some(dead_url())).await;
    lib.create("space", &["v1"], true).await;
    let (status, v) = lib.build("space", "b1", "1.0").await;
    assert_eq!(status, 201, "the build stays registered: {v}");
    assert_eq!(v["promotion"], Value::Null);
    assert!(v["promotion_error"].as_str().unwrap().contains("unreachable"), "{v}");

    let (status, v) = lib.promote("space", "staging").await;
    assert_eq!(status, 502, "{v}");
    assert!(error(&v).contains("nothing was promoted"), "{v}");
    let (_, x) = lib.admin("GET", "/api/v1/experiences/space", None).await;
    assert!(x["environments"].get("staging").is_none(), "{x}");
    assert_eq!(x["environments"]["development"]["build"], "b1");
    lib.stop().await;
}

/// A query string that does not parse (a parameter given twice) is a JSON 400 naming
/// it, as the OpenAPI document says every error is: not axum's plain-text rejection.
#[tokio::test]
async fn a_query_that_does_not_parse_is_a_json_error() {
    let lib = spawn_lib().await;
    for path in
        ["/api/v1/rollouts?state=running&state=paused", "/api/v1/experiences/live?district=a&district=b"]
    {
        let (status, body) = lib.admin("GET", path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(error(&body).contains("duplicate field"), "{path}: {body}");
    }
}
