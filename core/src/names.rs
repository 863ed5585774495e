//! Names both services accept for where a machine stands (district, venue, owner) and
//! what a machine is called: one rule, so a venue hydracluster accepts can always be
//! rolled out to by ExperienceLibrary. And the names that become a directory on a
//! node (a role, a version), which hydracluster checks in its config and the agent
//! checks again before it touches the disk.

use crate::error::DomainError;

/// 1 to 64 printable characters (spaces allowed, as in `Hall A`), trimmed.
pub fn label(what: &str, value: &str) -> Result<String, DomainError> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > 64 || v.chars().any(|c| c.is_control()) {
        return Err(DomainError::Invalid(format!(
            "{what} must be 1 to 64 printable characters (spaces allowed), got {:?}",
            value.chars().take(80).collect::<String>()
        )));
    }
    Ok(v.to_owned())
}

/// A name that may become one directory on the node: no separators, no `.`/`..`.
pub fn path_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_places() {
        assert_eq!(label("venue", " Hall A ").unwrap(), "Hall A");
        assert_eq!(label("venue", "Salle d'été").unwrap(), "Salle d'été");
        assert!(label("venue", "").is_err());
        assert!(label("venue", "a\nb").is_err());
        assert!(label("venue", &"x".repeat(65)).is_err());
    }

    #[test]
    fn names_that_would_escape_the_directory_are_refused() {
        assert!(path_safe("1.2.0+build-3"));
        assert!(!path_safe(".."));
        assert!(!path_safe("."));
        assert!(!path_safe("a/b"));
        assert!(!path_safe(""));
        assert!(!path_safe(&"a".repeat(129)));
    }
}
