//! The one place that turns envelopes into bytes and back: a leading format byte,
//! then bincode 2 (standard configuration) over serde.

use crate::{Envelope, Hash};

/// Format byte of envelopes encoded with bincode 2, standard configuration.
pub const FORMAT_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("unknown format byte {0} (written by a newer Hydra?)")]
    UnknownFormat(u8),
    #[error("undecodable record: {0}")]
    Bincode(String),
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
}

pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT_V1);
    // Encoding plain data into a Vec cannot fail; a failure here is a bug in a derive.
    bincode::serde::encode_into_std_write(envelope, &mut out, bincode::config::standard())
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

/// Decodes the envelope at the start of `bytes` and says how many bytes it took: for
/// finding records inside a damaged store file, where they sit among other bytes.
/// Lengths inside the record are capped (64 MiB) so that garbage never allocates more.
pub fn decode_prefix(bytes: &[u8]) -> Result<(Envelope, usize), CodecError> {
    let (&format, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if format != FORMAT_V1 {
        return Err(CodecError::UnknownFormat(format));
    }
    let config = bincode::config::standard().with_limit::<{ 64 << 20 }>();
    let (envelope, used): (Envelope, usize) =
        bincode::serde::decode_from_slice(body, config).map_err(|e| CodecError::Bincode(e.to_string()))?;
    Ok((envelope, used + 1))
}

/// The sequence number and `prev_hash` of an encoded envelope, without decoding its
/// event: enough to follow the hash chain over records that are not replayed (the
/// chain itself proves the rest of each record is as written).
pub fn decode_link(bytes: &[u8]) -> Result<(u64, Hash), CodecError> {
    /// The envelope's leading fields, in their order (bincode has no field names).
    #[derive(serde::Deserialize)]
    struct Link<'a> {
        seq: u64,
        _at_ms: u64,
        _schema: u16,
        _cause: &'a str,
        prev_hash: Hash,
    }
    let (&format, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if format != FORMAT_V1 {
        return Err(CodecError::UnknownFormat(format));
    }
    let (link, _): (Link<'_>, usize) =
        bincode::serde::borrow_decode_from_slice(body, bincode::config::standard())
            .map_err(|e| CodecError::Bincode(e.to_string()))?;
    Ok((link.seq, link.prev_hash))
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
            schema: 1,
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
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn damaged_records_are_rejected_not_misread() {
        let bytes = encode(&sample());
        assert!(matches!(decode(&[]), Err(CodecError::Empty)));
        assert!(matches!(decode(&[9, 1, 2]), Err(CodecError::UnknownFormat(9))));
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(CodecError::Trailing(1))));
    }
}
