//! `hydranode enroll`: asks the server for a node identity and keeps it in the state
//! directory.

use super::client::{self, Token};
use super::identity::{self, Identity};
use anyhow::{bail, Context};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct EnrollOptions {
    pub server: String,
    pub name: Option<String>,
    pub ip: Option<String>,
    pub state: Option<PathBuf>,
    pub force: bool,
}

pub async fn enroll(opts: EnrollOptions) -> anyhow::Result<()> {
    let base = client::base_url(&opts.server)?;
    let dir = identity::state_dir(opts.state)?;
    // Checked before the server is asked: a refused overwrite must not leave a
    // pending node behind on the server.
    if identity::enrolled(&dir) && !opts.force {
        let known = identity::load(&dir).map(|(i, _)| format!(" as {} ({})", i.node_id, i.server_url));
        bail!(
            "this machine is already enrolled{} (state in {}); use --force to enroll again and replace it",
            known.unwrap_or_default(),
            dir.display()
        );
    }
    identity::prepare_dir(&dir)?;
    let name = match opts.name {
        Some(n) => n,
        None => identity::default_name(),
    };
    let enrolled = client::enroll(&base, &name, opts.ip.as_deref())
        .await
        .with_context(|| format!("enrollment at {base} failed"))?;
    if let Some(advertised) = enrolled.server_url.as_deref() {
        if advertised.trim_end_matches('/') != base {
            // The URL we used demonstrably reaches the server; the advertised one may be
            // a bind address such as 0.0.0.0. Keep ours and say so.
            tracing::info!(advertised, used = %base, "the server advertises another URL; keeping the one used to enroll (run --server overrides it)");
        }
    }
    let identity =
        Identity { node_id: enrolled.node_id.clone(), server_url: base.clone(), name: name.clone() };
    identity::save(&dir, &identity, &Token::new(enrolled.token))
        .with_context(|| format!("enrolled as {} but could not save the identity", enrolled.node_id))?;
    // A result kept for the previous identity means nothing to the new one.
    let _ = std::fs::remove_file(dir.join(super::exec::SPOOL_FILE));
    println!("enrolled {name} as {} at {base}", enrolled.node_id);
    println!(
        "status: {} — waiting for an admin to approve it (hydracluster approve {} --roles ROLES --district D --venue V)",
        enrolled.status.as_deref().unwrap_or("pending"),
        enrolled.node_id
    );
    println!("identity and token kept in {}; start the agent with `hydranode run`", dir.display());
    Ok(())
}
