//! A real `hydranode` agent for end-to-end tests: a body enrolled through `/enroll` and
//! approved by the admin API, or a kiosk head enrolled with the fleet token; running
//! until dropped.

use super::{call, eventually, ServerProcess, ADMIN};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn hydranode() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hydranode"))
}

/// A running agent; killed (SIGKILL) when dropped.
pub struct Agent {
    pub child: Child,
    pub state: PathBuf,
    pub node: String,
}

impl Agent {
    pub fn start(&mut self) {
        self.child = run_agent(&self.state);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `hydranode run` with quick heartbeats and short polls.
pub fn run_agent(state: &Path) -> Child {
    Command::new(hydranode())
        .args(["run", "--heartbeat-interval", "300ms", "--exec-wait", "5", "--state"])
        .arg(state)
        .env("HYDRA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("hydranode starts")
}

pub async fn approve(server: &ServerProcess, http: &reqwest::Client, node: &str) {
    approve_as(server, http, node, "hydrabody").await;
}

/// Approves at north/arena with one role.
pub async fn approve_as(server: &ServerProcess, http: &reqwest::Client, node: &str, role: &str) {
    let (status, body) = call(
        http,
        reqwest::Method::POST,
        &format!("{}/api/v1/nodes/{node}/approve", server.url),
        Some(ADMIN),
        Some(json!({"roles": [role], "district": "north", "venue": "arena"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Enrolls `name` with its state in `dir/agent`, approves it, runs it and waits until
/// it shows online.
pub async fn real_agent(server: &ServerProcess, http: &reqwest::Client, dir: &Path, name: &str) -> Agent {
    real_agent_as(server, http, dir, name, "hydrabody").await
}

/// `real_agent`, approved with `role` (a head role makes it a head).
pub async fn real_agent_as(
    server: &ServerProcess,
    http: &reqwest::Client,
    dir: &Path,
    name: &str,
    role: &str,
) -> Agent {
    let state = dir.join("agent");
    let out = Command::new(hydranode())
        .args(["enroll", "--server", &server.url, "--name", name, "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let identity: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("identity.json")).unwrap()).unwrap();
    let node = identity["node_id"].as_str().unwrap().to_owned();
    approve_as(server, http, &node, role).await;
    let agent = Agent { child: run_agent(&state), state, node };
    let url = format!("{}/api/v1/nodes/{}", server.url, agent.node);
    let online = eventually(Duration::from_secs(30), || async {
        call(http, reqwest::Method::GET, &url, Some(ADMIN), None).await.1["node_status"] == "online"
    })
    .await;
    assert!(online, "the agent heartbeats");
    agent
}

/// Enrolls a kiosk head `name` at north/arena with the fleet token (`hydranode enroll
/// --fleet-token`), its state in `dir/<name>`, writes `status` as its status file when
/// given, runs it and waits until it shows online in `GET /api/v1/heads`.
pub async fn real_head(
    server: &ServerProcess,
    http: &reqwest::Client,
    dir: &Path,
    name: &str,
    fleet_token: &str,
    status: Option<serde_json::Value>,
) -> Agent {
    let state = dir.join(name);
    let out = Command::new(hydranode())
        .args(["enroll", "--server", &server.url, "--name", name, "--district", "north", "--venue", "arena"])
        .args(["--fleet-token", fleet_token, "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let identity: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("identity.json")).unwrap()).unwrap();
    assert_eq!(identity["kind"], "head");
    let node = identity["node_id"].as_str().unwrap().to_owned();
    if let Some(status) = status {
        std::fs::write(state.join("status.json"), status.to_string()).unwrap();
    }
    let agent = Agent { child: run_agent(&state), state, node };
    let url = format!("{}/api/v1/heads", server.url);
    let online = eventually(Duration::from_secs(30), || async {
        let (_, heads) = call(http, reqwest::Method::GET, &url, Some(ADMIN), None).await;
        heads
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["id"] == agent.node.as_str() && h["node_status"] == "online"))
    })
    .await;
    assert!(online, "the head heartbeats");
    agent
}
