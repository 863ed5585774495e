//! End to end, real processes: hydracluster, hydraexperiencelibrary, real `hydranode`
//! bodies and heads, a HydraRelease-like SSE stream and `hydrapipeline watch`. A build
//! upload is auto-promoted and rolled out to the bodies, then the heads; rollouts abort
//! past their failure threshold, pause, resume and cancel, and carry on through a
//! kill -9 of the library and a restart of hydracluster without asking any node twice.
//! Heads by role (enrolled through `/enroll`, approved with a head role) are heads in
//! the waves, like kiosks registered with the fleet token.

use crate::common::agent::{real_agent, real_agent_as, real_head, Agent};
use crate::common::library::{free_addr, library_bin, LibraryProcess, ReleaseFeed};
use crate::common::pipeline::{hydrapipeline, Watcher};
use crate::common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const FLEET: &str = "rollout-fleet-token";

fn cluster_config(extra: &str) -> String {
    format!("fleet_enrollment_token: {FLEET}\nprovision_deadline: 8s\n{extra}")
}

/// Bodies and heads at north/arena, running real agents, placed in `environment`.
async fn fleet(
    cluster: &ServerProcess,
    http: &reqwest::Client,
    dir: &Path,
    bodies: usize,
    heads: usize,
    environment: &str,
) -> (Vec<Agent>, Vec<Agent>) {
    let mut b = Vec::new();
    for i in 0..bodies {
        let name = format!("{environment}-body-{i}");
        b.push(real_agent(cluster, http, &dir.join(&name), &name).await);
    }
    let mut h = Vec::new();
    for i in 0..heads {
        let name = format!("{environment}-head-{i}");
        h.push(real_head(cluster, http, dir, &name, FLEET, None).await);
    }
    for agent in b.iter().chain(&h) {
        let url = format!("{}/api/v1/nodes/{}/placement", cluster.url, agent.node);
        let body = json!({"district": "north", "venue": "arena", "environment": environment});
        let (status, answer) = call(http, reqwest::Method::POST, &url, Some(ADMIN), Some(body)).await;
        assert_eq!(status, 200, "{answer}");
    }
    (b, h)
}

async fn create_experience(lib: &LibraryProcess, http: &reqwest::Client, auto_promote: bool) {
    let body = json!({"id": "space", "project": "space-game", "district": "north", "venues": ["arena"],
        "auto_promote": auto_promote});
    let (status, answer) = lib.post(http, "/api/v1/experiences", body).await;
    assert_eq!(status, 201, "{answer}");
}

async fn register_build(lib: &LibraryProcess, http: &reqwest::Client, build: &str) {
    let body = json!({"build": build, "version": "1.0", "artifact_url": "https://release.example/b.tar.gz",
        "sha256": "ab".repeat(32)});
    let (status, answer) = lib.post(http, "/api/v1/experiences/space/builds", body).await;
    assert_eq!(status, 201, "{answer}");
}

/// Every event of a service's log (`types` filters), oldest first.
async fn log(http: &reqwest::Client, url: &str, types: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut since = 0;
    loop {
        let page_url = format!("{url}/api/v1/events/log?since={since}&limit=1000&types={types}");
        let (status, page) = call(http, reqwest::Method::GET, &page_url, Some(ADMIN), None).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["events"].as_array().unwrap().iter().cloned());
        let next = page["next_since"].as_u64().unwrap();
        if next >= page["head"].as_u64().unwrap() || next == since {
            return out;
        }
        since = next;
    }
}

async fn rollout(lib: &LibraryProcess, http: &reqwest::Client, id: &str) -> Value {
    let (status, r) = lib.get(http, &format!("/api/v1/rollouts/{id}")).await;
    assert_eq!(status, 200, "{r}");
    r
}

/// Waits until the rollout reaches one of the final states; returns it.
async fn until_final(lib: &LibraryProcess, http: &reqwest::Client, id: &str, limit: Duration) -> Value {
    let finished = eventually(limit, || async {
        let (status, r) = lib.get(http, &format!("/api/v1/rollouts/{id}")).await;
        status == 200
            && ["completed", "completed_with_failures", "aborted", "cancelled"]
                .contains(&r["state"].as_str().unwrap())
    })
    .await;
    let r = rollout(lib, http, id).await;
    assert!(finished, "rollout {id} did not finish: {r:#}");
    r
}

