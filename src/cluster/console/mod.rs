//! The operators' web console: sign-in and sign-out, and the page shells. Every page is
//! the same small HTML document naming its page; `app.js` draws it from the JSON API
//! (the same endpoints, rules and errors as the CLI) and keeps it live from the SSE
//! stream. Nothing here decides anything about the fleet: the pages hold no rule.
//! Assets are compiled into the binary, so the console needs no network but the server.

use super::api::AppState;
use crate::service::browser::{self, Session, SESSION_COOKIE};
use crate::service::extract::{failed_auth, throttled};
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use hydra_core::auth::Principal;
use std::time::Duration;

const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The short-lived cookie that ties the sign-in form to the browser that loaded it
/// (a form posted from another site does not carry it).
const LOGIN_COOKIE: &str = "hydra_login";
const LOGIN_FORM_TTL: Duration = Duration::from_secs(30 * 60);
/// The largest sign-in or sign-out form: a token, a CSRF token and a path.
const MAX_FORM_BYTES: usize = 8 * 1024;

/// The console's pages, in the order of the navigation bar: path, title.
const PAGES: [(&str, &str); 6] = [
    ("/nodes", "Fleet"),
    ("/bodies", "Bodies"),
    ("/heads", "Heads"),
    ("/events", "Events"),
    ("/sessions", "Sessions"),
    ("/rollouts", "Rollouts"),
];

pub fn routes() -> Router<AppState> {
    let router = Router::new()
        .route("/", get(|| async { Redirect::to("/nodes") }))
        // Browsers ask for it on every page; there is none.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/console/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/console/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/nodes/{id}", get(node_page))
        .route("/rollouts/{id}", get(rollout_page));
    // The list pages: the same shell, named after its path.
    PAGES.iter().fold(router, |router, &(path, title)| {
        let name = &path[1..];
        router.route(
            path,
            get(move |s: State<AppState>, b: Browser| async move { shell(&s, &b, name, title, "") }),
        )
    })
}

/// A signed-in browser on a console page; without a live session the page answers
/// with a redirect to `/login`, which comes back here after signing in.
pub struct Browser {
    session: Session,
}

impl FromRequestParts<AppState> for Browser {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match state.browsers.of(&parts.headers, &state.tokens, state.ledger.store()) {
            Some((_, session)) => Ok(Browser { session }),
            None => {
                let here = parts.uri.path_and_query().map_or("/nodes", |p| p.as_str());
                let query = serde_urlencoded::to_string([("next", here)]).unwrap_or_default();
                Err(Redirect::to(&format!("/login?{query}")).into_response())
            }
        }
    }
}

async fn node_page(state: State<AppState>, b: Browser, Path(id): Path<String>) -> Response {
    match hydra_events::NodeId::parse(&id) {
        Ok(id) => shell(&state, &b, "node", &format!("Node {id}"), id.as_str()),
        Err(e) => {
            html(StatusCode::BAD_REQUEST, page("Bad node id", &format!("<p>{}</p>", escape(&e.to_string()))))
        }
    }
}

/// A rollout's page; the id is the library's (`r12`), checked for its shape only.
async fn rollout_page(state: State<AppState>, b: Browser, Path(id): Path<String>) -> Response {
    let fits = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
    if !fits {
        let text = page(
            "Bad rollout id",
            "<p>A rollout id is letters, digits, <code>-</code>, <code>_</code> and <code>.</code>.</p>",
        );
        return html(StatusCode::BAD_REQUEST, text);
    }
    shell(&state, &b, "rollout", &format!("Rollout {id}"), &id)
}

/// A console page: the navigation, the session's role and CSRF token for `app.js`,
/// the log's head (where a page's event list starts), and an empty `main` that the
/// script fills.
fn shell(state: &AppState, b: &Browser, page_name: &str, title: &str, id: &str) -> Response {
    let role = match b.session.principal {
        Principal::Admin { .. } => "admin",
        _ => "observer",
    };
    let nav: String = PAGES
        .iter()
        .map(|(path, name)| {
            // A detail page (`node`, `rollout`) belongs to its list (`/nodes`, `/rollouts`).
            let list = &path[1..];
            let current = if list == page_name || list.strip_suffix('s') == Some(page_name) {
                " aria-current=page"
            } else {
                ""
            };
            format!("<a href={path}{current}>{name}</a>")
        })
        .collect();
    let types = hydra_events::Event::TYPES.join(",");
    let body = format!(
        "<body data-page=\"{page_name}\" data-role={role} data-csrf=\"{csrf}\" data-id=\"{id}\" data-seq={seq} \
data-types=\"{types}\">\
<header><a class=brand href=/nodes>Hydra</a><nav>{nav}</nav>\
<form class=signout method=post action=/logout><input type=hidden name=csrf value=\"{csrf}\">\
<span class=who data-testid=role>{role}</span><button type=submit>Sign out</button></form></header>\
<main id=main><h1>{title}</h1><p class=status id=live-status></p>\
<noscript>The console needs JavaScript.</noscript></main></body>",
        csrf = b.session.csrf,
        seq = state.ledger.committed_seq(),
        id = escape(id),
        title = escape(title),
    );
    html(StatusCode::OK, document(title, &body))
}

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width,initial-scale=1\"><title>{} · Hydra</title>\
<link rel=stylesheet href=/console/app.css><script src=/console/app.js defer></script></head>{body}</html>",
        escape(title)
    )
}

