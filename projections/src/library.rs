//! The views of `hydraexperiencelibrary`: experiences with their builds per
//! environment, and rollouts with every node's progress through its wave, folded
//! from `experience.*`, `build.*` and `rollout.*` events.

use crate::Projection;
use hydra_events::{Envelope, Event, NodeId, RolloutPolicy, SkippedNode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The environments a build moves through, in order.
pub const ENVIRONMENTS: [&str; 3] = ["development", "staging", "production"];

/// The environments a machine can be placed in: the ladder but its first rung, which
/// builds pass through and no machine stands in.
pub const FLEET_ENVIRONMENTS: &[&str] = ENVIRONMENTS.split_at(1).1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LibraryViews {
    pub last_seq: u64,
    pub last_at_ms: u64,
    pub experiences: BTreeMap<String, ExperienceView>,
    /// Keyed by the number in the rollout id (`r7` → 7), so they list in order.
    pub rollouts: BTreeMap<u64, RolloutView>,
    /// HydraRelease's id of the last `build.uploaded` acted on: where to resume.
    pub release_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperienceView {
    pub id: String,
    pub project: String,
    pub district: String,
    pub venues: Vec<String>,
    pub auto_promote: bool,
    pub created_at_ms: u64,
    /// Every build ever registered, by build id.
    pub builds: BTreeMap<String, BuildView>,
    /// The build each environment runs, by environment name.
    pub environments: BTreeMap<String, EnvironmentBuild>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildView {
    pub version: String,
    pub artifact_url: String,
    pub sha256: String,
    pub registered_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentBuild {
    pub build: String,
    pub version: String,
    pub since_ms: u64,
    pub rollout_id: Option<String>,
    /// The build and version the environment had before this one: what a rollback of
    /// this promotion's rollout puts back.
    pub previous: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutState {
    Running,
    Paused,
    Completed,
    CompletedWithFailures,
    Aborted,
    Cancelled,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Completed => "completed",
            RolloutState::CompletedWithFailures => "completed_with_failures",
            RolloutState::Aborted => "aborted",
            RolloutState::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Not asked yet.
    Pending,
    /// Asked; hydracluster has not reported `provision.started` yet.
    Requested,
    Provisioning,
    Completed,
    Failed,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Pending => "pending",
            NodeState::Requested => "requested",
            NodeState::Provisioning => "provisioning",
            NodeState::Completed => "completed",
            NodeState::Failed => "failed",
        }
    }

    pub fn in_flight(self) -> bool {
        matches!(self, NodeState::Requested | NodeState::Provisioning)
    }

    pub fn finished(self) -> bool {
        matches!(self, NodeState::Completed | NodeState::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeProgress {
    pub state: NodeState,
    pub requested_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub version: Option<String>,
    pub error: Option<String>,
}

impl NodeProgress {
    fn pending() -> Self {
        NodeProgress {
            state: NodeState::Pending,
            requested_at_ms: None,
            finished_at_ms: None,
            version: None,
            error: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    pub id: String,
    pub experience_id: String,
    pub environment: String,
    pub build: String,
    pub version: String,
    pub district: String,
    pub venues: Vec<String>,
    pub policy: RolloutPolicy,
    pub state: RolloutState,
    /// 0 before wave 1 starts; 1 bodies; 2 heads.
    pub wave: u8,
    /// Wave 1, in the order they are asked.
    pub bodies: Vec<NodeId>,
    /// Wave 2, in the order they are asked.
    pub heads: Vec<NodeId>,
    pub nodes: BTreeMap<NodeId, NodeProgress>,
    pub skipped: Vec<SkippedNode>,
    /// hydracluster's last event id when the rollout listed its nodes: only later
    /// cluster events can be about this rollout.
    pub cluster_since: u64,
    /// hydracluster's last event id this rollout has accounted for: its start point,
    /// then the id of every cluster event it recorded. A restart resumes from here.
    pub cluster_seq: u64,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// Why it aborted.
    pub reason: Option<String>,
    /// The build and version its environment had before it: what a rollback puts back.
    /// None for a retry (the build did not change) or a first promotion.
    pub previous_build: Option<(String, String)>,
    /// `(kind, rollout)` when it redoes an earlier rollout (`rollback` or `retry`).
    pub origin: Option<(String, String)>,
}

impl RolloutView {
    /// The nodes of a wave (1 bodies, 2 heads).
    pub fn wave_nodes(&self, wave: u8) -> &[NodeId] {
        match wave {
            1 => &self.bodies,
            2 => &self.heads,
            _ => &[],
        }
    }

    pub fn total(&self) -> u32 {
        self.nodes.len() as u32
    }

    pub fn count(&self, state: NodeState) -> u32 {
        self.nodes.values().filter(|p| p.state == state).count() as u32
    }

    /// Folds one rollout event into this rollout (events of other rollouts and
    /// other kinds are ignored). Also used to look ahead while deciding.
    pub fn apply(&mut self, event: &Event, at_ms: u64) {
        if event.rollout_id() != Some(self.id.as_str()) {
            return;
        }
        match event {
            Event::RolloutWaveStarted { wave, .. } => self.wave = *wave,
            Event::RolloutNodeRequested { node_id, .. } => {
                if let Some(p) = self.nodes.get_mut(node_id) {
                    p.state = NodeState::Requested;
                    p.requested_at_ms = Some(at_ms);
                }
            }
            Event::RolloutNodeStarted { node_id, cluster_seq, .. } => {
                self.cluster_seq = self.cluster_seq.max(*cluster_seq);
                if let Some(p) = self.nodes.get_mut(node_id) {
                    p.state = NodeState::Provisioning;
                }
            }
            Event::RolloutNodeCompleted { node_id, version, cluster_seq, .. } => {
                self.cluster_seq = self.cluster_seq.max(*cluster_seq);
                if let Some(p) = self.nodes.get_mut(node_id) {
                    p.state = NodeState::Completed;
                    p.version = version.clone();
                    p.finished_at_ms = Some(at_ms);
                }
            }
            Event::RolloutNodeFailed { node_id, error, cluster_seq, .. } => {
                if let Some(seq) = cluster_seq {
                    self.cluster_seq = self.cluster_seq.max(*seq);
                }
                if let Some(p) = self.nodes.get_mut(node_id) {
                    p.state = NodeState::Failed;
                    p.error = Some(error.clone());
                    p.finished_at_ms = Some(at_ms);
                }
            }
            Event::RolloutPaused { .. } => self.state = RolloutState::Paused,
            Event::RolloutResumed { .. } => self.state = RolloutState::Running,
            Event::RolloutCompleted { state, .. } => {
                self.state = if state == RolloutState::Completed.as_str() {
                    RolloutState::Completed
                } else {
                    RolloutState::CompletedWithFailures
                };
                self.finished_at_ms = Some(at_ms);
            }
            Event::RolloutAborted { reason, .. } => {
                self.state = RolloutState::Aborted;
                self.reason = Some(reason.clone());
                self.finished_at_ms = Some(at_ms);
            }
            Event::RolloutCancelled { .. } => {
                self.state = RolloutState::Cancelled;
                self.finished_at_ms = Some(at_ms);
            }
            Event::RolloutOrigin { kind, of_rollout, .. } => {
                self.origin = Some((kind.clone(), of_rollout.clone()))
            }
            _ => {}
        }
    }
}

/// `r7` → 7.
pub fn rollout_number(id: &str) -> Option<u64> {
    id.strip_prefix('r')?.parse().ok().filter(|n| *n > 0)
}

impl LibraryViews {
    pub fn rollout(&self, id: &str) -> Option<&RolloutView> {
        self.rollouts.get(&rollout_number(id)?)
    }

    /// The id the next rollout gets.
    pub fn next_rollout_id(&self) -> String {
        format!("r{}", self.rollouts.keys().next_back().map_or(1, |n| n + 1))
    }

    /// Rollouts still running or paused.
    pub fn active_rollouts(&self) -> impl Iterator<Item = &RolloutView> {
        self.rollouts.values().filter(|r| !r.state.is_final())
    }
}

impl Projection for LibraryViews {
    const VERSION: u32 = 2;

    fn apply(&mut self, envelope: &Envelope) {
        let at = envelope.at_ms;
        self.last_seq = envelope.seq;
        self.last_at_ms = at;
        match &envelope.event {
            Event::ExperienceCreated { experience_id, project, district, venues, auto_promote } => {
                self.experiences.insert(
                    experience_id.clone(),
                    ExperienceView {
                        id: experience_id.clone(),
                        project: project.clone(),
                        district: district.clone(),
                        venues: venues.clone(),
                        auto_promote: *auto_promote,
                        created_at_ms: at,
                        builds: BTreeMap::new(),
                        environments: BTreeMap::new(),
                    },
                );
            }
            Event::BuildRegistered {
                experience_id,
                build,
                version,
                artifact_url,
                sha256,
                release_event_id,
            } => {
                if let Some(id) = release_event_id {
                    self.release_cursor = Some(id.clone());
                }
                if let Some(x) = self.experiences.get_mut(experience_id) {
                    x.builds.insert(
                        build.clone(),
                        BuildView {
                            version: version.clone(),
                            artifact_url: artifact_url.clone(),
                            sha256: sha256.clone(),
                            registered_at_ms: at,
                        },
                    );
                    x.environments.insert(
                        "development".into(),
                        EnvironmentBuild {
                            build: build.clone(),
                            version: version.clone(),
                            since_ms: at,
                            rollout_id: None,
                            previous: None,
                        },
                    );
                }
            }
            Event::ExperiencePromoted { experience_id, environment, build, version, rollout_id } => {
                if let Some(x) = self.experiences.get_mut(experience_id) {
                    let previous =
                        x.environments.get(environment).map(|e| (e.build.clone(), e.version.clone()));
                    x.environments.insert(
                        environment.clone(),
                        EnvironmentBuild {
                            build: build.clone(),
                            version: version.clone(),
                            since_ms: at,
                            rollout_id: rollout_id.clone(),
                            previous,
                        },
                    );
                }
            }
            Event::RolloutStarted {
                rollout_id,
                experience_id,
                environment,
                build,
                version,
                district,
                venues,
                bodies,
                heads,
                skipped,
                policy,
                cluster_since,
            } => {
                let Some(n) = rollout_number(rollout_id) else { return };
                // The promotion recorded just before names what the environment had.
                let previous_build = self
                    .experiences
                    .get(experience_id)
                    .and_then(|x| x.environments.get(environment))
                    .filter(|e| e.rollout_id.as_deref() == Some(rollout_id.as_str()))
                    .and_then(|e| e.previous.clone());
                let nodes =
                    bodies.iter().chain(heads).map(|id| (id.clone(), NodeProgress::pending())).collect();
                self.rollouts.insert(
                    n,
                    RolloutView {
                        id: rollout_id.clone(),
                        experience_id: experience_id.clone(),
                        environment: environment.clone(),
                        build: build.clone(),
                        version: version.clone(),
                        district: district.clone(),
                        venues: venues.clone(),
                        policy: policy.clone(),
                        state: RolloutState::Running,
                        wave: 0,
                        bodies: bodies.clone(),
                        heads: heads.clone(),
                        nodes,
                        skipped: skipped.clone(),
                        cluster_since: *cluster_since,
                        cluster_seq: *cluster_since,
                        started_at_ms: at,
                        finished_at_ms: None,
                        reason: None,
                        previous_build,
                        origin: None,
                    },
                );
            }
            other => {
                if let Some(r) =
                    other.rollout_id().and_then(rollout_number).and_then(|n| self.rollouts.get_mut(&n))
                {
                    r.apply(other, at);
                }
            }
        }
    }

    fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydra_events::FailureThreshold;

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).unwrap()
    }

    fn fold(events: Vec<Event>) -> LibraryViews {
        crate::fold(events)
    }

    fn started() -> Event {
        Event::RolloutStarted {
            rollout_id: "r1".into(),
            experience_id: "space".into(),
            environment: "staging".into(),
            build: "b2".into(),
            version: "2.0".into(),
            district: "d1".into(),
            venues: vec!["v1".into()],
            bodies: vec![id("node-body-1"), id("node-body-2")],
            heads: vec![id("node-head-1")],
            skipped: vec![],
            policy: RolloutPolicy {
                max_parallel: 2,
                failure_threshold: FailureThreshold::Count(0),
                node_deadline_ms: 60_000,
            },
            cluster_since: 40,
        }
    }

    #[test]
    fn builds_become_the_development_build_and_promotion_moves_them_on() {
        let v = fold(vec![
            Event::ExperienceCreated {
                experience_id: "space".into(),
                project: "space-game".into(),
                district: "d1".into(),
                venues: vec!["v1".into()],
                auto_promote: false,
            },
            Event::BuildRegistered {
                experience_id: "space".into(),
                build: "b1".into(),
                version: "1.0".into(),
                artifact_url: "https://a/b1.tar".into(),
                sha256: "00".into(),
                release_event_id: Some("17".into()),
            },
            Event::ExperiencePromoted {
                experience_id: "space".into(),
                environment: "staging".into(),
                build: "b1".into(),
                version: "1.0".into(),
                rollout_id: Some("r1".into()),
            },
        ]);
        let x = &v.experiences["space"];
        assert_eq!(x.environments["development"].build, "b1");
        assert_eq!(x.environments["staging"].rollout_id.as_deref(), Some("r1"));
        assert!(!x.environments.contains_key("production"));
        assert_eq!(v.release_cursor.as_deref(), Some("17"));
    }

    #[test]
    fn a_rollout_tracks_each_node_and_its_cluster_position() {
        let v = fold(vec![
            started(),
            Event::RolloutWaveStarted {
                rollout_id: "r1".into(),
                wave: 1,
                nodes: vec![id("node-body-1"), id("node-body-2")],
            },
            Event::RolloutNodeRequested { rollout_id: "r1".into(), node_id: id("node-body-1"), wave: 1 },
            Event::RolloutNodeStarted {
                rollout_id: "r1".into(),
                node_id: id("node-body-1"),
                cluster_seq: 45,
            },
            Event::RolloutNodeFailed {
                rollout_id: "r1".into(),
                node_id: id("node-body-2"),
                error: "boom".into(),
                cluster_seq: Some(50),
            },
            Event::RolloutNodeCompleted {
                rollout_id: "r1".into(),
                node_id: id("node-body-1"),
                version: Some("2.0".into()),
                cluster_seq: 48,
            },
            Event::RolloutPaused { rollout_id: "r1".into() },
        ]);
        let r = v.rollout("r1").unwrap();
        assert_eq!(r.wave, 1);
        assert_eq!(r.state, RolloutState::Paused);
        assert_eq!(r.cluster_seq, 50, "the highest cluster id seen, whatever the order");
        assert_eq!(r.nodes[&id("node-body-1")].state, NodeState::Completed);
        assert_eq!(r.nodes[&id("node-body-1")].requested_at_ms, Some(3000));
        assert_eq!(r.nodes[&id("node-body-2")].error.as_deref(), Some("boom"));
        assert_eq!(r.nodes[&id("node-head-1")].state, NodeState::Pending);
        assert_eq!(v.next_rollout_id(), "r2");
        assert_eq!(v.active_rollouts().count(), 1);
    }

    #[test]
    fn finished_rollouts_are_no_longer_active() {
        let v = fold(vec![
            started(),
            Event::RolloutAborted { rollout_id: "r1".into(), reason: "too many".into() },
        ]);
        let r = v.rollout("r1").unwrap();
        assert_eq!(r.state, RolloutState::Aborted);
        assert_eq!(r.finished_at_ms, Some(2000));
        assert_eq!(v.active_rollouts().count(), 0);
        assert!(v.rollout("r2").is_none() && v.rollout("x1").is_none() && v.rollout("r0").is_none());
    }
}
