//! ExperienceLibrary's commands: plain functions from the library views to events.
//! They run on the ledger thread, so every check (is this build new? is this node
//! still pending?) and the events it leads to are one atomic step: a rollout never
//! asks for the same node twice, and the same `build.uploaded` never acts twice.

use hydra_core::error::DomainError;
use hydra_core::ledger::Decision;
use hydra_events::{Event, NodeId, RolloutPolicy, SkippedNode};
use hydra_projections::{LibraryViews, NodeState, RolloutState, RolloutView};

/// `POST /api/v1/experiences`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExperience {
    pub id: String,
    pub project: String,
    pub district: String,
    pub venues: Vec<String>,
    #[serde(default)]
    pub auto_promote: bool,
}

/// A build: `POST /api/v1/experiences/{id}/builds`, or HydraRelease's `build.uploaded`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct NewBuild {
    #[serde(deserialize_with = "build_id")]
    pub build: String,
    pub version: String,
    pub artifact_url: String,
    pub sha256: String,
}

/// A build id as HydraRelease sends it: a JSON string or a whole number, one build
/// either way (`1` is `"1"`); Hydra keeps and shows it as the string.
pub fn build_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    optional_build_id(d)?.ok_or_else(|| serde::de::Error::custom("build must be a string or a whole number"))
}

/// `build_id` for an optional field (`null` is none).
pub fn optional_build_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    match <Option<Id> as serde::Deserialize>::deserialize(d) {
        Ok(id) => Ok(id.map(|id| match id {
            Id::Text(s) => s,
            Id::Number(n) => n.to_string(),
        })),
        Err(_) => Err(serde::de::Error::custom("build must be a string or a whole number")),
    }
}

/// Experience ids, projects and builds: short plain names (districts and venues follow
/// `names::label`, hydracluster's rule).
pub fn check_name(what: &str, value: &str) -> Result<(), DomainError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(DomainError::Invalid(format!(
            "{what} {:?} must be 1 to 128 letters, digits, '-', '_', '.' or ':'",
            value.chars().take(80).collect::<String>()
        )))
    }
}

pub fn create_experience(x: NewExperience) -> impl FnOnce(&LibraryViews) -> Result<Decision, DomainError> {
    move |views| {
        check_name("experience id", &x.id)?;
        check_name("project", &x.project)?;
        // Districts and venues follow hydracluster's rule, so every place it accepts
        // can be rolled out to.
        let district = hydra_core::names::label("district", &x.district)?;
        if x.venues.is_empty() {
            return Err(DomainError::Invalid("venues must name at least one venue".into()));
        }
        let mut venues =
            x.venues.iter().map(|v| hydra_core::names::label("venue", v)).collect::<Result<Vec<_>, _>>()?;
        if views.experiences.contains_key(&x.id) {
            return Err(DomainError::Conflict(format!("experience {} exists already", x.id)));
        }
        venues.sort();
        venues.dedup();
        Ok(Decision::events(vec![Event::ExperienceCreated {
            experience_id: x.id,
            project: x.project,
            district,
            venues,
            auto_promote: x.auto_promote,
        }]))
    }
}

/// Registers a build as the experience's development build. A build the experience
/// already has changes nothing (no events): HydraRelease may send the same
/// `build.uploaded` again after a reconnect.
pub fn register_build(
    experience_id: String,
    b: NewBuild,
    release_event_id: Option<String>,
) -> impl FnOnce(&LibraryViews) -> Result<Decision, DomainError> {
    move |views| {
        let x = views
            .experiences
            .get(&experience_id)
            .ok_or_else(|| DomainError::NotFound(format!("no experience {experience_id}")))?;
        check_name("build", &b.build)?;
        if b.version.trim().is_empty() || b.version.len() > 128 {
            return Err(DomainError::Invalid("version must be 1 to 128 characters".into()));
        }
        if !(b.artifact_url.starts_with("https://") || b.artifact_url.starts_with("http://")) {
            return Err(DomainError::Invalid(format!(
                "artifact_url {:?} must be an http(s) URL",
                b.artifact_url
            )));
        }
        if b.sha256.len() != 64 || !b.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(DomainError::Invalid("sha256 must be 64 hex digits".into()));
        }
        if let Some(known) = x.builds.get(&b.build) {
            if known.version != b.version || known.sha256 != b.sha256.to_ascii_lowercase() {
                return Err(DomainError::Conflict(format!(
                    "build {} of {experience_id} is registered already with another version or digest",
                    b.build
                )));
            }
            return Ok(Decision::default());
        }
        Ok(Decision::events(vec![Event::BuildRegistered {
            experience_id,
            build: b.build,
            version: b.version,
            artifact_url: b.artifact_url,
            sha256: b.sha256.to_ascii_lowercase(),
            release_event_id,
        }]))
    }
}

