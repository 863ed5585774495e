//! The callers only hydracluster has: a node's agent (`NodeCaller`) and a kiosk
//! enrolling with the fleet token (`Fleet`).

use super::AppState;
use crate::service::extract::{failed_auth, forbidden, principal};
use crate::service::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use hydra_core::auth::Principal;
use hydra_events::NodeId;
use hydra_projections::NodeStatus;

/// A kiosk enrolling itself with the fleet enrollment token. When no fleet token is
/// configured no token resolves to `Fleet`, so every attempt is a 401.
pub struct Fleet;

impl FromRequestParts<AppState> for Fleet {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match principal(parts, state)? {
            Principal::Fleet => Ok(Fleet),
            _ => Err(forbidden("enroll kiosk heads; use the fleet enrollment token")),
        }
    }
}

/// A node agent, with a token of a node that still exists and is not rejected.
pub struct NodeCaller(pub NodeId);

impl FromRequestParts<AppState> for NodeCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Principal::Node(id) = principal(parts, state)? else {
            return Err(forbidden("act as a node"));
        };
        match state.ledger.read(|v| v.nodes.get(&id).map(|n| n.status)) {
            None => Err(failed_auth(parts, state)),
            Some(NodeStatus::Rejected) => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "this node was rejected by an admin; enroll again"))
            }
            Some(_) => Ok(NodeCaller(id)),
        }
    }
}
