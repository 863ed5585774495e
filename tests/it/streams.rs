//! End to end: a body's stream force-stopped through the exec queue (the agent side
//! played by the test, answering or silent), and body anomalies opening and closing
//! as events, decided by the watchdog pass.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn stop_stream(s: &TestServer, node: &str, token: &str) -> (u16, Value) {
    delete(s, &format!("/api/v1/nodes/{node}/stream"), token).await
}

/// An approved body that heartbeats as streaming.
async fn streaming_body(s: &TestServer, name: &str) -> (String, String) {
    let (id, token) = approved_body(s, name).await;
    let (status, _) = heartbeat(s, &token, json!({"stream_status": "streaming"})).await;
    assert_eq!(status, 200);
    assert_eq!(node(s, &id).await["stream_status"], "streaming");
    (id, token)
}

/// Plays the agent for one command: long-polls it, then answers with `stdout`.
fn answering_agent(s: &TestServer, token: &str, stdout: &str) -> tokio::task::JoinHandle<Value> {
    answer_one_command(s, token, json!({"exit_code": 0, "stdout": stdout, "duration_ms": 5}))
}

#[tokio::test]
async fn a_force_stop_runs_the_stop_command_and_clears_the_stream() {
    let s = spawn_app().await;
    let (id, token) = streaming_body(&s, "body-1").await;
    let agent = answering_agent(&s, &token, "stream stopped\n");
    let (status, answer) = stop_stream(&s, &id, ADMIN).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "ok");
    assert_eq!(answer["exec"], "exec succeeded");
    assert_eq!(answer["output"], "stream stopped\n");
    let cmd = agent.await.unwrap();
    assert_eq!(cmd["command"], "hydra-stream-stop || true");
    assert_eq!(node(&s, &id).await["stream_status"], "idle");
    let stopped = events(&s, &format!("types=stream.stopped&node={id}")).await;
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0]["data"]["exec"], "exec succeeded");
    // The stop command went through the ordinary queue: it is in the log like any other.
    assert_eq!(events(&s, &format!("types=exec.completed&node={id}")).await.len(), 1);
}

#[tokio::test]
async fn a_silent_body_times_out_the_stop_but_the_state_is_cleared_anyway() {
    let s = spawn_app_with(|c| c.stream_stop_timeout = Duration::from_secs(1)).await;
    let (id, token) = streaming_body(&s, "body-1").await;
    let (status, answer) = stop_stream(&s, &id, ADMIN).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "ok");
    assert_eq!(answer["exec"], "timed out");
    assert_eq!(answer["output"], Value::Null);
    assert_eq!(node(&s, &id).await["stream_status"], "idle");
    // Nothing is left to run late and stop a later stream.
    let (_, queue) = get(&s, &format!("/api/v1/nodes/{id}/exec/queue"), ADMIN).await;
    assert_eq!(queue["queued"], json!([]), "{queue}");
    assert_eq!(queue["in_flight"], Value::Null, "{queue}");
    assert_eq!(events(&s, &format!("types=stream.stopped&node={id}")).await[0]["data"]["exec"], "timed out");
    // A body that still streams says so with its next heartbeat, recorded as usual.
    heartbeat(&s, &token, json!({"stream_status": "streaming"})).await;
    assert_eq!(node(&s, &id).await["stream_status"], "streaming");
    let changes = events(&s, &format!("types=node.stream_changed&node={id}")).await;
    assert_eq!(changes.len(), 2, "streaming, stopped, streaming again: {changes:?}");
}

#[tokio::test]
async fn a_force_stop_is_for_admins_and_approved_bodies() {
    let (s, id, token) = app_with_body(with_fleet).await;
    assert_eq!(stop_stream(&s, &id, OBSERVER).await.0, 403);
    assert_eq!(stop_stream(&s, &id, &token).await.0, 403);
    assert_eq!(stop_stream(&s, "node-nosuchbody", ADMIN).await.0, 404);
    let (pending, _) = enroll(&s, "pending").await;
    assert_eq!(stop_stream(&s, &pending, ADMIN).await.0, 409);
    let (head, _) = enroll_head(&s, "ipad").await;
    let (status, err) = stop_stream(&s, &head, ADMIN).await;
    assert_eq!(status, 400, "{err}");
    assert!(events(&s, "types=stream.stopped").await.is_empty());
}

