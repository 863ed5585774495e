//! Handler error cases through the router, without a socket (`oneshot`): what a
//! client that sends the wrong thing is told, status and message.

use super::{router, AppState};
use crate::cluster::config::Config;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hydra_core::auth::Tokens;
use hydra_core::ledger::{Ledger, LedgerConfig};
use hydra_core::store::Store;
use serde_json::Value;
use tower::ServiceExt;

const ADMIN: &str = "hya_test-admin";

/// hydracluster's router on a fresh data dir, with `ADMIN` as its admin token.
fn app() -> (tempfile::TempDir, axum::Router) {
    let (dir, state) = state();
    (dir, router(state))
}

/// The state behind `app`.
fn state() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ledger = Ledger::open(store, LedgerConfig { min_free_bytes: 0, ..LedgerConfig::default() }).unwrap();
    let tokens = Tokens::new(&[("admin".into(), ADMIN.into())], None, None);
    let (_, stopping) = tokio::sync::watch::channel(false);
    let config = Config { data: dir.path().to_owned(), ..Config::default() };
    (dir, AppState::new(config, ledger, tokens, stopping))
}

/// One request; the answer's status and JSON body (`null` when it is not JSON).
async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_owned()));
    let response = app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_else(|| panic!("no error message in {body}"))
}

