//! Backup and restore: a backup taken while the server takes writes restores to the
//! digest it recorded (and passes `audit` and serves), a damaged or truncated file is
//! refused with its position, a dir that holds data is never restored into, and the
//! library's log goes the same way.

use crate::common::library::{library_bin, spawn_library};
use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The `seq:` and `digest:` lines that `backup`, `restore`, `audit` and `digest` print.
fn seq_and_digest(out: &str) -> (u64, String) {
    let line = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no `{key}` line in:\n{out}"))
            .trim()
            .to_owned()
    };
    (line("seq: ").parse().unwrap(), line("digest: "))
}

/// Enrolls machines one after the other until told to stop, asserting that every
/// enrollment is accepted; counts them.
fn write_load(s: &impl Service) -> (Arc<AtomicU64>, Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let (written, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let endpoint = s.endpoint();
    let (count, halt) = (written.clone(), stop.clone());
    let task = tokio::spawn(async move {
        while !halt.load(Ordering::SeqCst) {
            let n = count.load(Ordering::SeqCst);
            let (status, body) = try_enroll(&endpoint, &format!("load-{n}")).await;
            assert_eq!(status, 201, "a write during the backup was refused: {body}");
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (written, stop, task)
}

async fn wait_for_writes(written: &AtomicU64, at_least: u64) {
    assert!(
        eventually(GUARD, || async { written.load(Ordering::SeqCst) >= at_least }).await,
        "the write load stalled at {}",
        written.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_backup_taken_during_writes_restores_audits_and_serves_the_digest_it_recorded() {
    let mut s = spawn_app().await;
    let (early, early_token) = approved_body(&s, "early").await;
    let exec = crate::exec::run_printing(&s, &early, &early_token, "what it printed\n", "").await;
    let (written, stop, load) = write_load(&s);
    wait_for_writes(&written, 30).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.backup.gz");
    let out = admin_cli(&s, &["backup", "--out", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    let (seq, digest) = seq_and_digest(&text(&out.stdout));
    assert!(!dir.path().join("cluster.backup.gz.partial").exists());
    // It holds the token hashes: only its owner may read it.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // The server went on taking writes: the load carries on past the backup.
    let after_backup = written.load(Ordering::SeqCst);
    wait_for_writes(&written, after_backup + 20).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let (_, late_token) = enroll(&s, "late").await;
    let live_seq = s.ledger().committed_seq();
    assert!(seq > 30 && seq < live_seq, "backup at seq {seq}, live head {live_seq}");

    let restored = dir.path().join("restored");
    let (ok, said) = offline(&["restore", "--from", file.to_str().unwrap()], &restored);
    assert!(ok, "{said}");
    assert_eq!(seq_and_digest(&said), (seq, digest.clone()));
    assert!(said.contains("the digest equals the one the backup recorded"), "{said}");
    assert!(said.contains(", 1 command outputs,"), "{said}");
    let (ok, audited) = offline(&["audit", "--json"], &restored);
    assert!(ok, "{audited}");
    let report: Value = serde_json::from_str(audited.lines().next().unwrap()).unwrap();
    assert_eq!((report["seq"].as_u64(), report["digest"].as_str()), (Some(seq), Some(digest.as_str())));
    assert_eq!(report["outputs"], json!({"present": 1, "pruned": 0}), "{audited}");

    // The restored dir serves, with the digest recorded and the node tokens of the
    // nodes it holds; a machine enrolled after the backup's seq is unknown there.
    s.stop().await;
    let server = ServerProcess::start(&restored);
    let (status, live) = get(&server, "/api/v1/audit/digest", ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!((live["seq"].as_u64().unwrap(), live["digest"].as_str().unwrap()), (seq, digest.as_str()));
    assert_eq!(heartbeat(&server, &early_token, json!({})).await.0, 200);
    assert_eq!(heartbeat(&server, &late_token, json!({})).await.0, 401);
    // What the command printed came along with its result.
    let (_, result) = get(&server, &format!("/api/v1/nodes/{early}/exec/{exec}/result"), ADMIN).await;
    assert_eq!(
        (result["stdout"].as_str(), result["output_pruned"].as_bool()),
        (Some("what it printed\n"), Some(false))
    );
}

#[tokio::test]
async fn an_offline_backup_of_a_stopped_server_restores_to_its_audit_digest() {
    let mut s = spawn_app().await;
    approved_body(&s, "b1").await;
    enroll(&s, "b2").await;
    s.stop().await;
    let (ok, audited) = offline(&["audit"], s.dir.path());
    assert!(ok, "{audited}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("offline.gz");
    let (ok, said) = offline(&["backup", "--out", file.to_str().unwrap()], s.dir.path());
    assert!(ok, "{said}");
    assert_eq!(seq_and_digest(&said), seq_and_digest(&audited));
    let restored = dir.path().join("r");
    let (ok, said) = offline(&["restore", "--from", file.to_str().unwrap()], &restored);
    assert!(ok, "{said}");
    assert_eq!(seq_and_digest(&said), seq_and_digest(&audited));
}

#[tokio::test]
async fn a_damaged_or_truncated_backup_is_refused_with_its_position_and_restores_nothing() {
    let s = spawn_app().await;
    enroll_n(&s, "b", 40).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("good.gz");
    let out = admin_cli(&s, &["backup", "--out", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    let good = std::fs::read(&file).unwrap();

    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    let cut = good[..good.len() * 2 / 3].to_vec();
    for (name, bytes, says) in [
        ("flipped.gz", flipped, "the backup is damaged at byte "),
        ("cut.gz", cut, "the backup is truncated: it ends at byte "),
    ] {
        let bad = dir.path().join(name);
        std::fs::write(&bad, bytes).unwrap();
        let target = dir.path().join(format!("{name}.data"));
        let (ok, said) = offline(&["restore", "--from", bad.to_str().unwrap()], &target);
        assert!(!ok, "{name} was restored: {said}");
        assert!(said.contains(says) && said.contains("after event seq "), "{name}: {said}");
        assert!(!target.exists(), "{name} left {}", target.display());
    }
    // Nothing else was left beside them either (no half-built store).
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cut.gz", "flipped.gz", "good.gz"]);
}

#[tokio::test]
async fn restore_refuses_a_dir_that_holds_data_and_backup_needs_an_admin() {
    let s = spawn_app().await;
    enroll(&s, "b1").await;
    assert_eq!(get(&s, "/api/v1/backup", OBSERVER).await.0, 403);
    assert_eq!(get(&s, "/api/v1/backup", "wrong").await.0, 401);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.gz");
    let out = admin_cli(&s, &["backup", "--out", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", all_output(&out));
    let again = admin_cli(&s, &["backup", "--out", file.to_str().unwrap()]).await;
    assert!(!again.status.success() && all_output(&again).contains("exists: name a new file"));

    let holds = dir.path().join("holds");
    std::fs::create_dir(&holds).unwrap();
    std::fs::write(holds.join("notes.txt"), "mine").unwrap();
    let (ok, said) = offline(&["restore", "--from", file.to_str().unwrap()], &holds);
    assert!(
        !ok && said.contains("holds data (notes.txt…): restore only into a new or empty directory"),
        "{said}"
    );
    assert_eq!(std::fs::read_dir(&holds).unwrap().count(), 1);
    // The running server's own dir is refused the same way.
    let (ok, said) = offline(&["restore", "--from", file.to_str().unwrap()], s.dir.path());
    assert!(!ok && said.contains("holds data"), "{said}");
}

/// `hydraexperiencelibrary ARGS…`, run to the end off the runtime (the library under
/// test serves on it): whether it succeeded, and its output.
async fn library_cli(args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(library_bin());
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    (out.status.success(), all_output(&out))
}

#[tokio::test]
async fn the_library_backs_up_while_serving_and_restores_to_the_same_digest() {
    let lib = spawn_library(|_| {}).await;
    for id in ["e1", "e2", "e3"] {
        let body = json!({"id": id, "project": "p", "district": "d1", "venues": ["v1"]});
        let (status, v) = post(&lib, "/api/v1/experiences", ADMIN, body).await;
        assert_eq!(status, 201, "{v}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("library.gz");
    let path = file.to_str().unwrap();
    let (ok, said) = library_cli(&["backup", "--out", path, "--server", &lib.url, "--token", ADMIN]).await;
    assert!(ok, "{said}");
    let (seq, digest) = seq_and_digest(&said);
    let (_, live): (u16, Value) = get(&lib, "/api/v1/audit/digest", ADMIN).await;
    assert_eq!((seq, digest.as_str()), (live["seq"].as_u64().unwrap(), live["digest"].as_str().unwrap()));

    let restored = dir.path().join("restored");
    let data = restored.to_str().unwrap();
    let (ok, said) = library_cli(&["restore", "--from", path, "--data", data]).await;
    assert!(ok, "{said}");
    let (ok, audited) = library_cli(&["audit", "--data", data]).await;
    assert!(ok, "{audited}");
    assert!(audited.contains("experiences: 3"), "{audited}");
    assert_eq!(seq_and_digest(&audited), (seq, digest));
    // Not into a dir that holds data, and not with the other program.
    let (ok, said) = library_cli(&["restore", "--from", path, "--data", data]).await;
    assert!(!ok && said.contains("holds data"), "{said}");
    let elsewhere = dir.path().join("cluster");
    let (ok, said) = offline(&["restore", "--from", path], &elsewhere);
    assert!(!ok && said.contains("a backup of hydraexperiencelibrary, not of hydracluster"), "{said}");
    assert!(!Path::new(&elsewhere).exists());
}
