//! Provisioning endpoints: an admin asks a node to reinstall (the next heartbeat
//! answer carries the flag), and the node (its own token) reports how it went.

use super::nodes::{act, NodeJson};
use super::{Admin, ApiError, ApiJson, AppState, NodeCaller, OnNode};
use crate::cluster::provision::{self, Outcome};
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

const MAX_VERSION: usize = 256;
const MAX_ERROR: usize = 4096;

/// `POST /api/v1/nodes/{id}/reprovision`: answers with the node (its `reprovision`
/// flag set, `provision_state` requested). A node already requested or provisioning
/// answers 409: the first run must end (result or deadline) before another starts.
#[utoipa::path(
    post,
    path = "/api/v1/nodes/{id}/reprovision",
    tag = "provisioning",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The node as it is after the command", body = NodeJson),
    )
)]
pub async fn request(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
) -> Result<Json<NodeJson>, ApiError> {
    act(&state, &admin, &id, provision::request(id.clone())).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = ProvisionResult)]
#[serde(deny_unknown_fields)]
pub struct ResultBody {
    success: bool,
    version: Option<String>,
    error: Option<String>,
}

fn text(what: &str, v: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match v.map(|s| s.trim().to_owned()) {
        Some(s) if s.len() > max || s.chars().any(|c| c.is_control() && c != '\n') => {
            Err(ApiError::bad_request(format!("{what} must be at most {max} printable characters")))
        }
        Some(s) if s.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// `POST /api/v1/body/provision-result` (node token): `{"success":true,"version":…}`
/// or `{"success":false,"error":…}`. From a node that is not provisioning: 409 and
/// nothing recorded.
#[utoipa::path(
    post,
    path = "/api/v1/body/provision-result",
    tag = "agent",
    request_body = ResultBody,
    security(("node" = [])),
    responses(
        (status = 200, description = "Recorded", body = ProvisionRecorded),
    )
)]
pub async fn result(
    State(state): State<AppState>,
    NodeCaller(node): NodeCaller,
    ApiJson(body): ApiJson<ResultBody>,
) -> Result<Json<ProvisionRecorded>, ApiError> {
    let version = text("version", body.version, MAX_VERSION)?;
    let error = text("error", body.error, MAX_ERROR)?;
    let outcome = if body.success {
        Outcome::Installed { version }
    } else {
        let error = error.ok_or_else(|| ApiError::bad_request("error is required when success is false"))?;
        Outcome::Failed { error }
    };
    state.ledger.submit(format!("node:{node}"), provision::result(node.clone(), outcome)).await?;
    let p = state.ledger.read(|v| v.provision.get(&node).cloned()).unwrap_or_default();
    Ok(Json(ProvisionRecorded {
        provision_state: p.state.as_str(),
        version: p.version,
        error: p.error,
        node_id: node,
    }))
}

/// The node's provisioning after its result was recorded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProvisionRecorded {
    #[schema(value_type = String)]
    node_id: hydra_events::NodeId,
    /// `completed` or `failed`.
    provision_state: &'static str,
    /// The version the last successful provisioning installed.
    version: Option<String>,
    /// The error of the last failed provisioning.
    error: Option<String>,
}
