//! End to end: role recipes installed by a real `hydranode` on reprovision, with a real
//! `hydracluster` whose config carries the recipes and a local artifact server: the
//! tarball is downloaded, checked, unpacked, its install hook runs and `current` moves;
//! a wrong checksum fails and leaves `current` alone; an agent killed mid-download is
//! failed by the provisioning deadline.

use crate::common::agent::{server_with_agent, Agent};
use crate::common::artifacts::{artifact_server, tarball};
use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

/// The node's provisioning events.
async fn provisioning(server: &ServerProcess, node: &str) -> Vec<Value> {
    events(server, &format!("node={node}&types=provision.*")).await
}

async fn reprovision(server: &ServerProcess, node: &str) {
    let (status, body) = post(server, &format!("/api/v1/nodes/{node}/reprovision"), ADMIN, json!({})).await;
    assert_eq!(status, 200, "{body}");
}

/// Waits for the node's `n`th provisioning event to be an end; returns the events.
async fn until_ended(server: &ServerProcess, node: &str, n: usize) -> Vec<Value> {
    let ended = eventually(Duration::from_secs(15), || async {
        let e = provisioning(server, node).await;
        e.len() >= n
            && ["provision.completed", "provision.failed"].contains(&e[n - 1]["type"].as_str().unwrap())
    })
    .await;
    let e = provisioning(server, node).await;
    assert!(ended, "provisioning ended: {e:?}");
    e
}

/// A real server whose recipe for `hydrabody` is `url`, and a real agent `name`
/// approved as a body; `extra` is more config.
async fn recipe_and_agent(
    url: &str,
    sha: &str,
    hook: &str,
    extra: &str,
    name: &str,
) -> (TempDir, ServerProcess, Agent) {
    server_with_agent(&format!("{}{extra}", body_recipe(url, "1.0.0", sha, hook)), name).await
}

fn current(state: &Path) -> PathBuf {
    std::fs::read_link(state.join("roles/hydrabody/current")).expect("current is a link")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipe_is_installed_and_a_bad_checksum_leaves_current_alone() {
    let src = tempfile::tempdir().unwrap();
    let (bytes, sha) = tarball(src.path(), "v1");
    let artifact = format!("{}/a.tar.gz", artifact_server(bytes).await);
    let (dir, mut server, mut agent) =
        recipe_and_agent(&artifact, &sha, "bash install.sh", "", "prov-body").await;
    let node = agent.node.clone();

    reprovision(&server, &node).await;
    let e = until_ended(&server, &node, 3).await;
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
    let config = body_recipe(&artifact, "2.0.0", &wrong, "bash install.sh");
    let server = ServerProcess::start_with(&dir.path().join("data"), &config);
    agent.move_to(&server);
    agent.start();
    reprovision(&server, &node).await;
    let e = until_ended(&server, &node, 6).await;
    assert_eq!(e[5]["type"], "provision.failed", "{e:?}");
    let error = e[5]["data"]["error"].as_str().unwrap();
    assert!(error.contains("hydrabody") && error.contains("checksum"), "{error}");
    assert_eq!(current(&agent.state), PathBuf::from("1.0.0"), "the previous version is still current");
    assert!(!agent.state.join("roles/hydrabody/2.0.0").exists(), "nothing unpacked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_download_is_failed_by_the_deadline() {
    let stall = format!("{}/stall.tar.gz", artifact_server(Vec::new()).await);
    let extra = "provision_deadline: 2s\nprovision_watchdog_interval: 200ms\n";
    let (_dir, server, mut agent) =
        recipe_and_agent(&stall, &"ab".repeat(32), "bash install.sh", extra, "stalled-body").await;
    let node = agent.node.clone();

    reprovision(&server, &node).await;
    let part = agent.state.join("artifacts/hydrabody/1.0.0.part");
    assert!(eventually(Duration::from_secs(10), || async { part.exists() }).await, "the download started");
    agent.kill9();
    let e = until_ended(&server, &node, 3).await;
    assert_eq!(types(&e), ["provision.requested", "provision.started", "provision.failed"], "{e:?}");
    assert_eq!(e[2]["data"]["error"], "timeout");
    assert!(
        std::fs::symlink_metadata(agent.state.join("roles/hydrabody/current")).is_err(),
        "nothing installed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_install_hook_fails_the_run_and_switches_nothing() {
    let src = tempfile::tempdir().unwrap();
    let (bytes, sha) = tarball(src.path(), "v1");
    let artifact = format!("{}/a.tar.gz", artifact_server(bytes).await);
    let hook = "echo disk full >&2; exit 3";
    let (_dir, server, agent) = recipe_and_agent(&artifact, &sha, hook, "", "hook-body").await;
    reprovision(&server, &agent.node).await;
    let e = until_ended(&server, &agent.node, 3).await;
    assert_eq!(e[2]["type"], "provision.failed", "{e:?}");
    let error = e[2]["data"]["error"].as_str().unwrap();
    assert!(error.contains("hydrabody: install hook exited 3") && error.contains("disk full"), "{error}");
    assert!(std::fs::symlink_metadata(agent.state.join("roles/hydrabody/current")).is_err(), "no current");
    assert!(!agent.state.join("roles/hydrabody/1.0.0").exists(), "the failed version is removed");
}
