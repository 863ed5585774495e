//! Runs one exec command: `bash -c` in its own process group, stdout and stderr
//! captured separately and capped, with a timeout and a cancel signal that both kill
//! the whole group. No HTTP here, so it is tested on its own.

use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;

/// The most kept of each of stdout and stderr (what the server keeps, too).
pub const OUTPUT_CAP: usize = 1 << 20;

/// How long a killed group gets between SIGTERM and SIGKILL, and how long the pipes
/// are drained after the shell ended.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// No timeout is longer than a week: it keeps the deadline arithmetic far from any
/// overflow whatever the server sends.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code, or 128 + the signal that killed the shell; None when the
    /// command could not start (then `stderr` says why).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Some output was dropped at the cap.
    pub truncated: bool,
    pub timed_out: bool,
    pub cancelled: bool,
    pub duration: Duration,
}

/// What the runner needs besides the command; tests shrink the numbers and swap the
/// shell.
#[derive(Debug, Clone)]
pub struct Limits {
    pub shell: PathBuf,
    pub cap: usize,
    pub kill_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { shell: PathBuf::from("bash"), cap: OUTPUT_CAP, kill_grace: KILL_GRACE }
    }
}

/// Runs `command` with `bash -c`; `cancel` resolving kills it (as a timeout does, but
/// the outcome says `cancelled`).
pub async fn run_command(command: &str, timeout: Duration, cancel: impl Future<Output = ()>) -> Outcome {
    run_with(command, timeout, cancel, &Limits::default()).await
}

/// Output kept up to a cap; past it the bytes are read and dropped, so the writer
/// never blocks on a full pipe.
struct Capture {
    buf: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Capture {
    fn new(cap: usize) -> Self {
        Capture { buf: Vec::new(), cap, truncated: false }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.buf.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

async fn drain(mut pipe: impl AsyncRead + Unpin, into: &mut Capture) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => into.push(&chunk[..n]),
        }
    }
}

enum End {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

pub async fn run_with(
    command: &str,
    timeout: Duration,
    cancel: impl Future<Output = ()>,
    limits: &Limits,
) -> Outcome {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&limits.shell);
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that a timeout or a cancel reaches everything it started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return not_started(&limits.shell, &e, started),
    };
    // The group id is the shell's pid; taken now because `id()` forgets it once reaped.
    let pgid = child.id().map(|p| p as i32);
    let (Some(out_pipe), Some(err_pipe)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("both pipes were requested");
    };
    let mut out = Capture::new(limits.cap);
    let mut err = Capture::new(limits.cap);
    let (status, timed_out, cancelled) = {
        let reading = async { tokio::join!(drain(out_pipe, &mut out), drain(err_pipe, &mut err)) };
        tokio::pin!(reading);
        let mut read_all = false;
        let deadline = tokio::time::sleep(timeout.min(MAX_TIMEOUT));
        tokio::pin!(deadline);
        tokio::pin!(cancel);
        let end = loop {
            tokio::select! {
                _ = &mut reading, if !read_all => read_all = true,
                status = child.wait() => break End::Exited(status),
                _ = &mut deadline => break End::TimedOut,
                _ = &mut cancel => break End::Cancelled,
            }
        };
        let (status, timed_out, cancelled) = match end {
            End::Exited(status) => (status, false, false),
            kill => {
                // Keep draining while the group dies: a process that handles SIGTERM
                // by flushing its output must not block on a full pipe.
                let killing = kill_group(&mut child, pgid, limits.kill_grace);
                tokio::pin!(killing);
                let status = loop {
                    tokio::select! {
                        _ = &mut reading, if !read_all => read_all = true,
                        status = &mut killing => break status,
                    }
                };
                (status, matches!(kill, End::TimedOut), matches!(kill, End::Cancelled))
            }
        };
        if !read_all && tokio::time::timeout(limits.kill_grace, &mut reading).await.is_err() {
            // The shell ended but something it started in the background still holds
            // the output open: the command is over; stop reading rather than wait for it.
            tracing::warn!(
                "a background process of the command still holds its output open; stopped reading"
            );
        }
        (status, timed_out, cancelled)
    };
    let exit_code = match status {
        Ok(s) => exit_code(s),
        Err(e) => {
            tracing::warn!(error = %e, "could not learn how the command ended");
            None
        }
    };
    Outcome {
        exit_code,
        stdout: out.text(),
        stderr: err.text(),
        truncated: out.truncated || err.truncated,
        timed_out,
        cancelled,
        duration: started.elapsed(),
    }
}