async fn anomalies(s: &TestServer) -> Vec<Value> {
    let (status, body) = get(s, "/api/v1/body-anomalies", OBSERVER).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap_or_else(|| panic!("a top-level array: {body}")).clone()
}

async fn anomaly_kinds(s: &TestServer, node: &str) -> Vec<String> {
    anomalies(s)
        .await
        .iter()
        .filter(|a| a["node_id"] == node)
        .map(|a| a["type"].as_str().unwrap().to_owned())
        .collect()
}

fn fast_anomalies(c: &mut hydra::cluster::config::Config) {
    c.anomaly_check_interval = Duration::from_millis(50);
    // Telemetry changes reach the log at most once per this interval per node.
    c.heartbeat_event_interval = Duration::from_millis(200);
    with_fleet(c);
}

/// A body whose own anomaly marks the watchdog's passes.
struct Sentinel {
    id: String,
    token: String,
}

impl Sentinel {
    async fn new(s: &TestServer) -> Sentinel {
        let (id, token) = approved_body(s, "sentinel").await;
        Sentinel { id, token }
    }

    /// Waits for a pass of the anomaly watchdog that judged every body as it is now:
    /// the sentinel heartbeats a stream it did not have (or stops the one it had), and
    /// only a pass that reads the views after that opens (or clears) its orphan stream.
    async fn pass(&self, s: &TestServer) {
        let open = anomaly_kinds(s, &self.id).await.is_empty();
        let (stream, want): (&str, &[&str]) =
            if open { ("streaming", &["orphan_stream"]) } else { ("idle", &[]) };
        assert_eq!(heartbeat(s, &self.token, json!({"stream_status": stream})).await.0, 200);
        let passed = eventually(GUARD, || async { anomaly_kinds(s, &self.id).await == want }).await;
        assert!(passed, "the watchdog made a pass: {:?}", anomalies(s).await);
    }
}

