//! The report of `hydra-bench ledger`'s sections (see [`super::Bench`] for the whole
//! report), and the number formats both suites' reports use.

use super::append::{typical_event_bytes, AppendRun};
use super::fanout::FanoutReport;
use super::fsync::SyncRate;
use super::replay::ReplayReport;
use super::Suite;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Duration;

pub const TARGET_APPENDS_512: f64 = 50_000.0;
pub const TARGET_ONE_VS_FSYNC: f64 = 0.80;
pub const TARGET_REPLAY: f64 = 1_000_000.0;
pub const TARGET_STARTUP: Duration = Duration::from_secs(1);

/// The sections of `hydra-bench ledger` that ran.
#[derive(Debug, Default)]
pub struct LedgerBench {
    pub fdatasync: Option<SyncRate>,
    pub sync_file_range: Option<SyncRate>,
    pub appends: Vec<AppendRun>,
    pub replay: Option<ReplayReport>,
    pub fanout: Option<FanoutReport>,
}

impl LedgerBench {
    fn one_vs_fsync(&self) -> Option<f64> {
        let one = self.appends.iter().find(|a| a.submitters == 1)?;
        let raw = self.fdatasync.as_ref()?.per_sec();
        (raw > 0.0).then(|| one.per_sec() / raw)
    }
}

pub fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "MISSED"
    }
}

/// 1234567.8 → "1,234,568".
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The line that says how a correctness check went: `ok`, or `FAILURE: ` and what
/// failed, with the examples kept beneath it, one a line.
pub fn write_check(o: &mut String, ok: &str, failure: Option<String>, examples: &[String]) {
    match failure {
        None => {
            let _ = writeln!(o, "   {ok}");
        }
        Some(failure) => {
            let _ = writeln!(o, "   FAILURE: {failure}");
            for e in examples {
                let _ = writeln!(o, "     {e}");
            }
        }
    }
}

