//! Simulated agents, shared by `hydra-sim` and `hydra-bench exec`: enrolling and
//! approving a fleet over HTTP, and the agent side of the exec protocol (long-poll the
//! next command, pretend to run it, watch for a cancel, post the result), kiosk heads
//! registered with the fleet token, and the agent side of reprovisioning (the flag in
//! the heartbeat answer, then `POST /api/v1/body/provision-result`).
//!
//! Everything takes a borrowed `reqwest::Client`: thousands of agents in one process
//! share one client and its connection pool, as one process can afford thousands of
//! sockets but not thousands of pools.

use anyhow::{bail, Context};
use futures_util::{stream, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// Slack over the long-poll's own wait before the client gives up on an answer: the
/// server answers at the end of the wait, so only a dead connection hits this.
const POLL_SLACK: Duration = Duration::from_secs(15);
/// Limit for the short requests (enroll, approve, heartbeat, result, watch setup).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP client sized for `connections` concurrent requests to one server: the
/// idle pool keeps them all (an idle limit below the number of agents would close and
/// reopen connections on every long-poll), and Nagle is off since every request is a
/// small write that waits for its answer.
pub fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(connections)
        .connect_timeout(Duration::from_secs(10))
        .build()?)
}

/// An enrolled and approved simulated node: its id and its bearer token.
#[derive(Debug, Clone)]
pub struct SimNode {
    pub index: usize,
    pub id: String,
    pub token: String,
}

/// How to enroll a simulated fleet.
#[derive(Debug, Clone)]
pub struct Fleet<'a> {
    pub count: usize,
    /// Node names are `<prefix>-00042`.
    pub prefix: &'a str,
    pub district: &'a str,
    /// Venues, round-robin.
    pub venues: &'a [String],
    /// The environment every node is placed in (`staging` or `production`); `None`
    /// leaves the server's default, production.
    pub environment: Option<&'a str>,
    /// Enrollments in flight at once: each is two durable writes, so doing them one
    /// by one would make a fleet of thousands take a minute to start.
    pub concurrency: usize,
}

/// Enrolls (`POST /enroll`) and approves (admin API) `fleet.count` nodes, returned in
/// index order. The server must not rate-limit enrollment (`enroll_per_minute: 0`).
pub async fn enroll_fleet(
    http: &reqwest::Client,
    base: &str,
    admin_token: &str,
    fleet: &Fleet<'_>,
) -> anyhow::Result<Vec<SimNode>> {
    each_node(fleet, |i| join(http, base, admin_token, fleet, Joining::Body, i)).await
}

/// Registers `fleet.count` kiosk heads (`POST /api/v1/heads` with the fleet
/// enrollment token; heads are approved at once), in the fleet's district and venues
/// round-robin, then places each in `fleet.environment` through the admin API when
/// one is given (heads enroll into production). Returned in index order.
pub async fn register_heads(
    http: &reqwest::Client,
    base: &str,
    fleet_token: &str,
    admin_token: &str,
    fleet: &Fleet<'_>,
) -> anyhow::Result<Vec<SimNode>> {
    each_node(fleet, |i| join(http, base, admin_token, fleet, Joining::Head { fleet_token }, i)).await
}

