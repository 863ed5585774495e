//! Hydra's runtime: the store, the ledger, the API, auth, watchdogs and the CLIs of
//! the programs built from this package.

pub mod agent;
pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod ledger;
pub mod library;
pub mod library_client;
pub mod names;
pub mod pipeline;
pub mod repair;
pub mod server;
pub mod sse_client;
pub mod store;
