//! The node commands: `nodes`, `node`, `approve`, `reject`, `remove`, `roles`,
//! `placement`, `drain`, `history` and `reprovision`.

use super::{ClientArgs, NodeArgs, NodeJsonArgs};
use crate::service::cli::{items, s, show};
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

pub async fn nodes(a: List) -> anyhow::Result<u8> {
    let c = a.client.client()?;
    let q =
        query(&[("district", &a.district), ("venue", &a.venue), ("role", &a.role), ("status", &a.status)]);
    let nodes = Value::Array(c.list(&format!("/api/v1/nodes{q}"), &[]).await?);
    show(&nodes, a.json, |v| print_nodes(items(v)));
    Ok(0)
}

pub async fn node(a: NodeJsonArgs) -> anyhow::Result<u8> {
    let v = a.client.client()?.send(Method::GET, &node_path(&a.id, ""), None).await?;
    show(&v, a.json, |v| print_nodes(std::slice::from_ref(v)));
    Ok(0)
}

#[derive(Debug, Args)]
pub struct Approve {
    id: String,
    /// Comma-separated roles from the RoleCatalog.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    #[command(flatten)]
    place: Place,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn approve(a: Approve) -> anyhow::Result<u8> {
    let mut body = serde_json::to_value(&a.place)?;
    body["roles"] = json!(a.roles);
    change(&a.client, &a.id, "/approve", Some(body)).await
}

pub async fn reject(a: NodeArgs) -> anyhow::Result<u8> {
    change(&a.client, &a.id, "/reject", None).await
}

pub async fn remove(a: NodeArgs) -> anyhow::Result<u8> {
    a.client.client()?.send(Method::DELETE, &node_path(&a.id, ""), None).await?;
    println!("removed {}", a.id);
    Ok(0)
}

pub async fn rekey(a: NodeArgs) -> anyhow::Result<u8> {
    let answer = a.client.client()?.send(Method::POST, &node_path(&a.id, "/token"), Some(json!({}))).await?;
    println!("the old token of {} is revoked", a.id);
    match answer["token"].as_str() {
        Some(token) => println!(
            "the node has no re-key key: put this new token in its state dir's `token` file (0600), then restart hydranode:\n{token}"
        ),
        None => println!("its agent takes the new token itself (re-issue {})", answer["rekey_id"].as_str().unwrap_or("?")),
    }
    Ok(0)
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

pub async fn roles(a: Roles) -> anyhow::Result<u8> {
    let roles: Vec<String> = a.roles.into_iter().filter(|r| !r.is_empty()).collect();
    change(&a.client, &a.id, "/roles", Some(json!({"roles": roles}))).await
}

#[derive(Debug, Args)]
pub struct Placement {
    id: String,
    #[command(flatten)]
    place: Place,
    #[command(flatten)]
    client: ClientArgs,
}

/// Where a node is (`approve` and `placement` send the same fields).
#[derive(Debug, Args, serde::Serialize)]
pub struct Place {
    #[arg(long)]
    district: String,
    #[arg(long)]
    venue: String,
    #[arg(long)]
    environment: Option<String>,
    #[arg(long)]
    owner: Option<String>,
}

pub async fn placement(a: Placement) -> anyhow::Result<u8> {
    change(&a.client, &a.id, "/placement", Some(serde_json::to_value(&a.place)?)).await
}

#[derive(Debug, Args)]
pub struct Drain {
    id: String,
    #[arg(long)]
    off: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn drain(a: Drain) -> anyhow::Result<u8> {
    change(&a.client, &a.id, "/drain", Some(json!({"draining": !a.off}))).await
}

pub async fn history(a: NodeJsonArgs) -> anyhow::Result<u8> {
    let v = a.client.client()?.send(Method::GET, &node_path(&a.id, "/history"), None).await?;
    show(&v, a.json, |v| {
        for e in items(&v["events"]) {
            let (seq, data) = (&e["seq"], &e["data"]);
            println!("{seq:>8}  {}  {:<24} {:<28} {data}", s(e, "at"), s(e, "type"), s(e, "cause"));
        }
    });
    Ok(0)
}

pub async fn reprovision(a: NodeArgs) -> anyhow::Result<u8> {
    let v = a.client.client()?.send(Method::POST, &node_path(&a.id, "/reprovision"), None).await?;
    println!("{}: reprovision requested ({})", a.id, s(&v, "provision_state"));
    Ok(0)
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
        "{:<22} {:<18} {:<16} {:<9} {:<8} {:<24} {:<20} {:<24} UPTIME_24H",
        "ID", "NAME", "IP", "STATUS", "LIVE", "ROLES", "DISTRICT/VENUE", "LAST_SEEN"
    );
    for n in nodes {
        let place = format!("{}/{}", s(n, "district"), s(n, "venue"));
        println!(
            "{:<22} {:<18} {:<16} {:<9} {:<8} {:<24} {:<20} {:<24} {}",
            s(n, "id"),
            s(n, "name"),
            s(n, "ip"),
            s(n, "status"),
            s(n, "node_status"),
            s(n, "roles"),
            place,
            s(n, "last_seen"),
            super::uptime::percent(n)
        );
    }
}
