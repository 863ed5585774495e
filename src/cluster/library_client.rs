//! hydracluster's client of ExperienceLibrary: the experiences live at a venue, as the
//! kiosk catalog (SPEC §4) needs them, and the library's rollouts and event stream for
//! the console's rollout pages. Errors say which of the three ways it failed.

use crate::service::client::Client;
use reqwest::Method;
use serde_json::Value;
use std::sync::OnceLock;
use std::time::Duration;

/// Why the library could not give a catalog; each is a 502 with its own message.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("ExperienceLibrary at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("ExperienceLibrary answered {status} for {url}")]
    Status { url: String, status: u16 },
    #[error("ExperienceLibrary sent bad JSON for {url}: {reason}")]
    BadJson { url: String, reason: String },
}

/// One client for every catalog request, so connections to the library are reused.
fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder().connect_timeout(Duration::from_secs(3)).build().unwrap_or_default()
    })
}

/// `GET {base}/api/v1/experiences/live?district=&venue=`: the experiences live at a
/// venue, each kept as the library sent it. The answer must be a JSON array.
pub async fn live_experiences(
    library: &Client,
    district: &str,
    venue: &str,
) -> Result<Vec<Value>, LibraryError> {
    let query = [("district", district), ("venue", venue)];
    let answer = library
        .call(Method::GET, "/api/v1/experiences/live", &query, None)
        .await
        .map_err(|u| LibraryError::Unreachable { url: u.url, reason: u.reason })?;
    let url = answer.url;
    if !answer.status.is_success() {
        return Err(LibraryError::Status { url, status: answer.status.as_u16() });
    }
    match serde_json::from_slice::<Value>(&answer.body) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(_) => Err(LibraryError::BadJson { url, reason: "expected an array of experiences".into() }),
        Err(e) => Err(LibraryError::BadJson { url, reason: e.to_string() }),
    }
}

/// The library at `base`, asked with `token`, through the one shared connection pool.
pub fn library(base: &str, token: Option<&str>, timeout: Duration) -> Client {
    Client::reusing(http(), base, token.map(str::to_owned), timeout)
}

/// The id of a library experience as the whitelist spells it (ids may be numbers).
pub fn experience_id(item: &Value) -> Option<String> {
    match item.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The library's experiences that the whitelist allows, in the library's order. An
/// empty whitelist allows nothing: a kiosk offers only what an admin chose for it.
pub fn allowed(items: Vec<Value>, whitelist: &[String]) -> Vec<Value> {
    items.into_iter().filter(|item| experience_id(item).is_some_and(|id| whitelist.contains(&id))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_whitelist_filters_in_library_order_and_empty_allows_nothing() {
        let items = vec![json!({"id": "space", "x": 1}), json!({"id": 7}), json!({"name": "no id"})];
        let wl = vec!["7".to_string(), "space".to_string()];
        assert_eq!(allowed(items.clone(), &wl), vec![json!({"id": "space", "x": 1}), json!({"id": 7})]);
        assert!(allowed(items, &[]).is_empty());
    }
}
