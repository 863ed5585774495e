//! `hydracluster`: its domain (the decisions behind each node command, volatile
//! liveness, the watchdogs), its HTTP API (`api`), its CLI (`cli`), its config and its
//! server. Only `api` and `cli` know HTTP.

pub mod api;
pub mod cli;
pub mod config;
pub mod console;
pub mod exec;
pub mod heads;
pub mod import;
pub mod library_client;
pub mod liveness;
pub mod nodes;
pub mod provision;
pub mod server;
pub mod shell;
pub mod streams;
pub mod waiters;
pub mod watchdogs;

pub use liveness::{Live, Liveness};

/// Views folded from events numbered from 1, for the command functions' tests.
#[cfg(test)]
pub(crate) fn views_with(events: Vec<hydra_events::Event>) -> hydra_projections::ClusterViews {
    hydra_projections::fold(events)
}