/// Where a promotion to `to` takes its build from.
pub fn source_environment(to: &str) -> Result<&'static str, DomainError> {
    match to {
        "staging" => Ok("development"),
        "production" => Ok("staging"),
        other => Err(DomainError::Invalid(format!("cannot promote to {other:?}: use staging or production"))),
    }
}

/// What `promote` found on hydracluster, fetched before the command runs.
#[derive(Debug, Clone)]
pub struct Targets {
    pub bodies: Vec<NodeId>,
    pub heads: Vec<NodeId>,
    pub skipped: Vec<SkippedNode>,
    /// hydracluster's last event id when the nodes were listed.
    pub cluster_since: u64,
}

/// The build a promotion to `to` would take, checked against the views: the
/// experience exists, the pinned build is one of its builds (or, unpinned, the source
/// environment has a build), and no rollout of the same experience and environment is
/// still going.
pub fn promotion_check(
    views: &LibraryViews,
    experience_id: &str,
    to: &str,
    pinned: Option<&str>,
) -> Result<(String, String), DomainError> {
    let from = source_environment(to)?;
    let x = views
        .experiences
        .get(experience_id)
        .ok_or_else(|| DomainError::NotFound(format!("no experience {experience_id}")))?;
    let source = match pinned {
        Some(build) => {
            let b = x.builds.get(build).ok_or_else(|| {
                DomainError::NotFound(format!("{experience_id} has no build {build:?}; register it first"))
            })?;
            (build.to_owned(), b.version.clone())
        }
        None => x.environments.get(from).map(|e| (e.build.clone(), e.version.clone())).ok_or_else(|| {
            DomainError::Conflict(format!("{experience_id} has no {from} build to promote to {to}"))
        })?,
    };
    if let Some(r) = views.active_rollouts().find(|r| r.experience_id == experience_id && r.environment == to)
    {
        return Err(DomainError::Conflict(format!(
            "rollout {} of {experience_id} to {to} is still {}; cancel it or wait",
            r.id,
            r.state.as_str()
        )));
    }
    Ok(source)
}

/// Promotes the source environment's build to `to` and, when there are nodes to
/// reprovision, starts a rollout. `expected_build` is the build the caller saw when
/// it listed the nodes: if another build arrived meanwhile the caller must look again.
/// With `skip_if_current`, a target environment that runs that build already is left
/// as it is (no events): two auto-promotions of one build promote once.
pub fn promote(
    experience_id: String,
    to: String,
    expected_build: String,
    pinned: Option<String>,
    targets: Option<Targets>,
    policy: RolloutPolicy,
    skip_if_current: bool,
) -> impl FnOnce(&LibraryViews) -> Result<Decision, DomainError> {
    move |views| {
        let current = views.experiences.get(&experience_id).and_then(|x| x.environments.get(&to));
        if skip_if_current && current.is_some_and(|c| c.build == expected_build) {
            return Ok(Decision::default());
        }
        let (build, version) = promotion_check(views, &experience_id, &to, pinned.as_deref())?;
        if build != expected_build {
            return Err(DomainError::Conflict(format!(
                "the build of {experience_id} changed to {build} while promoting; promote again"
            )));
        }
        let x = &views.experiences[&experience_id];
        let targets = targets.filter(|t| !t.bodies.is_empty() || !t.heads.is_empty());
        let rollout_id = targets.as_ref().map(|_| views.next_rollout_id());
        let mut events = vec![Event::ExperiencePromoted {
            experience_id: experience_id.clone(),
            environment: to.clone(),
            build: build.clone(),
            version: version.clone(),
            rollout_id: rollout_id.clone(),
        }];
        if let (Some(t), Some(rollout_id)) = (targets, rollout_id) {
            events.push(Event::RolloutStarted {
                rollout_id,
                experience_id,
                environment: to,
                build,
                version,
                district: x.district.clone(),
                venues: x.venues.clone(),
                bodies: t.bodies,
                heads: t.heads,
                skipped: t.skipped,
                policy,
                cluster_since: t.cluster_since,
            });
        }
        Ok(Decision::events(events))
    }
}

