//! Tokens and who they belong to. Tokens are random, shown once, and stored only as
//! SHA-256 hashes (in the `tokens` tree, never in the event log). Admin, observer and
//! fleet tokens come from configuration and are compared in constant time.

use crate::store::Store;
use hydra_events::NodeId;
use parking_lot::RwLock;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin { name: String },
    Observer,
    Fleet,
    Node(NodeId),
}

impl Principal {
    /// The `cause` recorded on the events this principal brings about.
    pub fn cause(&self) -> String {
        match self {
            Principal::Admin { name } => format!("admin:{name}"),
            Principal::Observer => "observer".into(),
            Principal::Fleet => "fleet".into(),
            Principal::Node(id) => format!("node:{id}"),
        }
    }
}

pub type TokenHash = [u8; 32];

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token with a readable prefix saying its kind (`hyn_` node, `hya_` admin).
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// 16 random hex digits for ids.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What a node's agent signs to claim token re-issue `rekey_id`: bound to the node and
/// the re-issue, so one signature is good for one claim.
pub fn rekey_message(node_id: &str, rekey_id: &str) -> Vec<u8> {
    format!("hydra-rekey:{node_id}:{rekey_id}").into_bytes()
}

/// What a node token is stored as in the `tokens` tree.
pub fn node_principal(id: &NodeId) -> String {
    format!("node:{id}")
}

/// The configured tokens, as hashes. The named admins (`admin_tokens`) can be replaced
/// while the server runs (SIGHUP); the rest is fixed for the life of the process.
pub struct Tokens {
    admins: Vec<(String, TokenHash)>,
    named: RwLock<Arc<Vec<(String, TokenHash)>>>,
    observer: Option<TokenHash>,
    fleet: Option<TokenHash>,
}

impl Tokens {
    pub fn new(admins: &[(String, String)], observer: Option<&str>, fleet: Option<&str>) -> Self {
        Tokens {
            admins: admins.iter().map(|(n, t)| (n.clone(), hash_token(t))).collect(),
            named: RwLock::default(),
            observer: observer.filter(|t| !t.is_empty()).map(hash_token),
            fleet: fleet.filter(|t| !t.is_empty()).map(hash_token),
        }
    }

    /// Puts `named` (name, hash of the token) in force in place of the named admins
    /// before: a token left out stops working with the next request.
    pub fn set_named_admins(&self, named: Vec<(String, TokenHash)>) {
        *self.named.write() = Arc::new(named);
    }

    /// The names of the admins in force, the first token's first.
    pub fn admin_names(&self) -> Vec<String> {
        let named = self.named.read().clone();
        self.admins.iter().chain(named.iter()).map(|(n, _)| n.clone()).collect()
    }

    /// Whether `hash` is one of the configured tokens (admin, observer, fleet): a node
    /// given such a token would be taken for them.
    pub fn is_configured(&self, hash: &TokenHash) -> bool {
        self.configured(hash).is_some()
    }

    /// The configured principal behind `hash`, compared in constant time against
    /// every configured token (no early exit that a timer could see).
    fn configured(&self, hash: &TokenHash) -> Option<Principal> {
        let named = self.named.read().clone();
        let mut found = None;
        for (name, h) in self.admins.iter().chain(named.iter()) {
            if bool::from(h.ct_eq(hash)) && found.is_none() {
                found = Some(Principal::Admin { name: name.clone() });
            }
        }
        if let Some(h) = &self.observer {
            if bool::from(h.ct_eq(hash)) && found.is_none() {
                found = Some(Principal::Observer);
            }
        }
        if let Some(h) = &self.fleet {
            if bool::from(h.ct_eq(hash)) && found.is_none() {
                found = Some(Principal::Fleet);
            }
        }
        found
    }

    /// Resolves a bearer token.
    pub fn resolve(&self, store: &Store, token: &str) -> Option<Principal> {
        self.resolve_hash(store, &hash_token(token))
    }

    /// Resolves a token by its hash. Configured tokens are compared in constant time;
    /// node tokens are looked up by hash, which reveals nothing about the token itself.
    pub fn resolve_hash(&self, store: &Store, hash: &TokenHash) -> Option<Principal> {
        if let Some(found) = self.configured(hash) {
            return Some(found);
        }
        let principal = store.token(hash).ok().flatten()?;
        let id = principal.strip_prefix("node:")?;
        NodeId::parse(id).ok().map(Principal::Node)
    }
}

/// The admin token for a data dir: the configured one, or the one generated on first
/// start and kept in `<data>/admin-token` (mode 0600). Returns it and whether it is new.
pub fn admin_token(data: &std::path::Path, configured: Option<&str>) -> std::io::Result<(String, bool)> {
    if let Some(t) = configured.filter(|t| !t.is_empty()) {
        return Ok((t.to_owned(), false));
    }
    let path = data.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data)?;
    let token = new_token("hya_");
    write_private(&path, &token)?;
    Ok((token, true))
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_admin_token_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, new1) = admin_token(dir.path(), None).unwrap();
        let (t2, new2) = admin_token(dir.path(), None).unwrap();
        assert!(new1 && !new2);
        assert_eq!(t1, t2);
        assert!(t1.starts_with("hya_"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("admin-token")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (t3, _) = admin_token(dir.path(), Some("given")).unwrap();
        assert_eq!(t3, "given");
    }

    #[test]
    fn named_admins_are_replaced_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tokens = Tokens::new(&[("admin".into(), "first".into())], None, None);
        tokens.set_named_admins(vec![("alice".into(), hash_token("a")), ("bob".into(), hash_token("b"))]);
        assert_eq!(tokens.resolve(&store, "b"), Some(Principal::Admin { name: "bob".into() }));
        assert_eq!(tokens.admin_names(), ["admin", "alice", "bob"]);
        tokens.set_named_admins(vec![("alice".into(), hash_token("a"))]);
        assert_eq!(tokens.resolve(&store, "b"), None, "bob's token left with his entry");
        assert_eq!(tokens.resolve(&store, "a"), Some(Principal::Admin { name: "alice".into() }));
        assert_eq!(tokens.resolve(&store, "first"), Some(Principal::Admin { name: "admin".into() }));
    }

    #[test]
    fn configured_tokens_resolve_to_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tokens = Tokens::new(&[("ops".into(), "a".into())], Some("o"), Some("f"));
        assert_eq!(tokens.resolve(&store, "a"), Some(Principal::Admin { name: "ops".into() }));
        assert_eq!(tokens.resolve(&store, "o"), Some(Principal::Observer));
        assert_eq!(tokens.resolve(&store, "f"), Some(Principal::Fleet));
        assert_eq!(tokens.resolve(&store, "nope"), None);
        assert!(["a", "o", "f"].iter().all(|t| tokens.is_configured(&hash_token(t))));
        assert!(!tokens.is_configured(&hash_token("nope")));
    }
}
