//! The kiosk head commands: `heads`, `assign` and `allow`.

use super::nodes::node_path;
use super::ClientArgs;
use crate::service::cli::{items, s, show};
use clap::Args;
use reqwest::Method;
use serde_json::{json, Value};

// The commands' help is the doc comment of their `Command` variant.

#[derive(Debug, Args)]
pub struct List {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn heads(a: List) -> anyhow::Result<u8> {
    let heads = Value::Array(a.client.client()?.list("/api/v1/heads", &[]).await?);
    show(&heads, a.json, print_heads);
    Ok(0)
}

/// Heads as a table.
fn print_heads(heads: &Value) {
    println!(
        "{:<22} {:<20} {:<8} {:<10} {:<20} {:<20} LAST_SEEN",
        "ID", "NAME", "LIVE", "STATUS", "DISTRICT/VENUE", "BODY"
    );
    for h in items(heads) {
        let place = format!("{}/{}", s(h, "district"), s(h, "venue"));
        println!(
            "{:<22} {:<20} {:<8} {:<10} {:<20} {:<20} {}",
            s(h, "id"),
            s(h, "name"),
            s(h, "node_status"),
            s(h, "status"),
            place,
            s(h, "assigned_body_name"),
            s(h, "last_seen")
        );
    }
}

#[derive(Debug, Args)]
pub struct Assign {
    head: String,
    body: String,
    /// The app the kiosk starts on that body.
    #[arg(long)]
    app: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn assign(a: Assign) -> anyhow::Result<u8> {
    let head = &a.head;
    let body_id = (a.body != "none").then_some(&a.body);
    let payload = json!({ "body_id": body_id, "app_id": a.app });
    let path = node_path(head, "/head-assignment");
    let v = a.client.client()?.send(Method::POST, &path, Some(payload)).await?;
    match v["assigned_body_id"].as_str() {
        Some(b) => println!("{head}: pinned to {b} ({})", s(&v, "assigned_body_name")),
        None => println!("{head}: not pinned to any body"),
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct Allow {
    head: String,
    experiences: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn allow(a: Allow) -> anyhow::Result<u8> {
    let payload = json!({ "experiences": a.experiences });
    let path = node_path(&a.head, "/allowed-experiences");
    let v = a.client.client()?.send(Method::POST, &path, Some(payload)).await?;
    println!("{}: allows {}", a.head, v["allowed_experiences"]);
    Ok(0)
}
