//! Re-issuing a node's token (`POST /api/v1/nodes/{id}/token`): the old token is
//! refused at once; a real agent with a registered key claims its new token by itself
//! and goes on working; a node without a key gets its new token through the admin.

use crate::common::agent::server_with_agent;
use crate::common::*;
use serde_json::{json, Value};

async fn heartbeat_status(s: &impl Service, token: &str) -> u16 {
    heartbeat(s, token, json!({})).await.0
}

/// Runs `echo <word>` on the node and waits for its stdout.
async fn echoes(s: &ServerProcess, node: &str, word: &str) -> bool {
    let (status, queued) =
        post(s, &format!("/api/v1/nodes/{node}/exec"), ADMIN, json!({"command": format!("echo {word}")}))
            .await;
    assert_eq!(status, 202, "{queued}");
    let path = format!("/api/v1/nodes/{node}/exec/{}/result", queued["id"].as_str().unwrap());
    eventually(GUARD, || async { get(s, &path, ADMIN).await.1["stdout"] == format!("{word}\n") }).await
}

#[tokio::test]
async fn a_real_agent_takes_its_reissued_token_and_the_old_one_is_dead() {
    let (_dir, s, agent) = server_with_agent("heartbeat_interval: 1s\n", "b1").await;
    let node = agent.node.clone();
    let registered =
        eventually(GUARD, || async { !events(&s, "types=node.rekey_key_registered").await.is_empty() });
    assert!(registered.await, "the agent registers its key when it starts");
    let old = agent.token();

    let (status, answer) = post(&s, &format!("/api/v1/nodes/{node}/token"), ADMIN, json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivery"], "agent");
    assert!(answer.get("token").is_none(), "the agent claims it; nobody else sees it: {answer}");
    assert_eq!(heartbeat_status(&s, &old).await, 401, "the old token is refused at once");

    // A thief with the old token cannot claim the new one.
    let (status, _) = get(&s, &format!("/api/v1/body/rekey?node_id={node}"), "").await;
    assert_eq!(status, 200, "the pending id is public, and worth nothing without the key");
    let forged = json!({"node_id": node, "rekey_id": answer["rekey_id"], "signature": "00".repeat(64)});
    let (status, refused) = post(&s, "/api/v1/body/rekey", &old, forged).await;
    assert_eq!(status, 403, "{refused}");

    assert!(
        eventually(GUARD, || async { !events(&s, "types=node.rekeyed").await.is_empty() }).await,
        "claimed"
    );
    // The server answered the claim before the agent wrote the token down.
    let kept = eventually(GUARD, || async { agent.token() != old }).await;
    assert!(kept, "the agent keeps its new token");
    assert!(echoes(&s, &node, "rekeyed").await, "the agent works with its new token");
    assert_eq!(heartbeat_status(&s, &old).await, 401);
    let (status, _) = get(&s, &format!("/api/v1/body/rekey?node_id={node}"), "").await;
    assert_eq!(status, 404, "claimed once");

    // Who did it, and no token anywhere in the log.
    let log = events(&s, "").await;
    let rotated = log.iter().find(|e| e["type"] == "node.token_rotated").unwrap();
    assert_eq!(who(rotated), "admin:admin");
    let text = Value::Array(log).to_string();
    assert!(!text.contains(&old) && !text.contains(&agent.token()), "a token reached the log");
}

#[tokio::test]
async fn a_node_without_a_key_gets_its_new_token_through_the_admin() {
    let s = spawn_app().await;
    let (id, old) = approved_body(&s, "b1").await;
    let path = format!("/api/v1/nodes/{id}/token");
    assert_eq!(post(&s, &path, OBSERVER, json!({})).await.0, 403, "observers cannot");
    assert_eq!(post(&s, "/api/v1/nodes/node-0000000000000099/token", ADMIN, json!({})).await.0, 404);

    let (status, answer) = post(&s, &path, ADMIN, json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivery"], "admin");
    let new = answer["token"].as_str().unwrap();
    assert_eq!(heartbeat_status(&s, &old).await, 401, "the old token is refused at once");
    assert_eq!(heartbeat_status(&s, new).await, 200, "the new one works");
    assert_eq!(get(&s, &format!("/api/v1/body/rekey?node_id={id}"), "").await.0, 404, "nothing to claim");
    // A key cannot be registered by a stranger, and a bad key is refused with why.
    let (status, body) = put(&s, "/api/v1/body/rekey-key", new, json!({"public_key": "xyz"})).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "public_key must be 64 hex digits (an Ed25519 public key)")
    );
    assert_eq!(put(&s, "/api/v1/body/rekey-key", &old, json!({"public_key": "00".repeat(32)})).await.0, 401);
    refused_queries(&s, "/api/v1/body/rekey", &[("node_id=nope", "node id"), ("", "node_id")]).await;

    // The CLI prints the token to deliver, and the one before stops working.
    let out = admin_cli(&s, &["rekey", &id]).await;
    let said = all_output(&out);
    assert!(out.status.success(), "{said}");
    let printed = said.lines().last().unwrap().trim();
    assert!(printed.starts_with("hyn_") && said.contains("is revoked"), "{said}");
    assert_eq!(heartbeat_status(&s, new).await, 401);
    assert_eq!(heartbeat_status(&s, printed).await, 200);
}
