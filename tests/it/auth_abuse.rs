//! End to end: abuse of authentication and of what a token may see — failed tokens
//! throttled per address (and logged once per burst), a rejected node's token staying
//! dead, observers never reading command text or output, and input that used to wrap
//! (an exec timeout, an event-log `since`).

use crate::common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything the server logs while the guard lives (the tests run on a current-thread
/// runtime, so the handlers log on this thread).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || me.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A client whose connections come from `ip` (another loopback address).
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::V4(ip)).build().unwrap()
}

async fn status_of(http: &reqwest::Client, url: &str, token: &str) -> reqwest::Response {
    http.get(url).bearer_auth(token).send().await.unwrap()
}

#[tokio::test]
async fn a_burst_of_wrong_tokens_is_throttled_per_address_and_logged_once() {
    let log = Captured::default();
    let _guard = log.install();
    let s = spawn_app_with(|c| {
        c.auth_fail_burst = 5;
        c.auth_fail_window = Duration::from_secs(600);
    })
    .await;
    let nodes = format!("{}/api/v1/nodes", s.url);
    let wrong = "hya_wrong-guess-0123456789";
    for _ in 0..5 {
        assert_eq!(status_of(&s.http, &nodes, wrong).await.status(), 401);
    }
    // The burst is used up: 429 with Retry-After, even for the right token.
    let r = status_of(&s.http, &nodes, wrong).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry), "Retry-After {retry}");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("too many failed authentications"), "{body}");
    assert_eq!(status_of(&s.http, &nodes, ADMIN).await.status(), 429);
    // Every token-checked extractor: reader, node caller, fleet.
    assert_eq!(get(&s, "/api/v1/events/log", OBSERVER).await.0, 429);
    assert_eq!(heartbeat(&s, "hyn_nope", json!({})).await.0, 429);
    assert_eq!(request(&s, Method::POST, "/api/v1/heads", Some("x"), None).await.0, 429);
    // Public routes stay public.
    assert_eq!(request(&s, Method::GET, "/api/v1/health", None, None).await.0, 200);

    // Another address is not blocked by this one's failures, and has its own burst.
    let other = client_from(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(status_of(&other, &nodes, ADMIN).await.status(), 200);
    assert_eq!(status_of(&other, &nodes, wrong).await.status(), 401);
    assert_eq!(status_of(&other, &nodes, ADMIN).await.status(), 200);

    let text = log.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("failed authentications")).collect();
    assert_eq!(lines.len(), 1, "one line per burst: {text}");
    assert!(lines[0].contains("WARN") && lines[0].contains("127.0.0.1") && lines[0].contains("failures=5"));
    assert!(!text.contains(wrong) && !text.contains(ADMIN), "no token in the log");
}

#[tokio::test]
async fn the_experience_library_throttles_failed_tokens_too() {
    let mut lib = crate::common::library::spawn_library(|c| c.auth_fail_burst = 3).await;
    let url = format!("{}/api/v1/experiences", lib.url);
    for _ in 0..3 {
        assert_eq!(status_of(&lib.http, &url, "wrong").await.status(), 401);
    }
    let r = status_of(&lib.http, &url, ADMIN).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    lib.stop().await;
}

#[tokio::test]
async fn a_rejected_node_stays_out_until_it_enrolls_again() {
    let (s, id, token) = app_with_body(|_| {}).await;
    assert_eq!(heartbeat(&s, &token, json!({})).await.0, 200);
    let (status, body) = post(&s, &format!("/api/v1/nodes/{id}/reject"), ADMIN, json!({})).await;
    assert_eq!(status, 200, "{body}");
    // The token was revoked with the rejection: it is no token at all now.
    assert_eq!(heartbeat(&s, &token, json!({})).await.0, 401);
    let approve = json!({"roles": ["hydrabody"], "district": "north", "venue": "arena"});
    let (status, body) = post(&s, &format!("/api/v1/nodes/{id}/approve"), ADMIN, approve.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("rejected nodes must enroll again"), "{body}");
    assert_eq!(heartbeat(&s, &token, json!({})).await.0, 401, "the old token stays dead");
    let (_, history) = get(&s, &format!("/api/v1/nodes/{id}/history"), ADMIN).await;
    let types = types(history["events"].as_array().unwrap());
    assert_eq!(types.last(), Some(&"node.rejected"), "{types:?}");
    assert_eq!(types.iter().filter(|t| **t == "node.approved").count(), 1);
    // A pending node that is rejected cannot be approved either.
    let (pending, pending_token) = enroll(&s, "body-2").await;
    post(&s, &format!("/api/v1/nodes/{pending}/reject"), ADMIN, json!({})).await;
    assert_eq!(post(&s, &format!("/api/v1/nodes/{pending}/approve"), ADMIN, approve).await.0, 409);
    assert_eq!(heartbeat(&s, &pending_token, json!({})).await.0, 401);
}

/// Queues `command` on the node and plays the agent: fetch it, report `stdout`.
async fn run_command(s: &TestServer, node: &str, token: &str, command: &str, stdout: &str) -> String {
    let (status, queued) =
        post(s, &format!("/api/v1/nodes/{node}/exec"), ADMIN, json!({"command": command})).await;
    assert_eq!(status, 202, "{queued}");
    let exec = queued["id"].as_str().unwrap().to_owned();
    assert_eq!(get(s, "/api/v1/body/exec?wait=5", token).await.0, 200);
    let report = json!({"id": exec, "exit_code": 0, "stdout": stdout, "stderr": "", "duration_ms": 5});
    assert_eq!(post(s, "/api/v1/body/exec/result", token, report).await.0, 200);
    exec
}

