//! End to end: the exec queue over real HTTP, with the agent side played by the test
//! (the real `hydranode` agent has its own tests in tests/it/agent.rs). Every command
//! ends: completed, timed out, cancelled, failed or expired — never pending forever.

use crate::common::*;
use hydra::cluster::config::Config;
use serde_json::{json, Value};
use std::time::Duration;

async fn submit(s: &TestServer, node: &str, body: Value) -> (u16, Value) {
    post(s, &format!("/api/v1/nodes/{node}/exec"), ADMIN, body).await
}

async fn fetch(s: &TestServer, token: &str, wait: u64) -> (u16, Value) {
    get(s, &format!("/api/v1/body/exec?wait={wait}"), token).await
}

async fn report(s: &TestServer, token: &str, body: Value) -> (u16, Value) {
    post(s, "/api/v1/body/exec/result", token, body).await
}

async fn result(s: &TestServer, node: &str, exec: &str) -> (u16, Value) {
    get(s, &format!("/api/v1/nodes/{node}/exec/{exec}/result"), ADMIN).await
}

/// The watchdog ends a command 200 ms past its timeout, looking every 50 ms.
fn short_grace(c: &mut Config) {
    c.exec_timeout_grace = Duration::from_millis(200);
    c.exec_watchdog_interval = Duration::from_millis(50);
}

