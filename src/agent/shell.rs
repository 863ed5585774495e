//! The shell loop: long-polls the server for shell sessions (`exec --shell`) and runs
//! each in its own task, next to the exec loop and never waiting for it: bash on a
//! fresh PTY (a login shell, or `bash -c` a command), its terminal bytes pumped to and
//! from the session's WebSocket, resizes applied, and `{"exit":N}` sent when it ends.

use super::backoff::PollPace;
use super::client::{CallError, Server, ShellOffer, ShellSocket};
use super::exec::valid_id;
use super::{stopped, Revoked};
use futures_util::{SinkExt, StreamExt};
use nix::fcntl::OFlag;
use nix::pty::PtyMaster;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Sessions open at once on one node; past it a new one is refused with a reason.
const MAX_SESSIONS: usize = 16;
/// After the shell exits, how long what is left in the terminal is still read: a
/// background process that keeps the terminal open must not hold the session.
const DRAIN: Duration = Duration::from_millis(500);
/// After a hang-up, how long the shell gets to end before it is killed.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// Polls for sessions until the agent stops (then lets open sessions close, briefly)
/// or the token is revoked.
pub async fn shell_loop(server: Server, wait_s: u64, mut stop: watch::Receiver<bool>) -> Result<(), Revoked> {
    let mut sessions = JoinSet::new();
    let mut pace = PollPace::new("polling for shell sessions");
    loop {
        let asked = Instant::now();
        let polled = tokio::select! {
            r = server.shell_check(wait_s) => r,
            _ = stopped(&mut stop) => break,
        };
        while sessions.try_join_next().is_some() {}
        let pause = match polled {
            Ok(Some(offer)) => {
                if !valid_id(&offer.session) {
                    tracing::error!(session = ?offer.session, "the server offered a shell session this agent cannot use");
                } else if sessions.len() >= MAX_SESSIONS {
                    sessions.spawn(refuse(server.clone(), offer));
                } else {
                    sessions.spawn(session(server.clone(), offer, stop.clone()));
                }
                pace.answered()
            }
            Ok(None) => pace.empty(asked),
            Err(e) if e.revoked() => return Err(Revoked(e.to_string())),
            Err(e) => pace.failed(&e),
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    // Each session sees the stop too: it hangs up its shell and closes its socket.
    let _ =
        tokio::time::timeout(HANGUP_GRACE * 2, async { while sessions.join_next().await.is_some() {} }).await;
    Ok(())
}

fn close_frame(code: CloseCode, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame { code, reason: reason[..end].into() }))
}

async fn attach(server: &Server, session: &str) -> Option<ShellSocket> {
    match server.shell_socket(session).await {
        Ok(socket) => Some(socket),
        // Offered twice (the first attach was slow) or over already: nothing to do.
        Err(e @ CallError::Status { status: 404 | 409, .. }) => {
            tracing::debug!(session = %session, error = %e, "shell session not attached");
            None
        }
        Err(e) => {
            tracing::warn!(session = %session, error = %e, "cannot attach to the shell session");
            None
        }
    }
}

/// Attaches only to say why this node takes no more shells.
async fn refuse(server: Server, offer: ShellOffer) {
    tracing::warn!(session = %offer.session, "refusing a shell session: {MAX_SESSIONS} are open");
    if let Some(mut socket) = attach(&server, &offer.session).await {
        let reason = format!("this node has {MAX_SESSIONS} shells open already; close one");
        let _ = socket.send(close_frame(CloseCode::Again, &reason)).await;
    }
}

