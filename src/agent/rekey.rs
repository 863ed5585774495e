//! The agent's half of token re-issue (`cluster::rekey`): an Ed25519 key kept in
//! `<state>/rekey-key` (0600, made on the first `run`) and registered with the
//! server; when the server stops taking the token and has a re-issue pending for this
//! node, the agent signs the re-issue's id, takes its new token and carries on.

use super::client::{self, Server, Token};
use super::identity::{self, write_private};
use anyhow::Context;
use ed25519_dalek::{Signer, SigningKey};
use std::path::Path;

pub const KEY_FILE: &str = "rekey-key";

/// This machine's key: read from the state dir, or made and kept there.
pub fn key(dir: &Path) -> anyhow::Result<SigningKey> {
    let path = dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut seed)
                .with_context(|| format!("{} is not a key (64 hex digits)", path.display()))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            write_private(&path, hex::encode(key.to_bytes()).as_bytes(), 0o600)?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Registers the key (the server keeps the first one it is given). A failure is
/// logged, not fatal: the agent works without, and tries again on its next start.
pub async fn register(server: &Server, key: &SigningKey) {
    let public = hex::encode(key.verifying_key().as_bytes());
    if let Err(e) = server.register_rekey_key(&public).await {
        tracing::warn!(error = %e, "cannot register the re-key key: a re-issued token will need an admin to deliver it");
    }
}

/// After the server refused the token: claims the pending re-issue, if there is one,
/// and saves the new token. `Ok(false)`: none is pending (the node was removed or
/// rejected, or the token was re-issued to the admin).
pub async fn claim(dir: &Path, base: &str, node_id: &str) -> anyhow::Result<bool> {
    let rekey_id = match client::rekey_pending(base, node_id).await {
        Ok(id) => id,
        Err(e) if e.status() == Some(404) => return Ok(false),
        Err(e) => return Err(e).context("asking for a pending token re-issue"),
    };
    let key = key(dir)?;
    let signature = key.sign(&hydra_core::auth::rekey_message(node_id, &rekey_id));
    let token: Token = client::rekey_claim(base, node_id, &rekey_id, &hex::encode(signature.to_bytes()))
        .await
        .context("claiming the re-issued token")?;
    identity::save_token(dir, &token)?;
    tracing::info!(rekey_id = %rekey_id, "took the re-issued node token");
    Ok(true)
}
