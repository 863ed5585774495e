//! End to end: the SSE stream with a real SSE client. Catch-up then live, resume
//! with Last-Event-ID with every event exactly once, filters, keep-alives, and a
//! subscriber that falls behind the live buffer and still misses nothing.

use crate::common::*;
use eventsource_client::{self as es, Client as _};
use futures_util::StreamExt;
use hydra_core::ledger::Decision;
use hydra_events::{Event, NodeId};
use std::time::Duration;

fn sse_client(url: &str, token: &str, last_event_id: Option<u64>) -> impl es::Client {
    let mut b = es::ClientBuilder::for_url(url)
        .unwrap()
        .header("Authorization", &format!("Bearer {token}"))
        .unwrap()
        .reconnect(es::ReconnectOptions::reconnect(false).build());
    if let Some(id) = last_event_id {
        b = b.last_event_id(id.to_string());
    }
    b.build()
}

/// Reads events until `n` have arrived; returns (id, type, data) of each.
async fn take_events(
    stream: &mut (impl futures_util::Stream<Item = es::Result<es::SSE>> + Unpin),
    n: usize,
) -> Vec<(u64, String, serde_json::Value)> {
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(20), stream.next()).await.expect("events arrive");
        match next.expect("stream open").expect("no stream error") {
            es::SSE::Event(e) => {
                let id = e.id.as_deref().unwrap().parse().unwrap();
                out.push((id, e.event_type.clone(), serde_json::from_str(&e.data).unwrap()));
            }
            es::SSE::Comment(_) | es::SSE::Connected(_) => {}
        }
    }
    out
}

#[tokio::test]
async fn a_subscriber_that_disconnects_resumes_and_gets_every_event_exactly_once() {
    let s = spawn_app().await;
    for i in 0..5 {
        enroll(&s, &format!("body-{i}")).await;
    }
    let url = format!("{}/api/v1/events", s.url);
    let client = sse_client(&url, ADMIN, None);
    let mut stream = client.stream();
    let mut seen = take_events(&mut stream, 3).await;
    // Live: events made while connected arrive too.
    for i in 5..8 {
        enroll(&s, &format!("body-{i}")).await;
    }
    seen.extend(take_events(&mut stream, 5).await);
    drop(stream);
    drop(client);
    let last = seen.last().unwrap().0;

    // Meanwhile, more happens.
    for i in 8..12 {
        enroll(&s, &format!("body-{i}")).await;
    }
    let client = sse_client(&url, ADMIN, Some(last));
    let mut stream = client.stream();
    seen.extend(take_events(&mut stream, 4).await);

    let ids: Vec<u64> = seen.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=12).collect::<Vec<u64>>(), "every event exactly once, in order");
    let (id, ty, data) = &seen[0];
    assert_eq!((*id, ty.as_str()), (1, "node.enrolled"));
    assert_eq!(data["seq"], 1);
    assert_eq!(data["type"], "node.enrolled");
    assert!(data["data"]["node_id"].as_str().unwrap().starts_with("node-"));
    assert!(data["at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn filters_select_by_type_prefix_and_by_node() {
    let s = spawn_app().await;
    let (a, token_a) = approved_body(&s, "body-a").await;
    let (_b, token_b) = approved_body(&s, "body-b").await;
    heartbeat(&s, &token_a, serde_json::json!({"provider_status": "running"})).await;
    heartbeat(&s, &token_b, serde_json::json!({"provider_status": "running"})).await;

    let url = format!("{}/api/v1/events?since=0&types=node.online,node.provider*&node={a}", s.url);
    let client = sse_client(&url, OBSERVER, None);
    let mut stream = client.stream();
    let got = take_events(&mut stream, 2).await;
    let types: Vec<&str> = got.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(types, ["node.online", "node.provider_changed"]);
    assert!(got.iter().all(|e| e.2["data"]["node_id"] == a.as_str()));

    // A bad filter is a clear 400.
    let (status, body) = get(&s, "/api/v1/events?types=Node.<x>", ADMIN).await;
    assert_eq!(status, 400, "{body}");
    // A node token may not watch the fleet.
    let (status, _) = get(&s, "/api/v1/events", &token_a).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_subscriber_behind_the_live_buffer_reads_the_log_and_misses_nothing() {
    let s = spawn_app_with(|c| c.broadcast_capacity = 16).await;
    let url = format!("{}/api/v1/events", s.url);
    let client = sse_client(&url, ADMIN, None);
    let mut stream = client.stream();
    // Connected and live before the burst.
    enroll(&s, "first").await;
    take_events(&mut stream, 1).await;

    // One command of 5,000 events: the writer publishes them far faster than one
    // subscriber can format and send them, so it falls behind a 16-slot buffer.
    let node = NodeId::parse("node-burst").unwrap();
    s.ledger()
        .submit("test:burst", move |_| {
            Ok(Decision::events((0..5000).map(|_| Event::NodeOnline { node_id: node.clone() }).collect()))
        })
        .await
        .unwrap();
    let got = take_events(&mut stream, 5000).await;
    let ids: Vec<u64> = got.iter().map(|e| e.0).collect();
    assert_eq!(ids, (2..=5001).collect::<Vec<u64>>());
    let (_, ready) = get(&s, "/readyz", ADMIN).await;
    assert!(
        ready["components"]["sse"]["lag_recoveries"].as_u64().unwrap() >= 1,
        "the subscriber must have gone through the lag path: {ready}"
    );
}

#[tokio::test]
async fn idle_streams_get_keep_alive_comments_and_resume_headers() {
    let s = spawn_app_with(|c| c.sse_keepalive = Duration::from_millis(100)).await;
    enroll(&s, "b").await;
    let resp = resume_events(&s, "/api/v1/events?since=0", "1").await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-hydra-resumed-from"], "1", "Last-Event-ID wins over ?since=");
    let text = read_until(resp, |t| t.contains(": keep-alive\n")).await;
    assert!(!text.contains("id: 1\n"), "event 1 was before the resume point");

    assert_eq!(resume_events(&s, "/api/v1/events", "abc").await.status(), 400);
}

#[tokio::test]
async fn the_json_log_pages_through_every_event() {
    let s = spawn_app().await;
    for i in 0..7 {
        enroll(&s, &format!("b{i}")).await;
    }
    let mut since = 0;
    let mut seqs = Vec::new();
    loop {
        let (_, page) = get(&s, &format!("/api/v1/events/log?since={since}&limit=3"), ADMIN).await;
        seqs.extend(page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()));
        since = page["next_since"].as_u64().unwrap();
        if since == page["head"].as_u64().unwrap() {
            break;
        }
    }
    assert_eq!(seqs, (1..=7).collect::<Vec<u64>>());
}
