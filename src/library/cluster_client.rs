//! ExperienceLibrary's client of hydracluster: its last event id, the nodes of a
//! venue, and reprovision requests. Errors say which call failed and why.

use crate::service::client::{seg, CallError, Client, ListError, Timeouts, Unreachable};
use hydra_events::{NodeId, SkippedNode};
use reqwest::Method;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Cluster {
    pub url: String,
    client: Client,
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
        let client = Client::new(url, token, Timeouts { connect: Duration::from_secs(3), request: timeout });
        Cluster { url: client.base().to_owned(), client }
    }

    /// The JSON answer of a call, or what went wrong.
    async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<serde_json::Value, ClusterError> {
        Ok(self.client.call(method, path, query, None).await?.success()?)
    }

    /// hydracluster's answer to `path` is not what the call expects.
    fn bad_answer(&self, path: &str, reason: impl ToString) -> ClusterError {
        ClusterError::BadAnswer { url: format!("{}{path}", self.url), reason: reason.to_string() }
    }

    /// hydracluster's last event id (from its public health answer).
    pub async fn last_event_id(&self) -> Result<u64, ClusterError> {
        let path = "/api/v1/health";
        let v = self.json(Method::GET, path, &[]).await?;
        v.get("last_event_id")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| self.bad_answer(path, "no last_event_id in the health answer"))
    }

    /// The nodes of a district's venue, every page of them: a rollout must reach every
    /// node however big the fleet.
    pub async fn nodes(&self, district: &str, venue: &str) -> Result<Vec<ClusterNode>, ClusterError> {
        let path = "/api/v1/nodes";
        let all = self.client.list(path, &[("district", district), ("venue", venue)]).await?;
        serde_json::from_value(serde_json::Value::Array(all)).map_err(|e| self.bad_answer(path, e))
    }

    /// One page of hydracluster's log after `since`, filtered by type.
    pub async fn events_page(&self, since: u64, types: &str) -> Result<EventsPage, ClusterError> {
        let path = "/api/v1/events/log";
        let since = since.to_string();
        let v = self
            .json(Method::GET, path, &[("since", since.as_str()), ("limit", "10000"), ("types", types)])
            .await?;
        serde_json::from_value(v).map_err(|e| self.bad_answer(path, e))
    }

    /// `POST /api/v1/nodes/{id}/reprovision`.
    pub async fn reprovision(&self, node: &NodeId) -> Result<Requested, ClusterError> {
        let path = format!("/api/v1/nodes/{}/reprovision", seg(node.as_str()));
        match self.json(Method::POST, &path, &[]).await {
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

impl From<Unreachable> for ClusterError {
    fn from(u: Unreachable) -> ClusterError {
        ClusterError::Unreachable { url: u.url, reason: u.reason }
    }
}

/// hydracluster's refusal carries its `{"error": …}` message (empty without one).
impl From<CallError> for ClusterError {
    fn from(e: CallError) -> ClusterError {
        match e {
            CallError::Unreachable(u) => u.into(),
            CallError::Refused { url, status, error, .. } => {
                ClusterError::Status { url, status: status.as_u16(), message: error.unwrap_or_default() }
            }
        }
    }
}

impl From<ListError> for ClusterError {
    fn from(e: ListError) -> ClusterError {
        match e {
            ListError::Call(e) => e.into(),
            ListError::NotAList { url, got } => {
                ClusterError::BadAnswer { url, reason: format!("expected a list of nodes, got {got}") }
            }
            ListError::SamePageTwice { url, next } => {
                ClusterError::BadAnswer { url, reason: format!("the same next page twice ({next})") }
            }
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
