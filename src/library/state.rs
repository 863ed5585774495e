//! What ExperienceLibrary's handlers and background tasks share, and the promotion
//! every path goes through (the API, the CLI through the API, and auto-promotion).

use super::cluster_client::{pick_targets, Cluster, ClusterError};
use super::commands::{self, Targets};
use super::config::LibraryConfig;
use crate::service::{ServiceState, SseStats};
use hydra_core::auth::Tokens;
use hydra_core::error::DomainError;
use hydra_core::ledger::{Ledger, LedgerError};
use hydra_events::{Event, FailureThreshold, RolloutPolicy};
use hydra_projections::LibraryViews;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Cheap to clone; holds no lock.
#[derive(Clone)]
pub struct LibraryState {
    pub config: Arc<LibraryConfig>,
    pub ledger: Ledger<LibraryViews>,
    pub tokens: Arc<Tokens>,
    pub stopping: watch::Receiver<bool>,
    pub sse: Arc<SseStats>,
    /// hydracluster, when configured.
    pub cluster: Option<Cluster>,
    /// Wakes the rollout driver (a rollout started, resumed…).
    pub wake: Arc<Notify>,
    pub links: Arc<Links>,
    pub auth_throttle: Arc<crate::service::extract::AuthThrottle>,
    pub connections: Arc<crate::service::serve::ConnStats>,
    /// `/metrics`: the registry and the shared instruments (the library's own are read
    /// from its views, `library::metrics`).
    pub metrics: Arc<crate::service::metrics::Metrics>,
}

/// Whether the streams this service follows are connected right now, and how often its
/// rollout driver has gone round, for `/health`.
#[derive(Debug, Default)]
pub struct Links {
    pub cluster_connected: AtomicBool,
    pub release_connected: AtomicBool,
    /// Rounds of decisions the rollout driver has made since start: a client that
    /// needs the driver to have looked again waits for this to move.
    pub driver_rounds: std::sync::atomic::AtomicU64,
}

impl Links {
    pub fn set_cluster(&self, up: bool) {
        self.cluster_connected.store(up, Ordering::Relaxed);
    }
    pub fn set_release(&self, up: bool) {
        self.release_connected.store(up, Ordering::Relaxed);
    }
}

impl ServiceState for LibraryState {
    type Views = LibraryViews;
    fn ledger(&self) -> &Ledger<LibraryViews> {
        &self.ledger
    }
    fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }
    fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.clone()
    }
    fn sse(&self) -> &Arc<SseStats> {
        &self.sse
    }
    fn keepalive(&self) -> Duration {
        self.config.sse_keepalive
    }
    fn auth_throttle(&self) -> &crate::service::extract::AuthThrottle {
        &self.auth_throttle
    }
    fn connections(&self) -> &Arc<crate::service::serve::ConnStats> {
        &self.connections
    }
    fn metrics(&self) -> &crate::service::metrics::Metrics {
        &self.metrics
    }
}

/// `POST /api/v1/experiences/{id}/promote`: `to`, and optional overrides of the
/// rollout defaults.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    pub to: String,
    pub max_parallel: Option<u32>,
    /// `3` (nodes) or `10%`.
    pub failure_threshold: Option<String>,
    /// `30m`, `90s`…
    pub node_deadline: Option<String>,
    /// A registered build of the experience to promote instead of the source
    /// environment's (a string or a number: `1` is `"1"`).
    #[serde(default, deserialize_with = "commands::optional_build_id")]
    pub build: Option<String>,
    /// An auto-promotion: when the environment runs the source build already (the
    /// driver or the builds endpoint got there first), answer with that promotion
    /// instead of promoting again.
    #[serde(skip)]
    pub auto: bool,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Promoted {
    pub experience_id: String,
    pub environment: String,
    pub build: String,
    pub version: String,
    /// None when the environment has no nodes to reprovision (or no cluster is
    /// configured).
    pub rollout_id: Option<String>,
    pub bodies: usize,
    pub heads: usize,
    pub skipped: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// hydracluster could not list the nodes: nothing was promoted.
    #[error("{0}; nothing was promoted")]
    Cluster(#[from] ClusterError),
}

/// `POST /api/v1/rollouts/{id}/rollback` and `…/retry`: optional overrides of the
/// earlier rollout's policy.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverrides {
    pub max_parallel: Option<u32>,
    pub failure_threshold: Option<String>,
    pub node_deadline: Option<String>,
}

impl PromoteRequest {
    fn overrides(&self) -> PolicyOverrides {
        PolicyOverrides {
            max_parallel: self.max_parallel,
            failure_threshold: self.failure_threshold.clone(),
            node_deadline: self.node_deadline.clone(),
        }
    }
}

/// The rollout policy: `defaults` with the request's overrides.
pub fn policy(defaults: &RolloutPolicy, req: &PolicyOverrides) -> Result<RolloutPolicy, DomainError> {
    let mut p = defaults.clone();
    if let Some(n) = req.max_parallel {
        if n == 0 {
            return Err(DomainError::Invalid("max_parallel must be at least 1".into()));
        }
        p.max_parallel = n;
    }
    if let Some(t) = &req.failure_threshold {
        p.failure_threshold = FailureThreshold::parse(t).map_err(DomainError::Invalid)?;
    }
    if let Some(d) = &req.node_deadline {
        let d = crate::service::config::parse_duration(d)
            .map_err(|e| DomainError::Invalid(format!("node_deadline: {e} (use 30m, 90s…)")))?;
        if d.is_zero() {
            return Err(DomainError::Invalid("node_deadline must be longer than zero".into()));
        }
        p.node_deadline_ms = crate::service::config::millis(d);
    }
    Ok(p)
}

