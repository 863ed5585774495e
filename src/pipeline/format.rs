//! How hydrapipeline reads and prints events: the type filter (same rules as the
//! servers' `?types=`), the wire JSON, the one-line human summary and the JSON lines.

use serde_json::{json, Map, Value};
use std::str::FromStr;

/// An event type filter: an exact name (`exec.completed`) or a prefix (`provision.*`,
/// or `*` for everything), exactly as the servers read `?types=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeFilter {
    pattern: String,
}

impl FromStr for TypeFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let name = t.strip_suffix('*').unwrap_or(t);
        // The servers refuse anything else with a 400, which would only show up as a
        // stream that never connects: refuse it here with the same words.
        if t.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_') {
            return Err(format!("bad type filter {t:?}: use names like exec.completed or provision.*"));
        }
        Ok(TypeFilter { pattern: t.to_string() })
    }
}

impl TypeFilter {
    pub fn matches(&self, kind: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => kind.starts_with(prefix),
            None => kind == self.pattern,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

/// True when no filter is given or one of them matches.
pub fn wanted(filters: &[TypeFilter], kind: &str) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.matches(kind))
}

/// The `?types=` value for the servers (empty when there is no filter).
pub fn types_query(filters: &[TypeFilter]) -> String {
    filters.iter().map(TypeFilter::as_str).collect::<Vec<_>>().join(",")
}

/// One event from one service, as read from SSE or from `/events/log`.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub service: String,
    pub id: u64,
    pub kind: String,
    /// RFC 3339 with milliseconds, as the services write it.
    pub at: String,
    pub cause: Value,
    pub data: Value,
}

impl Observed {
    /// From the wire JSON `{"seq","type","at","cause","data"}`; the SSE `id:`/`event:`
    /// fill in when the JSON lacks them.
    pub fn from_wire(service: &str, id: Option<&str>, kind: Option<&str>, json: &Value) -> Option<Observed> {
        let id = json.get("seq").and_then(Value::as_u64).or_else(|| id.and_then(|i| i.parse().ok()))?;
        let kind = json.get("type").and_then(Value::as_str).or(kind)?.to_string();
        Some(Observed {
            service: service.to_string(),
            id,
            kind,
            at: json.get("at").and_then(Value::as_str).unwrap_or_default().to_string(),
            cause: json.get("cause").cloned().unwrap_or(Value::Null),
            data: json.get("data").cloned().unwrap_or(Value::Null),
        })
    }

    /// Milliseconds since the epoch, for merging histories by time (0 when unreadable,
    /// which sorts such an event first rather than losing it).
    pub fn at_ms(&self) -> u128 {
        humantime::parse_rfc3339_weak(&self.at)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis())
            .unwrap_or(0)
    }

    pub fn json_line(&self) -> String {
        json!({
            "service": self.service,
            "id": self.id,
            "type": self.kind,
            "at": self.at,
            "cause": self.cause,
            "data": self.data,
        })
        .to_string()
    }

    pub fn human_line(&self, service_width: usize) -> String {
        human(&clock(&self.at), &self.service, service_width, &self.kind, &summary(&self.data))
    }
}

/// `HH:MM:SS.mmm  service  type  summary`.
pub fn human(time: &str, service: &str, service_width: usize, kind: &str, summary: &str) -> String {
    format!("{time:<12}  {service:<service_width$}  {kind:<24}  {summary}").trim_end().to_string()
}

/// `HH:MM:SS.mmm` of an RFC 3339 time (UTC, as the services write it).
pub fn clock(at: &str) -> String {
    match humantime::parse_rfc3339_weak(at) {
        Ok(t) => humantime::format_rfc3339_millis(t).to_string().get(11..23).unwrap_or(at).to_string(),
        Err(_) => at.to_string(),
    }
}

/// The current time as `HH:MM:SS.mmm` (UTC), for lines about the sources themselves.
pub fn now_clock() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()[11..23].to_string()
}

