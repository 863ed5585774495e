//! `hydra-bench soak`: a real `hydracluster` under connection floods, loopback only.
//! Fills the log with N events, then K SSE clients each read half of their catch-up,
//! stop reading and vanish together; then L slowloris connections (a request header
//! that never ends) are held past the header-read timeout. Prints the server's RSS and
//! open descriptors (from /proc/<pid>) before, during and after each flood, and
//! whether `/api/v1/health` answers during it.

use super::stats::process_memory_mb;
use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "soak-admin-token-0123456789";

#[derive(Debug, Clone)]
pub struct SoakSettings {
    pub cluster: PathBuf,
    pub events: u64,
    pub sse_clients: usize,
    pub slowloris: usize,
    /// RLIMIT_NOFILE for the server (soft and hard), to flood past it; None keeps ours.
    pub server_fd_limit: Option<u64>,
    /// How long to hold the slowloris sockets (longer than the header-read timeout).
    pub hold: Duration,
    /// Extra YAML for the server's config file.
    pub config: String,
}

/// One line of the report: what the server looked like at a moment.
struct Sample {
    rss_mb: u64,
    fds: usize,
    threads: usize,
}

fn sample(pid: u32) -> Sample {
    let (rss_mb, _) = process_memory_mb(&pid.to_string());
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    Sample { rss_mb, fds, threads }
}

