//! The node commands: `nodes`, `node`, `approve`, `reject`, `remove`, `roles`,
//! `placement`, `drain`, `history` and `reprovision`.

use super::ClientArgs;
use crate::service::cli::{items, pretty, s};
use crate::service::client::{query, seg};
use clap::Args;
use reqwest::Method;
use serde_json::{json, Value};

// The commands' help is the doc comment of their `Command` variant.

#[derive(Debug, Args)]
pub struct List {
    #[arg(long)]
    json: bool,
    #[arg(long)]
    district: Option<String>,
    #[arg(long)]
    venue: Option<String>,
    #[arg(long)]
    role: Option<String>,
    #[arg(long)]
    status: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

impl List {
    pub async fn run(self) -> anyhow::Result<u8> {
        let c = self.client.client()?;
        let q = query(&[
            ("district", &self.district),
            ("venue", &self.venue),
            ("role", &self.role),
            ("status", &self.status),
        ]);
        let nodes = c.list(&format!("/api/v1/nodes{q}"), &[]).await?;
        if self.json {
            pretty(&Value::Array(nodes));
        } else {
            print_nodes(&nodes);
        }
        Ok(0)
    }
}

#[derive(Debug, Args)]
pub struct Show {
    id: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

impl Show {
    pub async fn run(self) -> anyhow::Result<u8> {
        let v = self.client.client()?.send(Method::GET, &node_path(&self.id, ""), None).await?;
        if self.json {
            pretty(&v);
        } else {
            print_nodes(std::slice::from_ref(&v));
        }
        Ok(0)
    }
}

#[derive(Debug, Args)]
pub struct Approve {
    id: String,
    /// Comma-separated roles from the RoleCatalog.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    #[arg(long)]
    district: String,
    #[arg(long)]
    venue: String,
    #[arg(long)]
    environment: Option<String>,
    #[arg(long)]
    owner: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

impl Approve {
    pub async fn run(self) -> anyhow::Result<u8> {
        let body = json!({"roles": self.roles, "district": self.district, "venue": self.venue, "environment": self.environment, "owner": self.owner});
        change(&self.client, &self.id, "/approve", Some(body)).await
    }
}

#[derive(Debug, Args)]
pub struct Reject {
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

impl Reject {
    pub async fn run(self) -> anyhow::Result<u8> {
        change(&self.client, &self.id, "/reject", None).await
    }
}

#[derive(Debug, Args)]
pub struct Remove {
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

impl Remove {
    pub async fn run(self) -> anyhow::Result<u8> {
        self.client.client()?.send(Method::DELETE, &node_path(&self.id, ""), None).await?;
        println!("removed {}", self.id);
        Ok(0)
    }
}

#[derive(Debug, Args)]
pub struct Roles {
    id: String,
    /// Comma-separated roles from the RoleCatalog (empty to clear).
    #[arg(value_delimiter = ',')]
    roles: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

impl Roles {
    pub async fn run(self) -> anyhow::Result<u8> {
        let roles: Vec<String> = self.roles.into_iter().filter(|r| !r.is_empty()).collect();
        change(&self.client, &self.id, "/roles", Some(json!({"roles": roles}))).await
    }
}

#[derive(Debug, Args)]
pub struct Placement {
    id: String,
    #[arg(long)]
    district: String,
    #[arg(long)]
    venue: String,
    #[arg(long)]
    environment: Option<String>,
    #[arg(long)]
    owner: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

impl Placement {
    pub async fn run(self) -> anyhow::Result<u8> {
        let body = json!({"district": self.district, "venue": self.venue, "environment": self.environment, "owner": self.owner});
        change(&self.client, &self.id, "/placement", Some(body)).await
    }
}

#[derive(Debug, Args)]
pub struct Drain {
    id: String,
    #[arg(long)]
    off: bool,
    #[command(flatten)]
    client: ClientArgs,
}

impl Drain {
    pub async fn run(self) -> anyhow::Result<u8> {
        change(&self.client, &self.id, "/drain", Some(json!({"draining": !self.off}))).await
    }
}

#[derive(Debug, Args)]
pub struct History {
    id: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

impl History {
    pub async fn run(self) -> anyhow::Result<u8> {
        let v = self.client.client()?.send(Method::GET, &node_path(&self.id, "/history"), None).await?;
        if self.json {
            pretty(&v);
            return Ok(0);
        }
        for e in items(&v["events"]) {
            println!(
                "{:>8}  {}  {:<24} {:<28} {}",
                e["seq"],
                s(e, "at"),
                s(e, "type"),
                s(e, "cause"),
                e["data"]
            );
        }
        Ok(0)
    }
}

#[derive(Debug, Args)]
pub struct Reprovision {
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

impl Reprovision {
    pub async fn run(self) -> anyhow::Result<u8> {
        let v = self.client.client()?.send(Method::POST, &node_path(&self.id, "/reprovision"), None).await?;
        println!("{}: reprovision requested ({})", self.id, s(&v, "provision_state"));
        Ok(0)
    }
}

/// `/api/v1/nodes/{id}` and what follows it.
pub(super) fn node_path(id: &str, rest: &str) -> String {
    format!("/api/v1/nodes/{}{rest}", seg(id))
}

/// A change to one node (`POST /api/v1/nodes/{id}{action}`), whose answer is the node.
async fn change(client: &ClientArgs, id: &str, action: &str, body: Option<Value>) -> anyhow::Result<u8> {
    let v = client.client()?.send(Method::POST, &node_path(id, action), body).await?;
    print_nodes(std::slice::from_ref(&v));
    Ok(0)
}

/// Prints nodes as a table.
pub fn print_nodes(nodes: &[Value]) {
    println!(
        "{:<22} {:<18} {:<16} {:<9} {:<8} {:<24} {:<20} LAST_SEEN",
        "ID", "NAME", "IP", "STATUS", "LIVE", "ROLES", "DISTRICT/VENUE"
    );
    for n in nodes {
        let place = format!("{}/{}", s(n, "district"), s(n, "venue"));
        println!(
            "{:<22} {:<18} {:<16} {:<9} {:<8} {:<24} {:<20} {}",
            s(n, "id"),
            s(n, "name"),
            s(n, "ip"),
            s(n, "status"),
            s(n, "node_status"),
            s(n, "roles"),
            place,
            s(n, "last_seen")
        );
    }
}
