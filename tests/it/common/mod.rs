//! Test harness: real servers on port 0 with fresh data dirs, in-process or as a
//! real `hydracluster` process, and the HTTP calls every test makes of them.

pub mod agent;
pub mod artifacts;
pub mod library;
pub mod pipeline;

use futures_util::StreamExt;
use hydra::cluster::config::Config;
use reqwest::Method;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const ADMIN: &str = "test-admin-token";
pub const OBSERVER: &str = "test-observer-token";
pub const FLEET: &str = "test-fleet-token";

/// A hang guard for waits on a marker, not a timer under test.
pub const GUARD: Duration = Duration::from_secs(20);

/// Anything the tests speak HTTP to: an in-process server, a real process, a stand-in.
pub trait Service {
    fn url(&self) -> &str;
    fn http(&self) -> &reqwest::Client;

    /// An owned handle on the same service, for a task of its own.
    fn endpoint(&self) -> Endpoint {
        Endpoint { url: self.url().to_owned(), http: self.http().clone() }
    }
}

/// A service's URL and a client for it.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    pub http: reqwest::Client,
}

/// `Service` for types with `url` and `http` fields.
macro_rules! service_by_fields {
    ($($t:ty),*) => {$(
        impl $crate::common::Service for $t {
            fn url(&self) -> &str {
                &self.url
            }
            fn http(&self) -> &reqwest::Client {
                &self.http
            }
        }
    )*};
}
pub(crate) use service_by_fields;

service_by_fields!(Endpoint, TestServer, ServerProcess);

impl<S: Service> Service for std::sync::Arc<S> {
    fn url(&self) -> &str {
        (**self).url()
    }
    fn http(&self) -> &reqwest::Client {
        (**self).http()
    }
}

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
    serve_dir(tempfile::tempdir().unwrap(), tweak).await.expect("server starts")
}

/// An in-process server on a data dir that may hold data already, or why it refused it.
pub async fn serve_dir(
    dir: tempfile::TempDir,
    tweak: impl FnOnce(&mut Config),
) -> anyhow::Result<TestServer> {
    let mut config = test_config(dir.path());
    tweak(&mut config);
    let running = hydra::cluster::server::start(config).await?;
    Ok(TestServer {
        url: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
        dir,
        running: Some(running),
    })
}

/// An in-process server with one approved body ("body-1" at north/arena): the server,
/// the body's node id and its token.
pub async fn app_with_body(tweak: impl FnOnce(&mut Config)) -> (TestServer, String, String) {
    let s = spawn_app_with(tweak).await;
    let (node, token) = approved_body(&s, "body-1").await;
    (s, node, token)
}

/// Kiosk heads may enroll with the `FLEET` token.
pub fn with_fleet(c: &mut Config) {
    c.fleet_enrollment_token = Some(FLEET.into());
}

/// Fast liveness: a node silent for 300 ms goes offline.
pub fn quick_offline(c: &mut Config) {
    c.heartbeat_timeout = Duration::from_millis(300);
    c.heartbeat_interval = Duration::from_millis(100);
    c.offline_check_interval = Duration::from_millis(50);
}

impl TestServer {
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
    }

    /// Starts again on the same data dir (a new port).
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await
    }

    /// Starts again on the same data dir (a new port), with other settings.
    pub async fn restart_with(&mut self, tweak: impl FnOnce(&mut Config)) {
        self.stop().await;
        let mut config = test_config(self.dir.path());
        tweak(&mut config);
        let running = hydra::cluster::server::start(config).await.expect("server restarts");
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
    method: Method,
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

/// `call` on a path of the service.
pub async fn request(
    s: &impl Service,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    call(s.http(), method, &format!("{}{path}", s.url()), token, body).await
}

pub async fn get(s: &impl Service, path: &str, token: &str) -> (u16, Value) {
    request(s, Method::GET, path, Some(token), None).await
}

pub async fn post(s: &impl Service, path: &str, token: &str, body: Value) -> (u16, Value) {
    request(s, Method::POST, path, Some(token), Some(body)).await
}

pub async fn put(s: &impl Service, path: &str, token: &str, body: Value) -> (u16, Value) {
    request(s, Method::PUT, path, Some(token), Some(body)).await
}

pub async fn delete(s: &impl Service, path: &str, token: &str) -> (u16, Value) {
    request(s, Method::DELETE, path, Some(token), None).await
}

/// Every page of `path` (which has no query yet), with `limit`: the items, and how
/// many pages it took.
pub async fn all_pages(s: &impl Service, path: &str, limit: usize) -> (Vec<Value>, usize) {
    let (mut items, mut pages, mut after) = (Vec::new(), 0, None::<String>);
    loop {
        let mut url = format!("{}{path}?limit={limit}", s.url());
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let resp = s.http().get(&url).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let next = resp.headers().get("x-hydra-next-after").map(|v| v.to_str().unwrap().to_owned());
        let page: Vec<Value> = resp.json().await.unwrap();
        assert!(page.len() <= limit);
        pages += 1;
        items.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => return (items, pages),
        }
    }
}

