//! The console's sign-in, seen from HTTP: pages send a browser without a session to
//! `/login`, a token becomes an `HttpOnly`, `SameSite=Strict` session cookie, that
//! cookie works on the API like the token, every change from it needs the session's
//! CSRF token, an observer's session still cannot act, and sign-out ends it.

use crate::common::*;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::Method;
use serde_json::json;

/// A browser without a cookie jar: the test carries the cookies itself.
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The value of cookie `name` among a response's `Set-Cookie` headers, with its
/// attributes.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn value_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

/// `value="…"` of the form field `name` in a page.
fn field(html: &str, name: &str) -> String {
    let at =
        html.find(&format!("name={name} value=\"")).unwrap_or_else(|| panic!("no field {name} in {html}"));
    let rest = &html[at + name.len() + 13..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Loads the sign-in form (its form token, and the cookie that must come back with it).
async fn login_form(s: &TestServer, http: &reqwest::Client, query: &str) -> (String, String, String) {
    let r = http.get(format!("{}/login{query}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = value_of(&set_cookie(&r, "hydra_login").expect("the form sets its cookie"));
    let html = r.text().await.unwrap();
    (field(&html, "csrf"), cookie, field(&html, "next"))
}

/// Signs in with `token`: the response to the form's POST.
async fn sign_in(s: &TestServer, http: &reqwest::Client, token: &str) -> reqwest::Response {
    let (csrf, cookie, next) = login_form(s, http, "").await;
    http.post(format!("{}/login", s.url))
        .header(COOKIE, format!("hydra_login={cookie}"))
        .form(&[("token", token), ("csrf", &csrf), ("next", &next)])
        .send()
        .await
        .unwrap()
}

/// A signed-in session: its cookie header and its CSRF token (from a page).
pub(crate) async fn session(s: &TestServer, http: &reqwest::Client, token: &str) -> (String, String) {
    let r = sign_in(s, http, token).await;
    assert_eq!(r.status(), 303);
    let cookie = format!("hydra_session={}", value_of(&set_cookie(&r, "hydra_session").unwrap()));
    let page = http.get(format!("{}/nodes", s.url)).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let at = html.find("data-csrf=\"").unwrap() + 11;
    (cookie, html[at..at + html[at..].find('"').unwrap()].to_owned())
}

async fn as_browser(
    s: &TestServer,
    http: &reqwest::Client,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = http
        .request(method, format!("{}{path}", s.url))
        .header(COOKIE, cookie)
        .json(&json!({"draining": true}));
    if let Some(csrf) = csrf {
        req = req.header("x-hydra-csrf", csrf);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_page_without_a_session_goes_to_sign_in_and_comes_back() {
    let s = spawn_app().await;
    let http = browser();
    let r = http.get(format!("{}/nodes/node-abc?x=1", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/login?next=%2Fnodes%2Fnode-abc%3Fx%3D1");
    let (_, _, next) = login_form(&s, &http, "?next=/nodes/node-abc%3Fx%3D1").await;
    assert_eq!(next, "/nodes/node-abc?x=1");
    // Only this site's paths are followed after signing in.
    let (_, _, next) = login_form(&s, &http, "?next=//evil.example/x").await;
    assert_eq!(next, "/nodes");

    let r = sign_in(&s, &http, ADMIN).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/nodes");
    let cookie = set_cookie(&r, "hydra_session").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert_eq!(value_of(&cookie).len(), 64, "a 256-bit session id");
    assert!(!cookie.contains(ADMIN), "the token is not in the cookie");
}

#[tokio::test]
async fn wrong_tokens_and_forms_from_elsewhere_do_not_sign_in() {
    let s = spawn_app().await;
    let http = browser();
    let r = sign_in(&s, &http, "not-a-token").await;
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "hydra_session").is_none());
    assert!(r.text().await.unwrap().contains("That is not a valid admin or observer token."));
    let (_, node_token) = approved_body(&s, "body-1").await;
    let r = sign_in(&s, &http, &node_token).await;
    assert_eq!(r.status(), 403, "a node token is not a console token");
    assert!(set_cookie(&r, "hydra_session").is_none());

    // A form posted without the cookie of the page that served it (another site's form).
    let (csrf, _, _) = login_form(&s, &http, "").await;
    let r = http
        .post(format!("{}/login", s.url))
        .form(&[("token", ADMIN), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(set_cookie(&r, "hydra_session").is_none());
    assert!(r.text().await.unwrap().contains("expired or came from another site"));
}

#[tokio::test]
async fn a_session_acts_only_with_its_csrf_token_and_an_observer_never_does() {
    let s = spawn_app().await;
    let (node, _) = approved_body(&s, "body-1").await;
    let http = browser();
    let drain = format!("/api/v1/nodes/{node}/drain");
    let (cookie, csrf) = session(&s, &http, ADMIN).await;

    let (status, nodes) = as_browser(&s, &http, Method::GET, "/api/v1/nodes", &cookie, None).await;
    assert_eq!(status, 200, "a read needs no CSRF token");
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    let (status, body) = as_browser(&s, &http, Method::POST, &drain, &cookie, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("missing or wrong CSRF token (a console page sends it in x-hydra-csrf)"))
    );
    let (status, _) = as_browser(&s, &http, Method::POST, &drain, &cookie, Some("0000")).await;
    assert_eq!(status, 403);
    assert_eq!(
        get(&s, &format!("/api/v1/nodes/{node}"), ADMIN).await.1["draining"],
        false,
        "refused, nothing done"
    );
    let (status, body) = as_browser(&s, &http, Method::POST, &drain, &cookie, Some(&csrf)).await;
    assert_eq!((status, body["draining"].as_bool()), (200, Some(true)));
    // The event says which admin did it.
    let log = events(&s, &format!("types=node.drain_changed&node={node}")).await;
    assert_eq!(who(&log[0]), "admin:admin", "{log:?}");

    // An observer's session reads, and is refused every action, CSRF token or not.
    let (cookie, csrf) = session(&s, &http, OBSERVER).await;
    let page = http.get(format!("{}/bodies", s.url)).header(COOKIE, &cookie).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("data-role=observer"));
    assert_eq!(as_browser(&s, &http, Method::GET, "/api/v1/nodes", &cookie, None).await.0, 200);
    let (status, body) = as_browser(&s, &http, Method::POST, &drain, &cookie, Some(&csrf)).await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn signing_out_needs_the_csrf_token_and_ends_the_session() {
    let s = spawn_app().await;
    let http = browser();
    let (cookie, csrf) = session(&s, &http, ADMIN).await;
    let out = |csrf: String| {
        http.post(format!("{}/logout", s.url)).header(COOKIE, &cookie).form(&[("csrf", csrf)]).send()
    };
    let r = out("wrong".into()).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        as_browser(&s, &http, Method::GET, "/api/v1/nodes", &cookie, None).await.0,
        200,
        "still signed in"
    );
    let r = out(csrf).await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()[LOCATION].to_str().unwrap()), (303, "/login"));
    assert!(set_cookie(&r, "hydra_session").unwrap().contains("Max-Age=0"));
    let (status, body) = as_browser(&s, &http, Method::GET, "/api/v1/nodes", &cookie, None).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("the console session has ended: sign in again")));
    let r = http.get(format!("{}/nodes", s.url)).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn pages_and_assets_come_from_the_binary_with_a_strict_policy() {
    let s = spawn_app().await;
    let http = browser();
    let (cookie, _) = session(&s, &http, ADMIN).await;
    for path in ["/nodes", "/nodes/node-abc", "/bodies", "/heads", "/events", "/sessions"] {
        let r = http.get(format!("{}{path}", s.url)).header(COOKIE, &cookie).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains("<script src=/console/app.js defer></script>") && !html.contains("http://"),
            "{path}"
        );
    }
    let r = http.get(format!("{}/nodes/..%2Fetc", s.url)).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.status(), 400);
    for (path, kind) in [("/console/app.js", "text/javascript"), ("/console/app.css", "text/css")] {
        let r = http.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(kind));
        assert!(!r.text().await.unwrap().contains("https://"), "{path} loads nothing from elsewhere");
    }
}

