//! `hydracluster import`: the example file through the CLI and a real server, again
//! (nothing changes), changed (a conflict, then `--update`), offline into a data dir a
//! server then serves; a bad file refused whole with every problem by line and nothing
//! written; and a 500-node fleet whose real agents keep working with the tokens they
//! have, without enrolling again.

use crate::common::agent::Agent;
use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/nodes.yaml");

/// The first body of the example file, its token in clear, and the second, given by
/// its SHA-256 (of this token).
const BODY_1: (&str, &str) =
    ("node-7f3a9c2e41b05d18", "hyn_29c97e6e96815621901e18e1dfc8cd201f2501145bab9056a104fb10fbb00801");
const BODY_2: (&str, &str) =
    ("node-0c4d2b9e8a7f6132", "hyn_408c4c8d9a24868e5eba11246159936ac474c58963cc76c1d25aa68ae9c14442");
const HEAD_1: &str = "node-a91b3c5d7e2f4608";

/// The log's head and the digest of the live views.
async fn digest(s: &impl Service) -> Value {
    get(s, "/api/v1/audit/digest", ADMIN).await.1
}

fn import_ok(out: &Output) -> String {
    assert!(out.status.success(), "import failed: {}", all_output(out));
    text(&out.stdout)
}

#[tokio::test]
async fn the_example_file_imports_once_and_a_second_import_changes_nothing() {
    let s = spawn_app().await;
    let out = admin_cli(&s, &["import", EXAMPLE]).await;
    let said = import_ok(&out);
    assert!(said.contains("nodes.yaml: 5 created, 0 updated, 0 unchanged (5 events written)"), "{said}");

    let imported = events(&s, "types=node.imported").await;
    assert_eq!(imported.len(), 5);
    assert!(imported.iter().all(|e| who(e) == "import:nodes.yaml"), "{imported:?}");
    assert!(!imported.iter().any(|e| e.to_string().contains("hyn_")), "no token in an event");
    let b1 = node(&s, BODY_1.0).await;
    assert_eq!(
        (b1["name"].as_str(), b1["ip"].as_str(), b1["status"].as_str()),
        (Some("render-north-01"), Some("10.20.0.11"), Some("approved"))
    );
    assert_eq!(b1["roles"], json!(["hydrabody", "render-node"]));
    assert_eq!((b1["owner"].as_str(), b1["node_status"].as_str()), (Some("ops-north"), Some("offline")));
    assert_eq!(node(&s, BODY_2.0).await["draining"], true);
    assert_eq!(node(&s, "node-5e1f0a3b7c9d2468").await["status"], "pending");
    let (_, head) = get(&s, &format!("/api/v1/heads/{HEAD_1}"), ADMIN).await;
    assert_eq!(head["assigned_body_id"], BODY_1.0, "{head}");
    assert_eq!(head["app_id"], "space-race");
    assert_eq!(head["allowed_experiences"], json!(["space-race", "deep-sea"]));
    // History says where the node came from.
    let (_, history) = get(&s, &format!("/api/v1/nodes/{HEAD_1}/history"), ADMIN).await;
    assert_eq!(history["events"][0]["type"], "node.imported", "{history}");

    // The agents' tokens work as they are: in clear, and the one given by its hash.
    for (id, token) in [BODY_1, BODY_2] {
        let (status, answer) = heartbeat(&s, token, json!({"agent_version": "1.0"})).await;
        assert_eq!(status, 200, "{id}: {answer}");
        assert_eq!(answer["status"], "approved");
    }

    let before = digest(&s).await;
    let said = import_ok(&admin_cli(&s, &["import", EXAMPLE]).await);
    assert!(said.contains("0 created, 0 updated, 5 unchanged (0 events written)"), "{said}");
    assert_eq!(digest(&s).await, before, "a second import writes nothing");
}

#[tokio::test]
async fn a_changed_file_is_a_conflict_until_update() {
    let s = spawn_app().await;
    import_ok(&admin_cli(&s, &["import", EXAMPLE]).await);
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("nodes-v2.yaml");
    let v2 = std::fs::read_to_string(EXAMPLE).unwrap().replace("owner: ops-north", "owner: ops-south");
    std::fs::write(&changed, v2).unwrap();
    let changed = changed.to_str().unwrap();

    let before = digest(&s).await;
    let out = admin_cli(&s, &["import", changed]).await;
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("nodes-v2.yaml:7: {} differs: owner \"ops-north\" → \"ops-south\"", BODY_1.0)),
        "{err}"
    );
    assert!(
        err.contains("nodes-v2.yaml refused: 1 node differs from the server's (pass update to replace them)"),
        "{err}"
    );
    assert_eq!(digest(&s).await, before, "a refused import writes nothing");

    let dry = import_ok(&admin_cli(&s, &["import", changed, "--update", "--dry-run"]).await);
    assert!(dry.contains(&format!("would update {} (line 7)", BODY_1.0)), "{dry}");
    assert_eq!(digest(&s).await, before, "a dry run writes nothing");

    let said = import_ok(&admin_cli(&s, &["import", changed, "--update"]).await);
    assert!(said.contains("0 created, 1 updated, 4 unchanged (1 events written)"), "{said}");
    assert_eq!(node(&s, BODY_1.0).await["owner"], "ops-south");
    let last = events(&s, "types=node.imported").await.pop().unwrap();
    assert_eq!((who(&last), last["data"]["node_id"].as_str()), ("import:nodes-v2.yaml", Some(BODY_1.0)));
    // The head pinned to it stays: the pairing still holds.
    let (_, head) = get(&s, &format!("/api/v1/heads/{HEAD_1}"), ADMIN).await;
    assert_eq!(head["assigned_body_id"], BODY_1.0);
}

