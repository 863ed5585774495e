//! The WebSocket shell (`exec --shell`) end to end: a real `hydracluster serve`, a real
//! `hydranode run` starting bash on a real PTY, and the `hydracluster exec --shell` CLI;
//! plus the protocol's bad cases with a WebSocket client playing either side.

use crate::common::agent::server_with_agent;
use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Runs `hydracluster exec <args> --shell …` with `stdin` piped in (a blocking
/// process, so off the async runtime).
async fn cli_shell(server: &ServerProcess, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = std::process::Command::new(hydracluster());
    cmd.arg("exec").args(args).args(["--server", &server.url, "--admin-token", ADMIN]);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let input = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = input {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// A raw WebSocket connection (the test plays the CLI or the agent); Err is the
/// refusal's status and body.
async fn ws_connect(url: &str, token: &str) -> Result<Ws, (u16, String)> {
    let url = url.replacen("http://", "ws://", 1);
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => {
            let body = resp.body().as_deref().map(text).unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("cannot connect to {url}: {e}"),
    }
}

/// Reads binary frames until `needle` shows (or panics after `limit`); returns all read.
async fn read_until(ws: &mut Ws, needle: &str, limit: Duration) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => seen.push_str(&text(&b)),
            Ok(Some(Ok(_))) => {}
            other => panic!("waiting for {needle:?}, got {other:?} after {seen:?}"),
        }
    }
    seen
}

/// Reads until the `{"exit":N}` message and the close that follows it.
async fn read_exit(ws: &mut Ws) -> (Option<i64>, Option<String>) {
    let mut exit = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("the session ends") {
            Some(Ok(Message::Text(t))) => exit = serde_json::from_str::<Value>(&t).unwrap()["exit"].as_i64(),
            Some(Ok(Message::Close(frame))) => return (exit, frame.map(|f| f.reason.to_string())),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (exit, None),
        }
    }
}

