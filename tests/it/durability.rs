//! End to end with a real `hydracluster` process: kill -9 while mutations are in
//! flight, restart on the same data, and every acknowledged mutation is there; the
//! offline audit agrees with the live digest; a damaged log is refused, not repaired.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn audit(data: &Path) -> (bool, String) {
    offline(&["audit", "--json"], data)
}

async fn live_digest(s: &impl Service) -> Value {
    get(s, "/api/v1/audit/digest", ADMIN).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_mutation_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path());
    // (node id, token) of every acknowledged enrollment.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();

    // Eight writers enroll machines as fast as they can; we record what was acknowledged.
    let mut writers = Vec::new();
    for w in 0..8 {
        let (Endpoint { http, url }, acked) = (server.endpoint(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let resp = http
                    .post(format!("{url}/enroll"))
                    .json(&json!({"name": format!("w{w}-{i}"), "ip": "10.1.0.1"}))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 201 => {
                        let body: Value = match r.json().await {
                            Ok(b) => b,
                            Err(_) => return,
                        };
                        let (id, token) = (body["node_id"].as_str(), body["token"].as_str());
                        acked.lock().unwrap().push((id.unwrap().to_owned(), token.unwrap().to_owned()));
                    }
                    _ => return,
                }
            }
        }));
    }
    let enough = eventually(Duration::from_secs(60), || async { acked.lock().unwrap().len() >= 300 }).await;
    assert!(enough, "writers made progress");
    server.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();

    let mut server = ServerProcess::start(dir.path());
    let (status, nodes) = get(&server, "/api/v1/nodes", ADMIN).await;
    assert_eq!(status, 200);
    let present: std::collections::HashSet<&str> =
        nodes.as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    let lost: Vec<&String> =
        acked.iter().map(|(id, _)| id).filter(|id| !present.contains(id.as_str())).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged enrollments lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );

    // Their tokens too: a token is made durable with the event that hands it out.
    for (id, token) in &acked {
        let (status, answer) = heartbeat(&server, token, json!({})).await;
        assert_ne!(status, 401, "the token of acknowledged node {id} was lost: {answer}");
    }

    // The restarted server keeps appending on the same chain, and the offline audit
    // of the whole log arrives at the live digest.
    enroll(&server, "after-restart").await;
    let live = live_digest(&server).await;
    server.terminate();
    let (ok, out) = audit(dir.path());
    assert!(ok, "audit failed: {out}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["digest"], live["digest"]);
    assert_eq!(report["seq"], live["seq"]);
}

#[tokio::test]
async fn the_offline_replay_equals_the_live_state_and_as_of_queries_show_the_past() {
    let mut s = spawn_app().await;
    let (a, token) = enroll(&s, "body-a").await;
    let t_after_enroll = hydra_core::ledger::now_ms();
    clock_passes(t_after_enroll).await;
    approve_at(&s, &a, &["hydrabody"], "n", "v").await;
    heartbeat(&s, &token, json!({"provider_status": "running"})).await;
    let (b, _) = enroll(&s, "body-b").await;

    let (_, then) = get(&s, "/api/v1/nodes?as_of_seq=1", ADMIN).await;
    let then = then.as_array().unwrap();
    assert_eq!(then.len(), 1);
    assert_eq!(then[0]["id"], a.as_str());
    assert_eq!(then[0]["status"], "pending");
    let as_of =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(t_after_enroll));
    let (status, then) = get(&s, &format!("/api/v1/nodes?as_of={as_of}"), ADMIN).await;
    assert_eq!(status, 200, "{then}");
    assert_eq!(then.as_array().unwrap().len(), 1);
    assert_eq!(then[0]["status"], "pending");
    let (_, now) = get(&s, "/api/v1/nodes", ADMIN).await;
    assert_eq!(now.as_array().unwrap().len(), 2);
    assert!(now.as_array().unwrap().iter().any(|n| n["id"] == b.as_str()));
    let (status, _) = get(&s, "/api/v1/nodes?as_of=yesterday", ADMIN).await;
    assert_eq!(status, 400);

    let live = live_digest(&s).await;
    s.stop().await;
    let (ok, out) = audit(s.dir.path());
    assert!(ok, "{out}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["digest"], live["digest"]);

    // Restart: the views come back from the snapshot and the log, equal to before.
    s.restart().await;
    assert_eq!(live_digest(&s).await, live);
}

