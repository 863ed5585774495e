//! The event log's commands: the offline `audit` (`repair` is the shared
//! `service::cli::repair_log`) and `digest`, the live server's side of an audit.

use super::{AuditArgs, ClientArgs};
use crate::service::cli::{audit_log, s};
use hydra_projections::ClusterViews;
use reqwest::Method;

/// Runs the audit: exit status 0 and the digest when the log is sound.
pub fn audit(args: &AuditArgs) -> anyhow::Result<()> {
    audit_log::<ClusterViews>("hydracluster", &args.data, &args.options, ("nodes", |v| v.nodes.len()))
}

/// `digest`: the live server's sequence number and state digest.
pub async fn digest(client: &ClientArgs) -> anyhow::Result<u8> {
    let v = client.client()?.send(Method::GET, "/api/v1/audit/digest", None).await?;
    println!("seq: {}\ndigest: {}", v["seq"], s(&v, "digest"));
    Ok(0)
}
