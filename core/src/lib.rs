//! Hydra's core, shared by both services: the store, the ledger that appends to it
//! and keeps the views, audit, repair, migrate, auth tokens and the domain's errors. It knows
//! no HTTP: the compiler checks that, since this crate does not depend on axum.

pub mod audit;
pub mod auth;
pub mod backup;
pub mod envelope;
pub mod error;
pub mod ledger;
pub mod metrics;
pub mod migrate;
pub mod names;
pub mod repair;
pub mod store;
