//! A full disk, with a real `hydracluster` process on a small tmpfs: the server stays
//! up and read-only (mutations 503 saying the disk is full; reads, SSE and health keep
//! answering; `/readyz` says why), takes writes again by itself once space is freed,
//! starts read-only on a full disk instead of exiting, and keeps every acknowledged
//! event across all of it. Skipped, with the reason printed, where no tmpfs can be
//! mounted (not root, or no mount permission).

use crate::common::*;

use std::io::Write;
use std::path::PathBuf;
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

/// The 12 MiB reserve below which the server takes no writes.
const FLOOR: u64 = 12 * MIB;

fn reserve_config() -> String {
    format!("min_free_bytes: {FLOOR}\n")
}

/// A small disk with a real server on it (`config`); None, the test skipped, where no
/// tmpfs can be mounted.
fn server_on_small_disk(config: &str) -> Option<(SmallDisk, ServerProcess)> {
    let disk = SmallDisk::mount(48)?;
    let server = ServerProcess::start_with(&disk.data(), config);
    Some((disk, server))
}

/// The ids in the node list, sorted.
async fn node_ids(server: &ServerProcess) -> Vec<String> {
    let (status, body) = get(server, "/api/v1/nodes", ADMIN).await;
    assert_eq!(status, 200, "the node list answers: {body}");
    sorted(&ids(body.as_array().unwrap()))
}

/// Reads the SSE catch-up until the event `seq` arrives.
async fn sse_catch_up_to(server: &ServerProcess, seq: u64) {
    sse_until(server, "/api/v1/events?since=0", ADMIN, |text| {
        text.lines().any(|l| l.strip_prefix("id: ").and_then(|s| s.trim().parse::<u64>().ok()) == Some(seq))
    })
    .await;
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut v = ids.to_vec();
    v.sort();
    v
}

/// Enrolls once space is back: the acknowledged node id (503 until then).
async fn resumed_enroll(server: &ServerProcess) -> Option<String> {
    let id = std::sync::Mutex::new(None);
    eventually(Duration::from_secs(30), || async {
        let (status, body) = try_enroll(server, "after").await;
        if status == 201 {
            *id.lock().unwrap() = Some(body["node_id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(status, 503, "{body}");
        }
        status == 201
    })
    .await;
    id.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_reserve_the_server_is_read_only_and_resumes_when_space_returns() {
    let Some((disk, mut server)) = server_on_small_disk(&reserve_config()) else { return };
    let mut acked = enroll_n(&server, "before", 20).await;

    disk.fill(FLOOR - 4 * MIB);
    let (status, body) = try_enroll(&server, "refused").await;
    assert_eq!(status, 503, "a mutation on a full disk is refused: {body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("disk is full"), "the refusal says the disk is full: {message}");

    // Reads, health and SSE keep answering; readiness says why it is not ready.
    assert!(server.child.try_wait().unwrap().is_none(), "the server is still running");
    assert_eq!(node_ids(&server).await, sorted(&acked));
    let (status, health) = request(&server, reqwest::Method::GET, "/api/v1/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(health["writable"], false);
    // SSE serves the log up to the last event.
    sse_catch_up_to(&server, health["last_event_id"].as_u64().unwrap()).await;
    let (status, ready) = readyz(&server).await;
    assert_eq!(status, 503, "not ready while read-only: {ready}");
    assert_eq!(ready["components"]["disk"]["ok"], false);
    assert!(ready["components"]["disk"]["detail"].as_str().unwrap().contains("disk is full"));
    assert!(ready["components"]["disk"]["refused_writes"].as_u64().unwrap() >= 1);

    // Space comes back: writes resume with no restart.
    disk.unfill();
    let resumed = resumed_enroll(&server).await.expect("writes resume once space is freed");
    acked.push(resumed);
    assert_eq!(readyz(&server).await.0, 200, "ready again");

    // A clean stop and a restart keep every acknowledged event.
    server.terminate();
    assert!(server.child.wait().unwrap().success(), "a clean stop");
    let server = ServerProcess::start_with(&disk.data(), &reserve_config());
    assert_eq!(node_ids(&server).await, sorted(&acked));
    drop(server);
    assert!(offline(&["audit"], &disk.data()).0, "the log audits clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_leaves_the_server_up_read_only_and_nothing_acknowledged_is_lost() {
    // No reserve: the disk really fills under the writer.
    let config = "min_free_bytes: 0\nsnapshot_every: 1000000\n";
    let Some((disk, mut server)) = server_on_small_disk(config) else { return };
    let mut acked = enroll_n(&server, "before", 10).await;

    disk.fill(0);
    // Writes go on until sled's next segment does not fit; the first refusal says why.
    let mut refusal = None;
    for i in 0..20_000 {
        let (status, body) = try_enroll(&server, &format!("during-{i}")).await;
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
    assert_eq!(try_enroll(&server, "again").await.0, 503, "it stays read-only");
    assert_eq!(node_ids(&server).await, sorted(&acked), "reads serve what was acknowledged");
    let (status, ready) = readyz(&server).await;
    assert_eq!(status, 503, "{ready}");

    // The operator frees space and restarts: every acknowledged event is there.
    disk.unfill();
    server.kill9();
    let server = ServerProcess::start_with(&disk.data(), config);
    let ids = node_ids(&server).await;
    for id in &acked {
        assert!(ids.contains(id), "acknowledged node {id} survived");
    }
    let (status, body) = try_enroll(&server, "after-restart").await;
    assert_eq!(status, 201, "writes again after the restart: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_on_a_full_disk_serves_read_only() {
    let Some((disk, mut server)) = server_on_small_disk(&reserve_config()) else { return };
    let acked = enroll_n(&server, "before", 10).await;
    server.terminate();

    disk.fill(0);
    let server = ServerProcess::start_with(&disk.data(), &reserve_config());
    assert_eq!(node_ids(&server).await, sorted(&acked));
    let (status, body) = try_enroll(&server, "refused").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("disk is full"), "{body}");
    let (status, ready) = readyz(&server).await;
    assert_eq!(status, 503);
    assert_eq!(ready["components"]["disk"]["ok"], false, "{ready}");

    disk.unfill();
    assert!(resumed_enroll(&server).await.is_some(), "writes resume once space is freed");
}