/// Starts a rollback or a retry of rollout `of` (see `commands::redo`); its id.
pub async fn redo(
    state: &LibraryState,
    cause: String,
    of: &str,
    what: commands::Redo,
    req: &PolicyOverrides,
) -> Result<String, PromoteError> {
    let earlier = state
        .ledger
        .read(|v| v.rollout(of).map(|r| r.policy.clone()))
        .ok_or_else(|| DomainError::NotFound(format!("no rollout {of}")))?;
    let policy = policy(&earlier, req)?;
    let Some(cluster) = &state.cluster else {
        return Err(DomainError::Conflict(
            "no hydracluster is configured: nothing can be reprovisioned".into(),
        )
        .into());
    };
    // Only later cluster events can be about the new rollout.
    let cluster_since = cluster.last_event_id().await?;
    let envelopes =
        state.ledger.submit(cause, commands::redo(of.to_owned(), what, Some(policy), cluster_since)).await?;
    state.wake.notify_one();
    envelopes
        .iter()
        .find_map(|e| match &e.event {
            Event::RolloutStarted { rollout_id, .. } => Some(rollout_id.clone()),
            _ => None,
        })
        .ok_or_else(|| PromoteError::Ledger(LedgerError::Unavailable("the rollout recorded no event".into())))
}

/// Promotes an experience: checks it can be promoted, lists the target nodes on
/// hydracluster (its last event id first, so that no later provisioning event is
/// missed), then records the promotion and the rollout in one step.
pub async fn promote(
    state: &LibraryState,
    cause: String,
    experience_id: &str,
    req: &PromoteRequest,
) -> Result<Promoted, PromoteError> {
    let policy = policy(&state.config.rollout.policy(), &req.overrides())?;
    if req.auto {
        if let Some(done) = state.ledger.read(|v| current_promotion(v, experience_id, &req.to)) {
            return Ok(done);
        }
    }
    let (build, _) =
        state.ledger.read(|v| commands::promotion_check(v, experience_id, &req.to, req.build.as_deref()))?;
    let (district, venues) = state.ledger.read(|v| {
        let x = &v.experiences[experience_id];
        (x.district.clone(), x.venues.clone())
    });
    let targets = match &state.cluster {
        None => None,
        Some(cluster) => {
            let cluster_since = cluster.last_event_id().await?;
            let mut nodes = Vec::new();
            for venue in &venues {
                nodes.extend(cluster.nodes(&district, venue).await?);
            }
            let (bodies, heads, skipped) = pick_targets(nodes, &req.to);
            Some(Targets { bodies, heads, skipped, cluster_since })
        }
    };
    let command = commands::promote(
        experience_id.to_owned(),
        req.to.clone(),
        build,
        req.build.clone(),
        targets,
        policy,
        req.auto,
    );
    let envelopes = state.ledger.submit(cause, command).await?;
    if envelopes.is_empty() {
        if let Some(done) = state.ledger.read(|v| current_promotion(v, experience_id, &req.to)) {
            return Ok(done);
        }
    }
    state.wake.notify_one();
    let mut out = None;
    for e in &envelopes {
        match &e.event {
            Event::ExperiencePromoted { experience_id, environment, build, version, rollout_id } => {
                out = Some(Promoted {
                    experience_id: experience_id.clone(),
                    environment: environment.clone(),
                    build: build.clone(),
                    version: version.clone(),
                    rollout_id: rollout_id.clone(),
                    bodies: 0,
                    heads: 0,
                    skipped: 0,
                });
            }
            Event::RolloutStarted { bodies, heads, skipped, .. } => {
                if let Some(p) = out.as_mut() {
                    p.bodies = bodies.len();
                    p.heads = heads.len();
                    p.skipped = skipped.len();
                }
            }
            _ => {}
        }
    }
    out.ok_or_else(|| {
        PromoteError::Ledger(LedgerError::Unavailable("the promotion recorded no event".into()))
    })
}

/// The promotion that put the source environment's build into `to`, if it is there.
fn current_promotion(v: &LibraryViews, experience_id: &str, to: &str) -> Option<Promoted> {
    let x = v.experiences.get(experience_id)?;
    let source = x.environments.get(commands::source_environment(to).ok()?)?;
    let target = x.environments.get(to).filter(|t| t.build == source.build)?;
    let rollout = target.rollout_id.as_deref().and_then(|id| v.rollout(id));
    Some(Promoted {
        experience_id: experience_id.to_owned(),
        environment: to.to_owned(),
        build: target.build.clone(),
        version: target.version.clone(),
        rollout_id: target.rollout_id.clone(),
        bodies: rollout.map_or(0, |r| r.bodies.len()),
        heads: rollout.map_or(0, |r| r.heads.len()),
        skipped: rollout.map_or(0, |r| r.skipped.len()),
    })
}