/// A file with good nodes and one of every kind of mistake the issue names.
const BAD: &str = "\
nodes:
  - id: node-good1
    name: good-1
    ip: 10.0.0.1
    roles: [hydrabody]
    district: north
    venue: arena
    token: hyn_good1
  - id: node-good1
    name: good-again
    ip: 10.0.0.2
    roles: [hydrabody]
    district: north
    venue: arena
    token: hyn_good2
  - id: node-typed
    name: typed
    ip: 10.0.0.3
    roles: hydrabody
    draining: sometimes
    district: north
    venue: arena
    token: hyn_typed
  - id: node-miner
    name: miner
    ip: 10.0.0.4
    roles: [hydrabody, miner]
    district: north
    venue: arena
    token: hyn_miner
  - id: node-badip
    name: bad-ip
    ip: 10.0.0.256
    roles: [hydrabody]
    district: north
    venue: arena
    token: hyn_badip
";

#[tokio::test]
async fn a_bad_file_is_refused_whole_with_every_problem_by_line_and_writes_nothing() {
    let s = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.yaml");
    std::fs::write(&file, BAD).unwrap();
    let before = digest(&s).await;
    let out = admin_cli(&s, &["import", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "fleet.yaml:9: node-good1: also at line 2; each node comes once",
            "fleet.yaml:19: node-typed: roles: expected a list, like [a, b]",
            "fleet.yaml:20: node-typed: draining: expected true or false",
            "fleet.yaml:27: node-miner: unknown role \"miner\"; the RoleCatalog has: render-node, hydraguard-air, \
             hydraheadflatscreen, hydraheadwindows, hydrabody",
            "fleet.yaml:33: node-badip: invalid ip \"10.0.0.256\": expected an IPv4 or IPv6 address",
            "error: fleet.yaml refused: 5 problems; nothing was written",
        ],
        "{err}"
    );
    assert_eq!(digest(&s).await, before, "nothing was written");
    let (_, nodes) = get(&s, "/api/v1/nodes", ADMIN).await;
    assert_eq!(nodes, json!([]));
    // Not even the good node's token works.
    assert_eq!(heartbeat(&s, "hyn_good1", json!({})).await.0, 401);
    // The same refusal through the endpoint, as JSON.
    let resp = s
        .http
        .post(format!("{}/api/v1/nodes/import?name=fleet.yaml", s.url))
        .bearer_auth(ADMIN)
        .body(BAD)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let answer: Value = resp.json().await.unwrap();
    let problem_lines: Vec<u64> =
        answer["problems"].as_array().unwrap().iter().map(|p| p["line"].as_u64().unwrap()).collect();
    assert_eq!(problem_lines, [9, 19, 20, 27, 33], "{answer}");
    assert_eq!(digest(&s).await, before);
}

#[tokio::test]
async fn an_offline_import_lands_as_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, said) = offline(&["import", EXAMPLE], &data);
    assert!(ok && said.contains("5 created, 0 updated, 0 unchanged"), "{said}");
    let (ok, said) = offline(&["import", EXAMPLE], &data);
    assert!(ok && said.contains("0 created, 0 updated, 5 unchanged"), "{said}");

    let mut server = ServerProcess::start(&data);
    // The store's lock keeps an offline import off a served data dir.
    let (ok, said) = offline(&["import", EXAMPLE], &data);
    assert!(!ok && said.contains("a server is running on"), "{said}");
    let imported = events(&server, "types=node.imported").await;
    assert_eq!(imported.len(), 5);
    assert!(imported.iter().all(|e| who(e) == "import:nodes.yaml"));
    let (status, _) = heartbeat(&server, BODY_1.1, json!({})).await;
    assert_eq!(status, 200);
    server.terminate();
    let (ok, audited) = offline(&["audit"], &data);
    assert!(ok, "{audited}");
}

/// The token of the `i`th node of the generated fleet.
fn token(i: usize) -> String {
    format!("hyn_imported_{i:04}")
}

