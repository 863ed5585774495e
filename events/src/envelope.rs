//! The envelope: one event with its place in the log, its time, its cause and the
//! hash of the envelope before it (the chain that makes tampering detectable).

use crate::Event;
use serde::{Deserialize, Serialize};

/// The schema version of the `Event` enum written by this build (in each record's
/// header). 1: the first; 2: `node.approved` carries the owner; 3: `exec.completed`
/// and `exec.timed_out` refer to their output in the output store instead of holding it.
pub const CURRENT_SCHEMA: u16 = 3;

pub type Hash = [u8; 32];

/// The `prev_hash` of the first envelope in a log.
pub const ZERO_HASH: Hash = [0; 32];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Global sequence number, 1 for the first event, without gaps.
    pub seq: u64,
    /// Wall-clock time of the append, unix milliseconds, never decreasing.
    pub at_ms: u64,
    /// The schema version of `event` when it was written.
    pub schema: u16,
    /// Who or what caused it: `admin:<name>`, `node:<id>`, `watchdog:offline`, ….
    pub cause: String,
    /// blake3 of the encoded bytes of envelope `seq - 1` (zero for the first).
    pub prev_hash: Hash,
    pub event: Event,
}
