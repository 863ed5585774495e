//! Hydra's integration tests, as one test binary (one link of the whole crate instead
//! of one per file): a module per area, and the shared harness in `common`.

mod common;

mod admins;
mod agent;
mod auth_abuse;
mod backup;
mod bodies;
mod cli_exec;
mod connections;
mod console;
mod damaged_log;
mod disk_full;
mod durability;
mod exec;
mod formats;
mod heads;
mod heads_agent;
mod hostile_agents;
mod import;
mod library_api;
mod lock_storm;
mod metrics;
mod migrate;
mod nodes;
mod pipeline;
mod provision;
mod provision_agent;
mod rekey;
mod rollouts;
mod sessions;
mod shell;
mod sse;
mod streams;
mod uptime;
