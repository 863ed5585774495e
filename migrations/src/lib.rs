//! The store-layout steps: which steps bring a data dir written by an older Hydra up
//! to this build's layout. (Old event schemas need no step: records are never
//! rewritten, and the codec upcasts them as it reads, see `hydra_events::decode`.)

/// The layout version of the store written by this build. Version 1: trees
/// `events`, `node_index`, `snapshots`, `tokens` and `meta`.
pub const LAYOUT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("the store has layout version {found}, newer than this build ({supported}): upgrade Hydra")]
    LayoutTooNew { found: u32, supported: u32 },
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
    const STEPS: [LayoutStep; 1] =
        [LayoutStep { from: 0, what: "record the layout version and rebuild the node index" }];
    Ok(STEPS.iter().copied().filter(|s| s.from >= found).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_gets_every_step_and_a_current_one_none() {
        assert_eq!(layout_plan(0).unwrap().len(), 1);
        assert!(layout_plan(LAYOUT_VERSION).unwrap().is_empty());
    }

    #[test]
    fn a_store_from_a_newer_build_is_refused() {
        assert!(matches!(layout_plan(LAYOUT_VERSION + 1), Err(MigrationError::LayoutTooNew { .. })));
    }
}
