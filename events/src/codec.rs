//! The one place that turns envelopes into bytes and back. A record starts with a
//! header that says how to read the rest: a format byte, then (format 2) the schema
//! of the event; the body is bincode 2 (standard configuration) over serde. Records
//! are never rewritten (the hash chain covers their bytes), so every header ever
//! written stays readable: each has its decoder here, and older schemas are upcast to
//! today's `Event` (`v1.rs`, `v2.rs`).

use crate::{v1, v2, Envelope, Event, Hash, CURRENT_SCHEMA};
use serde::{Deserialize, Serialize};

/// Format 1 (schema 1, until the schema moved into the header): `[1]`, then the whole
/// envelope, its schema field included.
pub const FORMAT_V1: u8 = 1;
/// Format 2: `[2]`, the event's schema (u16, little endian), then the envelope's
/// other fields. Every record written today.
pub const FORMAT_V2: u8 = 2;

/// Lengths inside a record are capped so that garbage never allocates more.
const MAX_RECORD: usize = 64 << 20;

/// The bincode configuration every record is read with, whatever its schema.
pub(crate) fn read_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RECORD>()
}

pub(crate) fn bincode_error(e: bincode::error::DecodeError) -> CodecError {
    CodecError::Bincode(e.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("unknown format byte {0} (written by a newer Hydra?)")]
    UnknownFormat(u8),
    #[error("event schema {found} is newer than this build reads ({supported}): upgrade Hydra")]
    SchemaTooNew { found: u16, supported: u16 },
    #[error("event schema {0} was never written with format 2")]
    UnknownSchema(u16),
    #[error("undecodable record: {0}")]
    Bincode(String),
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
}

/// The envelope's fields after the header, in their order (bincode has no names).
#[derive(Serialize)]
struct BodyRef<'a> {
    seq: u64,
    at_ms: u64,
    cause: &'a str,
    prev_hash: &'a Hash,
    event: &'a Event,
}

/// The envelope's fields before the event, for a schema whose event is decoded apart.
#[derive(Serialize, Deserialize)]
struct Head {
    seq: u64,
    at_ms: u64,
    cause: String,
    prev_hash: Hash,
}

#[derive(Deserialize)]
struct Body {
    seq: u64,
    at_ms: u64,
    cause: String,
    prev_hash: Hash,
    event: Event,
}

/// Encodes an envelope in today's format and schema (whatever its `schema` field says:
/// an envelope is only ever encoded when it is appended, in today's shape).
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT_V2);
    out.extend_from_slice(&CURRENT_SCHEMA.to_le_bytes());
    let body = BodyRef {
        seq: envelope.seq,
        at_ms: envelope.at_ms,
        cause: &envelope.cause,
        prev_hash: &envelope.prev_hash,
        event: &envelope.event,
    };
    // Encoding plain data into a Vec cannot fail; a failure here is a bug in a derive.
    bincode::serde::encode_into_std_write(&body, &mut out, bincode::config::standard())
        .expect("envelopes are always encodable");
    out
}

