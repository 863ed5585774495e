//! `migrate`: brings a data dir written by an older Hydra to this build's layout, one
//! step at a time (the steps are listed in `hydra_migrations`). Each step is marked in
//! the store before it starts and cleared with the new layout version when it ends,
//! both flushed: a migration cut short (a crash, a kill) is seen by the next `serve`,
//! which refuses, and by the next `migrate`, which runs the step again to finish it
//! (every step is idempotent). A second `migrate` of a current store does nothing.

use crate::store::{Store, StoreError};
use hydra_migrations::{layout_plan, LayoutStep};
use std::path::Path;

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub from: u32,
    pub to: u32,
    /// The layout an interrupted migration was bringing the store to, if one was found.
    pub finished_interrupted: Option<u32>,
    /// The steps run, in order.
    pub steps: Vec<LayoutStep>,
    /// sled's bytes before and after it was compacted, when the events left it.
    pub sled_bytes: Option<(u64, u64)>,
}

/// Migrates the data dir in `dir` (the server must not be running on it).
pub fn migrate(dir: &Path) -> Result<Migrated, StoreError> {
    let store = Store::open_any_layout(dir)?;
    let from = store.layout_version()?;
    let interrupted = store.migrating()?;
    let plan = layout_plan(from)?;
    for step in &plan {
        let to = step.from + 1;
        store.set_migrating(Some(to))?;
        store.flush()?;
        run(&store, step)?;
        store.set_layout_version(to)?;
        store.set_migrating(None)?;
        store.flush()?;
    }
    if plan.is_empty() && interrupted.is_some() {
        // Cut short after its last step wrote the new layout: only the marker is left.
        store.set_migrating(None)?;
        store.flush()?;
    }
    let to = store.layout_version()?;
    // The events left sled: give its space back (this closes the store).
    let sled_bytes = match plan.iter().any(|s| s.from == 2) {
        true => Some(crate::store::compact_sled(store)?),
        false => None,
    };
    Ok(Migrated { from, to, finished_interrupted: interrupted, steps: plan, sled_bytes })
}

fn run(store: &Store, step: &LayoutStep) -> Result<(), StoreError> {
    match step.from {
        // The per-node index that layout 1 added is rebuilt with the events' move to
        // segments (layout 3), whose headers carry it: nothing to do but record it.
        0 => Ok(()),
        1 => {
            store.move_outputs_to_files().map(|moved| tracing::info!(moved, "command outputs moved to files"))
        }
        2 => store
            .move_events_to_segments()
            .map(|moved| tracing::info!(moved, "events moved to segment files")),
        other => unreachable!("hydra_migrations lists no step from layout {other}"),
    }
}
