//! The writer's instruments: commands by outcome, events by type, batch size, commit
//! and fsync time. Plain `prometheus-client` metrics (atomics, and a short lock per
//! histogram observation) recorded on the writer thread next to an fsync, so they cost
//! it nothing measurable; each service registers them in its own registry
//! (`src/service/metrics.rs`), which keeps the figures of two servers in one process
//! apart.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// One label of a fixed, bounded set of values.
pub type Label = [(&'static str, &'static str); 1];

/// What a command came to, as `hydra_ledger_commands_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its events (or token writes) are durable.
    Appended,
    /// Accepted, with nothing to write.
    Unchanged,
    /// The command said no (a `DomainError`).
    Refused,
    /// It panicked, or the write of its batch failed.
    Failed,
    /// Refused unseen: the log takes no writes (disk full, a failed write earlier).
    ReadOnly,
}

impl Outcome {
    pub const ALL: [Outcome; 5] =
        [Outcome::Appended, Outcome::Unchanged, Outcome::Refused, Outcome::Failed, Outcome::ReadOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Appended => "appended",
            Outcome::Unchanged => "unchanged",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::ReadOnly => "read_only",
        }
    }
}

/// The ledger's instruments; clones share the same figures.
#[derive(Debug, Clone)]
pub struct LedgerMetrics {
    pub commands: Family<Label, Counter>,
    /// Events appended by type (`Event::type_name`, a closed set).
    pub events: Family<Label, Counter>,
    /// Commands folded into one flush.
    pub batch_commands: Histogram,
    /// From taking a batch to answering it: decide, append, fsync, apply, publish.
    pub commit_seconds: Histogram,
    /// The flush alone: sled's when it was written to, then the segment's fdatasync.
    pub fsync_seconds: Histogram,
}

impl Default for LedgerMetrics {
    fn default() -> Self {
        let m = LedgerMetrics {
            commands: Family::default(),
            events: Family::default(),
            // 1 … 4096 (`max_batch`).
            batch_commands: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            // 0.25 ms … 4 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            fsync_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
        };
        // Every series exists from the start at 0, so a rate or an alert over one is
        // defined before its first increment.
        for outcome in Outcome::ALL {
            m.commands.get_or_create(&[("outcome", outcome.as_str())]).inc_by(0);
        }
        for t in hydra_events::Event::TYPES {
            m.events.get_or_create(&[("type", t)]).inc_by(0);
        }
        m
    }
}

impl LedgerMetrics {
    pub fn command(&self, outcome: Outcome, n: u64) {
        self.commands.get_or_create(&[("outcome", outcome.as_str())]).inc_by(n);
    }

    /// Events of type `type_name` appended since start.
    pub fn events_of(&self, type_name: &'static str) -> u64 {
        self.events.get(&[("type", type_name)]).map_or(0, |c| c.get())
    }
}