/// Each `(query, word)`: `GET path?query` as an admin is a 400 whose message has `word`
/// (it names what was wrong).
pub async fn refused_queries(s: &impl Service, path: &str, cases: &[(&str, &str)]) {
    for (query, word) in cases {
        let (status, err) = get(s, &format!("{path}?{query}"), ADMIN).await;
        assert_eq!(status, 400, "{query}: {err}");
        assert!(err["error"].as_str().unwrap_or_default().contains(word), "{query}: {err}");
    }
}

/// `get` in a task of its own: a long poll the test answers meanwhile.
pub fn spawn_get(s: &impl Service, path: &str, token: &str) -> tokio::task::JoinHandle<(u16, Value)> {
    let (s, path, token) = (s.endpoint(), path.to_owned(), token.to_owned());
    tokio::spawn(async move { get(&s, &path, &token).await })
}

/// Plays a node's agent for one command, in a task of its own: long-polls the next
/// command and answers it with `answer` (its `id` filled in); returns the command.
pub fn answer_one_command(s: &impl Service, token: &str, answer: Value) -> tokio::task::JoinHandle<Value> {
    let (s, token) = (s.endpoint(), token.to_owned());
    tokio::spawn(async move {
        let (status, cmd) = get(&s, "/api/v1/body/exec?wait=20", &token).await;
        assert_eq!(status, 200, "the agent got a command: {cmd}");
        let mut answer = answer;
        answer["id"] = cmd["id"].clone();
        let (status, r) = post(&s, "/api/v1/body/exec/result", &token, answer).await;
        assert_eq!(status, 200, "{r}");
        cmd
    })
}

/// Waits until `n` long polls are parked in the server (`/readyz` counts them once
/// they are armed and found nothing): from then on whatever concerns them wakes them.
pub async fn polls_parked(s: &impl Service, n: u64) {
    let parked = eventually(GUARD, || async {
        readyz(s).await.1["components"]["long_polls"]["parked"].as_u64() >= Some(n)
    })
    .await;
    assert!(parked, "{n} long polls never parked: {}", readyz(s).await.1);
}

/// The public `/readyz` answer.
pub async fn readyz(s: &impl Service) -> (u16, Value) {
    request(s, Method::GET, "/readyz", None, None).await
}

/// How many SSE subscribers `/readyz` counts.
pub async fn sse_subscribers(s: &impl Service) -> u64 {
    let (_, ready) = readyz(s).await;
    ready["components"]["sse"]["subscribers"].as_u64().unwrap()
}

/// Enrolls a machine; returns (node id, node token).
pub async fn enroll(s: &impl Service, name: &str) -> (String, String) {
    let (status, body) = try_enroll(s, name).await;
    assert_eq!(status, 201, "enroll answered {body}");
    (body["node_id"].as_str().unwrap().to_owned(), body["token"].as_str().unwrap().to_owned())
}

/// Enrolls `<prefix>-0` … `<prefix>-<n-1>`, one after the other; their node ids.
pub async fn enroll_n(s: &impl Service, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(enroll(s, &format!("{prefix}-{i}")).await.0);
    }
    ids
}

/// `POST /enroll` as a machine sends it, whatever the answer.
pub async fn try_enroll(s: &impl Service, name: &str) -> (u16, Value) {
    request(s, Method::POST, "/enroll", None, Some(json!({"name": name, "ip": "10.0.0.7"}))).await
}

/// Approves a node with `roles` at `district/venue`; the node as the answer shows it.
pub async fn approve_at(s: &impl Service, id: &str, roles: &[&str], district: &str, venue: &str) -> Value {
    let body = json!({"roles": roles, "district": district, "venue": venue});
    let (status, node) = post(s, &format!("/api/v1/nodes/{id}/approve"), ADMIN, body).await;
    assert_eq!(status, 200, "approve answered {node}");
    node
}

/// Approves a node as a body at north/arena.
pub async fn approve(s: &impl Service, id: &str) {
    approve_at(s, id, &["hydrabody"], "north", "arena").await;
}

/// Enrolls and approves a body at north/arena.
pub async fn approved_body(s: &impl Service, name: &str) -> (String, String) {
    let (id, token) = enroll(s, name).await;
    approve(s, &id).await;
    (id, token)
}

