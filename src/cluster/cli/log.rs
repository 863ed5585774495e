//! `digest`, the live server's side of an audit (the offline `audit` and `repair` are
//! the shared `service::cli::ServiceCommand`).

use super::ClientArgs;
use crate::service::cli::s;
use reqwest::Method;

/// `digest`: the live server's sequence number and state digest.
pub async fn digest(client: &ClientArgs) -> anyhow::Result<u8> {
    let v = client.client()?.send(Method::GET, "/api/v1/audit/digest", None).await?;
    println!("seq: {}\ndigest: {}", v["seq"], s(&v, "digest"));
    Ok(0)
}
