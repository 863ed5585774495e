//! Identifier newtypes: parsed once at the edge, trusted everywhere after.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} id {value:?}: expected {expected}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub expected: String,
}

/// What every id after its prefix is made of.
const ALPHABET: &str = "lowercase letters, digits or dashes";

/// Checks `value` is `prefix` followed by 1 to 64 of the `ALPHABET`.
fn parse_prefixed(kind: &'static str, prefix: &'static str, value: &str) -> Result<String, IdError> {
    let rest = value.strip_prefix(prefix).unwrap_or("");
    let ok = !rest.is_empty()
        && rest.len() <= 64
        && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(IdError {
            kind,
            value: value.chars().take(80).collect(),
            expected: format!("{prefix} followed by {ALPHABET}"),
        });
    }
    Ok(value.to_owned())
}

/// An id type: a prefix and a safe alphabet, parsed once at the edge.
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, IdError> {
                parse_prefixed($kind, $prefix, value).map($name)
            }

            /// A fresh id from 16 random hex digits the caller provides.
            pub fn from_random_hex(hex: &str) -> Self {
                $name(format!("{}{hex}", $prefix))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A node's id: `node-` followed by 1 to 64 lowercase letters, digits or dashes.
    NodeId, "node", "node-"
);
prefixed_id!(
    /// A command's id: `exec-` followed by 1 to 64 lowercase letters, digits or dashes.
    ExecId, "exec", "exec-"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_must_have_the_prefix_and_a_safe_alphabet() {
        assert!(NodeId::parse("node-1a2b").is_ok());
        assert!(NodeId::parse("node-").is_err());
        assert!(NodeId::parse("1a2b").is_err());
        assert!(NodeId::parse("node-../etc").is_err());
        assert!(NodeId::parse("node-ABC").is_err());
    }
}