/// hydracluster whose rollout pages read the in-process library `lib` with `token`.
async fn cluster_reading(lib: &crate::common::library::TestLibrary, token: &str) -> TestServer {
    let (url, token) = (lib.url.clone(), token.to_owned());
    spawn_app_with(move |c| {
        c.experience_library.url = Some(url);
        c.experience_library.token = Some(hydra::service::config::Secret(token));
    })
    .await
}

#[tokio::test]
async fn the_rollout_pages_read_and_act_through_hydracluster_with_its_library_token() {
    let lib = crate::common::library::spawn_library(|_| {}).await;
    let s = cluster_reading(&lib, ADMIN).await;
    let http = browser();
    let (cookie, csrf) = session(&s, &http, OBSERVER).await;
    let (status, list) = as_browser(&s, &http, Method::GET, "/api/v1/library/rollouts", &cookie, None).await;
    assert_eq!((status, list), (200, json!([])));
    // The library's own answers come through as they are.
    let (status, body) = get(&s, "/api/v1/library/rollouts/r9", OBSERVER).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("r9"), "{body}");
    let (status, body) = post(&s, "/api/v1/library/rollouts/r9/pause", ADMIN, json!({})).await;
    assert_eq!(status, 404, "{body}");
    // hydracluster decides who may ask: an observer never acts, whatever token it holds.
    let (status, _) =
        as_browser(&s, &http, Method::POST, "/api/v1/library/rollouts/r9/pause", &cookie, Some(&csrf)).await;
    assert_eq!(status, 403);
    let (status, body) = post(&s, "/api/v1/library/rollouts/r9/explode", ADMIN, json!({})).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("pause, resume, cancel, rollback, retry"), "{body}");

    // The library's event stream, passed through (and resumed where the page was).
    let created = json!({"id": "space", "project": "p", "district": "d1", "venues": ["v1"]});
    assert_eq!(post(&lib, "/api/v1/experiences", ADMIN, created).await.0, 201);
    let text = sse_until(&s, "/api/v1/library/events?types=experience.*", OBSERVER, |t| {
        t.contains("experience.created")
    })
    .await;
    assert!(text.contains("\"experience_id\":\"space\""), "{text}");
    let resumed = resume_events(&s, "/api/v1/library/events", "1").await;
    assert_eq!(resumed.status(), 200);
    assert_eq!(resumed.headers()["x-hydra-resumed-from"], "1", "Last-Event-ID reaches the library");
}