fn not_started(shell: &Path, e: &std::io::Error, started: Instant) -> Outcome {
    Outcome {
        exit_code: None,
        stdout: String::new(),
        stderr: format!("hydranode could not start {}: {e}", shell.display()),
        truncated: false,
        timed_out: false,
        cancelled: false,
        duration: started.elapsed(),
    }
}

/// The shell's code, or 128 + signal like a shell reports a killed process.
fn exit_code(status: ExitStatus) -> Option<i32> {
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

fn signal_group(pgid: i32, signal: i32) -> bool {
    // SAFETY: killpg only sends a signal; a pgid of ours that no longer exists is ESRCH.
    unsafe { libc::killpg(pgid, signal) == 0 }
}

/// SIGTERM to the whole group; SIGKILL to what is left after `grace`. Returns how the
/// shell ended. The shell is reaped only inside this loop, after the first signal, so
/// the group id cannot have been reused by then.
async fn kill_group(child: &mut Child, pgid: Option<i32>, grace: Duration) -> std::io::Result<ExitStatus> {
    let Some(pgid) = pgid else {
        // Already reaped: nothing left to signal.
        return child.wait().await;
    };
    signal_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    let mut leader = None;
    loop {
        if leader.is_none() {
            leader = child.try_wait()?;
        }
        // Signal 0 only asks whether any member of the group is left.
        if leader.is_some() && !signal_group(pgid, 0) {
            break;
        }
        if Instant::now() >= deadline {
            signal_group(pgid, libc::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match leader {
        Some(status) => Ok(status),
        None => child.wait().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;

    fn never() -> impl Future<Output = ()> {
        pending::<()>()
    }

    const LONG: Duration = Duration::from_secs(20);

    /// True while the process exists and is not a zombie (a zombie waits only for its
    /// parent to reap it: it runs nothing).
    fn running(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
                state != Some("Z")
            }
            Err(_) => false,
        }
    }

    async fn pids_in(path: &Path) -> Vec<i32> {
        for _ in 0..400 {
            if let Ok(text) = std::fs::read_to_string(path) {
                let pids: Vec<i32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
                if pids.len() >= 2 {
                    return pids;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the command never wrote its pids to {}", path.display());
    }

    async fn all_gone(pids: &[i32]) -> bool {
        for _ in 0..200 {
            if !pids.iter().any(|p| running(*p)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    #[tokio::test]
    async fn exit_codes_and_separate_streams() {
        let o = run_command("echo out; echo err >&2; exit 7", LONG, never()).await;
        assert_eq!(o.exit_code, Some(7));
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr, "err\n");
        assert!(!o.truncated && !o.timed_out && !o.cancelled);

        let o = run_command("true", LONG, never()).await;
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(o.stdout, "");
    }

    #[tokio::test]
    async fn a_shell_killed_by_a_signal_reports_128_plus_it() {
        let o = run_command("kill -9 $$", LONG, never()).await;
        assert_eq!(o.exit_code, Some(128 + 9));
    }

    #[tokio::test]
    async fn pipelines_end_on_sigpipe_as_in_a_shell() {
        // The agent ignores SIGPIPE (Rust does); its commands must not inherit that.
        let o = run_command("yes | head -c 2", LONG, never()).await;
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(o.stdout, "y\n");
        assert_eq!(o.stderr, "", "yes died of SIGPIPE quietly");
    }

    #[tokio::test]
    async fn stdin_is_empty() {
        let o = run_command("cat; echo done", LONG, never()).await;
        assert_eq!(o.stdout, "done\n");
    }

    #[tokio::test]
    async fn invalid_utf8_is_decoded_lossily() {
        let o = run_command(r"printf 'a\377b'", LONG, never()).await;
        assert_eq!(o.stdout, "a\u{FFFD}b");
    }

    #[tokio::test]
    async fn a_missing_shell_is_reported_without_an_exit_code() {
        let limits = Limits { shell: "/nonexistent/bash".into(), ..Limits::default() };
        let o = run_with("true", LONG, never(), &limits).await;
        assert_eq!(o.exit_code, None);
        assert!(o.stderr.contains("could not start /nonexistent/bash"), "{}", o.stderr);
    }

    #[tokio::test]
    async fn output_past_the_cap_is_dropped_and_marked() {
        // 3 MiB on stdout, a little on stderr: the stdout pipe keeps being drained.
        let o = run_command("head -c 3145728 /dev/zero | tr '\\0' x; echo tail >&2", LONG, never()).await;
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(o.stdout.len(), OUTPUT_CAP);
        assert!(o.stdout.bytes().all(|b| b == b'x'));
        assert_eq!(o.stderr, "tail\n");
        assert!(o.truncated);
    }

    #[tokio::test]
    async fn exactly_the_cap_is_not_truncated() {
        let limits = Limits { cap: 10, ..Limits::default() };
        let o = run_with("printf 0123456789", LONG, never(), &limits).await;
        assert_eq!(o.stdout, "0123456789");
        assert!(!o.truncated);
        let o = run_with("printf 0123456789A", LONG, never(), &limits).await;
        assert_eq!(o.stdout, "0123456789");
        assert!(o.truncated);
    }

    #[tokio::test]
    async fn much_output_on_both_streams_does_not_deadlock() {
        // Far more than a pipe buffer on both streams, interleaved (builtins only, so
        // it is quick).
        let cmd = "o=$(printf '%10000s' ''); for i in $(seq 1 200); do printf %s \"$o\"; printf %s \"$o\" >&2; done";
        let o = tokio::time::timeout(Duration::from_secs(30), run_command(cmd, LONG, never()))
            .await
            .expect("the command finished (no deadlock)");
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(o.stdout.len(), 2_000_000.min(OUTPUT_CAP));
        assert_eq!(o.stderr.len(), 2_000_000.min(OUTPUT_CAP));
        assert!(o.truncated);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let cmd = format!(
            "sleep 30 & echo $! > {p}.tmp; echo $$ >> {p}.tmp; mv {p}.tmp {p}; sleep 30; wait",
            p = pids.display()
        );
        let run = tokio::spawn(async move { run_command(&cmd, Duration::from_millis(500), never()).await });
        let seen = pids_in(&pids).await;
        let o = run.await.unwrap();
        assert!(o.timed_out && !o.cancelled);
        assert_eq!(o.exit_code, Some(128 + libc::SIGTERM));
        assert!(all_gone(&seen).await, "a process of the group survived the timeout: {seen:?}");
    }

    #[tokio::test]
    async fn a_group_that_ignores_sigterm_gets_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let cmd = format!(
            "trap '' TERM; sh -c 'trap \"\" TERM; sleep 30' & echo $! > {p}.tmp; echo $$ >> {p}.tmp; mv {p}.tmp {p}; wait",
            p = pids.display()
        );
        let limits = Limits { kill_grace: Duration::from_millis(300), ..Limits::default() };
        let run =
            tokio::spawn(async move { run_with(&cmd, Duration::from_millis(300), never(), &limits).await });
        let seen = pids_in(&pids).await;
        let o = run.await.unwrap();
        assert!(o.timed_out);
        assert_eq!(o.exit_code, Some(128 + libc::SIGKILL));
        assert!(all_gone(&seen).await, "a process of the group survived SIGKILL: {seen:?}");
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // `started` is in the pipe before the pid file appears: the cancel that follows
        // the file must find it there.
        let cmd = format!(
            "echo started; sleep 30 & echo $! > {p}.tmp; echo $$ >> {p}.tmp; mv {p}.tmp {p}; wait",
            p = pids.display()
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(async move {
            run_command(&cmd, LONG, async move {
                let _ = rx.await;
            })
            .await
        });
        let seen = pids_in(&pids).await;
        tx.send(()).unwrap();
        let o = run.await.unwrap();
        assert!(o.cancelled && !o.timed_out);
        assert_eq!(o.stdout, "started\n", "output before the cancel is kept");
        assert!(all_gone(&seen).await, "a process of the group survived the cancel: {seen:?}");
    }

    #[tokio::test]
    async fn a_background_process_holding_the_output_does_not_hold_the_result() {
        let limits = Limits { kill_grace: Duration::from_millis(200), ..Limits::default() };
        let o = tokio::time::timeout(
            Duration::from_secs(10),
            run_with("sleep 5 & echo bye; exit 3", LONG, never(), &limits),
        )
        .await
        .expect("the result came when the shell ended");
        assert_eq!(o.exit_code, Some(3));
        assert_eq!(o.stdout, "bye\n");
        assert!(!o.timed_out);
    }
}
