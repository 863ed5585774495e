//! `hydracluster exec <node> --shell [command]`: a terminal on the node through the
//! server's WebSocket relay. On a terminal, stdin goes raw (restored on every way
//! out) and window sizes follow; from a pipe, bytes go through as they are. The exit
//! code is the remote shell's.

use crate::service::client::{seg, Client};
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use tokio::signal::unix::{signal, SignalKind};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Ctrl-D: what a terminal sends at the end of input.
const EOF_BYTE: u8 = 0x04;

/// Puts the terminal in raw mode; restores it when dropped (also on an error or a
/// panic), so a failed session never leaves the admin's terminal unusable.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("putting the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ =
            nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// The size of the admin's terminal, if stdin is one.
fn window_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which lives across the call.
    let ok = unsafe { libc::ioctl(std::io::stdin().as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

fn resize_message((cols, rows): (u16, u16)) -> Message {
    Message::Text(serde_json::json!({"resize": {"cols": cols, "rows": rows}}).to_string().into())
}

/// The message of the server's `{"error": …}` answer, or the status's name.
fn refusal(resp: &tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>) -> String {
    let status = resp.status();
    let message = resp
        .body()
        .as_deref()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_owned());
    format!("{status}: {message}")
}

/// Stdin, read on a plain thread: a read blocked on a terminal cannot be cancelled,
/// and such a thread does not hold the process when it exits (a runtime's blocking
/// pool would). `None` at the end of input.
fn stdin_reader() -> tokio::sync::mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// The next delivery of a signal listened to; never, when not listened to.
async fn next_signal(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs the session; returns the remote shell's exit code.
pub async fn run(c: &Client, node: &str, command: Option<String>) -> anyhow::Result<u8> {
    let tty = std::io::stdin().is_terminal();
    let size = if tty { window_size() } else { None };
    let (cols, rows) = size.unwrap_or((80, 24));
    let mut query = vec![("cols", cols.to_string()), ("rows", rows.to_string())];
    if let Some(c) = command {
        query.push(("command", c));
    }
    let shown = format!("{}/api/v1/nodes/{}/shell", crate::agent::client::ws_url(c.base()), seg(node));
    let url = format!("{shown}?{}", serde_urlencoded::to_string(&query)?);
    let mut req = url.as_str().into_client_request().with_context(|| format!("{url} is not a valid URL"))?;
    if let Some(token) = c.token() {
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("the admin token cannot go in a header"))?;
        req.headers_mut().insert(AUTHORIZATION, bearer);
    }
    let connected =
        tokio::time::timeout(std::time::Duration::from_secs(15), tokio_tungstenite::connect_async(req))
            .await
            .map_err(|_| anyhow::anyhow!("cannot reach {shown}: no answer in time"))?;
    let mut ws = match connected {
        Ok((ws, _)) => ws,
        Err(WsError::Http(resp)) => bail!("{}", refusal(&resp)),
        Err(e) => bail!("cannot reach {shown}: {e}"),
    };

    let raw = if tty { Some(RawMode::enter()?) } else { None };
    let mut input = stdin_reader();
    let mut input_open = true;
    let on_tty = |kind: SignalKind| if tty { signal(kind).ok() } else { None };
    let mut winch = on_tty(SignalKind::window_change());
    // Killed politely while the terminal is raw: restore it before leaving.
    let (mut term, mut hup) = (on_tty(SignalKind::terminate()), on_tty(SignalKind::hangup()));
    let mut exit: Option<i32> = None;
    let mut stdout = std::io::stdout();
    let why: String = loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    // Written at once: this is a terminal, not a log.
                    if stdout.write_all(&bytes).and_then(|()| stdout.flush()).is_err() {
                        break "cannot write to stdout".into();
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Some(code) = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v.get("exit").and_then(|e| e.as_i64()))
                    {
                        exit = Some(code as i32);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(f) if !f.reason.is_empty() => f.reason.to_string(),
                        _ => "the server closed the connection".into(),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(WsError::ConnectionClosed)) | None => break "the connection closed".into(),
                Some(Err(e)) => break format!("the connection failed: {e}"),
            },
            chunk = input.recv(), if input_open => match chunk {
                Some(Some(bytes)) => {
                    if ws.send(Message::Binary(bytes.into())).await.is_err() {
                        break "the connection failed while sending".into();
                    }
                }
                _ => {
                    input_open = false;
                    // From a pipe, the end of input is sent as a terminal would send
                    // it (Ctrl-D), so that a program reading its input ends (an
                    // interactive shell may miss it: piped input should end in `exit`).
                    if !tty {
                        let _ = ws.send(Message::Binary(vec![EOF_BYTE].into())).await;
                    }
                }
            },
            Some(()) = next_signal(&mut winch) => {
                if let Some(size) = window_size() {
                    let _ = ws.send(resize_message(size)).await;
                }
            }
            Some(()) = next_signal(&mut term) => break "interrupted by SIGTERM".into(),
            Some(()) = next_signal(&mut hup) => break "interrupted by SIGHUP".into(),
        }
    };
    drop(raw);
    match exit {
        Some(code) => Ok(code.clamp(0, 255) as u8),
        None => bail!("the shell ended without an exit code: {why}"),
    }
}
