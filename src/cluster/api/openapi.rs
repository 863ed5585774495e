//! hydracluster's OpenAPI document: the paths of its handlers (each documented by the
//! `#[utoipa::path]` on the handler) and the shared ones, finished by
//! `service::openapi::document`. A new route goes into `paths(...)` here; the test
//! `every_served_route_is_documented` fails until it does.

use super::{
    bodies, body, exec, heads, health, import, library, nodes, provision, rekey, sessions, shell, streams,
    uptime,
};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(paths(
    health::health,
    nodes::list,
    import::import,
    nodes::get_one,
    nodes::remove,
    nodes::approve,
    nodes::reject,
    nodes::roles,
    nodes::placement,
    nodes::drain,
    nodes::update_node,
    nodes::update_services,
    nodes::history,
    rekey::reissue,
    uptime::node,
    uptime::history,
    uptime::fleet,
    provision::request,
    streams::stop,
    streams::anomalies,
    bodies::list,
    heads::assign,
    heads::allowed_experiences,
    heads::list,
    heads::enroll,
    heads::config,
    heads::report,
    heads::enroll_qr,
    heads::eligible,
    heads::experiences,
    heads::screenshot,
    heads::logs,
    sessions::list,
    sessions::get_one,
    sessions::logs,
    exec::submit,
    exec::result,
    exec::queue,
    exec::clear,
    exec::cancel,
    shell::open,
    body::heartbeat,
    provision::result,
    rekey::register_key,
    rekey::pending,
    rekey::claim,
    exec::next,
    exec::watch,
    exec::post_result,
    shell::check,
    shell::attach,
    library::rollouts,
    library::rollout,
    library::act,
    library::events,
))]
struct ClusterApi;

/// The document `GET /api/v1/openapi.json` serves.
pub fn document() -> utoipa::openapi::OpenApi {
    crate::service::openapi::document(
        ClusterApi::openapi(),
        "hydracluster",
        "The fleet: nodes (bodies and kiosk heads), their agents, exec, shells, stream sessions, \
         the event log. Errors are `{\"error\": \"…\"}` with the status. See docs/api.md.",
    )
}

/// The `{id}` of `/api/v1/nodes/{id}/…` and `/api/v1/heads/{id}/…`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documentation only: `OnNode` parses the id.
pub struct NodePath {
    /// A node id: `node-` and 1 to 64 lowercase letters, digits or dashes. The example
    /// is the first body of `tests/api/nodes.yaml`, so the API test's examples reach it.
    #[param(example = "node-7f3a9c2e41b05d18", pattern = "^node-[a-z0-9-]{1,64}$")]
    id: String,
}

/// The `{exec}` of the exec paths.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documentation only: the handlers parse the id.
pub struct ExecPath {
    /// A command id, as `POST /api/v1/nodes/{id}/exec` answered it.
    exec: String,
}
