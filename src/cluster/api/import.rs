//! `POST /api/v1/nodes/import?name=&dry_run=&update=`: a node file (YAML, the body as
//! the file is) brought into the fleet by `cluster::import`, or with `dry_run=true`
//! only checked against it. The answer says what was (or would be) created, updated
//! and left unchanged; a refusal lists every problem (422) or every conflict (409).

use super::nodes::role_rules;
use super::{Admin, ApiError, AppState};
use crate::cluster::import::{self, Import, ImportError, Refusal, Rules};
use crate::service::ApiQuery;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hydra_core::auth::TokenHash;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// The file's name: the events' cause is `import:<name>`.
    name: Option<String>,
    /// Plan only: nothing is written.
    #[serde(default)]
    #[param(required = false)]
    dry_run: bool,
    /// Update the nodes that exist instead of refusing them.
    #[serde(default)]
    #[param(required = false)]
    update: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/import",
    tag = "nodes",
    params(ImportQuery),
    request_body(content = String, content_type = "application/yaml", description = "A node file (docs/import.md)"),
    security(("admin" = []), ("console_session" = [])),
    responses(
        (status = 200, description = "The plan, and what was written unless dry_run", body = crate::cluster::import::Outcome),
        (status = 422, description = "The file has problems: `{error, file, problems, conflicts}`, each problem with its line", body = crate::service::openapi::ErrorBody),
        (status = 409, description = "Nodes differ from the file (without update), or another import is under way: `{error, file, problems, conflicts}`", body = crate::service::openapi::ErrorBody),
    )
)]
pub async fn import(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(q): ApiQuery<ImportQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = q.name.ok_or_else(|| {
        ApiError::bad_request(
            "name is required: the file's name, recorded as the events' cause (import:<name>)",
        )
    })?;
    let file = import::file_name(name)?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|e| ApiError::bad_request(format!("the file is not UTF-8 text: {e}")))?;
    let (roles, tokens) = (role_rules(&state), state.tokens.clone());
    // A large file takes a while to read: off the async workers.
    let parsed = tokio::task::spawn_blocking(move || {
        let reserved = move |h: &TokenHash| tokens.is_configured(h);
        import::parse(&text, &Rules { roles: &roles, reserved: &reserved })
    })
    .await
    .map_err(ApiError::internal)?;
    // One import at a time: a command reads the token store before the commands of
    // its batch have written theirs, so two files giving one token to two new nodes
    // must not be decided in one batch. Refused rather than waited for, so nothing
    // holds a lock across an await.
    if state.importing.swap(true, Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "another import is under way: try again when it ends",
        ));
    }
    let _done = Done(&state.importing);
    let nodes = match parsed {
        Ok(nodes) => nodes,
        Err(problems) => return Ok(refused(Refusal { file, problems, conflicts: Vec::new() })),
    };
    match import::run(&state.ledger, Import { file, nodes, update: q.update, dry_run: q.dry_run }).await {
        Ok(outcome) => Ok(Json(outcome).into_response()),
        Err(ImportError::Refused(r)) => Ok(refused(r)),
        Err(ImportError::Ledger(e)) => Err(e.into()),
        Err(ImportError::Store(e)) => Err(e.into()),
    }
}

/// Clears the flag however the import ends.
struct Done<'a>(&'a AtomicBool);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// 422 with every problem, or 409 with every node that differs: `{"error", "file",
/// "problems", "conflicts"}`.
fn refused(r: Refusal) -> Response {
    let status = if r.problems.is_empty() { StatusCode::CONFLICT } else { StatusCode::UNPROCESSABLE_ENTITY };
    let mut body = serde_json::to_value(&r).unwrap_or_default();
    body["error"] = r.to_string().into();
    (status, Json(body)).into_response()
}
