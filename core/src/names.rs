//! Names both services accept for where a machine stands (district, venue, owner) and
//! what a machine is called: one rule, so a venue hydracluster accepts can always be
//! rolled out to by ExperienceLibrary.

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
}
