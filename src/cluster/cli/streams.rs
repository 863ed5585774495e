//! The stream commands: `stream-stop` (a body's stream, through its exec channel) and
//! `anomalies` (bodies whose stream state and GPU disagree).

use super::nodes::node_path;
use super::{ClientArgs, NodeArgs};
use crate::service::cli::{items, s, show};
use clap::Args;
use reqwest::Method;

// The commands' help is the doc comment of their `Command` variant.

pub async fn stream_stop(a: NodeArgs) -> anyhow::Result<u8> {
    let v = a.client.client()?.send(Method::DELETE, &node_path(&a.id, "/stream"), None).await?;
    println!("{}: stream cleared; {}", a.id, s(&v, "exec"));
    if let Some(out) = v["output"].as_str().filter(|o| !o.is_empty()) {
        print!("{out}");
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct Anomalies {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn anomalies(a: Anomalies) -> anyhow::Result<u8> {
    let v = a.client.client()?.send(Method::GET, "/api/v1/body-anomalies", None).await?;
    show(&v, a.json, |v| {
        let list = items(v);
        if list.is_empty() {
            println!("no anomalies");
        }
        for a in list {
            let clears = match (a["expected_clear_at"].as_str(), a["overdue"].as_bool()) {
                (Some(at), Some(true)) => format!("; its watchdog should have cleared it at {at}: overdue"),
                (Some(at), _) => format!("; its watchdog clears it by {at}"),
                _ => String::new(),
            };
            println!(
                "{:<22} {:<20} {:<26} since {} ({}s){clears}",
                s(a, "node_id"),
                s(a, "body_name"),
                s(a, "type"),
                s(a, "since"),
                a["for_s"]
            );
        }
    });
    Ok(0)
}
