//! hydracluster's OpenAPI document: the paths of its handlers (each documented by the
//! `#[utoipa::path]` on the handler) and the shared ones, finished by
//! `service::openapi::document`. A new route goes into `paths(...)` here; the test
//! `every_served_route_is_documented` fails until it does.

use super::{bodies, body, exec, heads, health, import, library, nodes, provision, sessions, shell, streams};
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
