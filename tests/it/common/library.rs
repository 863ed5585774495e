//! Test harness for rollouts: a real `hydraexperiencelibrary` process, hydracluster on
//! a fixed port (so that it can restart where the library expects it), and a
//! HydraRelease-like SSE stream of `build.uploaded` events that honours Last-Event-ID.

use super::{call, hydracluster, ServerProcess, ADMIN, OBSERVER};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub fn library_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hydraexperiencelibrary"))
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Reads the child's stdout until the line that starts with `prefix`, returns the
/// address after it, and keeps draining stdout in the background.
fn wait_for_address(child: &mut Child, prefix: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("the server printed its address").unwrap();
        if let Some(addr) = line.strip_prefix(prefix) {
            break addr.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    url
}

impl ServerProcess {
    /// hydracluster listening on `addr` (port 0 for any; a fixed one so a restart keeps
    /// its URL), with the test admin and observer tokens.
    pub fn start_on(data: &Path, addr: SocketAddr, extra_config: &str) -> ServerProcess {
        // Tests enroll many machines from one address, most left pending: lift the
        // per-address limit and the cap on pending nodes.
        let config = data.with_extension("yaml");
        std::fs::write(&config, format!("enroll_per_minute: 0\nmax_pending_nodes: 1000000\n{extra_config}"))
            .unwrap();
        let mut child = Command::new(hydracluster())
            .args(["serve", "--listen", &addr.to_string(), "--config"])
            .arg(&config)
            .arg("--data")
            .arg(data)
            .env("HYDRACLUSTER_ADMIN_TOKEN", ADMIN)
            .env("HYDRACLUSTER_OBSERVER_TOKEN", OBSERVER)
            .env("HYDRA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("hydracluster starts");
        let url = wait_for_address(&mut child, "hydracluster listening on ");
        ServerProcess { child, url }
    }
}

/// A running `hydraexperiencelibrary serve`; killed when dropped.
pub struct LibraryProcess {
    pub child: Child,
    pub url: String,
    pub addr: SocketAddr,
    pub data: PathBuf,
    cluster: String,
    release: Option<String>,
    extra: String,
}

impl LibraryProcess {
    /// Starts on a fresh port with `ADMIN`/`OBSERVER` tokens, following `cluster` (with
    /// `ADMIN` as its token) and `release` when given. `extra` is more YAML config.
    pub fn start(data: &Path, cluster: &str, release: Option<&str>, extra: &str) -> LibraryProcess {
        let mut p = LibraryProcess {
            child: Command::new("true").spawn().unwrap(),
            url: String::new(),
            addr: free_addr(),
            data: data.to_owned(),
            cluster: cluster.to_owned(),
            release: release.map(str::to_owned),
            extra: extra.to_owned(),
        };
        p.restart();
        p
    }

    /// Starts again on the same data and port.
    pub fn restart(&mut self) {
        self.kill9();
        let config = self.data.with_extension("yaml");
        std::fs::write(&config, format!("rollout:\n  tick: 200ms\n{}", self.extra)).unwrap();
        let mut cmd = Command::new(library_bin());
        cmd.args(["serve", "--listen", &self.addr.to_string(), "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&self.data)
            .env("HYDRAEXPERIENCELIBRARY_ADMIN_TOKEN", ADMIN)
            .env("HYDRAEXPERIENCELIBRARY_OBSERVER_TOKEN", OBSERVER)
            .env("HYDRAEXPERIENCELIBRARY_CLUSTER_URL", &self.cluster)
            .env("HYDRAEXPERIENCELIBRARY_CLUSTER_TOKEN", ADMIN)
            .env("HYDRA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(r) = &self.release {
            cmd.env("HYDRAEXPERIENCELIBRARY_RELEASE_URL", r);
        }
        self.child = cmd.spawn().expect("hydraexperiencelibrary starts");
        self.url = wait_for_address(&mut self.child, "hydraexperiencelibrary listening on ");
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn get(&self, http: &reqwest::Client, path: &str) -> (u16, Value) {
        call(http, reqwest::Method::GET, &format!("{}{path}", self.url), Some(ADMIN), None).await
    }

    pub async fn post(&self, http: &reqwest::Client, path: &str, body: Value) -> (u16, Value) {
        call(http, reqwest::Method::POST, &format!("{}{path}", self.url), Some(ADMIN), Some(body)).await
    }
}

impl Drop for LibraryProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A HydraRelease stand-in: `build.uploaded` events with ids 1, 2, …, served over
/// SSE from after the client's Last-Event-ID, live as they are pushed.
#[derive(Clone)]
pub struct ReleaseFeed {
    events: Arc<Mutex<Vec<Value>>>,
    count: watch::Sender<usize>,
    pub url: String,
    /// How many connections were made, and the Last-Event-ID each sent.
    pub resumes: Arc<Mutex<Vec<Option<String>>>>,
}

impl ReleaseFeed {
    pub async fn start() -> ReleaseFeed {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let feed =
            ReleaseFeed { events: Arc::default(), count: watch::channel(0).0, url, resumes: Arc::default() };
        let app = axum::Router::new().route("/events", axum::routing::get(stream)).with_state(feed.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        feed
    }

    /// Publishes a `build.uploaded`; returns its id.
    pub fn upload(&self, project: &str, build: &str, version: &str) -> usize {
        let mut events = self.events.lock().unwrap();
        events.push(json!({
            "project": project,
            "build": build,
            "version": version,
            "artifact_url": format!("https://release.example/{project}/{build}.tar.gz"),
            "sha256": "ab".repeat(32),
        }));
        let n = events.len();
        drop(events);
        self.count.send_replace(n);
        n
    }

    /// Sends an event that was sent before once more, with a new id (HydraRelease
    /// re-announcing a build).
    pub fn repeat(&self, id: usize) -> usize {
        let mut events = self.events.lock().unwrap();
        let again = events[id - 1].clone();
        events.push(again);
        let n = events.len();
        drop(events);
        self.count.send_replace(n);
        n
    }
}

async fn stream(
    State(feed): State<ReleaseFeed>,
    headers: HeaderMap,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    feed.resumes.lock().unwrap().push(last.clone());
    let mut sent: usize = last.and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut count = feed.count.subscribe();
    let s = async_stream::stream! {
        loop {
            let batch: Vec<Value> = feed.events.lock().unwrap().iter().skip(sent).cloned().collect();
            for e in batch {
                sent += 1;
                yield Ok(SseEvent::default().id(sent.to_string()).event("build.uploaded").data(e.to_string()));
            }
            if count.changed().await.is_err() {
                return;
            }
        }
    };
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(1)))
}