async fn shell_events(server: &ServerProcess) -> Vec<Value> {
    events(server, "types=shell.*").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_opens_shells_on_a_real_agent() {
    let (_dir, server, agent) = server_with_agent("", "shell-body").await;
    let node = agent.node.clone();

    // A command on a real terminal: its output, a /dev/pts path, its exit code.
    let out = cli_shell(&server, &[&node, "--shell", "echo hi; tty; exit 3"], None).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.lines().any(|l| l.trim_end() == "hi"), "{stdout:?}");
    assert!(stdout.contains("/dev/pts/"), "a real PTY: {stdout:?}");

    // An interactive login shell fed from a pipe.
    let out = cli_shell(&server, &[&node, "--shell"], Some("echo marker-$((6*7))\nexit 5\n")).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("marker-42"), "{:?}", text(&out.stdout));

    // With the exec slot busy (a long command in flight), a shell still answers at once.
    let (status, queued) = post(
        &server,
        &format!("/api/v1/nodes/{node}/exec"),
        ADMIN,
        json!({"command": "sleep 30", "timeout": 60}),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    let exec = queued["id"].as_str().unwrap().to_owned();
    let result_path = format!("/api/v1/nodes/{node}/exec/{exec}/result");
    let dispatched =
        eventually(GUARD, || async { get(&server, &result_path, ADMIN).await.1["status"] == "dispatched" })
            .await;
    assert!(dispatched, "the long command is in flight");
    let started = Instant::now();
    let out = cli_shell(&server, &[&node, "--shell", "echo shell-while-busy"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("shell-while-busy"));
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let still = get(&server, &result_path, ADMIN).await.1;
    assert_eq!(still["status"], "dispatched", "the exec queue was not touched");
    assert_eq!(delete(&server, &format!("/api/v1/nodes/{node}/exec/queue/{exec}"), ADMIN).await.0, 200);

    // The protocol itself: the size asked for at the start, then a resize message.
    let url = format!(
        "{}/api/v1/nodes/{node}/shell?cols=123&rows=45&command={}",
        server.url, "stty%20size%3B%20read%20x%3B%20stty%20size"
    );
    let mut ws = ws_connect(&url, ADMIN).await.expect("the shell opens");
    read_until(&mut ws, "45 123", Duration::from_secs(20)).await;
    ws.send(Message::Text(json!({"resize": {"cols": 100, "rows": 30}}).to_string().into())).await.unwrap();
    ws.send(Message::Binary(b"\n".to_vec().into())).await.unwrap();
    read_until(&mut ws, "30 100", Duration::from_secs(20)).await;
    assert_eq!(read_exit(&mut ws).await.0, Some(0));

    // A node token may not open a shell (it is an admin route).
    let refused = ws_connect(&format!("{}/api/v1/nodes/{node}/shell", server.url), &agent.token()).await;
    assert_eq!(refused.err().map(|e| e.0), Some(403));

    // An unknown node is refused before the upgrade, with a clear message.
    let out = cli_shell(&server, &["node-nosuch", "--shell", "true"], None).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("404") && err.contains("no node node-nosuch"), "{err}");

    // --shell does not mix with the queue's options.
    let out = cli_shell(&server, &[&node, "--shell", "--json"], None).await;
    assert_eq!(out.status.code(), Some(2), "a usage error");

    // The log says who opened which shell on which node and how it ended, and holds
    // nothing that went through the terminal (neither what was typed nor printed).
    let ok = eventually(GUARD, || async {
        shell_events(&server).await.iter().filter(|e| e["type"] == "shell.closed").count() >= 4
    })
    .await;
    assert!(ok, "every session's end is recorded: {:#?}", shell_events(&server).await);
    let events = shell_events(&server).await;
    let opened: Vec<&Value> = events.iter().filter(|e| e["type"] == "shell.opened").collect();
    assert_eq!(opened.len(), 4, "{events:#?}");
    assert_eq!(opened[0]["data"]["command"], "echo hi; tty; exit 3");
    assert_eq!(opened[0]["data"]["node_id"], node.as_str());
    assert_eq!(who(opened[0]), "admin:admin");
    assert!(opened[0]["data"]["session_id"].as_str().unwrap().starts_with("shell-"));
    assert_eq!(opened[1]["data"]["command"], Value::Null, "an interactive shell");
    let closed_code = |session: &Value| {
        events
            .iter()
            .find(|e| e["type"] == "shell.closed" && e["data"]["session_id"] == *session)
            .map(|e| e["data"]["exit_code"].clone())
    };
    assert_eq!(closed_code(&opened[0]["data"]["session_id"]), Some(json!(3)));
    assert_eq!(closed_code(&opened[1]["data"]["session_id"]), Some(json!(5)));
    let log = serde_json::to_string(&events).unwrap();
    for secret in ["marker-42", "marker-$((6*7))", "/dev/pts", "45 123"] {
        assert!(!log.contains(secret), "{secret:?} is in the log: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shells_without_an_agent_fail_clearly_and_sessions_are_guarded() {
    let (_dir, server) = server_in_temp_dir("shell_attach_timeout: 3s\n");
    let (node, token) = approved_body(&server, "quiet-body").await;
    let (_, other_token) = approved_body(&server, "other-body").await;

    // No agent runs for the node: the CLI fails after the attach timeout and says why.
    let started = Instant::now();
    let out = cli_shell(&server, &[&node, "--shell", "true"], None).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("the agent did not attach within 3s; is it running?"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(3) && started.elapsed() < Duration::from_secs(15));

    // A pending node gets no shell.
    let (pending, _) = enroll(&server, "pending-body").await;
    let out = cli_shell(&server, &[&pending, "--shell"], None).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("409"), "{}", text(&out.stderr));

    // The agent's side, played by the test: a long poll answers the moment a session
    // is opened, and only the node's own agent may attach, once.
    let asked = Instant::now();
    let waiting = spawn_get(&server, "/api/v1/body/shell/check?wait=20", &token);
    polls_parked(&server, 1).await;
    let open_url = format!("{}/api/v1/nodes/{node}/shell?command=echo%20x&cols=90&rows=33", server.url);
    let mut admin = ws_connect(&open_url, ADMIN).await.expect("the admin's side opens");
    admin.send(Message::Binary(b"typed early".to_vec().into())).await.unwrap();
    let (status, offer) = waiting.await.unwrap();
    let took = asked.elapsed();
    assert_eq!(status, 200, "{offer}");
    assert!(took < Duration::from_secs(10), "the long poll answered at once: {took:?}");
    assert_eq!(offer["command"], "echo x");
    assert_eq!((offer["cols"].as_u64(), offer["rows"].as_u64()), (Some(90), Some(33)));
    let session = offer["session"].as_str().unwrap().to_owned();
    assert!(session.starts_with("shell-"));

    let attach = |s: &str| format!("{}/api/v1/body/shell/{s}", server.url);
    assert_eq!(ws_connect(&attach(&session), &other_token).await.err().map(|e| e.0), Some(403));
    assert_eq!(ws_connect(&attach("shell-0000000000000000"), &token).await.err().map(|e| e.0), Some(404));
    assert_eq!(ws_connect(&attach(&session), ADMIN).await.err().map(|e| e.0), Some(403), "not a node token");
    let mut agent = ws_connect(&attach(&session), &token).await.expect("the node's agent attaches");
    assert_eq!(ws_connect(&attach(&session), &token).await.err().map(|e| e.0), Some(409));
    // The other node's poll sees nothing of it.
    assert_eq!(get(&server, "/api/v1/body/shell/check?wait=0", &other_token).await.0, 204);

    // The relay: what the admin typed before the attach arrives, bytes flow both ways,
    // resize messages pass, anything else in text does not, and the exit code ends it.
    let got = tokio::time::timeout(Duration::from_secs(10), agent.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(got, Message::Binary(b"typed early".to_vec().into()));
    admin.send(Message::Text(r#"{"nonsense":1}"#.into())).await.unwrap();
    admin.send(Message::Text(r#"{"resize":{"cols":120,"rows":40}}"#.into())).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), agent.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(got, Message::Text(r#"{"resize":{"cols":120,"rows":40}}"#.into()));
    agent.send(Message::Binary(b"x\r\n".to_vec().into())).await.unwrap();
    agent.send(Message::Text(r#"{"exit":7}"#.into())).await.unwrap();
    agent.close(None).await.unwrap();
    assert_eq!(read_until(&mut admin, "x\r\n", Duration::from_secs(10)).await, "x\r\n");
    assert_eq!(read_exit(&mut admin).await.0, Some(7));

    // A session that is over cannot be attached to.
    let over = eventually(Duration::from_secs(10), || async {
        ws_connect(&attach(&session), &token).await.err().map(|e| e.0) == Some(404)
    })
    .await;
    assert!(over, "the session is forgotten when it ends");
    let ok = eventually(Duration::from_secs(10), || async {
        shell_events(&server).await.iter().any(|e| {
            e["type"] == "shell.closed"
                && e["data"]["session_id"] == session.as_str()
                && e["data"]["exit_code"] == 7
        })
    })
    .await;
    assert!(ok, "{:#?}", shell_events(&server).await);
    // The session that timed out was never opened: only the attached one is in the log.
    let events = shell_events(&server).await;
    assert_eq!(events.len(), 2, "{events:#?}");
}
