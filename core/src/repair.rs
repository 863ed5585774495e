//! A damaged log: the refusal that names the last good sequence number and the two
//! ways on (a backup, or `repair --truncate-after SEQ`), and that repair itself, which
//! builds a fresh store from the intact prefix and keeps the damaged data dir beside
//! it. Shared by `hydracluster` and `hydraexperiencelibrary`.

use crate::ledger::recover;
use crate::store::{self, Record, Store, StoreError, TokenWrite};
use anyhow::{bail, Context};
use hydra_projections::Projection;
use std::path::{Path, PathBuf};

/// The message for a log that cannot be served or audited: what is wrong, the last
/// good sequence number (from a raw scan of the files, which needs no sled), and what
/// the operator can do; for a data dir in another layout, the command that migrates
/// it. `None` when the error is neither (e.g. a lock).
pub fn refusal(data: &Path, program: &str, error: &StoreError) -> Option<String> {
    use hydra_migrations::MigrationError;
    match error {
        StoreError::Layout(MigrationError::LayoutTooNew { .. }) => return Some(error.to_string()),
        StoreError::Layout(_) => {
            return Some(format!("{error}:\n  {program} migrate --data {}", data.display()));
        }
        _ if !error.is_damage() => return None,
        _ => {}
    }
    let good = match store::salvage(data) {
        Ok(s) => s.chain.len() as u64,
        Err(e) => {
            return Some(format!("{error}; its files cannot be read either ({e}): restore it from a backup"))
        }
    };
    let data = data.display();
    Some(if good == 0 {
        format!("{error}\nno event can be read back from it: restore {data} from a backup")
    } else {
        format!(
            "{error}\nthe last good event is seq {good} (events 1..={good} read back whole, hash chain intact).\n\
             Either restore {data} from a backup, or keep events 1..={good} and drop the rest with\n  \
             {program} repair --data {data} --truncate-after {good}\n\
             (the damaged data dir is kept beside it and the dropped events are exported)"
        )
    })
}

/// What `repair` did, for the operator.
#[derive(Debug)]
pub struct Repaired {
    pub kept: u64,
    pub dropped: usize,
    pub damaged_copy: PathBuf,
    pub dropped_file: PathBuf,
    pub tokens_kept: usize,
    pub tokens_dropped: usize,
}

/// `repair --truncate-after SEQ`: rebuilds `data` from events 1..=`keep` as read back by
/// the raw scan (hash chain verified), with the per-node index rebuilt, no projection
/// snapshot (start-up replays), the watermark at `keep` and the tokens of the nodes
/// still in the log. The new store is built and checked in a sibling dir first; only
/// then is `data` renamed to `<data>.damaged-<unix time>` (untouched: sled never opens
/// it here) and the new one put in its place. The events past `keep` that could be
/// read are exported to `dropped-events.jsonl` in the damaged copy.
///
/// Tokens live only in sled: when sled cannot read them, the repair stops unless
/// `drop_tokens` says the nodes may enroll again.
pub fn repair<P: Projection>(data: &Path, keep: u64, drop_tokens: bool) -> anyhow::Result<Repaired> {
    if !data.join("log").join("db").exists() {
        bail!("no event log in {}", data.display());
    }
    if store::in_use(data) {
        bail!("a server is running on {}: stop it first", data.display());
    }
    let salvage = store::salvage(data).with_context(|| format!("reading {}", data.display()))?;
    let good = salvage.chain.len() as u64;
    if keep == 0 || keep > good {
        bail!("events 1..={good} are intact; --truncate-after must be between 1 and {good}");
    }
    let stamp = crate::ledger::now_ms() / 1000;
    let sibling = |suffix: &str| {
        let mut name = data.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{suffix}-{stamp}"));
        data.with_file_name(name)
    };
    let (fresh, damaged) = (sibling("repair"), sibling("damaged"));
    if fresh.exists() || damaged.exists() {
        bail!("{} or {} already exists; try again in a second", fresh.display(), damaged.display());
    }

    let kept: Vec<hydra_events::Envelope> = salvage.chain[..keep as usize]
        .iter()
        .map(|b| hydra_events::decode(b))
        .collect::<Result<_, _>>()
        .context("an intact event does not decode")?;
    let nodes: std::collections::HashSet<String> =
        kept.iter().filter_map(|e| e.event.node_id().map(|n| format!("node:{n}"))).collect();
    let tokens = match read_tokens(data, &sibling("scratch")) {
        Ok(t) => t,
        Err(e) if drop_tokens => {
            tracing::warn!(error = %e, "tokens not readable; dropped as asked");
            Vec::new()
        }
        Err(e) => bail!(
            "the node tokens cannot be read ({e:#}); without them every node must enroll again. \
             Run again with --drop-tokens to accept that, or restore {} from a backup",
            data.display()
        ),
    };
    let (carried, left): (Vec<_>, Vec<_>) = tokens.into_iter().partition(|(_, p)| nodes.contains(p));

    let built = build(&fresh, data, &salvage.chain[..keep as usize], &kept, &carried)
        .and_then(|()| verify::<P>(&fresh, keep));
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(e.context(format!("building the repaired store in {}", fresh.display())));
    }
    std::fs::rename(data, &damaged).with_context(|| format!("moving {} aside", data.display()))?;
    std::fs::rename(&fresh, data).with_context(|| {
        format!("moving {} to {} (the damaged dir is {})", fresh.display(), data.display(), damaged.display())
    })?;

    // What is dropped, one JSON line per record, beside the untouched damaged store.
    let dropped_file = damaged.join("dropped-events.jsonl");
    let mut lines = String::new();
    let past_chain = salvage.chain[keep as usize..].iter().map(|b| (true, b.as_slice()));
    let rest = salvage.beyond.iter().map(|(_, b)| (false, b.as_slice()));
    let mut dropped = 0;
    for (in_chain, bytes) in past_chain.chain(rest) {
        let Ok(e) = hydra_events::decode(bytes) else { continue };
        let mut line = crate::envelope::envelope_json(&e, crate::envelope::Audience::Admin);
        line["chained"] = in_chain.into();
        lines.push_str(&line.to_string());
        lines.push('\n');
        dropped += 1;
    }
    std::fs::write(&dropped_file, lines).with_context(|| format!("writing {}", dropped_file.display()))?;
    Ok(Repaired {
        kept: keep,
        dropped,
        damaged_copy: damaged,
        dropped_file,
        tokens_kept: carried.len(),
        tokens_dropped: left.len(),
    })
}

