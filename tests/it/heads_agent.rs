//! End to end with real processes only: a `hydracluster` server, real `hydranode`
//! agents enrolled as kiosk heads with the fleet token and as bodies. A head's status
//! file drives its status report; an assignment to a real body gives the head its
//! stream URLs; screenshots and logs come from the head agent's files through exec;
//! a body's stream is force-stopped through its agent (and times out when the agent is
//! gone); body anomalies open and clear from what real agents' status files say.

use crate::common::agent::{hydranode, real_agent, real_head, run_agent, Agent};
use crate::common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const FLEET: &str = "e2e-fleet-token";

fn config(dir: &Path) -> String {
    config_with(dir, "")
}

fn config_with(dir: &Path, extra: &str) -> String {
    format!(
        "fleet_enrollment_token: {FLEET}\nstream_stop_command: \"echo stopped\"\nhead_exec_timeout: 3s\n\
         stream_stop_timeout: 2s\nanomaly_check_interval: 100ms\nhead_log_path: \"{}\"\nhead_screenshot_path: \"{}\"\n{extra}",
        dir.join("kiosk.log").display(),
        dir.join("shot.jpg").display()
    )
}

/// A stand-in ExperienceLibrary: `/api/v1/experiences/live` lists three experiences
/// for north/arena. Returns its base URL.
async fn library() -> String {
    use axum::extract::Query;
    use std::collections::HashMap;
    let live = |Query(q): Query<HashMap<String, String>>| async move {
        let at = (q.get("district").map(String::as_str), q.get("venue").map(String::as_str));
        if at != (Some("north"), Some("arena")) {
            return axum::Json(json!([]));
        }
        axum::Json(json!([{"id": "racing", "title": "Racing"}, {"id": "space"}, {"id": "ocean"}]))
    };
    let app = axum::Router::new().route("/api/v1/experiences/live", axum::routing::get(live));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn admin(server: &ServerProcess, http: &reqwest::Client, method: Method, path: &str) -> (u16, Value) {
    call(http, method, &format!("{}{path}", server.url), Some(ADMIN), None).await
}

async fn head_in_list(server: &ServerProcess, http: &reqwest::Client, id: &str) -> Value {
    let (status, heads) = admin(server, http, Method::GET, "/api/v1/heads").await;
    assert_eq!(status, 200, "{heads}");
    heads.as_array().unwrap().iter().find(|h| h["id"] == id).cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_head_enrolls_reports_its_status_and_streams_from_a_real_body() {
    let dir = tempfile::tempdir().unwrap();
    let library = library().await;
    let extra = format!("experienceLibrary:\n  url: {library}\n");
    let server = ServerProcess::start_with(&dir.path().join("data"), &config_with(dir.path(), &extra));
    let http = reqwest::Client::new();

    // A wrong fleet token: a clear message, a non-zero exit, nothing kept.
    let refused = dir.path().join("refused");
    let out = std::process::Command::new(hydranode())
        .args(["enroll", "--server", &server.url, "--name", "ipad-x", "--district", "north"])
        .args(["--venue", "arena", "--fleet-token", "not-the-fleet-token", "--state"])
        .arg(&refused)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the fleet enrollment token"), "{stderr}");
    assert!(!refused.join("identity.json").exists());
    let (_, heads) = admin(&server, &http, Method::GET, "/api/v1/heads").await;
    assert_eq!(heads, json!([]), "nothing was enrolled");

    // The real head enrolls, heartbeats and reports what its status file says.
    let status = json!({"head_status": "streaming", "head_detail": "game 3", "diagnostics": {"fps": 60}});
    let head = real_head(&server, &http, dir.path(), "ipad-1", FLEET, Some(status)).await;
    let reported = eventually(Duration::from_secs(20), || async {
        head_in_list(&server, &http, &head.node).await["status"] == "streaming"
    })
    .await;
    let mine = head_in_list(&server, &http, &head.node).await;
    assert!(reported, "the head's status file reaches the server: {mine}");
    assert_eq!(mine["name"], "ipad-1");
    assert_eq!(mine["node_status"], "online");
    assert_eq!(mine["detail"], "game 3");
    assert_eq!(mine["diagnostics"], json!({"fps": 60}));

    // A change in the file is one more event; an unchanged file sends nothing new.
    std::fs::write(head.state.join("status.json"), json!({"head_status": "idle"}).to_string()).unwrap();
    let idle = eventually(Duration::from_secs(20), || async {
        head_in_list(&server, &http, &head.node).await["status"] == "idle"
    })
    .await;
    assert!(idle, "the new status is reported");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let path = format!("/api/v1/events/log?types=head.*&node={}", head.node);
    let (status, log) = admin(&server, &http, Method::GET, &path).await;
    assert_eq!(status, 200, "{log}");
    let events: Vec<(&str, &str)> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["data"]["status"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        events,
        [("head.registered", ""), ("head.status_changed", "streaming"), ("head.status_changed", "idle")],
        "{log}"
    );

    // A real body, ready to stream: eligible for the head, then assigned to it.
    let body = real_agent(&server, &http, dir.path(), "body-1").await;
    let ready = json!({"provider_status": "running", "stream_status": "idle", "wireguard_ip": "10.9.0.5"});
    std::fs::write(body.state.join("status.json"), ready.to_string()).unwrap();
    let eligible_path = format!("/api/v1/bodies/eligible?head={}", head.node);
    let eligible = eventually(Duration::from_secs(20), || async {
        let (_, list) = admin(&server, &http, Method::GET, &eligible_path).await;
        list.as_array().is_some_and(|l| l.iter().any(|b| b["id"] == body.node.as_str()))
    })
    .await;
    let (_, list) = admin(&server, &http, Method::GET, &eligible_path).await;
    assert!(eligible, "the ready body is eligible: {list}");
    assert_eq!(list[0]["name"], "body-1");
    assert_eq!(list[0]["wireguard_ip"], "10.9.0.5");
    assert_eq!(list[0]["ip"], "127.0.0.1");

    let (status, assigned) = call(
        &http,
        Method::POST,
        &format!("{}/api/v1/nodes/{}/head-assignment", server.url, head.node),
        Some(ADMIN),
        Some(json!({"body_id": body.node})),
    )
    .await;
    assert_eq!(status, 200, "{assigned}");
    // The head reads its config with its own token, as the kiosk does.
    let head_token = std::fs::read_to_string(head.state.join("token")).unwrap();
    let (status, config) = call(
        &http,
        Method::GET,
        &format!("{}/api/v1/heads/{}", server.url, head.node),
        Some(head_token.trim()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["stream_url"], "10.9.0.5");
    assert_eq!(config["stream_url_lan"], "127.0.0.1");
    assert_eq!(config["assigned_body_id"], body.node.as_str());
    assert_eq!(config["assigned_body_name"], "body-1");
    assert_eq!(head_in_list(&server, &http, &head.node).await["assigned_body_name"], "body-1");

    // Its catalog: the live library list at its venue, filtered by its whitelist.
    let (status, _) = call(
        &http,
        Method::POST,
        &format!("{}/api/v1/nodes/{}/allowed-experiences", server.url, head.node),
        Some(ADMIN),
        Some(json!({"experiences": ["space", "racing", "not-live"]})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, catalog) = call(
        &http,
        Method::GET,
        &format!("{}/api/v1/heads/{}/experiences", server.url, head.node),
        Some(head_token.trim()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{catalog}");
    assert_eq!(catalog, json!([{"id": "racing", "title": "Racing"}, {"id": "space"}]));
    let (_, config) = call(
        &http,
        Method::GET,
        &format!("{}/api/v1/heads/{}", server.url, head.node),
        Some(head_token.trim()),
        None,
    )
    .await;
    assert_eq!(config["experience_library_url"], library.as_str());
    assert_eq!(config["allowed_experiences"], json!(["space", "racing", "not-live"]));

    // The admin force-stops the body's stream: the real agent runs the stop command.
    let (status, stopped) =
        admin(&server, &http, Method::DELETE, &format!("/api/v1/nodes/{}/stream", body.node)).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "ok");
    assert_eq!(stopped["exec"], "exec succeeded");
    assert_eq!(stopped["output"], "stopped\n");
    // A head is not a body: it has no stream to stop.
    let (status, _) =
        admin(&server, &http, Method::DELETE, &format!("/api/v1/nodes/{}/stream", head.node)).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_enrolled_as_a_body_and_approved_with_a_head_role_runs_as_a_head() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(&dir.path().join("data"), &config_with(dir.path(), ""));
    let http = reqwest::Client::new();

    // A Windows screen enrolls through /enroll, as a body would.
    let state = dir.path().join("screen");
    let out = std::process::Command::new(hydranode())
        .args(["enroll", "--server", &server.url, "--name", "windows-screen", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let identity: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("identity.json")).unwrap()).unwrap();
    assert_eq!(identity["kind"], "body", "enrolled through /enroll");
    let node = identity["node_id"].as_str().unwrap().to_owned();
    std::fs::write(
        state.join("status.json"),
        json!({"head_status": "streaming", "head_detail": "lobby"}).to_string(),
    )
    .unwrap();
    let _agent = Agent { child: run_agent(&state), state, node: node.clone() };

    // Approved with a head role, its agent reports as a kiosk: its status arrives.
    let approve = json!({"roles": ["hydraheadwindows"], "district": "north", "venue": "arena"});
    let (status, body) = call(
        &http,
        Method::POST,
        &format!("{}/api/v1/nodes/{node}/approve", server.url),
        Some(ADMIN),
        Some(approve),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reported = eventually(Duration::from_secs(20), || async {
        head_in_list(&server, &http, &node).await["status"] == "streaming"
    })
    .await;
    assert!(reported, "the agent reports as a head: {}", head_in_list(&server, &http, &node).await);
    assert_eq!(head_in_list(&server, &http, &node).await["detail"], "lobby");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_and_logs_come_from_the_real_head_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(&dir.path().join("data"), &config(dir.path()));
    let http = reqwest::Client::new();
    let mut head = real_head(&server, &http, dir.path(), "ipad-1", FLEET, None).await;
    let logs_url = format!("/api/v1/heads/{}/logs", head.node);
    let shot_url = format!("{}/api/v1/heads/{}/screenshot", server.url, head.node);
    let shot = |http: &reqwest::Client| {
        let req = http.get(&shot_url).bearer_auth(ADMIN);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let kind = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, kind, resp.bytes().await.unwrap().to_vec())
        }
    };

    // No files yet: 502, saying so.
    let (status, err) = admin(&server, &http, Method::GET, &logs_url).await;
    assert_eq!(status, 502, "{err}");
    assert!(err["error"].as_str().unwrap().contains("absent"), "{err}");

    let log: String = (1..=250).map(|i| format!("line {i}\n")).collect();
    std::fs::write(dir.path().join("kiosk.log"), log).unwrap();
    let jpeg = [0xffu8, 0xd8, 0xff, 0xe0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0xff, 0xd9];
    std::fs::write(dir.path().join("shot.jpg"), jpeg).unwrap();

    let (status, logs) = admin(&server, &http, Method::GET, &logs_url).await;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs["log_path"], dir.path().join("kiosk.log").display().to_string());
    let lines = logs["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 200);
    assert_eq!((lines[0].as_str(), lines[199].as_str()), (Some("line 51"), Some("line 250")));

    let (status, kind, bytes) = shot(&http).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(kind, "image/jpeg");
    assert_eq!(bytes, jpeg);

    // The screenshot is gone: 502.
    std::fs::remove_file(dir.path().join("shot.jpg")).unwrap();
    let (status, _, bytes) = shot(&http).await;
    let err: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, 502, "{err}");
    assert!(err["error"].as_str().unwrap().contains("absent"), "{err}");

    // The head agent is gone: no answer within head_exec_timeout, 504.
    head.kill9();
    let (status, err) = admin(&server, &http, Method::GET, &logs_url).await;
    assert_eq!(status, 504, "{err}");
    assert!(err["error"].as_str().unwrap().contains("did not send its log"), "{err}");
    let (status, _, _) = shot(&http).await;
    assert_eq!(status, 504);

    // `run --once` on a head: one heartbeat and one status report.
    let status = json!({"head_status": "error", "head_detail": "screen off"});
    std::fs::write(head.state.join("status.json"), status.to_string()).unwrap();
    let out = std::process::Command::new(hydranode())
        .args(["run", "--once", "--state"])
        .arg(&head.state)
        .env("HYDRA_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mine = head_in_list(&server, &http, &head.node).await;
    assert_eq!(
        (mine["status"].as_str(), mine["detail"].as_str()),
        (Some("error"), Some("screen off")),
        "{mine}"
    );
}

async fn kinds(server: &ServerProcess, http: &reqwest::Client, node: &str) -> Vec<String> {
    let (status, body) = admin(server, http, Method::GET, "/api/v1/body-anomalies").await;
    assert_eq!(status, 200, "{body}");
    body["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["node_id"] == node)
        .map(|a| a["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_and_a_silent_stop_with_real_bodies_and_heads() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(&dir.path().join("data"), &config(dir.path()));
    let http = reqwest::Client::new();
    let mut body = real_agent(&server, &http, dir.path(), "body-1").await;
    let status_file = body.state.join("status.json");
    let write = |v: Value| std::fs::write(&status_file, v.to_string()).unwrap();
    let until = |want: &'static [&'static str]| {
        let (server, http, node) = (&server, &http, body.node.clone());
        async move {
            let ok =
                eventually(Duration::from_secs(20), || async { kinds(server, http, &node).await == want })
                    .await;
            assert!(ok, "anomalies of {node}: {:?}, expected {want:?}", kinds(server, http, &node).await);
        }
    };

    // Streaming with no head watching: an orphan stream.
    write(json!({"provider_status": "running", "stream_status": "streaming", "wireguard_ip": "10.9.0.5"}));
    until(&["orphan_stream"]).await;

    // A real head assigned to it reports streaming: the stream has its viewer.
    let status = json!({"head_status": "streaming"});
    let head = real_head(&server, &http, dir.path(), "ipad-1", FLEET, Some(status)).await;
    let (status, assigned) = call(
        &http,
        Method::POST,
        &format!("{}/api/v1/nodes/{}/head-assignment", server.url, head.node),
        Some(ADMIN),
        Some(json!({"body_id": body.node})),
    )
    .await;
    assert_eq!(status, 200, "{assigned}");
    until(&[]).await;

    // The stream ends but the GPU stays busy: the other anomaly.
    write(
        json!({"provider_status": "running", "stream_status": "idle", "telemetry": {"gpu_utilization_pct": 97}}),
    );
    until(&["gpu_busy_without_stream"]).await;
    write(
        json!({"provider_status": "running", "stream_status": "idle", "telemetry": {"gpu_utilization_pct": 3}}),
    );
    until(&[]).await;
    let path = format!("/api/v1/events/log?types=anomaly.*&node={}", body.node);
    let (_, log) = admin(&server, &http, Method::GET, &path).await;
    let seen: Vec<(&str, &str)> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["data"]["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("anomaly.started", "orphan_stream"),
            ("anomaly.cleared", "orphan_stream"),
            ("anomaly.started", "gpu_busy_without_stream"),
            ("anomaly.cleared", "gpu_busy_without_stream"),
        ],
        "{log}"
    );

    // A force-stop the body never answers: timed out, the state cleared anyway, and
    // the next heartbeat that still says streaming is shown as such.
    write(json!({"provider_status": "running", "stream_status": "streaming"}));
    let node_url = format!("/api/v1/nodes/{}", body.node);
    let streaming = eventually(Duration::from_secs(20), || async {
        admin(&server, &http, Method::GET, &node_url).await.1["stream_status"] == "streaming"
    })
    .await;
    assert!(streaming);
    body.kill9();
    let (status, stopped) =
        admin(&server, &http, Method::DELETE, &format!("/api/v1/nodes/{}/stream", body.node)).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!((stopped["status"].as_str(), stopped["exec"].as_str()), (Some("ok"), Some("timed out")));
    assert_eq!(stopped["output"], Value::Null);
    assert_eq!(admin(&server, &http, Method::GET, &node_url).await.1["stream_status"], "idle");
    body.start();
    let back = eventually(Duration::from_secs(20), || async {
        admin(&server, &http, Method::GET, &node_url).await.1["stream_status"] == "streaming"
    })
    .await;
    assert!(back, "the restarted agent still says streaming");
}