pub fn decode(bytes: &[u8]) -> Result<Envelope, CodecError> {
    let (envelope, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(envelope)
}

/// The header of a record: its format, the schema of its event, and where its body
/// starts.
fn header(bytes: &[u8]) -> Result<(u8, u16, &[u8]), CodecError> {
    let (&format, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
    match format {
        // Format 1 carried only schema 1 (its schema field is checked when decoded).
        FORMAT_V1 => Ok((format, 1, rest)),
        FORMAT_V2 => {
            let (schema, body) = rest.split_first_chunk::<2>().ok_or(CodecError::Empty)?;
            Ok((format, u16::from_le_bytes(*schema), body))
        }
        other => Err(CodecError::UnknownFormat(other)),
    }
}

/// Decodes the envelope at the start of `bytes`, upcast to today's schema, and says
/// how many bytes it took: for finding records inside a damaged store file, where
/// they sit among other bytes.
pub fn decode_prefix(bytes: &[u8]) -> Result<(Envelope, usize), CodecError> {
    let (format, schema, body) = header(bytes)?;
    let head = bytes.len() - body.len();
    let config = read_config();
    match (format, schema) {
        (FORMAT_V1, _) => {
            let (envelope, used) = v1::decode(body)?;
            Ok((envelope, head + used))
        }
        (_, CURRENT_SCHEMA) => {
            let (b, used): (Body, usize) =
                bincode::serde::decode_from_slice(body, config).map_err(bincode_error)?;
            let envelope = Envelope {
                seq: b.seq,
                at_ms: b.at_ms,
                schema,
                cause: b.cause,
                prev_hash: b.prev_hash,
                event: b.event,
            };
            Ok((envelope, head + used))
        }
        (_, 2) => {
            let (h, head_len): (Head, usize) =
                bincode::serde::decode_from_slice(body, config).map_err(bincode_error)?;
            let (event, event_len) = v2::decode_event(&body[head_len..])?;
            let envelope = Envelope {
                seq: h.seq,
                at_ms: h.at_ms,
                schema: 2,
                cause: h.cause,
                prev_hash: h.prev_hash,
                event,
            };
            Ok((envelope, head + head_len + event_len))
        }
        (_, found) if found > CURRENT_SCHEMA => {
            Err(CodecError::SchemaTooNew { found, supported: CURRENT_SCHEMA })
        }
        (_, found) => Err(CodecError::UnknownSchema(found)),
    }
}

/// The sequence number and `prev_hash` of an encoded envelope, without decoding its
/// event: enough to follow the hash chain over records that are not replayed (the
/// chain itself proves the rest of each record is as written).
pub fn decode_link(bytes: &[u8]) -> Result<(u64, Hash), CodecError> {
    #[derive(Deserialize)]
    struct Link<'a> {
        seq: u64,
        _at_ms: u64,
        _cause: &'a str,
        prev_hash: Hash,
    }
    let (format, _, body) = header(bytes)?;
    if format == FORMAT_V1 {
        return v1::decode_link(body);
    }
    let (link, _): (Link<'_>, usize) = bincode::serde::borrow_decode_from_slice(body, read_config())
        .map_err(|e| CodecError::Bincode(e.to_string()))?;
    Ok((link.seq, link.prev_hash))
}

/// True when `bytes` are exactly what the codec writes for `envelope` in the record's
/// own format: a record found among other bytes, not a lucky parse of them.
pub fn is_canonical(envelope: &Envelope, bytes: &[u8]) -> bool {
    match header(bytes) {
        Ok((FORMAT_V1, ..)) => v1::encode(envelope).is_some_and(|b| b == bytes),
        Ok((_, 2, _)) => encode_schema_2(envelope).is_some_and(|b| b == bytes),
        _ => encode(envelope) == bytes,
    }
}

/// The bytes schema 2 wrote for an envelope (None for one it could not hold).
fn encode_schema_2(envelope: &Envelope) -> Option<Vec<u8>> {
    let mut out = vec![FORMAT_V2];
    out.extend_from_slice(&2u16.to_le_bytes());
    let head = Head {
        seq: envelope.seq,
        at_ms: envelope.at_ms,
        cause: envelope.cause.clone(),
        prev_hash: envelope.prev_hash,
    };
    bincode::serde::encode_into_std_write(&head, &mut out, bincode::config::standard()).ok()?;
    v2::encode_event(&envelope.event, &mut out)?;
    Some(out)
}

/// The chain hash of an encoded envelope.
pub fn hash(encoded: &[u8]) -> Hash {
    *blake3::hash(encoded).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_link_reads_the_seq_and_prev_hash_only() {
        let e = Envelope {
            seq: 42,
            at_ms: 7,
            schema: crate::CURRENT_SCHEMA,
            cause: "admin:test".into(),
            prev_hash: [9; 32],
            event: crate::Event::NodeRejected { node_id: crate::NodeId::parse("node-a").unwrap() },
        };
        assert_eq!(decode_link(&encode(&e)).unwrap(), (42, [9; 32]));
    }
    use crate::{Event, NodeId, ZERO_HASH};

    fn sample() -> Envelope {
        Envelope {
            seq: 7,
            at_ms: 1_700_000_000_000,
            schema: CURRENT_SCHEMA,
            cause: "admin:ops".into(),
            prev_hash: ZERO_HASH,
            event: Event::NodeProviderChanged {
                node_id: NodeId::parse("node-ab12").unwrap(),
                provider_status: Some("running".into()),
                provider_version: None,
            },
        }
    }

    #[test]
    fn envelopes_round_trip_through_the_codec() {
        let bytes = encode(&sample());
        assert_eq!(bytes[..3], [FORMAT_V2, CURRENT_SCHEMA as u8, 0], "format 2, then the schema");
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn damaged_records_are_rejected_not_misread() {
        let bytes = encode(&sample());
        assert!(matches!(decode(&[]), Err(CodecError::Empty)));
        assert!(matches!(decode(&[9, 1, 2]), Err(CodecError::UnknownFormat(9))));
        assert!(matches!(decode(&[FORMAT_V2, 9, 0, 1]), Err(CodecError::SchemaTooNew { found: 9, .. })));
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(CodecError::Trailing(1))));
    }
}