#[tokio::test]
async fn unknown_paths_and_methods_say_so_in_json() {
    let (_dir, app) = app();
    let (status, body) = call(&app, "GET", "/api/v1/nope", Some(ADMIN), None).await;
    assert_eq!((status, error(&body)), (StatusCode::NOT_FOUND, "no such endpoint"));
    let (status, body) = call(&app, "PUT", "/api/v1/nodes", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(error(&body).contains("method not allowed"), "{body}");
}

#[tokio::test]
async fn a_missing_or_unknown_token_is_a_401() {
    let (_dir, app) = app();
    for token in [None, Some("hya_not-the-token")] {
        let (status, body) = call(&app, "GET", "/api/v1/nodes", token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
        assert!(error(&body).contains("token"), "{body}");
    }
}

#[tokio::test]
async fn a_bad_node_id_or_body_names_what_was_wrong() {
    let (_dir, app) = app();
    let approve = |id: &str| format!("/api/v1/nodes/{id}/approve");
    let placement = r#"{"district": "north", "venue": "arena"}"#;
    let (status, body) = call(&app, "POST", &approve("node-..%2Fetc"), Some(ADMIN), Some(placement)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("invalid node id"), "{body}");
    let (status, body) = call(&app, "POST", &approve("node-a"), Some(ADMIN), Some("{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = call(&app, "POST", &approve("node-a"), Some(ADMIN), Some(r#"{"venue": 3}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(error(&body).contains("venue: invalid type"), "{body}");
}

#[tokio::test]
async fn the_domain_refusals_map_to_their_status() {
    let (_dir, app) = app();
    let approve = "/api/v1/nodes/node-a/approve";
    // Checked by the command: an unknown role is named, with the catalog.
    let body = r#"{"roles": ["miner"], "district": "north", "venue": "arena"}"#;
    let (status, answer) = call(&app, "POST", approve, Some(ADMIN), Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(error(&answer).contains("unknown role \"miner\""), "{answer}");
    let body = r#"{"roles": [], "district": "north", "venue": "arena", "environment": "development"}"#;
    let (status, answer) = call(&app, "POST", approve, Some(ADMIN), Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(error(&answer).contains("staging or production"), "{answer}");
    // Well-formed, but there is no such node.
    let body = r#"{"roles": [], "district": "north", "venue": "arena"}"#;
    let (status, answer) = call(&app, "POST", approve, Some(ADMIN), Some(body)).await;
    assert_eq!((status, error(&answer)), (StatusCode::NOT_FOUND, "no node node-a"));
}

#[tokio::test]
async fn an_import_request_says_what_is_wrong_with_it() {
    let (_dir, app) = app();
    let file = "- {id: node-a, name: a, ip: 10.0.0.1, district: n, venue: v, token: hya_test-admin}\n";
    // A query without the file's name, with an unknown parameter, with a name that
    // cannot go in a cause: 400, saying which.
    for (query, says) in
        [("", "name is required"), ("?name=x&force=1", "force"), ("?name=a%0Ab", "the file's name")]
    {
        let path = format!("/api/v1/nodes/import{query}");
        let (status, body) = call(&app, "POST", &path, Some(ADMIN), Some(file)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(error(&body).contains(says), "{query}: {body}");
    }
    // An agent given the admin's token would be taken for the admin.
    let (status, body) =
        call(&app, "POST", "/api/v1/nodes/import?name=f.yaml", Some(ADMIN), Some(file)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["problems"][0]["line"], 1);
    assert!(body["problems"][0]["message"].as_str().unwrap().contains("the server's own tokens"), "{body}");
    let request = Request::post("/api/v1/nodes/import?name=f.yaml")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::from(vec![0xff, 0xfe]))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let huge = "#".repeat(Config::default().max_import_bytes + 1);
    let (status, _) = call(&app, "POST", "/api/v1/nodes/import?name=f.yaml", Some(ADMIN), Some(&huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, body) = call(&app, "GET", "/api/v1/nodes", Some(ADMIN), None).await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!([])));
}

#[tokio::test]
async fn a_second_import_under_way_is_refused_and_the_first_ends_it() {
    let (_dir, state) = state();
    let app = router(state.clone());
    let file = "- {id: node-a, name: a, ip: 10.0.0.1, district: n, venue: v, token: t}\n";
    state.importing.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) =
        call(&app, "POST", "/api/v1/nodes/import?name=f.yaml", Some(ADMIN), Some(file)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(error(&body).contains("another import is under way"), "{body}");
    state.importing.store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, body) =
        call(&app, "POST", "/api/v1/nodes/import?name=f.yaml", Some(ADMIN), Some(file)).await;
    assert_eq!((status, body["created"].clone()), (StatusCode::OK, serde_json::json!(["node-a"])), "{body}");
    // The flag is down again: the same file once more changes nothing.
    let (status, body) =
        call(&app, "POST", "/api/v1/nodes/import?name=f.yaml", Some(ADMIN), Some(file)).await;
    assert_eq!(
        (status, body["unchanged"].clone()),
        (StatusCode::OK, serde_json::json!(["node-a"])),
        "{body}"
    );
}

#[tokio::test]
async fn uptime_names_a_bad_window_or_granularity_and_an_unknown_node() {
    let (_dir, app) = app();
    let cases = [
        ("/api/v1/nodes/node-a/uptime?window=1h", "window", "`24h`, `7d`, `30d`"),
        (
            "/api/v1/nodes/node-a/uptime/history?granularity=weekly",
            "granularity",
            "expected `hourly` or `daily`",
        ),
        ("/api/v1/nodes/node-a/uptime/history?window=90d", "window", "`24h`, `7d`, `30d`"),
        ("/api/v1/uptime?window=forever", "window", "`24h`, `7d`, `30d`"),
    ];
    for (uri, parameter, accepted) in cases {
        let (status, body) = call(&app, "GET", uri, Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(error(&body).contains(parameter) && error(&body).contains(accepted), "{uri}: {body}");
    }
    let (status, body) = call(
        &app,
        "GET",
        "/api/v1/nodes/node-a/uptime?as_of_seq=1&as_of=2026-01-01T00:00:00Z",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!((status, error(&body)), (StatusCode::BAD_REQUEST, "give as_of_seq or as_of, not both"));
    for uri in ["/api/v1/nodes/node-a/uptime", "/api/v1/nodes/node-a/uptime/history?window=7d"] {
        let (status, body) = call(&app, "GET", uri, Some(ADMIN), None).await;
        assert_eq!((status, error(&body)), (StatusCode::NOT_FOUND, "no node node-a"), "{uri}");
    }
}

#[tokio::test]
async fn every_served_route_is_documented() {
    let (_dir, app) = app();
    let doc = crate::service::openapi::testing::check(app, include_str!("mod.rs"), &["/enroll"]).await;
    // Spot checks: auth per caller, a typed body, SSE.
    let approve = &doc["paths"]["/api/v1/nodes/{id}/approve"]["post"];
    assert_eq!(approve["security"][0], serde_json::json!({"admin": []}));
    assert_eq!(
        approve["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ApproveBody"
    );
    let heartbeat = &doc["paths"]["/api/v1/body/heartbeat"]["post"];
    assert_eq!(heartbeat["security"], serde_json::json!([{"node": []}]));
    assert!(
        doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"].is_object()
    );
    assert!(doc["paths"]["/api/v1/health"]["get"]["security"].is_null(), "health is public");
}
