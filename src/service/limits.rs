//! Size limits on what agents say about themselves (heartbeat diagnostics and
//! telemetry, a head's status report, versions and other reported strings): a body
//! from a self-enrolled, unapproved node must not be able to grow the server's memory
//! or its answers. Checked before anything is stored, so a refusal stores nothing.

use super::ApiError;
use axum::http::StatusCode;
use serde_json::{Map, Value};

/// Keys in one agent-supplied map.
pub const MAX_KEYS: usize = 64;
/// Bytes in one key.
pub const MAX_KEY_BYTES: usize = 64;
/// Bytes of one value, as JSON (a nested object counts whole).
pub const MAX_VALUE_BYTES: usize = 1024;
/// Bytes of one reported string (versions, os, provider status, …).
pub const MAX_FIELD_BYTES: usize = 256;

/// The length of `v` written as compact JSON, without building the text.
fn json_len(v: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `serde_json::Value` into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

fn too_large(message: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
}

fn over_limit(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// A short, printable excerpt of an offending key for an error message.
fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Checks one agent-supplied map, named `field` in the errors: the whole (at most
/// `max_total` bytes as JSON, at most [`MAX_KEYS`] keys) is a 413; one key over
/// [`MAX_KEY_BYTES`] or one value over [`MAX_VALUE_BYTES`] is a 422 naming the key.
pub fn check_map(field: &str, map: &Map<String, Value>, max_total: usize) -> Result<(), ApiError> {
    let total = json_len(map);
    if total > max_total {
        return Err(too_large(format!(
            "{field} is {total} bytes as JSON; at most {max_total} are accepted (max_diagnostics_bytes)"
        )));
    }
    if map.len() > MAX_KEYS {
        return Err(too_large(format!("{field} has {} keys; at most {MAX_KEYS} are accepted", map.len())));
    }
    for (key, value) in map {
        if key.len() > MAX_KEY_BYTES {
            return Err(over_limit(format!(
                "{field} key {:?} is {} bytes; keys are at most {MAX_KEY_BYTES}",
                excerpt(key),
                key.len()
            )));
        }
        let len = json_len(value);
        if len > MAX_VALUE_BYTES {
            return Err(over_limit(format!(
                "{field}.{key} is {len} bytes as JSON; values are at most {MAX_VALUE_BYTES}"
            )));
        }
    }
    Ok(())
}

/// Checks an agent-supplied object given as any JSON value: it must be an object
/// (422 otherwise), then as [`check_map`].
pub fn check_object(field: &str, value: &Value, max_total: usize) -> Result<(), ApiError> {
    match value {
        Value::Object(map) => check_map(field, map, max_total),
        _ => Err(over_limit(format!("{field} must be a JSON object"))),
    }
}

/// One reported string: at most `max` bytes (422 naming the field and the limit).
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(over_limit(format!("{field} is {} bytes; at most {max} are accepted", value.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn each_limit_names_the_field_and_the_key() {
        let ok = map(json!({"version": "1.2", "latency_ms": 12, "app": {"fps": 60}}));
        assert!(check_map("diagnostics", &ok, 4096).is_ok());

        let e = check_map("diagnostics", &map(json!({"x": "y".repeat(5000)})), 4096).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("diagnostics") && e.message.contains("4096"), "{}", e.message);

        let many: Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!(1))).collect();
        let e = check_map("telemetry", &many, 4096).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("65 keys"), "{}", e.message);

        let e = check_map("diagnostics", &map(json!({"k".repeat(65): 1})), 4096).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("key") && e.message.contains("64"), "{}", e.message);

        let e = check_map("diagnostics", &map(json!({"log": "z".repeat(1100)})), 4096).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("diagnostics.log") && e.message.contains("1024"), "{}", e.message);

        assert_eq!(check_object("telemetry", &json!([1]), 4096).unwrap_err().status, 422);
        assert_eq!(check_len("os", &"o".repeat(257), MAX_FIELD_BYTES).unwrap_err().status, 422);
    }

    #[test]
    fn the_length_is_that_of_the_compact_json() {
        let v = json!({"a": [1, 2], "b": "c"});
        assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len());
    }
}
