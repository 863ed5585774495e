//! `hydranode enroll`: asks the server for a node identity and keeps it in the state
//! directory: a body through `/enroll` (an admin approves it), or a kiosk head with the
//! fleet token through `POST /api/v1/heads` (approved at once).

use super::client::{self, Token};
use super::identity::{self, Identity, Kind};
use anyhow::{bail, Context};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct EnrollOptions {
    pub server: String,
    pub name: Option<String>,
    pub ip: Option<String>,
    pub state: Option<PathBuf>,
    pub force: bool,
    /// Enroll as a kiosk head rather than a body.
    pub head: Option<HeadEnrollment>,
}

/// What a head's fleet enrollment needs.
#[derive(Debug, Clone)]
pub struct HeadEnrollment {
    pub fleet_token: String,
    pub district: String,
    pub venue: String,
}

/// What the server gave, whichever way this machine enrolled.
struct Enrolled {
    node_id: String,
    token: String,
    server_url: Option<String>,
    status: Option<String>,
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
    let (enrolled, kind) = match &opts.head {
        None => {
            let e = client::enroll(&base, &name, opts.ip.as_deref())
                .await
                .with_context(|| format!("enrollment at {base} failed"))?;
            let e =
                Enrolled { node_id: e.node_id, token: e.token, server_url: e.server_url, status: e.status };
            (e, Kind::Body)
        }
        Some(h) => {
            let e = match client::enroll_head(&base, &h.fleet_token, &name, &h.district, &h.venue).await {
                Ok(e) => e,
                Err(e) if matches!(e.status(), Some(401 | 403)) => {
                    return Err(anyhow::Error::new(e)).context(format!(
                        "head enrollment at {base} failed: the server refused the fleet enrollment token \
                         (check --fleet-token against the server's fleet_enrollment_token)"
                    ))
                }
                Err(e) => return Err(e).with_context(|| format!("head enrollment at {base} failed")),
            };
            let e = Enrolled { node_id: e.head_id, token: e.token, server_url: e.server_url, status: None };
            (e, Kind::Head)
        }
    };
    if let Some(advertised) = enrolled.server_url.as_deref() {
        if advertised.trim_end_matches('/') != base {
            // The URL we used demonstrably reaches the server; the advertised one may be
            // a bind address such as 0.0.0.0. Keep ours and say so.
            tracing::info!(advertised, used = %base, "the server advertises another URL; keeping the one used to enroll (run --server overrides it)");
        }
    }
    let identity =
        Identity { node_id: enrolled.node_id.clone(), server_url: base.clone(), name: name.clone(), kind };
    identity::save(&dir, &identity, &Token::new(enrolled.token))
        .with_context(|| format!("enrolled as {} but could not save the identity", enrolled.node_id))?;
    // A result kept for the previous identity means nothing to the new one.
    let _ = std::fs::remove_file(dir.join(super::exec::SPOOL_FILE));
    if let Some(h) = &opts.head {
        println!("enrolled head {name} as {} at {base} ({}/{})", enrolled.node_id, h.district, h.venue);
        println!("heads are approved at once; start the agent with `hydranode run`: it reports head_status and head_detail from the status file");
        println!("identity and token kept in {}", dir.display());
        return Ok(());
    }
    println!("enrolled {name} as {} at {base}", enrolled.node_id);
    println!(
        "status: {} — waiting for an admin to approve it (hydracluster approve {} --roles ROLES --district D --venue V)",
        enrolled.status.as_deref().unwrap_or("pending"),
        enrolled.node_id
    );
    println!("identity and token kept in {}; start the agent with `hydranode run`", dir.display());
    Ok(())
}
