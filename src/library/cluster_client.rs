//! ExperienceLibrary's client of hydracluster: its last event id, the nodes of a
//! venue, and reprovision requests. Errors say which call failed and why.

use crate::cluster::library_client::describe;
use hydra_events::{NodeId, SkippedNode};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Cluster {
    pub url: String,
    token: Option<String>,
    http: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("hydracluster at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// hydracluster answered with an error status and message.
    #[error("hydracluster answered {status} for {url}: {message}")]
    Status { url: String, status: u16, message: String },
    #[error("hydracluster sent an unexpected answer for {url}: {reason}")]
    BadAnswer { url: String, reason: String },
}

impl ClusterError {
    /// Worth trying again later (the cluster is down or busy), as opposed to a refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Unreachable { .. } => true,
            ClusterError::Status { status, .. } => *status >= 500 || *status == 429,
            ClusterError::BadAnswer { .. } => false,
        }
    }
}

/// A node as `GET /api/v1/nodes` lists it (only what a rollout needs).
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterNode {
    pub id: String,
    pub kind: String,
    pub environment: String,
    pub status: String,
    pub node_status: String,
}

/// `GET /api/v1/events/log`: events after `since`, and where to ask next.
#[derive(Debug, Clone, Deserialize)]
pub struct EventsPage {
    pub events: Vec<serde_json::Value>,
    pub next_since: u64,
    pub head: u64,
}

/// What a reprovision request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// hydracluster recorded the request.
    Accepted,
    /// The node is being reprovisioned already; its result will do.
    AlreadyInProgress,
}

impl Cluster {
    pub fn new(url: &str, token: Option<String>, timeout: Duration) -> Cluster {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Cluster { url: url.trim_end_matches('/').to_owned(), token, http }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}{path}", self.url);
        let mut r = self.http.request(method, &url);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        (url, r)
    }

    async fn json(&self, url: String, r: reqwest::RequestBuilder) -> Result<serde_json::Value, ClusterError> {
        Ok(self.json_page(url, r).await?.0)
    }

    /// An answer and the cursor of the next page (`X-Hydra-Next-After`), if any.
    async fn json_page(
        &self,
        url: String,
        r: reqwest::RequestBuilder,
    ) -> Result<(serde_json::Value, Option<String>), ClusterError> {
        let resp = r
            .send()
            .await
            .map_err(|e| ClusterError::Unreachable { url: url.clone(), reason: describe(&e) })?;
        let status = resp.status();
        let next = resp.headers().get("x-hydra-next-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = resp
            .bytes()
            .await
            .map_err(|e| ClusterError::Unreachable { url: url.clone(), reason: describe(&e) })?;
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let message = value.get("error").and_then(|m| m.as_str()).unwrap_or("").to_owned();
            return Err(ClusterError::Status { url, status: status.as_u16(), message });
        }
        Ok((value, next))
    }

    /// hydracluster's last event id (from its public health answer).
    pub async fn last_event_id(&self) -> Result<u64, ClusterError> {
        let (url, r) = self.request(reqwest::Method::GET, "/api/v1/health");
        let v = self.json(url.clone(), r).await?;
        v.get("last_event_id").and_then(|s| s.as_u64()).ok_or_else(|| ClusterError::BadAnswer {
            url,
            reason: "no last_event_id in the health answer".into(),
        })
    }

    /// The nodes of a district's venue, every page of them: a rollout must reach every
    /// node however big the fleet.
    pub async fn nodes(&self, district: &str, venue: &str) -> Result<Vec<ClusterNode>, ClusterError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (url, r) = self.request(reqwest::Method::GET, "/api/v1/nodes");
            let mut query = vec![("district", district), ("venue", venue)];
            if let Some(a) = &after {
                query.push(("after", a.as_str()));
            }
            let (v, next) = self.json_page(url.clone(), r.query(&query)).await?;
            let page: Vec<ClusterNode> = serde_json::from_value(v)
                .map_err(|e| ClusterError::BadAnswer { url: url.clone(), reason: e.to_string() })?;
            all.extend(page);
            match next {
                Some(n) if after.as_ref() == Some(&n) => {
                    return Err(ClusterError::BadAnswer {
                        url,
                        reason: format!("the same next page twice ({n})"),
                    })
                }
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// One page of hydracluster's log after `since`, filtered by type.
    pub async fn events_page(&self, since: u64, types: &str) -> Result<EventsPage, ClusterError> {
        let (url, r) = self.request(reqwest::Method::GET, "/api/v1/events/log");
        let since = since.to_string();
        let v = self
            .json(url.clone(), r.query(&[("since", since.as_str()), ("limit", "10000"), ("types", types)]))
            .await?;
        serde_json::from_value(v).map_err(|e| ClusterError::BadAnswer { url, reason: e.to_string() })
    }

    /// `POST /api/v1/nodes/{id}/reprovision`.
    pub async fn reprovision(&self, node: &NodeId) -> Result<Requested, ClusterError> {
        let (url, r) = self.request(reqwest::Method::POST, &format!("/api/v1/nodes/{node}/reprovision"));
        match self.json(url, r).await {
            Ok(_) => Ok(Requested::Accepted),
            // hydracluster refuses a second request while one is open ("… already; wait
            // for its result"): the open one will give the result this rollout waits for.
            Err(ClusterError::Status { status: 409, message, .. }) if message.contains("already") => {
                Ok(Requested::AlreadyInProgress)
            }
            Err(e) => Err(e),
        }
    }
}

/// The nodes a rollout to `environment` takes from a venue's listing: approved nodes
/// of that environment (staging never touches production and back), bodies and heads
/// apart, sorted by id; offline ones are left out and said so.
pub fn pick_targets(
    nodes: Vec<ClusterNode>,
    environment: &str,
) -> (Vec<NodeId>, Vec<NodeId>, Vec<SkippedNode>) {
    let (mut bodies, mut heads, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for n in nodes {
        if n.environment != environment || n.status != "approved" {
            continue;
        }
        let Ok(id) = NodeId::parse(&n.id) else { continue };
        if n.node_status != "online" {
            skipped.push(SkippedNode { node_id: id, reason: "offline".into() });
            continue;
        }
        match n.kind.as_str() {
            "head" => heads.push(id),
            _ => bodies.push(id),
        }
    }
    bodies.sort();
    bodies.dedup();
    heads.sort();
    heads.dedup();
    skipped.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    skipped.dedup();
    (bodies, heads, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, kind: &str, env: &str, status: &str, online: bool) -> ClusterNode {
        ClusterNode {
            id: id.into(),
            kind: kind.into(),
            environment: env.into(),
            status: status.into(),
            node_status: if online { "online" } else { "offline" }.into(),
        }
    }

    #[test]
    fn targets_keep_environments_apart_and_leave_out_offline_and_unapproved_nodes() {
        let (bodies, heads, skipped) = pick_targets(
            vec![
                node("node-b2", "body", "staging", "approved", true),
                node("node-b1", "body", "staging", "approved", true),
                node("node-p1", "body", "production", "approved", true),
                node("node-h1", "head", "staging", "approved", true),
                node("node-b3", "body", "staging", "pending", true),
                node("node-b4", "body", "staging", "approved", false),
            ],
            "staging",
        );
        let ids = |v: &[NodeId]| v.iter().map(|n| n.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(ids(&bodies), ["node-b1", "node-b2"]);
        assert_eq!(ids(&heads), ["node-h1"]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].node_id.as_str(), "node-b4");
    }
}
