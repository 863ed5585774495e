//! End to end, real processes: hydracluster, hydraexperiencelibrary, real `hydranode`
//! bodies and heads, a HydraRelease-like SSE stream and `hydrapipeline watch`. A build
//! upload is auto-promoted and rolled out to the bodies, then the heads; rollouts abort
//! past their failure threshold, pause, resume and cancel, and carry on through a
//! kill -9 of the library and a restart of hydracluster without asking any node twice.
//! Heads by role (enrolled through `/enroll`, approved with a head role) are heads in
//! the waves, like kiosks registered with the fleet token.

use crate::common::agent::{real_agent, real_agent_as, real_head, Agent};
use crate::common::artifacts::{artifact_server, tarball};
use crate::common::library::{library_bin, LibraryProcess, ReleaseFeed};
use crate::common::pipeline::{hydrapipeline, Watcher};
use crate::common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

const FLEET: &str = "rollout-fleet-token";

/// hydracluster on `addr` with the fleet token, a provisioning deadline and `extra`.
fn cluster_on(data: &Path, addr: SocketAddr, extra: &str) -> ServerProcess {
    ServerProcess::start_on(
        data,
        addr,
        &format!("fleet_enrollment_token: {FLEET}\nprovision_deadline: 8s\n{extra}"),
    )
}

/// Bodies and heads at north/arena, running real agents, placed in `environment`.
async fn fleet(
    cluster: &ServerProcess,
    dir: &Path,
    bodies: usize,
    heads: usize,
    environment: &str,
) -> (Vec<Agent>, Vec<Agent>) {
    let mut b = Vec::new();
    for i in 0..bodies {
        let name = format!("{environment}-body-{i}");
        b.push(real_agent(cluster, &dir.join(&name), &name).await);
    }
    let mut h = Vec::new();
    for i in 0..heads {
        let name = format!("{environment}-head-{i}");
        h.push(real_head(cluster, dir, &name, FLEET, None).await);
    }
    for agent in b.iter().chain(&h) {
        place(cluster, agent, environment).await;
    }
    (b, h)
}

/// Places the agent's node at north/arena in `environment`.
async fn place(cluster: &ServerProcess, agent: &Agent, environment: &str) {
    let body = json!({"district": "north", "venue": "arena", "environment": environment});
    let (status, answer) =
        post(cluster, &format!("/api/v1/nodes/{}/placement", agent.node), ADMIN, body).await;
    assert_eq!(status, 200, "{answer}");
}

/// hydracluster (on a fixed port, to restart where the library expects it) with
/// `extra` config and a staging fleet of real agents.
struct Staging {
    dir: TempDir,
    cluster: ServerProcess,
    bodies: Vec<Agent>,
    heads: Vec<Agent>,
}

async fn staging(bodies: usize, heads: usize, extra: &str) -> Staging {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_on(&dir.path().join("cluster"), free_addr(), extra);
    let (bodies, heads) = fleet(&cluster, dir.path(), bodies, heads, "staging").await;
    Staging { dir, cluster, bodies, heads }
}

impl Staging {
    /// The library following this cluster (and `release` when given).
    fn library(&self, release: Option<&str>) -> LibraryProcess {
        LibraryProcess::start(&self.dir.path().join("library"), &self.cluster.url, release, "")
    }

    /// The library with the experience `space` (no auto-promotion) and its build b1.
    async fn library_with_b1(&self) -> LibraryProcess {
        let lib = self.library(None);
        create_experience(&lib, "space", "space-game", false).await;
        register_build(&lib, "b1", "1.0", "ab").await;
        lib
    }
}

/// Experience `id` of `project` at north/arena.
async fn create_experience(lib: &LibraryProcess, id: &str, project: &str, auto_promote: bool) {
    let body = json!({"id": id, "project": project, "district": "north", "venues": ["arena"],
        "auto_promote": auto_promote});
    let (status, answer) = post(lib, "/api/v1/experiences", ADMIN, body).await;
    assert_eq!(status, 201, "{answer}");
}

/// Registers `build` of `space`; `sha` is the byte its checksum repeats.
async fn register_build(lib: &LibraryProcess, build: &str, version: &str, sha: &str) {
    let body = json!({"build": build, "version": version,
        "artifact_url": format!("https://release.example/{build}.tar.gz"), "sha256": sha.repeat(32)});
    let (status, answer) = post(lib, "/api/v1/experiences/space/builds", ADMIN, body).await;
    assert_eq!(status, 201, "{answer}");
}

