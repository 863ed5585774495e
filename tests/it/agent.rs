//! End to end: the real `hydranode` binary against a real in-process server
//! (enrollment, heartbeats from the status file, commands run, cancelled and timed
//! out, removal ends the agent with code 3), and against a small fake of the exec
//! endpoints for what a real server does not do on demand (results through 503s,
//! a result kept across an agent restart).

use crate::common::*;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// A guard against a hang, not a timer under test.
const LIMIT: Duration = Duration::from_secs(15);

fn hydranode() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hydranode"));
    c.env_remove("HYDRANODE_STATE").env("HYDRA_LOG", "info").stdin(Stdio::null()).kill_on_drop(true);
    c
}

/// Runs to the end: (exit code, stdout, stderr).
async fn hydranode_output(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(LIMIT, hydranode().args(args).output())
        .await
        .expect("hydranode finished")
        .expect("hydranode ran");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// An agent running in the background, its stderr collected as it comes.
struct Agent {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// Ends at the end of stderr: awaited after the exit so that the log is complete.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Agent {
    fn start(args: &[&str]) -> Agent {
        let mut child = hydranode()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hydranode starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Agent { child, stderr, reader: Some(reader) }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the agent to end by itself; its exit code.
    async fn exit_code(&mut self) -> i32 {
        let code = match tokio::time::timeout(LIMIT, self.child.wait()).await {
            Ok(status) => status.unwrap().code().unwrap_or(-1),
            Err(_) => panic!("the agent did not exit; its log:\n{}", self.log()),
        };
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(LIMIT, reader).await;
        }
        code
    }

    fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("still running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }
}

/// Writes through a rename, so the agent never reads half a file.
fn write_status(path: &Path, status: Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, status.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn help_and_version() {
    let (code, out, _) = hydranode_output(&["--version"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    let (code, out, _) = hydranode_output(&["--help"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("enroll") && out.contains("run"), "{out}");
}

#[tokio::test]
async fn an_agent_enrolls_heartbeats_its_status_and_stops_when_removed() {
    let s = spawn_app().await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("node");
    let state_arg = state.to_str().unwrap();

    let (code, out, err) =
        hydranode_output(&["enroll", "--server", &s.url, "--name", "test-body", "--state", state_arg]).await;
    assert_eq!(code, 0, "enroll failed: {err}");
    let identity: Value =
        serde_json::from_slice(&std::fs::read(state.join("identity.json")).unwrap()).unwrap();
    let id = identity["node_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("node-"));
    assert_eq!(identity["server_url"], s.url);
    assert_eq!(identity["name"], "test-body");
    assert!(out.contains(&id) && out.contains("approve"), "{out}");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("token")), 0o600);
    let token = std::fs::read_to_string(state.join("token")).unwrap().trim().to_owned();
    assert!(token.starts_with("hyn_"));
    let (_, node) = get(&s, &format!("/api/v1/nodes/{id}"), ADMIN).await;
    assert_eq!(node["status"], "pending");

    approve(&s, &id).await;

    let status_file = state.join("status.json");
    write_status(&status_file, json!({"provider_status": "running", "stream_status": "streaming"}));
    let (code, _, err) = hydranode_output(&["run", "--once", "--state", state_arg]).await;
    assert_eq!(code, 0, "run --once failed: {err}");

    let mut agent =
        Agent::start(&["run", "--state", state_arg, "--heartbeat-interval", "200ms", "--exec-wait", "1"]);
    let node_path = format!("/api/v1/nodes/{id}");
    let shows = |want: Value| {
        let (s, node_path) = (&s, &node_path);
        async move {
            let (_, node) = get(s, node_path, ADMIN).await;
            want.as_object().unwrap().iter().all(|(k, v)| &node[k] == v)
        }
    };
    let first = json!({
        "node_status": "online",
        "agent_version": env!("CARGO_PKG_VERSION"),
        "os": "linux",
        "provider_status": "running",
        "stream_status": "streaming",
    });
    assert!(
        eventually(LIMIT, || shows(first.clone())).await,
        "never showed {first}; agent log:\n{}",
        agent.log()
    );

    write_status(
        &status_file,
        json!({"provider_status": "stopped", "provider_version": "2.1", "stream_status": "idle"}),
    );
    let second = json!({"provider_status": "stopped", "provider_version": "2.1", "stream_status": "idle"});
    assert!(
        eventually(LIMIT, || shows(second.clone())).await,
        "never showed {second}; agent log:\n{}",
        agent.log()
    );

    // A malformed status file is reported and ignored: the heartbeats go on.
    std::fs::write(&status_file, "{oops").unwrap();
    assert!(
        eventually(LIMIT, || async { agent.log().contains("ignoring part of the status file") }).await,
        "the malformed status file was not reported; agent log:\n{}",
        agent.log()
    );
    assert_eq!(delete(&s, &node_path, ADMIN).await.0, 204);
    assert_eq!(agent.exit_code().await, 3, "agent log:\n{}", agent.log());
    let log = agent.log();
    assert!(log.contains("no longer accepts this node's token"), "{log}");
    assert!(!log.contains(&token), "the token reached the log");
}

#[tokio::test]
async fn enrolling_twice_needs_force() {
    let s = spawn_app().await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().to_str().unwrap();
    let enroll = ["enroll", "--server", s.url.as_str(), "--name", "test-body", "--state", state];
    let (code, _, err) = hydranode_output(&enroll).await;
    assert_eq!(code, 0, "{err}");
    let first = std::fs::read_to_string(tmp.path().join("identity.json")).unwrap();

    let (code, _, err) = hydranode_output(&enroll).await;
    assert_ne!(code, 0);
    assert!(err.contains("already enrolled") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(tmp.path().join("identity.json")).unwrap(), first);
    let (_, nodes) = get(&s, "/api/v1/nodes", ADMIN).await;
    assert_eq!(
        nodes.as_array().map(Vec::len),
        Some(1),
        "a refused enrollment asked nothing of the server: {nodes}"
    );

    let forced: Vec<&str> = enroll.iter().copied().chain(["--force"]).collect();
    let (code, _, err) = hydranode_output(&forced).await;
    assert_eq!(code, 0, "{err}");
    assert_ne!(std::fs::read_to_string(tmp.path().join("identity.json")).unwrap(), first);
}

#[tokio::test]
async fn clear_errors_for_a_server_that_is_down_or_refuses() {
    let mut s = spawn_app().await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().to_str().unwrap();

    let (code, _, err) = hydranode_output(&["run", "--once", "--state", state]).await;
    assert_ne!(code, 0);
    assert!(err.contains("not enrolled") && err.contains("hydranode enroll"), "{err}");

    let (code, _, err) =
        hydranode_output(&["enroll", "--server", &s.url, "--name", "bad name!", "--state", state]).await;
    assert_ne!(code, 0);
    assert!(err.contains("400") && err.contains("invalid name"), "the server's error is shown: {err}");

    let (code, _, err) =
        hydranode_output(&["enroll", "--server", &s.url, "--name", "test-body", "--state", state]).await;
    assert_eq!(code, 0, "{err}");
    s.stop().await;
    let (code, _, err) = hydranode_output(&["run", "--once", "--state", state]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("heartbeat failed") && err.contains("cannot reach the server"), "{err}");
}

/// Enrolls a node with the real binary and approves it; (node id, state dir).
async fn enrolled_and_approved(s: &TestServer, name: &str) -> (String, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    let (code, _, err) =
        hydranode_output(&["enroll", "--server", &s.url, "--name", name, "--state", dir]).await;
    assert_eq!(code, 0, "enroll failed: {err}");
    let identity: Value =
        serde_json::from_slice(&std::fs::read(state.path().join("identity.json")).unwrap()).unwrap();
    let id = identity["node_id"].as_str().unwrap().to_owned();
    approve(s, &id).await;
    (id, state)
}

/// Queues a command on the real server; its exec id.
async fn exec_on(s: &TestServer, node: &str, body: Value) -> String {
    let (status, queued) = post(s, &format!("/api/v1/nodes/{node}/exec"), ADMIN, body).await;
    assert_eq!(status, 202, "{queued}");
    queued["id"].as_str().unwrap().to_owned()
}

/// Waits for the command's result on the real server.
async fn finished(s: &TestServer, node: &str, exec: &str, agent: &Agent) -> Value {
    let path = format!("/api/v1/nodes/{node}/exec/{exec}/result");
    let last = Mutex::new(Value::Null);
    let done = eventually(LIMIT, || {
        let (path, last) = (&path, &last);
        async move {
            let (status, body) = get(s, path, ADMIN).await;
            *last.lock().unwrap() = body;
            status == 200
        }
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(done, "{exec} never finished (last answer {last}); agent log:\n{}", agent.log());
    last
}

#[tokio::test]
async fn the_agent_runs_commands_from_the_real_server() {
    let s = spawn_app().await;
    let (node, state) = enrolled_and_approved(&s, "test-body").await;
    let mut agent = start_agent(state.path());

    let exec =
        exec_on(&s, &node, json!({"command": "echo hi; echo oops >&2; exit 3", "timeout": "10s"})).await;
    let r = finished(&s, &node, &exec, &agent).await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["stdout"], "hi\n");
    assert_eq!(r["stderr"], "oops\n");
    assert_eq!(r["truncated"], false);

    // Cancelled in flight: the agent learns it from the watch and kills the group.
    let pid_file = state.path().join("pids");
    let exec = exec_on(&s, &node, json!({"command": pid_writer(&pid_file), "timeout": "30s"})).await;
    let pids = pids_in(&pid_file).await;
    let (status, body) = delete(&s, &format!("/api/v1/nodes/{node}/exec/queue/{exec}"), ADMIN).await;
    assert_eq!(status, 200, "{body}");
    assert!(all_gone(&pids).await, "the cancelled command's group survived; agent log:\n{}", agent.log());
    assert_eq!(finished(&s, &node, &exec, &agent).await["status"], "cancelled");

    // Timed out by the agent, which says so in its result.
    let exec = exec_on(&s, &node, json!({"command": "sleep 30", "timeout": 1})).await;
    let r = finished(&s, &node, &exec, &agent).await;
    assert_eq!(r["status"], "timed_out", "{r}");

    // And the queue moves on.
    let exec = exec_on(&s, &node, json!({"command": "echo after"})).await;
    assert_eq!(finished(&s, &node, &exec, &agent).await["stdout"], "after\n");

    agent.terminate();
    assert_eq!(agent.exit_code().await, 0, "{}", agent.log());
}

// ---- The exec protocol against a fake server: outages and restarts on demand. ----

#[derive(Default)]
struct Fake {
    queue: VecDeque<Value>,
    /// Status of each dispatched command, as the watch endpoint reports it.
    status: HashMap<String, String>,
    results: Vec<Value>,
    /// Answer this many result posts with 503 (a restarting server).
    failing_results: u32,
    polls: u32,
    revoked: bool,
}

type Shared = Arc<Mutex<Fake>>;

#[derive(Deserialize)]
struct Wait {
    #[serde(default)]
    wait: u64,
}

fn revoked() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"error": "missing or invalid token"}))).into_response()
}

async fn fake_heartbeat(State(f): State<Shared>) -> Response {
    if f.lock().unwrap().revoked {
        return revoked();
    }
    Json(json!({"status": "approved", "roles": ["hydrabody"]})).into_response()
}

async fn fake_next(State(f): State<Shared>, Query(q): Query<Wait>) -> Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait);
    f.lock().unwrap().polls += 1;
    loop {
        {
            let mut f = f.lock().unwrap();
            if f.revoked {
                return revoked();
            }
            if let Some(cmd) = f.queue.pop_front() {
                f.status.insert(cmd["id"].as_str().unwrap().to_owned(), "dispatched".into());
                return Json(cmd).into_response();
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return StatusCode::NO_CONTENT.into_response();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fake_watch(
    State(f): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<Wait>,
) -> Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait);
    loop {
        let status = f.lock().unwrap().status.get(&id).cloned();
        match status {
            None => {
                return (StatusCode::NOT_FOUND, Json(json!({"error": "no such command"}))).into_response()
            }
            Some(s) if s != "dispatched" || tokio::time::Instant::now() >= deadline => {
                return Json(json!({ "status": s })).into_response()
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn fake_result(State(f): State<Shared>, Json(result): Json<Value>) -> Response {
    let mut f = f.lock().unwrap();
    if f.failing_results > 0 {
        f.failing_results -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "restarting"}))).into_response();
    }
    let id = result["id"].as_str().unwrap_or_default().to_owned();
    if f.status.get(&id).map(String::as_str) != Some("dispatched") {
        return (StatusCode::CONFLICT, Json(json!({"error": "not expected"}))).into_response();
    }
    f.status.insert(id, "completed".into());
    f.results.push(result);
    Json(json!({"recorded": true})).into_response()
}

/// Starts the fake; its URL.
async fn fake_server(fake: Shared) -> String {
    let app = Router::new()
        .route("/api/v1/body/heartbeat", routing::post(fake_heartbeat))
        .route("/api/v1/body/exec", routing::get(fake_next))
        .route("/api/v1/body/exec/{id}/watch", routing::get(fake_watch))
        .route("/api/v1/body/exec/result", routing::post(fake_result))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A state dir enrolled at `url` (written directly: the fake does not enroll).
fn enrolled_state(url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let identity = hydra::agent::identity::Identity {
        node_id: "node-fake".into(),
        server_url: url.into(),
        name: "fake-body".into(),
        kind: hydra::agent::identity::Kind::Body,
    };
    hydra::agent::identity::save(dir.path(), &identity, &hydra::agent::client::Token::new("hyn_fake".into()))
        .unwrap();
    dir
}

/// A fake server and a state dir enrolled at it.
async fn fake_with_state() -> (Shared, tempfile::TempDir) {
    let fake = Shared::default();
    let url = fake_server(fake.clone()).await;
    (fake, enrolled_state(&url))
}

fn run_args(state: &Path) -> Vec<String> {
    ["run", "--state", state.to_str().unwrap(), "--heartbeat-interval", "200ms", "--exec-wait", "1"]
        .map(String::from)
        .to_vec()
}

fn start_agent(state: &Path) -> Agent {
    let args = run_args(state);
    Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

async fn results(fake: &Shared, n: usize, agent: &Agent) -> Vec<Value> {
    let got = eventually(LIMIT, || async { fake.lock().unwrap().results.len() >= n }).await;
    assert!(got, "{n} results never arrived; agent log:\n{}", agent.log());
    fake.lock().unwrap().results.clone()
}

/// A command that prints `started`, then writes its own pid and its child's to `file`
/// (so that once the file is there, the output is too) and waits on the child.
fn pid_writer(file: &Path) -> String {
    let p = file.display();
    format!("sleep 30 & echo $! > {p}.tmp; echo $$ >> {p}.tmp; echo started; mv {p}.tmp {p}; wait")
}

async fn pids_in(file: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let found = eventually(LIMIT, || {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        pids = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        let n = pids.len();
        async move { n == 2 }
    })
    .await;
    assert!(found, "the command never wrote its pids");
    pids
}

/// True while the process exists and is not a zombie.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
        .unwrap_or(false)
}

async fn all_gone(pids: &[i32]) -> bool {
    eventually(LIMIT, || async { !pids.iter().any(|p| running(*p)) }).await
}

#[tokio::test]
async fn exec_results_reach_the_server_through_failures() {
    let (fake, state) = fake_with_state().await;
    {
        let mut f = fake.lock().unwrap();
        f.failing_results = 2;
        f.queue.push_back(
            json!({"id": "exec-1", "command": "echo out; echo err >&2; exit 7", "timeout_ms": 10000}),
        );
        f.queue.push_back(json!({"id": "exec-2", "command": "sleep 30", "timeout_ms": 300}));
    }
    let mut agent = start_agent(state.path());
    let got = results(&fake, 2, &agent).await;
    let r = &got[0];
    assert_eq!(r["id"], "exec-1");
    assert_eq!(r["exit_code"], 7);
    assert_eq!(r["stdout"], "out\n");
    assert_eq!(r["stderr"], "err\n");
    assert_eq!(r["truncated"], false);
    assert_eq!(r["timed_out"], false);
    assert!(r["duration_ms"].is_u64());
    let r = &got[1];
    assert_eq!(r["id"], "exec-2");
    assert_eq!(r["timed_out"], true);
    assert_eq!(r["exit_code"], 128 + 15);
    // The agent forgets the kept result once the answer reached it, just after the
    // fake recorded it.
    let spool = state.path().join("pending-result.json");
    assert!(eventually(LIMIT, || async { !spool.exists() }).await, "a delivered result is not kept");

    agent.terminate();
    assert_eq!(agent.exit_code().await, 0, "{}", agent.log());
}

#[tokio::test]
async fn a_command_the_server_ends_is_killed_without_a_result() {
    let (fake, state) = fake_with_state().await;
    let pid_file = state.path().join("pids");
    fake.lock()
        .unwrap()
        .queue
        .push_back(json!({"id": "exec-3", "command": pid_writer(&pid_file), "timeout_ms": 30000}));
    let mut agent = start_agent(state.path());
    let pids = pids_in(&pid_file).await;
    let polls = {
        let mut f = fake.lock().unwrap();
        f.status.insert("exec-3".into(), "cancelled".into());
        f.polls
    };
    assert!(all_gone(&pids).await, "the command's group survived the cancel; agent log:\n{}", agent.log());
    // The agent polls again only once it is done with the command: by then it would
    // have posted a result.
    assert!(eventually(LIMIT, || async { fake.lock().unwrap().polls > polls }).await);
    assert!(fake.lock().unwrap().results.is_empty(), "no result for a command the server ended");

    fake.lock().unwrap().revoked = true;
    assert_eq!(agent.exit_code().await, 3, "{}", agent.log());
}

#[tokio::test]
async fn a_stopping_agent_kills_the_command_and_keeps_its_result_until_delivered() {
    let (fake, state) = fake_with_state().await;
    let pid_file = state.path().join("pids");
    {
        let mut f = fake.lock().unwrap();
        f.failing_results = u32::MAX;
        f.queue.push_back(json!({"id": "exec-4", "command": pid_writer(&pid_file), "timeout_ms": 30000}));
    }
    let mut agent = start_agent(state.path());
    let pids = pids_in(&pid_file).await;
    agent.terminate();
    assert_eq!(agent.exit_code().await, 0, "{}", agent.log());
    assert!(all_gone(&pids).await, "the command's group survived the agent");
    let kept: PathBuf = state.path().join("pending-result.json");
    assert!(kept.exists(), "the undelivered result is kept; agent log:\n{}", agent.log());
    assert_eq!(mode(&kept), 0o600);

    // The server is back: the next start delivers it.
    fake.lock().unwrap().failing_results = 0;
    let mut agent = start_agent(state.path());
    let got = results(&fake, 1, &agent).await;
    assert_eq!(got[0]["id"], "exec-4");
    assert_eq!(got[0]["stdout"], "started\n");
    assert!(got[0]["stderr"].as_str().unwrap().contains("agent is stopping"), "{}", got[0]);
    assert!(eventually(LIMIT, || async { !kept.exists() }).await);
    agent.terminate();
    assert_eq!(agent.exit_code().await, 0);
}
