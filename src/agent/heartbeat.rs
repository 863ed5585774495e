//! The heartbeat: the status file (written by local scripts and tests) read at every
//! beat, the body sent, and the loop that logs what the server's answers change.

use super::backoff::Backoff;
use super::client::{CallError, Server};
use super::provision::{recipes, Job};
use super::{stopped, Revoked};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Fields of the status file that are strings, and those that are objects. Anything
/// else in the file is ignored: the server's heartbeat has exactly these.
const STRING_FIELDS: [&str; 4] = ["provider_status", "provider_version", "stream_status", "wireguard_ip"];
const OBJECT_FIELDS: [&str; 2] = ["diagnostics", "telemetry"];

/// Reads the status file: the fields to send, and what was wrong with it if anything
/// (a problem never stops the heartbeat; the fields that are fine are still sent).
pub fn read_status(path: &Path) -> (Map<String, Value>, Option<String>) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Map::new(), None),
        Err(e) => return (Map::new(), Some(format!("cannot read {}: {e}", path.display()))),
    };
    let mut file = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return (Map::new(), Some(format!("{} is not a JSON object", path.display()))),
        Err(e) => return (Map::new(), Some(format!("{} is not valid JSON: {e}", path.display()))),
    };
    let mut fields = Map::new();
    let mut wrong = Vec::new();
    let typed =
        STRING_FIELDS.iter().map(|k| (k, "a string")).chain(OBJECT_FIELDS.iter().map(|k| (k, "an object")));
    for (key, kind) in typed {
        match file.remove(*key) {
            None | Some(Value::Null) => {}
            Some(v)
                if matches!((&v, kind), (Value::String(_), "a string") | (Value::Object(_), "an object")) =>
            {
                fields.insert((*key).into(), v);
            }
            Some(_) => wrong.push(format!("{key} must be {kind}")),
        }
    }
    let problem = (!wrong.is_empty()).then(|| format!("{}: {}", path.display(), wrong.join(", ")));
    (fields, problem)
}

/// The heartbeat body: who we are, plus the status file's fields.
pub fn body(fields: &Map<String, Value>) -> Value {
    let mut body = Map::new();
    body.insert("agent_version".into(), Value::from(env!("CARGO_PKG_VERSION")));
    body.insert("os".into(), Value::from("linux"));
    for (k, v) in fields {
        body.insert(k.clone(), v.clone());
    }
    Value::Object(body)
}

/// What the previous beats saw, so that only changes are logged.
#[derive(Debug, Default)]
pub struct Beats {
    status_file: PathBuf,
    problem: Option<String>,
    status: Option<Value>,
    roles: Option<Value>,
    reprovision: bool,
    /// Failed beats in a row, and when one was last logged at warn.
    failures: u32,
    warned_at: Option<std::time::Instant>,
    /// A provisioning is in hand: from the flag until its result was delivered (set
    /// here, cleared by the provisioning task). Sent with every beat, so the server
    /// can tell a flag that never arrived.
    pub provisioning: Arc<AtomicBool>,
}

/// A long outage logs a warning at most this often (the beats in between at debug).
const WARN_EVERY: Duration = Duration::from_secs(60);

impl Beats {
    pub fn new(status_file: PathBuf) -> Beats {
        Beats { status_file, ..Beats::default() }
    }

    /// One heartbeat. When the server refuses the status file's fields (400/422),
    /// a bare heartbeat follows so that the node stays online.
    pub async fn beat(&mut self, server: &Server) -> Result<Value, CallError> {
        let (fields, problem) = read_status(&self.status_file);
        if problem != self.problem {
            match &problem {
                Some(p) => tracing::warn!("ignoring part of the status file: {p}"),
                None if self.problem.is_some() => tracing::info!("the status file is fine again"),
                None => {}
            }
            self.problem = problem;
        }
        let busy = Value::from(self.provisioning.load(Ordering::SeqCst));
        let with_state = |fields: &Map<String, Value>| {
            let mut b = body(fields);
            b["provisioning"] = busy.clone();
            b
        };
        let answer = match server.heartbeat(&with_state(&fields)).await {
            Err(e) if matches!(e.status(), Some(400 | 422)) && !fields.is_empty() => {
                tracing::warn!(error = %e, "the server refused the status file's fields; sending a bare heartbeat");
                server.heartbeat(&with_state(&Map::new())).await
            }
            other => other,
        }?;
        self.note(&answer);
        Ok(answer)
    }

    fn failed(&mut self, e: &CallError) {
        self.failures += 1;
        let due = match self.warned_at {
            Some(at) => at.elapsed() >= WARN_EVERY,
            None => true,
        };
        if due {
            tracing::warn!(error = %e, failures = self.failures, "heartbeat failed; retrying");
            self.warned_at = Some(std::time::Instant::now());
        } else {
            tracing::debug!(error = %e, failures = self.failures, "heartbeat failed; retrying");
        }
    }

    fn recovered(&mut self, server: &str) {
        if self.failures > 0 {
            tracing::info!(server = %server, failures = self.failures, "heartbeats are accepted again");
        }
        self.failures = 0;
        self.warned_at = None;
    }

