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

/// An identifier chosen elsewhere (an experience or app id), as a head's assignment
/// and whitelist name it: 1 to 128 printable characters, kept as given.
pub fn outside_id(what: &str, v: String) -> Result<String, DomainError> {
    const MAX_CHARS: usize = 128;
    let n = v.chars().count();
    if n == 0 || n > MAX_CHARS || v.chars().any(char::is_control) {
        return Err(DomainError::Invalid(format!(
            "{what} must be 1 to {MAX_CHARS} printable characters, got {:?}",
            v.chars().take(80).collect::<String>()
        )));
    }
    Ok(v)
}

/// `names` without repeats, each at its first place: one pass, however long the list.
pub fn first_of_each(names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    names.into_iter().filter(|n| seen.insert(n.clone())).collect()
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
    fn outside_ids_are_kept_as_given_within_bounds() {
        assert_eq!(outside_id("app_id", " space game ".into()).unwrap(), " space game ");
        assert!(outside_id("app_id", String::new()).is_err());
        assert!(outside_id("app_id", "a\tb".into()).is_err());
        assert!(outside_id("app_id", "é".repeat(128)).is_ok());
        let err = outside_id("experience", "é".repeat(129)).unwrap_err();
        assert!(err.to_string().starts_with("experience must be 1 to 128 printable characters"), "{err}");
    }

    #[test]
    fn repeats_go_and_the_order_stays() {
        let names = ["b", "a", "b", "c", "a"].map(String::from).to_vec();
        assert_eq!(first_of_each(names), ["b", "a", "c"]);
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
