//! End to end with real processes only: `hydracluster serve`, a real `hydranode run`
//! running real commands with bash, and the `hydracluster exec` CLI an operator types.

use crate::common::agent::real_agent;
use crate::common::*;
use serde_json::json;
use std::process::{Command, Output};
use std::time::Duration;

/// Runs `hydracluster exec` (a blocking process, so off the async runtime).
async fn cli_exec(server: &ServerProcess, args: &[&str]) -> Output {
    let mut cmd = Command::new(hydracluster());
    cmd.arg("exec").args(args).args(["--server", &server.url, "--admin-token", ADMIN]);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_commands_on_a_real_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let http = reqwest::Client::new();
    let agent = real_agent(&server, &http, dir.path(), "real-body").await;
    let node = agent.node.clone();

    // stdout and stderr apart, and the exit code follows the remote command's.
    let out = cli_exec(&server, &[&node, "echo out; echo err >&2; exit 7"]).await;
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"));

    // --json prints the result object for scripts.
    let out = cli_exec(&server, &[&node, "hostname >/dev/null && echo -n ok", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["stdout"], "ok");
    assert_eq!(result["status"], "completed");
    assert_eq!(result["exit_code"], 0);

    // --file sends a script as it is: quotes, dollars and newlines need no escaping.
    let script = dir.path().join("script.sh");
    std::fs::write(&script, "#!/bin/bash\nname='it'\"'\"'s'\necho \"$name $((6*7))\"\n").unwrap();
    let out = cli_exec(&server, &[&node, "--file", script.to_str().unwrap()]).await;
    assert_eq!(text(&out.stdout), "it's 42\n", "{}", text(&out.stderr));

    // A timeout kills the command's whole process group and exits 124.
    let pidfile = dir.path().join("pid");
    let cmd = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
    let out = cli_exec(&server, &[&node, &cmd, "--timeout", "1s"]).await;
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("timed out"));
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let gone = eventually(Duration::from_secs(10), || async move {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
    })
    .await;
    assert!(gone, "the background sleep of the timed-out command was killed too");

    // Bad input: an unknown node is a clear error.
    let out = cli_exec(&server, &["node-nosuch", "true"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_command_and_a_server_restart_never_leave_a_command_pending() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(&data);
    let http = reqwest::Client::new();
    let mut agent = real_agent(&server, &http, dir.path(), "real-body").await;
    let node = agent.node.clone();
    let submit = |url: String, body: serde_json::Value| {
        let http = http.clone();
        let node = node.clone();
        async move {
            call(
                &http,
                reqwest::Method::POST,
                &format!("{url}/api/v1/nodes/{node}/exec"),
                Some(ADMIN),
                Some(body),
            )
            .await
            .1["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let result = |url: String, exec: String| {
        let http = http.clone();
        let node = node.clone();
        async move {
            call(
                &http,
                reqwest::Method::GET,
                &format!("{url}/api/v1/nodes/{node}/exec/{exec}/result"),
                Some(ADMIN),
                None,
            )
            .await
            .1
        }
    };

    // The agent dies while running a command; when it comes back it asks for work,
    // and the server ends the lost command instead of leaving it dispatched forever.
    let lost = submit(server.url.clone(), json!({"command": "sleep 60", "timeout": 120})).await;
    let url = server.url.clone();
    assert!(
        eventually(Duration::from_secs(20), || async {
            result(url.clone(), lost.clone()).await["status"] == "dispatched"
        })
        .await
    );
    agent.kill9();
    agent.start();
    assert!(
        eventually(Duration::from_secs(30), || async {
            result(url.clone(), lost.clone()).await["status"] == "failed"
        })
        .await
    );
    assert_eq!(result(server.url.clone(), lost.clone()).await["reason"], "agent_restarted");

    // Commands queued while the agent is away survive a kill -9 of the server.
    agent.kill9();
    let queued = submit(server.url.clone(), json!({"command": "echo survived"})).await;
    server.kill9();
    let server = ServerProcess::start(&data);
    // The agent keeps its server address from enrollment: point it at the new port.
    let mut identity: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(agent.state.join("identity.json")).unwrap()).unwrap();
    identity["server_url"] = json!(server.url);
    std::fs::write(agent.state.join("identity.json"), identity.to_string()).unwrap();
    agent.start();
    let url = server.url.clone();
    assert!(
        eventually(Duration::from_secs(30), || async {
            result(url.clone(), queued.clone()).await["status"] == "completed"
        })
        .await
    );
    assert_eq!(result(server.url.clone(), queued).await["stdout"], "survived\n");
}

/// Runs an admin `hydracluster` command against the server.
async fn cli(server: &ServerProcess, args: &[&str]) -> Output {
    let mut cmd = Command::new(hydracluster());
    cmd.args(args).args(["--server", &server.url, "--admin-token", ADMIN]);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_reaches_queue_cancel_reprovision_heads_and_anomalies() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let http = reqwest::Client::new();
    let (node, _token) = {
        let (id, token) = enroll(&server.url, &http, "cli-body").await;
        crate::common::agent::approve(&server, &http, &id).await;
        (id, token)
    };
    // A queued command shows in the queue and can be cancelled by id.
    let (_, queued) = call(
        &http,
        reqwest::Method::POST,
        &format!("{}/api/v1/nodes/{node}/exec", server.url),
        Some(ADMIN),
        Some(json!({"command": "echo later"})),
    )
    .await;
    let exec = queued["id"].as_str().unwrap();
    let out = cli(&server, &["queue", &node]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(exec) && text(&out.stdout).contains("echo later"));
    let out = cli(&server, &["cancel", &node, exec]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("cancelled"));
    let out = cli(&server, &["cancel", &node, exec]).await;
    assert!(!out.status.success(), "cancelling twice is refused");
    assert!(text(&out.stderr).contains("409"));

    let out = cli(&server, &["reprovision", &node]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("reprovision requested"));
    let out = cli(&server, &["heads", "--json"]).await;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), json!([]));
    let out = cli(&server, &["anomalies"]).await;
    assert_eq!(text(&out.stdout), "no anomalies\n");
}
