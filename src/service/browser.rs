//! Browser sign-ins for the console: a token typed once on `/login` becomes a
//! server-side session behind an `HttpOnly`, `SameSite=Strict` cookie, so the token is
//! never kept by the browser. Each session has its own CSRF token that every changing
//! request must echo (`x-hydra-csrf` header, or a `csrf` form field); the auth
//! extractors (`extract::principal`) accept a session wherever they accept a bearer
//! token, so the pages call the same API with the same rules as the CLI.

use axum::http::{header, HeaderMap, HeaderValue};
use hydra_core::auth::{hash_token, Principal, TokenHash, Tokens};
use hydra_core::store::Store;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "hydra_session";
/// The header a page's script sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-hydra-csrf";
/// Sessions kept at most: past it, signing in forgets the least recently used one
/// (a flood of sign-ins cannot grow memory).
pub const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// The hash of the token it signed in with: the session lasts only while that
    /// token is accepted as the same principal (an admin taken out of `admin_tokens`
    /// is signed out at their next request).
    token: TokenHash,
    /// What a changing request from this session must carry.
    pub csrf: String,
    last_used: Instant,
}

/// The signed-in browsers, by session id. A session ends on sign-out, after `idle`
/// without a request, or when the server restarts (they live in memory only: a
/// restart costs a sign-in, and no session secret ever reaches the disk).
#[derive(Debug)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    idle: Duration,
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Sessions { by_id: Mutex::default(), idle }
    }

    /// Starts a session for `principal`, signed in with `token`: its id (for the
    /// cookie) and CSRF token.
    pub fn start(&self, principal: Principal, token: &str) -> (String, String) {
        self.start_at(principal, hash_token(token), Instant::now())
    }

    fn start_at(&self, principal: Principal, token: TokenHash, now: Instant) -> (String, String) {
        let (id, csrf) = (hydra_core::auth::new_token(""), hydra_core::auth::new_token(""));
        let mut by_id = self.by_id.lock();
        by_id.retain(|_, s| now.duration_since(s.last_used) < self.idle);
        if by_id.len() >= MAX_SESSIONS {
            let oldest = by_id.iter().min_by_key(|(_, s)| s.last_used).map(|(id, _)| id.clone());
            oldest.map(|id| by_id.remove(&id));
        }
        by_id.insert(id.clone(), Session { principal, token, csrf: csrf.clone(), last_used: now });
        (id, csrf)
    }

    /// The live session `id` names (and marks it used), or None; a session whose
    /// token `tokens` no longer accepts as the same principal ends here.
    pub fn get(&self, id: &str, tokens: &Tokens, store: &Store) -> Option<Session> {
        let session = self.get_at(id, Instant::now())?;
        if tokens.resolve_hash(store, &session.token).as_ref() != Some(&session.principal) {
            self.end(id);
            return None;
        }
        Some(session)
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<Session> {
        let mut by_id = self.by_id.lock();
        let session = by_id.get_mut(id)?;
        if now.duration_since(session.last_used) >= self.idle {
            by_id.remove(id);
            return None;
        }
        session.last_used = now;
        Some(session.clone())
    }

    /// The live session the request's cookie names, if it names one.
    pub fn of(&self, headers: &HeaderMap, tokens: &Tokens, store: &Store) -> Option<(String, Session)> {
        let id = cookie(headers, SESSION_COOKIE)?;
        self.get(id, tokens, store).map(|s| (id.to_owned(), s))
    }

    pub fn end(&self, id: &str) {
        self.by_id.lock().remove(id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.lock().len()
    }
}

/// The value of cookie `name` in the request, if it carries one.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` for `name`: `HttpOnly`, `SameSite=Strict`, for the whole site;
/// `max_age` 0 removes it. Not `Secure`: hydracluster serves plain HTTP and a TLS
/// front adds it (docs/console.md).
pub fn set_cookie(name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", max_age.as_secs());
    HeaderValue::from_str(&text).expect("cookie names and hex values are valid header text")
}

/// Compares a CSRF token a request carried with the session's, in constant time.
pub fn csrf_matches(session: &Session, carried: Option<&str>) -> bool {
    same_secret(&session.csrf, carried)
}

/// Whether `carried` is the (non-empty) `expected` secret, compared in constant time.
pub fn same_secret(expected: &str, carried: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    !expected.is_empty() && carried.is_some_and(|c| c.as_bytes().ct_eq(expected.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_when_idle_or_signed_out_and_the_oldest_goes_first_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tokens = Tokens::new(&[], Some("o"), None);
        let idle = Duration::from_secs(60);
        let sessions = Sessions::new(idle);
        let get = |id: &str| sessions.get(id, &tokens, &store);
        let (id, csrf) = sessions.start(Principal::Observer, "o");
        let s = get(&id).unwrap();
        assert!(csrf_matches(&s, Some(&csrf)));
        assert!(!csrf_matches(&s, Some("nope")) && !csrf_matches(&s, None));
        sessions.end(&id);
        assert!(get(&id).is_none());

        let t0 = Instant::now();
        let (id, _) = sessions.start_at(Principal::Observer, hash_token("o"), t0);
        assert!(sessions.get_at(&id, t0 + idle / 2).is_some());
        assert!(sessions.get_at(&id, t0 + idle / 2 + idle).is_none(), "idle past its limit");

        let first = sessions.start(Principal::Observer, "o").0;
        let ids: Vec<_> = (1..MAX_SESSIONS).map(|_| sessions.start(Principal::Observer, "o").0).collect();
        assert_eq!(sessions.len(), MAX_SESSIONS);
        get(&first).unwrap();
        sessions.start(Principal::Observer, "o");
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(get(&first).is_some(), "used lately, kept");
        assert!(get(&ids[0]).is_none(), "the least recently used one went");
    }

    #[test]
    fn a_session_ends_with_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tokens = Tokens::new(&[], None, None);
        tokens.set_named_admins(vec![("alice".into(), hash_token("a"))]);
        let sessions = Sessions::new(Duration::from_secs(60));
        let (id, _) = sessions.start(Principal::Admin { name: "alice".into() }, "a");
        assert!(sessions.get(&id, &tokens, &store).is_some());
        // Alice keeps her name under a new token: the old token's session ends all the same.
        tokens.set_named_admins(vec![("alice".into(), hash_token("a2"))]);
        assert!(sessions.get(&id, &tokens, &store).is_none());
        tokens.set_named_admins(vec![("alice".into(), hash_token("a"))]);
        assert!(sessions.get(&id, &tokens, &store).is_none(), "an ended session stays ended");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; hydra_session=abc".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
