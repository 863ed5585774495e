//! Who did what: named admin tokens (kept as hashes in the config, put in force again
//! on SIGHUP), the request id in the answer, in every log line of the request and in
//! the cause of the events it caused, and logs as JSON lines or plain text.

use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const ALICE: &str = "alice-secret-token";
const BOB: &str = "bob-secret-token";

fn sha256(token: &str) -> String {
    hex::encode(hydra_core::auth::hash_token(token))
}

fn admins(entries: &[(&str, &str)]) -> String {
    let mut yaml = String::from("enroll_per_minute: 0\nadmin_tokens:\n");
    for (name, token) in entries {
        yaml.push_str(&format!("  - {{name: {name}, sha256: \"{}\"}}\n", sha256(token)));
    }
    yaml
}

/// `hydracluster serve` on `config`, logging at debug level in `format` to `log`.
fn serve_logging(dir: &Path, config: &Path, format: &str) -> (ServerProcess, PathBuf) {
    let log = dir.join(format!("server-{format}.log"));
    let mut cmd = Command::new(hydracluster());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data")
        .arg(dir.join("data"))
        .env("HYDRACLUSTER_ADMIN_TOKEN", ADMIN)
        .env("HYDRA_LOG", "info,hydra=debug")
        .env("HYDRA_LOG_FORMAT", format)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child: Child = cmd.spawn().unwrap();
    let url = wait_for_line(&mut child, "hydracluster listening on ");
    (ServerProcess { child, url, http: reqwest::Client::new() }, log)
}

fn json_lines(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

async fn log_has(log: &Path, what: impl Fn(&Value) -> bool) -> bool {
    eventually(GUARD, || async { json_lines(log).iter().any(&what) }).await
}

fn hangup(server: &ServerProcess) {
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
}

async fn status_as(s: &ServerProcess, token: &str) -> u16 {
    get(s, "/api/v1/nodes", token).await.0
}

#[tokio::test]
async fn named_admins_sign_their_events_and_are_replaced_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hydracluster.yaml");
    std::fs::write(&config, admins(&[("alice", ALICE)])).unwrap();
    let (s, log) = serve_logging(dir.path(), &config, "json");

    // Alice approves a node, under a request id of her own.
    let (id, _) = enroll(&s, "b1").await;
    let body = json!({"roles": ["hydrabody"], "district": "north", "venue": "arena"});
    let resp = s
        .http
        .post(format!("{}/api/v1/nodes/{id}/approve", s.url))
        .bearer_auth(ALICE)
        .header("x-request-id", "ticket-4711")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "ticket-4711", "the answer names the request");
    let history = get(&s, &format!("/api/v1/nodes/{id}/history"), ADMIN).await.1;
    let approved =
        history["events"].as_array().unwrap().iter().find(|e| e["type"] == "node.approved").cloned();
    assert_eq!(approved.unwrap()["cause"], "admin:alice request:ticket-4711", "{history}");
    // The same id is on the request's log lines.
    assert!(
        log_has(&log, |l| l["span"]["request_id"] == "ticket-4711" && l["span"]["path"].as_str().is_some())
            .await,
        "the request's log lines carry its id"
    );

    // A request without an id gets one, and its events name it.
    let resp = s.http.delete(format!("{}/api/v1/nodes/{id}", s.url)).bearer_auth(ALICE).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let given = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(given.len(), 16, "a generated id: {given}");
    let removed = events(&s, "types=node.removed").await;
    assert_eq!(removed[0]["cause"], format!("admin:alice request:{given}"));
    // An id that could break a log line is replaced.
    let resp =
        s.http.get(format!("{}/api/v1/health", s.url)).header("x-request-id", "a b\"c").send().await.unwrap();
    assert_ne!(resp.headers()["x-request-id"], "a b\"c");

    // A broken file on SIGHUP changes nothing, and says why.
    std::fs::write(&config, "admin_tokens:\n  - {name: admin, sha256: \"00\"}\n").unwrap();
    hangup(&s);
    assert!(log_has(&log, |l| l["message"].as_str().is_some_and(|m| m.contains("settings refused"))).await);
    assert_eq!(status_as(&s, ALICE).await, 200, "alice is still in force");

    // Bob in, Alice out: at once, without a restart; the first token stays.
    std::fs::write(&config, admins(&[("bob", BOB)])).unwrap();
    hangup(&s);
    assert!(eventually(GUARD, || async { status_as(&s, BOB).await == 200 }).await, "bob's token is taken");
    assert_eq!(status_as(&s, ALICE).await, 401, "alice's token stopped working");
    assert_eq!(status_as(&s, ADMIN).await, 200, "the first admin token keeps working");

    // Every line of the log is one JSON object with the fields a collector needs.
    for line in json_lines(&log) {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
    }
}

#[tokio::test]
async fn text_logs_in_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hydracluster.yaml");
    std::fs::write(&config, "enroll_per_minute: 0\n").unwrap();
    let (s, log) = serve_logging(dir.path(), &config, "text");
    let resp = s
        .http
        .get(format!("{}/api/v1/health", s.url))
        .header("x-request-id", "plain-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let read = || std::fs::read_to_string(&log).unwrap();
    assert!(eventually(GUARD, || async { read().contains("request_id=plain-1") }).await, "{}", read());
    assert!(!read().contains('\x1b'), "escape codes in a log file: {:?}", read());
}

#[tokio::test]
async fn a_bad_admin_list_or_log_format_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    let cases = [
        ("admin_tokens:\n  - {name: alice, sha256: \"xyz\"}\n".to_owned(), "sha256 must be 64 hex digits"),
        (
            "admin_tokens:\n  - {name: admin, sha256: \"".to_owned() + &sha256("x") + "\"}\n",
            "first admin token",
        ),
        (admins(&[("alice", ALICE), ("alice", BOB)]), "repeats the name"),
        (admins(&[("alice", ALICE), ("bob", ALICE)]), "repeats the name or the token"),
        (admins(&[("al ice", ALICE)]), "must be 1 to 64 letters"),
    ];
    for (yaml, expected) in cases {
        std::fs::write(&config, &yaml).unwrap();
        let (ok, out) = offline(&["serve", "--config", config.to_str().unwrap()], &dir.path().join("data"));
        assert!(!ok && out.contains(expected), "{yaml} → {out}");
    }
    let out = Command::new(hydracluster()).arg("nodes").env("HYDRA_LOG_FORMAT", "xml").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(all_output(&out).contains("HYDRA_LOG_FORMAT must be `text` or `json`, not `xml`"));
}
