//! Schema 1, frozen: what records of format 1 hold, and its upcast to today's schema.
//!
//! Only what changed since is frozen here. Schema 2 changed one event,
//! `node.approved`, which gained `owner` (an approval with an owner was two events in
//! schema 1: `node.approved`, then `node.placement_changed` with the owner). Every
//! other variant keeps its index and its fields, so its bytes are the same in both
//! schemas (the golden tests in `tests/it/formats.rs` pin them) and decode as schema
//! 2's (`v2.rs`). Never edit the shapes in this file: they describe bytes already on
//! disk.

use crate::codec::{bincode_error, read_config as config, CodecError};
use crate::{Envelope, Event, Hash, NodeId};
use serde::{Deserialize, Serialize};

/// The envelope's fields before the event, in their order.
#[derive(Serialize, Deserialize)]
struct Head {
    seq: u64,
    at_ms: u64,
    schema: u16,
    cause: String,
    prev_hash: Hash,
}

/// `Event::NodeApproved` as schema 1 wrote it (variant index 1).
#[derive(Serialize, Deserialize)]
struct NodeApproved {
    node_id: NodeId,
    roles: Vec<String>,
    district: String,
    venue: String,
    environment: String,
}

/// The variant index of `NodeApproved`, as bincode writes it (a one-byte varint).
const NODE_APPROVED: u8 = 1;

/// Decodes a format-1 body (after its format byte) into today's envelope; says how
/// many bytes it took.
pub(crate) fn decode(body: &[u8]) -> Result<(Envelope, usize), CodecError> {
    let (head, head_len): (Head, usize) =
        bincode::serde::decode_from_slice(body, config()).map_err(bincode_error)?;
    if head.schema != 1 {
        return Err(CodecError::UnknownSchema(head.schema));
    }
    let rest = &body[head_len..];
    let (event, event_len) = match rest.first() {
        Some(&NODE_APPROVED) => {
            let (old, used): (NodeApproved, usize) =
                bincode::serde::decode_from_slice(&rest[1..], config()).map_err(bincode_error)?;
            (upcast_node_approved(old), used + 1)
        }
        // Every other event as schema 2 had it (schema 3 reshaped the exec results).
        _ => crate::v2::decode_event(rest)?,
    };
    let envelope = Envelope {
        seq: head.seq,
        at_ms: head.at_ms,
        schema: 1,
        cause: head.cause,
        prev_hash: head.prev_hash,
        event,
    };
    Ok((envelope, head_len + event_len))
}

/// Schema 1 had no owner on approval (a `node.placement_changed` that follows carries
/// it, and still does when such a log is replayed).
fn upcast_node_approved(old: NodeApproved) -> Event {
    let NodeApproved { node_id, roles, district, venue, environment } = old;
    Event::NodeApproved { node_id, roles, district, venue, environment, owner: None }
}

/// The sequence number and `prev_hash` of a format-1 body.
pub(crate) fn decode_link(body: &[u8]) -> Result<(u64, Hash), CodecError> {
    let (head, _): (Head, usize) =
        bincode::serde::decode_from_slice(body, config()).map_err(bincode_error)?;
    Ok((head.seq, head.prev_hash))
}

/// The format-1 bytes of an envelope that schema 1 could hold (None for one it could
/// not): to recognise format-1 records among other bytes in a damaged file.
pub(crate) fn encode(envelope: &Envelope) -> Option<Vec<u8>> {
    let head = Head {
        seq: envelope.seq,
        at_ms: envelope.at_ms,
        schema: 1,
        cause: envelope.cause.clone(),
        prev_hash: envelope.prev_hash,
    };
    let mut out = vec![crate::FORMAT_V1];
    bincode::serde::encode_into_std_write(&head, &mut out, config()).ok()?;
    match &envelope.event {
        Event::NodeApproved { owner: Some(_), .. } => return None,
        Event::NodeApproved { node_id, roles, district, venue, environment, owner: None } => {
            let old = NodeApproved {
                node_id: node_id.clone(),
                roles: roles.clone(),
                district: district.clone(),
                venue: venue.clone(),
                environment: environment.clone(),
            };
            out.push(NODE_APPROVED);
            bincode::serde::encode_into_std_write(&old, &mut out, config()).ok()?;
        }
        event => crate::v2::encode_event(event, &mut out)?,
    }
    Some(out)
}