/// Runs `one` for node numbers `0..fleet.count`, `fleet.concurrency` at a time; the
/// nodes in index order.
async fn each_node<F, Fut>(fleet: &Fleet<'_>, one: F) -> anyhow::Result<Vec<SimNode>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<SimNode>>,
{
    let mut nodes: Vec<SimNode> = stream::iter(0..fleet.count)
        .map(one)
        .buffer_unordered(fleet.concurrency.max(1))
        .try_collect()
        .await?;
    nodes.sort_by_key(|n| n.index);
    Ok(nodes)
}

/// How a simulated node joins the cluster.
#[derive(Debug, Clone, Copy)]
enum Joining<'a> {
    /// A body: `POST /enroll`, then an admin approves it into its place.
    Body,
    /// A kiosk head: `POST /api/v1/heads` with the fleet enrollment token, placed and
    /// approved at once; an admin only moves it when another environment is wanted.
    Head { fleet_token: &'a str },
}

/// Node number `i` of `fleet` joins as `how` says and ends up approved in the fleet's
/// district, its venue and the fleet's environment.
async fn join(
    http: &reqwest::Client,
    base: &str,
    admin_token: &str,
    fleet: &Fleet<'_>,
    how: Joining<'_>,
    i: usize,
) -> anyhow::Result<SimNode> {
    let name = format!("{}-{i:05}", fleet.prefix);
    let venue = venue_of(fleet, i);
    let (url, token, request, id_key, what) = match how {
        Joining::Body => {
            let ip = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256);
            let request = json!({"name": name, "ip": ip});
            (format!("{base}/enroll"), None, request, "node_id", format!("enrolling {name}"))
        }
        Joining::Head { fleet_token } => {
            let request = json!({"name": name, "district": fleet.district, "venue": venue});
            let what = format!("registering head {name}");
            (format!("{base}/api/v1/heads"), Some(fleet_token), request, "head_id", what)
        }
    };
    let body = post_json(http, &url, token, &request, &what).await?;
    let (Some(id), Some(token)) = (body[id_key].as_str(), body["token"].as_str()) else {
        bail!("{what}: no {id_key} and token in {body}");
    };
    // The admin's part: (the admin API's action on the node, its body, what it does).
    let admin = match (how, fleet.environment) {
        (Joining::Body, environment) => {
            let mut approve = json!({"roles": ["hydrabody"], "district": fleet.district, "venue": venue});
            if let Some(env) = environment {
                approve["environment"] = json!(env);
            }
            Some(("approve", approve, "approving"))
        }
        (Joining::Head { .. }, Some(env)) => {
            let placement = json!({"district": fleet.district, "venue": venue, "environment": env});
            Some(("placement", placement, "placing head"))
        }
        (Joining::Head { .. }, None) => None,
    };
    if let Some((action, request, doing)) = admin {
        let url = format!("{base}/api/v1/nodes/{id}/{action}");
        post_json(http, &url, Some(admin_token), &request, &format!("{doing} {id}")).await?;
    }
    Ok(SimNode { index: i, id: id.to_owned(), token: token.to_owned() })
}

/// POSTs JSON (with a bearer token when given) and returns the JSON answer; a failure
/// or an error status says `what` was being done.
async fn post_json(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
    what: &str,
) -> anyhow::Result<Value> {
    let mut request = http.post(url).json(body).timeout(REQUEST_TIMEOUT);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.with_context(|| what.to_owned())?;
    if !r.status().is_success() {
        bail!("{what}: {} {}", r.status(), r.text().await.unwrap_or_default());
    }
    Ok(r.json().await.unwrap_or_default())
}

/// The venue of node number `i`: the fleet's venues round-robin.
fn venue_of<'a>(fleet: &'a Fleet<'_>, i: usize) -> &'a str {
    fleet.venues.get(i % fleet.venues.len().max(1)).map_or("sim-venue", String::as_str)
}

/// Whether a heartbeat answer tells the node to reinstall (`"reprovision": true`,
/// carried once, by the answer to the heartbeat that recorded `provision.started`).
pub fn reprovision_requested(answer: &Value) -> bool {
    answer["reprovision"].as_bool().unwrap_or(false)
}

/// The body of `POST /api/v1/body/provision-result`: a success with the installed
/// version, or the simulated failure.
pub fn provision_result_body(success: bool, version: &str) -> Value {
    if success {
        json!({"success": true, "version": version})
    } else {
        json!({"success": false, "error": "simulated failure"})
    }
}

/// `POST /api/v1/body/provision-result`. 409 means the node was not provisioning
/// (its run ended meanwhile, e.g. by the server's deadline): `Discarded`.
pub async fn post_provision_result(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    success: bool,
    version: &str,
) -> anyhow::Result<Posted> {
    let url = format!("{base}/api/v1/body/provision-result");
    post_report(http, &url, token, &provision_result_body(success, version)).await
}

/// A command handed to the agent by `GET /api/v1/body/exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub id: String,
    pub command: String,
    pub timeout_ms: u64,
}

/// The answer to a long-poll.
#[derive(Debug)]
pub enum Poll {
    Command(Assigned),
    /// 204: nothing was queued during the wait.
    Nothing,
    /// Any other status (401/403: the node was removed or rejected).
    Refused(StatusCode),
}