/// Reads the event stream from the start until the command's end.
async fn until_completed(s: &impl Service, token: &str) -> String {
    sse_until(s, "/api/v1/events?since=0", token, |t| t.contains("event: exec.completed")).await
}

#[tokio::test]
async fn observers_see_what_happened_to_commands_but_never_their_text_or_output() {
    // The command prints `printed-marker`, which no event stream may carry, for any
    // audience; its text carries `hunter2`, which only admins may read.
    let (s, node, token) = app_with_body(|_| {}).await;
    heartbeat(&s, &token, json!({})).await;
    // A live observer, subscribed before the command exists.
    let live = {
        let s = s.endpoint();
        tokio::spawn(async move {
            sse_until(&s, "/api/v1/events", OBSERVER, |t| t.contains("event: exec.completed")).await
        })
    };
    // The live subscriber is counted once its stream runs.
    assert!(eventually(GUARD, || async { sse_subscribers(&s).await >= 1 }).await);
    let exec =
        run_command(&s, &node, &token, "export db_password=hunter2; deploy", "printed-marker:....\n").await;

    let (_, log) = get(&s, "/api/v1/events/log?types=exec.*", OBSERVER).await;
    let text = log.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    let events = log["events"].as_array().unwrap();
    let queued = events.iter().find(|e| e["type"] == "exec.queued").unwrap();
    assert_eq!(queued["data"]["exec_id"], exec.as_str());
    assert_eq!(queued["data"]["command_bytes"], 34);
    assert!(queued["data"].get("command").is_none());
    let completed = events.iter().find(|e| e["type"] == "exec.completed").unwrap();
    assert_eq!(completed["data"]["node_id"], node.as_str());
    assert_eq!(completed["data"]["output"]["exit_code"], 0);
    assert_eq!(completed["data"]["output"]["stdout_bytes"], 20);
    assert!(completed["data"]["output"].get("stdout").is_none());

    // The admin sees the command text, in the log and the stream, and the sizes of
    // what it printed, never the output itself: only the result endpoint has that.
    let (_, admin_log) = get(&s, "/api/v1/events/log?types=exec.*", ADMIN).await;
    let admin_text = admin_log.to_string();
    assert!(admin_text.contains("hunter2") && !admin_text.contains("printed-marker"), "{admin_text}");
    assert!(admin_text.contains("\"stdout_bytes\":20"), "{admin_text}");
    let admin_sse = until_completed(&s, ADMIN).await;
    assert!(
        admin_sse.contains("db_password=hunter2") && !admin_sse.contains("printed-marker"),
        "{admin_sse}"
    );
    assert!(admin_sse.contains("\"stdout_bytes\":20"), "{admin_sse}");
    let (_, admin_history) = get(&s, &format!("/api/v1/nodes/{node}/history"), ADMIN).await;
    assert!(!admin_history.to_string().contains("printed-marker"));
    let (status, result) = get(&s, &format!("/api/v1/nodes/{node}/exec/{exec}/result"), ADMIN).await;
    assert_eq!((status, result["stdout"].as_str()), (200, Some("printed-marker:....\n")), "{result}");

    // SSE for the observer: live, and caught up from the log; and the node history.
    let live = live.await.unwrap();
    assert!(!live.contains("hunter2") && live.contains("\"stdout_bytes\":20"), "{live}");
    assert!(!live.contains("printed-marker"), "{live}");
    let caught_up = until_completed(&s, OBSERVER).await;
    assert!(!caught_up.contains("hunter2") && caught_up.contains("\"command_bytes\":34"), "{caught_up}");
    assert!(!caught_up.contains("printed-marker"), "{caught_up}");
    let (_, history) = get(&s, &format!("/api/v1/nodes/{node}/history"), OBSERVER).await;
    assert!(!history.to_string().contains("hunter2") && !history.to_string().contains("printed-marker"));
    assert!(history.to_string().contains("exec.completed"));
}

#[tokio::test]
async fn durations_and_sequence_numbers_from_input_never_wrap() {
    let (s, node, _) = app_with_body(|_| {}).await;
    for timeout in [json!("18446744073709553"), json!("25h"), json!(1e30), json!("99999999999999999999d")] {
        let (status, body) = post(
            &s,
            &format!("/api/v1/nodes/{node}/exec"),
            ADMIN,
            json!({"command": "true", "timeout": timeout}),
        )
        .await;
        assert_eq!(status, 400, "timeout {timeout}: {body}");
        assert!(body["error"].as_str().unwrap().contains("timeout"), "{body}");
    }
    let head = s.ledger().committed_seq();
    assert!(head >= 2);
    let (status, page) = get(&s, &format!("/api/v1/events/log?since={}&limit=1", u64::MAX), ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!(page["events"], json!([]), "nothing is after u64::MAX");
    assert_eq!(page["next_since"], head);
    let (_, page) = get(&s, &format!("/api/v1/events/log?since={}&limit=1", u64::MAX - 1), ADMIN).await;
    assert_eq!(page["events"], json!([]));
    let (_, page) = get(&s, "/api/v1/events/log?since=0&limit=1", ADMIN).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_since"], 1);
}
