//! End to end: reprovisioning over real HTTP, with the agent side (heartbeats and the
//! provisioning result) played by the test: the flag reaches the node once, the result
//! ends the run, the deadline ends a silent one, and wrong requests change nothing.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// The node's events whose type starts with `prefix`, oldest first.
async fn events_of(s: &TestServer, node: &str, prefix: &str) -> Vec<Value> {
    events(s, &format!("node={node}&types={prefix}*")).await
}

async fn reprovision(s: &TestServer, node: &str) -> (u16, Value) {
    post(s, &format!("/api/v1/nodes/{node}/reprovision"), ADMIN, json!({})).await
}

async fn report(s: &TestServer, token: &str, body: Value) -> (u16, Value) {
    post(s, "/api/v1/body/provision-result", token, body).await
}

/// Requests a reprovision and delivers it with heartbeats, checking the flag reaches
/// the node in exactly one answer and `provision.started` is recorded exactly once.
async fn start_provisioning(s: &TestServer, id: &str, token: &str) {
    let (status, n) = reprovision(s, id).await;
    assert_eq!(status, 200, "{n}");
    assert_eq!(n["reprovision"], true);
    assert_eq!(n["provision_state"], "requested");
    let mut flags = Vec::new();
    for _ in 0..4 {
        let (status, answer) = heartbeat(s, token, json!({})).await;
        assert_eq!(status, 200, "{answer}");
        flags.push(answer["reprovision"].as_bool().unwrap());
    }
    assert_eq!(flags, [true, false, false, false], "the first answer carries the flag, once");
    assert_eq!(types(&events_of(s, id, "provision.").await), ["provision.requested", "provision.started"]);
    let n = node(s, id).await;
    assert_eq!(n["reprovision"], false, "the pending flag is cleared once delivered");
    assert_eq!(n["provision_state"], "provisioning");
    assert!(n["provisioning"]["started_at"].is_string(), "{n}");
}

#[tokio::test]
async fn a_reprovision_reaches_the_node_once_and_its_result_completes_it() {
    let (s, id, token) = app_with_body(|_| {}).await;
    heartbeat(&s, &token, json!({})).await;
    start_provisioning(&s, &id, &token).await;

    let (status, r) = report(&s, &token, json!({"success": true, "version": "2.4.1"})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["provision_state"], "completed");
    let n = node(&s, &id).await;
    assert_eq!(n["provision_state"], "completed");
    assert_eq!(n["provisioning"]["version"], "2.4.1");
    let e = events_of(&s, &id, "provision.").await;
    assert_eq!(types(&e), ["provision.requested", "provision.started", "provision.completed"]);
    assert_eq!(e[2]["data"]["version"], "2.4.1");
    assert_eq!(who(&e[2]), format!("node:{id}"));

    // A duplicate result is refused and recorded nowhere.
    assert_eq!(report(&s, &token, json!({"success": true, "version": "9"})).await.0, 409);
    assert_eq!(events_of(&s, &id, "provision.").await.len(), 3);
}

#[tokio::test]
async fn a_failed_result_is_recorded_with_its_error_and_the_last_version_stays() {
    let (s, id, token) = app_with_body(|_| {}).await;
    start_provisioning(&s, &id, &token).await;
    report(&s, &token, json!({"success": true, "version": "1.0"})).await;
    start_provisioning_again(&s, &id, &token).await;
    assert_eq!(
        report(&s, &token, json!({"success": false})).await.0,
        400,
        "a failure must say what went wrong"
    );
    let (status, r) = report(&s, &token, json!({"success": false, "error": "sha256 mismatch"})).await;
    assert_eq!(status, 200, "{r}");
    let n = node(&s, &id).await;
    assert_eq!(n["provision_state"], "failed");
    assert_eq!(n["provisioning"]["error"], "sha256 mismatch");
    assert_eq!(n["provisioning"]["version"], "1.0", "the node still runs the last good version");
    let e = events_of(&s, &id, "provision.failed").await;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["data"]["error"], "sha256 mismatch");
}

