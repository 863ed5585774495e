//! Schema 2, frozen: the events whose shape changed in schema 3, as schemas 1 and 2
//! wrote them, and their upcast to today's schema.
//!
//! Schema 3 changed two events, `exec.completed` and `exec.timed_out`: they held what
//! the command printed; they now hold its hash and size (the output store keeps the
//! bytes). The upcast keeps an old record's text in `ExecResult::inline`, where the
//! result endpoint reads it, and computes the hashes and sizes from it. Every other
//! variant keeps its index and its fields. Never edit the shapes in this file: they
//! describe bytes already on disk.

use crate::codec::{bincode_error, read_config as config, CodecError};
use crate::{Event, ExecId, ExecResult, InlineOutput, NodeId, OutputRef};
use serde::{Deserialize, Serialize};

/// `ExecOutput` as schemas 1 and 2 stored it inside the event.
#[derive(Serialize, Deserialize)]
struct ExecOutput {
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
    truncated: bool,
    duration_ms: u64,
}

/// `Event::ExecCompleted` in schema 2 (variant index 17).
#[derive(Serialize, Deserialize)]
struct ExecCompleted {
    exec_id: ExecId,
    node_id: NodeId,
    output: ExecOutput,
}

/// `Event::ExecTimedOut` in schema 2 (variant index 18).
#[derive(Serialize, Deserialize)]
struct ExecTimedOut {
    exec_id: ExecId,
    node_id: NodeId,
    output: Option<ExecOutput>,
    by: String,
}

/// The variant indexes, as bincode writes them (one-byte varints).
const EXEC_COMPLETED: u8 = 17;
const EXEC_TIMED_OUT: u8 = 18;

/// Decodes an event written by schema 1 or 2 (bincode of the variant index, then its
/// fields) as today's `Event`; says how many bytes it took.
pub(crate) fn decode_event(bytes: &[u8]) -> Result<(Event, usize), CodecError> {
    let fields = bytes.get(1..).unwrap_or_default();
    match bytes.first() {
        Some(&EXEC_COMPLETED) => {
            let (old, used): (ExecCompleted, usize) =
                bincode::serde::decode_from_slice(fields, config()).map_err(bincode_error)?;
            let ExecCompleted { exec_id, node_id, output } = old;
            Ok((Event::ExecCompleted { exec_id, node_id, output: upcast(output) }, used + 1))
        }
        Some(&EXEC_TIMED_OUT) => {
            let (old, used): (ExecTimedOut, usize) =
                bincode::serde::decode_from_slice(fields, config()).map_err(bincode_error)?;
            let ExecTimedOut { exec_id, node_id, output, by } = old;
            Ok((Event::ExecTimedOut { exec_id, node_id, output: output.map(upcast), by }, used + 1))
        }
        _ => bincode::serde::decode_from_slice(bytes, config()).map_err(bincode_error),
    }
}

/// The output stays where it was written (the record); its hashes are computed so that
/// a schema-2 result looks like any other.
fn upcast(old: ExecOutput) -> ExecResult {
    let ExecOutput { exit_code, stdout, stderr, truncated, duration_ms } = old;
    ExecResult {
        exit_code,
        stdout: OutputRef::of(stdout.as_bytes()),
        stderr: OutputRef::of(stderr.as_bytes()),
        truncated,
        duration_ms,
        inline: Some(InlineOutput { stdout, stderr }),
    }
}

fn downcast(r: &ExecResult) -> Option<ExecOutput> {
    let inline = r.inline.as_ref()?;
    Some(ExecOutput {
        exit_code: r.exit_code,
        stdout: inline.stdout.clone(),
        stderr: inline.stderr.clone(),
        truncated: r.truncated,
        duration_ms: r.duration_ms,
    })
}

/// The schema-2 bytes of an event (None for one schema 2 could not hold: a result
/// without its output inline): to recognise old records among other bytes.
pub(crate) fn encode_event(event: &Event, out: &mut Vec<u8>) -> Option<()> {
    match event {
        Event::ExecCompleted { exec_id, node_id, output } => {
            let old = ExecCompleted {
                exec_id: exec_id.clone(),
                node_id: node_id.clone(),
                output: downcast(output)?,
            };
            out.push(EXEC_COMPLETED);
            bincode::serde::encode_into_std_write(&old, out, config()).ok()?;
        }
        Event::ExecTimedOut { exec_id, node_id, output, by } => {
            let output = match output {
                Some(r) => Some(downcast(r)?),
                None => None,
            };
            let old =
                ExecTimedOut { exec_id: exec_id.clone(), node_id: node_id.clone(), output, by: by.clone() };
            out.push(EXEC_TIMED_OUT);
            bincode::serde::encode_into_std_write(&old, out, config()).ok()?;
        }
        event => {
            bincode::serde::encode_into_std_write(event, out, config()).ok()?;
        }
    }
    Some(())
}