/// A new rollout that redoes a finished one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redo {
    /// The build the environment had before, on every node the rollout reached.
    Rollback,
    /// The same build, on the nodes that failed.
    Retry,
}

impl Redo {
    pub fn as_str(self) -> &'static str {
        match self {
            Redo::Rollback => "rollback",
            Redo::Retry => "retry",
        }
    }
}

/// Starts a rollout that redoes `of` (see `Redo`), bodies then heads as always, with
/// `policy` (the earlier rollout's unless overridden). A paused rollout is cancelled
/// in the same step; a running one is refused (pause or cancel it first), and so is a
/// rollback with no earlier build or a retry with nothing failed. A rollback also puts
/// the environment's build back.
pub fn redo(
    of: String,
    what: Redo,
    policy: Option<RolloutPolicy>,
    cluster_since: u64,
) -> impl FnOnce(&LibraryViews) -> Result<Decision, DomainError> {
    move |views| {
        let r = views.rollout(&of).ok_or_else(|| DomainError::NotFound(format!("no rollout {of}")))?;
        let verb = what.as_str();
        if r.state == RolloutState::Running {
            return Err(DomainError::Conflict(format!(
                "rollout {of} is still running; pause or cancel it before a {verb}"
            )));
        }
        if let Some(other) = views
            .active_rollouts()
            .find(|o| o.id != r.id && o.experience_id == r.experience_id && o.environment == r.environment)
        {
            return Err(DomainError::Conflict(format!(
                "rollout {} of {} to {} is still {}; cancel it or wait",
                other.id,
                r.experience_id,
                r.environment,
                other.state.as_str()
            )));
        }
        let wanted = |state: NodeState| match what {
            Redo::Rollback => state != NodeState::Pending,
            Redo::Retry => state == NodeState::Failed,
        };
        let pick = |ids: &[NodeId]| -> Vec<NodeId> {
            ids.iter().filter(|id| r.nodes.get(*id).is_some_and(|p| wanted(p.state))).cloned().collect()
        };
        let (bodies, heads) = (pick(&r.bodies), pick(&r.heads));
        if bodies.is_empty() && heads.is_empty() {
            return Err(DomainError::Conflict(match what {
                Redo::Rollback => format!("rollout {of} reached no node: there is nothing to roll back"),
                Redo::Retry => format!("rollout {of} has no failed node: there is nothing to retry"),
            }));
        }
        let (build, version) = match what {
            Redo::Retry => (r.build.clone(), r.version.clone()),
            Redo::Rollback => r.previous_build.clone().ok_or_else(|| {
                DomainError::Conflict(format!(
                    "{} had no build in {} before rollout {of}: there is nothing to roll back to",
                    r.experience_id, r.environment
                ))
            })?,
        };
        let rollout_id = views.next_rollout_id();
        let mut events = Vec::new();
        if r.state == RolloutState::Paused {
            events.push(Event::RolloutCancelled { rollout_id: of.clone() });
        }
        if what == Redo::Rollback {
            events.push(Event::ExperiencePromoted {
                experience_id: r.experience_id.clone(),
                environment: r.environment.clone(),
                build: build.clone(),
                version: version.clone(),
                rollout_id: Some(rollout_id.clone()),
            });
        }
        events.push(Event::RolloutStarted {
            rollout_id: rollout_id.clone(),
            experience_id: r.experience_id.clone(),
            environment: r.environment.clone(),
            build,
            version,
            district: r.district.clone(),
            venues: r.venues.clone(),
            bodies,
            heads,
            skipped: Vec::new(),
            policy: policy.unwrap_or_else(|| r.policy.clone()),
            cluster_since,
        });
        events.push(Event::RolloutOrigin { rollout_id, kind: verb.into(), of_rollout: of });
        Ok(Decision::events(events))
    }
}

/// What an operator can do to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Cancel,
}

impl Control {
    pub fn parse(s: &str) -> Option<Control> {
        match s {
            "pause" => Some(Control::Pause),
            "resume" => Some(Control::Resume),
            "cancel" => Some(Control::Cancel),
            _ => None,
        }
    }
}

