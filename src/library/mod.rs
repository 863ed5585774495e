//! `hydraexperiencelibrary`: experiences and their builds, promotion through
//! environments, and the rollouts that reprovision a venue's bodies, then its heads.
//! It keeps its own event log with the same store and ledger as hydracluster.

pub mod api;
pub mod cli;
pub mod cluster_client;
pub mod commands;
pub mod config;
pub mod driver;
pub mod metrics;
pub mod release;
pub mod server;
pub mod state;