/// Enrolls a kiosk head at north/arena with the fleet token; (head id, node token).
pub async fn enroll_head(s: &impl Service, name: &str) -> (String, String) {
    let (status, body) =
        post(s, "/api/v1/heads", FLEET, json!({"name": name, "district": "north", "venue": "arena"})).await;
    assert_eq!(status, 201, "head enrollment answered {body}");
    assert!(body["server_url"].as_str().is_some_and(|u| u.starts_with("http")), "{body}");
    (body["head_id"].as_str().unwrap().to_owned(), body["token"].as_str().unwrap().to_owned())
}

pub async fn heartbeat(s: &impl Service, token: &str, body: Value) -> (u16, Value) {
    post(s, "/api/v1/body/heartbeat", token, body).await
}

/// The node as `GET /api/v1/nodes/{id}` shows it to an admin.
pub async fn node(s: &impl Service, id: &str) -> Value {
    get(s, &format!("/api/v1/nodes/{id}"), ADMIN).await.1
}

/// Every event of the service's log that `query` selects (`types=exec.*&node=…`, or
/// empty for all), oldest first, read page by page.
pub async fn events(s: &impl Service, query: &str) -> Vec<Value> {
    event_log(s, query).await.0
}

/// `events`, and the head of the log as its last page gave it.
pub async fn event_log(s: &impl Service, query: &str) -> (Vec<Value>, u64) {
    let (mut out, mut since) = (Vec::new(), 0);
    loop {
        let path = format!("/api/v1/events/log?since={since}&limit=10000&{query}");
        let (status, page) = get(s, &path, ADMIN).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["events"].as_array().unwrap().iter().cloned());
        let (next, head) = (page["next_since"].as_u64().unwrap(), page["head"].as_u64().unwrap());
        if next >= head || next == since {
            return (out, head);
        }
        since = next;
    }
}

/// Who caused an event: its `cause` without the id of the request it came from.
pub fn who(event: &Value) -> &str {
    let cause = event["cause"].as_str().expect("every event has a cause");
    cause.split_once(" request:").map_or(cause, |(who, _)| who)
}

/// The type of each event.
pub fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// The `id` of each item.
pub fn ids<'a>(items: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    items.into_iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect()
}

/// Reads the service's SSE stream at `path` until `done` holds for the text so far;
/// returns the text.
pub async fn sse_until(s: &impl Service, path: &str, token: &str, done: impl Fn(&str) -> bool) -> String {
    let resp = s.http().get(format!("{}{path}", s.url())).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    read_until(resp, done).await
}

/// Opens the event stream at `path` as an admin, resuming after `last_event_id`.
pub async fn resume_events(s: &impl Service, path: &str, last_event_id: &str) -> reqwest::Response {
    let url = format!("{}{path}", s.url());
    s.http().get(url).bearer_auth(ADMIN).header("Last-Event-ID", last_event_id).send().await.unwrap()
}