impl Suite for LedgerBench {
    const NAME: &'static str = "ledger";
    const SETUP: &'static str = "";

    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = &self.fanout {
            if f.failed > 0 {
                out.push(format!("{} of {} SSE subscribers missed events", f.failed, f.subscribers));
            }
        }
        if let Some(r) = &self.replay {
            if !r.digest_matches {
                out.push("the views after start-up from a snapshot differ from the replayed ones".into());
            }
        }
        out
    }

    fn write_text(&self, o: &mut String) {
        if self.fdatasync.is_some() || self.sync_file_range.is_some() {
            let _ = writeln!(o, "\n1. Raw disk sync rate: append 4 KiB + sync, one at a time");
        }
        for r in [&self.fdatasync, &self.sync_file_range].into_iter().flatten() {
            let note = match r.kind {
                super::fsync::SyncKind::Fdatasync => "the physical floor for one-at-a-time durability",
                super::fsync::SyncKind::SyncFileRange => "what sled 0.34's flush calls (no cache flush)",
            };
            let _ = writeln!(
                o,
                "   {:<16} {:>9} syncs/s   p50 {:>9}   p99 {:>9}   ({})",
                r.kind.name(),
                thousands(r.per_sec()),
                ms(r.latency.p50),
                ms(r.latency.p99),
                note
            );
        }

        if !self.appends.is_empty() {
            let secs = self.appends[0].elapsed.as_secs_f64().round();
            let _ = writeln!(
                o,
                "\n2. Durable appends through the ledger ({secs:.0} s per run, fresh store, {} nodes enrolled)",
                super::append::NODES
            );
            let _ = writeln!(
                o,
                "   {:>10} {:>11} {:>11} {:>11} {:>10} {:>12} {:>12} {:>12}",
                "submitters",
                "events/s",
                "p50 ack",
                "p99 ack",
                "CPU cores",
                "writer busy",
                "sled-io CPU",
                "bytes/event"
            );
            for a in &self.appends {
                let target = if a.submitters == 512 {
                    format!(
                        "   target >= {}/s: {}",
                        thousands(TARGET_APPENDS_512),
                        verdict(a.per_sec() >= TARGET_APPENDS_512)
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    o,
                    "   {:>10} {:>11} {:>11} {:>11} {:>10.2} {:>11.0}% {:>12.2} {:>12.0}{target}",
                    a.submitters,
                    thousands(a.per_sec()),
                    ms(a.latency.p50),
                    ms(a.latency.p99),
                    a.cores_busy,
                    a.writer_busy * 100.0,
                    a.sled_io_cores,
                    a.bytes_per_event()
                );
            }
            if let Some(ratio) = self.one_vs_fsync() {
                let _ = writeln!(
                    o,
                    "   1 submitter / raw fdatasync rate = {ratio:.2}   target >= {TARGET_ONE_VS_FSYNC:.2}: {}",
                    verdict(ratio >= TARGET_ONE_VS_FSYNC)
                );
            }
            if let (Some(one), Some(sfr)) =
                (self.appends.iter().find(|a| a.submitters == 1), &self.sync_file_range)
            {
                let _ = writeln!(
                    o,
                    "   1 submitter / raw sync_file_range rate = {:.2} (what sled's own flush calls; the events' segment is fdatasync'd)",
                    one.per_sec() / sfr.per_sec().max(1e-9)
                );
            }
            let _ = writeln!(
                o,
                "   bytes/event = the store's size on disk (segments and sled) / events in the log; one encoded \
                 event is {} bytes (the rest is each record's header with its node id, and sled's tokens and meta)",
                typical_event_bytes()
            );
        }

        if let Some(r) = &self.replay {
            let _ = writeln!(
                o,
                "\n3. Replay and start-up ({} events, {} nodes)",
                thousands(r.events as f64),
                r.nodes
            );
            let _ = writeln!(
                o,
                "   log built directly in the store in {:.2?} ({}/s), {:.0} MB on disk ({:.0} bytes/event)",
                r.build,
                thousands(r.build_per_sec()),
                r.bytes_on_disk as f64 / 1e6,
                r.bytes_on_disk as f64 / r.events as f64
            );
            let _ = writeln!(
                o,
                "   full verified replay (hydra_core::audit::replay): {:.2?} = {} events/s ({:.2} cores)   target >= {}/s: {}",
                r.replay,
                thousands(r.replay_per_sec()),
                r.replay_cores,
                thousands(TARGET_REPLAY),
                verdict(r.replay_per_sec() >= TARGET_REPLAY)
            );
            let _ =
                writeln!(o, "   start-up without a snapshot (Ledger::open): {:.2?}", r.open_without_snapshot);
            let _ = writeln!(
                o,
                "   snapshot of the views: {:.1} KB, encoded + stored + flushed in {:.2?}",
                r.snapshot_bytes as f64 / 1e3,
                r.snapshot_write
            );
            let _ = writeln!(
                o,
                "   start-up from the snapshot: Ledger::open {:.2?} (+ Store::open {:.2?})   target < {:?}: {}   views match: {}",
                r.open_with_snapshot,
                r.store_open,
                TARGET_STARTUP,
                verdict(r.open_with_snapshot < TARGET_STARTUP),
                if r.digest_matches { "yes" } else { "NO" }
            );
            let _ = writeln!(
                o,
                "   (each measured in a fresh process, OS page cache warm; Store::open before the replay took {:.2?})",
                r.audit_store_open
            );
        }

        if let Some(f) = &self.fanout {
            let _ = writeln!(
                o,
                "\n4. SSE fan-out ({} subscribers, burst of {} events, broadcast capacity {}, fd limit {})",
                f.subscribers,
                thousands(f.burst as f64),
                f.broadcast_capacity,
                f.fd_limit
            );
            let _ = writeln!(o, "   all subscribers connected in {:.2?}", f.connect);
            let _ = writeln!(
                o,
                "   burst appended (first append to last ack) in {:.2?} = {} events/s",
                f.append,
                thousands(f.append_per_sec())
            );
            let _ = writeln!(
                o,
                "   delivered {} events in {:.2?} (first append to last delivery) = {} events/s",
                thousands(f.delivered as f64),
                f.delivery,
                thousands(f.delivered_per_sec()),
            );
            let _ = writeln!(
                o,
                "   CPU meanwhile: {:.2} cores in all = server runtime {:.2} + subscribers' runtime {:.2} + writer {:.2} + rest",
                f.cores_busy, f.server_cores, f.client_cores, f.writer_busy
            );
            let _ = writeln!(
                o,
                "   delivery lag (receive - ack), {} samples: p50 {}   p99 {}   max {}   ({} received before the submitter saw its ack)",
                f.lag.samples,
                ms(f.lag.p50),
                ms(f.lag.p99),
                ms(f.lag.max),
                f.lag.before_ack
            );
            let failure = (f.failed > 0)
                .then(|| format!("{} of {} subscribers missed events:", f.failed, f.subscribers));
            write_check(o, "every subscriber received every event, in order: OK", failure, &f.failures);
            let _ = writeln!(o, "   server stopped in {:.2?}", f.stop);
        }
    }

    fn json(&self) -> Value {
        let appends: Vec<Value> = self
            .appends
            .iter()
            .map(|a| {
                json!({
                    "submitters": a.submitters,
                    "events": a.events,
                    "seconds": a.elapsed.as_secs_f64(),
                    "events_per_sec": a.per_sec(),
                    "p50_ms": a.latency.p50.as_secs_f64() * 1e3,
                    "p99_ms": a.latency.p99.as_secs_f64() * 1e3,
                    "cores_busy": a.cores_busy,
                    "writer_busy": a.writer_busy,
                    "sled_io_cores": a.sled_io_cores,
                    "log_events": a.log_events,
                    "bytes_on_disk": a.bytes_on_disk,
                    "bytes_per_event": a.bytes_per_event(),
                })
            })
            .collect();
        let at_512 = self.appends.iter().find(|a| a.submitters == 512).map(|a| a.per_sec());
        let ratio = self.one_vs_fsync();
        json!({
            "fsync": {
                "fdatasync": self.fdatasync.as_ref().map(sync_json),
                "sync_file_range": self.sync_file_range.as_ref().map(sync_json),
            },
            "appends": {
                "runs": appends,
                "encoded_event_bytes": typical_event_bytes(),
                "one_submitter_vs_fdatasync": ratio,
                "target_512_events_per_sec": TARGET_APPENDS_512,
                "target_512_met": at_512.map(|r| r >= TARGET_APPENDS_512),
                "target_one_vs_fsync": TARGET_ONE_VS_FSYNC,
                "target_one_vs_fsync_met": ratio.map(|r| r >= TARGET_ONE_VS_FSYNC),
            },
            "replay": self.replay.as_ref().map(|r| json!({
                "events": r.events,
                "nodes": r.nodes,
                "build_seconds": r.build.as_secs_f64(),
                "audit_store_open_seconds": r.audit_store_open.as_secs_f64(),
                "bytes_on_disk": r.bytes_on_disk,
                "replay_seconds": r.replay.as_secs_f64(),
                "replay_events_per_sec": r.replay_per_sec(),
                "replay_cores_busy": r.replay_cores,
                "target_replay_events_per_sec": TARGET_REPLAY,
                "target_replay_met": r.replay_per_sec() >= TARGET_REPLAY,
                "open_without_snapshot_seconds": r.open_without_snapshot.as_secs_f64(),
                "snapshot_bytes": r.snapshot_bytes,
                "snapshot_write_seconds": r.snapshot_write.as_secs_f64(),
                "store_open_seconds": r.store_open.as_secs_f64(),
                "open_with_snapshot_seconds": r.open_with_snapshot.as_secs_f64(),
                "target_startup_seconds": TARGET_STARTUP.as_secs_f64(),
                "target_startup_met": r.open_with_snapshot < TARGET_STARTUP,
                "digest_matches": r.digest_matches,
            })),
            "fanout": self.fanout.as_ref().map(|f| json!({
                "subscribers": f.subscribers,
                "burst": f.burst,
                "broadcast_capacity": f.broadcast_capacity,
                "fd_limit": f.fd_limit,
                "connect_seconds": f.connect.as_secs_f64(),
                "append_seconds": f.append.as_secs_f64(),
                "append_events_per_sec": f.append_per_sec(),
                "delivery_seconds": f.delivery.as_secs_f64(),
                "delivered": f.delivered,
                "delivered_events_per_sec": f.delivered_per_sec(),
                "cores_busy": f.cores_busy,
                "writer_busy": f.writer_busy,
                "server_cores": f.server_cores,
                "client_cores": f.client_cores,
                "lag_samples": f.lag.samples,
                "lag_p50_ms": f.lag.p50.as_secs_f64() * 1e3,
                "lag_p99_ms": f.lag.p99.as_secs_f64() * 1e3,
                "lag_max_ms": f.lag.max.as_secs_f64() * 1e3,
                "lag_received_before_ack": f.lag.before_ack,
                "complete_subscribers": f.complete,
                "failed_subscribers": f.failed,
                "failures": f.failures,
                "stop_seconds": f.stop.as_secs_f64(),
            })),
        })
    }
}

fn sync_json(r: &SyncRate) -> Value {
    json!({
        "syncs_per_sec": r.per_sec(),
        "syncs": r.syncs,
        "p50_ms": r.latency.p50.as_secs_f64() * 1e3,
        "p99_ms": r.latency.p99.as_secs_f64() * 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::{thousands, write_check};

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }

    #[test]
    fn a_check_is_one_ok_line_or_a_failure_with_its_examples() {
        let mut o = String::new();
        write_check(&mut o, "all there: OK", None, &["unused".into()]);
        write_check(&mut o, "all there: OK", Some("2 missing:".into()), &["a".into(), "b".into()]);
        assert_eq!(o, "   all there: OK\n   FAILURE: 2 missing:\n     a\n     b\n");
    }
}
