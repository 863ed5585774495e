//! The library's rollouts seen through hydracluster, for the console's rollout pages:
//! reads for admins and observers, the rollout actions for admins, and the library's
//! event stream passed through, all with the library token of `experienceLibrary` in
//! the config. hydracluster decides who may ask; the library decides the rest, and its
//! answers (errors included) are passed on as they are.

use super::{Admin, ApiError, AppState, Reader};
use crate::cluster::library_client;
use crate::service::client::{seg, Client};
use crate::service::ApiPath;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use reqwest::Method;

/// What the rollout pages may ask the library to do.
const ACTIONS: [&str; 5] = ["pause", "resume", "cancel", "rollback", "retry"];

/// The configured library, or the 503 that says what to set.
pub fn configured(state: &AppState) -> Result<Client, ApiError> {
    let link = &state.config.experience_library;
    let base = link.url.as_deref().filter(|u| !u.is_empty()).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no ExperienceLibrary is configured: set experienceLibrary.url in the config",
        )
    })?;
    let token = match (&link.token, &link.token_file) {
        (Some(t), _) => Some(t.0.clone()),
        // A few bytes from a local file: read in place rather than on another thread.
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("cannot read experienceLibrary.token_file {}: {e}", file.display()),
                    )
                })?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    Ok(library_client::library(base, token.as_deref(), link.timeout))
}

/// The library's answer to one call, passed on with its status and JSON body.
async fn forward(
    state: &AppState,
    method: Method,
    path: &str,
    query: Option<&str>,
    body: Option<Bytes>,
) -> Result<Response, ApiError> {
    let library = configured(state)?;
    let path = match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let answer = match body {
        Some(b) => library.call_raw(method, &path, &[], "application/json", b.to_vec()).await,
        None => library.call(method, &path, &[], None).await,
    }
    .map_err(|u| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("ExperienceLibrary at {} is unreachable: {}", u.url, u.reason),
        )
    })?;
    if answer.status == StatusCode::UNAUTHORIZED || answer.status == StatusCode::FORBIDDEN {
        // The library refused hydracluster's own token: a setting to fix, not the caller's fault.
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "ExperienceLibrary refused hydracluster's token ({}): set experienceLibrary.token to a library \
                 token that may do this",
                answer.status.as_u16()
            ),
        ));
    }
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// `GET /api/v1/library/rollouts` (`?state=&experience=` as the library takes them).
#[utoipa::path(
    get,
    path = "/api/v1/library/rollouts",
    tag = "library",
    params(("state" = Option<String>, Query), ("experience" = Option<String>, Query)),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "ExperienceLibrary's rollouts, as it answers", body = [crate::library::api::RolloutJson]),
        (status = 502, description = "ExperienceLibrary did not answer well", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn rollouts(
    State(state): State<AppState>,
    _: Reader,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    forward(&state, Method::GET, "/api/v1/rollouts", q.as_deref(), None).await
}

/// `GET /api/v1/library/rollouts/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/library/rollouts/{id}",
    tag = "library",
    params(("id" = String, Path, description = "A rollout id (r7)")),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The rollout, as ExperienceLibrary answers", body = crate::library::api::RolloutJson),
        (status = 502, description = "ExperienceLibrary did not answer well", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn rollout(
    State(state): State<AppState>,
    _: Reader,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    forward(&state, Method::GET, &format!("/api/v1/rollouts/{}", seg(&id)), None, None).await
}

/// `POST /api/v1/library/rollouts/{id}/{action}`: pause, resume, cancel, rollback or
/// retry, with the body the library's action takes.
#[utoipa::path(
    post,
    path = "/api/v1/library/rollouts/{id}/{action}",
    tag = "library",
    params(("id" = String, Path, description = "A rollout id (r7)"), ("action" = String, Path, description = "pause, resume, cancel, rollback or retry")),
    request_body(content = Object, description = "For rollback and retry: policy overrides (optional)"),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The rollout after a pause, resume or cancel", body = crate::library::api::RolloutJson),
        (status = 201, description = "A rollback or retry started", body = crate::library::api::Redone),
        (status = 502, description = "ExperienceLibrary did not answer well", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn act(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath((id, action)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !ACTIONS.contains(&action.as_str()) {
        return Err(ApiError::not_found(format!(
            "no rollout action {action:?}: use one of {}",
            ACTIONS.join(", ")
        )));
    }
    tracing::info!(who = %admin.cause(), rollout = %id, action = %action, "rollout action through the library");
    let body = if body.is_empty() { Bytes::from_static(b"{}") } else { body };
    forward(&state, Method::POST, &format!("/api/v1/rollouts/{}/{action}", seg(&id)), None, Some(body)).await
}

/// `GET /api/v1/library/events`: the library's SSE stream, passed through as it comes
/// (`?types=`, and the resume point: `Last-Event-ID` or `?since=`). It ends when this
/// server stops, like its own stream.
#[utoipa::path(
    get,
    path = "/api/v1/library/events",
    tag = "library",
    params(("since" = Option<u64>, Query), ("types" = Option<String>, Query)),
    security(("admin" = []), ("observer" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "ExperienceLibrary's event stream, relayed", content_type = "text/event-stream", body = String),
        (status = 502, description = "ExperienceLibrary did not answer well", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    _: Reader,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let library = configured(&state)?;
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("bad query: {e}")))?;
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        pairs.retain(|(k, _)| k != "since");
        pairs.push(("since".into(), last.to_owned()));
    }
    let query = serde_urlencoded::to_string(&pairs).map_err(ApiError::internal)?;
    let stream = library.stream(&format!("/api/v1/events?{query}")).await.map_err(|e| {
        ApiError::new(StatusCode::BAD_GATEWAY, format!("ExperienceLibrary's event stream: {e}"))
    })?;
    let mut stopping = state.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    // Where the library resumed, so the page can tell (as from this server's stream).
    let resumed = stream.headers().get("x-hydra-resumed-from").cloned();
    let body = stream.bytes_stream().take_until(Box::pin(stopped));
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    if let Some(v) = resumed {
        h.insert("x-hydra-resumed-from", v);
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