/// Reads a streamed answer until `done` holds for the text so far; returns the text.
pub async fn read_until(resp: reqwest::Response, done: impl Fn(&str) -> bool) -> String {
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while !done(&text) {
        let chunk = tokio::time::timeout(GUARD, body.next())
            .await
            .unwrap_or_else(|_| panic!("the stream stalled after {text}"))
            .expect("the stream is open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The URL of a port that was just free: connecting to it is refused.
pub fn dead_url() -> String {
    format!("http://{}", free_addr())
}

/// A real `hydracluster serve` process, with its own HTTP client (a restarted process
/// gets a new one: pooled connections die with the old process).
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub http: reqwest::Client,
}

pub fn hydracluster() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hydracluster"))
}

/// Runs `hydracluster ARGS…` to the end, off the async runtime.
pub async fn hydracluster_cli(args: &[&str]) -> Output {
    let mut cmd = Command::new(hydracluster());
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

/// `hydracluster ARGS… --server URL --admin-token ADMIN`, as an admin types it.
pub async fn admin_cli(s: &impl Service, args: &[&str]) -> Output {
    let server = ["--server", s.url(), "--admin-token", ADMIN];
    hydracluster_cli(&[args, &server[..]].concat()).await
}

/// `hydracluster ARGS… --data DATA` (audit, repair), run to the end: whether it
/// succeeded, and its stdout then stderr.
pub fn offline(args: &[&str], data: &Path) -> (bool, String) {
    let out = Command::new(hydracluster()).args(args).arg("--data").arg(data).output().unwrap();
    (out.status.success(), all_output(&out))
}

/// A command's stdout and stderr, as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command's whole output, stdout then stderr.
pub fn all_output(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

impl ServerProcess {
    pub fn start(data: &Path) -> ServerProcess {
        Self::start_with(data, "")
    }

    /// Starts with more lines of YAML config (e.g. shorter timeouts).
    pub fn start_with(data: &Path, extra_config: &str) -> ServerProcess {
        Self::start_on(data, "127.0.0.1:0".parse().unwrap(), extra_config)
    }

    /// hydracluster listening on `addr` (port 0 for any; a fixed one so a restart keeps
    /// its URL), with the test admin and observer tokens.
    pub fn start_on(data: &Path, addr: SocketAddr, extra_config: &str) -> ServerProcess {
        // Tests enroll many machines from one address, most left pending: lift the
        // per-address limit and the cap on pending nodes.
        let config = data.with_extension("yaml");
        std::fs::write(&config, format!("enroll_per_minute: 0\nmax_pending_nodes: 1000000\n{extra_config}"))
            .unwrap();
        let mut cmd = Command::new(hydracluster());
        cmd.args(["serve", "--listen", &addr.to_string(), "--config"])
            .arg(&config)
            .arg("--data")
            .arg(data)
            .env("HYDRACLUSTER_ADMIN_TOKEN", ADMIN)
            .env("HYDRACLUSTER_OBSERVER_TOKEN", OBSERVER);
        let mut child = spawn_piped(cmd, "hydracluster");
        let url = wait_for_line(&mut child, "hydracluster listening on ");
        ServerProcess { child, url, http: reqwest::Client::new() }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit (SIGKILL if it takes more than 5 s).
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

/// The data dir (`<dir>/data`) of a real server that enrolled `n` machines (`b0`, `b1`,
/// …) and was then stopped by `stop` (`ServerProcess::terminate` or `kill9`).
pub async fn data_with_enrollments(n: usize, stop: fn(&mut ServerProcess)) -> (tempfile::TempDir, PathBuf) {
    let (dir, mut server) = server_in_temp_dir("");
    for i in 0..n {
        enroll(&server, &format!("b{i}")).await;
    }
    stop(&mut server);
    let data = dir.path().join("data");
    (dir, data)
}

/// hydracluster config lines that give the `hydrabody` role a recipe (in a catalog of
/// `hydrabody` and `render-node`).
pub fn body_recipe(url: &str, version: &str, sha: &str, install: &str) -> String {
    format!(
        "role_catalog: [hydrabody, render-node]\nrole_recipes:\n  hydrabody:\n    artifact_url: {url}\n    \
         version: \"{version}\"\n    sha256: \"{sha}\"\n    install: \"{install}\"\n"
    )
}

/// A temp dir with a real `hydracluster serve` on `<dir>/data` and `extra_config`.
pub fn server_in_temp_dir(extra_config: &str) -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(&dir.path().join("data"), extra_config);
    (dir, server)
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

/// Waits until the wall clock (milliseconds, as event times are kept) has moved past
/// `ms`, so that whatever happens from now on has a later time.
pub async fn clock_passes(ms: u64) {
    assert!(eventually(GUARD, || async { hydra_core::ledger::now_ms() > ms }).await, "the clock moves on");
}

/// Reads the child's stdout until the line that starts with `prefix`, returns what
/// follows it, and keeps draining stdout in the background.
pub fn wait_for_line(child: &mut Child, prefix: &str) -> String {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let rest = loop {
        let line = lines.next().expect("the process printed the line").unwrap();
        if let Some(rest) = line.strip_prefix(prefix) {
            break rest.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    rest
}

/// Spawns `cmd` with its stdout piped (stderr shown) and the test's log level.
pub fn spawn_piped(mut cmd: Command, what: &str) -> Child {
    cmd.env("HYDRA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} starts: {e}"))
}

/// Writes the event log of the stopped server in `dir` again as `change` says: for each
/// event (seq, encoded bytes, the node its record names), the record to write instead,
/// or None to leave it out (only at the end: the log takes no gaps). What a disk, an
/// editor or a bug in the header would leave; the tokens and snapshots stay as they were.
pub fn rewrite_log(
    dir: &Path,
    mut change: impl FnMut(u64, Vec<u8>, Option<String>) -> Option<(Vec<u8>, Option<String>)>,
) {
    let store = hydra_core::store::Store::open(dir).unwrap();
    let nodes: std::collections::HashMap<u64, String> =
        store.index_entries().unwrap().into_iter().map(|(node, seq)| (seq, node)).collect();
    let records: Vec<(u64, Vec<u8>)> = store.range(1, u64::MAX).map(Result::unwrap).collect();
    drop(store);
    std::fs::remove_dir_all(dir.join("events")).unwrap();
    let store = hydra_core::store::Store::open(dir).unwrap();
    for (seq, bytes) in records {
        let Some((bytes, node)) = change(seq, bytes, nodes.get(&seq).cloned()) else { continue };
        let node = node.map(|n| hydra_events::NodeId::parse(&n).unwrap());
        store
            .append(&[hydra_core::store::Record { seq, bytes: &bytes, node_id: node.as_ref() }], &[])
            .unwrap();
    }
    store.flush().unwrap();
}
