//! Domain errors: what a command can refuse, independent of HTTP. `service::ApiError`
//! (in the `hydra` crate) maps them to status codes.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is well-formed but conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (unknown role, bad value…).
    #[error("{0}")]
    Invalid(String),
    /// The caller may not act on this thing (another node's command).
    #[error("{0}")]
    Forbidden(String),
    /// The request is fine but cannot be taken now (a full queue); retry later.
    #[error("{0}")]
    Unavailable(String),
}