pub fn control(
    rollout_id: String,
    what: Control,
) -> impl FnOnce(&LibraryViews) -> Result<Decision, DomainError> {
    move |views| {
        let r = views
            .rollout(&rollout_id)
            .ok_or_else(|| DomainError::NotFound(format!("no rollout {rollout_id}")))?;
        let refuse = |verb: &str| {
            Err(DomainError::Conflict(format!(
                "rollout {rollout_id} is {}; it cannot be {verb}",
                r.state.as_str()
            )))
        };
        let event = match (what, r.state) {
            (Control::Pause, RolloutState::Running) => Event::RolloutPaused { rollout_id },
            (Control::Pause, RolloutState::Paused) => return Ok(Decision::default()),
            (Control::Pause, _) => return refuse("paused"),
            (Control::Resume, RolloutState::Paused) => Event::RolloutResumed { rollout_id },
            (Control::Resume, RolloutState::Running) => return Ok(Decision::default()),
            (Control::Resume, _) => return refuse("resumed"),
            (Control::Cancel, RolloutState::Running | RolloutState::Paused) => {
                Event::RolloutCancelled { rollout_id }
            }
            (Control::Cancel, RolloutState::Cancelled) => return Ok(Decision::default()),
            (Control::Cancel, _) => return refuse("cancelled"),
        };
        Ok(Decision::events(vec![event]))
    }
}

/// What hydracluster said about a node, from its event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterReport {
    Started,
    Completed { version: Option<String> },
    Failed { error: String },
}

/// Records a cluster `provision.*` event for every rollout that is waiting on that
/// node and started before it. Repeats (after a reconnect or a restart) and
/// events about nodes nobody waits for record nothing.
pub fn record_cluster(
    node_id: NodeId,
    cluster_seq: u64,
    report: ClusterReport,
) -> impl FnOnce(&LibraryViews) -> Result<Decision, DomainError> {
    move |views| {
        let mut events = Vec::new();
        // Finished rollouts too: a node still in flight when its rollout was aborted or
        // cancelled gets its result recorded, so the rollout does not show it
        // provisioning for good.
        for r in views.rollouts.values() {
            if cluster_seq <= r.cluster_since {
                continue;
            }
            let Some(p) = r.nodes.get(&node_id) else { continue };
            let rollout_id = r.id.clone();
            let node_id = node_id.clone();
            match (&report, p.state) {
                (ClusterReport::Started, NodeState::Requested) => {
                    events.push(Event::RolloutNodeStarted { rollout_id, node_id, cluster_seq })
                }
                (ClusterReport::Completed { version }, s) if s.in_flight() => {
                    events.push(Event::RolloutNodeCompleted {
                        rollout_id,
                        node_id,
                        version: version.clone(),
                        cluster_seq,
                    })
                }
                (ClusterReport::Failed { error }, s) if s.in_flight() => {
                    events.push(Event::RolloutNodeFailed {
                        rollout_id,
                        node_id,
                        error: error.clone(),
                        cluster_seq: Some(cluster_seq),
                    })
                }
                _ => {}
            }
        }
        Ok(Decision::events(events))
    }
}

/// The rollout's own verdict on a node it asked for: hydracluster refused the
/// request (node gone, not approved), or could not be reached for too long.
pub fn node_refused(
    rollout_id: String,
    node_id: NodeId,
    error: String,
) -> impl FnOnce(&LibraryViews) -> Result<Decision, DomainError> {
    move |views| {
        let in_flight = views
            .rollout(&rollout_id)
            .filter(|r| !r.state.is_final())
            .and_then(|r| r.nodes.get(&node_id))
            .is_some_and(|p| p.state.in_flight());
        if !in_flight {
            return Ok(Decision::default());
        }
        Ok(Decision::events(vec![Event::RolloutNodeFailed { rollout_id, node_id, error, cluster_seq: None }]))
    }
}

/// Moves a rollout along as far as it can go now: fails nodes past their deadline,
/// aborts past the failure threshold, starts waves, asks for more nodes up to the
/// parallelism limit, and finishes it. Nothing new is asked while it is paused.
pub fn advance(
    rollout_id: String,
    now_ms: u64,
) -> impl FnOnce(&LibraryViews) -> Result<Decision, DomainError> {
    move |views| {
        let Some(r) = views.rollout(&rollout_id) else { return Ok(Decision::default()) };
        Ok(Decision::events(next_steps(r, now_ms)))
    }
}

