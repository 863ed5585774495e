//! End to end: role recipes installed by a real `hydranode` on reprovision, with a real
//! `hydracluster` whose config carries the recipes and a local artifact server: the
//! tarball is downloaded, checked, unpacked, its install hook runs and `current` moves;
//! a wrong checksum fails and leaves `current` alone; an agent killed mid-download is
//! failed by the provisioning deadline.

use crate::common::agent::real_agent;
use crate::common::*;
use axum::body::{Body, Bytes};
use axum::routing::get;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Builds `<dir>/<name>.tar.gz` holding an install script that writes a marker.
fn tarball(dir: &Path, name: &str) -> (Vec<u8>, String) {
    let src = dir.join(format!("src-{name}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("payload.txt"), format!("payload {name}\n")).unwrap();
    std::fs::write(src.join("install.sh"), format!("echo {name} > installed-marker\n")).unwrap();
    let out = dir.join(format!("{name}.tar.gz"));
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&out).unwrap();
    let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    (bytes, sha)
}

/// Serves `/a.tar.gz` (the bytes given) and `/stall.tar.gz` (a first chunk, then
/// nothing, forever). Returns its base URL.
async fn artifact_server(bytes: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/a.tar.gz", get(move || async move { bytes.clone() })).route(
        "/stall.tar.gz",
        get(|| async {
            use futures_util::StreamExt;
            let first = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(&[0x1f, 0x8b]))
            });
            Body::from_stream(first.chain(futures_util::stream::pending()))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn config(url: &str, version: &str, sha: &str, extra: &str) -> String {
    config_with_hook(url, version, sha, "bash install.sh", extra)
}

fn config_with_hook(url: &str, version: &str, sha: &str, hook: &str, extra: &str) -> String {
    format!(
        "role_catalog: [hydrabody, render-node]\nrole_recipes:\n  hydrabody:\n    artifact_url: {url}\n    \
         version: \"{version}\"\n    sha256: \"{sha}\"\n    install: \"{hook}\"\n{extra}"
    )
}

async fn events(server: &ServerProcess, http: &reqwest::Client, node: &str) -> Vec<Value> {
    let url = format!("{}/api/v1/events/log?node={node}&types=provision.*&limit=1000", server.url);
    let (status, page) = call(http, reqwest::Method::GET, &url, Some(ADMIN), None).await;
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().unwrap().clone()
}

fn types(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

async fn reprovision(server: &ServerProcess, http: &reqwest::Client, node: &str) {
    let url = format!("{}/api/v1/nodes/{node}/reprovision", server.url);
    let (status, body) = call(http, reqwest::Method::POST, &url, Some(ADMIN), Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
}

/// Waits for the node's `n`th provisioning event to be an end; returns the events.
async fn until_ended(server: &ServerProcess, http: &reqwest::Client, node: &str, n: usize) -> Vec<Value> {
    let ended = eventually(Duration::from_secs(15), || async {
        let e = events(server, http, node).await;
        e.len() >= n
            && ["provision.completed", "provision.failed"].contains(&e[n - 1]["type"].as_str().unwrap())
    })
    .await;
    let e = events(server, http, node).await;
    assert!(ended, "provisioning ended: {e:?}");
    e
}

fn current(state: &Path) -> PathBuf {
    std::fs::read_link(state.join("roles/hydrabody/current")).expect("current is a link")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipe_is_installed_and_a_bad_checksum_leaves_current_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, sha) = tarball(dir.path(), "v1");
    let artifacts = artifact_server(bytes).await;
    let data = dir.path().join("data");
    let artifact = format!("{artifacts}/a.tar.gz");
    let mut server = ServerProcess::start_with(&data, &config(&artifact, "1.0.0", &sha, ""));
    let http = reqwest::Client::new();
    let mut agent = real_agent(&server, &http, dir.path(), "prov-body").await;
    let node = agent.node.clone();

    reprovision(&server, &http, &node).await;
    let e = until_ended(&server, &http, &node, 3).await;
    assert_eq!(types(&e), ["provision.requested", "provision.started", "provision.completed"], "{e:?}");
    assert_eq!(e[2]["data"]["version"], "hydrabody=1.0.0");
    let version_dir = agent.state.join("roles/hydrabody/1.0.0");
    assert_eq!(current(&agent.state), PathBuf::from("1.0.0"));
    assert_eq!(std::fs::read_to_string(version_dir.join("payload.txt")).unwrap(), "payload v1\n");
    assert_eq!(
        std::fs::read_to_string(version_dir.join("installed-marker")).unwrap(),
        "v1\n",
        "the install hook ran in the version directory"
    );
    assert!(!agent.state.join("artifacts/hydrabody/1.0.0.part").exists(), "the download is cleaned up");

    // A second version whose checksum is wrong: failed, and `current` stays on 1.0.0.
    agent.kill9();
    server.kill9();
    let wrong = "0".repeat(64);
    let server = ServerProcess::start_with(&data, &config(&artifact, "2.0.0", &wrong, ""));
    let mut identity: Value =
        serde_json::from_str(&std::fs::read_to_string(agent.state.join("identity.json")).unwrap()).unwrap();
    identity["server_url"] = json!(server.url);
    std::fs::write(agent.state.join("identity.json"), identity.to_string()).unwrap();
    agent.start();
    reprovision(&server, &http, &node).await;
    let e = until_ended(&server, &http, &node, 6).await;
    assert_eq!(e[5]["type"], "provision.failed", "{e:?}");
    let error = e[5]["data"]["error"].as_str().unwrap();
    assert!(error.contains("hydrabody") && error.contains("checksum"), "{error}");
    assert_eq!(current(&agent.state), PathBuf::from("1.0.0"), "the previous version is still current");
    assert!(!agent.state.join("roles/hydrabody/2.0.0").exists(), "nothing unpacked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_download_is_failed_by_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = artifact_server(Vec::new()).await;
    let data = dir.path().join("data");
    let extra = "provision_deadline: 2s\nprovision_watchdog_interval: 200ms\n";
    let server = ServerProcess::start_with(
        &data,
        &config(&format!("{artifacts}/stall.tar.gz"), "1.0.0", &"ab".repeat(32), extra),
    );
    let http = reqwest::Client::new();
    let mut agent = real_agent(&server, &http, dir.path(), "stalled-body").await;
    let node = agent.node.clone();

    reprovision(&server, &http, &node).await;
    let part = agent.state.join("artifacts/hydrabody/1.0.0.part");
    assert!(eventually(Duration::from_secs(10), || async { part.exists() }).await, "the download started");
    agent.kill9();
    let e = until_ended(&server, &http, &node, 3).await;
    assert_eq!(types(&e), ["provision.requested", "provision.started", "provision.failed"], "{e:?}");
    assert_eq!(e[2]["data"]["error"], "timeout");
    assert!(
        std::fs::symlink_metadata(agent.state.join("roles/hydrabody/current")).is_err(),
        "nothing installed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_install_hook_fails_the_run_and_switches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, sha) = tarball(dir.path(), "v1");
    let artifacts = artifact_server(bytes).await;
    let hook = "echo disk full >&2; exit 3";
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        &config_with_hook(&format!("{artifacts}/a.tar.gz"), "1.0.0", &sha, hook, ""),
    );
    let http = reqwest::Client::new();
    let agent = real_agent(&server, &http, dir.path(), "hook-body").await;
    reprovision(&server, &http, &agent.node).await;
    let e = until_ended(&server, &http, &agent.node, 3).await;
    assert_eq!(e[2]["type"], "provision.failed", "{e:?}");
    let error = e[2]["data"]["error"].as_str().unwrap();
    assert!(error.contains("hydrabody: install hook exited 3") && error.contains("disk full"), "{error}");
    assert!(std::fs::symlink_metadata(agent.state.join("roles/hydrabody/current")).is_err(), "no current");
    assert!(!agent.state.join("roles/hydrabody/1.0.0").exists(), "the failed version is removed");
}
