//! `build`: registers a build by hand (for setups without HydraRelease), and says
//! whether an auto-promotion followed.

use super::experiences::experience_path;
use super::ClientArgs;
use crate::service::cli::{pretty, s};
use clap::Args;
use reqwest::Method;
use serde_json::json;

// The command's help is the doc comment of its `Command` variant.

#[derive(Debug, Args)]
pub struct Build {
    experience: String,
    #[arg(long)]
    build: String,
    #[arg(long = "version", value_name = "VERSION")]
    build_version: String,
    #[arg(long)]
    artifact_url: String,
    #[arg(long)]
    sha256: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Exits 1 when the build was registered but its auto-promotion failed.
pub async fn build(a: Build) -> anyhow::Result<u8> {
    let (experience, build) = (&a.experience, &a.build);
    let body = json!({ "build": build, "version": a.build_version, "artifact_url": a.artifact_url, "sha256": a.sha256 });
    let path = experience_path(experience, "/builds");
    let v = a.client.client()?.send(Method::POST, &path, Some(body)).await?;
    if a.json {
        pretty(&v);
        return Ok(0);
    }
    if v["duplicate"] == true {
        println!("build {build} of {experience} was registered already");
    } else {
        println!("registered build {build} ({}) as {experience}'s development build", s(&v, "version"));
    }
    if let Some(err) = v["promotion_error"].as_str() {
        eprintln!("error: auto-promotion to staging failed: {err}");
        return Ok(1);
    }
    if let Some(p) = v.get("promotion").filter(|p| !p.is_null()) {
        match p["rollout_id"].as_str() {
            Some(id) => println!("auto-promoted to staging: rollout {id}"),
            None => println!("auto-promoted to staging (no nodes to reprovision)"),
        }
    }
    Ok(0)
}
