//! `/readyz`: the components of a service (its log, its disk, its connections and
//! subscribers), the same for both services.

use super::ServiceState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
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
        (status = 200, description = "Ready: `{\"ready\": true, \"components\": {…}}`", body = Object),
        (status = 503, description = "Not ready: the same shape with `ready` false and the failing component's detail", body = Object),
    )
)]
pub async fn readyz<S: ServiceState>(State(state): State<S>) -> (StatusCode, Json<serde_json::Value>) {
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
    let mut answer = serde_json::json!({
            "ready": ok,
            "components": {
                "store": { "ok": store_ok, "detail": store_detail },
                "ledger": { "ok": disk_ok, "committed_seq": committed },
                "disk": {
                    "ok": disk_ok,
                    "detail": writes.refusal.as_deref().unwrap_or("the log takes writes"),
                    "free_bytes": writes.free_bytes,
                    "min_free_bytes": writes.min_free_bytes,
                    "refused_writes": writes.refused,
                },
                "projections": { "ok": views_ok, "applied_seq": applied },
                "sse": {
                    "ok": true,
                    "subscribers": state.sse().subscribers.load(Ordering::Relaxed),
                    "lag_recoveries": state.sse().lag_recoveries.load(Ordering::Relaxed),
                },
                "connections": state.connections().json(),
            },
    });
    answer["components"].as_object_mut().expect("an object").extend(state.components());
    (status, Json(answer))
}
