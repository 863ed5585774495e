//! Hydra's programs: the shared service kit, hydracluster (`cluster`), ExperienceLibrary
//! (`library`), the agent `hydranode` (`agent`) and `hydrapipeline` (`pipeline`). The
//! store and the ledger live in the `hydra-core` crate, which knows no HTTP.

pub mod agent;
pub mod cluster;
pub mod library;
pub mod logging;
pub mod pipeline;
pub mod service;