async fn start_provisioning_again(s: &TestServer, id: &str, token: &str) {
    assert_eq!(reprovision(s, id).await.0, 200);
    assert_eq!(heartbeat(s, token, json!({})).await.1["reprovision"], true);
    assert_eq!(node(s, id).await["provision_state"], "provisioning");
}

#[tokio::test]
async fn a_result_from_a_node_that_is_not_provisioning_is_refused_and_not_recorded() {
    let (s, id, token) = app_with_body(|_| {}).await;
    let (status, err) = report(&s, &token, json!({"success": true, "version": "1"})).await;
    assert_eq!(status, 409, "{err}");
    assert!(err["error"].as_str().unwrap().contains("not provisioning"), "{err}");
    // Requested but not yet delivered is not provisioning either.
    reprovision(&s, &id).await;
    assert_eq!(report(&s, &token, json!({"success": false, "error": "x"})).await.0, 409);
    assert_eq!(types(&events_of(&s, &id, "provision.").await), ["provision.requested"]);
}

#[tokio::test]
async fn a_second_request_while_one_is_open_is_refused() {
    let (s, id, token) = app_with_body(|_| {}).await;
    assert_eq!(reprovision(&s, &id).await.0, 200);
    let (status, err) = reprovision(&s, &id).await;
    assert_eq!(status, 409);
    assert!(err["error"].as_str().unwrap().contains("requested already"), "{err}");
    heartbeat(&s, &token, json!({})).await;
    let (status, err) = reprovision(&s, &id).await;
    assert_eq!(status, 409);
    assert!(err["error"].as_str().unwrap().contains("provisioning already"), "{err}");
    assert_eq!(events_of(&s, &id, "provision.requested").await.len(), 1);
}

#[tokio::test]
async fn pending_unknown_and_unauthorised_requests_are_refused() {
    let s = spawn_app().await;
    let (pending, _) = enroll(&s, "new-body").await;
    let (status, err) = reprovision(&s, &pending).await;
    assert_eq!(status, 409);
    assert!(err["error"].as_str().unwrap().contains("pending"), "{err}");
    assert_eq!(reprovision(&s, "node-doesnotexist").await.0, 404);
    let (id, token) = approved_body(&s, "body-1").await;
    assert_eq!(post(&s, &format!("/api/v1/nodes/{id}/reprovision"), OBSERVER, json!({})).await.0, 403);
    assert_eq!(post(&s, &format!("/api/v1/nodes/{id}/reprovision"), &token, json!({})).await.0, 403);
    assert_eq!(report(&s, ADMIN, json!({"success": true})).await.0, 403);
    assert!(events_of(&s, &pending, "provision.").await.is_empty());
}

#[tokio::test]
async fn a_node_silent_past_the_deadline_fails_with_timeout() {
    let deadline = |c: &mut hydra::cluster::config::Config| {
        c.provision_deadline = Duration::from_millis(300);
        c.provision_watchdog_interval = Duration::from_millis(50);
    };
    let (s, id, token) = app_with_body(deadline).await;
    start_provisioning(&s, &id, &token).await;
    let failed = eventually(GUARD, || async { node(&s, &id).await["provision_state"] == "failed" }).await;
    assert!(failed, "the deadline ended the run: {}", node(&s, &id).await);
    let e = events_of(&s, &id, "provision.failed").await;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["data"]["error"], "timeout");
    assert_eq!(e[0]["cause"], "watchdog:provision");
    // The node's late result is refused: the run is over.
    assert_eq!(report(&s, &token, json!({"success": true, "version": "late"})).await.0, 409);
    assert_eq!(node(&s, &id).await["provisioning"]["error"], "timeout");
}

