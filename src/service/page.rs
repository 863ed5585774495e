//! Pages of the lists keyed by node id (`GET /api/v1/nodes`, `GET /api/v1/heads`):
//! `?limit=&after=`, in id order. The answer stays the bare JSON array SPEC gives;
//! the cursor of the next page travels in the `X-Hydra-Next-After` header, absent on
//! the last page.

use super::extract::node_id;
use super::ApiError;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hydra_events::NodeId;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Entries per page when the request does not say.
pub const DEFAULT_LIMIT: usize = 500;
/// The largest page a request may ask for.
pub const MAX_LIMIT: usize = 5000;
/// The header that carries the next page's `after`.
pub const NEXT_AFTER: &str = "x-hydra-next-after";

/// A checked page request: `limit` 1 to [`MAX_LIMIT`] (400 otherwise), `after` a node
/// id (the last one of the previous page).
pub fn bounds(limit: Option<usize>, after: Option<&str>) -> Result<(usize, Option<NodeId>), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}, got {limit}")));
    }
    let after = after.filter(|a| !a.is_empty()).map(node_id).transpose()?;
    Ok((limit, after))
}

/// Up to `limit` entries of `map` after `after` that `keep` accepts, in id order, and
/// the cursor of the next page when one more entry is accepted past them.
pub fn page<'a, V>(
    map: &'a BTreeMap<NodeId, V>,
    after: Option<&NodeId>,
    limit: usize,
    mut keep: impl FnMut(&NodeId, &V) -> bool,
) -> (Vec<(&'a NodeId, &'a V)>, Option<NodeId>) {
    let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.clone()));
    let mut found = map.range((start, Bound::Unbounded)).filter(|(id, v)| keep(id, v));
    let out: Vec<_> = found.by_ref().take(limit).collect();
    let next = match found.next() {
        Some(_) => out.last().map(|(id, _)| (*id).clone()),
        None => None,
    };
    (out, next)
}

/// The JSON array, with the next page's cursor in its header when there is one.
pub fn answer<T: serde::Serialize>(items: Vec<T>, next: Option<NodeId>) -> Response {
    let mut response = Json(items).into_response();
    if let Some(value) = next.and_then(|n| HeaderValue::from_str(n.as_str()).ok()) {
        response.headers_mut().insert(NEXT_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_kept_entry_once() {
        let map: BTreeMap<NodeId, u32> =
            (0..7).map(|i| (NodeId::parse(&format!("node-{i:02}")).unwrap(), i)).collect();
        let odd = |_: &NodeId, v: &u32| v % 2 == 1;
        let (first, next) = page(&map, None, 2, odd);
        assert_eq!(first.iter().map(|(_, v)| **v).collect::<Vec<_>>(), [1, 3]);
        let (second, next) = page(&map, next.as_ref(), 2, odd);
        assert_eq!(second.iter().map(|(_, v)| **v).collect::<Vec<_>>(), [5]);
        assert_eq!(next, None);
        assert!(bounds(Some(MAX_LIMIT + 1), None).is_err());
        assert!(bounds(Some(0), None).is_err());
        assert!(bounds(None, Some("not a node")).is_err());
    }
}