pub fn run(settings: &SoakSettings, dir: &Path, out: &mut dyn FnMut(String)) -> anyhow::Result<()> {
    // The clients need descriptors too.
    hydra::service::serve::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("soak.yaml");
    std::fs::write(&config, format!("enroll_per_minute: 0\n{}", settings.config))?;
    let log = std::fs::File::create(dir.join("hydracluster.log"))?;
    let mut command = std::process::Command::new(&settings.cluster);
    command
        .args(["serve", "--listen", &addr, "--data"])
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&config)
        .env("HYDRACLUSTER_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(limit) = settings.server_fd_limit {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and only touches the child.
        unsafe {
            command.pre_exec(move || {
                let lim = libc::rlimit { rlim_cur: limit as libc::rlim_t, rlim_max: limit as libc::rlim_t };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().with_context(|| format!("starting {}", settings.cluster.display()))?;
    let pid = child.id();
    let result = runtime.block_on(soak(settings, &addr, pid, out));
    let _ = nix_kill(pid);
    let _ = child.wait();
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// SIGTERM, so the server stops cleanly.
fn nix_kill(pid: u32) -> std::io::Result<()> {
    // SAFETY: kill only sends a signal to the process we started.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

async fn soak(s: &SoakSettings, addr: &str, pid: u32, out: &mut dyn FnMut(String)) -> anyhow::Result<()> {
    let base = format!("http://{addr}");
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(5)).build()?;
    let t0 = Instant::now();
    while http.get(format!("{base}/api/v1/health")).send().await.is_err() {
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "hydracluster did not come up on {addr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut line = |phase: &str, extra: String| {
        let now = sample(pid);
        out(format!(
            "{phase:<34} RSS {:>5} MiB  fds {:>6}  threads {:>4}  {extra}",
            now.rss_mb, now.fds, now.threads
        ));
    };
    line("started", String::new());

    fill(&http, &base, s.events).await?;
    line(&format!("log filled ({} events)", s.events), String::new());

    // SSE: read half, stop reading, vanish together.
    let half = Arc::new(AtomicU64::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for _ in 0..s.sse_clients {
        let (addr, half, released) = (addr.to_owned(), half.clone(), released.clone());
        let target = s.events / 2;
        clients.push(tokio::spawn(async move { sse_client(&addr, target, &half, released).await }));
    }
    let t = Instant::now();
    let mut peak = 0;
    while (half.load(Ordering::Relaxed) as usize) < s.sse_clients && t.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(sample(pid).rss_mb);
    }
    let ready = health_line(&http, &base).await;
    line(
        &format!("{} SSE clients at half", half.load(Ordering::Relaxed)),
        format!("(peak RSS {peak} MiB; {:.1}s) {ready}", t.elapsed().as_secs_f64()),
    );
    let _ = release.send(true);
    for c in clients {
        let _ = c.await;
    }
    let t = Instant::now();
    while subscribers(&http, &base).await.unwrap_or(0) > 0 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    line("SSE clients gone (+3 s)", health_line(&http, &base).await);

    // Slowloris: partial headers, held.
    let mut held = Vec::new();
    let mut failed = 0;
    let mut in_a_row = 0;
    for _ in 0..s.slowloris {
        // A server that stopped accepting leaves connects hanging once its backlog is
        // full: give up after a run of them.
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
            Ok(Ok(mut sock)) => {
                let _ = sock.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: soak\r\nX-Slow: ").await;
                held.push(sock);
                in_a_row = 0;
            }
            _ => {
                failed += 1;
                in_a_row += 1;
                if in_a_row == 5 {
                    break;
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    line(
        &format!("{} slowloris open (+1 s)", held.len()),
        format!("{failed} connects failed; {}", health_line(&http, &base).await),
    );
    tokio::time::sleep(s.hold.saturating_sub(Duration::from_secs(1))).await;
    let still = still_open(&mut held).await;
    line(
        &format!("slowloris held {:?}", s.hold),
        format!("{still} still open; {}", health_line(&http, &base).await),
    );
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    line("slowloris closed (+2 s)", health_line(&http, &base).await);
    Ok(())
}

/// Enrollments through the public form: one event each, 64 at a time.
async fn fill(http: &reqwest::Client, base: &str, events: u64) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..64 {
        let (http, url, next) = (http.clone(), format!("{base}/enroll"), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return anyhow::Ok(());
                }
                let body = serde_json::json!({"name": format!("soak-{i}"), "ip": "10.0.0.1"});
                http.post(&url).json(&body).send().await?.error_for_status()?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(())
}

/// One SSE subscriber over a raw socket: reads until event `target`, then stops
/// reading until told to vanish.
async fn sse_client(
    addr: &str,
    target: u64,
    half: &AtomicU64,
    mut released: tokio::sync::watch::Receiver<bool>,
) {
    let counted = || {
        half.fetch_add(1, Ordering::Relaxed);
    };
    let Ok(mut sock) = TcpStream::connect(addr).await else { return counted() };
    let request = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {ADMIN}\r\nAccept: text/event-stream\r\n\r\n"
    );
    if sock.write_all(request.as_bytes()).await.is_err() {
        return counted();
    }
    let finder = memchr::memmem::Finder::new(b"\nid: ");
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry = Vec::new();
    loop {
        let n = match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return counted(),
            Ok(n) => n,
        };
        carry.extend_from_slice(&buf[..n]);
        let last = finder.find_iter(&carry).last();
        if let Some(at) = last {
            let digits: Vec<u8> =
                carry[at + 5..].iter().take_while(|b| b.is_ascii_digit()).copied().collect();
            let complete = carry.len() > at + 5 + digits.len();
            if complete
                && std::str::from_utf8(&digits).ok().and_then(|d| d.parse::<u64>().ok()) >= Some(target)
            {
                break;
            }
            carry.drain(..at);
        }
        if carry.len() > 64 * 1024 {
            let keep = carry.len() - 64;
            carry.drain(..keep);
        }
    }
    counted();
    let _ = released.wait_for(|r| *r).await;
    drop(sock);
}

async fn readyz(http: &reqwest::Client, base: &str) -> Option<Value> {
    http.get(format!("{base}/readyz")).send().await.ok()?.json().await.ok()
}

async fn subscribers(http: &reqwest::Client, base: &str) -> Option<u64> {
    readyz(http, base).await?["components"]["sse"]["subscribers"].as_u64()
}

/// `/api/v1/health` over a new connection: its status and time, and the server's
/// connection counters where it has them.
async fn health_line(http: &reqwest::Client, base: &str) -> String {
    let t = Instant::now();
    let health = match http.get(format!("{base}/api/v1/health")).send().await {
        Ok(r) => format!("health {} in {:.0?}", r.status().as_u16(), t.elapsed()),
        Err(e) => format!("health failed after {:.0?} ({})", t.elapsed(), short(&e)),
    };
    let conns = match readyz(http, base).await {
        Some(r) => match r["components"].get("connections") {
            Some(c) => format!("; connections {c}"),
            None => format!("; subscribers {}", r["components"]["sse"]["subscribers"]),
        },
        None => String::new(),
    };
    format!("{health}{conns}")
}

fn short(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    }
}

/// How many of the held sockets the server has not closed (a read would block).
async fn still_open(held: &mut [TcpStream]) -> usize {
    let mut open = 0;
    let mut buf = [0u8; 256];
    for sock in held.iter_mut() {
        match tokio::time::timeout(Duration::from_millis(1), sock.read(&mut buf)).await {
            Err(_) => open += 1,
            Ok(Ok(n)) if n > 0 => open += 1,
            Ok(_) => {}
        }
    }
    open
}
