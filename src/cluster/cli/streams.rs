//! The stream commands: `stream-stop` (a body's stream, through its exec channel) and
//! `anomalies` (bodies whose stream state and GPU disagree).

use super::nodes::node_path;
use super::ClientArgs;
use crate::service::cli::{items, pretty, s};
use clap::Args;
use reqwest::Method;

// The commands' help is the doc comment of their `Command` variant.

#[derive(Debug, Args)]
pub struct StreamStop {
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

impl StreamStop {
    pub async fn run(self) -> anyhow::Result<u8> {
        let v = self.client.client()?.send(Method::DELETE, &node_path(&self.id, "/stream"), None).await?;
        println!("{}: stream cleared; {}", self.id, s(&v, "exec"));
        if let Some(out) = v["output"].as_str().filter(|o| !o.is_empty()) {
            print!("{out}");
        }
        Ok(0)
    }
}

#[derive(Debug, Args)]
pub struct Anomalies {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

impl Anomalies {
    pub async fn run(self) -> anyhow::Result<u8> {
        let v = self.client.client()?.send(Method::GET, "/api/v1/body-anomalies", None).await?;
        if self.json {
            pretty(&v);
            return Ok(0);
        }
        let list = items(&v);
        if list.is_empty() {
            println!("no anomalies");
        }
        for a in list {
            println!(
                "{:<22} {:<20} {:<26} since {} ({}s)",
                s(a, "node_id"),
                s(a, "name"),
                s(a, "kind"),
                s(a, "since"),
                a["for_s"]
            );
        }
        Ok(0)
    }
}
