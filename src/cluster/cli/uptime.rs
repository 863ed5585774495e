//! `hydracluster uptime [NODE]`: one node's rolling uptime (and its history with
//! `--history`), or every node's, from the uptime endpoints.

use super::nodes::node_path;
use super::ClientArgs;
use crate::service::cli::{items, s, show};
use clap::Args;
use reqwest::Method;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct Uptime {
    /// A node id; without one, every node.
    node: Option<String>,
    #[arg(long, default_value = "24h", value_parser = ["24h", "7d", "30d"])]
    window: String,
    /// The node's history instead, hour by hour or day by day.
    #[arg(long, value_parser = ["hourly", "daily"], requires = "node")]
    history: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn uptime(a: Uptime) -> anyhow::Result<u8> {
    let c = a.client.client()?;
    let window = format!("window={}", a.window);
    let v = match (&a.node, &a.history) {
        (Some(id), Some(g)) => {
            let path = format!("{}?{window}&granularity={g}", node_path(id, "/uptime/history"));
            c.send(Method::GET, &path, None).await?
        }
        (Some(id), None) => {
            c.send(Method::GET, &format!("{}?{window}", node_path(id, "/uptime")), None).await?
        }
        (None, _) => Value::Array(c.list(&format!("/api/v1/uptime?{window}"), &[]).await?),
    };
    show(&v, a.json, |v| match v {
        Value::Array(nodes) => print_rows("NODE", nodes, "node_id"),
        one if one.get("buckets").is_some() => {
            print_rows("START", items(&one["buckets"]), "start");
            print_total(one);
        }
        one => print_total(one),
    });
    Ok(0)
}

/// Uptime in percent as the tables show it (`-` when nothing was counted yet).
pub fn percent(v: &Value) -> String {
    v["uptime_pct"].as_f64().map_or_else(|| "-".into(), |p| format!("{p:.3}%"))
}

fn print_rows(first: &str, rows: &[Value], key: &str) {
    println!("{first:<28} {:>9} {:>10} {:>10}", "UPTIME", "UP_S", "DOWN_S");
    for r in rows {
        println!(
            "{:<28} {:>9} {:>10} {:>10}",
            s(r, key),
            percent(r),
            s(r, "up_seconds"),
            s(r, "down_seconds")
        );
    }
}

fn print_total(v: &Value) {
    let clipped = if v["clipped"] == true { " (since the node joined)" } else { "" };
    println!(
        "{} {}: {} up ({} s up, {} s down) from {}{clipped} to {}",
        s(v, "node_id"),
        s(v, "window"),
        percent(v),
        s(v, "up_seconds"),
        s(v, "down_seconds"),
        s(v, "from"),
        s(v, "to")
    );
}
