//! Request extractors: who is calling (admin, reader, node) and JSON bodies with
//! clear errors. Each looks up what it needs synchronously and holds nothing when it
//! returns, so no lock ever spans the handler that follows.

use super::{ApiError, AppState, ServiceState};
use crate::auth::Principal;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use hydra_events::NodeId;
use hydra_projections::NodeStatus;
use serde::de::DeserializeOwned;

fn unauthorized() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid token")
}

fn forbidden(what: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, format!("this token may not {what}"))
}

/// The principal behind the `Authorization: Bearer` header (401 when there is none).
pub(super) fn principal<S: ServiceState>(parts: &Parts, state: &S) -> Result<Principal, ApiError> {
    let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(unauthorized)?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(unauthorized)?;
    state.tokens().resolve(state.store(), token).ok_or_else(unauthorized)
}

/// An admin: may read and change everything.
pub struct Admin(pub Principal);

impl<S: ServiceState> FromRequestParts<S> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match principal(parts, state)? {
            p @ Principal::Admin { .. } => Ok(Admin(p)),
            _ => Err(forbidden("use admin endpoints")),
        }
    }
}

/// An admin or an observer: may read views and events, change nothing.
pub struct Reader(pub Principal);

impl<S: ServiceState> FromRequestParts<S> for Reader {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match principal(parts, state)? {
            p @ (Principal::Admin { .. } | Principal::Observer) => Ok(Reader(p)),
            _ => Err(forbidden("read fleet views")),
        }
    }
}

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
            None => Err(unauthorized()),
            Some(NodeStatus::Rejected) => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "this node was rejected by an admin; enroll again"))
            }
            Some(_) => Ok(NodeCaller(id)),
        }
    }
}

/// A JSON body whose errors say what was wrong: 400 for malformed JSON, 422 for the
/// wrong shape, 413 for too large, 415 for a missing content type.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let message = match &rejection {
        JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => rejection.body_text(),
        JsonRejection::MissingJsonContentType(_) => {
            "expected a JSON body with Content-Type: application/json".into()
        }
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "request body too large".into(),
        _ => rejection.body_text(),
    };
    ApiError::new(status, message)
}

/// Parses a node id from the path, with a 400 that says what a node id looks like.
pub(super) fn node_id(raw: &str) -> Result<NodeId, ApiError> {
    NodeId::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}
