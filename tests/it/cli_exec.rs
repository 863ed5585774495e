//! End to end with real processes only: `hydracluster serve`, a real `hydranode run`
//! running real commands with bash, and the `hydracluster exec` CLI an operator types.

use crate::common::agent::server_with_agent;
use crate::common::*;
use serde_json::{json, Value};
use std::process::Output;
use std::time::Duration;

/// Runs `hydracluster exec ARGS…` as an admin.
async fn cli_exec(server: &ServerProcess, args: &[&str]) -> Output {
    admin_cli(server, &[&["exec"], args].concat()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_commands_on_a_real_agent() {
    let (dir, server, agent) = server_with_agent("", "real-body").await;
    let node = agent.node.clone();

    // stdout and stderr apart, and the exit code follows the remote command's.
    let out = cli_exec(&server, &[&node, "echo out; echo err >&2; exit 7"]).await;
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"));

    // --json prints the result object for scripts.
    let out = cli_exec(&server, &[&node, "hostname >/dev/null && echo -n ok", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
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

/// Queues `command` on the node; its exec id.
async fn submit(server: &ServerProcess, node: &str, body: Value) -> String {
    let (status, queued) = post(server, &format!("/api/v1/nodes/{node}/exec"), ADMIN, body).await;
    assert_eq!(status, 202, "{queued}");
    queued["id"].as_str().unwrap().to_owned()
}

/// The command's result, or its state so far.
async fn result(server: &ServerProcess, node: &str, exec: &str) -> Value {
    get(server, &format!("/api/v1/nodes/{node}/exec/{exec}/result"), ADMIN).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_command_and_a_server_restart_never_leave_a_command_pending() {
    let (dir, mut server, mut agent) = server_with_agent("", "real-body").await;
    let node = agent.node.clone();

    // The agent dies while running a command; when it comes back it asks for work,
    // and the server ends the lost command instead of leaving it dispatched forever.
    let lost = submit(&server, &node, json!({"command": "sleep 60", "timeout": 120})).await;
    assert!(
        eventually(GUARD, || async { result(&server, &node, &lost).await["status"] == "dispatched" }).await
    );
    agent.kill9();
    agent.start();
    let failed = eventually(Duration::from_secs(30), || async {
        result(&server, &node, &lost).await["status"] == "failed"
    });
    assert!(failed.await);
    assert_eq!(result(&server, &node, &lost).await["reason"], "agent_restarted");

    // Commands queued while the agent is away survive a kill -9 of the server.
    agent.kill9();
    let queued = submit(&server, &node, json!({"command": "echo survived"})).await;
    server.kill9();
    let server = ServerProcess::start(&dir.path().join("data"));
    // The agent keeps its server address from enrollment: point it at the new port.
    agent.move_to(&server);
    agent.start();
    let completed = eventually(Duration::from_secs(30), || async {
        result(&server, &node, &queued).await["status"] == "completed"
    });
    assert!(completed.await);
    assert_eq!(result(&server, &node, &queued).await["stdout"], "survived\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_reaches_queue_cancel_reprovision_heads_and_anomalies() {
    let (_dir, server) = server_in_temp_dir("");
    let (node, _) = approved_body(&server, "cli-body").await;
    // A queued command shows in the queue and can be cancelled by id.
    let exec = &submit(&server, &node, json!({"command": "echo later"})).await;
    let out = admin_cli(&server, &["queue", &node]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(exec) && text(&out.stdout).contains("echo later"));
    let out = admin_cli(&server, &["cancel", &node, exec]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("cancelled"));
    let out = admin_cli(&server, &["cancel", &node, exec]).await;
    assert!(!out.status.success(), "cancelling twice is refused");
    assert!(text(&out.stderr).contains("409"));

    let out = admin_cli(&server, &["reprovision", &node]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("reprovision requested"));
    let out = admin_cli(&server, &["heads", "--json"]).await;
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!([]));
    let out = admin_cli(&server, &["anomalies"]).await;
    assert_eq!(text(&out.stdout), "no anomalies\n");
}
