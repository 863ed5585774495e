//! `hydrapipeline`: a read-only observer of every Hydra service. `status` asks each
//! service's health and measures its event lag; `watch` merges their event streams into
//! one timeline. It only ever sends GET requests.

pub mod cli;
pub mod format;
pub mod status;
pub mod watch;

use std::fmt;
use std::str::FromStr;

/// The services watched when none are configured.
pub const DEFAULT_SERVICES: &str =
    "hydracluster=http://127.0.0.1:8080,hydraexperiencelibrary=http://127.0.0.1:8090";

/// One observed service: a short name for the output and its base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8080`.
    pub url: String,
}

impl FromStr for Service {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, url) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not NAME=URL (e.g. hydracluster=http://127.0.0.1:8080)"))?;
        let name = name.trim();
        let url = url.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("bad service name {name:?}: use letters, digits, '-' and '_'"));
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url:?} for {name}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!("bad URL {url:?} for {name}: expected http://HOST:PORT or https://…"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!(
                "bad URL {url:?} for {name}: give the base URL, without ?query or #fragment"
            ));
        }
        Ok(Service { name: name.to_string(), url: url.trim_end_matches('/').to_string() })
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.url)
    }
}

/// The configured services, or the defaults; refuses two services with the same name
/// (their output lines could not be told apart).
pub fn services_or_default(given: Vec<Service>) -> Result<Vec<Service>, String> {
    let services = if given.is_empty() {
        DEFAULT_SERVICES.split(',').map(|s| s.parse()).collect::<Result<Vec<Service>, _>>()?
    } else {
        given
    };
    for (i, s) in services.iter().enumerate() {
        if services[..i].iter().any(|o| o.name == s.name) {
            return Err(format!("service {} is given twice", s.name));
        }
    }
    Ok(services)
}

/// An HTTP client for the observer's GETs: bounded connect time, no proxy surprises
/// for loopback addresses.
pub fn http_client(timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .expect("the HTTP client builds with static settings")
}

/// A short reason for a failed HTTP request ("connection refused", "timed out", "HTTP 500").
pub fn request_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_string();
    }
    if let Some(status) = e.status() {
        return format!("HTTP {}", status.as_u16());
    }
    crate::service::sse_client::error_reason(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_parse_from_name_equals_url() {
        let s: Service = "hydracluster=http://10.0.0.1:8080/".parse().unwrap();
        assert_eq!(s, Service { name: "hydracluster".into(), url: "http://10.0.0.1:8080".into() });
        assert!("nonsense".parse::<Service>().unwrap_err().contains("NAME=URL"));
        assert!("a=ftp://x".parse::<Service>().is_err());
        assert!("a=not a url".parse::<Service>().is_err());
        assert!("=http://x:1".parse::<Service>().is_err());
        assert!("a=http://x:1/?q=1".parse::<Service>().is_err());
    }

    #[test]
    fn defaults_apply_when_none_are_given_and_duplicates_are_refused() {
        let d = services_or_default(vec![]).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].url, "http://127.0.0.1:8080");
        let a: Service = "a=http://x:1".parse().unwrap();
        assert!(services_or_default(vec![a.clone(), a]).unwrap_err().contains("twice"));
    }
}