/// `GET /api/v1/body/exec?wait=N`: the next command, waiting up to `wait_s` for one.
pub async fn next_command(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    wait_s: u64,
) -> anyhow::Result<Poll> {
    let r = http
        .get(format!("{base}/api/v1/body/exec?wait={wait_s}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(wait_s) + POLL_SLACK)
        .send()
        .await?;
    match r.status() {
        StatusCode::NO_CONTENT => Ok(Poll::Nothing),
        StatusCode::OK => {
            let v: Value = r.json().await?;
            let id = v["id"].as_str().context("a command without an id")?.to_owned();
            let command = v["command"].as_str().unwrap_or_default().to_owned();
            let timeout_ms = v["timeout_ms"].as_u64().unwrap_or(60_000);
            Ok(Poll::Command(Assigned { id, command, timeout_ms }))
        }
        other => Ok(Poll::Refused(other)),
    }
}

/// What a simulated command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// The most a simulated `print N` prints: more than any server keeps (its
/// `exec_output_cap` is 1 MiB by default), and small enough to build in memory.
pub const PRINT_MAX: usize = 16 * 1024 * 1024;

/// What `command` does in the simulation: how long it "runs" and its outcome.
/// `sleep N` sleeps N seconds (cut at the timeout, which then reports a time-out),
/// `exit N` ends with code N, `print N [TAG…]` (ASCII) takes `work` and prints exactly N bytes
/// (the command line over and over, so commands with different tags print different
/// outputs: the output store keeps one copy of identical ones), anything else takes
/// `work` and prints `sim: <command>`.
pub fn simulate(command: &str, timeout: Duration, work: Duration) -> (Duration, Outcome) {
    let ok = |stdout: String| Outcome { exit_code: Some(0), stdout, stderr: String::new(), timed_out: false };
    let timed_out = Outcome {
        exit_code: None,
        stdout: String::new(),
        stderr: format!("sim: timed out after {:.1}s\n", timeout.as_secs_f64()),
        timed_out: true,
    };
    let mut words = command.split_whitespace();
    let (verb, arg) = (words.next(), words.next());
    let single = words.next().is_none();
    match (verb, arg) {
        (Some("sleep"), Some(n)) if single => {
            if let Some(secs) = n.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0) {
                let wanted = Duration::from_secs_f64(secs.min(1e9));
                return if wanted > timeout { (timeout, timed_out) } else { (wanted, ok(String::new())) };
            }
        }
        (Some("print"), Some(n)) => {
            // ASCII only, so that N chars are N bytes.
            if let Some(bytes) = n.parse::<usize>().ok().filter(|b| *b <= PRINT_MAX && command.is_ascii()) {
                let line = format!("{command}\n");
                let out: String = line.chars().cycle().take(bytes).collect();
                return (work.min(timeout), ok(out));
            }
        }
        (Some("exit"), Some(n)) if single => {
            if let Ok(code) = n.parse::<i32>() {
                let out = Outcome { exit_code: Some(code), ..ok(String::new()) };
                return (work.min(timeout), out);
            }
        }
        _ => {}
    }
    if work > timeout {
        return (timeout, timed_out);
    }
    (work, ok(format!("sim: {command}\n")))
}

/// What the server said to a posted result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    Accepted,
    /// 409: the command was cancelled or timed out meanwhile (a provision result: the
    /// node was not provisioning); the result was dropped.
    Discarded,
    Refused(StatusCode),
}

/// `POST /api/v1/body/exec/result`.
pub async fn post_result(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    outcome: &Outcome,
    duration: Duration,
) -> anyhow::Result<Posted> {
    let body = json!({
        "id": id,
        "exit_code": outcome.exit_code,
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
        "duration_ms": duration.as_millis() as u64,
        "truncated": false,
        "timed_out": outcome.timed_out,
    });
    post_report(http, &format!("{base}/api/v1/body/exec/result"), token, &body).await
}

/// POSTs what the agent reports with its token, and what the server made of it.
async fn post_report(http: &reqwest::Client, url: &str, token: &str, body: &Value) -> anyhow::Result<Posted> {
    let r = http.post(url).bearer_auth(token).json(body).timeout(REQUEST_TIMEOUT).send().await?;
    Ok(match r.status() {
        s if s.is_success() => Posted::Accepted,
        StatusCode::CONFLICT => Posted::Discarded,
        other => Posted::Refused(other),
    })
}

