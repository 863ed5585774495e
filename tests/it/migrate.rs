//! `migrate` and the layout checks of `serve`: a data dir from an older Hydra is refused
//! with the command to run, migrated (twice is harmless, a migration cut short is
//! finished), then served with the digest it had; one from a newer Hydra is refused.

use crate::common::*;
use crate::formats::log_records;
use hydra_core::store::{Record, Store};

/// A data dir as a pre-release Hydra left it: the log that schema 1 wrote in sled's
/// `events` tree (keyed by BE seq), with no layout record and no per-node index
/// (layout 0).
fn old_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("log")).unwrap();
    let events = db.open_tree("events").unwrap();
    for (i, bytes) in log_records("cluster-log-v1.bin").iter().enumerate() {
        events.insert((i as u64 + 1).to_be_bytes(), bytes.as_slice()).unwrap();
    }
    db.flush().unwrap();
    dir
}

fn with_store(dir: &std::path::Path, change: impl FnOnce(&Store)) {
    let store = Store::open_any_layout(dir).unwrap();
    change(&store);
    store.flush().unwrap();
}

/// Why the server refused to start on `dir`.
async fn refusal(dir: &std::path::Path) -> String {
    match hydra::cluster::server::start(test_config(dir)).await {
        Ok(_) => panic!("the server started on a data dir it should refuse"),
        Err(e) => format!("{e:#}"),
    }
}

/// Index entries in the data dir (the server stopped).
fn index_entries(dir: &std::path::Path) -> usize {
    Store::open_any_layout(dir).unwrap().index_entries().unwrap().len()
}

/// The server on a migrated dir has the old log's digest and the owner it recorded.
async fn served_as_before(dir: tempfile::TempDir) {
    let mut s = serve_dir(dir, |_| {}).await.expect("the migrated dir is served");
    let (_, d) = get(&s, "/api/v1/audit/digest", ADMIN).await;
    assert_eq!(
        format!("{} {}\n", d["seq"], d["digest"].as_str().unwrap()),
        crate::formats::log_digest("cluster-log-v1")
    );
    let (_, nodes) = get(&s, "/api/v1/nodes", ADMIN).await;
    let body = nodes.as_array().unwrap().iter().find(|n| n["name"] == "render-01").expect("the body");
    assert_eq!(body["owner"], "ops", "{body}");
    let (status, history) =
        get(&s, &format!("/api/v1/nodes/{}/history", body["id"].as_str().unwrap()), ADMIN).await;
    assert_eq!(status, 200);
    let history = history["events"].as_array().or(history.as_array()).cloned().unwrap_or_default();
    assert!(history.len() >= 8, "the rebuilt index finds the node's events: {history:?}");
    s.stop().await;
}

#[tokio::test]
async fn an_old_data_dir_is_refused_then_migrated_once_and_served_with_its_digest() {
    let dir = old_data_dir();
    let refused = refusal(dir.path()).await;
    assert!(refused.contains("layout version 0, older than this build serves"), "{refused}");
    assert!(refused.contains(&format!("hydracluster migrate --data {}", dir.path().display())), "{refused}");

    // Nor can its log be audited or backed up here: both name the migration too.
    let out_file = dir.path().join("backup.bin").to_string_lossy().into_owned();
    for command in [&["audit"][..], &["backup", "--out", &out_file]] {
        let (ok, out) = offline(command, dir.path());
        assert!(!ok && out.contains("layout version 0, older than this build serves (3)"), "{out}");
        assert!(out.contains(&format!("hydracluster migrate --data {}", dir.path().display())), "{out}");
    }
    assert_eq!(index_entries(dir.path()), 0);
    let (ok, out) = offline(&["migrate"], dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("layout 0 -> 1: record the layout version"), "{out}");
    assert!(
        out.contains("layout 1 -> 2: move command outputs out of the log's file into a file each"),
        "{out}"
    );
    assert!(out.contains("layout 2 -> 3: move the events out of sled into segment files"), "{out}");
    assert!(out.contains("sled's directory rewritten without the events: "), "{out}");
    // Every event about a node (all 17 here) has its index entry, and sled holds none.
    assert_eq!(index_entries(dir.path()), 17);
    assert!(!Store::open(dir.path()).unwrap().holds_legacy_events().unwrap());
    let (ok, again) = offline(&["migrate"], dir.path());
    assert!(ok, "{again}");
    assert!(again.contains("layout 3 is current, nothing to do"), "{again}");
    served_as_before(dir).await;
}