#[tokio::test]
async fn snapshots_make_start_up_resume_from_the_middle_of_the_log() {
    let mut s = spawn_app_with(|c| c.snapshot_every = 5).await;
    for i in 0..12 {
        enroll(&s, &format!("b{i}")).await;
    }
    let live = live_digest(&s).await;
    s.stop().await;
    {
        let store = hydra_core::store::Store::open(s.dir.path()).unwrap();
        let snaps: Vec<u64> = store.snapshots_newest_first().map(|r| r.unwrap().0).collect();
        assert!(!snaps.is_empty() && snaps[0] >= 10, "snapshots were written: {snaps:?}");
    }
    s.restart().await;
    assert_eq!(live_digest(&s).await, live);
}

#[tokio::test]
async fn an_altered_event_is_detected_at_start_up_and_by_the_audit() {
    // Killed: no final snapshot, so start-up replays (and checks) the whole log.
    let (_dir, data) = data_with_enrollments(6, ServerProcess::kill9).await;
    {
        // Rewrite event 3 as if someone edited it: it still decodes, but the chain breaks at 4.
        rewrite_log(&data, |seq, bytes, node| {
            let mut env = hydra_events::decode(&bytes).unwrap();
            if seq == 3 {
                env.cause = "admin:mallory".into();
            }
            Some((hydra_events::encode(&env), node))
        });
    }
    let (ok, out) = audit(&data);
    assert!(!ok);
    assert!(out.contains("hash chain broken at seq 4"), "{out}");
    let err = hydra::cluster::server::start(test_config(&data))
        .await
        .err()
        .expect("start-up refuses a damaged log");
    assert!(format!("{err:#}").contains("seq 4"), "{err:#}");
}

#[tokio::test]
async fn a_log_that_lost_acknowledged_events_is_refused() {
    let mut s = spawn_app().await;
    for i in 0..6 {
        enroll(&s, &format!("b{i}")).await;
    }
    s.stop().await; // writes the watermark: 6 acknowledged
    rewrite_log(s.dir.path(), |seq, bytes, node| (seq < 5).then_some((bytes, node)));
    let (ok, out) = audit(s.dir.path());
    assert!(!ok);
    assert!(out.contains("ends at seq 4") && out.contains("up to seq 6"), "{out}");
    let err = hydra::cluster::server::start(test_config(s.dir.path())).await.err().expect("refused");
    // The snapshot written at stop covers seq 6: start-up sees the log is short of it.
    assert!(format!("{err:#}").contains("log ends at seq 4"), "{err:#}");

    // A garbage record is named by its sequence number too.
    std::fs::write(s.dir.path().join("watermark"), "4").unwrap();
    rewrite_log(s.dir.path(), |seq, bytes, node| match seq {
        2 => Some((b"\x01garbage".to_vec(), node)),
        _ => Some((bytes, node)),
    });
    let (ok, out) = audit(s.dir.path());
    assert!(!ok);
    assert!(out.contains("event 2 does not decode"), "{out}");
}

#[tokio::test]
async fn a_write_torn_by_a_power_cut_is_cut_off_at_start_and_the_log_goes_on() {
    let (_dir, data) = data_with_enrollments(6, ServerProcess::terminate).await;
    // Half of event 7's record after the last whole one: what a power cut in the middle
    // of a write leaves. It was never acknowledged (the watermark says 6).
    let segment = data.join("events").join("00000000000000000001.seg");
    let whole = std::fs::metadata(&segment).unwrap().len();
    let torn = hydra_core::store::encode_record(7, None, b"\x02 an event that never finished");
    let mut file = std::fs::OpenOptions::new().append(true).open(&segment).unwrap();
    std::io::Write::write_all(&mut file, &torn[..torn.len() / 2]).unwrap();
    drop(file);

    let mut server = ServerProcess::start(&data);
    let (events, head) = event_log(&server, "").await;
    assert_eq!((events.len(), head), (6, 6), "every acknowledged event, nothing else");
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), whole, "the torn bytes are gone");
    enroll(&server, "after-the-cut").await;
    server.terminate();
    let (ok, out) = audit(&data);
    assert!(ok, "{out}");
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["seq"], 7);
}
