//! Runs one command on a node through the exec queue and waits for its end, for
//! endpoints that answer with what a machine says (a head's screenshot and log). The
//! command is an ordinary exec (in the log, visible in the node's queue), so the
//! audit trail shows who looked at a kiosk's screen; its output is kept only until
//! answered.

use super::exec::{ended_output, long_poll};
use super::{ApiError, AppState};
use crate::cluster::exec::{self, ExecRequest};
use hydra_core::auth::random_hex;
use hydra_core::error::DomainError;
use hydra_core::ledger::{now_ms, LedgerError};
use hydra_events::{ExecId, ExecOutput, NodeId};
use hydra_projections::{ExecRecord, ExecStatus};
use std::time::Duration;

/// How a command run through [`run`] ended.
pub(super) enum Outcome {
    /// It ran to its end on the node: its exit code and output.
    Completed(ExecOutput),
    /// It ended without running to completion (timed out on the node, failed, expired,
    /// cancelled by someone else): its status and reason.
    Ended(ExecRecord),
    /// No answer within the timeout: the command was cancelled (or, with the server
    /// stalled past the margin, expired undelivered first).
    NoAnswer,
}

/// Queues `command` on `node`, waits up to `timeout` (whole seconds, at least one) for
/// it to end, and cancels it when it does not, so nothing is left to run late.
pub(super) async fn run(
    state: &AppState,
    cause: String,
    node: &NodeId,
    command: String,
    timeout: Duration,
) -> Result<Outcome, ApiError> {
    let timeout_s = timeout.as_secs().max(1);
    let exec_id = ExecId::from_random_hex(&random_hex());
    let req = ExecRequest {
        command,
        timeout_ms: timeout_s * 1000,
        retry_on_disconnect: false,
        // Past the wait below by a margin, so that it is this wait that cancels the
        // command; the deadline only matters when nobody is left to cancel it.
        deliver_by_ms: now_ms() + timeout_s * 1000 + DELIVERY_MARGIN_MS,
    };
    state.ledger.submit(cause.clone(), exec::queue(exec_id.clone(), node.clone(), req)).await?;
    let finished = long_poll(state, node, timeout_s, || {
        let r = record(state, &exec_id);
        async move { Ok(r.filter(|r| r.status.is_finished())) }
    })
    .await?;
    let r = match finished {
        Some(r) => r,
        None => match state.ledger.submit(cause, exec::cancel(node.clone(), exec_id.clone())).await {
            Ok(_) => return Ok(Outcome::NoAnswer),
            // It ended between the wait and the cancel: use what it said.
            Err(LedgerError::Domain(DomainError::Conflict(_))) => {
                record(state, &exec_id).ok_or_else(|| ApiError::internal("exec record vanished"))?
            }
            Err(e) => return Err(e.into()),
        },
    };
    // Expired undelivered: the node did not answer either.
    if r.status == ExecStatus::Expired {
        return Ok(Outcome::NoAnswer);
    }
    if r.status != ExecStatus::Completed {
        return Ok(Outcome::Ended(r));
    }
    let Some(ended) = ended_output(state, &r).await? else { return Ok(Outcome::Ended(r)) };
    // The answer is all the output was fetched for (a screenshot every few seconds
    // would otherwise fill the store): drop it now; the event keeps its hash and size.
    let store = state.ledger.store().clone();
    let refs = ended.refs;
    tokio::task::spawn_blocking(move || refs.iter().try_for_each(|r| store.remove_output(&r.hash)))
        .await
        .map_err(ApiError::internal)??;
    Ok(Outcome::Completed(ended.output))
}

/// How long after the requester's wait a remote command's delivery deadline falls: more
/// than the exec watchdog's interval, so that the watchdog never expires a command its
/// requester is about to cancel (the two used to end together and raced).
const DELIVERY_MARGIN_MS: u64 = 5_000;

fn record(state: &AppState, id: &ExecId) -> Option<ExecRecord> {
    state.ledger.read(|v| v.exec.get(id).cloned())
}

/// `s` quoted for a POSIX shell; a leading `~/` stays outside the quotes so that the
/// shell expands it to the agent's home.
pub(super) fn shell_path(s: &str) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    match s.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", quote(rest)),
        None => quote(s),
    }
}

/// Decodes standard base64 (as `base64` prints it: padded, wrapped in lines). A
/// dozen lines here rather than one more crate for the one place that needs it.
pub(super) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !clean.chunks_exact(4).remainder().is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    let chunks = clean.len() / 4;
    for (i, chunk) in clean.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &b in &chunk[..4 - pad] {
            n = (n << 6) | value(b)?;
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_wrapped_padded_text_and_refuses_garbage() {
        assert_eq!(decode_base64("aGVs\nbG8=\n").unwrap(), b"hello");
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aA==").unwrap(), b"h");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("/+8A").unwrap(), [0xff, 0xef, 0x00]);
        for bad in ["aGk", "a===", "aA==aGk=", "a*Gk"] {
            assert!(decode_base64(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn paths_are_quoted_for_the_shell_and_home_is_expanded() {
        assert_eq!(shell_path("/var/log/a b.log"), "'/var/log/a b.log'");
        assert_eq!(shell_path("~/x/it's.jpg"), r#""$HOME"/'x/it'\''s.jpg'"#);
    }
}
