//! The OpenAPI document of a service (`GET /api/v1/openapi.json`): what both share (the
//! error shape, the auth schemes, the error answers an operation can give, the shared
//! routes' paths) and the route that serves it. Each route's own documentation is the
//! `#[utoipa::path]` on its handler; `docs/api.md` says how to add one.

use super::ServiceState;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{OpenApi, ToSchema};

/// Every error answer: a status and `{"error": "what was wrong"}` (`ApiError`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What was wrong, for a person: names the field, the id or the limit.
    pub error: String,
}

/// The security scheme names the handlers' `security(...)` use.
pub const ADMIN: &str = "admin";
pub const OBSERVER: &str = "observer";
pub const NODE: &str = "node";
pub const FLEET: &str = "fleet";
pub const CONSOLE: &str = "console_session";

/// What the shared routes document (`src/service/`): health, events, backup, this
/// document. Each service merges it into its own.
#[derive(OpenApi)]
#[openapi(
    paths(
        super::health::readyz,
        super::events::stream,
        super::events::log,
        super::events::digest,
        super::backup::stream,
        super::metrics::scrape,
        openapi_json,
    ),
    components(schemas(ErrorBody))
)]
pub struct Shared;

/// The answers every operation can give besides its own, by what it takes: an auth
/// failure where it needs a caller, a body's errors where it takes one, a refused write
/// where it changes something. All carry the one error shape.
fn error_answers(method: &HttpMethod, op: &Operation) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![
        ("400", "Bad input: a path id, a query parameter or a body field, named in the message"),
        ("404", "No such resource (or no such endpoint)"),
        ("503", "The event log is unavailable, damaged or read-only (disk full); retry later"),
    ];
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    if secured {
        out.push(("401", "Missing or invalid token, or an ended console session"));
        out.push((
            "403",
            "The token may not do this (wrong kind of caller), or a console request lacks its CSRF token",
        ));
        out.push(("429", "Too many failed authentications from this address (see Retry-After)"));
    }
    if !matches!(method, HttpMethod::Get | HttpMethod::Head) {
        out.push(("409", "Conflicts with the current state (the message says which)"));
    }
    if op.request_body.is_some() {
        out.push(("413", "Request body too large"));
        out.push(("415", "Expected a JSON body with Content-Type: application/json"));
        out.push(("422", "The JSON body has the wrong shape (the message names the field)"));
    }
    out
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build(),
        )
        .build()
}

/// The finished document of a service: its own paths merged with the shared ones, the
/// auth schemes, and each operation's error answers (those it does not document
/// itself) pointing at the one error schema.
pub fn document(
    mut doc: utoipa::openapi::OpenApi,
    title: &str,
    description: &str,
) -> utoipa::openapi::OpenApi {
    doc.merge(Shared::openapi());
    // Both serve `/readyz` as `/api/v1/readyz`, where load balancers look for it.
    if let Some(item) = doc.paths.paths.get("/api/v1/readyz").cloned() {
        doc.paths.paths.insert("/readyz".to_owned(), item);
    }
    doc.info.title = title.to_owned();
    doc.info.description = Some(description.to_owned());
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.info.license = None;
    doc.info.contact = None;
    let components = doc.components.get_or_insert_with(Default::default);
    let bearer = |what: &str| {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(what.to_owned());
        SecurityScheme::Http(http)
    };
    components.add_security_scheme(ADMIN, bearer("An admin token: reads and changes everything"));
    components
        .add_security_scheme(OBSERVER, bearer("The observer token: reads views and events, changes nothing"));
    components.add_security_scheme(NODE, bearer("A node's own token, given at enrollment (its agent)"));
    components
        .add_security_scheme(FLEET, bearer("The fleet enrollment token (a kiosk head enrolling itself)"));
    components.add_security_scheme(
        CONSOLE,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            super::browser::SESSION_COOKIE,
            "The web console's session cookie (sign in at /login); a changing request also sends the \
             session's CSRF token in x-hydra-csrf",
        ))),
    );
    for item in doc.paths.paths.values_mut() {
        let ops = [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Delete, &mut item.delete),
            (HttpMethod::Patch, &mut item.patch),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            for (status, description) in error_answers(&method, op) {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| RefOr::T(error_response(description)));
            }
        }
    }
    doc
}

