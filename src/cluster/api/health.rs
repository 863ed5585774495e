//! `GET /api/v1/health`: the public fleet summary (`/readyz` is the shared one).

use super::AppState;
use axum::extract::State;
use axum::Json;
use hydra_projections::NodeStatus;

/// The fleet in numbers, and whether the log takes writes.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "health",
    responses(
        (status = 200, description = "Counts of the fleet and the last event id", body = Object),
    )
)]
pub async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
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
    Json(serde_json::json!({
        "status": "ok",
        "service": "hydracluster",
        "version": env!("CARGO_PKG_VERSION"),
        "last_event_id": last_seq,
        // False while the log refuses writes (disk full); `/readyz` says why.
        "writable": state.ledger.write_status().refusal.is_none(),
        "nodes": {
            "total": total,
            "online": online,
            "offline": total - online,
            "pending": pending,
            "approved": approved,
            "rejected": rejected,
            // Heartbeats whose changes waited for their node's event budget.
            "heartbeat_changes_coalesced": state.liveness.coalesced_total(),
        },
    }))
}
