//! End to end: the production outage where an auth middleware held a lock across the
//! next handler (every POST hung while GETs still answered) cannot come back. Many
//! authenticated POSTs run while a storm of authenticated GETs hits the same server;
//! every POST must be answered, and readiness (`/readyz`) never flaps under the load.

use crate::common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_post_is_answered_during_a_storm_of_gets() {
    let s = Arc::new(spawn_app().await);
    let (id, node_token) = approved_body(&s, "body-1").await;
    let stop = Arc::new(AtomicBool::new(false));
    let gets = Arc::new(AtomicUsize::new(0));

    let mut storm = Vec::new();
    for i in 0..16 {
        let (s, stop, gets) = (s.clone(), stop.clone(), gets.clone());
        storm.push(tokio::spawn(async move {
            let paths = [
                "/api/v1/nodes",
                "/api/v1/events/log?limit=50",
                "/api/v1/audit/digest",
                "/api/v1/health",
                "/readyz",
            ];
            while !stop.load(Ordering::Relaxed) {
                let (status, _) =
                    get(&s, paths[i % paths.len()], if i % 2 == 0 { ADMIN } else { OBSERVER }).await;
                assert_eq!(status, 200, "{} under write load", paths[i % paths.len()]);
                gets.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // 400 POSTs of three kinds (admin commands, agent heartbeats, enrollments), 16 at a time.
    let answered = Arc::new(AtomicUsize::new(0));
    let mut posts = Vec::new();
    for w in 0..16 {
        let (s, id, node_token, answered) = (s.clone(), id.clone(), node_token.clone(), answered.clone());
        posts.push(tokio::spawn(async move {
            for i in 0..25 {
                let (status, body) = match (w + i) % 3 {
                    0 => {
                        post(&s, &format!("/api/v1/nodes/{id}/drain"), ADMIN, json!({"draining": i % 2 == 0}))
                            .await
                    }
                    1 => {
                        let stream = if i % 2 == 0 { "streaming" } else { "idle" };
                        heartbeat(&s, &node_token, json!({"stream_status": stream})).await
                    }
                    _ => try_enroll(&s, &format!("n{w}-{i}")).await,
                };
                assert!(status == 200 || status == 201, "{status} {body}");
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // A generous guard: a hang fails here instead of blocking CI forever.
    let all = tokio::time::timeout(Duration::from_secs(120), futures_util::future::join_all(posts)).await;
    stop.store(true, Ordering::Relaxed);
    for t in storm {
        t.await.unwrap();
    }
    assert!(
        all.is_ok(),
        "POSTs hung during the GET storm: {} of 400 answered",
        answered.load(Ordering::Relaxed)
    );
    for r in all.unwrap() {
        r.unwrap();
    }
    assert_eq!(answered.load(Ordering::Relaxed), 400);
    assert!(gets.load(Ordering::Relaxed) > 0);
}
