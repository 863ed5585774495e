//! A real `hydranode` agent for end-to-end tests: a body enrolled through `/enroll` and
//! approved by the admin API, or a kiosk head enrolled with the fleet token; running
//! until dropped.

use super::{approve_at, eventually, get, ServerProcess, ADMIN};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
    /// Runs the agent enrolled in `state`.
    pub fn run(state: PathBuf) -> Agent {
        let node = identity(&state)["node_id"].as_str().unwrap().to_owned();
        Agent { child: run_agent(&state), state, node }
    }

    pub fn start(&mut self) {
        self.child = run_agent(&self.state);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The agent's node token, as enrollment wrote it.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state.join("token")).unwrap().trim().to_owned()
    }

    /// Writes the status file the agent reports from.
    pub fn write_status(&self, status: &Value) {
        std::fs::write(self.state.join("status.json"), status.to_string()).unwrap();
    }

    /// Points the agent's identity at another server URL (a restarted server on a new
    /// port); takes effect at its next start.
    pub fn move_to(&self, server: &ServerProcess) {
        let path = self.state.join("identity.json");
        let mut identity = self::identity(&self.state);
        identity["server_url"] = Value::String(server.url.clone());
        std::fs::write(path, identity.to_string()).unwrap();
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

/// `hydranode enroll --server URL --name NAME ARGS… --state STATE`, run to the end.
pub fn hydranode_enroll(server: &ServerProcess, name: &str, args: &[&str], state: &Path) -> Output {
    Command::new(hydranode())
        .args(["enroll", "--server", &server.url, "--name", name])
        .args(args)
        .arg("--state")
        .arg(state)
        .output()
        .unwrap()
}

/// The identity an enrollment wrote in `state`.
pub fn identity(state: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(state.join("identity.json")).unwrap()).unwrap()
}

/// Enrolls `name` with `hydranode enroll ARGS…` into `state`, which must succeed; its
/// identity.
pub fn enrolled(server: &ServerProcess, name: &str, args: &[&str], state: &Path) -> Value {
    let out = hydranode_enroll(server, name, args, state);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    identity(state)
}

/// Enrolls `name` with its state in `dir/agent`, approves it, runs it and waits until
/// it shows online.
pub async fn real_agent(server: &ServerProcess, dir: &Path, name: &str) -> Agent {
    real_agent_as(server, dir, name, "hydrabody").await
}

/// `real_agent`, approved with `role` (a head role makes it a head).
pub async fn real_agent_as(server: &ServerProcess, dir: &Path, name: &str, role: &str) -> Agent {
    let state = dir.join("agent");
    let node = enrolled(server, name, &[], &state)["node_id"].as_str().unwrap().to_owned();
    approve_at(server, &node, &[role], "north", "arena").await;
    let agent = Agent::run(state);
    let url = format!("/api/v1/nodes/{}", agent.node);
    let online = eventually(Duration::from_secs(30), || async {
        get(server, &url, ADMIN).await.1["node_status"] == "online"
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
    dir: &Path,
    name: &str,
    fleet_token: &str,
    status: Option<Value>,
) -> Agent {
    let state = dir.join(name);
    let args = ["--district", "north", "--venue", "arena", "--fleet-token", fleet_token];
    assert_eq!(enrolled(server, name, &args, &state)["kind"], "head");
    if let Some(status) = status {
        std::fs::write(state.join("status.json"), status.to_string()).unwrap();
    }
    let agent = Agent::run(state);
    let online = eventually(Duration::from_secs(30), || async {
        let (_, heads) = get(server, "/api/v1/heads", ADMIN).await;
        heads
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["id"] == agent.node.as_str() && h["node_status"] == "online"))
    })
    .await;
    assert!(online, "the head heartbeats");
    agent
}

/// A temp dir with a real `hydracluster serve` on `<dir>/data` (`extra_config` added to
/// its config) and a real agent `name` approved as a body and online.
pub async fn server_with_agent(extra_config: &str, name: &str) -> (tempfile::TempDir, ServerProcess, Agent) {
    let (dir, server) = super::server_in_temp_dir(extra_config);
    let agent = real_agent(&server, dir.path(), name).await;
    (dir, server, agent)
}
