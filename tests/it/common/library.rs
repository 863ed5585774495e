//! ExperienceLibrary and its neighbours for end-to-end tests: a real
//! `hydraexperiencelibrary` process, a stand-in for its live list as hydracluster reads
//! it, and a HydraRelease-like SSE stream of `build.uploaded` events that honours
//! Last-Event-ID.

use super::{free_addr, spawn_piped, wait_for_line, ADMIN, OBSERVER};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use hydra::library::config::LibraryConfig;
use hydra::library::server::{start, Running};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// An ExperienceLibrary running inside the test process on a fresh data dir, with the
/// `ADMIN` and `OBSERVER` tokens and no cluster unless `tweak` gives one.
pub struct TestLibrary {
    pub url: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    running: Option<Running>,
}

super::service_by_fields!(TestLibrary, LibraryProcess);

pub async fn spawn_library(tweak: impl FnOnce(&mut LibraryConfig)) -> TestLibrary {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LibraryConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data: dir.path().to_owned(),
        admin_token: Some(ADMIN.into()),
        observer_token: Some(OBSERVER.into()),
        http_timeout: Duration::from_secs(5),
        ..LibraryConfig::default()
    };
    tweak(&mut config);
    let running = start(config).await.expect("library starts");
    TestLibrary {
        url: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
        _dir: dir,
        running: Some(running),
    }
}

impl TestLibrary {
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
    }
}

pub fn library_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hydraexperiencelibrary"))
}

/// A running `hydraexperiencelibrary serve`; killed when dropped.
pub struct LibraryProcess {
    pub child: Child,
    pub url: String,
    pub http: reqwest::Client,
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
            http: reqwest::Client::new(),
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
            .env("HYDRAEXPERIENCELIBRARY_CLUSTER_TOKEN", ADMIN);
        if let Some(r) = &self.release {
            cmd.env("HYDRAEXPERIENCELIBRARY_RELEASE_URL", r);
        }
        self.child = spawn_piped(cmd, "hydraexperiencelibrary");
        self.url = wait_for_line(&mut self.child, "hydraexperiencelibrary listening on ");
        // Pooled connections died with the old process.
        self.http = reqwest::Client::new();
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A stand-in for ExperienceLibrary's live list on a real port: `/ok/…` serves a fixed
/// catalog for north/arena (and nothing elsewhere), `/fail/…` answers 500, `/bad/…`
/// sends something that is not JSON. Returns its base URL.
pub async fn fake_library() -> String {
    use axum::extract::Query;
    use axum::routing::get;
    use std::collections::HashMap;
    let live = |Query(q): Query<HashMap<String, String>>| async move {
        let at = (q.get("district").map(String::as_str), q.get("venue").map(String::as_str));
        if at != (Some("north"), Some("arena")) {
            return axum::Json(json!([]));
        }
        axum::Json(json!([
            {"id": "racing", "title": "Racing", "build": {"version": "1.2"}},
            {"id": "space", "title": "Space"},
            {"id": "ocean", "title": "Ocean"},
        ]))
    };
    let app = axum::Router::new()
        .route("/ok/api/v1/experiences/live", get(live))
        .route(
            "/fail/api/v1/experiences/live",
            get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route("/bad/api/v1/experiences/live", get(|| async { "<html>not json</html>" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}
