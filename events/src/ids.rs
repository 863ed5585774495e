//! Identifier newtypes: parsed once at the edge, trusted everywhere after.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} id {value:?}: expected {expected}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// A node's id: `node-` followed by 1 to 64 lowercase letters, digits or dashes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let rest = value.strip_prefix("node-").unwrap_or("");
        let ok = !rest.is_empty()
            && rest.len() <= 64
            && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(NodeId(value.to_owned()))
        } else {
            Err(IdError {
                kind: "node",
                value: value.chars().take(80).collect(),
                expected: "node- followed by lowercase letters, digits or dashes",
            })
        }
    }

    /// A fresh id from 16 random hex digits the caller provides.
    pub fn from_random_hex(hex: &str) -> Self {
        NodeId(format!("node-{hex}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A command's id: `exec-` followed by 1 to 64 lowercase letters, digits or dashes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecId(String);

impl ExecId {
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let rest = value.strip_prefix("exec-").unwrap_or("");
        let ok = !rest.is_empty()
            && rest.len() <= 64
            && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(ExecId(value.to_owned()))
        } else {
            Err(IdError {
                kind: "exec",
                value: value.chars().take(80).collect(),
                expected: "exec- followed by lowercase letters, digits or dashes",
            })
        }
    }

    pub fn from_random_hex(hex: &str) -> Self {
        ExecId(format!("exec-{hex}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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
