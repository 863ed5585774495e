//! The kiosk head commands: `heads`, `assign` and `allow`.

use super::nodes::node_path;
use super::ClientArgs;
use crate::service::cli::{pretty, s};
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

impl List {
    pub async fn run(self) -> anyhow::Result<u8> {
        let heads = self.client.client()?.list("/api/v1/heads", &[]).await?;
        if self.json {
            pretty(&Value::Array(heads));
            return Ok(0);
        }
        println!(
            "{:<22} {:<20} {:<8} {:<10} {:<20} {:<20} LAST_SEEN",
            "ID", "NAME", "LIVE", "STATUS", "DISTRICT/VENUE", "BODY"
        );
        for h in &heads {
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
        Ok(0)
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

impl Assign {
    pub async fn run(self) -> anyhow::Result<u8> {
        let head = &self.head;
        let body_id = (self.body != "none").then_some(&self.body);
        let payload = json!({ "body_id": body_id, "app_id": self.app });
        let path = node_path(head, "/head-assignment");
        let v = self.client.client()?.send(Method::POST, &path, Some(payload)).await?;
        match v["assigned_body_id"].as_str() {
            Some(b) => println!("{head}: pinned to {b} ({})", s(&v, "assigned_body_name")),
            None => println!("{head}: not pinned to any body"),
        }
        Ok(0)
    }
}

#[derive(Debug, Args)]
pub struct Allow {
    head: String,
    experiences: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

impl Allow {
    pub async fn run(self) -> anyhow::Result<u8> {
        let payload = json!({ "experiences": self.experiences });
        let path = node_path(&self.head, "/allowed-experiences");
        let v = self.client.client()?.send(Method::POST, &path, Some(payload)).await?;
        println!("{}: allows {}", self.head, v["allowed_experiences"]);
        Ok(0)
    }
}