/// How many times each node was asked to reprovision, from hydracluster's log.
async fn requests_per_node(http: &reqwest::Client, cluster: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in log(http, cluster, "provision.requested").await {
        *out.entry(e["data"]["node_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    out
}

fn node_ids(agents: &[Agent]) -> Vec<String> {
    agents.iter().map(|a| a.node.clone()).collect()
}

/// From hydracluster's own log: each head reprovisioned once, and started only after
/// every body had ended (completed or failed).
async fn heads_started_after_every_body(
    http: &reqwest::Client,
    cluster: &str,
    bodies: &[Agent],
    heads: &[Agent],
) {
    let events = log(http, cluster, "provision.*").await;
    let seq_of = |node: &str, types: &[&str]| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["data"]["node_id"] == node && types.contains(&e["type"].as_str().unwrap()))
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    let last_body_end = node_ids(bodies)
        .iter()
        .map(|b| {
            *seq_of(b, &["provision.completed", "provision.failed"]).first().expect("every body finished")
        })
        .max()
        .unwrap();
    for h in node_ids(heads) {
        let started = seq_of(&h, &["provision.started"]);
        assert_eq!(started.len(), 1, "head {h} provisioned once: {events:#?}");
        assert!(
            started[0] > last_body_end,
            "head {h} started at {} before the bodies ended at {last_body_end}",
            started[0]
        );
    }
}

/// `hydrapipeline watch --json` over both services, from the start of their logs.
fn watch(cluster: &str, library: &str) -> Watcher {
    let cluster = format!("hydracluster={cluster}");
    let library = format!("hydraexperiencelibrary={library}");
    Watcher::start(&[
        "--service",
        &cluster,
        "--service",
        &library,
        "--token",
        OBSERVER,
        "watch",
        "--json",
        "--since",
        "0",
        "--types",
        "experience.*,rollout.*,provision.*",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_build_is_auto_promoted_and_rolled_out_to_bodies_then_heads() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let cluster = ServerProcess::start_on(&dir.path().join("cluster"), free_addr(), &cluster_config(""));
    let (bodies, heads) = fleet(&cluster, &http, dir.path(), 3, 2, "staging").await;
    // A production body at the same venue: a staging rollout never touches it.
    let (production, _) = fleet(&cluster, &http, dir.path(), 1, 0, "production").await;
    let release = ReleaseFeed::start().await;
    let lib = LibraryProcess::start(&dir.path().join("library"), &cluster.url, Some(&release.url), "");
    let watcher = watch(&cluster.url, &lib.url);
    create_experience(&lib, &http, true).await;

    let first = release.upload("space-game", "b1", "1.0.0");
    release.upload("other-game", "x1", "9.9");
    let r = until_final(&lib, &http, "r1", Duration::from_secs(60)).await;
    assert_eq!(r["state"], "completed", "{r:#}");
    assert_eq!(r["build"], "b1");
    assert_eq!(r["environment"], "staging");

    heads_started_after_every_body(&http, &cluster.url, &bodies, &heads).await;
    let asked = requests_per_node(&http, &cluster.url).await;
    for n in node_ids(&bodies).iter().chain(&node_ids(&heads)) {
        assert_eq!(asked.get(n), Some(&1), "{n} was asked once: {asked:?}");
    }
    assert!(!asked.contains_key(&production[0].node), "production is kept apart: {asked:?}");

    // The same build.uploaded again (HydraRelease re-announcing it): nothing new.
    release.repeat(first);
    let (_, builds_before) = lib.get(&http, "/api/v1/experiences/space").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, rollouts) = lib.get(&http, "/api/v1/rollouts").await;
    assert_eq!(rollouts.as_array().map(Vec::len), Some(1), "no second rollout: {rollouts:#}");
    let (_, builds_after) = lib.get(&http, "/api/v1/experiences/space").await;
    assert_eq!(builds_before["builds"], builds_after["builds"]);
    let registered = log(&http, &lib.url, "build.registered").await;
    assert_eq!(registered.len(), 1, "{registered:#?}");

    // `hydrapipeline status` sees both services up, with their last event ids.
    let out = hydrapipeline()
        .args(["--service", &format!("hydracluster={}", cluster.url)])
        .args(["--service", &format!("hydraexperiencelibrary={}", lib.url)])
        .args(["--token", OBSERVER, "status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = status["services"].as_array().unwrap();
    assert_eq!(services.len(), 2, "{status:#}");
    for s in services {
        assert!(s["ok"] == true && s["last_event_id"].as_u64().unwrap() > 0, "{status:#}");
    }

    // `hydrapipeline watch --json` told the whole story, in order.
    let story = eventually(Duration::from_secs(10), || async {
        watcher.json().iter().any(|l| l["type"] == "rollout.completed")
    })
    .await;
    assert!(story, "watch saw the rollout complete");
    let lines = watcher.json();
    let position = |pred: &dyn Fn(&Value) -> bool| -> usize {
        lines.iter().position(pred).unwrap_or_else(|| panic!("missing from watch: {lines:#?}"))
    };
    let is = |t: &'static str| move |l: &Value| l["type"] == t;
    let promoted = position(&is("experience.promoted"));
    let started = position(&is("rollout.started"));
    let wave1 = position(&|l: &Value| l["type"] == "rollout.wave_started" && l["data"]["wave"] == 1);
    let wave1_done = position(&|l: &Value| l["type"] == "rollout.wave_completed" && l["data"]["wave"] == 1);
    let wave2 = position(&|l: &Value| l["type"] == "rollout.wave_started" && l["data"]["wave"] == 2);
    let completed = position(&is("rollout.completed"));
    assert!(
        promoted < started
            && started < wave1
            && wave1 < wave1_done
            && wave1_done < wave2
            && wave2 < completed
    );
    let cluster_event = |kind: &'static str, node: &str| {
        let node = node.to_owned();
        position(&move |l: &Value| {
            l["service"] == "hydracluster" && l["type"] == kind && l["data"]["node_id"] == node.as_str()
        })
    };
    for b in node_ids(&bodies) {
        let p = cluster_event("provision.completed", &b);
        assert!(wave1 < p && p < wave2, "body {b} completed inside wave 1");
    }
    for h in node_ids(&heads) {
        let p = cluster_event("provision.started", &h);
        assert!(wave2 < p && p < completed, "head {h} started inside wave 2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_carries_on_through_a_kill_9_of_the_library_and_a_cluster_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let cluster_addr = free_addr();
    let cluster_data = dir.path().join("cluster");
    let mut cluster = ServerProcess::start_on(&cluster_data, cluster_addr, &cluster_config(""));
    let (bodies, heads) = fleet(&cluster, &http, dir.path(), 3, 2, "staging").await;
    let mut lib = LibraryProcess::start(&dir.path().join("library"), &cluster.url, None, "");
    create_experience(&lib, &http, false).await;
    register_build(&lib, &http, "b1").await;
    let (status, promoted) = lib
        .post(&http, "/api/v1/experiences/space/promote", json!({"to": "staging", "max_parallel": 1}))
        .await;
    assert!(status == 200 || status == 201, "{promoted}");
    assert_eq!(promoted["rollout_id"], "r1");

    // Mid wave 1: the library dies the moment it has asked for its first body.
    let asked = eventually(Duration::from_secs(20), || async {
        rollout(&lib, &http, "r1").await["nodes"].as_array().unwrap().iter().any(|n| n["state"] != "pending")
    })
    .await;
    assert!(asked);
    lib.kill9();
    lib.restart();

    // Then hydracluster restarts (kill -9) once a body has finished.
    let one_done = eventually(Duration::from_secs(30), || async {
        rollout(&lib, &http, "r1").await["counts"]["completed"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert!(one_done, "{:#}", rollout(&lib, &http, "r1").await);
    cluster.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cluster = ServerProcess::start_on(&cluster_data, cluster_addr, &cluster_config(""));
    // Pooled connections died with the old process.
    let http = reqwest::Client::new();

    let r = until_final(&lib, &http, "r1", Duration::from_secs(90)).await;
    // Even when the kill -9 fell between a durable `provision.started` and the heartbeat
    // answer carrying the flag: the agent says it has nothing in hand, and the flag is
    // carried again.
    assert_eq!(r["state"], "completed", "{r:#}");
    let asked = requests_per_node(&http, &cluster.url).await;
    for n in node_ids(&bodies).iter().chain(&node_ids(&heads)) {
        assert_eq!(asked.get(n), Some(&1), "{n} was asked exactly once: {asked:?}");
    }
    let requested = log(&http, &lib.url, "rollout.node_requested").await;
    assert_eq!(requested.len(), 5, "one request per node in the library's log: {requested:#?}");

    // An auditor replays the library's log offline and finds the live state.
    let (status, live) = lib.get(&http, "/api/v1/audit/digest").await;
    assert_eq!(status, 200, "{live}");
    lib.kill9();
    let out = Command::new(library_bin())
        .args(["audit", "--json", "--upto", &live["seq"].to_string(), "--data"])
        .arg(&lib.data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&audit["digest"], &audit["experiences"]), (&live["digest"], &json!(1)), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_by_role_are_reprovisioned_after_every_body() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let cluster = ServerProcess::start_on(&dir.path().join("cluster"), free_addr(), &cluster_config(""));
    // Three bodies and one fleet kiosk, plus a flat screen and a Windows screen that
    // enrolled through /enroll like bodies and were approved with head roles.
    let (bodies, mut heads) = fleet(&cluster, &http, dir.path(), 3, 1, "staging").await;
    for (name, role) in [("flat", "hydraheadflatscreen"), ("win", "hydraheadwindows")] {
        let agent = real_agent_as(&cluster, &http, &dir.path().join(name), name, role).await;
        let url = format!("{}/api/v1/nodes/{}/placement", cluster.url, agent.node);
        let body = json!({"district": "north", "venue": "arena", "environment": "staging"});
        let (status, answer) = call(&http, reqwest::Method::POST, &url, Some(ADMIN), Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        heads.push(agent);
    }
    let lib = LibraryProcess::start(&dir.path().join("library"), &cluster.url, None, "");
    create_experience(&lib, &http, false).await;
    register_build(&lib, &http, "b1").await;
    let (status, answer) =
        lib.post(&http, "/api/v1/experiences/space/promote", json!({"to": "staging"})).await;
    assert_eq!(status, 201, "{answer}");
    let r = until_final(&lib, &http, "r1", Duration::from_secs(90)).await;
    assert_eq!(r["state"], "completed", "{r:#}");

    heads_started_after_every_body(&http, &cluster.url, &bodies, &heads).await;

    // The flat screen's roles change to a body's: the next rollout has it in wave 1.
    let flat = heads[1].node.clone();
    let url = format!("{}/api/v1/nodes/{flat}/roles", cluster.url);
    let (status, answer) =
        call(&http, reqwest::Method::POST, &url, Some(ADMIN), Some(json!({"roles": ["render-node"]}))).await;
    assert_eq!(status, 200, "{answer}");
    let body = json!({"build": "b2", "version": "2.0", "artifact_url": "https://release.example/b2.tar.gz",
        "sha256": "cd".repeat(32)});
    assert_eq!(lib.post(&http, "/api/v1/experiences/space/builds", body).await.0, 201);
    let (status, answer) =
        lib.post(&http, "/api/v1/experiences/space/promote", json!({"to": "staging"})).await;
    assert_eq!(status, 201, "{answer}");
    let r2 = rollout(&lib, &http, "r2").await;
    let wave_of = |node: &str| {
        r2["nodes"].as_array().unwrap().iter().find(|n| n["node_id"] == node).map(|n| n["wave"].clone())
    };
    assert_eq!(wave_of(&flat), Some(json!(1)), "now a body: {r2:#}");
    assert_eq!(wave_of(&heads[2].node), Some(json!(2)), "the other role head is still a head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_failure_threshold_a_rollout_aborts_and_never_reaches_the_heads() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    // Every body's recipe points at an artifact nobody serves: provisioning fails.
    let recipes = format!(
        "role_catalog: [hydrabody]\nrole_recipes:\n  hydrabody:\n    artifact_url: http://{}/gone.tar.gz\n    \
         version: \"2\"\n    sha256: \"{}\"\n    install: \"true\"\n",
        free_addr(),
        "0".repeat(64)
    );
    let cluster =
        ServerProcess::start_on(&dir.path().join("cluster"), free_addr(), &cluster_config(&recipes));
    let (bodies, heads) = fleet(&cluster, &http, dir.path(), 3, 1, "staging").await;
    let lib = LibraryProcess::start(&dir.path().join("library"), &cluster.url, None, "");
    create_experience(&lib, &http, false).await;
    register_build(&lib, &http, "b1").await;
    let out = Command::new(library_bin())
        .args(["promote", "space", "--to", "staging", "--max-parallel", "1", "--failure-threshold", "1"])
        .args(["--server", &lib.url, "--token", ADMIN])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("r1"));

    let r = until_final(&lib, &http, "r1", Duration::from_secs(60)).await;
    assert_eq!(r["state"], "aborted", "{r:#}");
    assert!(r["reason"].as_str().unwrap().contains("2 of 4 nodes failed"), "{r:#}");
    let failures = r["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{r:#}");
    assert!(failures.iter().all(|f| !f["error"].as_str().unwrap().is_empty()));
    let asked = requests_per_node(&http, &cluster.url).await;
    assert_eq!(asked.len(), 2, "the third body and the head were never asked: {asked:?}");
    assert!(!asked.contains_key(&heads[0].node));
    assert!(node_ids(&bodies).iter().filter(|b| asked.contains_key(*b)).count() == 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_rollout_is_rolled_back_to_the_earlier_build_bodies_first() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let cluster = ServerProcess::start_on(&dir.path().join("cluster"), free_addr(), &cluster_config(""));
    let (bodies, heads) = fleet(&cluster, &http, dir.path(), 2, 1, "staging").await;
    let lib = LibraryProcess::start(&dir.path().join("library"), &cluster.url, None, "");
    create_experience(&lib, &http, false).await;
    register_build(&lib, &http, "b1").await;
    let promote = json!({"to": "staging"});
    assert_eq!(lib.post(&http, "/api/v1/experiences/space/promote", promote.clone()).await.0, 201);
    until_final(&lib, &http, "r1", Duration::from_secs(60)).await;
    // r1 had nothing before it: no rollback.
    let (status, answer) = lib.post(&http, "/api/v1/rollouts/r1/rollback", json!({})).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("no build in staging before rollout r1"), "{answer}");
    let (status, answer) = lib.post(&http, "/api/v1/rollouts/r1/retry", json!({})).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("no failed node"), "{answer}");

    let body = json!({"build": "b2", "version": "2.0", "artifact_url": "https://release.example/b2.tar.gz",
        "sha256": "cd".repeat(32)});
    assert_eq!(lib.post(&http, "/api/v1/experiences/space/builds", body).await.0, 201);
    assert_eq!(lib.post(&http, "/api/v1/experiences/space/promote", promote).await.0, 201);
    until_final(&lib, &http, "r2", Duration::from_secs(60)).await;
    let cluster_before =
        log(&http, &cluster.url, "provision.started").await.last().unwrap()["seq"].as_u64().unwrap();

    // The operator's CLI: the new rollout's id alone on stdout.
    let out = Command::new(library_bin())
        .args(["rollout", "rollback", "r2", "--server", &lib.url, "--token", ADMIN])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "r3");
    let r3 = until_final(&lib, &http, "r3", Duration::from_secs(60)).await;
    assert_eq!(r3["state"], "completed", "{r3:#}");
    assert_eq!(
        (r3["build"].as_str(), r3["origin"]["kind"].as_str()),
        (Some("b1"), Some("rollback")),
        "{r3:#}"
    );
    assert_eq!(r3["origin"]["rollout_id"], "r2");
    let (_, x) = lib.get(&http, "/api/v1/experiences/space").await;
    assert_eq!(x["environments"]["staging"]["build"], "b1", "the environment's build went back: {x}");
    let origin = log(&http, &lib.url, "rollout.origin").await;
    assert_eq!(origin.len(), 1);
    assert_eq!(origin[0]["data"]["of_rollout"], "r2", "its events name the rollout it rolls back");

    // Every node r2 reached was reprovisioned again, once, heads after bodies.
    let again: Vec<Value> = log(&http, &cluster.url, "provision.started")
        .await
        .into_iter()
        .filter(|e| e["seq"].as_u64().unwrap() > cluster_before)
        .collect();
    let mut nodes: Vec<&str> = again.iter().map(|e| e["data"]["node_id"].as_str().unwrap()).collect();
    nodes.sort();
    let mut expected: Vec<String> = node_ids(&bodies).into_iter().chain(node_ids(&heads)).collect();
    expected.sort();
    assert_eq!(nodes, expected);
    assert_eq!(again.last().unwrap()["data"]["node_id"], heads[0].node.as_str(), "the head comes last");

    // Both services' offline audits give their live digests.
    let digest = |url: String| {
        let http = http.clone();
        async move {
            call(&http, reqwest::Method::GET, &format!("{url}/api/v1/audit/digest"), Some(ADMIN), None)
                .await
                .1
        }
    };
    let (live_cluster, live_library) = (digest(cluster.url.clone()).await, digest(lib.url.clone()).await);
    drop(lib);
    drop(cluster);
    for (bin, data, live) in [
        (hydracluster(), dir.path().join("cluster"), live_cluster),
        (library_bin(), dir.path().join("library"), live_library),
    ] {
        let out = Command::new(bin).args(["audit", "--json", "--data"]).arg(&data).output().unwrap();
        let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(audit["digest"], live["digest"], "{audit} vs {live}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_reaches_only_the_nodes_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let recipes = format!(
        "role_catalog: [hydrabody, render-node]\nrole_recipes:\n  hydrabody:\n    artifact_url: http://{}/gone.tar.gz\n    \
         version: \"2\"\n    sha256: \"{}\"\n    install: \"true\"\n",
        free_addr(),
        "0".repeat(64)
    );
    let cluster =
        ServerProcess::start_on(&dir.path().join("cluster"), free_addr(), &cluster_config(&recipes));
    let (bodies, _) = fleet(&cluster, &http, dir.path(), 3, 0, "staging").await;
    // One body has a role without a recipe: it completes; the other two fail.
    let fine = &bodies[0].node;
    let url = format!("{}/api/v1/nodes/{fine}/roles", cluster.url);
    let (status, answer) =
        call(&http, reqwest::Method::POST, &url, Some(ADMIN), Some(json!({"roles": ["render-node"]}))).await;
    assert_eq!(status, 200, "{answer}");
    let lib = LibraryProcess::start(&dir.path().join("library"), &cluster.url, None, "");
    create_experience(&lib, &http, false).await;
    register_build(&lib, &http, "b1").await;
    let body = json!({"to": "staging", "failure_threshold": "5"});
    assert_eq!(lib.post(&http, "/api/v1/experiences/space/promote", body).await.0, 201);
    let r1 = until_final(&lib, &http, "r1", Duration::from_secs(60)).await;
    assert_eq!(r1["state"], "completed_with_failures", "{r1:#}");
    let before = requests_per_node(&http, &cluster.url).await;

    let (status, answer) = lib.post(&http, "/api/v1/rollouts/r1/retry", json!({"max_parallel": 1})).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["rollout_id"], "r2");
    let r2 = until_final(&lib, &http, "r2", Duration::from_secs(60)).await;
    assert_eq!(r2["origin"]["kind"], "retry");
    let retried: Vec<&str> =
        r2["nodes"].as_array().unwrap().iter().map(|n| n["node_id"].as_str().unwrap()).collect();
    let failed: Vec<&str> =
        r1["failures"].as_array().unwrap().iter().map(|f| f["node_id"].as_str().unwrap()).collect();
    assert_eq!(retried.len(), 2, "{r2:#}");
    for n in &retried {
        assert!(failed.contains(n), "{n} had not failed");
    }
    let after = requests_per_node(&http, &cluster.url).await;
    assert_eq!(after[fine], before[fine], "the node that completed was not asked again");
    for n in failed {
        assert_eq!(after[n], before[n] + 1, "{n} asked once more");
    }
}

/// `hydraexperiencelibrary rollout <verb> r1` as an operator types it.
fn control(lib: &LibraryProcess, verb: &str) -> Value {
    let out = Command::new(library_bin())
        .args(["rollout", verb, "r1", "--json", "--server", &lib.url, "--token", ADMIN])
        .output()
        .unwrap();
    assert!(out.status.success(), "{verb}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn count(r: &Value, state: &str) -> u64 {
    r["counts"][state].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_rollout_asks_for_no_new_node_until_resumed_and_a_cancelled_one_stops() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let cluster = ServerProcess::start_on(&dir.path().join("cluster"), free_addr(), &cluster_config(""));
    let (_bodies, _) = fleet(&cluster, &http, dir.path(), 3, 0, "staging").await;
    let lib = LibraryProcess::start(&dir.path().join("library"), &cluster.url, None, "");
    create_experience(&lib, &http, false).await;
    register_build(&lib, &http, "b1").await;
    let (status, promoted) = lib
        .post(&http, "/api/v1/experiences/space/promote", json!({"to": "staging", "max_parallel": 1}))
        .await;
    assert!(status == 200 || status == 201, "{promoted}");

    // Pause as soon as the first body is asked for; it still finishes.
    let asked = eventually(Duration::from_secs(20), || async {
        count(&rollout(&lib, &http, "r1").await, "pending") < 3
    })
    .await;
    assert!(asked);
    let paused = control(&lib, "pause");
    assert_eq!(paused["state"], "paused");
    let finished = eventually(Duration::from_secs(20), || async {
        let r = rollout(&lib, &http, "r1").await;
        count(&r, "requested") + count(&r, "provisioning") == 0
    })
    .await;
    assert!(finished, "the in-flight body finishes while paused");
    // A few rounds of the driver (200 ms each) and heartbeats later, nothing new.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = rollout(&lib, &http, "r1").await;
    assert_eq!((r["state"].as_str().unwrap(), count(&r, "pending")), ("paused", 2), "{r:#}");

    let resumed = control(&lib, "resume");
    assert_eq!(resumed["state"], "running");
    let second = eventually(Duration::from_secs(20), || async {
        count(&rollout(&lib, &http, "r1").await, "pending") < 2
    })
    .await;
    assert!(second, "resuming asks for the next body");
    let cancelled = control(&lib, "cancel");
    assert_eq!(cancelled["state"], "cancelled");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = rollout(&lib, &http, "r1").await;
    assert_eq!(
        (r["state"].as_str().unwrap(), count(&r, "pending")),
        ("cancelled", 1),
        "the last body stays untouched"
    );
    let asked = requests_per_node(&http, &cluster.url).await;
    assert_eq!(asked.len(), 2, "{asked:?}");
    // A cancelled rollout cannot be resumed; the CLI says why.
    let out = Command::new(library_bin())
        .args(["rollout", "resume", "r1", "--server", &lib.url, "--token", ADMIN])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cancelled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_stream_is_resumed_after_a_kill_9_and_nothing_is_registered_twice() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let release = ReleaseFeed::start().await;
    // No hydracluster is listening: this test is about builds, not rollouts.
    let nowhere = format!("http://{}", free_addr());
    let mut lib = LibraryProcess::start(&dir.path().join("library"), &nowhere, Some(&release.url), "");
    create_experience(&lib, &http, false).await;
    let development = |v: &Value| v["environments"]["development"]["build"].as_str().map(str::to_owned);

    release.upload("space-game", "b1", "1.0.0");
    let first = eventually(Duration::from_secs(10), || async {
        development(&lib.get(&http, "/api/v1/experiences/space").await.1).as_deref() == Some("b1")
    })
    .await;
    assert!(first, "b1 became the development build");

    // While the library is down, HydraRelease announces b2 and repeats b1.
    lib.kill9();
    release.upload("space-game", "b2", "2.0.0");
    release.repeat(1);
    lib.restart();
    let second = eventually(Duration::from_secs(10), || async {
        lib.get(&http, "/api/v1/experiences/space").await.1["builds"].as_array().is_some_and(|b| b.len() == 2)
    })
    .await;
    let (_, x) = lib.get(&http, "/api/v1/experiences/space").await;
    assert!(second, "b2 arrived after the restart: {x:#}");
    // The repeat of b1 (id 3) came after b2: b1 is known, so b2 stays the development build.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, x) = lib.get(&http, "/api/v1/experiences/space").await;
    assert_eq!(development(&x).as_deref(), Some("b2"), "{x:#}");
    let registered = log(&http, &lib.url, "build.registered").await;
    let builds: Vec<&str> = registered.iter().map(|e| e["data"]["build"].as_str().unwrap()).collect();
    assert_eq!(builds, ["b1", "b2"], "each build registered once");
    let resumes = release.resumes.lock().unwrap().clone();
    assert_eq!(resumes.first(), Some(&None), "the first connection starts at the beginning");
    assert_eq!(resumes.last(), Some(&Some("1".to_string())), "the restart resumed after b1: {resumes:?}");
}
