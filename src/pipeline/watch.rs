//! `hydrapipeline watch`: every service's events in one timeline. Replayed history is
//! read from each service's `/api/v1/events/log` and merged by event time; live events
//! come from each service's SSE stream, followed with `Last-Event-ID` across drops.

use super::format::{human, now_clock, types_query, wanted, Observed, TypeFilter};
use super::{http_client, request_error, Service};
use crate::service::sse_client::{follow, SseItem, SseSource};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;
use tokio::sync::mpsc;

/// Everything `watch` needs to know.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub services: Vec<Service>,
    pub token: Option<String>,
    pub types: Vec<TypeFilter>,
    /// Per service: replay after this id, or None to start from its head (live only).
    pub starts: Vec<Option<u64>>,
    pub json: bool,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Event(Observed),
    Down { service: String, reason: String },
    Up { service: String },
}

const RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(5);
const LOG_PAGE: u64 = 1000;

/// Runs until SIGINT/SIGTERM or until stdout is closed; returns the exit code.
pub async fn run(opts: WatchOptions) -> i32 {
    let mut out = Output::new(opts.json, opts.services.iter().map(|s| s.name.len()).max().unwrap_or(0));
    let http = http_client(Duration::from_secs(10));
    let mut starts = opts.starts.clone();
    let stop = shutdown();
    tokio::pin!(stop);

    // History first, merged across services by time; each service then follows live
    // from where its history ended.
    let backlog = replay(&http, &opts, &mut starts, &mut out);
    tokio::select! {
        r = backlog => if let Err(code) = r { return code },
        _ = &mut stop => return 0,
    }

    let (tx, mut rx) = mpsc::channel::<Line>(1024);
    for (service, start) in opts.services.iter().zip(starts) {
        let src = Source {
            service: service.clone(),
            token: opts.token.clone(),
            types: opts.types.clone(),
            http: http.clone(),
        };
        tokio::spawn(src.run(start, tx.clone()));
    }
    drop(tx);
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => if let Err(code) = out.line(&line) { return code },
                None => return 0,
            },
            _ = &mut stop => return 0,
        }
    }
}

/// Resolves when the reader of stdout has gone (`watch | head -1`): a write would fail
/// with EPIPE, but on a quiet fleet the next write may be hours away. poll(2) on the
/// write end of a pipe reports POLLERR once the read end is closed.
async fn stdout_closed() {
    loop {
        let mut fd = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout: the call only inspects the descriptor.
        let n = unsafe { libc::poll(&mut fd, 1, 0) };
        if n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Resolves on SIGINT or SIGTERM, or when stdout is closed.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
        _ = stdout_closed() => {}
    }
}

/// Prints lines, flushed one by one (scripts read them as they come).
struct Output {
    json: bool,
    width: usize,
}

impl Output {
    fn new(json: bool, width: usize) -> Self {
        Output { json, width }
    }

