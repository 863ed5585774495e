//! A full disk, with a real `hydracluster` process on a small tmpfs: the server stays
//! up and read-only (mutations 503 saying the disk is full; reads, SSE and health keep
//! answering; `/readyz` says why), takes writes again by itself once space is freed,
//! starts read-only on a full disk instead of exiting, and keeps every acknowledged
//! event across all of it. Skipped, with the reason printed, where no tmpfs can be
//! mounted (not root, or no mount permission).

use crate::common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// A tmpfs mounted on `<tempdir>/data` (the data dir itself, so the config file beside
/// it stays on the real disk); unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size_mib: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&data)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk { dir }),
            Ok(o) => {
                eprintln!("SKIPPED: cannot mount a tmpfs: {}", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.data()).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }

    /// Fills the disk until at most `leave` bytes are free (0: until it is full).
    fn fill(&self, leave: u64) {
        let mut f = std::fs::File::create(self.data().join("filler")).unwrap();
        let chunk = vec![0x5a_u8; 256 * 1024];
        while self.free() > leave {
            let n = (self.free() - leave).min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n]).and_then(|_| f.sync_data()).is_err() {
                break; // full
            }
        }
    }

    fn unfill(&self) {
        std::fs::remove_file(self.data().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.data()).status();
    }
}

async fn enroll_status(http: &reqwest::Client, url: &str, name: &str) -> (u16, Value) {
    call(
        http,
        reqwest::Method::POST,
        &format!("{url}/enroll"),
        None,
        Some(json!({"name": name, "ip": "10.0.0.9"})),
    )
    .await
}

async fn node_ids(http: &reqwest::Client, url: &str) -> Vec<String> {
    let (status, body) =
        call(http, reqwest::Method::GET, &format!("{url}/api/v1/nodes"), Some(ADMIN), None).await;
    assert_eq!(status, 200, "the node list answers: {body}");
    let mut ids: Vec<String> =
        body.as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// Reads the SSE catch-up until the event `seq` arrives; the ids it saw.
async fn sse_catch_up_to(http: &reqwest::Client, url: &str, seq: u64) -> bool {
    use futures_util::StreamExt;
    let resp = http.get(format!("{url}/api/v1/events?since=0")).bearer_auth(ADMIN).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let done = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text
                .lines()
                .any(|l| l.strip_prefix("id: ").and_then(|s| s.trim().parse::<u64>().ok()) == Some(seq))
            {
                return true;
            }
        }
        false
    })
    .await;
    done.unwrap_or(false)
}

fn audit_ok(data: &Path) -> bool {
    Command::new(hydracluster()).args(["audit", "--data"]).arg(data).status().unwrap().success()
}