/// A command not delivered within 300 ms expires.
fn short_delivery(c: &mut Config) {
    c.exec_delivery_deadline = Duration::from_millis(300);
    c.exec_watchdog_interval = Duration::from_millis(50);
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_command_goes_from_queued_to_dispatched_to_completed() {
    let (s, node, token) = app_with_body(|_| {}).await;
    heartbeat(&s, &token, json!({})).await;
    let (status, queued) = submit(&s, &node, json!({"command": "echo hi", "timeout": "30s"})).await;
    assert_eq!(status, 202, "{queued}");
    let exec = id_of(&queued);
    assert!(exec.starts_with("exec-"));
    assert_eq!(queued["node_status"], "online");
    assert_eq!(
        result(&s, &node, &exec).await,
        (202, json!({"id": exec, "status": "pending", "attempts": 0}))
    );

    let (status, cmd) = fetch(&s, &token, 0).await;
    assert_eq!(status, 200);
    assert_eq!(cmd, json!({"id": exec, "command": "echo hi", "timeout_ms": 30000}));
    assert_eq!(result(&s, &node, &exec).await.1["status"], "dispatched");
    let (_, q) = get(&s, &format!("/api/v1/nodes/{node}/exec/queue"), ADMIN).await;
    assert_eq!(q["in_flight"]["id"], exec.as_str());

    let (status, _) = report(
        &s,
        &token,
        json!({"id": exec, "exit_code": 3, "stdout": "hi\n", "stderr": "warn\n", "duration_ms": 12}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, r) = result(&s, &node, &exec).await;
    assert_eq!(status, 200);
    assert_eq!(r["status"], "completed");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["stdout"], "hi\n");
    assert_eq!(r["stderr"], "warn\n");
    assert_eq!(r["truncated"], false);
    assert_eq!(r["duration_ms"], 12);
    // Nothing left: the agent gets 204.
    assert_eq!(fetch(&s, &token, 0).await.0, 204);
}

#[tokio::test]
async fn a_long_polling_agent_gets_a_command_the_moment_it_is_queued() {
    let (s, node, token) = app_with_body(|_| {}).await;
    let poll = spawn_get(&s, "/api/v1/body/exec?wait=30", &token);
    polls_parked(&s, 1).await;
    let (_, queued) = submit(&s, &node, json!({"command": "uptime"})).await;
    // The poll was waiting up to 30 s; it answers with the command instead of 204.
    let (status, cmd) = tokio::time::timeout(GUARD, poll).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert_eq!(cmd["id"], queued["id"]);
}

#[tokio::test]
async fn a_waiting_result_request_answers_the_moment_the_command_ends() {
    let (s, node, token) = app_with_body(|_| {}).await;
    let exec = id_of(&submit(&s, &node, json!({"command": "date"})).await.1);
    let waiting = spawn_get(&s, &format!("/api/v1/nodes/{node}/exec/{exec}/result?wait=30"), ADMIN);
    polls_parked(&s, 1).await;
    fetch(&s, &token, 0).await;
    report(&s, &token, json!({"id": exec, "exit_code": 0, "stdout": "now"})).await;
    let (status, r) = tokio::time::timeout(GUARD, waiting).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert_eq!(r["stdout"], "now");
    // Without wait, an unfinished command answers 202 at once.
    let other = id_of(&submit(&s, &node, json!({"command": "later"})).await.1);
    assert_eq!(result(&s, &node, &other).await.0, 202);
}

#[tokio::test]
async fn two_polls_racing_for_one_command_do_not_end_it() {
    // A half-open connection or a client retry can leave two polls of one node parked.
    let (s, node, token) = app_with_body(|_| {}).await;
    let poll = || spawn_get(&s, "/api/v1/body/exec?wait=3", &token);
    let (a, b) = (poll(), poll());
    polls_parked(&s, 2).await;
    let exec = id_of(&submit(&s, &node, json!({"command": "once"})).await.1);
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let got: Vec<u16> = [a.0, b.0].into_iter().filter(|s| *s == 200).collect();
    assert_eq!(got.len(), 1, "exactly one poll gets the command: {a:?} {b:?}");
    assert_eq!(result(&s, &node, &exec).await.1["status"], "dispatched", "the other poll did not end it");
    assert_eq!(report(&s, &token, json!({"id": exec, "exit_code": 0})).await.0, 200);
}

#[tokio::test]
async fn commands_run_one_at_a_time_in_fifo_order() {
    let (s, node, token) = app_with_body(|_| {}).await;
    // More than the finished results the queue keeps (FINISHED_KEPT), so that the
    // oldest results are let go while the rest still drain in order.
    let mut ids = Vec::new();
    for i in 0..250 {
        ids.push(id_of(&submit(&s, &node, json!({"command": format!("echo {i}")})).await.1));
    }
    let mut ran = Vec::new();
    loop {
        let (status, cmd) = fetch(&s, &token, 0).await;
        if status == 204 {
            break;
        }
        ran.push(id_of(&cmd));
        let (status, _) =
            report(&s, &token, json!({"id": cmd["id"], "exit_code": 0, "stdout": cmd["command"]})).await;
        assert_eq!(status, 200);
    }
    assert_eq!(ran, ids, "drained in order");
    let (_, last) = result(&s, &node, ids.last().unwrap()).await;
    assert_eq!(last["stdout"], "echo 249");
}

#[tokio::test]
async fn cancelling_in_flight_discards_the_late_result() {
    let (s, node, token) = app_with_body(|_| {}).await;
    let exec = id_of(&submit(&s, &node, json!({"command": "sleep 100"})).await.1);
    fetch(&s, &token, 0).await;
    // The agent watches its command and learns of the cancel at once.
    let watch = spawn_get(&s, &format!("/api/v1/body/exec/{exec}/watch?wait=30"), &token);
    let cancel = format!("/api/v1/nodes/{node}/exec/queue/{exec}");
    let (status, c) = delete(&s, &cancel, ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!(c, json!({"id": exec, "status": "cancelled", "was": "dispatched"}));
    let (_, w) = tokio::time::timeout(GUARD, watch).await.unwrap().unwrap();
    assert_eq!(w["status"], "cancelled");
    let (status, body) = report(&s, &token, json!({"id": exec, "exit_code": 0, "stdout": "late"})).await;
    assert_eq!(status, 409, "{body}");
    let (_, r) = result(&s, &node, &exec).await;
    assert_eq!(r["status"], "cancelled");
    assert_eq!(r["stdout"], "", "the late output was discarded");
    // Cancelling again is a clear conflict.
    assert_eq!(delete(&s, &cancel, ADMIN).await.0, 409);
}

#[tokio::test]
async fn a_cancel_racing_the_result_ends_the_command_exactly_once() {
    let (s, node, token) = app_with_body(|_| {}).await;
    for _ in 0..20 {
        let exec = id_of(&submit(&s, &node, json!({"command": "true"})).await.1);
        fetch(&s, &token, 0).await;
        let cancel = format!("/api/v1/nodes/{node}/exec/queue/{exec}");
        let (c, r) =
            tokio::join!(delete(&s, &cancel, ADMIN), report(&s, &token, json!({"id": exec, "exit_code": 0})));
        // Exactly one of them wins; the other gets 409.
        assert!(matches!((c.0, r.0), (200, 409) | (409, 200)), "cancel {} result {}", c.0, r.0);
        let (_, end) = result(&s, &node, &exec).await;
        assert_eq!(end["status"], if c.0 == 200 { "cancelled" } else { "completed" });
    }
    let ends = events(&s, "types=exec.completed,exec.cancelled").await;
    assert_eq!(ends.len(), 20, "one ending per command");
}

#[tokio::test]
async fn results_from_the_wrong_node_duplicates_and_unknown_ids_are_refused() {
    let (s, node, token) = app_with_body(|_| {}).await;
    let (_, other_token) = approved_body(&s, "body-2").await;
    let exec = id_of(&submit(&s, &node, json!({"command": "id"})).await.1);
    fetch(&s, &token, 0).await;
    let before = s.ledger().committed_seq();
    let (status, _) = report(&s, &other_token, json!({"id": exec, "exit_code": 0})).await;
    assert_eq!(status, 403, "another node's token");
    let (status, _) = report(&s, &token, json!({"id": "exec-nope", "exit_code": 0})).await;
    assert_eq!(status, 404);
    let (status, _) = report(&s, &token, json!({"id": "../x", "exit_code": 0})).await;
    assert_eq!(status, 400);
    let (status, _) = report(&s, ADMIN, json!({"id": exec, "exit_code": 0})).await;
    assert_eq!(status, 403, "an admin token is not a node token");
    assert_eq!(s.ledger().committed_seq(), before, "refused results change nothing");
    assert_eq!(report(&s, &token, json!({"id": exec, "exit_code": 0})).await.0, 200);
    assert_eq!(report(&s, &token, json!({"id": exec, "exit_code": 0})).await.0, 409, "duplicate");
}

#[tokio::test]
async fn bad_submissions_get_clear_errors() {
    let (s, node, _) = app_with_body(|c| c.exec_max_command_bytes = 1000).await;
    let (pending, _) = enroll(&s, "pending-1").await;
    let cases = [
        (json!({"command": "  "}), 400, "empty"),
        (json!({"command": "x", "timeout": 0}), 400, "timeout"),
        (json!({"command": "x", "timeout": -5}), 400, "timeout"),
        (json!({"command": "x", "timeout": "100d"}), 400, "timeout"),
        (json!({"command": "x", "timeout": "soon"}), 400, "timeout"),
        (json!({"command": "x".repeat(2000)}), 413, "limit"),
        (json!({"cmd": "x"}), 422, "cmd"),
    ];
    for (body, want, words) in cases {
        let (status, answer) = submit(&s, &node, body.clone()).await;
        assert_eq!(status, want, "{body} → {answer}");
        assert!(answer["error"].as_str().unwrap().contains(words), "{answer}");
    }
    let (status, answer) = submit(&s, &pending, json!({"command": "x"})).await;
    assert_eq!(status, 409);
    assert!(answer["error"].as_str().unwrap().contains("pending"));
    assert_eq!(submit(&s, "node-nosuch", json!({"command": "x"})).await.0, 404);
    assert_eq!(result(&s, &node, "exec-nosuch").await.0, 404);
}

#[tokio::test]
async fn an_offline_node_accepts_commands_and_says_so() {
    let (s, node, token) = app_with_body(|_| {}).await;
    let (status, queued) = submit(&s, &node, json!({"command": "hostname"})).await;
    assert_eq!(status, 202);
    assert_eq!(queued["node_status"], "offline");
    assert!(queued["note"].as_str().unwrap().contains("offline"));
    // When it comes back, the command is there.
    heartbeat(&s, &token, json!({})).await;
    assert_eq!(fetch(&s, &token, 0).await.1["id"], queued["id"]);
}

#[tokio::test]
async fn output_over_the_cap_is_cut_and_marked() {
    let (s, node, token) = app_with_body(|c| c.exec_output_cap = 1000).await;
    let exec = id_of(&submit(&s, &node, json!({"command": "yes"})).await.1);
    fetch(&s, &token, 0).await;
    let (status, _) =
        report(&s, &token, json!({"id": exec, "exit_code": 0, "stdout": "y".repeat(3000), "stderr": "e"}))
            .await;
    assert_eq!(status, 200);
    let (_, r) = result(&s, &node, &exec).await;
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(r["stderr"], "e");
    assert_eq!(r["truncated"], true);
}

#[tokio::test]
async fn the_default_cap_of_one_mebibyte_per_stream_fits_in_a_result() {
    let (s, node, token) = app_with_body(|_| {}).await;
    let exec = id_of(&submit(&s, &node, json!({"command": "big"})).await.1);
    fetch(&s, &token, 0).await;
    let mib = "o".repeat(1024 * 1024);
    let (status, body) =
        report(&s, &token, json!({"id": exec, "exit_code": 0, "stdout": mib, "stderr": mib})).await;
    assert_eq!(status, 200, "{body}");
    let (_, r) = result(&s, &node, &exec).await;
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1024 * 1024);
    assert_eq!(r["truncated"], false);
}

#[tokio::test]
async fn the_watchdog_times_out_a_silent_agent_and_the_queue_moves_on() {
    let (s, node, token) = app_with_body(short_grace).await;
    let first = id_of(&submit(&s, &node, json!({"command": "hang", "timeout": 1})).await.1);
    let second = id_of(&submit(&s, &node, json!({"command": "next"})).await.1);
    fetch(&s, &token, 0).await;
    let ended = eventually(GUARD, || async { result(&s, &node, &first).await.0 == 200 }).await;
    assert!(ended);
    let (_, r) = result(&s, &node, &first).await;
    assert_eq!(r["status"], "timed_out");
    assert!(r["reason"].as_str().unwrap().contains("watchdog"));
    // The late result is discarded and the next command is delivered.
    assert_eq!(report(&s, &token, json!({"id": first, "exit_code": 0})).await.0, 409);
    assert_eq!(fetch(&s, &token, 0).await.1["id"], second.as_str());
}

#[tokio::test]
async fn undelivered_commands_expire() {
    let (s, node, _) = app_with_body(short_delivery).await;
    let exec = id_of(&submit(&s, &node, json!({"command": "later"})).await.1);
    let ended = eventually(GUARD, || async { result(&s, &node, &exec).await.0 == 200 }).await;
    assert!(ended);
    assert_eq!(result(&s, &node, &exec).await.1["status"], "expired");
}

#[tokio::test]
async fn when_a_node_goes_offline_its_command_is_retried_or_failed() {
    let (s, node, token) = app_with_body(quick_offline).await;
    heartbeat(&s, &token, json!({})).await;
    let retried = id_of(&submit(&s, &node, json!({"command": "a", "retry_on_disconnect": true})).await.1);
    let failed = id_of(&submit(&s, &node, json!({"command": "b"})).await.1);
    fetch(&s, &token, 0).await;
    assert!(
        eventually(GUARD, || async { crate::common::node(&s, &node).await["node_status"] == "offline" })
            .await
    );
    // exec-a went back to the front of the queue; it is sent again when the node returns.
    assert_eq!(result(&s, &node, &retried).await.1["status"], "pending");
    heartbeat(&s, &token, json!({})).await;
    assert_eq!(fetch(&s, &token, 0).await.1["id"], retried.as_str());
    report(&s, &token, json!({"id": retried, "exit_code": 0})).await;
    // exec-b does not allow retry: when the node drops again while running it, it fails.
    fetch(&s, &token, 0).await;
    assert!(eventually(GUARD, || async { result(&s, &node, &failed).await.0 == 200 }).await);
    let (_, r) = result(&s, &node, &failed).await;
    assert_eq!(r["status"], "failed");
    assert_eq!(r["reason"], "node_offline");
}

#[tokio::test]
async fn the_queue_survives_a_restart_and_can_be_cleared() {
    let (mut s, node, token) = app_with_body(|_| {}).await;
    let in_flight = id_of(&submit(&s, &node, json!({"command": "one"})).await.1);
    for c in ["two", "three"] {
        submit(&s, &node, json!({"command": c})).await;
    }
    fetch(&s, &token, 0).await;
    s.restart().await;
    let (_, q) = get(&s, &format!("/api/v1/nodes/{node}/exec/queue"), ADMIN).await;
    assert_eq!(q["in_flight"]["id"], in_flight.as_str());
    let commands: Vec<&str> =
        q["queued"].as_array().unwrap().iter().map(|c| c["command"].as_str().unwrap()).collect();
    assert_eq!(commands, ["two", "three"]);
    // The result of the command in flight before the restart is still accepted.
    assert_eq!(report(&s, &token, json!({"id": in_flight, "exit_code": 0})).await.0, 200);
    let (status, cleared) = delete(&s, &format!("/api/v1/nodes/{node}/exec/queue"), ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!(cleared["cancelled"], 2);
    assert_eq!(fetch(&s, &token, 0).await.0, 204);
}

#[tokio::test]
async fn removing_a_node_fails_its_commands() {
    let (s, node, token) = app_with_body(|_| {}).await;
    submit(&s, &node, json!({"command": "a"})).await;
    submit(&s, &node, json!({"command": "b"})).await;
    fetch(&s, &token, 0).await;
    delete(&s, &format!("/api/v1/nodes/{node}"), ADMIN).await;
    let failed = events(&s, "types=exec.failed").await;
    let reasons: Vec<&str> = failed.iter().map(|e| e["data"]["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["node_removed", "node_removed"]);
}

/// Runs one command on the node as its agent would and returns its id.
pub(crate) async fn run_printing(
    s: &TestServer,
    node: &str,
    token: &str,
    stdout: &str,
    stderr: &str,
) -> String {
    let (status, queued) = submit(s, node, json!({"command": "cat report"})).await;
    assert_eq!(status, 202, "{queued}");
    let exec = id_of(&queued);
    assert_eq!(fetch(s, token, 5).await.0, 200);
    let body = json!({"id": exec, "exit_code": 0, "stdout": stdout, "stderr": stderr, "duration_ms": 3});
    assert_eq!(report(s, token, body).await.0, 200);
    exec
}

/// `hydracluster audit --json` on the (stopped) server's data dir.
fn audit_json(s: &TestServer) -> Value {
    let (ok, out) = offline(&["audit", "--json"], s.dir.path());
    assert!(ok, "{out}");
    serde_json::from_str(out.lines().next().unwrap()).unwrap()
}

#[tokio::test]
async fn outputs_past_their_retention_are_pruned_and_the_audit_still_passes() {
    let (mut s, node, token) = app_with_body(|_| {}).await;
    heartbeat(&s, &token, json!({})).await;
    let exec = run_printing(&s, &node, &token, "kept for now\n", "a warning\n").await;
    let (_, r) = result(&s, &node, &exec).await;
    assert_eq!((r["stdout"].as_str(), r["stderr"].as_str()), (Some("kept for now\n"), Some("a warning\n")));
    assert_eq!(r["output_pruned"], false);
    s.stop().await;
    let audit = audit_json(&s);
    assert_eq!(audit["outputs"], json!({"present": 2, "pruned": 0}), "{audit}");

    // With a retention of 1 ms, the next pass of the watchdog drops both outputs.
    s.restart_with(|c| {
        c.exec_output_retention = Duration::from_millis(1);
        c.exec_watchdog_interval = Duration::from_millis(50);
    })
    .await;
    // One pass prunes one output after the other: wait for both.
    let pruned = eventually(GUARD, || async {
        let r = result(&s, &node, &exec).await.1;
        r["output_pruned"] == true && r["stdout"] == "" && r["stderr"] == ""
    })
    .await;
    assert!(pruned, "the outputs were never pruned");
    let (status, r) = result(&s, &node, &exec).await;
    assert_eq!(status, 200);
    assert_eq!((r["status"].as_str(), r["exit_code"].as_i64()), (Some("completed"), Some(0)));
    assert_eq!((r["stdout"].as_str(), r["stderr"].as_str()), (Some(""), Some("")));
    // The event still says what there was.
    let (_, log) = get(&s, "/api/v1/events/log?types=exec.completed", ADMIN).await;
    assert_eq!(log["events"][0]["data"]["output"]["stdout_bytes"], 13, "{log}");
    s.stop().await;
    // The audit reports them as pruned, not as tampering.
    let audit = audit_json(&s);
    assert_eq!(audit["ok"], true);
    assert_eq!(audit["outputs"], json!({"present": 0, "pruned": 2}), "{audit}");
}

/// A data dir holding the log that schema 2 wrote (output inline in the results), in
/// today's layout.
fn schema_2_data_dir() -> tempfile::TempDir {
    use hydra_core::store::{Record, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for (i, bytes) in crate::formats::log_records("cluster-log-v2.bin").iter().enumerate() {
        let event = hydra_events::decode(bytes).unwrap().event;
        store.append(&[Record { seq: i as u64 + 1, bytes, node_id: event.node_id() }], &[]).unwrap();
    }
    store.set_layout_version(hydra_migrations::LAYOUT_VERSION).unwrap();
    store.flush().unwrap();
    dir
}

#[tokio::test]
async fn results_written_by_schema_2_are_served_from_their_record() {
    let (node, done, timed_out) = ("node-0123456789abcdef", "exec-00000000000000a1", "exec-00000000000000a2");
    let mut s = serve_dir(schema_2_data_dir(), |_| {}).await.unwrap();
    let (status, r) = result(&s, node, done).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["stdout"].as_str(), r["stderr"].as_str(), r["output_pruned"].as_bool()),
        (Some("schema-2 stdout\n"), Some("schema-2 stderr\n"), Some(false)),
        "{r}"
    );
    let (_, r) = result(&s, node, timed_out).await;
    assert_eq!(
        (r["status"].as_str(), r["stdout"].as_str(), r["truncated"].as_bool()),
        (Some("timed_out"), Some("partial\n"), Some(true))
    );
    // The stream shows their sizes, not their text, as for today's results.
    let (_, log) = get(&s, "/api/v1/events/log?types=exec.completed", ADMIN).await;
    assert!(!log.to_string().contains("schema-2 stdout"), "{log}");
    assert_eq!(log["events"][0]["data"]["output"]["stdout_bytes"], 16, "{log}");
    s.stop().await;
    let audit = audit_json(&s);
    assert_eq!(
        audit["outputs"],
        json!({"present": 0, "pruned": 0}),
        "inline outputs are the chain's: {audit}"
    );
}
