//! The experience commands: `create` and `get`.

use super::ClientArgs;
use crate::service::cli::{items, s, show};
use crate::service::client::seg;
use clap::Args;
use reqwest::Method;
use serde_json::{json, Value};

// The commands' help is the doc comment of their `Command` variant.

#[derive(Debug, Args)]
pub struct Create {
    experience: String,
    #[arg(long)]
    project: String,
    #[arg(long)]
    district: String,
    /// A venue the experience runs at (repeat for several).
    #[arg(long = "venue", required = true)]
    venues: Vec<String>,
    /// Promote every new build to staging at once.
    #[arg(long)]
    auto_promote: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn create(a: Create) -> anyhow::Result<u8> {
    let body = json!({
        "id": a.experience,
        "project": a.project,
        "district": a.district,
        "venues": a.venues,
        "auto_promote": a.auto_promote,
    });
    let v = a.client.client()?.send(Method::POST, "/api/v1/experiences", Some(body)).await?;
    show(&v, a.json, |v| println!("created {}", s(v, "id")));
    Ok(0)
}

#[derive(Debug, Args)]
pub struct Get {
    experience: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn get(a: Get) -> anyhow::Result<u8> {
    let v = a.client.client()?.send(Method::GET, &experience_path(&a.experience, ""), None).await?;
    show(&v, a.json, |v| {
        print_experience(v);
        let builds = items(&v["builds"]);
        if !builds.is_empty() {
            println!("builds:");
            for b in builds {
                let (build, version) = (s(b, "build"), s(b, "version"));
                println!("  {build:<20} {version:<12} {} {}", s(b, "registered_at"), s(b, "artifact_url"));
            }
        }
    });
    Ok(0)
}

/// `/api/v1/experiences/{id}` and what follows it.
pub(super) fn experience_path(id: &str, rest: &str) -> String {
    format!("/api/v1/experiences/{}{rest}", seg(id))
}

/// An experience and what each environment runs.
pub(super) fn print_experience(x: &Value) {
    let auto = if x["auto_promote"] == true { ", auto-promote" } else { "" };
    println!("{} (project {}, {}/{}{auto})", s(x, "id"), s(x, "project"), s(x, "district"), s(x, "venues"));
    for env in hydra_projections::ENVIRONMENTS {
        let e = &x["environments"][env];
        if e.is_null() {
            println!("  {env:<12} -");
        } else {
            let rollout = e["rollout_id"].as_str().map(|r| format!(" (rollout {r})")).unwrap_or_default();
            println!("  {env:<12} {} {} since {}{rollout}", s(e, "build"), s(e, "version"), s(e, "since"));
        }
    }
}
