//! End to end with real processes only: a `hydracluster` server, real `hydranode`
//! agents enrolled as kiosk heads with the fleet token and as bodies. A head's status
//! file drives its status report; an assignment to a real body gives the head its
//! stream URLs; screenshots and logs come from the head agent's files through exec;
//! a body's stream is force-stopped through its agent (and times out when the agent is
//! gone); body anomalies open and clear from what real agents' status files say.

use crate::common::agent::{enrolled, hydranode, hydranode_enroll, real_agent, real_head, Agent};
use crate::common::library::fake_library;
use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;

const FLEET: &str = "e2e-fleet-token";

/// A real server for heads: the fleet token, quick stop and exec timeouts, quick
/// anomaly passes, the head's log and screenshot in `dir`, and `extra` config.
fn head_server(dir: &Path, extra: &str) -> ServerProcess {
    let config = format!(
        "fleet_enrollment_token: {FLEET}\nstream_stop_command: \"echo stopped\"\nhead_exec_timeout: 3s\n\
         stream_stop_timeout: 2s\nanomaly_check_interval: 100ms\n\
         heartbeat_event_interval: 500ms\nhead_log_path: \"{}\"\nhead_screenshot_path: \"{}\"\n{extra}",
        dir.join("kiosk.log").display(),
        dir.join("shot.jpg").display()
    );
    ServerProcess::start_with(&dir.join("data"), &config)
}

async fn head_in_list(server: &ServerProcess, id: &str) -> Value {
    let (status, heads) = get(server, "/api/v1/heads", ADMIN).await;
    assert_eq!(status, 200, "{heads}");
    heads.as_array().unwrap().iter().find(|h| h["id"] == id).cloned().unwrap_or(Value::Null)
}

/// Waits until the head shows `status`.
async fn reports(server: &ServerProcess, id: &str, status: &str) -> bool {
    eventually(GUARD, || async { head_in_list(server, id).await["status"] == status }).await
}

/// Waits until the node has heartbeated `n` times more (its `last_seen` moved on `n`
/// times): its agent has been through that many more rounds.
async fn rounds(server: &ServerProcess, id: &str, n: usize) {
    let seen = std::cell::RefCell::new(vec![node(server, id).await["last_seen"].clone()]);
    let moved = eventually(GUARD, || async {
        let last = node(server, id).await["last_seen"].clone();
        let mut seen = seen.borrow_mut();
        if seen.last() != Some(&last) {
            seen.push(last);
        }
        seen.len() > n
    })
    .await;
    assert!(moved, "the agent of {id} heartbeats: {:?}", seen.borrow());
}