    /// Logs what changed in the desired state.
    fn note(&mut self, answer: &Value) {
        let status = answer.get("status").cloned();
        if status != self.status {
            let shown = status.as_ref().and_then(Value::as_str).unwrap_or("unknown").to_owned();
            tracing::info!(status = %shown, "node status");
            self.status = status;
        }
        let roles = answer.get("roles").cloned();
        if roles != self.roles {
            let shown = roles.as_ref().map(Value::to_string).unwrap_or_default();
            tracing::info!(roles = %shown, "node roles");
            self.roles = roles;
        }
        let reprovision = answer.get("reprovision").and_then(Value::as_bool).unwrap_or(false);
        if reprovision && !self.reprovision {
            tracing::info!("the server asks for a reprovision");
        }
        self.reprovision = reprovision;
        // The update flags are delivered once: log each delivery.
        if answer.get("update_node").and_then(Value::as_bool) == Some(true) {
            tracing::info!("the server asks this agent to update itself (not supported by this agent yet)");
        }
        if answer.get("update_services").and_then(Value::as_bool) == Some(true) {
            tracing::info!("the server asks for a service update (not supported by this agent yet)");
        }
    }
}

/// What the server's heartbeat answers tell the rest of the agent: whether the node is
/// a head now (its roles decide), and how often to beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    pub head: bool,
    pub interval: Duration,
}

impl Direction {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

    /// The direction an answer gives; `interval` only when the agent follows the
    /// server's (bounded: an answer cannot make the agent spin or go silent).
    fn after_answer(&self, answer: &Value, follow_interval: bool) -> Direction {
        let head = match answer.get("kind").and_then(Value::as_str) {
            Some(kind) => kind == "head",
            None => self.head,
        };
        let interval = match answer.get("heartbeat_interval_s").and_then(Value::as_u64) {
            Some(s) if follow_interval => Duration::from_secs(s.clamp(1, 3600)),
            _ => self.interval,
        };
        Direction { head, interval }
    }
}

/// Heartbeats until stopped, as often as `direction` says (which the answers update
/// when `follow_interval`). A failed beat is retried with backoff, but never later
/// than the interval. Ends with `Revoked` when the server no longer accepts the token.
pub async fn heartbeat_loop(
    server: Server,
    follow_interval: bool,
    direction: watch::Sender<Direction>,
    status_file: PathBuf,
    provision: mpsc::Sender<Job>,
    provisioning: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Revoked> {
    let mut beats = Beats::new(status_file);
    beats.provisioning = provisioning;
    let mut backoff = Backoff::default();
    loop {
        let delay = tokio::select! {
            r = beats.beat(&server) => match r {
                Ok(answer) => {
                    let next = direction.borrow().after_answer(&answer, follow_interval);
                    direction.send_if_modified(|d| std::mem::replace(d, next) != next);
                    // The flag comes in one answer only: hand the recipes to the
                    // provisioning task (never waited for here).
                    if answer.get("reprovision").and_then(Value::as_bool) == Some(true) {
                        let job = recipes(&answer);
                        // Marked before the next beat, which must not look empty-handed.
                        beats.provisioning.store(true, Ordering::SeqCst);
                        if provision.try_send(job).is_err() {
                            tracing::warn!("a provisioning is queued already; this reprovision is dropped");
                        }
                    }
                    beats.recovered(server.base());
                    backoff.reset();
                    next.interval
                }
                Err(e) if e.revoked() => return Err(Revoked(e.to_string())),
                Err(e) => {
                    beats.failed(&e);
                    let interval = direction.borrow().interval;
                    backoff.next_delay().min(interval.max(super::backoff::START))
                }
            },
            _ = stopped(&mut stop) => return Ok(()),
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_answer_says_the_kind_and_the_interval_when_the_agent_follows_it() {
        let d = Direction { head: false, interval: Direction::DEFAULT_INTERVAL };
        let answer = json!({"kind": "head", "heartbeat_interval_s": 5});
        assert_eq!(d.after_answer(&answer, true), Direction { head: true, interval: Duration::from_secs(5) });
        // An explicit --heartbeat-interval wins; the kind is followed all the same.
        assert_eq!(
            d.after_answer(&answer, false),
            Direction { head: true, interval: Direction::DEFAULT_INTERVAL }
        );
        // Bounded: an answer cannot make the agent spin or go silent.
        let d2 = d.after_answer(&json!({"heartbeat_interval_s": 0}), true);
        assert_eq!(d2.interval, Duration::from_secs(1));
        assert_eq!(
            d.after_answer(&json!({"heartbeat_interval_s": u64::MAX}), true).interval,
            Duration::from_secs(3600)
        );
        // An older server that says nothing changes nothing.
        assert_eq!(d.after_answer(&json!({}), true), d);
        assert!(!d.after_answer(&json!({"kind": "body"}), true).head);
    }

    #[test]
    fn the_status_file_gives_known_fields_and_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        assert_eq!(read_status(&path), (Map::new(), None), "a missing file is no problem");

        std::fs::write(
            &path,
            r#"{"provider_status":"running","stream_status":"streaming","telemetry":{"stream_count":1},"other":1}"#,
        )
        .unwrap();
        let (fields, problem) = read_status(&path);
        assert_eq!(problem, None);
        assert_eq!(
            Value::Object(fields.clone()),
            json!({"provider_status":"running","stream_status":"streaming","telemetry":{"stream_count":1}})
        );
        let b = body(&fields);
        assert_eq!(b["agent_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(b["os"], "linux");
        assert_eq!(b["provider_status"], "running");

        std::fs::write(&path, r#"{"provider_status":5,"provider_version":"1.2","diagnostics":[]}"#).unwrap();
        let (fields, problem) = read_status(&path);
        assert_eq!(Value::Object(fields), json!({"provider_version":"1.2"}));
        let problem = problem.unwrap();
        assert!(problem.contains("provider_status must be a string"), "{problem}");
        assert!(problem.contains("diagnostics must be an object"), "{problem}");

        std::fs::write(&path, "{not json").unwrap();
        let (fields, problem) = read_status(&path);
        assert!(fields.is_empty());
        assert!(problem.unwrap().contains("not valid JSON"));
    }
}
