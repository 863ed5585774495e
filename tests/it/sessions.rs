//! Stream sessions end to end, with real `hydranode` agents as body and kiosk head: a
//! head streaming from its assigned body opens a session (in the log, the SSE stream
//! and `GET /api/v1/sessions`), which ends when the head stops or the body goes
//! offline, with the reason; a restart and the offline audit give the same sessions;
//! the filters and their errors; the logs of both sides through exec, and what an
//! observer may see.

use crate::common::agent::{real_agent, real_head, Agent};
use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;

const FLEET: &str = "sessions-fleet-token";

/// The config of a real server for sessions: the fleet token, quick offline marking
/// and exec timeouts, a small event budget interval, and both logs in `dir`.
fn config(dir: &Path) -> String {
    format!(
        "fleet_enrollment_token: {FLEET}\nhead_exec_timeout: 3s\nheartbeat_interval: 300ms\nheartbeat_timeout: 2s\n\
         offline_check_interval: 100ms\nheartbeat_event_interval: 200ms\n\
         head_log_path: \"{}\"\nbody_log_path: \"{}\"\n",
        dir.join("head.log").display(),
        dir.join("body.log").display()
    )
}

/// A real body `body-1` and a real head `ipad-1` at north/arena, the head pinned to
/// the body, both online and idle.
async fn pair(server: &ServerProcess, dir: &Path) -> (Agent, Agent) {
    let body = real_agent(server, dir, "body-1").await;
    body.write_status(&json!({"provider_status": "running", "stream_status": "idle"}));
    let head = real_head(server, dir, "ipad-1", FLEET, Some(json!({"head_status": "idle"}))).await;
    let path = format!("/api/v1/nodes/{}/head-assignment", head.node);
    let (status, assigned) = post(server, &path, ADMIN, json!({"body_id": body.node})).await;
    assert_eq!(status, 200, "{assigned}");
    (body, head)
}

/// Both agents' status files say streaming; waits for the session to be listed active.
async fn stream(server: &ServerProcess, body: &Agent, head: &Agent) -> Value {
    body.write_status(&json!({"provider_status": "running", "stream_status": "streaming"}));
    head.write_status(&json!({"head_status": "streaming"}));
    let query = format!("/api/v1/sessions?active=true&head={}", head.node);
    let found = std::cell::RefCell::new(Value::Null);
    let open = eventually(GUARD, || async {
        let (_, list) = get(server, &query, ADMIN).await;
        *found.borrow_mut() = list[0].clone();
        !found.borrow().is_null()
    })
    .await;
    assert!(open, "the session opens");
    found.into_inner()
}