/// A page without the script: sign-in and errors.
fn page(title: &str, content: &str) -> String {
    document(
        title,
        &format!(
            "<body data-page=plain><main class=narrow><h1>{}</h1>{content}</main></body>",
            escape(title)
        ),
    )
}

/// An HTML answer with the console's headers: nothing from elsewhere may run or load,
/// no framing, no caching of pages that show fleet data.
fn html(status: StatusCode, text: String) -> Response {
    let mut response = (status, text).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    let mut response = text.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Revalidated on each load, so a new server version's script is never mixed
    // with an old page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[derive(serde::Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

/// Where to go after signing in: a path of this site, else the fleet page.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.len() <= 512
                && !n.contains(['\\', '\r', '\n'])
                && n != "/login" =>
        {
            n.to_owned()
        }
        _ => "/nodes".to_owned(),
    }
}

async fn login_page(
    query: Result<axum::extract::Query<NextQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let next = safe_next(query.as_ref().ok().and_then(|q| q.next.as_deref()));
    login_form(StatusCode::OK, &next, None)
}

/// The sign-in form with a fresh form token (also set as a cookie), and the reason the
/// last attempt failed, if one did.
fn login_form(status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let form_token = hydra_core::auth::new_token("");
    let error = error.map(|e| format!("<p class=error role=alert>{}</p>", escape(e))).unwrap_or_default();
    let content = format!(
        "<p>Sign in with an admin token (every action) or an observer token (read only).</p>{error}\
<form method=post action=/login><input type=hidden name=csrf value=\"{form_token}\">\
<input type=hidden name=next value=\"{next}\">\
<label for=token>Token</label><input id=token name=token type=password autocomplete=current-password required autofocus>\
<button type=submit>Sign in</button></form>",
        next = escape(next)
    );
    let mut response = html(status, page("Sign in", &content));
    response
        .headers_mut()
        .append(header::SET_COOKIE, browser::set_cookie(LOGIN_COOKIE, &form_token, LOGIN_FORM_TTL));
    response
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

/// The form fields of a small urlencoded body (400 when it is not one).
async fn read_form<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Response> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
        html(
            StatusCode::PAYLOAD_TOO_LARGE,
            page("Form too large", "<p>The form is larger than a sign-in form can be.</p>"),
        )
    })?;
    serde_urlencoded::from_bytes(&bytes).map_err(|e| {
        html(StatusCode::BAD_REQUEST, page("Bad form", &format!("<p>{}</p>", escape(&e.to_string()))))
    })
}

/// `POST /login`: an admin or observer token becomes a session; the browser gets its
/// cookie and goes where it was headed. A wrong token counts as a failed
/// authentication of its address, like a wrong bearer token.
async fn login(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let form: LoginForm = match read_form(body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let next = safe_next(form.next.as_deref());
    if !browser::same_secret(&form.csrf, browser::cookie(&parts.headers, LOGIN_COOKIE)) {
        let why = "This sign-in form expired or came from another site: sign in again from this page.";
        return login_form(StatusCode::FORBIDDEN, &next, Some(why));
    }
    if let Err(e) = throttled(&parts, &state) {
        return login_form(e.status, &next, Some(&e.message));
    }
    let token = form.token.trim();
    let principal = match state.tokens.resolve(state.ledger.store(), token).filter(|_| !token.is_empty()) {
        Some(p @ (Principal::Admin { .. } | Principal::Observer)) => p,
        Some(_) => {
            let why = "This token cannot sign in to the console: use an admin or observer token.";
            return login_form(StatusCode::FORBIDDEN, &next, Some(why));
        }
        None => {
            failed_auth(&parts, &state);
            return login_form(
                StatusCode::UNAUTHORIZED,
                &next,
                Some("That is not a valid admin or observer token."),
            );
        }
    };
    tracing::info!(who = %principal.cause(), "console sign-in");
    let (id, _) = state.browsers.start(principal, token);
    let mut response = Redirect::to(&next).into_response();
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, browser::set_cookie(SESSION_COOKIE, &id, state.config.console_session_idle));
    h.append(header::SET_COOKIE, browser::set_cookie(LOGIN_COOKIE, "", Duration::ZERO));
    response
}

#[derive(serde::Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session (the form carries its CSRF token) and clears the
/// cookie.
async fn logout(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let form: LogoutForm = match read_form(body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    match state.browsers.of(&parts.headers, &state.tokens, state.ledger.store()) {
        Some((id, s)) if browser::csrf_matches(&s, Some(&form.csrf)) => state.browsers.end(&id),
        Some(_) => {
            let text =
                page("Not signed out", "<p>The sign-out form did not carry this session's CSRF token.</p>");
            return html(StatusCode::FORBIDDEN, text);
        }
        None => {}
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, browser::set_cookie(SESSION_COOKIE, "", Duration::ZERO));
    response
}

/// Escapes text for HTML content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_site_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/nodes/node-a")), "/nodes/node-a");
        for bad in ["//evil.example/x", "https://evil.example", "/\\evil", "nodes", "/login"] {
            assert_eq!(safe_next(Some(bad)), "/nodes", "{bad}");
        }
        assert_eq!(safe_next(None), "/nodes");
    }
}
