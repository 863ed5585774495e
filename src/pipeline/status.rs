//! `hydrapipeline status`: each service's health (GET /api/v1/health) and its measured
//! event lag (how long its SSE stream takes to deliver its newest event).

use super::{http_client, request_error, Service};
use crate::service::sse_client::{follow, SseItem, SseSource};
use futures_util::StreamExt;
use serde::Serialize;
use std::time::{Duration, Instant};

/// What `status` found out about one service.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    pub url: String,
    /// `ok`, or `down: <why>`.
    pub health: String,
    pub ok: bool,
    pub version: Option<String>,
    pub last_event_id: Option<u64>,
    pub lag_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_error: Option<String>,
    /// Round trip of the health request.
    pub response_ms: u64,
}

/// Asks every service at once; the answer is in the order the services were given.
pub async fn check_all(services: &[Service], token: Option<&str>, timeout: Duration) -> Vec<ServiceStatus> {
    let http = http_client(timeout);
    futures_util::future::join_all(services.iter().map(|s| check(&http, s, token, timeout))).await
}

async fn check(
    http: &reqwest::Client,
    service: &Service,
    token: Option<&str>,
    timeout: Duration,
) -> ServiceStatus {
    let started = Instant::now();
    let mut req = http.get(format!("{}/api/v1/health", service.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let answer = async {
        let resp = req.send().await.map_err(|e| request_error(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        resp.json::<serde_json::Value>()
            .await
            .map_err(|e| format!("not a health answer: {}", request_error(&e)))
    }
    .await;
    let response_ms = started.elapsed().as_millis() as u64;
    let mut out = ServiceStatus {
        name: service.name.clone(),
        url: service.url.clone(),
        health: String::new(),
        ok: false,
        version: None,
        last_event_id: None,
        lag_ms: None,
        lag_error: None,
        response_ms,
    };
    let body = match answer {
        Ok(b) => b,
        Err(why) => {
            out.health = format!("down: {why}");
            return out;
        }
    };
    out.version = body.get("version").and_then(|v| v.as_str()).map(str::to_string);
    out.last_event_id = body.get("last_event_id").and_then(|v| v.as_u64());
    match body.get("status").and_then(|v| v.as_str()) {
        Some("ok") => {
            out.ok = true;
            out.health = "ok".to_string();
        }
        Some(other) => out.health = format!("down: status {other}"),
        None => out.health = "down: not a health answer (no status)".to_string(),
    }
    match out.last_event_id {
        Some(last) if last > 0 => match measure_lag(&service.url, token, last, timeout).await {
            Ok(ms) => out.lag_ms = Some(ms),
            Err(why) => out.lag_error = Some(why),
        },
        // No events yet: there is nothing to be late with.
        Some(_) => {}
        None => out.lag_error = Some("the health answer has no last_event_id".to_string()),
    }
    out
}

/// Milliseconds from opening the event stream (resuming just before `last`) until the
/// newest event arrives.
async fn measure_lag(url: &str, token: Option<&str>, last: u64, timeout: Duration) -> Result<u64, String> {
    let started = Instant::now();
    let source = SseSource {
        url: format!("{url}/api/v1/events"),
        token: token.map(str::to_string),
        last_event_id: Some((last - 1).to_string()),
        retry: Duration::from_millis(200),
    };
    let mut events = Box::pin(follow(source));
    let first = tokio::time::timeout(timeout, async {
        while let Some(item) = events.next().await {
            match item {
                SseItem::Connected { .. } => {}
                SseItem::Event { .. } => return Ok(started.elapsed().as_millis() as u64),
                // The first failure is the answer: retrying would only hide it.
                SseItem::Down { reason } => return Err(reason),
            }
        }
        Err("the event stream ended".to_string())
    })
    .await;
    first.unwrap_or_else(|_| Err(format!("no event within {}", humantime::format_duration(timeout))))
}

/// The table: SERVICE, URL, HEALTH, VERSION, LAST EVENT, LAG.
pub fn table(statuses: &[ServiceStatus]) -> String {
    let rows: Vec<[String; 6]> = statuses
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.url.clone(),
                s.health.clone(),
                s.version.clone().unwrap_or_else(|| "-".into()),
                s.last_event_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                match (&s.lag_ms, &s.lag_error) {
                    (Some(ms), _) => format!("{ms} ms"),
                    (None, Some(e)) if s.ok => format!("- ({e})"),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    let header = ["SERVICE", "URL", "HEALTH", "VERSION", "LAST EVENT", "LAG"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |r: &[String; 6]| {
        r.iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&header);
    for r in &rows {
        out.push('\n');
        out.push_str(&line(r));
    }
    out.push('\n');
    out
}

/// The `--json` document.
pub fn json(statuses: &[ServiceStatus]) -> String {
    serde_json::json!({ "services": statuses }).to_string()
}

/// Runs `status`; the exit code is 0 when every service is ok, 1 otherwise.
pub async fn run(services: &[Service], token: Option<&str>, timeout: Duration, as_json: bool) -> i32 {
    let statuses = check_all(services, token, timeout).await;
    if as_json {
        println!("{}", json(&statuses));
    } else {
        print!("{}", table(&statuses));
    }
    if statuses.iter().all(|s| s.ok) {
        0
    } else {
        1
    }
}