/// The document as served: JSON rendered once, when the router is built.
pub fn route<S: ServiceState>(doc: &utoipa::openapi::OpenApi) -> axum::routing::MethodRouter<S> {
    let json: std::sync::Arc<str> = doc.to_json().expect("the OpenAPI document renders as JSON").into();
    axum::routing::get(move || {
        let json = json.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response() }
    })
}

/// This document. Readable without a token: it describes the API and holds no data.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this service", content_type = "application/json", body = Object))
)]
#[allow(dead_code)] // Documentation only: `route` serves the document.
fn openapi_json() {}

/// The checks each service's test runs on its router and document: the document is
/// OpenAPI 3.x, names exactly the routes the router serves (every `.route("…")` in the
/// router's source, probed with each method), and its 4xx answers use the error schema.
#[cfg(test)]
pub(crate) mod testing {
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use serde_json::Value;
    use std::collections::BTreeSet;
    use tower::ServiceExt;

    /// The paths the router's source registers with `.route("PATH", …)`.
    fn routes_in(source: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for piece in source.split(".route(").skip(1) {
            let piece = piece.trim_start();
            if let Some(rest) = piece.strip_prefix('"') {
                out.insert(rest[..rest.find('"').expect("closing quote")].to_owned());
            }
        }
        out
    }

    async fn call(router: &axum::Router, method: &Method, uri: &str) -> (StatusCode, Value) {
        let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// `not_api`: the source's routes that are pages for a browser, not API.
    pub(crate) async fn check(router: axum::Router, source: &str, not_api: &[&str]) -> Value {
        let (status, doc) = call(&router, &Method::GET, "/api/v1/openapi.json").await;
        assert_eq!(status, StatusCode::OK, "the document is readable without a token");
        let version = doc["openapi"].as_str().expect("an openapi field");
        assert!(version.starts_with("3."), "OpenAPI 3.x, not {version}");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        let documented: BTreeSet<String> = doc["paths"].as_object().expect("paths").keys().cloned().collect();
        let in_source = routes_in(source);
        assert!(in_source.len() > 10, "the router's routes were found in its source: {in_source:?}");
        let all: BTreeSet<&String> = documented.iter().chain(&in_source).collect();
        let methods = [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH];
        let mut wrong = Vec::new();
        for path in all.into_iter().filter(|p| !not_api.contains(&p.as_str())) {
            // Any value for a path parameter reaches the handler: a served route then
            // answers something other than the router's own 404 and 405.
            let uri: String = path
                .split('/')
                .map(|s| if s.starts_with('{') { "probe" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            for method in &methods {
                let (status, body) = call(&router, method, &uri).await;
                let served = status != StatusCode::METHOD_NOT_ALLOWED
                    && !(status == StatusCode::NOT_FOUND && body["error"] == "no such endpoint");
                let described = doc["paths"][path.as_str()][method.as_str().to_lowercase()].is_object();
                if served != described {
                    wrong.push(format!("{method} {path}: served {served}, documented {described}"));
                }
            }
        }
        assert!(wrong.is_empty(), "the document and the router disagree:\n{}", wrong.join("\n"));
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().expect("responses");
                for code in ["400", "404"] {
                    assert!(responses.contains_key(code), "{method} {path} documents no {code}");
                }
                for (code, response) in responses.iter().filter(|(c, _)| c.starts_with('4')) {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/Error", "{method} {path} {code}");
                }
            }
        }
        assert_eq!(doc["components"]["schemas"]["Error"]["required"], serde_json::json!(["error"]));
        doc
    }
}