/// Resolves with the command's status once it is no longer in flight (cancelled by
/// an admin, timed out by the server's watchdog), by long-polling
/// `GET /api/v1/body/exec/{id}/watch`. Never resolves while it stays in flight.
pub async fn stopped(http: &reqwest::Client, base: &str, token: &str, id: &str) -> String {
    const WAIT_S: u64 = 25;
    loop {
        let answer = http
            .get(format!("{base}/api/v1/body/exec/{id}/watch?wait={WAIT_S}"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(WAIT_S) + POLL_SLACK)
            .send()
            .await;
        let status = match answer {
            Ok(r) if r.status().is_success() => {
                r.json::<Value>().await.ok().and_then(|v| v["status"].as_str().map(str::to_owned))
            }
            // 404: the server forgot it (the node was removed); nobody wants the result.
            Ok(r) if r.status() == StatusCode::NOT_FOUND => Some("gone".to_owned()),
            _ => None,
        };
        match status {
            Some(s) if s != "dispatched" => return s,
            Some(_) => {}
            // A failed watch must not end the command: try again a little later.
            None => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORK: Duration = Duration::from_millis(20);
    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn plain_commands_take_the_work_time_and_echo() {
        let (took, out) = simulate("uptime", MINUTE, WORK);
        assert_eq!(took, WORK);
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.stdout, "sim: uptime\n");
    }

    #[test]
    fn sleep_sleeps_up_to_the_timeout() {
        let (took, out) = simulate("sleep 2.5", MINUTE, WORK);
        assert_eq!((took, out.exit_code, out.timed_out), (Duration::from_millis(2500), Some(0), false));
        let (took, out) = simulate("sleep 90", MINUTE, WORK);
        assert_eq!((took, out.exit_code, out.timed_out), (MINUTE, None, true));
    }

    #[test]
    fn exit_sets_the_code() {
        let (_, out) = simulate("exit 3", MINUTE, WORK);
        assert_eq!((out.exit_code, out.stdout.as_str()), (Some(3), ""));
    }

    #[test]
    fn print_prints_exactly_n_bytes_that_differ_by_tag() {
        let (took, a) = simulate("print 8192 a1", MINUTE, WORK);
        let (_, b) = simulate("print 8192 a2", MINUTE, WORK);
        assert_eq!((took, a.exit_code, a.stdout.len(), b.stdout.len()), (WORK, Some(0), 8192, 8192));
        assert!(a.stdout.starts_with("print 8192 a1\nprint 8192 a1\n"));
        assert_ne!(a.stdout, b.stdout);
        assert_eq!(simulate("print 0", MINUTE, WORK).1.stdout, "");
        let too_big = format!("print {}", PRINT_MAX + 1);
        assert_eq!(simulate(&too_big, MINUTE, WORK).1.stdout, format!("sim: {too_big}\n"));
    }

    #[test]
    fn the_reprovision_flag_is_read_from_the_heartbeat_answer() {
        assert!(reprovision_requested(&json!({"status": "approved", "reprovision": true})));
        assert!(!reprovision_requested(&json!({"status": "approved", "reprovision": false})));
        assert!(!reprovision_requested(&json!({"status": "approved"})));
        assert!(!reprovision_requested(&Value::Null));
    }

    #[test]
    fn provision_results_say_success_or_the_simulated_failure() {
        assert_eq!(provision_result_body(true, "sim-2"), json!({"success": true, "version": "sim-2"}));
        assert_eq!(
            provision_result_body(false, "sim-2"),
            json!({"success": false, "error": "simulated failure"})
        );
    }

    #[test]
    fn lookalikes_are_plain_commands() {
        for c in [
            "sleep",
            "sleep x",
            "sleep 1 && ls",
            "exit",
            "exit 1 2",
            "sleep -1",
            "print",
            "print -1",
            "print x",
        ] {
            let (took, out) = simulate(c, MINUTE, WORK);
            assert_eq!((took, out.stdout), (WORK, format!("sim: {c}\n")), "{c}");
        }
    }
}
