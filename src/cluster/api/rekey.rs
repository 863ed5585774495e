//! Re-issuing node tokens over HTTP (see `cluster::rekey`): the admin's re-issue, the
//! agent's key registration, and the agent's claim of its new token, which needs no
//! token (the old one is revoked) but a signature by the registered key.

use super::callers::NodeCaller;
use super::{Admin, ApiError, ApiJson, AppState, OnNode};
use crate::cluster::rekey;
use crate::service::extract::{failed_auth, node_id, throttled};
use crate::service::ApiQuery;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use hydra_core::auth::{hash_token, new_token, random_hex};
use hydra_core::error::DomainError;
use hydra_core::ledger::LedgerError;
use hydra_events::Event;
use serde::{Deserialize, Serialize};

/// The answer to a re-issue. `token` is there only when the node has no key
/// (`delivery: "admin"`): the admin gives it to the machine.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reissued {
    pub node_id: String,
    pub rekey_id: String,
    /// `agent`: the agent claims its new token itself; `admin`: deliver `token`.
    pub delivery: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /api/v1/nodes/{id}/token`: the node's token stops working now.
#[utoipa::path(
    post,
    path = "/api/v1/nodes/{id}/token",
    tag = "nodes",
    params(super::openapi::NodePath),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The old token is revoked; who delivers the new one", body = Reissued),
    )
)]
pub async fn reissue(
    State(state): State<AppState>,
    OnNode(Admin(admin), id): OnNode<Admin>,
) -> Result<Json<Reissued>, ApiError> {
    let (rekey_id, fallback) = (random_hex(), new_token("hyn_"));
    let recorded = state
        .ledger
        .submit(admin.cause(), rekey::rotate(id.clone(), rekey_id.clone(), hash_token(&fallback)));
    let by_agent =
        recorded.await?.iter().any(|e| matches!(e.event, Event::NodeTokenRotated { claim: true, .. }));
    tracing::info!(node = %id, by_agent, "node token re-issued; the old one is revoked");
    Ok(Json(Reissued {
        node_id: id.to_string(),
        rekey_id,
        delivery: if by_agent { "agent" } else { "admin" },
        token: (!by_agent).then_some(fallback),
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    /// The agent's Ed25519 public key: 64 hex digits.
    public_key: String,
}

/// `PUT /api/v1/body/rekey-key`: the agent registers its public key (once).
#[utoipa::path(
    put,
    path = "/api/v1/body/rekey-key",
    tag = "agent",
    request_body = KeyBody,
    security(("node" = [])),
    responses(
        (status = 204, description = "Registered, or the same key was already"),
    )
)]
pub async fn register_key(
    State(state): State<AppState>,
    NodeCaller(id): NodeCaller,
    ApiJson(body): ApiJson<KeyBody>,
) -> Result<StatusCode, ApiError> {
    state.ledger.submit(format!("node:{id}"), rekey::register_key(id, body.public_key)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PendingQuery {
    node_id: String,
}

/// `GET /api/v1/body/rekey?node_id=…`: the id of the re-issue to sign (404 when none
/// is pending). No token: the node's was revoked; the id alone is worth nothing.
#[utoipa::path(
    get,
    path = "/api/v1/body/rekey",
    tag = "agent",
    params(PendingQuery),
    responses(
        (status = 200, description = "The re-issue to sign", body = Pending),
        (status = 429, description = "Too many refused claims from this address (see Retry-After)", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn pending(
    State(state): State<AppState>,
    parts: Parts,
    ApiQuery(q): ApiQuery<PendingQuery>,
) -> Result<Json<Pending>, ApiError> {
    throttled(&parts, &state)?;
    let id = node_id(&q.node_id)?;
    let rekey_id = state.ledger.read(|v| rekey::pending(v, &id))?;
    Ok(Json(Pending { node_id: id.to_string(), rekey_id }))
}

/// A re-issue waiting for its claim.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Pending {
    pub node_id: String,
    /// What the agent signs, in `hydra-rekey:<node_id>:<rekey_id>`.
    pub rekey_id: String,
}

/// A claim's answer: the node's new token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Claimed {
    pub node_id: String,
    pub token: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    node_id: String,
    rekey_id: String,
    /// The Ed25519 signature (hex) of `hydra-rekey:<node_id>:<rekey_id>`.
    signature: String,
}

/// `POST /api/v1/body/rekey`: a signed claim gets the node's new token, once. A
/// refused claim counts as a failed authentication of the caller's address.
#[utoipa::path(
    post,
    path = "/api/v1/body/rekey",
    tag = "agent",
    request_body = ClaimBody,
    responses(
        (status = 200, description = "The node's new token (shown once)", body = Claimed),
        (status = 403, description = "The claim is refused: no such re-issue pending, or a signature the node's key did not make", body = crate::service::openapi::ErrorBody),
        (status = 429, description = "Too many refused claims from this address (see Retry-After)", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn claim(
    State(state): State<AppState>,
    parts: Parts,
    ApiJson(body): ApiJson<ClaimBody>,
) -> Result<Json<Claimed>, ApiError> {
    throttled(&parts, &state)?;
    let id = node_id(&body.node_id)?;
    let signature = hex::decode(&body.signature)
        .map_err(|_| ApiError::bad_request("signature must be hex (an Ed25519 signature, 128 hex digits)"))?;
    let token = new_token("hyn_");
    let command = rekey::claim(id.clone(), body.rekey_id, signature, hash_token(&token));
    match state.ledger.submit(format!("node:{id}"), command).await {
        Ok(_) => {
            tracing::info!(node = %id, "node claimed its re-issued token");
            Ok(Json(Claimed { node_id: id.to_string(), token }))
        }
        Err(LedgerError::Domain(e @ DomainError::Forbidden(_))) => {
            failed_auth(&parts, &state);
            Err(ApiError::new(StatusCode::FORBIDDEN, e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}
