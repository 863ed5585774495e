//! The agent's state directory: `identity.json` (node id, server, name, kind), `token`
//! (the node token alone, 0600) in a 0700 directory, and the machine's default name.

use super::client::Token;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const IDENTITY_FILE: &str = "identity.json";
pub const TOKEN_FILE: &str = "token";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: String,
    pub server_url: String,
    pub name: String,
    /// Body or head; identity files written before heads existed have no kind and are
    /// bodies.
    #[serde(default)]
    pub kind: Kind,
}

/// What this machine enrolled as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A body: enrolled through `/enroll`, approved by an admin.
    #[default]
    Body,
    /// A kiosk head: enrolled with the fleet token, approved at once; reports its
    /// status through `PUT /api/v1/heads/{id}`.
    Head,
}

/// `--state`, else `$HYDRANODE_STATE` (clap reads both), else `~/.hydranode`.
pub fn state_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".hydranode")),
        None => bail!("HOME is not set: give the state directory with --state or HYDRANODE_STATE"),
    }
}

/// True when the directory already holds an enrollment (or part of one).
pub fn enrolled(dir: &Path) -> bool {
    dir.join(IDENTITY_FILE).exists() || dir.join(TOKEN_FILE).exists()
}

/// Creates the directory (0700: it holds a secret) and checks it can be written,
/// before anything is asked of the server.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {} to its owner", dir.display()))?;
    let probe = dir.join(".write-check");
    fs::write(&probe, b"").with_context(|| format!("cannot write in {}", dir.display()))?;
    let _ = fs::remove_file(probe);
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename, created with
/// `mode`, so that a crash never leaves half a file and a secret is never readable
/// by others, not even for a moment.
pub fn write_private(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Saves an enrollment: the token first, the identity last, so that an identity
/// file always has its token.
pub fn save(dir: &Path, identity: &Identity, token: &Token) -> anyhow::Result<()> {
    save_token(dir, token)?;
    let json = serde_json::to_vec_pretty(identity).expect("an identity serialises");
    write_private(&dir.join(IDENTITY_FILE), &json, 0o600)
}

/// Replaces the node token (atomically: a crash leaves the old one or the new one).
pub fn save_token(dir: &Path, token: &Token) -> anyhow::Result<()> {
    write_private(&dir.join(TOKEN_FILE), format!("{}\n", token.expose()).as_bytes(), 0o600)
}

pub fn load(dir: &Path) -> anyhow::Result<(Identity, Token)> {
    let path = dir.join(IDENTITY_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "this machine is not enrolled: {} does not exist; run `hydranode enroll --server URL` first",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let identity: Identity =
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid identity", path.display()))?;
    let token_path = dir.join(TOKEN_FILE);
    let token = fs::read_to_string(&token_path)
        .with_context(|| format!("cannot read the node token in {}", token_path.display()))?;
    let token = token.trim();
    if token.is_empty() {
        bail!("{} is empty; enroll again with `hydranode enroll --force`", token_path.display());
    }
    if let Ok(meta) = fs::metadata(&token_path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %token_path.display(), "the token file is readable by others; chmod 600 it");
        }
    }
    Ok((identity, Token::new(token.to_owned())))
}

/// Makes a machine name the server accepts: letters, digits, `.`, `_`, `-`; at most
/// 64 characters; anything else becomes `-`.
pub fn sanitize_name(raw: &str) -> String {
    let name: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' })
        .take(64)
        .collect();
    if name.is_empty() {
        "node".into()
    } else {
        name
    }
}

/// This machine's host name, sanitised.
pub fn default_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // when the name fits, and we stop at the first NUL or the end.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let raw = if ok {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    sanitize_name(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitize_name("render-01.arena"), "render-01.arena");
        assert_eq!(sanitize_name("my box (2)"), "my-box--2-");
        assert_eq!(sanitize_name("ünï"), "-n-");
        assert_eq!(sanitize_name(""), "node");
        assert_eq!(sanitize_name(&"a".repeat(100)).len(), 64);
        assert!(!default_name().is_empty());
    }

    #[test]
    fn an_identity_round_trips_with_private_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        assert!(load(&dir).unwrap_err().to_string().contains("not enrolled"));
        prepare_dir(&dir).unwrap();
        assert!(!enrolled(&dir));
        let id = Identity {
            node_id: "node-1".into(),
            server_url: "http://x:1".into(),
            name: "b".into(),
            kind: Kind::Head,
        };
        save(&dir, &id, &Token::new("hyn_abc".into())).unwrap();
        assert!(enrolled(&dir));
        let (back, token) = load(&dir).unwrap();
        assert_eq!(back, id);
        assert_eq!(token.expose(), "hyn_abc");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(TOKEN_FILE)), 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2, "no temporary file is left");
    }

    #[test]
    fn an_identity_without_a_kind_is_a_body() {
        let old = r#"{"node_id":"node-1","server_url":"http://x:1","name":"b"}"#;
        let id: Identity = serde_json::from_str(old).unwrap();
        assert_eq!(id.kind, Kind::Body);
        let json = serde_json::to_value(Identity { kind: Kind::Head, ..id }).unwrap();
        assert_eq!(json["kind"], "head");
    }
}