/// One session: attach, start bash on a PTY, pump until either side ends.
async fn session(server: Server, offer: ShellOffer, mut stop: watch::Receiver<bool>) {
    let Some(socket) = attach(&server, &offer.session).await else { return };
    let (mut tx, mut rx) = socket.split();
    let (master, mut child) = match start(&offer) {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(session = %offer.session, error = %e, "cannot start the shell");
            let reason = format!("hydranode could not start the shell: {e}");
            let _ = tx.send(close_frame(CloseCode::Error, &reason)).await;
            return;
        }
    };
    tracing::info!(session = %offer.session, interactive = offer.command.is_none(), "shell session started");
    tracing::debug!(session = %offer.session, command = ?offer.command, "shell command");

    // Output and input are pumped by two futures, so that a full terminal input
    // buffer never stops the output (a program that writes before it reads).
    let status = {
        let output = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match read(&master, &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let input = async {
            while let Some(msg) = rx.next().await {
                match msg {
                    Ok(Message::Binary(bytes)) => {
                        if write_all(&master, &bytes).await.is_err() {
                            // The terminal is gone: the shell is ending; keep reading
                            // so the close comes from the exit.
                            std::future::pending::<()>().await;
                        }
                    }
                    Ok(Message::Text(text)) => control(&master, &text),
                    Ok(Message::Close(_)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::pin!(output, input);
        let mut output_done = false;
        let ended = loop {
            tokio::select! {
                _ = &mut output, if !output_done => output_done = true,
                _ = &mut input => break Ended::HungUp,
                status = child.wait() => break Ended::Exited(status),
                _ = stopped(&mut stop) => break Ended::Stopping,
            }
        };
        if matches!(ended, Ended::Exited(_)) && !output_done {
            // What the shell printed last is still in the terminal.
            let _ = tokio::time::timeout(DRAIN, &mut output).await;
        }
        ended
    };
    match status {
        Ended::Exited(status) => {
            let code = status.map(exit_code).unwrap_or(1);
            tracing::info!(session = %offer.session, exit_code = code, "shell session ended");
            let exit = serde_json::json!({ "exit": code }).to_string();
            let _ = tx.send(Message::Text(exit.into())).await;
            let _ = tx.send(close_frame(CloseCode::Normal, &format!("exit {code}"))).await;
            // The other side answers the close; give it a moment, not more.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), async { while rx.next().await.is_some() {} })
                    .await;
            drop(master);
        }
        Ended::HungUp | Ended::Stopping => {
            if matches!(status, Ended::Stopping) {
                let _ = tx.send(close_frame(CloseCode::Away, "the agent is stopping")).await;
            }
            tracing::info!(session = %offer.session, "shell session closed; hanging up the shell");
            // Closing the terminal sends SIGHUP to the shell, which passes it on to its
            // jobs, as when an ssh connection drops.
            drop(master);
            hang_up(&mut child).await;
        }
    }
}

enum Ended {
    Exited(std::io::Result<ExitStatus>),
    HungUp,
    Stopping,
}

/// Waits for a hung-up shell to end; kills its process group if it does not.
async fn hang_up(child: &mut tokio::process::Child) {
    if tokio::time::timeout(HANGUP_GRACE, child.wait()).await.is_ok() {
        return;
    }
    if let Some(pid) = child.id() {
        // SAFETY: killpg only sends a signal; the shell is not reaped yet, so its pid
        // (its session's and group's id) cannot have been reused.
        unsafe {
            libc::killpg(pid as i32, libc::SIGKILL);
        }
    }
    let _ = child.kill().await;
}

/// The shell's code, or 128 + signal like a shell reports a killed process.
fn exit_code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}

/// `{"resize":{"cols","rows"}}`: the terminal's new size (the kernel tells the
/// foreground program with SIGWINCH).
fn control(master: &AsyncFd<PtyMaster>, text: &str) {
    #[derive(serde::Deserialize)]
    struct Control {
        resize: Option<Size>,
    }
    #[derive(serde::Deserialize)]
    struct Size {
        cols: u16,
        rows: u16,
    }
    match serde_json::from_str::<Control>(text) {
        Ok(Control { resize: Some(Size { cols, rows }) }) => {
            if let Err(e) = set_size(master.get_ref(), cols, rows) {
                tracing::debug!(error = %e, "cannot resize the terminal");
            }
        }
        _ => tracing::debug!(message = %text, "ignoring a control message this agent does not know"),
    }
}

fn set_size(master: &PtyMaster, cols: u16, rows: u16) -> std::io::Result<()> {
    let size = libc::winsize { ws_row: rows.max(1), ws_col: cols.max(1), ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives across the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens a PTY and starts bash on it as the leader of a new session whose controlling
/// terminal it is (so job control, Ctrl-C and SIGHUP work as on a console).
fn start(offer: &ShellOffer) -> std::io::Result<(AsyncFd<PtyMaster>, tokio::process::Child)> {
    // Close-on-exec from the start: another session's shell, started at the same time
    // on another thread, must not inherit this terminal.
    let master =
        nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let slave_path = nix::pty::ptsname_r(&master)?;
    set_size(&master, offer.cols, offer.rows)?;
    // std opens with O_CLOEXEC; O_NOCTTY so that the agent itself never takes it.
    let slave =
        std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(&slave_path)?;

    let mut cmd = tokio::process::Command::new("bash");
    match &offer.command {
        Some(command) => {
            cmd.arg("-c").arg(command);
        }
        None => {
            cmd.arg("-l");
            if let Some(home) = std::env::var_os("HOME").filter(|h| std::path::Path::new(h).is_dir()) {
                cmd.current_dir(home);
            }
        }
    }
    if std::env::var_os("TERM").is_none() {
        // An agent started by a service manager has no TERM; the admin's is a terminal.
        cmd.env("TERM", "xterm-256color");
    }
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave))
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // fd 0 is the terminal by now: make it the new session's controlling one.
            if libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Our copies of the terminal's slave end go with `cmd`: once the shell and what it
    // started have closed theirs, reading the master ends.
    drop(cmd);
    // SAFETY: the PtyMaster owns its descriptor, open for as long as it lives.
    let master = unsafe { AsyncFd::register(master) }?;
    Ok((master, child))
}

/// Reads what the terminal printed; 0 when every slave end is closed (Linux says EIO).
async fn read(master: &AsyncFd<PtyMaster>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = master.readable().await?;
        match guard.try_io(|fd| {
            let mut m: &PtyMaster = fd.get_ref();
            m.read(buf)
        }) {
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

/// Types into the terminal.
async fn write_all(master: &AsyncFd<PtyMaster>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|fd| {
            let mut m: &PtyMaster = fd.get_ref();
            m.write(data)
        }) {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(command: Option<&str>) -> ShellOffer {
        ShellOffer { session: "shell-test".into(), command: command.map(str::to_owned), cols: 100, rows: 30 }
    }

    async fn output_of(master: &AsyncFd<PtyMaster>) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), read(master, &mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_command_runs_on_a_real_terminal_of_the_asked_size() {
        let (master, mut child) = start(&offer(Some("tty; stty size; exit 4"))).unwrap();
        let out = output_of(&master).await;
        let status = child.wait().await.unwrap();
        assert_eq!(exit_code(status), 4);
        assert!(out.contains("/dev/pts/"), "{out:?}");
        assert!(out.contains("30 100"), "{out:?}");
    }

    #[tokio::test]
    async fn typing_reaches_the_program_and_resizing_it_shows() {
        let (master, mut child) = start(&offer(Some("read line; echo \"got $line\"; stty size"))).unwrap();
        control(&master, r#"{"resize":{"cols":132,"rows":43}}"#);
        write_all(&master, b"hello\n").await.unwrap();
        let out = output_of(&master).await;
        assert_eq!(exit_code(child.wait().await.unwrap()), 0);
        assert!(out.contains("got hello"), "{out:?}");
        assert!(out.contains("43 132"), "{out:?}");
    }

    #[tokio::test]
    async fn closing_the_terminal_hangs_up_the_shell() {
        let (master, mut child) = start(&offer(Some("sleep 30"))).unwrap();
        drop(master);
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
        assert_eq!(exit_code(status), 128 + libc::SIGHUP);
    }

    #[test]
    fn session_ids_are_checked_before_they_go_into_a_url() {
        assert!(valid_id("shell-0123abcd"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(""));
    }
}