/// `n` nodes, every tenth a kiosk head pinned to the body before it; even nodes give
/// their token in clear, odd ones its SHA-256.
fn fleet(n: usize) -> String {
    let mut yaml = String::from("nodes:\n");
    for i in 0..n {
        let token = if i % 2 == 0 {
            format!("token: {}", token(i))
        } else {
            format!("token_sha256: {}", hex::encode(hydra_core::auth::hash_token(&token(i))))
        };
        let (kind, extra) = if i % 10 == 9 {
            ("head", format!("    roles: [hydraheadwindows]\n    assigned_body_id: node-imp{:04}\n", i - 1))
        } else {
            ("body", format!("    ip: 10.1.{}.{}\n    roles: [hydrabody]\n", i / 200, i % 200 + 1))
        };
        yaml.push_str(&format!(
            "  - id: node-imp{i:04}\n    kind: {kind}\n    name: m-{i}\n{extra}    district: north\n    venue: arena\n    {token}\n"
        ));
    }
    yaml
}

/// An agent's state dir as the old fleet left it: its identity and its token.
fn state_of(dir: &Path, i: usize, server: &str) -> PathBuf {
    let state = dir.join(format!("agent-{i}"));
    std::fs::create_dir_all(&state).unwrap();
    let kind = if i % 10 == 9 { "head" } else { "body" };
    let identity = json!({"node_id": format!("node-imp{i:04}"), "server_url": server, "name": format!("m-{i}"), "kind": kind});
    std::fs::write(state.join("identity.json"), identity.to_string()).unwrap();
    let token_file = state.join("token");
    std::fs::write(&token_file, format!("{}\n", token(i))).unwrap();
    std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_imported_nodes_keep_their_agents_without_enrolling_again() {
    let s = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.yaml");
    std::fs::write(&file, fleet(500)).unwrap();
    let file = file.to_str().unwrap();
    let said = import_ok(&admin_cli(&s, &["import", file]).await);
    assert!(said.contains("fleet.yaml: 500 created, 0 updated, 0 unchanged (500 events written)"), "{said}");
    assert_eq!(events(&s, "types=node.imported").await.len(), 500);
    let (_, heads) = get(&s, "/api/v1/heads", ADMIN).await;
    assert_eq!(heads.as_array().unwrap().len(), 50);

    // Real agents, as the old fleet left them: a token in clear, one given by its
    // hash, the last node, and a head.
    let picked = [0, 1, 9, 498];
    let agents: Vec<Agent> = picked.iter().map(|i| Agent::run(state_of(dir.path(), *i, &s.url))).collect();
    for agent in &agents {
        let path = format!("/api/v1/nodes/{}", agent.node);
        let online =
            eventually(GUARD, || async { get(&s, &path, ADMIN).await.1["node_status"] == "online" }).await;
        assert!(online, "{} heartbeats with its imported token", agent.node);
    }
    for agent in &agents {
        let command = format!("echo still-{}", agent.node);
        let (status, queued) = post(
            &s,
            &format!("/api/v1/nodes/{}/exec", agent.node),
            ADMIN,
            json!({"command": command, "timeout": "10s"}),
        )
        .await;
        assert_eq!(status, 202, "{queued}");
        let path = format!("/api/v1/nodes/{}/exec/{}/result", agent.node, queued["id"].as_str().unwrap());
        let done = eventually(GUARD, || async { get(&s, &path, ADMIN).await.0 == 200 }).await;
        assert!(done, "{} ran its command", agent.node);
        let result = get(&s, &path, ADMIN).await.1;
        assert_eq!(
            (result["status"].as_str(), result["stdout"].as_str()),
            (Some("completed"), Some(&*format!("still-{}\n", agent.node)))
        );
    }
    assert_eq!(
        events(&s, "types=node.enrolled,head.registered").await,
        Vec::<Value>::new(),
        "no one enrolled again"
    );

    // With the agents running, the same file still changes nothing.
    let before = events(&s, "types=node.imported").await.len();
    let said = import_ok(&admin_cli(&s, &["import", file]).await);
    assert!(said.contains("0 created, 0 updated, 500 unchanged"), "{said}");
    assert_eq!(events(&s, "types=node.imported").await.len(), before);
}

#[tokio::test]
async fn a_refusal_that_is_not_about_the_file_reads_as_any_error() {
    use axum::http::StatusCode;
    let app = axum::Router::new().route(
        "/api/v1/nodes/import",
        axum::routing::post(|| async {
            (
                StatusCode::CONFLICT,
                axum::Json(json!({"error": "another import is under way: try again when it ends"})),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let out = hydracluster_cli(&["import", EXAMPLE, "--server", &url, "--admin-token", ADMIN]).await;
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: 409 Conflict: another import is under way: try again when it ends"
    );
}
