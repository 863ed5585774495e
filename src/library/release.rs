//! Follows HydraRelease's SSE stream and registers every `build.uploaded` of a
//! tracked project as the development build of each experience of that project.
//! It resumes from the id of the last build it registered (kept in the library's own
//! log), and a build it already has registers nothing, so a repeated event after a
//! reconnect or a restart does nothing twice. Auto-promotion follows from the driver.

use super::commands::{self, NewBuild};
use super::state::LibraryState;
use crate::service::sse_client::{follow, SseItem, SseSource};
use futures_util::StreamExt;
use serde_json::Value;

pub async fn run(state: LibraryState) {
    let Some(url) = state.config.release_url.clone() else { return };
    let source = SseSource {
        url,
        token: state.config.release_token.clone(),
        last_event_id: state.ledger.read(|v| v.release_cursor.clone()),
        retry: state.config.reconnect_delay,
    };
    let mut events = std::pin::pin!(follow(source));
    while let Some(item) = events.next().await {
        match item {
            SseItem::Connected { resumed_from } => {
                state.links.set_release(true);
                tracing::info!(resumed_from = ?resumed_from, "following HydraRelease");
            }
            SseItem::Down { reason } => {
                state.links.set_release(false);
                tracing::warn!(%reason, "HydraRelease's stream is down; reconnecting");
            }
            SseItem::Event { id, kind, data } => {
                let Some((project, build)) = build_uploaded(&kind, &data) else { continue };
                register(&state, id, &project, build).await;
            }
        }
    }
}

async fn register(state: &LibraryState, id: Option<String>, project: &str, build: NewBuild) {
    let experiences: Vec<String> = state
        .ledger
        .read(|v| v.experiences.values().filter(|x| x.project == project).map(|x| x.id.clone()).collect());
    let mut registered = false;
    for experience in experiences {
        let command = commands::register_build(experience.clone(), build.clone(), id.clone());
        match state.ledger.submit(format!("hydrarelease:{}", id.as_deref().unwrap_or("-")), command).await {
            Ok(events) if !events.is_empty() => {
                registered = true;
                tracing::info!(%experience, build = %build.build, version = %build.version, "build registered");
            }
            Ok(_) => tracing::debug!(%experience, build = %build.build, "build known already"),
            Err(e) => tracing::warn!(%experience, build = %build.build, error = %e, "build not registered"),
        }
    }
    if registered {
        state.wake.notify_one();
    }
}

/// A `build.uploaded` event: the SSE type says so, or (for a stream of plain
/// messages) its JSON `type` does. The build's fields are at the top level of the
/// JSON or under `data` (Hydra's own envelope shape).
fn build_uploaded(kind: &str, data: &str) -> Option<(String, NewBuild)> {
    let value: Value = serde_json::from_str(data).ok()?;
    let typed = value.get("type").and_then(Value::as_str);
    if kind != "build.uploaded" && typed != Some("build.uploaded") {
        return None;
    }
    let fields = match value.get("data") {
        Some(inner @ Value::Object(_)) => inner,
        _ => &value,
    };
    let text = |k: &str| match fields.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let Some(project) = text("project") else {
        tracing::warn!("a build.uploaded without a project was ignored");
        return None;
    };
    let build = NewBuild {
        build: text("build").or_else(|| text("build_id"))?,
        version: text("version")?,
        artifact_url: text("artifact_url")?,
        sha256: text("sha256")?,
    };
    Some((project, build))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_uploaded_is_read_flat_or_in_an_envelope_and_other_types_are_ignored() {
        let flat =
            r#"{"project":"space","build":"b7","version":"1.7","artifact_url":"https://x/b7","sha256":"ab"}"#;
        let (project, b) = build_uploaded("build.uploaded", flat).unwrap();
        assert_eq!((project.as_str(), b.build.as_str(), b.version.as_str()), ("space", "b7", "1.7"));
        let wrapped = format!(r#"{{"seq":4,"type":"build.uploaded","data":{flat}}}"#);
        assert_eq!(build_uploaded("message", &wrapped).unwrap().1.build, "b7");
        assert!(build_uploaded("build.deleted", flat).is_none());
        assert!(build_uploaded("build.uploaded", r#"{"project":"space"}"#).is_none(), "fields missing");
        assert!(build_uploaded("build.uploaded", "not json").is_none());
    }

    #[test]
    fn a_numeric_build_id_is_the_same_build_as_its_string() {
        let numeric =
            r#"{"project":"space","build":1,"version":"1.0","artifact_url":"https://x/1","sha256":"ab"}"#;
        let text =
            r#"{"project":"space","build":"1","version":"1.0","artifact_url":"https://x/1","sha256":"ab"}"#;
        assert_eq!(build_uploaded("build.uploaded", numeric).unwrap().1.build, "1");
        assert_eq!(build_uploaded("build.uploaded", text).unwrap().1.build, "1");
    }
}
