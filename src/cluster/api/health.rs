//! `GET /api/v1/health`: the public fleet summary (`/readyz` is the shared one).

use super::AppState;
use axum::extract::State;
use axum::Json;
use hydra_projections::NodeStatus;
use serde::Serialize;
use utoipa::ToSchema;

/// `GET /api/v1/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the server answers.
    status: &'static str,
    service: &'static str,
    version: &'static str,
    last_event_id: u64,
    /// False while the log refuses writes (disk full); `/readyz` says why.
    writable: bool,
    nodes: NodeCounts,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeCounts {
    total: usize,
    online: usize,
    offline: usize,
    pending: usize,
    approved: usize,
    rejected: usize,
    /// Heartbeats whose changes waited for their node's event budget.
    heartbeat_changes_coalesced: u64,
}

/// The fleet in numbers, and whether the log takes writes.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "health",
    responses(
        (status = 200, description = "Counts of the fleet and the last event id", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    let (total, online, pending, approved, rejected, last_seq) = state.ledger.read(|v| {
        let count = |s: NodeStatus| v.nodes.values().filter(|n| n.status == s).count();
        (
            v.nodes.len(),
            v.nodes.values().filter(|n| n.online).count(),
            count(NodeStatus::Pending),
            count(NodeStatus::Approved),
            count(NodeStatus::Rejected),
            v.last_seq,
        )
    });
    Json(Health {
        status: "ok",
        service: "hydracluster",
        version: env!("CARGO_PKG_VERSION"),
        last_event_id: last_seq,
        writable: state.ledger.write_status().refusal.is_none(),
        nodes: NodeCounts {
            total,
            online,
            offline: total - online,
            pending,
            approved,
            rejected,
            heartbeat_changes_coalesced: state.liveness.coalesced_total(),
        },
    })
}
