//! Test harness: real servers on port 0 with fresh data dirs, in-process or as a
//! real `hydracluster` process, and small HTTP helpers.
#![allow(dead_code)]

pub mod agent;
pub mod library;
pub mod pipeline;

use hydra::cluster::config::Config;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

pub const ADMIN: &str = "test-admin-token";
pub const OBSERVER: &str = "test-observer-token";

/// A server running inside the test process.
pub struct TestServer {
    pub url: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub running: Option<hydra::service::start::Running>,
}

pub fn test_config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data: dir.to_owned(),
        admin_token: Some(ADMIN.into()),
        observer_token: Some(OBSERVER.into()),
        enroll_per_minute: 0,
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestServer {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    tweak(&mut config);
    let running = hydra::cluster::server::start(config).await.expect("server starts");
    TestServer {
        url: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
        dir,
        running: Some(running),
    }
}

impl TestServer {
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
    }

    /// Starts again on the same data dir (a new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        let running =
            hydra::cluster::server::start(test_config(self.dir.path())).await.expect("server restarts");
        self.url = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    pub fn ledger(&self) -> &hydra_core::ledger::Ledger<hydra_projections::ClusterViews> {
        self.running.as_ref().unwrap().ledger()
    }
}

/// Sends a request and returns the status and the JSON body (Null when empty or not JSON).
pub async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub async fn get(s: &TestServer, path: &str, token: &str) -> (u16, Value) {
    call(&s.http, reqwest::Method::GET, &format!("{}{path}", s.url), Some(token), None).await
}

pub async fn post(s: &TestServer, path: &str, token: &str, body: Value) -> (u16, Value) {
    call(&s.http, reqwest::Method::POST, &format!("{}{path}", s.url), Some(token), Some(body)).await
}

/// Enrolls a machine; returns (node id, node token).
pub async fn enroll(url: &str, http: &reqwest::Client, name: &str) -> (String, String) {
    let (status, body) = call(
        http,
        reqwest::Method::POST,
        &format!("{url}/enroll"),
        None,
        Some(json!({"name": name, "ip": "10.0.0.7"})),
    )
    .await;
    assert_eq!(status, 201, "enroll answered {body}");
    (body["node_id"].as_str().unwrap().to_owned(), body["token"].as_str().unwrap().to_owned())
}

/// Enrolls and approves a body at north/arena.
pub async fn approved_body(s: &TestServer, name: &str) -> (String, String) {
    let (id, token) = enroll(&s.url, &s.http, name).await;
    let (status, body) = post(
        s,
        &format!("/api/v1/nodes/{id}/approve"),
        ADMIN,
        json!({"roles": ["hydrabody"], "district": "north", "venue": "arena"}),
    )
    .await;
    assert_eq!(status, 200, "approve answered {body}");
    (id, token)
}

pub async fn heartbeat(s: &TestServer, token: &str, body: Value) -> (u16, Value) {
    post(s, "/api/v1/body/heartbeat", token, body).await
}

/// A real `hydracluster serve` process.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
}

pub fn hydracluster() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hydracluster"))
}

impl ServerProcess {
    pub fn start(data: &Path) -> ServerProcess {
        Self::start_with(data, "")
    }

    /// Starts with more lines of YAML config (e.g. shorter timeouts).
    pub fn start_with(data: &Path, extra_config: &str) -> ServerProcess {
        Self::start_on(data, "127.0.0.1:0".parse().unwrap(), extra_config)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` until it returns true or `limit` passes (a deadlock guard, not a timer
/// under test).
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}
