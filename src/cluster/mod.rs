//! `hydracluster`'s domain: the decisions behind each node command, volatile liveness
//! and the watchdogs. Nothing here knows HTTP.

pub mod exec;
pub mod heads;
pub mod liveness;
pub mod nodes;
pub mod shell;
pub mod waiters;
pub mod watchdogs;

pub use liveness::{Live, Liveness};