/// Reads the tokens through sled from a scratch copy of the log (opening a store lets
/// sled rewrite parts of it, and the original must stay as it was).
fn read_tokens(data: &Path, scratch: &Path) -> anyhow::Result<Vec<([u8; 32], String)>> {
    copy_dir(&data.join("log"), &scratch.join("log"))?;
    let read = Store::open_any_layout(scratch).and_then(|s| s.tokens());
    let _ = std::fs::remove_dir_all(scratch);
    Ok(read?)
}

fn build(
    fresh: &Path,
    data: &Path,
    bytes: &[Vec<u8>],
    envelopes: &[hydra_events::Envelope],
    tokens: &[([u8; 32], String)],
) -> anyhow::Result<()> {
    let store = Store::open(fresh)?;
    for (b, e) in bytes.chunks(1024).zip(envelopes.chunks(1024)) {
        let records: Vec<Record<'_>> = b
            .iter()
            .zip(e)
            .map(|(b, e)| Record { seq: e.seq, bytes: b, node_id: e.event.node_id() })
            .collect();
        store.append(&records, &[])?;
    }
    let writes: Vec<TokenWrite> = tokens
        .iter()
        .map(|(hash, principal)| TokenWrite::Put { hash: *hash, principal: principal.clone() })
        .collect();
    store.append(&[], &writes)?;
    store.set_layout_version(hydra_migrations::LAYOUT_VERSION)?;
    store.flush()?;
    store.set_watermark(envelopes.len() as u64)?;
    // Everything else in the data dir (the admin token, …) comes along.
    for entry in std::fs::read_dir(data)? {
        let entry = entry?;
        let name = entry.file_name();
        if ["log", store::SEGMENTS_DIR, store::SNAPSHOTS_DIR, "watermark", "watermark.tmp"]
            .iter()
            .any(|n| name == *n)
        {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &fresh.join(&name))?;
        } else {
            std::fs::copy(entry.path(), fresh.join(&name))?;
        }
    }
    Ok(())
}

/// Opens the new store as start-up will (with no snapshot, that checks every record
/// and the whole per-node index).
fn verify<P: Projection>(fresh: &Path, keep: u64) -> anyhow::Result<()> {
    let store = Store::open(fresh)?;
    let recovered = recover::<P>(&store)?;
    if recovered.views.last_seq() != keep {
        bail!("the new store ends at seq {}, not {keep}", recovered.views.last_seq());
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}