    /// Err(exit code) when stdout is gone: 0 for a closed pipe (the reader is done,
    /// e.g. `| head`), 1 for any other write failure.
    fn line(&mut self, line: &Line) -> Result<(), i32> {
        let text = match line {
            Line::Event(e) if self.json => e.json_line(),
            Line::Event(e) => e.human_line(self.width),
            Line::Down { service, reason } if self.json => {
                json!({"service": service, "type": "source.down", "reason": reason, "at": now()}).to_string()
            }
            Line::Down { service, reason } => {
                human(&now_clock(), service, self.width, "source.down", &format!("{reason}; reconnecting"))
            }
            Line::Up { service } if self.json => {
                json!({"service": service, "type": "source.up", "at": now()}).to_string()
            }
            Line::Up { service } => human(&now_clock(), service, self.width, "source.up", "reconnected"),
        };
        let mut stdout = std::io::stdout().lock();
        match writeln!(stdout, "{text}").and_then(|_| stdout.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(0),
            Err(e) => {
                eprintln!("hydrapipeline: cannot write to stdout: {e}");
                Err(1)
            }
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// One service's history, read page by page from `/api/v1/events/log`.
struct Cursor {
    index: usize,
    service: Service,
    next_since: u64,
    /// The head when the replay began: the replay ends there (or a page beyond), and
    /// the live stream takes over.
    target: Option<u64>,
    buf: VecDeque<Observed>,
    /// The log could not be read: follow live from `next_since` instead.
    failed: bool,
}

impl Cursor {
    fn finished(&self) -> bool {
        self.failed || self.target.is_some_and(|t| self.next_since >= t)
    }

    /// Reads pages until one holds a wanted event or the history is done.
    async fn fill(&mut self, http: &reqwest::Client, opts: &WatchOptions) {
        while self.buf.is_empty() && !self.finished() {
            let mut req = http
                .get(format!("{}/api/v1/events/log", self.service.url))
                .query(&[("since", self.next_since.to_string()), ("limit", LOG_PAGE.to_string())]);
            if !opts.types.is_empty() {
                req = req.query(&[("types", types_query(&opts.types))]);
            }
            if let Some(t) = &opts.token {
                req = req.bearer_auth(t);
            }
            let page = async {
                let resp = req.send().await.map_err(|e| request_error(&e))?;
                if !resp.status().is_success() {
                    return Err(format!("HTTP {}", resp.status().as_u16()));
                }
                resp.json::<Value>().await.map_err(|e| request_error(&e))
            }
            .await;
            // Without a readable log (an older service, or it is down), the SSE stream
            // replays the same history from the same point, in arrival order; it also
            // reports the outage, so nothing is said here.
            let Ok(page) = page else {
                self.failed = true;
                return;
            };
            let (Some(next), Some(head)) =
                (page.get("next_since").and_then(Value::as_u64), page.get("head").and_then(Value::as_u64))
            else {
                self.failed = true;
                return;
            };
            self.target.get_or_insert(head);
            for e in page.get("events").and_then(Value::as_array).into_iter().flatten() {
                if let Some(o) = Observed::from_wire(&self.service.name, None, None, e) {
                    if wanted(&opts.types, &o.kind) {
                        self.buf.push_back(o);
                    }
                }
            }
            if next <= self.next_since && self.buf.is_empty() {
                // No progress: stop rather than loop; the live stream resumes from here.
                self.target = Some(self.next_since);
                return;
            }
            self.next_since = next.max(self.next_since);
        }
    }
}

/// Prints the history of every service that has a start, merged by event time, and
/// moves each start to where its history ended.
async fn replay(
    http: &reqwest::Client,
    opts: &WatchOptions,
    starts: &mut [Option<u64>],
    out: &mut Output,
) -> Result<(), i32> {
    let mut cursors: Vec<Cursor> = opts
        .services
        .iter()
        .zip(starts.iter())
        .enumerate()
        .filter_map(|(index, (service, start))| {
            start.map(|since| Cursor {
                index,
                service: service.clone(),
                next_since: since,
                target: None,
                buf: VecDeque::new(),
                failed: false,
            })
        })
        .collect();
    // The cursors are filled concurrently the first time (a down service must not hold
    // up the others by its connect timeout), then one page at a time as they drain.
    futures_util::future::join_all(cursors.iter_mut().map(|c| c.fill(http, opts))).await;
    loop {
        for c in cursors.iter_mut() {
            c.fill(http, opts).await;
        }
        let next = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.buf.front().map(|e| ((e.at_ms(), c.index), i)))
            .min()
            .map(|(_, i)| i);
        let Some(i) = next else { break };
        let event = cursors[i].buf.pop_front().expect("a front event was just seen");
        out.line(&Line::Event(event))?;
    }
    for c in cursors {
        starts[c.index] = Some(c.next_since);
    }
    Ok(())
}

/// One service's live stream, feeding the timeline.
struct Source {
    service: Service,
    token: Option<String>,
    types: Vec<TypeFilter>,
    http: reqwest::Client,
}

impl Source {
    async fn run(self, start: Option<u64>, tx: mpsc::Sender<Line>) {
        let mut down = false;
        let start = match start {
            Some(s) => s,
            None => match self.head(&tx, &mut down).await {
                Some(s) => s,
                None => return,
            },
        };
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/events", self.service.url))
            .expect("the service URL was checked when parsed");
        if !self.types.is_empty() {
            url.query_pairs_mut().append_pair("types", &types_query(&self.types));
        }
        let source = SseSource {
            url: url.to_string(),
            token: self.token.clone(),
            // Always an id: without one the services replay their whole log.
            last_event_id: Some(start.to_string()),
            retry: RETRY,
        };
        let mut items = Box::pin(follow(source));
        while let Some(item) = items.next().await {
            let line = match item {
                SseItem::Connected { .. } if down => {
                    down = false;
                    Line::Up { service: self.service.name.clone() }
                }
                SseItem::Connected { .. } => continue,
                SseItem::Down { reason } => {
                    down = true;
                    Line::Down { service: self.service.name.clone(), reason }
                }
                SseItem::Event { id, kind, data } => {
                    let event = serde_json::from_str::<Value>(&data)
                        .ok()
                        .and_then(|v| Observed::from_wire(&self.service.name, id.as_deref(), Some(&kind), &v))
                        .unwrap_or_else(|| Observed {
                            service: self.service.name.clone(),
                            id: id.as_deref().and_then(|i| i.parse().ok()).unwrap_or(0),
                            kind: kind.clone(),
                            at: now(),
                            cause: Value::Null,
                            data: Value::String(data),
                        });
                    if !wanted(&self.types, &event.kind) {
                        continue;
                    }
                    Line::Event(event)
                }
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    }

    /// The service's newest event id, asked until it answers (a Down line says so
    /// once). None when the timeline is gone.
    async fn head(&self, tx: &mpsc::Sender<Line>, down: &mut bool) -> Option<u64> {
        let mut pause = RETRY;
        loop {
            let mut req = self.http.get(format!("{}/api/v1/health", self.service.url));
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let answer = async {
                let resp = req.send().await.map_err(|e| request_error(&e))?;
                if !resp.status().is_success() {
                    return Err(format!("HTTP {}", resp.status().as_u16()));
                }
                let body: Value = resp.json().await.map_err(|e| request_error(&e))?;
                body.get("last_event_id")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| "the health answer has no last_event_id".to_string())
            }
            .await;
            match answer {
                Ok(head) => return Some(head),
                Err(reason) => {
                    if !*down {
                        *down = true;
                        let line = Line::Down { service: self.service.name.clone(), reason };
                        tx.send(line).await.ok()?;
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY);
        }
    }
}
