//! Head mode: a kiosk's own status, taken from the status file (`head_status`,
//! `head_detail`, `diagnostics`, written by a local script) and sent with
//! `PUT /api/v1/heads/{id}` once at start and whenever it changes.

use super::client::{CallError, Server};
use super::stopped;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// The report the status file asks for, or None when it names no `head_status`
/// (nothing is sent then: the server keeps what it had). Wrong types are said.
pub fn read_report(path: &Path) -> (Option<Value>, Option<String>) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, None),
        Err(e) => return (None, Some(format!("cannot read {}: {e}", path.display()))),
    };
    let file = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return (None, Some(format!("{} is not a JSON object", path.display()))),
        Err(e) => return (None, Some(format!("{} is not valid JSON: {e}", path.display()))),
    };
    let status = match file.get("head_status") {
        None | Some(Value::Null) => return (None, None),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return (None, Some(format!("{}: head_status must be a string", path.display()))),
    };
    let mut report = Map::new();
    report.insert("status".into(), Value::from(status));
    let mut wrong = Vec::new();
    match file.get("head_detail") {
        None | Some(Value::Null) => {}
        Some(v @ Value::String(_)) => {
            report.insert("detail".into(), v.clone());
        }
        Some(_) => wrong.push("head_detail must be a string"),
    }
    match file.get("diagnostics") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => {
            report.insert("diagnostics".into(), v.clone());
        }
        Some(_) => wrong.push("diagnostics must be an object"),
    }
    let problem = (!wrong.is_empty()).then(|| format!("{}: {}", path.display(), wrong.join(", ")));
    (Some(Value::Object(report)), problem)
}

/// What was last sent and what went wrong, so that each change is sent once and each
/// problem logged once.
#[derive(Debug, Default)]
pub struct Reports {
    status_file: PathBuf,
    sent: Option<Value>,
    problem: Option<String>,
    failed: Option<String>,
}

impl Reports {
    pub fn new(status_file: PathBuf) -> Reports {
        Reports { status_file, ..Reports::default() }
    }

    /// Sends the status file's report when it differs from the last one accepted. A
    /// refused or failed report is tried again at the next tick.
    pub async fn tick(&mut self, server: &Server, head_id: &str) -> Result<(), CallError> {
        let (report, problem) = read_report(&self.status_file);
        if problem != self.problem {
            if let Some(p) = &problem {
                tracing::warn!("ignoring part of the status file: {p}");
            }
            self.problem = problem;
        }
        let Some(report) = report else { return Ok(()) };
        if self.sent.as_ref() == Some(&report) {
            return Ok(());
        }
        match server.report_head(head_id, &report).await {
            Ok(()) => {
                let shown = report.get("status").and_then(Value::as_str).unwrap_or("?");
                tracing::info!(status = %shown, "head status reported");
                self.sent = Some(report);
                self.failed = None;
                Ok(())
            }
            Err(e) => {
                let text = e.to_string();
                if self.failed.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "the head status report failed; retrying");
                    self.failed = Some(text);
                }
                Err(e)
            }
        }
    }
}

/// Reports the head's status every `interval` when it changed, until stopped.
pub async fn head_loop(
    server: Server,
    head_id: String,
    interval: Duration,
    status_file: PathBuf,
    mut stop: watch::Receiver<bool>,
) -> Result<(), super::Revoked> {
    let mut reports = Reports::new(status_file);
    loop {
        tokio::select! {
            r = reports.tick(&server, &head_id) => {
                if let Err(e) = r {
                    if e.revoked() {
                        return Err(super::Revoked(e.to_string()));
                    }
                }
            }
            _ = stopped(&mut stop) => return Ok(()),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped(&mut stop) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_report_comes_from_head_status_head_detail_and_diagnostics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        assert_eq!(read_report(&path), (None, None));
        std::fs::write(&path, r#"{"provider_status":"running"}"#).unwrap();
        assert_eq!(read_report(&path), (None, None), "no head_status, nothing to report");
        std::fs::write(
            &path,
            r#"{"head_status":"streaming","head_detail":"game 3","diagnostics":{"fps":60}}"#,
        )
        .unwrap();
        assert_eq!(
            read_report(&path),
            (Some(json!({"status":"streaming","detail":"game 3","diagnostics":{"fps":60}})), None)
        );
        std::fs::write(&path, r#"{"head_status":"idle","head_detail":5}"#).unwrap();
        let (report, problem) = read_report(&path);
        assert_eq!(report, Some(json!({"status":"idle"})));
        assert!(problem.unwrap().contains("head_detail must be a string"));
        std::fs::write(&path, r#"{"head_status":1}"#).unwrap();
        assert!(read_report(&path).1.unwrap().contains("head_status must be a string"));
    }
}
