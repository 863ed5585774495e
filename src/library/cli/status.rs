//! `status`: the library's health, its links to hydracluster and HydraRelease, every
//! experience's environments, and the active rollouts.

use super::experiences::print_experience;
use super::rollouts::print_rollouts;
use super::ClientArgs;
use crate::service::cli::{items, pretty, s};
use clap::Args;
use reqwest::Method;
use serde_json::{json, Value};

// The command's help is the doc comment of its `Command` variant.

#[derive(Debug, Args)]
pub struct Status {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn status(a: Status) -> anyhow::Result<u8> {
    let c = a.client.client()?;
    let health = c.send(Method::GET, "/api/v1/health", None).await?;
    let experiences = c.send(Method::GET, "/api/v1/experiences", None).await?;
    let mut active = c.send(Method::GET, "/api/v1/rollouts?state=running", None).await?;
    let paused = c.send(Method::GET, "/api/v1/rollouts?state=paused", None).await?;
    if let (Some(a), Some(p)) = (active.as_array_mut(), paused.as_array()) {
        a.extend(p.iter().cloned());
    }
    if a.json {
        pretty(&json!({ "health": health, "experiences": experiences, "active_rollouts": active }));
        return Ok(0);
    }
    println!(
        "hydraexperiencelibrary {} at {}: {}, last event {}",
        s(&health, "version"),
        a.client.server,
        s(&health, "status"),
        s(&health, "last_event_id")
    );
    println!("cluster: {}", link(&health["cluster"]));
    let release = &health["release"];
    let cursor = release["cursor"].as_str().map(|c| format!(", at build event {c}")).unwrap_or_default();
    println!("release: {}{cursor}", link(release));
    let list = items(&experiences);
    println!("experiences: {}", list.len());
    for x in list {
        print_experience(x);
    }
    let active = items(&active);
    if active.is_empty() {
        println!("active rollouts: none");
    } else {
        println!("active rollouts: {}", active.len());
        print_rollouts(active);
    }
    Ok(0)
}

/// A link to another service: its URL and whether the library follows it now.
fn link(v: &Value) -> String {
    match v["url"].as_str() {
        None => "not configured".into(),
        Some(url) if v["connected"] == true => format!("{url} (connected)"),
        Some(url) => format!("{url} (not connected)"),
    }
}