/// Enrolls until `n` are acknowledged; their ids.
async fn enroll_n(http: &reqwest::Client, url: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (status, body) = enroll_status(http, url, &format!("{prefix}-{i}")).await;
        assert_eq!(status, 201, "enroll answered {body}");
        ids.push(body["node_id"].as_str().unwrap().to_owned());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_reserve_the_server_is_read_only_and_resumes_when_space_returns() {
    let Some(disk) = SmallDisk::mount(48) else { return };
    let floor = 12 * MIB;
    let config = format!("min_free_bytes: {floor}\n");
    let mut server = ServerProcess::start_with(&disk.data(), &config);
    let http = reqwest::Client::new();
    let mut acked = enroll_n(&http, &server.url, "before", 20).await;

    disk.fill(floor - 4 * MIB);
    let (status, body) = enroll_status(&http, &server.url, "refused").await;
    assert_eq!(status, 503, "a mutation on a full disk is refused: {body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("disk is full"), "the refusal says the disk is full: {message}");

    // Reads, health and SSE keep answering; readiness says why it is not ready.
    assert!(server.child.try_wait().unwrap().is_none(), "the server is still running");
    assert_eq!(node_ids(&http, &server.url).await, acked_sorted(&acked));
    let (status, health) =
        call(&http, reqwest::Method::GET, &format!("{}/api/v1/health", server.url), None, None).await;
    assert_eq!(status, 200);
    assert_eq!(health["writable"], false);
    let last = health["last_event_id"].as_u64().unwrap();
    assert!(sse_catch_up_to(&http, &server.url, last).await, "SSE serves the log up to {last}");
    let (status, ready) =
        call(&http, reqwest::Method::GET, &format!("{}/readyz", server.url), None, None).await;
    assert_eq!(status, 503, "not ready while read-only: {ready}");
    assert_eq!(ready["components"]["disk"]["ok"], false);
    assert!(ready["components"]["disk"]["detail"].as_str().unwrap().contains("disk is full"));
    assert!(ready["components"]["disk"]["refused_writes"].as_u64().unwrap() >= 1);

    // Space comes back: writes resume with no restart.
    disk.unfill();
    let resumed = resumed_enroll(&http, &server.url).await.expect("writes resume once space is freed");
    acked.push(resumed);
    let (status, _) = call(&http, reqwest::Method::GET, &format!("{}/readyz", server.url), None, None).await;
    assert_eq!(status, 200, "ready again");

    // A clean stop and a restart keep every acknowledged event.
    server.terminate();
    assert!(server.child.wait().unwrap().success(), "a clean stop");
    let server = ServerProcess::start_with(&disk.data(), &config);
    assert_eq!(node_ids(&http, &server.url).await, acked_sorted(&acked));
    drop(server);
    assert!(audit_ok(&disk.data()), "the log audits clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_leaves_the_server_up_read_only_and_nothing_acknowledged_is_lost() {
    let Some(disk) = SmallDisk::mount(48) else { return };
    // No reserve: the disk really fills under the writer.
    let config = "min_free_bytes: 0\nsnapshot_every: 1000000\n";
    let mut server = ServerProcess::start_with(&disk.data(), config);
    let http = reqwest::Client::new();
    let mut acked = enroll_n(&http, &server.url, "before", 10).await;

    disk.fill(0);
    // Writes go on until sled's next segment does not fit; the first refusal says why.
    let mut refusal = None;
    for i in 0..20_000 {
        let (status, body) = enroll_status(&http, &server.url, &format!("during-{i}")).await;
        match status {
            201 => acked.push(body["node_id"].as_str().unwrap().to_owned()),
            503 => {
                refusal = Some(body["error"].as_str().unwrap().to_owned());
                break;
            }
            other => panic!("enroll answered {other}: {body}"),
        }
    }
    let refusal = refusal.expect("the full disk refused a write");
    assert!(refusal.contains("read-only"), "the refusal says the server is read-only: {refusal}");
    assert!(server.child.try_wait().unwrap().is_none(), "the server did not exit");
    let (status, _) = enroll_status(&http, &server.url, "again").await;
    assert_eq!(status, 503, "it stays read-only");
    assert_eq!(node_ids(&http, &server.url).await, acked_sorted(&acked), "reads serve what was acknowledged");
    let (status, ready) =
        call(&http, reqwest::Method::GET, &format!("{}/readyz", server.url), None, None).await;
    assert_eq!(status, 503, "{ready}");

    // The operator frees space and restarts: every acknowledged event is there.
    disk.unfill();
    server.kill9();
    let server = ServerProcess::start_with(&disk.data(), config);
    let ids = node_ids(&http, &server.url).await;
    for id in &acked {
        assert!(ids.contains(id), "acknowledged node {id} survived");
    }
    let (status, body) = enroll_status(&http, &server.url, "after-restart").await;
    assert_eq!(status, 201, "writes again after the restart: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_on_a_full_disk_serves_read_only() {
    let Some(disk) = SmallDisk::mount(48) else { return };
    let floor = 12 * MIB;
    let config = format!("min_free_bytes: {floor}\n");
    let mut server = ServerProcess::start_with(&disk.data(), &config);
    let http = reqwest::Client::new();
    let acked = enroll_n(&http, &server.url, "before", 10).await;
    server.terminate();

    disk.fill(0);
    let server = ServerProcess::start_with(&disk.data(), &config);
    assert_eq!(node_ids(&http, &server.url).await, acked_sorted(&acked));
    let (status, body) = enroll_status(&http, &server.url, "refused").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("disk is full"), "{body}");
    let (status, ready) =
        call(&http, reqwest::Method::GET, &format!("{}/readyz", server.url), None, None).await;
    assert_eq!(status, 503);
    assert_eq!(ready["components"]["disk"]["ok"], false, "{ready}");

    disk.unfill();
    assert!(resumed_enroll(&http, &server.url).await.is_some(), "writes resume once space is freed");
}

fn acked_sorted(ids: &[String]) -> Vec<String> {
    let mut v = ids.to_vec();
    v.sort();
    v
}

/// Enrolls once space is back: the acknowledged node id (polled as a deadlock guard).
async fn resumed_enroll(http: &reqwest::Client, url: &str) -> Option<String> {
    for _ in 0..600 {
        let (status, body) = enroll_status(http, url, "after").await;
        if status == 201 {
            return Some(body["node_id"].as_str().unwrap().to_owned());
        }
        assert_eq!(status, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