#[tokio::test]
async fn a_stream_with_no_head_watching_is_an_orphan_until_it_stops() {
    let s = spawn_app_with(fast_anomalies).await;
    let (id, token) = streaming_body(&s, "body-1").await;
    let opened =
        eventually(Duration::from_secs(20), || async { anomaly_kinds(&s, &id).await == ["orphan_stream"] })
            .await;
    assert!(opened, "{:?}", anomalies(&s).await);
    let a = anomalies(&s).await.into_iter().find(|a| a["node_id"] == id.as_str()).unwrap();
    assert!(a["since"].as_str().unwrap().ends_with('Z'), "{a}");
    assert!(a["for_s"].as_u64().is_some(), "{a}");
    assert_eq!((&a["body_name"], &a["type"]), (&json!("body-1"), &json!("orphan_stream")), "{a}");
    assert_eq!((&a["district"], &a["venue"]), (&json!("north"), &json!("arena")), "{a}");
    assert_eq!(
        (&a["expected_clear_at"], &a["overdue"]),
        (&Value::Null, &Value::Null),
        "no watchdog reported: {a}"
    );

    // The body reports its own watchdog's limit: the anomaly should clear by since + limit.
    let since = humantime::parse_rfc3339(a["since"].as_str().unwrap()).unwrap();
    let by =
        |limit_s: u64| humantime::format_rfc3339_millis(since + Duration::from_secs(limit_s)).to_string();
    for (limit, overdue) in [(600, false), (0, true)] {
        let telemetry = json!({"stream_status": "streaming", "telemetry": {"watchdog_timeout_s": limit}});
        assert_eq!(heartbeat(&s, &token, telemetry).await.0, 200);
        let a = anomalies(&s).await.into_iter().find(|a| a["node_id"] == id.as_str()).unwrap();
        assert_eq!(
            (a["expected_clear_at"].as_str(), &a["overdue"]),
            (Some(by(limit).as_str()), &json!(overdue)),
            "{a}"
        );
        let (_, bodies) = get(&s, "/api/v1/bodies", OBSERVER).await;
        let listed = bodies.as_array().unwrap().iter().find(|b| b["id"] == id.as_str()).unwrap()["anomalies"]
            [0]
        .clone();
        assert_eq!(
            (&listed["expected_clear_at"], &listed["overdue"]),
            (&a["expected_clear_at"], &a["overdue"])
        );
    }

    heartbeat(&s, &token, json!({"stream_status": "idle"})).await;
    let closed =
        eventually(Duration::from_secs(20), || async { anomaly_kinds(&s, &id).await.is_empty() }).await;
    assert!(closed, "{:?}", anomalies(&s).await);
    let events: Vec<_> = events(&s, &format!("types=anomaly.*&node={id}"))
        .await
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["data"]["kind"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        events,
        [
            ("anomaly.started".to_owned(), "orphan_stream".to_owned()),
            ("anomaly.cleared".to_owned(), "orphan_stream".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_stream_a_head_is_watching_is_not_an_orphan() {
    let s = spawn_app_with(fast_anomalies).await;
    let (body, _) = streaming_body(&s, "body-1").await;
    let sentinel = Sentinel::new(&s).await;
    let (head_id, head_token) = enroll_head(&s, "ipad").await;
    heartbeat(&s, &head_token, json!({})).await;
    let (status, r) =
        post(&s, &format!("/api/v1/nodes/{head_id}/head-assignment"), ADMIN, json!({"body_id": body})).await;
    assert_eq!(status, 200, "{r}");
    let (status, r) =
        put(&s, &format!("/api/v1/heads/{head_id}"), &head_token, json!({"status": "streaming"})).await;
    assert_eq!(status, 200, "{r}");
    // The orphan may have opened before the head connected; it must be closed now.
    let clear =
        eventually(Duration::from_secs(20), || async { anomaly_kinds(&s, &body).await.is_empty() }).await;
    assert!(clear, "{:?}", anomalies(&s).await);
    sentinel.pass(&s).await;
    assert!(anomaly_kinds(&s, &body).await.is_empty());
}

#[tokio::test]
async fn a_busy_gpu_on_an_idle_body_is_an_anomaly_and_since_survives_a_restart() {
    let mut s = spawn_app_with(fast_anomalies).await;
    let sentinel = Sentinel::new(&s).await;
    let (id, token) = approved_body(&s, "body-1").await;
    heartbeat(&s, &token, json!({"stream_status": "idle", "telemetry": {"gpu_utilization_pct": 30}})).await;
    sentinel.pass(&s).await;
    assert!(anomaly_kinds(&s, &id).await.is_empty(), "30% is below the threshold");
    heartbeat(&s, &token, json!({"telemetry": {"gpu_utilization_pct": 97.5}})).await;
    let opened = eventually(Duration::from_secs(20), || async {
        anomaly_kinds(&s, &id).await == ["gpu_busy_without_stream"]
    })
    .await;
    assert!(opened, "{:?}", anomalies(&s).await);
    let of_body = |all: Vec<Value>| all.into_iter().find(|a| a["node_id"] == id.as_str()).unwrap();
    let since = of_body(anomalies(&s).await)["since"].clone();
    // The open anomaly is in the log: after a restart it is still open, since the same time.
    s.restart_with(fast_anomalies).await;
    // No telemetry since the restart: the watchdog's passes leave the anomaly as it was
    // (and the sentinel's pass closes its own).
    sentinel.pass(&s).await;
    let after = anomalies(&s).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["since"], since);
    assert_eq!(events(&s, &format!("types=anomaly.started&node={id}")).await.len(), 1);
}
