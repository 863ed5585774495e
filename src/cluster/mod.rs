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
pub mod metrics;
pub mod nodes;
pub mod provision;
pub mod rekey;
pub mod server;
pub mod sessions;
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

/// The events of a kiosk head `head` registered at `d`/`v`, online and pinned to `body`,
/// for the command functions' tests.
#[cfg(test)]
pub(crate) fn online_head_pinned_to(
    head: &hydra_events::NodeId,
    body: &hydra_events::NodeId,
) -> Vec<hydra_events::Event> {
    use hydra_events::Event;
    vec![
        Event::HeadRegistered {
            node_id: head.clone(),
            name: "h".into(),
            district: "d".into(),
            venue: "v".into(),
        },
        Event::NodeOnline { node_id: head.clone() },
        Event::HeadAssigned { node_id: head.clone(), body_id: Some(body.clone()), app_id: None },
    ]
}
