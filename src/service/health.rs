//! `/readyz`: the components of a service (its log, its disk, its connections and
//! subscribers), the same for both services.

use super::ServiceState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::json;
use std::sync::atomic::Ordering;

/// Ready when the store answers, the views have caught up with the log and the log
/// takes writes. The committed seq is read first: the writer stores it only after the
/// event is durable and applied, so the store and the views are never behind it, and
/// readiness does not flap under normal write load.
#[utoipa::path(
    get,
    path = "/api/v1/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the same shape with `ready` false and the failing component's detail", body = Readiness),
    )
)]
pub async fn readyz<S: ServiceState>(State(state): State<S>) -> (StatusCode, Json<Readiness>) {
    let committed = state.committed_seq();
    let applied = state.applied_seq();
    let store = state.store().clone();
    let stored = tokio::task::spawn_blocking(move || store.last_seq()).await;
    let (store_ok, store_detail) = match stored {
        Ok(Ok(seq)) => (seq >= committed, format!("last stored event {seq}")),
        Ok(Err(e)) => (false, e.to_string()),
        Err(e) => (false, e.to_string()),
    };
    let views_ok = applied >= committed;
    let writes = state.ledger().write_status();
    let disk_ok = writes.refusal.is_none();
    let ok = store_ok && views_ok && disk_ok;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut components = serde_json::Map::new();
    let common = [
        ("store", json!({ "ok": store_ok, "detail": store_detail })),
        ("ledger", json!({ "ok": disk_ok, "committed_seq": committed })),
        (
            "disk",
            json!({
                "ok": disk_ok,
                "detail": writes.refusal.as_deref().unwrap_or("the log takes writes"),
                "free_bytes": writes.free_bytes,
                "min_free_bytes": writes.min_free_bytes,
                "refused_writes": writes.refused,
            }),
        ),
        ("projections", json!({ "ok": views_ok, "applied_seq": applied })),
        (
            "sse",
            json!({
                "ok": true,
                "subscribers": state.sse().subscribers.load(Ordering::Relaxed),
                "lag_recoveries": state.sse().lag_recoveries.load(Ordering::Relaxed),
            }),
        ),
        ("connections", state.connections().json()),
    ];
    components.extend(common.into_iter().map(|(name, c)| (name.to_owned(), c)));
    components.extend(state.components());
    (status, Json(Readiness { ready: ok, components }))
}

/// A service's readiness and what it is made of.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Every component is ok.
    pub ready: bool,
    /// Each component by name (`store`, `ledger`, `disk`, `projections`, `sse`,
    /// `connections` and the service's own): an object with its `ok` and its figures.
    #[schema(value_type = Object)]
    pub components: serde_json::Map<String, serde_json::Value>,
}