/// The fields worth a glance, first in this order; other scalar fields follow.
const FIRST: &[&str] = &[
    "node_id",
    "rollout_id",
    "experience_id",
    "head_id",
    "exec_id",
    "wave",
    "version",
    "build",
    "state",
    "status",
    "error",
];

/// The fields left out of the summary: long or noisy (output, hashes, tokens never
/// appear in events, but digests and scripts do).
const SKIP: &[&str] = &["stdout", "stderr", "command", "script", "hash", "token_hash", "sha256", "recipes"];

const MAX_VALUE: usize = 60;
const MAX_FIELDS: usize = 8;

/// Short `key=value` pairs of an event's data.
pub fn summary(data: &Value) -> String {
    let Some(map) = data.as_object() else {
        return match data {
            Value::Null => String::new(),
            other => clip(&other.to_string()),
        };
    };
    let mut keys: Vec<&str> = FIRST.iter().copied().filter(|k| map.contains_key(*k)).collect();
    keys.extend(map.keys().map(String::as_str).filter(|k| !FIRST.contains(k) && !SKIP.contains(k)));
    keys.into_iter()
        .filter_map(|k| scalar(map, k).map(|v| format!("{k}={v}")))
        .take(MAX_FIELDS)
        .collect::<Vec<_>>()
        .join(" ")
}

fn scalar(map: &Map<String, Value>, key: &str) -> Option<String> {
    let v = match map.get(key)? {
        Value::String(s) if s.is_empty() => return None,
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        // Lists of ids (a rollout's bodies) say how many; other structures are skipped.
        Value::Array(a) if !a.is_empty() && a.len() <= 3 && a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")
        }
        Value::Array(a) if !a.is_empty() => format!("[{}]", a.len()),
        _ => return None,
    };
    let v = clip(&v);
    Some(if v.contains(char::is_whitespace) || v.is_empty() { format!("{v:?}") } else { v })
}

fn clip(s: &str) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    if one_line.chars().count() > MAX_VALUE {
        format!("{}…", one_line.chars().take(MAX_VALUE - 1).collect::<String>())
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_filters_match_exact_names_and_prefixes_like_the_servers() {
        let f: TypeFilter = "provision.*".parse().unwrap();
        assert!(f.matches("provision.started") && !f.matches("exec.queued"));
        let f: TypeFilter = "exec.completed".parse().unwrap();
        assert!(f.matches("exec.completed") && !f.matches("exec.completed_x"));
        assert!("*".parse::<TypeFilter>().unwrap().matches("anything"));
        assert!("Exec!".parse::<TypeFilter>().is_err());
        assert!(wanted(&[], "x"));
    }

    #[test]
    fn the_summary_puts_ids_first_and_clips_long_values() {
        let data =
            json!({"exit_code": 0, "stdout": "lots", "node_id": "n-1", "error": "x".repeat(100), "wave": 2});
        let s = summary(&data);
        assert!(s.starts_with("node_id=n-1 wave=2 error=xxx"), "{s}");
        assert!(s.ends_with("exit_code=0"), "{s}");
        assert!(!s.contains("stdout"));
        assert!(s.contains('…'));
        assert_eq!(summary(&json!({"error": "disk full"})), "error=\"disk full\"");
    }

    #[test]
    fn wire_events_read_and_print() {
        let wire = json!({"seq": 7, "type": "node.approved", "at": "2026-01-02T03:04:05.678Z",
            "cause": "admin", "data": {"node_id": "n-1"}});
        let o = Observed::from_wire("hydracluster", Some("7"), Some("node.approved"), &wire).unwrap();
        assert_eq!(o.id, 7);
        assert_eq!(o.human_line(14), "03:04:05.678  hydracluster    node.approved             node_id=n-1");
        let j: Value = serde_json::from_str(&o.json_line()).unwrap();
        assert_eq!(j["service"], "hydracluster");
        assert_eq!(j["id"], 7);
        assert_eq!(j["data"]["node_id"], "n-1");
        assert!(o.at_ms() > 0);
    }
}