async fn promote(lib: &LibraryProcess, body: Value) -> Value {
    let (status, promoted) = post(lib, "/api/v1/experiences/space/promote", ADMIN, body).await;
    assert_eq!(status, 201, "{promoted}");
    promoted
}

async fn rollout(lib: &LibraryProcess, id: &str) -> Value {
    let (status, r) = get(lib, &format!("/api/v1/rollouts/{id}"), ADMIN).await;
    assert_eq!(status, 200, "{r}");
    r
}

/// Waits until the rollout reaches one of the final states; returns it.
async fn until_final(lib: &LibraryProcess, id: &str, limit: Duration) -> Value {
    let finished = eventually(limit, || async {
        let (status, r) = get(lib, &format!("/api/v1/rollouts/{id}"), ADMIN).await;
        status == 200
            && ["completed", "completed_with_failures", "aborted", "cancelled"]
                .contains(&r["state"].as_str().unwrap())
    })
    .await;
    let r = rollout(lib, id).await;
    assert!(finished, "rollout {id} did not finish: {r:#}");
    r
}

/// How many times each node was asked to reprovision, from hydracluster's log.
async fn requests_per_node(cluster: &ServerProcess) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events(cluster, "types=provision.requested").await {
        *out.entry(e["data"]["node_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    out
}

fn node_ids(agents: &[Agent]) -> Vec<String> {
    agents.iter().map(|a| a.node.clone()).collect()
}

/// Every node of the staging fleet was asked to reprovision exactly once.
async fn each_asked_once(s: &Staging) {
    let asked = requests_per_node(&s.cluster).await;
    for n in node_ids(&s.bodies).iter().chain(&node_ids(&s.heads)) {
        assert_eq!(asked.get(n), Some(&1), "{n} was asked exactly once: {asked:?}");
    }
}

/// From hydracluster's own log: each head reprovisioned once, and started only after
/// every body had ended (completed or failed).
async fn heads_started_after_every_body(cluster: &ServerProcess, bodies: &[Agent], heads: &[Agent]) {
    let events = events(cluster, "types=provision.*").await;
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

/// The builds the library registered, as `experience/build`.
async fn registered(lib: &LibraryProcess) -> Vec<String> {
    let all = events(lib, "types=build.registered").await;
    all.iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["data"]["experience_id"].as_str().unwrap(),
                e["data"]["build"].as_str().unwrap()
            )
        })
        .collect()
}

/// Publishes a build of a project only the experience `sentinel` follows, and waits
/// until the library has registered it: the library reads HydraRelease's stream in
/// order, so every event published before it has been dealt with.
async fn release_sentinel(lib: &LibraryProcess, release: &ReleaseFeed) {
    let id = release.upload("sentinel-game", "sentinel", "0.0.1").to_string();
    let at_sentinel = eventually(GUARD, || async {
        get(lib, "/api/v1/health", ADMIN).await.1["release"]["cursor"] == id.as_str()
    });
    assert!(
        at_sentinel.await,
        "the library reached the sentinel: {}",
        get(lib, "/api/v1/health", ADMIN).await.1
    );
}

/// The experience `space` as the library shows it.
async fn space(lib: &LibraryProcess) -> Value {
    get(lib, "/api/v1/experiences/space", ADMIN).await.1
}

/// hydracluster config that gives `hydrabody` a recipe whose artifact nobody serves.
fn unserved_recipe() -> String {
    body_recipe(&format!("{}/gone.tar.gz", dead_url()), "2", &"0".repeat(64), "true")
}

/// `hydrapipeline watch --json` over both services, from the start of their logs.
fn watch(cluster: &str, library: &str) -> Watcher {
    Watcher::watch(
        &[("hydracluster", cluster), ("hydraexperiencelibrary", library)],
        &["--since", "0", "--types", "experience.*,rollout.*,provision.*"],
    )
}