/// Waits until session `id` has ended; returns it.
async fn ended(server: &ServerProcess, id: &str) -> Value {
    let path = format!("/api/v1/sessions/{id}");
    let found = std::cell::RefCell::new(Value::Null);
    let done = eventually(GUARD, || async {
        *found.borrow_mut() = get(server, &path, ADMIN).await.1;
        found.borrow()["active"] == false
    })
    .await;
    let found = found.into_inner();
    assert!(done, "the session ends: {found}");
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_streaming_from_its_body_is_a_session_until_the_head_stops() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(&dir.path().join("data"), &config(dir.path()));
    let (body, head) = pair(&server, dir.path()).await;
    // Subscribed before anything streams: the session events arrive live.
    let sse = server
        .http
        .get(format!("{}/api/v1/events?types=session.*", server.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);

    // Pinned but idle on both sides: no session.
    let (_, none) = get(&server, "/api/v1/sessions", ADMIN).await;
    assert_eq!(none, json!([]));

    let s = stream(&server, &body, &head).await;
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(id, "session-1");
    assert_eq!(s["head_id"], head.node.as_str());
    assert_eq!(s["body_id"], body.node.as_str());
    assert_eq!((s["head_name"].as_str(), s["body_name"].as_str()), (Some("ipad-1"), Some("body-1")));
    assert_eq!(
        (s["active"].clone(), s["ended_at"].clone(), s["end_reason"].clone()),
        (json!(true), Value::Null, Value::Null)
    );
    assert!(s["started_at"].as_str().unwrap().ends_with('Z'), "{s}");

    // The head stops: the session ends with head_stopped.
    head.write_status(&json!({"head_status": "idle"}));
    let done = ended(&server, &id).await;
    assert_eq!(done["end_reason"], "head_stopped", "{done}");
    assert!(done["ended_at"].is_string() && done["duration_s"].is_u64(), "{done}");

    // In the log, under the head's node (`?node=` and `data.node_id`), with its cause.
    let log = events(&server, &format!("types=session.*&node={}", head.node)).await;
    assert_eq!(types(&log), ["session.started", "session.ended"], "{log:?}");
    for e in &log {
        assert_eq!(e["data"]["session_id"], id.as_str());
        assert_eq!(e["data"]["node_id"], head.node.as_str());
        assert_eq!(e["data"]["head_id"], head.node.as_str());
        assert_eq!(e["data"]["body_id"], body.node.as_str());
    }
    assert_eq!(log[1]["data"]["reason"], "head_stopped");
    // Each was written with its cause: the head's report, in the same batch.
    assert_eq!(who(&log[1]), format!("node:{}", head.node));
    let status_change = events(&server, &format!("types=head.status_changed&node={}", head.node)).await;
    let idle = status_change.iter().rfind(|e| e["data"]["status"] == "idle").unwrap();
    assert_eq!(idle["seq"].as_u64().unwrap() + 1, log[1]["seq"].as_u64().unwrap(), "right after its cause");

    // And live on the SSE stream.
    let text = read_until(sse, |t| t.contains("event: session.ended")).await;
    assert!(text.contains("event: session.started"), "{text}");
    assert!(text.contains("\"reason\":\"head_stopped\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_going_offline_ends_the_session_and_replay_gives_the_same_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start_with(&data, &config(dir.path()));
    let (mut body, head) = pair(&server, dir.path()).await;
    let first = stream(&server, &body, &head).await;
    head.write_status(&json!({"head_status": "idle"}));
    ended(&server, first["id"].as_str().unwrap()).await;
    let second = stream(&server, &body, &head).await;
    assert_eq!(second["id"], "session-2");

    // The body's agent dies: the offline checker ends the session, body_offline.
    body.kill9();
    let done = ended(&server, "session-2").await;
    assert_eq!(done["end_reason"], "body_offline", "{done}");
    let gone = events(&server, &format!("types=node.offline&node={}", body.node)).await;
    let ends = events(&server, &format!("types=session.ended&node={}", head.node)).await;
    assert_eq!(gone[0]["seq"].as_u64().unwrap() + 1, ends[1]["seq"].as_u64().unwrap(), "with its cause");

    // The filters, newest first.
    let list = |q: &str| {
        let path = format!("/api/v1/sessions{q}");
        let server = &server;
        async move {
            let (status, list) = get(server, &path, OBSERVER).await;
            assert_eq!(status, 200, "{path}: {list}");
            ids(list.as_array().unwrap())
        }
    };
    assert_eq!(list("").await, ["session-2", "session-1"]);
    assert_eq!(list(&format!("?head={}&body={}", head.node, body.node)).await, ["session-2", "session-1"]);
    assert_eq!(list(&format!("?body={}", head.node)).await, Vec::<String>::new());
    assert_eq!(list("?active=false&limit=1").await, ["session-2"]);
    assert_eq!(list("?active=true").await, Vec::<String>::new());
    let first_end =
        get(&server, "/api/v1/sessions/session-1", ADMIN).await.1["ended_at"].as_str().unwrap().to_owned();
    let after_first = humantime::parse_rfc3339(&first_end).unwrap() + std::time::Duration::from_millis(1);
    let after_ms = after_first.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(list(&format!("?since={after_ms}")).await, ["session-2"]);
    assert_eq!(list(&format!("?since={first_end}")).await, ["session-2", "session-1"]);
    refused_queries(
        &server,
        "/api/v1/sessions",
        &[
            ("active=maybe", "active="),
            ("since=last-tuesday", "since="),
            ("limit=0", "limit="),
            ("limit=100000", "limit="),
            ("head=../etc", "head="),
            ("colour=red", "colour"),
        ],
    )
    .await;
    let (status, err) = get(&server, "/api/v1/sessions/session-99", ADMIN).await;
    assert_eq!(status, 404, "{err}");

    // Replay: the offline audit of the whole log arrives at the live digest, and a
    // restarted server lists the very same sessions.
    let before = get(&server, "/api/v1/sessions", ADMIN).await.1;
    let live = get(&server, "/api/v1/audit/digest", ADMIN).await.1;
    server.terminate();
    let (ok, out) = offline(&["audit", "--json"], &data);
    assert!(ok, "audit failed: {out}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((&report["digest"], &report["seq"]), (&live["digest"], &live["seq"]));
    let server = ServerProcess::start_with(&data, &config(dir.path()));
    assert_eq!(get(&server, "/api/v1/sessions", ADMIN).await.1, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_logs_show_both_sides_and_observers_see_sessions_but_not_logs() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(&dir.path().join("data"), &config(dir.path()));
    let (body, mut head) = pair(&server, dir.path()).await;
    let s = stream(&server, &body, &head).await;
    let logs_path = format!("/api/v1/sessions/{}/logs", s["id"].as_str().unwrap());

    // The body's lines carry times: only those of the session's window come back
    // (with the untimed line that continues one). The head's carry none: its tail.
    let started = humantime::parse_rfc3339(s["started_at"].as_str().unwrap()).unwrap();
    let at = |offset_s: i64| {
        let t = if offset_s < 0 {
            started - std::time::Duration::from_secs(offset_s.unsigned_abs())
        } else {
            started + std::time::Duration::from_secs(offset_s as u64)
        };
        humantime::format_rfc3339_millis(t).to_string()
    };
    let body_log = format!(
        "{} INFO before the session\n{} INFO stream started\n  a continued line\n{} INFO far in the future\n",
        at(-60),
        at(0),
        at(3600)
    );
    std::fs::write(dir.path().join("body.log"), body_log).unwrap();
    std::fs::write(dir.path().join("head.log"), "kiosk booted\nplaying game 3\n").unwrap();

    let (status, logs) = get(&server, &logs_path, ADMIN).await;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs["session"]["id"], s["id"]);
    assert_eq!(logs["body"]["error"], Value::Null, "{logs}");
    assert_eq!(logs["body"]["windowed"], true);
    assert_eq!(
        logs["body"]["lines"],
        json!([format!("{} INFO stream started", at(0)), "  a continued line"])
    );
    assert_eq!(logs["body"]["log_path"], dir.path().join("body.log").display().to_string());
    assert_eq!(logs["head"]["error"], Value::Null, "{logs}");
    assert_eq!(logs["head"]["windowed"], false);
    assert_eq!(logs["head"]["lines"], json!(["kiosk booted", "playing game 3"]));

    // An observer sees the sessions, never their logs.
    let (status, seen) = get(&server, "/api/v1/sessions", OBSERVER).await;
    assert_eq!((status, ids(seen.as_array().unwrap())), (200, vec![s["id"].as_str().unwrap().to_owned()]));
    let (status, one) =
        get(&server, &format!("/api/v1/sessions/{}", s["id"].as_str().unwrap()), OBSERVER).await;
    assert_eq!((status, &one["id"]), (200, &s["id"]));
    let (status, err) = get(&server, &logs_path, OBSERVER).await;
    assert_eq!(status, 403, "{err}");

    // One side gone: the other is still answered, and the failing side says why.
    head.kill9();
    let (status, logs) = get(&server, &logs_path, ADMIN).await;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs["body"]["lines"].as_array().unwrap().len(), 2, "{logs}");
    let why = logs["head"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("did not send its log") || why.contains("offline"), "{logs}");
    assert_eq!(logs["head"]["lines"], json!([]));
}

/// A body's stream change held back by its event budget carries its session event
/// when the held-changes watchdog writes it: nothing is decided on the held value, and
/// nothing is lost with it.
#[tokio::test]
async fn a_stream_change_held_by_the_event_budget_starts_the_session_when_it_is_written() {
    let s = spawn_app_with(|c| {
        with_fleet(c);
        c.heartbeat_event_interval = std::time::Duration::from_secs(1);
    })
    .await;
    let (body, body_token) = approved_body(&s, "body-1").await;
    let (head, head_token) = enroll_head(&s, "ipad-1").await;
    heartbeat(&s, &head_token, json!({})).await;
    // The body spends its burst of three writes on changes of its own.
    for report in [json!({"provider_status": "running"}), json!({"os": "a"}), json!({"os": "b"})] {
        assert_eq!(heartbeat(&s, &body_token, report).await.0, 200);
    }
    let (status, assigned) =
        post(&s, &format!("/api/v1/nodes/{head}/head-assignment"), ADMIN, json!({"body_id": body})).await;
    assert_eq!(status, 200, "{assigned}");
    assert_eq!(
        put(&s, &format!("/api/v1/heads/{head}"), &head_token, json!({"status": "streaming"})).await.0,
        200
    );

    // Its stream change is held: the log still says idle, and no session is open.
    assert_eq!(heartbeat(&s, &body_token, json!({"stream_status": "streaming"})).await.0, 200);
    let n = node(&s, &body).await;
    assert_eq!(
        (n["stream_status"].as_str(), n["coalesced_changes"].as_u64()),
        (Some("idle"), Some(1)),
        "{n}"
    );
    assert_eq!(get(&s, "/api/v1/sessions", ADMIN).await.1, json!([]));

    // The watchdog writes it once the budget allows: the session starts in that command.
    let open = eventually(GUARD, || async {
        get(&s, "/api/v1/sessions?active=true", ADMIN).await.1[0]["id"] == "session-1"
    })
    .await;
    assert!(open, "the held change opens the session");
    let log = events(&s, &format!("types=node.stream_changed&node={body}")).await;
    let started = events(&s, &format!("types=session.started&node={head}")).await;
    assert_eq!(
        log[0]["seq"].as_u64().unwrap() + 1,
        started[0]["seq"].as_u64().unwrap(),
        "{log:?} {started:?}"
    );
    assert_eq!(who(&started[0]), format!("node:{body}"));
    assert_eq!(started[0]["data"]["body_id"], body.as_str());
}