#[tokio::test]
async fn a_missing_library_or_a_refused_token_is_a_clear_error() {
    let s = spawn_app().await;
    let (status, body) = get(&s, "/api/v1/library/rollouts", ADMIN).await;
    assert_eq!(status, 503);
    assert!(body["error"].as_str().unwrap().contains("experienceLibrary.url"), "{body}");
    let lib = crate::common::library::spawn_library(|_| {}).await;
    let s = cluster_reading(&lib, "not-a-library-token").await;
    let (status, body) = get(&s, "/api/v1/library/rollouts", ADMIN).await;
    assert_eq!(status, 502);
    assert!(body["error"].as_str().unwrap().contains("set experienceLibrary.token"), "{body}");
    let (status, body) = get(&s, "/api/v1/library/events", ADMIN).await;
    assert_eq!(status, 502, "{body}");

    // The token from a file, read at each use: missing, then written (as the library
    // writes its admin-token at its first start).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("library-admin-token");
    let (url, path) = (lib.url.clone(), file.clone());
    let s = spawn_app_with(move |c| {
        c.experience_library.url = Some(url);
        c.experience_library.token_file = Some(path);
    })
    .await;
    let (status, body) = get(&s, "/api/v1/library/rollouts", ADMIN).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("cannot read experienceLibrary.token_file"), "{body}");
    std::fs::write(&file, format!("{ADMIN}\n")).unwrap();
    assert_eq!(get(&s, "/api/v1/library/rollouts", ADMIN).await, (200, json!([])));
}