/// The events that move `r` along at `now_ms`, worked out on a scratch copy so that
/// each step sees the ones before it.
pub fn next_steps(r: &RolloutView, now_ms: u64) -> Vec<Event> {
    let mut r = r.clone();
    let mut out = Vec::new();
    let mut emit = |r: &mut RolloutView, e: Event| {
        r.apply(&e, now_ms);
        out.push(e);
    };
    if r.state.is_final() {
        return out;
    }
    let id = r.id.clone();
    // Deadlines run while paused too: a node that went quiet is failed either way.
    let late: Vec<NodeId> = r
        .nodes
        .iter()
        .filter(|(_, p)| p.state.in_flight())
        .filter(|(_, p)| {
            p.requested_at_ms.is_some_and(|t| now_ms.saturating_sub(t) > r.policy.node_deadline_ms)
        })
        .map(|(n, _)| n.clone())
        .collect();
    for node_id in late {
        let error = format!(
            "no provisioning result within the node deadline of {}",
            humantime::format_duration(std::time::Duration::from_millis(r.policy.node_deadline_ms))
        );
        emit(&mut r, Event::RolloutNodeFailed { rollout_id: id.clone(), node_id, error, cluster_seq: None });
    }
    let failed = r.count(NodeState::Failed);
    if r.policy.failure_threshold.exceeded(failed, r.total()) {
        let reason = format!(
            "{failed} of {} nodes failed, past the failure threshold of {}",
            r.total(),
            r.policy.failure_threshold
        );
        emit(&mut r, Event::RolloutAborted { rollout_id: id, reason });
        return out;
    }
    if r.state == RolloutState::Paused {
        return out;
    }
    loop {
        if r.wave == 0 {
            let nodes = r.bodies.clone();
            emit(&mut r, Event::RolloutWaveStarted { rollout_id: id.clone(), wave: 1, nodes });
        }
        let wave = r.wave;
        let nodes = r.wave_nodes(wave).to_vec();
        let in_flight = nodes.iter().filter(|n| r.nodes[*n].state.in_flight()).count() as u32;
        let room = r.policy.max_parallel.max(1).saturating_sub(in_flight) as usize;
        let pending: Vec<NodeId> =
            nodes.iter().filter(|n| r.nodes[*n].state == NodeState::Pending).take(room).cloned().collect();
        for node_id in pending {
            emit(&mut r, Event::RolloutNodeRequested { rollout_id: id.clone(), node_id, wave });
        }
        if !nodes.iter().all(|n| r.nodes[n].state.finished()) {
            return out;
        }
        let count = |s: NodeState| nodes.iter().filter(|n| r.nodes[*n].state == s).count() as u32;
        let (completed, failed) = (count(NodeState::Completed), count(NodeState::Failed));
        emit(&mut r, Event::RolloutWaveCompleted { rollout_id: id.clone(), wave, completed, failed });
        if wave == 1 {
            let nodes = r.heads.clone();
            emit(&mut r, Event::RolloutWaveStarted { rollout_id: id.clone(), wave: 2, nodes });
            continue;
        }
        let failed = r.count(NodeState::Failed);
        let state = if failed == 0 { RolloutState::Completed } else { RolloutState::CompletedWithFailures };
        emit(&mut r, Event::RolloutCompleted { rollout_id: id, state: state.as_str().into(), failed });
        return out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydra_events::{Envelope, FailureThreshold};
    use hydra_projections::Projection;

    fn id(s: &str) -> NodeId {
        NodeId::parse(&format!("node-{s}")).unwrap()
    }

    struct World {
        views: LibraryViews,
        seq: u64,
    }

    impl World {
        fn new() -> World {
            World { views: LibraryViews::default(), seq: 0 }
        }

        fn run(
            &mut self,
            now_ms: u64,
            c: impl FnOnce(&LibraryViews) -> Result<Decision, DomainError>,
        ) -> Vec<Event> {
            let d = c(&self.views).expect("command accepted");
            for event in &d.events {
                self.seq += 1;
                self.views.apply(&Envelope {
                    seq: self.seq,
                    at_ms: now_ms,
                    schema: hydra_events::CURRENT_SCHEMA,
                    cause: "test".into(),
                    prev_hash: hydra_events::ZERO_HASH,
                    event: event.clone(),
                });
            }
            d.events
        }

        fn rollout(&self) -> &RolloutView {
            self.views.rollout("r1").unwrap()
        }
    }

    fn names(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::RolloutNodeRequested { node_id, .. } => format!("request {}", &node_id.as_str()[5..]),
                Event::RolloutNodeFailed { node_id, .. } => format!("fail {}", &node_id.as_str()[5..]),
                Event::RolloutWaveStarted { wave, .. } => format!("wave {wave}"),
                Event::RolloutWaveCompleted { wave, .. } => format!("wave {wave} done"),
                other => other.type_name().to_string(),
            })
            .collect()
    }

    fn policy(max_parallel: u32, threshold: FailureThreshold) -> RolloutPolicy {
        RolloutPolicy { max_parallel, failure_threshold: threshold, node_deadline_ms: 60_000 }
    }

    /// An experience with a development build, promoted to staging over 3 bodies and
    /// 2 heads.
    fn world(p: RolloutPolicy) -> World {
        let mut w = World::new();
        w.run(
            0,
            create_experience(NewExperience {
                id: "space".into(),
                project: "space-game".into(),
                district: "d1".into(),
                venues: vec!["v1".into()],
                auto_promote: false,
            }),
        );
        let build = NewBuild {
            build: "b1".into(),
            version: "1.0".into(),
            artifact_url: "https://x/b1".into(),
            sha256: "a".repeat(64),
        };
        w.run(0, register_build("space".into(), build, Some("9".into())));
        let targets = Targets {
            bodies: vec![id("b1"), id("b2"), id("b3")],
            heads: vec![id("h1"), id("h2")],
            skipped: vec![],
            cluster_since: 100,
        };
        let e = w.run(
            0,
            promote(
                "space".into(),
                "staging".into(),
                "b1".into(),
                None,
                Some(targets.clone()),
                p.clone(),
                true,
            ),
        );
        assert_eq!(names(&e), ["experience.promoted", "rollout.started"]);
        let again =
            promote("space".into(), "staging".into(), "b1".into(), None, Some(targets), p, true)(&w.views);
        assert!(again.unwrap().events.is_empty(), "an auto-promotion of the same build promotes once");
        w
    }

    fn report(w: &mut World, node: &str, seq: u64, r: ClusterReport) -> Vec<Event> {
        w.run(0, record_cluster(id(node), seq, r))
    }

    #[test]
    fn heads_are_asked_only_after_every_body_has_finished() {
        let mut w = world(policy(2, FailureThreshold::Count(5)));
        assert_eq!(names(&w.run(0, advance("r1".into(), 0))), ["wave 1", "request b1", "request b2"]);
        assert!(w.run(0, advance("r1".into(), 0)).is_empty(), "the limit of 2 holds");
        report(&mut w, "b1", 101, ClusterReport::Started);
        report(&mut w, "b1", 102, ClusterReport::Completed { version: Some("1.0".into()) });
        assert_eq!(names(&w.run(0, advance("r1".into(), 0))), ["request b3"]);
        report(&mut w, "b2", 103, ClusterReport::Failed { error: "disk full".into() });
        assert!(w.run(0, advance("r1".into(), 0)).is_empty(), "b3 is still going: no head yet");
        report(&mut w, "b3", 104, ClusterReport::Completed { version: None });
        assert_eq!(
            names(&w.run(0, advance("r1".into(), 0))),
            ["wave 1 done", "wave 2", "request h1", "request h2"]
        );
        report(&mut w, "h1", 105, ClusterReport::Completed { version: None });
        report(&mut w, "h2", 106, ClusterReport::Completed { version: None });
        let e = w.run(0, advance("r1".into(), 0));
        assert_eq!(names(&e), ["wave 2 done", "rollout.completed"]);
        assert_eq!(w.rollout().state, RolloutState::CompletedWithFailures);
        assert_eq!(w.rollout().nodes[&id("b2")].error.as_deref(), Some("disk full"));
    }

    #[test]
    fn cluster_events_from_before_the_rollout_or_repeated_record_nothing() {
        let mut w = world(policy(5, FailureThreshold::Count(5)));
        w.run(0, advance("r1".into(), 0));
        assert!(report(&mut w, "b1", 100, ClusterReport::Completed { version: None }).is_empty(), "older");
        assert_eq!(report(&mut w, "b1", 101, ClusterReport::Completed { version: None }).len(), 1);
        assert!(report(&mut w, "b1", 101, ClusterReport::Completed { version: None }).is_empty(), "repeat");
        assert!(
            report(&mut w, "h1", 102, ClusterReport::Completed { version: None }).is_empty(),
            "not asked"
        );
    }

    #[test]
    fn a_rollout_aborts_past_the_failure_threshold_and_asks_nothing_more() {
        let mut w = world(policy(1, FailureThreshold::Percent(20)));
        w.run(0, advance("r1".into(), 0));
        report(&mut w, "b1", 101, ClusterReport::Failed { error: "e1".into() });
        assert_eq!(names(&w.run(0, advance("r1".into(), 0))), ["request b2"], "1 of 5 is 20%: not past it");
        report(&mut w, "b2", 102, ClusterReport::Failed { error: "e2".into() });
        assert_eq!(names(&w.run(0, advance("r1".into(), 0))), ["rollout.aborted"]);
        assert_eq!(w.rollout().state, RolloutState::Aborted);
        assert!(w.rollout().reason.as_ref().unwrap().contains("2 of 5 nodes failed"));
        assert!(w.run(0, advance("r1".into(), 0)).is_empty());
    }

    #[test]
    fn a_node_past_its_deadline_fails_even_while_paused() {
        let mut w = world(policy(1, FailureThreshold::Count(5)));
        w.run(0, advance("r1".into(), 0));
        w.run(0, control("r1".into(), Control::Pause));
        assert!(w.run(60_000, advance("r1".into(), 60_000)).is_empty());
        assert_eq!(names(&w.run(60_001, advance("r1".into(), 60_001))), ["fail b1"]);
        assert!(w.run(60_002, advance("r1".into(), 60_002)).is_empty(), "paused: b2 waits");
        w.run(60_003, control("r1".into(), Control::Resume));
        assert_eq!(names(&w.run(60_004, advance("r1".into(), 60_004))), ["request b2"]);
    }

    #[test]
    fn a_cancelled_rollout_asks_nothing_more_and_cannot_resume() {
        let mut w = world(policy(1, FailureThreshold::Count(5)));
        w.run(0, advance("r1".into(), 0));
        w.run(0, control("r1".into(), Control::Cancel));
        assert!(w.run(0, advance("r1".into(), 0)).is_empty());
        report(&mut w, "b1", 101, ClusterReport::Completed { version: None });
        assert_eq!(w.rollout().count(NodeState::Completed), 1, "the body in flight still gets its result");
        assert_eq!(w.rollout().state, RolloutState::Cancelled);
        let err = control("r1".into(), Control::Resume)(&w.views).unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
        assert!(w.run(0, control("r1".into(), Control::Cancel)).is_empty(), "cancelling twice is a no-op");
    }

    #[test]
    fn the_same_build_twice_registers_once_and_a_changed_one_is_refused() {
        let mut w = world(policy(1, FailureThreshold::Count(5)));
        let same = NewBuild {
            build: "b1".into(),
            version: "1.0".into(),
            artifact_url: "https://x/b1".into(),
            sha256: "A".repeat(64),
        };
        assert!(w.run(0, register_build("space".into(), same.clone(), Some("10".into()))).is_empty());
        let changed = NewBuild { version: "1.1".into(), ..same };
        let err = register_build("space".into(), changed, None)(&w.views).unwrap_err();
        assert!(matches!(err, DomainError::Conflict(_)));
    }

    #[test]
    fn promotion_needs_a_source_build_and_no_rollout_in_progress() {
        let w = world(policy(1, FailureThreshold::Count(5)));
        let again = promotion_check(&w.views, "space", "staging", None).unwrap_err();
        assert!(again.to_string().contains("rollout r1"), "{again}");
        let prod = promotion_check(&w.views, "space", "production", None).unwrap();
        assert_eq!(prod.0, "b1", "production takes what staging has");
        assert!(matches!(promotion_check(&w.views, "nope", "staging", None), Err(DomainError::NotFound(_))));
        assert!(matches!(promotion_check(&w.views, "space", "qa", None), Err(DomainError::Invalid(_))));
    }
}
