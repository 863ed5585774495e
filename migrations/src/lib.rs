//! The store-layout steps: which steps bring a data dir written by an older Hydra up
//! to this build's layout. (Old event schemas need no step: records are never
//! rewritten, and the codec upcasts them as it reads, see `hydra_events::decode`.)

/// The layout version of the store written by this build. Version 1: trees
/// `events`, `node_index`, `snapshots`, `tokens` and `meta` (and, from schema 3,
/// command outputs with their bytes in the `outputs` tree). Version 2: outputs in a
/// file each under `<data>/outputs`, their entries in the `output_entries` tree.
/// Version 3: the events in append-only segment files under `<data>/events`, each
/// record's header naming its node (the per-node index); sled's `events` and
/// `node_index` trees are gone.
pub const LAYOUT_VERSION: u32 = 3;

/// Why a data dir cannot be served as it is. The messages say what is wrong; the
/// program that refuses adds the command to run (`<program> migrate --data DIR`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "the data dir has layout version {found}, newer than this build knows ({supported}): upgrade Hydra"
    )]
    LayoutTooNew { found: u32, supported: u32 },
    #[error(
        "the data dir has layout version {found}, older than this build serves ({supported}): migrate it"
    )]
    LayoutTooOld { found: u32, supported: u32 },
    #[error("a migration of the data dir to layout version {to} was interrupted: run the migration again to finish it")]
    Interrupted { to: u32 },
}

/// Whether a data dir at layout `found` (with a migration to `migrating` under way, if
/// any) can be served as it is. A store without a layout record and without events is
/// new: it is given this build's layout when it is opened.
pub fn servable(found: u32, migrating: Option<u32>, has_events: bool) -> Result<(), MigrationError> {
    if let Some(to) = migrating {
        return Err(MigrationError::Interrupted { to });
    }
    if found > LAYOUT_VERSION {
        return Err(MigrationError::LayoutTooNew { found, supported: LAYOUT_VERSION });
    }
    if found < LAYOUT_VERSION && has_events {
        return Err(MigrationError::LayoutTooOld { found, supported: LAYOUT_VERSION });
    }
    Ok(())
}

/// One step that brings the store layout from `from` to `from + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutStep {
    pub from: u32,
    pub what: &'static str,
}

/// The steps that bring a store at layout `found` (0 for a store with no layout
/// record: a new or a pre-release one) to `LAYOUT_VERSION`, in order. Empty when it is
/// current; running the plan again after it finished is a no-op, which makes
/// `migrate` idempotent.
pub fn layout_plan(found: u32) -> Result<Vec<LayoutStep>, MigrationError> {
    if found > LAYOUT_VERSION {
        return Err(MigrationError::LayoutTooNew { found, supported: LAYOUT_VERSION });
    }
    const STEPS: [LayoutStep; 3] = [
        LayoutStep { from: 0, what: "record the layout version" },
        LayoutStep { from: 1, what: "move command outputs out of the log's file into a file each" },
        LayoutStep { from: 2, what: "move the events out of sled into segment files (with the node index)" },
    ];
    Ok(STEPS.iter().copied().filter(|s| s.from >= found).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_gets_every_step_and_a_current_one_none() {
        assert_eq!(layout_plan(0).unwrap().len(), 3);
        assert_eq!(layout_plan(2).unwrap().len(), 1);
        assert!(layout_plan(LAYOUT_VERSION).unwrap().is_empty());
    }

    #[test]
    fn a_store_from_a_newer_build_is_refused() {
        assert!(matches!(layout_plan(LAYOUT_VERSION + 1), Err(MigrationError::LayoutTooNew { .. })));
        assert!(matches!(servable(LAYOUT_VERSION + 1, None, true), Err(MigrationError::LayoutTooNew { .. })));
    }

    #[test]
    fn an_older_or_half_migrated_store_is_not_served_but_a_new_one_is() {
        assert!(matches!(servable(0, None, true), Err(MigrationError::LayoutTooOld { found: 0, .. })));
        assert!(matches!(servable(0, Some(1), true), Err(MigrationError::Interrupted { to: 1 })));
        assert_eq!(servable(0, None, false), Ok(()));
        assert_eq!(servable(LAYOUT_VERSION, None, true), Ok(()));
    }
}