#[tokio::test]
async fn a_migration_cut_short_is_refused_by_serve_and_finished_by_migrate() {
    let dir = old_data_dir();
    // A crash after the step began: the marker is written, the layout is not.
    with_store(dir.path(), |s| s.set_migrating(Some(1)).unwrap());
    let refused = refusal(dir.path()).await;
    assert!(refused.contains("migration of the data dir to layout version 1 was interrupted"), "{refused}");
    assert!(refused.contains("hydracluster migrate --data"), "{refused}");

    let (ok, out) = offline(&["migrate"], dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("found a migration to layout 1 that was cut short: finishing it"), "{out}");
    assert!(out.contains("migrated"), "{out}");
    served_as_before(dir).await;
}

#[tokio::test]
async fn a_move_to_segments_cut_short_is_finished_from_where_it_stopped() {
    let dir = old_data_dir();
    let (ok, out) = offline(&["migrate"], dir.path());
    assert!(ok, "{out}");
    // Back to layout 2 half-way through its last step: sled has every event, the
    // segments the first 10, and the marker says a move to layout 3 began.
    let records = log_records("cluster-log-v1.bin");
    std::fs::remove_dir_all(dir.path().join("events")).unwrap();
    {
        let db = sled::open(dir.path().join("log")).unwrap();
        let events = db.open_tree("events").unwrap();
        for (i, bytes) in records.iter().enumerate() {
            events.insert((i as u64 + 1).to_be_bytes(), bytes.as_slice()).unwrap();
        }
        db.flush().unwrap();
    }
    with_store(dir.path(), |s| {
        s.set_layout_version(2).unwrap();
        s.set_migrating(Some(3)).unwrap();
        for (i, bytes) in records.iter().take(10).enumerate() {
            let event = hydra_events::decode(bytes).unwrap().event;
            s.append(&[Record { seq: i as u64 + 1, bytes, node_id: event.node_id() }], &[]).unwrap();
        }
    });
    let refused = refusal(dir.path()).await;
    assert!(refused.contains("migration of the data dir to layout version 3 was interrupted"), "{refused}");

    let (ok, out) = offline(&["migrate"], dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("found a migration to layout 3 that was cut short: finishing it"), "{out}");
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.last_seq().unwrap(), records.len() as u64, "each event once, in order");
    drop(store);
    served_as_before(dir).await;
}

#[tokio::test]
async fn a_data_dir_from_a_newer_build_is_refused_by_serve_and_by_migrate() {
    let dir = old_data_dir();
    with_store(dir.path(), |s| s.set_layout_version(99).unwrap());
    let (ok, out) = offline(&["migrate"], dir.path());
    assert!(!ok, "{out}");
    assert!(out.contains("layout version 99, newer than this build knows (3): upgrade Hydra"), "{out}");
    let refused = refusal(dir.path()).await;
    assert!(refused.contains("newer than this build knows"), "{refused}");
}

#[tokio::test]
async fn migrate_and_audit_leave_a_served_data_dir_alone() {
    let mut s = spawn_app().await;
    for command in ["migrate", "audit"] {
        let (ok, out) = offline(&[command], s.dir.path());
        assert!(!ok, "{command}: {out}");
        assert!(
            out.contains(&format!("a server is running on {}: stop it first", s.dir.path().display())),
            "{out}"
        );
    }
    s.stop().await;
}
