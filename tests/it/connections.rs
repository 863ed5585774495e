//! End to end: connections and memory under abuse (issue 9). A partial request header
//! and a silent socket are closed by the header-read timeout, an idle keep-alive
//! connection by the idle timeout while a quiet SSE stream and a long poll live on;
//! with the connection cap full of slowloris sockets, health checks and admins still
//! get answers; a resume point beyond the head is refused; a subscriber that leaves
//! in the middle of its catch-up is no longer counted.

use crate::common::*;
use futures_util::StreamExt;
use hydra_core::ledger::Decision;
use hydra_events::{Event, NodeId};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A hang guard only: every wait below ends on a marker long before it.
const LONG_GUARD: Duration = Duration::from_secs(60);

/// A client that opens a new connection per request, so that no call rides on a
/// kept-alive connection from before the cap was reached.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

/// The server through a client that opens a new connection per request.
fn fresh(s: &TestServer) -> Endpoint {
    Endpoint { url: s.url.clone(), http: fresh_client() }
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(sock: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(LONG_GUARD, sock.read(&mut buf))
            .await
            .expect("the server closes the connection")
        {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Opens a connection and sends the start of a request header that never ends.
async fn slowloris(url: &str) -> TcpStream {
    let mut sock = TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
    sock.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    sock
}

#[tokio::test]
async fn a_partial_header_and_a_silent_socket_are_closed_after_the_header_read_timeout() {
    let s = spawn_app_with(|c| {
        c.header_read_timeout = Duration::from_millis(300);
        c.idle_timeout = Duration::from_secs(3600);
    })
    .await;
    let mut partial = slowloris(&s.url).await;
    let mut silent = TcpStream::connect(s.url.trim_start_matches("http://")).await.unwrap();
    assert!(read_until_closed(&mut partial).await.is_empty(), "closed without an answer");
    assert!(read_until_closed(&mut silent).await.is_empty(), "closed without an answer");
    let ready = readyz(&fresh(&s)).await.1;
    assert!(ready["components"]["connections"]["timed_out"].as_u64().unwrap() >= 2, "{ready}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_while_a_quiet_stream_and_a_long_poll_live_on() {
    let mut s = spawn_app_with(|c| {
        c.header_read_timeout = Duration::from_secs(3600);
        c.idle_timeout = Duration::from_millis(300);
        c.sse_keepalive = Duration::from_secs(3600);
    })
    .await;
    let (node, token) = approved_body(&s, "b1").await;
    let head = s.ledger().committed_seq();

    // A stream that has nothing to say for longer than the idle timeout.
    let sse =
        s.http.get(format!("{}/api/v1/events?since={head}", s.url)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    // A long poll waiting for a command.
    let poll = spawn_get(&fresh(&s), "/api/v1/body/exec?wait=30", &token);

    // One request on a keep-alive connection, then silence: closed by the idle timeout.
    let mut idle = TcpStream::connect(s.url.trim_start_matches("http://")).await.unwrap();
    idle.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answered = String::from_utf8(read_until_closed(&mut idle).await).unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "answered, then closed: {answered}");
    assert!(!answered.to_ascii_lowercase().contains("connection: close"), "kept alive: {answered}");

    // Both older connections are still served.
    let (status, queued) =
        post(&s, &format!("/api/v1/nodes/{node}/exec"), ADMIN, json!({"command": "date"})).await;
    assert_eq!(status, 202, "{queued}");
    let (status, got) = tokio::time::timeout(LONG_GUARD, poll).await.unwrap().unwrap();
    assert_eq!((status, got["command"].as_str()), (200, Some("date")), "{got}");
    read_until(sse, |t| t.contains("event: exec.queued")).await;
    let ready = readyz(&fresh(&s)).await.1;
    assert!(ready["components"]["connections"]["timed_out"].as_u64().unwrap() >= 1, "{ready}");
    s.stop().await;
}

#[tokio::test]
async fn health_and_admin_calls_answer_while_the_connection_cap_is_full() {
    let s = spawn_app_with(|c| {
        c.max_connections = 20;
        c.header_read_timeout = Duration::from_secs(3600);
        c.idle_timeout = Duration::from_secs(3600);
    })
    .await;
    let http = fresh(&s);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(slowloris(&s.url).await);
    }
    // Wait until a health check is served over the cap (the slowloris sockets are
    // accepted in the background).
    let ready = tokio::time::timeout(LONG_GUARD, async {
        loop {
            let ready = readyz(&http).await.1;
            if ready["components"]["connections"]["over_limit"].as_u64() >= Some(1) {
                return ready;
            }
        }
    })
    .await
    .expect("a health check is served over the cap");
    let conns = &ready["components"]["connections"];
    assert_eq!(conns["limit"], 20, "{ready}");
    assert!(conns["current"].as_u64().unwrap() > 20, "{ready}");

    let (status, health) = request(&http, reqwest::Method::GET, "/api/v1/health", None, None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")), "{health}");
    let (status, listed) = get(&http, "/api/v1/nodes", ADMIN).await;
    assert_eq!(status, 200, "an admin is served over the cap: {listed}");
    // Anyone else is told why, at once.
    let (status, refused) = get(&http, "/api/v1/nodes", OBSERVER).await;
    assert_eq!(status, 503, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("connection limit (20)"), "{refused}");

    // Reserve full as well: new connections are closed at once, counted as refused.
    // (Reserve connections get a short header-read timeout, so each try refills it.)
    let reserve = conns["reserve"].as_u64().unwrap();
    let mut spare = Vec::new();
    tokio::time::timeout(LONG_GUARD, async {
        loop {
            for _ in 0..reserve {
                spare.push(slowloris(&s.url).await);
            }
            let mut probe = TcpStream::connect(s.url.trim_start_matches("http://")).await.unwrap();
            let _ = probe.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").await;
            if read_until_closed(&mut probe).await.is_empty() {
                return;
            }
        }
    })
    .await
    .expect("a connection over cap and reserve is closed unanswered");

    // Slots come back as the sockets go.
    drop(spare);
    drop(held);
    let ready = tokio::time::timeout(LONG_GUARD, async {
        loop {
            if get(&http, "/api/v1/nodes", OBSERVER).await.0 == 200 {
                return readyz(&http).await.1;
            }
        }
    })
    .await
    .expect("served normally once the sockets are gone");
    assert!(ready["components"]["connections"]["refused"].as_u64().unwrap() >= 1, "{ready}");
}

#[tokio::test]
async fn a_resume_point_beyond_the_head_is_refused() {
    let s = spawn_app().await;
    enroll(&s, "b").await;
    let head = s.ledger().committed_seq();
    let resp = resume_events(&s, "/api/v1/events", "999").await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("999") && message.contains(&format!("({head})")), "{message}");
    let (status, body) = get(&s, "/api/v1/events?since=999", ADMIN).await;
    assert_eq!(status, 400, "{body}");
    // The head itself is a fine place to resume from.
    assert_eq!(resume_events(&s, "/api/v1/events", &head.to_string()).await.status(), 200);
}

#[tokio::test]
async fn a_subscriber_that_leaves_in_the_middle_of_its_catch_up_is_no_longer_counted() {
    let s = spawn_app().await;
    let node = NodeId::parse("node-many").unwrap();
    for _ in 0..4 {
        let node = node.clone();
        s.ledger()
            .submit("test:fill", move |_| {
                Ok(Decision::events((0..5000).map(|_| Event::NodeOnline { node_id: node.clone() }).collect()))
            })
            .await
            .unwrap();
    }
    let http = fresh(&s);
    let resp = http.http.get(format!("{}/api/v1/events", s.url)).bearer_auth(ADMIN).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("id: 100\n") {
        let chunk =
            tokio::time::timeout(LONG_GUARD, body.next()).await.unwrap().expect("stream open").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(sse_subscribers(&http).await, 1);
    // Gone with 20,000 events not yet read.
    drop(body);
    let gone = eventually(LONG_GUARD, || async { sse_subscribers(&http).await == 0 });
    assert!(gone.await, "the subscriber count goes back to 0");
}
