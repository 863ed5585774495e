//! The JSON form of a logged event, as each audience may read it: the one rendering
//! behind the SSE stream, `/events/log`, `audit` and `repair`'s dropped-events file.

use hydra_events::{Envelope, Event, ExecResult};

/// Who reads an event. Admins see command text; observers see what happened to a
/// command (ids, status, exit code, sizes) but never its text, which can hold secrets
/// (`db_password=…`). What a command printed is in no event's JSON, for any audience
/// (`output_summary`): the result endpoint serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Admin,
    Observer,
}

/// The JSON form of an event: `{"seq","type","at","cause","data"}`, where `data` holds
/// the event's fields (`node_id`, …), without output, and without command text for
/// observers.
pub fn envelope_json(e: &Envelope, audience: Audience) -> serde_json::Value {
    let mut data = match serde_json::to_value(&e.event) {
        Ok(serde_json::Value::Object(m)) if m.len() == 1 => {
            m.into_iter().next().map(|(_, v)| v).unwrap_or_default()
        }
        Ok(other) => other,
        Err(_) => serde_json::Value::Null,
    };
    output_summary(&e.event, &mut data);
    about_node(&e.event, &mut data);
    if audience == Audience::Observer {
        redact(&e.event, &mut data);
    }
    serde_json::json!({
        "seq": e.seq,
        "type": e.event.type_name(),
        "at": rfc3339(e.at_ms),
        "cause": e.cause,
        "data": data,
    })
}

/// Replaces what a command printed with its sizes, for every audience: a 1 MiB
/// stdout would otherwise go to every subscriber of the stream, and the result
/// endpoint (admins) is where output is read.
fn output_summary(event: &Event, data: &mut serde_json::Value) {
    let Some(fields) = data.as_object_mut() else { return };
    if let Event::ExecCompleted { output: o, .. } | Event::ExecTimedOut { output: Some(o), .. } = event {
        fields.insert("output".into(), summary(o));
    }
}

/// Puts the node an event is about in `data` as `node_id` when its fields name it
/// otherwise (`head_id`), so one filter on `data.node_id` works across event types
/// (SPEC §7), as the `?node=` filter of the stream does on the same node.
fn about_node(event: &Event, data: &mut serde_json::Value) {
    let (Some(node), Some(fields)) = (event.node_id(), data.as_object_mut()) else { return };
    fields.entry("node_id").or_insert_with(|| serde_json::json!(node));
}

fn summary(o: &ExecResult) -> serde_json::Value {
    serde_json::json!({
        "exit_code": o.exit_code,
        "truncated": o.truncated,
        "duration_ms": o.duration_ms,
        "stdout_bytes": o.stdout.size,
        "stderr_bytes": o.stderr.size,
    })
}

/// Takes command text and install-hook output out of an event's `data`, leaving
/// their sizes. Exhaustive on purpose: a new event type must be decided on here.
fn redact(event: &Event, data: &mut serde_json::Value) {
    use serde_json::json;
    let Some(fields) = data.as_object_mut() else { return };
    match event {
        Event::ExecQueued { command, .. } | Event::ShellOpened { command: Some(command), .. } => {
            fields.remove("command");
            fields.insert("command_bytes".into(), json!(command.len()));
        }
        // A provisioning error ends with what the install hook or tar printed: keep
        // only the part before it ("install hook exited 1", "timeout").
        Event::ProvisionFailed { error, .. } | Event::RolloutNodeFailed { error, .. } => {
            let summary = error.split(':').next().unwrap_or_default().trim();
            fields.insert("error".into(), json!(summary));
            fields.insert("error_bytes".into(), json!(error.len()));
        }
        Event::NodeEnrolled { .. }
        | Event::NodeApproved { .. }
        | Event::NodeRejected { .. }
        | Event::NodeRemoved { .. }
        | Event::NodeRolesChanged { .. }
        | Event::NodePlacementChanged { .. }
        | Event::NodeDrainChanged { .. }
        | Event::NodeUpdateRequested { .. }
        | Event::NodeUpdateDelivered { .. }
        | Event::NodeOnline { .. }
        | Event::NodeOffline { .. }
        | Event::NodeProviderChanged { .. }
        | Event::NodeAgentChanged { .. }
        | Event::NodeNetworkChanged { .. }
        | Event::NodeStreamChanged { .. }
        | Event::ExecDispatched { .. }
        | Event::ExecCompleted { .. }
        | Event::ExecTimedOut { .. }
        | Event::ExecCancelled { .. }
        | Event::ExecRequeued { .. }
        | Event::ExecFailed { .. }
        | Event::ExecExpired { .. }
        | Event::ShellOpened { command: None, .. }
        | Event::ShellClosed { .. }
        | Event::HeadRegistered { .. }
        | Event::HeadStatusChanged { .. }
        | Event::HeadAssigned { .. }
        | Event::HeadExperiencesAllowed { .. }
        | Event::ReprovisionRequested { .. }
        | Event::ProvisionStarted { .. }
        | Event::ProvisionCompleted { .. }
        | Event::StreamStopped { .. }
        | Event::AnomalyStarted { .. }
        | Event::AnomalyCleared { .. }
        | Event::ExperienceCreated { .. }
        | Event::BuildRegistered { .. }
        | Event::ExperiencePromoted { .. }
        | Event::RolloutStarted { .. }
        | Event::RolloutWaveStarted { .. }
        | Event::RolloutNodeRequested { .. }
        | Event::RolloutNodeStarted { .. }
        | Event::RolloutNodeCompleted { .. }
        | Event::RolloutWaveCompleted { .. }
        | Event::RolloutPaused { .. }
        | Event::RolloutResumed { .. }
        | Event::RolloutCompleted { .. }
        | Event::RolloutAborted { .. }
        | Event::NodeKindChanged { .. }
        | Event::HeadUnassigned { .. }
        | Event::RolloutOrigin { .. }
        | Event::NodeImported { .. }
        | Event::SessionStarted { .. }
        | Event::SessionEnded { .. }
        | Event::NodeRekeyKeyRegistered { .. }
        | Event::NodeTokenRotated { .. }
        | Event::NodeRekeyed { .. }
        | Event::RolloutCancelled { .. } => {}
    }
}

/// A time in ms since the epoch as RFC 3339 with milliseconds (`2026-11-29T05:30:00.000Z`).
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}