/// Waits until the library's rollout driver has made three more rounds of decisions
/// (`driver.rounds` in its health; it goes round at least every 200 ms), before checking
/// that a paused or cancelled rollout asked for nothing new.
async fn let_the_driver_go_round(lib: &impl Service) {
    let rounds = || async { get(lib, "/api/v1/health", ADMIN).await.1["driver"]["rounds"].as_u64().unwrap() };
    let before = rounds().await;
    assert!(
        eventually(GUARD, || async { rounds().await >= before + 3 }).await,
        "the driver stopped going round"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_build_is_auto_promoted_and_rolled_out_to_bodies_then_heads() {
    let s = staging(3, 2, "").await;
    // A production body at the same venue: a staging rollout never touches it.
    let (production, _) = fleet(&s.cluster, s.dir.path(), 1, 0, "production").await;
    let release = ReleaseFeed::start().await;
    let lib = s.library(Some(&release.url));
    let watcher = watch(&s.cluster.url, &lib.url);
    create_experience(&lib, "space", "space-game", true).await;
    create_experience(&lib, "sentinel", "sentinel-game", false).await;

    let first = release.upload("space-game", "b1", "1.0.0");
    release.upload("other-game", "x1", "9.9");
    let r = until_final(&lib, "r1", Duration::from_secs(60)).await;
    assert_eq!(r["state"], "completed", "{r:#}");
    assert_eq!(r["build"], "b1");
    assert_eq!(r["environment"], "staging");

    heads_started_after_every_body(&s.cluster, &s.bodies, &s.heads).await;
    each_asked_once(&s).await;
    let asked = requests_per_node(&s.cluster).await;
    assert!(!asked.contains_key(&production[0].node), "production is kept apart: {asked:?}");

    // The same build.uploaded again (HydraRelease re-announcing it): nothing new.
    release.repeat(first);
    let (_, builds_before) = get(&lib, "/api/v1/experiences/space", ADMIN).await;
    release_sentinel(&lib, &release).await;
    let (_, rollouts) = get(&lib, "/api/v1/rollouts", ADMIN).await;
    assert_eq!(rollouts.as_array().map(Vec::len), Some(1), "no second rollout: {rollouts:#}");
    let (_, builds_after) = get(&lib, "/api/v1/experiences/space", ADMIN).await;
    assert_eq!(builds_before["builds"], builds_after["builds"]);
    let builds = registered(&lib).await;
    assert_eq!(builds, ["space/b1", "sentinel/sentinel"], "{builds:?}");

    // `hydrapipeline status` sees both services up, with their last event ids.
    let out = hydrapipeline()
        .args(["--service", &format!("hydracluster={}", s.cluster.url)])
        .args(["--service", &format!("hydraexperiencelibrary={}", lib.url)])
        .args(["--token", OBSERVER, "status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));
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
    for b in node_ids(&s.bodies) {
        let p = cluster_event("provision.completed", &b);
        assert!(wave1 < p && p < wave2, "body {b} completed inside wave 1");
    }
    for h in node_ids(&s.heads) {
        let p = cluster_event("provision.started", &h);
        assert!(wave2 < p && p < completed, "head {h} started inside wave 2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_carries_on_through_a_kill_9_of_the_library_and_a_cluster_restart() {
    let mut s = staging(3, 2, "").await;
    let mut lib = s.library_with_b1().await;
    let promoted = promote(&lib, json!({"to": "staging", "max_parallel": 1})).await;
    assert_eq!(promoted["rollout_id"], "r1");

    // Mid wave 1: the library dies the moment it has asked for its first body.
    let asked = eventually(GUARD, || async {
        rollout(&lib, "r1").await["nodes"].as_array().unwrap().iter().any(|n| n["state"] != "pending")
    })
    .await;
    assert!(asked);
    lib.kill9();
    lib.restart();

    // Then hydracluster restarts (kill -9) once a body has finished, on the same port,
    // after the library has seen it go.
    let one_done = eventually(Duration::from_secs(30), || async {
        rollout(&lib, "r1").await["counts"]["completed"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert!(one_done, "{:#}", rollout(&lib, "r1").await);
    s.cluster.kill9();
    let gone = eventually(GUARD, || async {
        get(&lib, "/api/v1/health", ADMIN).await.1["cluster"]["connected"] == false
    });
    assert!(gone.await, "the library saw hydracluster go: {}", get(&lib, "/api/v1/health", ADMIN).await.1);
    let addr = s.cluster.url.trim_start_matches("http://").parse().unwrap();
    s.cluster = cluster_on(&s.dir.path().join("cluster"), addr, "");

    let r = until_final(&lib, "r1", Duration::from_secs(90)).await;
    // Even when the kill -9 fell between a durable `provision.started` and the heartbeat
    // answer carrying the flag: the agent says it has nothing in hand, and the flag is
    // carried again.
    assert_eq!(r["state"], "completed", "{r:#}");
    each_asked_once(&s).await;
    let requested = events(&lib, "types=rollout.node_requested").await;
    assert_eq!(requested.len(), 5, "one request per node in the library's log: {requested:#?}");

    // An auditor replays the library's log offline and finds the live state.
    let (status, live) = get(&lib, "/api/v1/audit/digest", ADMIN).await;
    assert_eq!(status, 200, "{live}");
    lib.kill9();
    let out = Command::new(library_bin())
        .args(["audit", "--json", "--upto", &live["seq"].to_string(), "--data"])
        .arg(&lib.data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&audit["digest"], &audit["experiences"]), (&live["digest"], &json!(1)), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_by_role_are_reprovisioned_after_every_body() {
    // Three bodies and one fleet kiosk, plus a flat screen and a Windows screen that
    // enrolled through /enroll like bodies and were approved with head roles.
    let mut s = staging(3, 1, "").await;
    for (name, role) in [("flat", "hydraheadflatscreen"), ("win", "hydraheadwindows")] {
        let agent = real_agent_as(&s.cluster, &s.dir.path().join(name), name, role).await;
        place(&s.cluster, &agent, "staging").await;
        s.heads.push(agent);
    }
    let lib = s.library_with_b1().await;
    promote(&lib, json!({"to": "staging"})).await;
    let r = until_final(&lib, "r1", Duration::from_secs(90)).await;
    assert_eq!(r["state"], "completed", "{r:#}");

    heads_started_after_every_body(&s.cluster, &s.bodies, &s.heads).await;

    // The flat screen's roles change to a body's: the next rollout has it in wave 1.
    let flat = s.heads[1].node.clone();
    let (status, answer) =
        post(&s.cluster, &format!("/api/v1/nodes/{flat}/roles"), ADMIN, json!({"roles": ["render-node"]}))
            .await;
    assert_eq!(status, 200, "{answer}");
    register_build(&lib, "b2", "2.0", "cd").await;
    promote(&lib, json!({"to": "staging"})).await;
    let r2 = rollout(&lib, "r2").await;
    let wave_of = |node: &str| {
        r2["nodes"].as_array().unwrap().iter().find(|n| n["node_id"] == node).map(|n| n["wave"].clone())
    };
    assert_eq!(wave_of(&flat), Some(json!(1)), "now a body: {r2:#}");
    assert_eq!(wave_of(&s.heads[2].node), Some(json!(2)), "the other role head is still a head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_failure_threshold_a_rollout_aborts_and_never_reaches_the_heads() {
    // Every body's recipe points at an artifact nobody serves: provisioning fails.
    let s = staging(3, 1, &unserved_recipe()).await;
    let lib = s.library_with_b1().await;
    let out = Command::new(library_bin())
        .args(["promote", "space", "--to", "staging", "--max-parallel", "1", "--failure-threshold", "1"])
        .args(["--server", &lib.url, "--token", ADMIN])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("r1"));

    let r = until_final(&lib, "r1", Duration::from_secs(60)).await;
    assert_eq!(r["state"], "aborted", "{r:#}");
    assert!(r["reason"].as_str().unwrap().contains("2 of 4 nodes failed"), "{r:#}");
    let failures = r["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{r:#}");
    assert!(failures.iter().all(|f| !f["error"].as_str().unwrap().is_empty()));
    let asked = requests_per_node(&s.cluster).await;
    assert_eq!(asked.len(), 2, "the third body and the head were never asked: {asked:?}");
    assert!(!asked.contains_key(&s.heads[0].node));
    assert!(node_ids(&s.bodies).iter().filter(|b| asked.contains_key(*b)).count() == 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_rollout_is_rolled_back_to_the_earlier_build_bodies_first() {
    let s = staging(2, 1, "").await;
    let lib = s.library_with_b1().await;
    promote(&lib, json!({"to": "staging"})).await;
    until_final(&lib, "r1", Duration::from_secs(60)).await;
    // r1 had nothing before it: no rollback.
    let (status, answer) = post(&lib, "/api/v1/rollouts/r1/rollback", ADMIN, json!({})).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("no build in staging before rollout r1"), "{answer}");
    let (status, answer) = post(&lib, "/api/v1/rollouts/r1/retry", ADMIN, json!({})).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("no failed node"), "{answer}");

    register_build(&lib, "b2", "2.0", "cd").await;
    promote(&lib, json!({"to": "staging"})).await;
    until_final(&lib, "r2", Duration::from_secs(60)).await;
    let started = || events(&s.cluster, "types=provision.started");
    let cluster_before = started().await.last().unwrap()["seq"].as_u64().unwrap();

    // The operator's CLI: the new rollout's id alone on stdout.
    let out = Command::new(library_bin())
        .args(["rollout", "rollback", "r2", "--server", &lib.url, "--token", ADMIN])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "r3");
    let r3 = until_final(&lib, "r3", Duration::from_secs(60)).await;
    assert_eq!(r3["state"], "completed", "{r3:#}");
    assert_eq!(
        (r3["build"].as_str(), r3["origin"]["kind"].as_str()),
        (Some("b1"), Some("rollback")),
        "{r3:#}"
    );
    assert_eq!(r3["origin"]["rollout_id"], "r2");
    let (_, x) = get(&lib, "/api/v1/experiences/space", ADMIN).await;
    assert_eq!(x["environments"]["staging"]["build"], "b1", "the environment's build went back: {x}");
    let origin = events(&lib, "types=rollout.origin").await;
    assert_eq!(origin.len(), 1);
    assert_eq!(origin[0]["data"]["of_rollout"], "r2", "its events name the rollout it rolls back");

    // Every node r2 reached was reprovisioned again, once, heads after bodies.
    let again: Vec<Value> =
        started().await.into_iter().filter(|e| e["seq"].as_u64().unwrap() > cluster_before).collect();
    let mut nodes: Vec<&str> = again.iter().map(|e| e["data"]["node_id"].as_str().unwrap()).collect();
    nodes.sort();
    let mut expected: Vec<String> = node_ids(&s.bodies).into_iter().chain(node_ids(&s.heads)).collect();
    expected.sort();
    assert_eq!(nodes, expected);
    assert_eq!(again.last().unwrap()["data"]["node_id"], s.heads[0].node.as_str(), "the head comes last");

    // Both services' offline audits give their live digests.
    let live_cluster = get(&s.cluster, "/api/v1/audit/digest", ADMIN).await.1;
    let live_library = get(&lib, "/api/v1/audit/digest", ADMIN).await.1;
    let Staging { dir, cluster, .. } = s;
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
    let s = staging(3, 0, &unserved_recipe()).await;
    // One body has a role without a recipe: it completes; the other two fail.
    let fine = &s.bodies[0].node;
    let (status, answer) =
        post(&s.cluster, &format!("/api/v1/nodes/{fine}/roles"), ADMIN, json!({"roles": ["render-node"]}))
            .await;
    assert_eq!(status, 200, "{answer}");
    let lib = s.library_with_b1().await;
    promote(&lib, json!({"to": "staging", "failure_threshold": "5"})).await;
    let r1 = until_final(&lib, "r1", Duration::from_secs(60)).await;
    assert_eq!(r1["state"], "completed_with_failures", "{r1:#}");
    let before = requests_per_node(&s.cluster).await;

    let (status, answer) = post(&lib, "/api/v1/rollouts/r1/retry", ADMIN, json!({"max_parallel": 1})).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["rollout_id"], "r2");
    let r2 = until_final(&lib, "r2", Duration::from_secs(60)).await;
    assert_eq!(r2["origin"]["kind"], "retry");
    let retried: Vec<&str> =
        r2["nodes"].as_array().unwrap().iter().map(|n| n["node_id"].as_str().unwrap()).collect();
    let failed: Vec<&str> =
        r1["failures"].as_array().unwrap().iter().map(|f| f["node_id"].as_str().unwrap()).collect();
    assert_eq!(retried.len(), 2, "{r2:#}");
    for n in &retried {
        assert!(failed.contains(n), "{n} had not failed");
    }
    let after = requests_per_node(&s.cluster).await;
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
    assert!(out.status.success(), "{verb}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn count(r: &Value, state: &str) -> u64 {
    r["counts"][state].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_rollout_asks_for_no_new_node_until_resumed_and_a_cancelled_one_stops() {
    // Each body's install waits for a gate file the test opens, and takes it: a body
    // stays in flight until the test lets it finish.
    let src = tempfile::tempdir().unwrap();
    let (bytes, sha) = tarball(src.path(), "v1");
    let artifact = format!("{}/a.tar.gz", artifact_server(bytes).await);
    let gate = src.path().join("gate");
    let hook = format!("while [ ! -e {0} ]; do sleep 0.05; done; rm {0}", gate.display());
    let s = staging(3, 0, &body_recipe(&artifact, "1.0", &sha, &hook)).await;
    let open_gate = || std::fs::write(&gate, b"").unwrap();
    let lib = s.library_with_b1().await;
    promote(&lib, json!({"to": "staging", "max_parallel": 1})).await;

    // Pause while the first body is in flight; it still finishes.
    let asked = eventually(GUARD, || async { count(&rollout(&lib, "r1").await, "pending") < 3 }).await;
    assert!(asked);
    let paused = control(&lib, "pause");
    assert_eq!(paused["state"], "paused");
    open_gate();
    let finished = eventually(GUARD, || async {
        let r = rollout(&lib, "r1").await;
        count(&r, "requested") + count(&r, "provisioning") == 0
    })
    .await;
    assert!(finished, "the in-flight body finishes while paused");
    // A few rounds of the driver and heartbeats later, nothing new.
    let_the_driver_go_round(&lib).await;
    let r = rollout(&lib, "r1").await;
    assert_eq!((r["state"].as_str().unwrap(), count(&r, "pending")), ("paused", 2), "{r:#}");

    let resumed = control(&lib, "resume");
    assert_eq!(resumed["state"], "running");
    let second = eventually(GUARD, || async { count(&rollout(&lib, "r1").await, "pending") < 2 }).await;
    assert!(second, "resuming asks for the next body");
    let cancelled = control(&lib, "cancel");
    assert_eq!(cancelled["state"], "cancelled");
    open_gate();
    let_the_driver_go_round(&lib).await;
    let r = rollout(&lib, "r1").await;
    assert_eq!(
        (r["state"].as_str().unwrap(), count(&r, "pending")),
        ("cancelled", 1),
        "the last body stays untouched"
    );
    let asked = requests_per_node(&s.cluster).await;
    assert_eq!(asked.len(), 2, "{asked:?}");
    // A cancelled rollout cannot be resumed; the CLI says why.
    let out = Command::new(library_bin())
        .args(["rollout", "resume", "r1", "--server", &lib.url, "--token", ADMIN])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cancelled"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_stream_is_resumed_after_a_kill_9_and_nothing_is_registered_twice() {
    let dir = tempfile::tempdir().unwrap();
    let release = ReleaseFeed::start().await;
    // No hydracluster is listening: this test is about builds, not rollouts.
    let mut lib = LibraryProcess::start(&dir.path().join("library"), &dead_url(), Some(&release.url), "");
    create_experience(&lib, "space", "space-game", false).await;
    create_experience(&lib, "sentinel", "sentinel-game", false).await;
    let development = |v: &Value| v["environments"]["development"]["build"].as_str().map(str::to_owned);

    release.upload("space-game", "b1", "1.0.0");
    let first = eventually(Duration::from_secs(10), || async {
        development(&space(&lib).await).as_deref() == Some("b1")
    })
    .await;
    assert!(first, "b1 became the development build");

    // While the library is down, HydraRelease announces b2 and repeats b1.
    lib.kill9();
    release.upload("space-game", "b2", "2.0.0");
    release.repeat(1);
    lib.restart();
    let second = eventually(Duration::from_secs(10), || async {
        space(&lib).await["builds"].as_array().is_some_and(|b| b.len() == 2)
    })
    .await;
    assert!(second, "b2 arrived after the restart: {:#}", space(&lib).await);
    // The repeat of b1 (id 3) came after b2: b1 is known, so b2 stays the development build.
    release_sentinel(&lib, &release).await;
    let x = space(&lib).await;
    assert_eq!(development(&x).as_deref(), Some("b2"), "{x:#}");
    assert_eq!(
        registered(&lib).await,
        ["space/b1", "space/b2", "sentinel/sentinel"],
        "each build registered once"
    );
    let resumes = release.resumes.lock().unwrap().clone();
    assert_eq!(resumes.first(), Some(&None), "the first connection starts at the beginning");
    assert_eq!(resumes.last(), Some(&Some("1".to_string())), "the restart resumed after b1: {resumes:?}");
}