async fn assign(server: &ServerProcess, head: &str, body: &str) {
    let path = format!("/api/v1/nodes/{head}/head-assignment");
    let (status, assigned) = post(server, &path, ADMIN, json!({"body_id": body})).await;
    assert_eq!(status, 200, "{assigned}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_head_enrolls_reports_its_status_and_streams_from_a_real_body() {
    let dir = tempfile::tempdir().unwrap();
    let library = format!("{}/ok", fake_library().await);
    let server = head_server(dir.path(), &format!("experienceLibrary:\n  url: {library}\n"));

    // A wrong fleet token: a clear message, a non-zero exit, nothing kept.
    let refused = dir.path().join("refused");
    let args = ["--district", "north", "--venue", "arena", "--fleet-token", "not-the-fleet-token"];
    let out = hydranode_enroll(&server, "ipad-x", &args, &refused);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the fleet enrollment token"), "{stderr}");
    assert!(!refused.join("identity.json").exists());
    let (_, heads) = get(&server, "/api/v1/heads", ADMIN).await;
    assert_eq!(heads, json!([]), "nothing was enrolled");

    // The real head enrolls, heartbeats and reports what its status file says.
    let status = json!({"head_status": "streaming", "head_detail": "game 3", "diagnostics": {"fps": 60}});
    let head = real_head(&server, dir.path(), "ipad-1", FLEET, Some(status)).await;
    let reported = reports(&server, &head.node, "streaming").await;
    let mine = head_in_list(&server, &head.node).await;
    assert!(reported, "the head's status file reaches the server: {mine}");
    assert_eq!(mine["name"], "ipad-1");
    assert_eq!(mine["node_status"], "online");
    assert_eq!(mine["detail"], "game 3");
    assert_eq!(mine["diagnostics"], json!({"fps": 60}));

    // A change in the file is one more event; an unchanged file sends nothing new.
    head.write_status(&json!({"head_status": "idle"}));
    assert!(reports(&server, &head.node, "idle").await, "the new status is reported");
    // Two more rounds of the agent with the file unchanged.
    rounds(&server, &head.node, 2).await;
    let log = events(&server, &format!("types=head.*&node={}", head.node)).await;
    let seen: Vec<(&str, &str)> = log
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["data"]["status"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        seen,
        [("head.registered", ""), ("head.status_changed", "streaming"), ("head.status_changed", "idle")],
        "{log:?}"
    );

    // A real body, ready to stream: eligible for the head, then assigned to it.
    let body = real_agent(&server, dir.path(), "body-1").await;
    body.write_status(
        &json!({"provider_status": "running", "stream_status": "idle", "wireguard_ip": "10.9.0.5"}),
    );
    let eligible_path = format!("/api/v1/bodies/eligible?head={}", head.node);
    let eligible = eventually(GUARD, || async {
        let (_, list) = get(&server, &eligible_path, ADMIN).await;
        list.as_array().is_some_and(|l| l.iter().any(|b| b["id"] == body.node.as_str()))
    })
    .await;
    let (_, list) = get(&server, &eligible_path, ADMIN).await;
    assert!(eligible, "the ready body is eligible: {list}");
    assert_eq!(list[0]["name"], "body-1");
    assert_eq!(list[0]["wireguard_ip"], "10.9.0.5");
    assert_eq!(list[0]["ip"], "127.0.0.1");

    assign(&server, &head.node, &body.node).await;
    // The head reads its config with its own token, as the kiosk does.
    let head_token = head.token();
    let config_path = format!("/api/v1/heads/{}", head.node);
    let (status, config) = get(&server, &config_path, &head_token).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["stream_url"], "10.9.0.5");
    assert_eq!(config["stream_url_lan"], "127.0.0.1");
    assert_eq!(config["assigned_body_id"], body.node.as_str());
    assert_eq!(config["assigned_body_name"], "body-1");
    assert_eq!(head_in_list(&server, &head.node).await["assigned_body_name"], "body-1");

    // Its catalog: the live library list at its venue, filtered by its whitelist.
    let allow = json!({"experiences": ["space", "racing", "not-live"]});
    let (status, _) =
        post(&server, &format!("/api/v1/nodes/{}/allowed-experiences", head.node), ADMIN, allow).await;
    assert_eq!(status, 200);
    let (status, catalog) = get(&server, &format!("{config_path}/experiences"), &head_token).await;
    assert_eq!(status, 200, "{catalog}");
    assert_eq!(
        catalog,
        json!([{"id": "racing", "title": "Racing", "build": {"version": "1.2"}}, {"id": "space", "title": "Space"}])
    );
    let (_, config) = get(&server, &config_path, &head_token).await;
    assert_eq!(config["experience_library_url"], library.as_str());
    assert_eq!(config["allowed_experiences"], json!(["space", "racing", "not-live"]));

    // The admin force-stops the body's stream: the real agent runs the stop command.
    let (status, stopped) = delete(&server, &format!("/api/v1/nodes/{}/stream", body.node), ADMIN).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "ok");
    assert_eq!(stopped["exec"], "exec succeeded");
    assert_eq!(stopped["output"], "stopped\n");
    // A head is not a body: it has no stream to stop.
    assert_eq!(delete(&server, &format!("/api/v1/nodes/{}/stream", head.node), ADMIN).await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_enrolled_as_a_body_and_approved_with_a_head_role_runs_as_a_head() {
    let dir = tempfile::tempdir().unwrap();
    let server = head_server(dir.path(), "");

    // A Windows screen enrolls through /enroll, as a body would.
    let state = dir.path().join("screen");
    assert_eq!(enrolled(&server, "windows-screen", &[], &state)["kind"], "body", "enrolled through /enroll");
    let agent = Agent::run(state);
    agent.write_status(&json!({"head_status": "streaming", "head_detail": "lobby"}));
    let node = agent.node.clone();

    // Approved with a head role, its agent reports as a kiosk: its status arrives.
    approve_at(&server, &node, &["hydraheadwindows"], "north", "arena").await;
    let reported = reports(&server, &node, "streaming").await;
    assert!(reported, "the agent reports as a head: {}", head_in_list(&server, &node).await);
    assert_eq!(head_in_list(&server, &node).await["detail"], "lobby");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_and_logs_come_from_the_real_head_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = head_server(dir.path(), "");
    let mut head = real_head(&server, dir.path(), "ipad-1", FLEET, None).await;
    let logs_url = format!("/api/v1/heads/{}/logs", head.node);
    let shot_url = format!("{}/api/v1/heads/{}/screenshot", server.url, head.node);
    let shot = || {
        let req = server.http.get(&shot_url).bearer_auth(ADMIN);
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
    let (status, err) = get(&server, &logs_url, ADMIN).await;
    assert_eq!(status, 502, "{err}");
    assert!(err["error"].as_str().unwrap().contains("absent"), "{err}");

    let log: String = (1..=250).map(|i| format!("line {i}\n")).collect();
    std::fs::write(dir.path().join("kiosk.log"), log).unwrap();
    let jpeg = [0xffu8, 0xd8, 0xff, 0xe0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0xff, 0xd9];
    std::fs::write(dir.path().join("shot.jpg"), jpeg).unwrap();

    let (status, logs) = get(&server, &logs_url, ADMIN).await;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs["log_path"], dir.path().join("kiosk.log").display().to_string());
    let lines = logs["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 200);
    assert_eq!((lines[0].as_str(), lines[199].as_str()), (Some("line 51"), Some("line 250")));

    let (status, kind, bytes) = shot().await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(kind, "image/jpeg");
    assert_eq!(bytes, jpeg);

    // The screenshot is gone: 502.
    std::fs::remove_file(dir.path().join("shot.jpg")).unwrap();
    let (status, _, bytes) = shot().await;
    let err: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, 502, "{err}");
    assert!(err["error"].as_str().unwrap().contains("absent"), "{err}");

    // The head agent is gone: no answer within head_exec_timeout, 504.
    head.kill9();
    let (status, err) = get(&server, &logs_url, ADMIN).await;
    assert_eq!(status, 504, "{err}");
    assert!(err["error"].as_str().unwrap().contains("did not send its log"), "{err}");
    let (status, _, _) = shot().await;
    assert_eq!(status, 504);

    // `run --once` on a head: one heartbeat and one status report.
    let status = json!({"head_status": "error", "head_detail": "screen off"});
    head.write_status(&status);
    let out = std::process::Command::new(hydranode())
        .args(["run", "--once", "--state"])
        .arg(&head.state)
        .env("HYDRA_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mine = head_in_list(&server, &head.node).await;
    assert_eq!(
        (mine["status"].as_str(), mine["detail"].as_str()),
        (Some("error"), Some("screen off")),
        "{mine}"
    );
}

async fn kinds(server: &ServerProcess, node: &str) -> Vec<String> {
    let (status, body) = get(server, "/api/v1/body-anomalies", ADMIN).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap_or_else(|| panic!("a top-level array: {body}"))
        .iter()
        .filter(|a| a["node_id"] == node)
        .map(|a| a["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_and_a_silent_stop_with_real_bodies_and_heads() {
    let dir = tempfile::tempdir().unwrap();
    let server = head_server(dir.path(), "");
    let mut body = real_agent(&server, dir.path(), "body-1").await;
    let status_file = body.state.join("status.json");
    let write = |v: Value| std::fs::write(&status_file, v.to_string()).unwrap();
    let until = |want: &'static [&'static str]| {
        let (server, node) = (&server, body.node.clone());
        async move {
            let ok = eventually(GUARD, || async { kinds(server, &node).await == want }).await;
            assert!(ok, "anomalies of {node}: {:?}, expected {want:?}", kinds(server, &node).await);
        }
    };

    // Streaming with no head watching: an orphan stream.
    write(json!({"provider_status": "running", "stream_status": "streaming", "wireguard_ip": "10.9.0.5"}));
    until(&["orphan_stream"]).await;

    // A real head assigned to it reports streaming: the stream has its viewer.
    let status = json!({"head_status": "streaming"});
    let head = real_head(&server, dir.path(), "ipad-1", FLEET, Some(status)).await;
    assign(&server, &head.node, &body.node).await;
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
    let log = events(&server, &format!("types=anomaly.*&node={}", body.node)).await;
    let seen: Vec<(&str, &str)> =
        log.iter().map(|e| (e["type"].as_str().unwrap(), e["data"]["kind"].as_str().unwrap())).collect();
    assert_eq!(
        seen,
        [
            ("anomaly.started", "orphan_stream"),
            ("anomaly.cleared", "orphan_stream"),
            ("anomaly.started", "gpu_busy_without_stream"),
            ("anomaly.cleared", "gpu_busy_without_stream"),
        ],
        "{log:?}"
    );

    // A force-stop the body never answers: timed out, the state cleared anyway, and
    // the next heartbeat that still says streaming is shown as such.
    write(json!({"provider_status": "running", "stream_status": "streaming"}));
    let body_id = body.node.clone();
    let streaming = || async { node(&server, &body_id).await["stream_status"] == "streaming" };
    assert!(eventually(GUARD, streaming).await);
    body.kill9();
    let (status, stopped) = delete(&server, &format!("/api/v1/nodes/{}/stream", body.node), ADMIN).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!((stopped["status"].as_str(), stopped["exec"].as_str()), (Some("ok"), Some("timed out")));
    assert_eq!(stopped["output"], Value::Null);
    assert_eq!(node(&server, &body_id).await["stream_status"], "idle");
    body.start();
    let back = eventually(GUARD, streaming).await;
    assert!(back, "the restarted agent still says streaming");
}