#[tokio::test]
async fn the_node_list_filtered_by_venue_has_what_a_rollout_needs() {
    let (s, id, _) = app_with_body(|_| {}).await;
    let (other, _) = enroll(&s, "elsewhere").await;
    approve_at(&s, &other, &["hydrabody"], "south", "hall").await;
    reprovision(&s, &id).await;
    let (status, list) = get(&s, "/api/v1/nodes?district=north&venue=arena", ADMIN).await;
    assert_eq!(status, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let n = &list[0];
    assert_eq!(n["id"], id.as_str());
    assert_eq!(n["kind"], "body");
    assert_eq!(n["roles"], json!(["hydrabody"]));
    assert_eq!(n["status"], "approved");
    assert_eq!(n["environment"], "production");
    assert_eq!(n["provision_state"], "requested");
    let (_, south) = get(&s, "/api/v1/nodes?district=south", ADMIN).await;
    assert_eq!(south[0]["provision_state"], "idle");
    assert!(south[0].get("provisioning").is_none());
}

#[tokio::test]
async fn provisioning_survives_a_restart() {
    let (mut s, id, token) = app_with_body(|_| {}).await;
    start_provisioning(&s, &id, &token).await;
    s.restart().await;
    assert_eq!(node(&s, &id).await["provision_state"], "provisioning");
    assert_eq!(heartbeat(&s, &token, json!({})).await.1["reprovision"], false, "not delivered twice");
    assert_eq!(report(&s, &token, json!({"success": true, "version": "3"})).await.0, 200);
}

#[tokio::test]
async fn the_heartbeat_answer_carries_the_recipes_of_the_nodes_roles_once_approved() {
    let recipe = hydra::cluster::config::RoleRecipe {
        artifact_url: "http://artifacts.local/body-2.tar.gz".into(),
        version: "2.0".into(),
        sha256: "AB".repeat(32),
        install: Some("./install.sh".into()),
    };
    let s = spawn_app_with(|c| {
        c.role_recipes.insert("hydrabody".into(), recipe.clone());
        c.role_recipes.insert("render-node".into(), recipe.clone());
    })
    .await;
    let (_, pending_token) = enroll(&s, "pending-body").await;
    let (status, answer) = heartbeat(&s, &pending_token, json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["recipes"], json!([]), "a pending node gets no recipes");

    let (_, token) = approved_body(&s, "body-1").await;
    let (_, answer) = heartbeat(&s, &token, json!({})).await;
    assert_eq!(
        answer["recipes"],
        json!([{"role": "hydrabody", "artifact_url": "http://artifacts.local/body-2.tar.gz",
                "version": "2.0", "sha256": "ab".repeat(32), "install": "./install.sh"}]),
        "only the node's own roles, the checksum in lower case"
    );
    assert_eq!(answer["roles"], json!(["hydrabody"]));
    assert_eq!(answer["reprovision"], false, "every other field is still there");
}

#[tokio::test]
async fn a_flag_that_never_reached_the_node_is_carried_again_until_the_node_has_it() {
    let s = spawn_app().await;
    let (id, token) = approved_body(&s, "body-lost").await;
    heartbeat(&s, &token, json!({"provisioning": false})).await;
    let (status, _) = reprovision(&s, &id).await;
    assert_eq!(status, 200);
    let beat = |busy: Option<bool>| {
        let body = busy.map_or(json!({}), |b| json!({"provisioning": b}));
        let (s, token) = (&s, token.clone());
        async move {
            let (status, answer) = heartbeat(s, &token, body).await;
            assert_eq!(status, 200, "{answer}");
            answer["reprovision"].as_bool().unwrap()
        }
    };
    assert!(beat(Some(false)).await, "the first answer carries the flag");
    // That answer was lost: the node still says it has nothing in hand.
    assert!(beat(Some(false)).await, "carried again");
    assert!(!beat(None).await, "an agent that does not say is not asked again");
    assert!(!beat(Some(true)).await, "the node has it now");
    assert_eq!(
        types(&events_of(&s, &id, "provision.").await),
        ["provision.requested", "provision.started"],
        "carrying the flag again records nothing"
    );
    let (status, r) = report(&s, &token, json!({"success": true, "version": "3"})).await;
    assert_eq!(status, 200, "{r}");
    assert!(!beat(Some(false)).await, "finished: nothing to carry");
}
