//! The exec queue commands: `exec` (queue a command and wait for its result, or
//! `--shell` for a live terminal), `queue` and `cancel`.

use super::nodes::node_path;
use super::{shell, ClientArgs, NodeJsonArgs};
use crate::service::cli::{items, s, show};
use crate::service::client::{seg, Client};
use anyhow::{bail, Context};
use clap::Args;
use reqwest::Method;
use serde_json::Value;
use std::path::PathBuf;

// The commands' help is the doc comment of their `Command` variant.

#[derive(Debug, Args)]
pub struct Exec {
    /// The node's id.
    node: String,
    /// The command (run with bash -c on Linux agents). With --shell, optional: without
    /// it, an interactive login shell.
    command: Option<String>,
    /// How long the command may run: "60s", "5m", or seconds.
    #[arg(long, default_value = "60s")]
    timeout: String,
    /// Send this file's content as the command (no shell quoting problems).
    #[arg(long, conflicts_with = "command")]
    file: Option<PathBuf>,
    /// Print the result object as JSON (scripts read .stdout).
    #[arg(long)]
    json: bool,
    /// If the node drops while running it, run it again when it is back.
    #[arg(long)]
    retry_on_disconnect: bool,
    /// A live terminal on the node (a PTY, relayed by the server; no queue). Exits
    /// with the remote shell's code. --timeout does not apply: it lasts until the
    /// shell exits.
    #[arg(long, conflicts_with_all = ["file", "json", "retry_on_disconnect"])]
    shell: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn exec(a: Exec) -> anyhow::Result<u8> {
    if a.shell {
        return shell::run(&a.client.client()?, &a.node, a.command).await;
    }
    let command = match (a.command, a.file) {
        (Some(c), None) => c,
        (None, Some(f)) => std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?,
        _ => bail!("give the command, or --file with a script"),
    };
    let timeout =
        crate::service::config::parse_duration(&a.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let c = a.client.client()?;
    queue_and_wait(&c, &a.node, command, timeout, a.retry_on_disconnect, a.json).await
}

pub async fn queue(a: NodeJsonArgs) -> anyhow::Result<u8> {
    let v = a.client.client()?.send(Method::GET, &node_path(&a.id, "/exec/queue"), None).await?;
    show(&v, a.json, |v| {
        let line = |c: &Value| println!("{:<24} {:<10} {}", s(c, "id"), s(c, "status"), s(c, "command"));
        if !v["in_flight"].is_null() {
            line(&v["in_flight"]);
        }
        for c in items(&v["queued"]) {
            line(c);
        }
    });
    Ok(0)
}

#[derive(Debug, Args)]
pub struct Cancel {
    id: String,
    exec: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn cancel(a: Cancel) -> anyhow::Result<u8> {
    let path = queued_path(&a.id, &a.exec);
    let v = a.client.client()?.send(Method::DELETE, &path, None).await?;
    println!("{}: cancelled (was {})", a.exec, s(&v, "was"));
    Ok(0)
}

/// `/api/v1/nodes/{node}/exec/queue/{exec}`: a command in a node's queue.
fn queued_path(node: &str, exec: &str) -> String {
    node_path(node, &format!("/exec/queue/{}", seg(exec)))
}

/// Queues a command, waits for its end and prints it. The wait is bounded: past the
/// timeout plus a margin (the server's watchdog answers first in normal operation),
/// the command is cancelled and the exit code is 124. Ctrl-C cancels it too.
async fn queue_and_wait(
    c: &Client,
    node: &str,
    command: String,
    timeout: std::time::Duration,
    retry_on_disconnect: bool,
    as_json: bool,
) -> anyhow::Result<u8> {
    let body = serde_json::json!({
        "command": command,
        "timeout": timeout.as_secs_f64(),
        "retry_on_disconnect": retry_on_disconnect,
    });
    let queued = c.send(Method::POST, &node_path(node, "/exec"), Some(body)).await?;
    let id = queued["id"].as_str().unwrap_or_default().to_owned();
    if let Some(note) = queued["note"].as_str() {
        eprintln!("note: {note}");
    }
    let cancel = || async {
        let _ = c.send(Method::DELETE, &queued_path(node, &id), None).await;
    };
    let deadline = tokio::time::Instant::now() + timeout + std::time::Duration::from_secs(30);
    let result = loop {
        // The server holds the request until the command ends (up to 25 s a round).
        let path = node_path(node, &format!("/exec/{}/result?wait=25", seg(&id)));
        let r = tokio::select! {
            r = c.send(Method::GET, &path, None) => r?,
            _ = tokio::signal::ctrl_c() => {
                cancel().await;
                eprintln!("interrupted: cancelled {id}");
                return Ok(130);
            }
        };
        let status = r["status"].as_str().unwrap_or_default();
        if status != "pending" && status != "dispatched" {
            break r;
        }
        if tokio::time::Instant::now() >= deadline {
            cancel().await;
            eprintln!("error: no result for {id} within its timeout ({}s); cancelled it", timeout.as_secs());
            return Ok(124);
        }
    };
    let status = result["status"].as_str().unwrap_or_default();
    if as_json {
        println!("{result}");
    } else {
        use std::io::Write;
        let _ = std::io::stdout().write_all(result["stdout"].as_str().unwrap_or_default().as_bytes());
        let _ = std::io::stderr().write_all(result["stderr"].as_str().unwrap_or_default().as_bytes());
        if result["truncated"] == true {
            eprintln!("note: the output was cut at the server's limit");
        }
        match status {
            "completed" => {}
            "timed_out" => eprintln!("error: {id} timed out after {}s", timeout.as_secs()),
            other => eprintln!("error: {id} {other}: {}", s(&result, "reason")),
        }
    }
    Ok(match status {
        "completed" => result["exit_code"].as_i64().map(|c| c.clamp(0, 255) as u8).unwrap_or(1),
        "timed_out" => 124,
        "cancelled" => 130,
        _ => 125,
    })
}
