//! The event vocabulary of Hydra: every fact the control plane records, the envelope
//! that carries it in the log, and the codec that turns envelopes into bytes.
//!
//! This crate knows nothing of HTTP, storage or async runtimes: it is plain data.

mod codec;
mod envelope;
mod ids;
mod v1;
mod v2;

pub use codec::{
    decode, decode_link, decode_prefix, encode, hash, is_canonical, CodecError, FORMAT_V1, FORMAT_V2,
};
pub use envelope::{Envelope, Hash, CURRENT_SCHEMA, ZERO_HASH};
pub use ids::{ExecId, IdError, NodeId};

use serde::{Deserialize, Serialize};

/// Which binary a `node.update_requested` asks the node to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateTarget {
    /// The node agent itself (`update-node`).
    Node,
    /// The service binaries the agent manages (`update-services`).
    Services,
}

impl UpdateTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateTarget::Node => "node",
            UpdateTarget::Services => "services",
        }
    }
}

/// Every fact Hydra records. New variants are only ever added at the end: the codec
/// stores the variant index, so reordering would change the meaning of old logs. A
/// variant whose fields change needs a new `CURRENT_SCHEMA` and the old shape frozen
/// in a `vN.rs` with its upcast (the golden tests in `tests/it/formats.rs` fail until
/// then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A machine submitted the enrollment form; it waits for an admin.
    NodeEnrolled {
        node_id: NodeId,
        name: String,
        ip: String,
    },
    /// An admin approved a pending node and placed it. Schema 2 added `owner`: in
    /// schema 1 an owner came in a `NodePlacementChanged` right after (see `v1.rs`).
    NodeApproved {
        node_id: NodeId,
        roles: Vec<String>,
        district: String,
        venue: String,
        environment: String,
        owner: Option<String>,
    },
    NodeRejected {
        node_id: NodeId,
    },
    /// The node is gone from the fleet; its token no longer works.
    NodeRemoved {
        node_id: NodeId,
    },
    NodeRolesChanged {
        node_id: NodeId,
        roles: Vec<String>,
    },
    NodePlacementChanged {
        node_id: NodeId,
        district: String,
        venue: String,
        environment: String,
        owner: Option<String>,
    },
    NodeDrainChanged {
        node_id: NodeId,
        draining: bool,
    },
    /// An admin flagged the node to update its agent or its services.
    NodeUpdateRequested {
        node_id: NodeId,
        target: UpdateTarget,
    },
    /// A heartbeat response carried the update flag to the node.
    NodeUpdateDelivered {
        node_id: NodeId,
        target: UpdateTarget,
    },
    NodeOnline {
        node_id: NodeId,
    },
    /// No heartbeat arrived for the heartbeat timeout; `last_seen_ms` is the last one.
    NodeOffline {
        node_id: NodeId,
        last_seen_ms: u64,
    },
    NodeProviderChanged {
        node_id: NodeId,
        provider_status: Option<String>,
        provider_version: Option<String>,
    },
    NodeAgentChanged {
        node_id: NodeId,
        agent_version: Option<String>,
        os: Option<String>,
    },
    NodeNetworkChanged {
        node_id: NodeId,
        wireguard_ip: Option<String>,
    },
    NodeStreamChanged {
        node_id: NodeId,
        stream_status: String,
    },
    /// An admin queued a command for a node (FIFO per node).
    ExecQueued {
        exec_id: ExecId,
        node_id: NodeId,
        command: String,
        timeout_ms: u64,
        retry_on_disconnect: bool,
        /// When it expires if it was never delivered, unix ms.
        deliver_by_ms: u64,
    },
    /// The agent fetched the command: it is in flight.
    ExecDispatched {
        exec_id: ExecId,
        node_id: NodeId,
    },
    ExecCompleted {
        exec_id: ExecId,
        node_id: NodeId,
        output: ExecResult,
    },
    /// The command ran out of time: reported by the agent (with what it printed) or
    /// synthesised by the server's watchdog after timeout + grace (without).
    ExecTimedOut {
        exec_id: ExecId,
        node_id: NodeId,
        output: Option<ExecResult>,
        by: String,
    },
    ExecCancelled {
        exec_id: ExecId,
        node_id: NodeId,
        was_dispatched: bool,
    },
    /// An in-flight command went back to the front of its queue (the node went offline
    /// or the agent restarted, and the command allows a retry).
    ExecRequeued {
        exec_id: ExecId,
        node_id: NodeId,
        reason: String,
    },
    /// The command ended without running to completion (`node_offline`,
    /// `agent_restarted`, `node_removed`, …).
    ExecFailed {
        exec_id: ExecId,
        node_id: NodeId,
        reason: String,
    },
    /// Never delivered before its delivery deadline.
    ExecExpired {
        exec_id: ExecId,
        node_id: NodeId,
    },
    /// An admin's terminal on the node began: the agent attached to the session.
    /// `command` is None for an interactive login shell. What is typed and printed is
    /// never recorded.
    ShellOpened {
        session_id: String,
        node_id: NodeId,
        command: Option<String>,
    },
    /// The terminal session ended; `exit_code` is the shell's, None when the
    /// connection ended before it exited (the admin hung up, the agent was lost).
    ShellClosed {
        session_id: String,
        node_id: NodeId,
        exit_code: Option<i32>,
    },
    /// A kiosk head enrolled itself with the fleet enrollment token. Heads are nodes
    /// (one id space, one `?node=` filter) and are approved at once.
    HeadRegistered {
        node_id: NodeId,
        name: String,
        district: String,
        venue: String,
    },
    /// The kiosk reported its own state: `idle`, `streaming` or `error`.
    HeadStatusChanged {
        node_id: NodeId,
        status: String,
        detail: Option<String>,
    },
    /// An admin pinned the head to a body (and optionally an app), or cleared it.
    HeadAssigned {
        node_id: NodeId,
        body_id: Option<NodeId>,
        app_id: Option<String>,
    },
    /// The whitelist of experiences the kiosk may offer.
    HeadExperiencesAllowed {
        node_id: NodeId,
        experiences: Vec<String>,
    },
    /// An admin (or a rollout) asked the node to reinstall; the next heartbeat answer
    /// carries `reprovision: true`.
    ReprovisionRequested {
        node_id: NodeId,
    },
    /// The reprovision flag reached the node (recorded once, however often it
    /// heartbeats); the provisioning deadline runs from here.
    ProvisionStarted {
        node_id: NodeId,
    },
    ProvisionCompleted {
        node_id: NodeId,
        version: Option<String>,
    },
    /// The node reported a failure, or said nothing before the deadline (`timeout`).
    ProvisionFailed {
        node_id: NodeId,
        error: String,
    },
    /// An admin force-stopped the body's stream; `exec` says how the body answered.
    StreamStopped {
        node_id: NodeId,
        exec: String,
    },
    /// A body anomaly began (`orphan_stream`: streaming with no head connected;
    /// `gpu_busy_without_stream`).
    AnomalyStarted {
        node_id: NodeId,
        kind: String,
    },
    AnomalyCleared {
        node_id: NodeId,
        kind: String,
    },
    /// ExperienceLibrary: an experience began to be tracked.
    ExperienceCreated {
        experience_id: String,
        project: String,
        district: String,
        venues: Vec<String>,
        auto_promote: bool,
    },
    /// A build of the experience's project arrived (from HydraRelease's
    /// `build.uploaded`, whose id is `release_event_id`, or from the API); it is now
    /// the development build.
    BuildRegistered {
        experience_id: String,
        build: String,
        version: String,
        artifact_url: String,
        sha256: String,
        release_event_id: Option<String>,
    },
    /// A build became the one for `environment`; `rollout_id` names the rollout that
    /// takes it to the machines, if the environment has any.
    ExperiencePromoted {
        experience_id: String,
        environment: String,
        build: String,
        version: String,
        rollout_id: Option<String>,
    },
    /// A rollout began: the bodies (wave 1) and heads (wave 2) it will reprovision,
    /// the nodes it left out and why, and hydracluster's last event id when it looked
    /// (only later cluster events can be about this rollout).
    RolloutStarted {
        rollout_id: String,
        experience_id: String,
        environment: String,
        build: String,
        version: String,
        district: String,
        venues: Vec<String>,
        bodies: Vec<NodeId>,
        heads: Vec<NodeId>,
        skipped: Vec<SkippedNode>,
        policy: RolloutPolicy,
        cluster_since: u64,
    },
    RolloutWaveStarted {
        rollout_id: String,
        wave: u8,
        nodes: Vec<NodeId>,
    },
    /// The rollout decided to reprovision the node; the request to hydracluster
    /// follows (recorded first, so that a restart never asks twice unknowingly).
    RolloutNodeRequested {
        rollout_id: String,
        node_id: NodeId,
        wave: u8,
    },
    /// hydracluster recorded `provision.started` for the node (at its `cluster_seq`).
    RolloutNodeStarted {
        rollout_id: String,
        node_id: NodeId,
        cluster_seq: u64,
    },
    RolloutNodeCompleted {
        rollout_id: String,
        node_id: NodeId,
        version: Option<String>,
        cluster_seq: u64,
    },
    /// The node failed: hydracluster's `provision.failed` (with its `cluster_seq`), or
    /// the rollout's own verdict (deadline passed, request refused), without.
    RolloutNodeFailed {
        rollout_id: String,
        node_id: NodeId,
        error: String,
        cluster_seq: Option<u64>,
    },
    RolloutWaveCompleted {
        rollout_id: String,
        wave: u8,
        completed: u32,
        failed: u32,
    },
    RolloutPaused {
        rollout_id: String,
    },
    RolloutResumed {
        rollout_id: String,
    },
    /// Every node has a result: `completed`, or `completed_with_failures`.
    RolloutCompleted {
        rollout_id: String,
        state: String,
        failed: u32,
    },
    /// Too many nodes failed: no more reprovisions are asked for.
    RolloutAborted {
        rollout_id: String,
        reason: String,
    },
    RolloutCancelled {
        rollout_id: String,
    },
    /// The node became a head or a body (`kind`: `head` or `body`) because of its
    /// roles: `roles` are the roles that decided it.
    NodeKindChanged {
        node_id: NodeId,
        kind: String,
        roles: Vec<String>,
    },
    /// A head lost the body it was pinned to, and why (`no_longer_a_head`,
    /// `body_no_longer_a_body`, `placement_changed`, `body_drained`, `body_removed`).
    HeadUnassigned {
        head_id: NodeId,
        body_id: NodeId,
        reason: String,
    },
    /// The rollout redoes an earlier one (`kind`: `rollback`, putting back the build
    /// the environment had before `of_rollout` on the nodes it reached; `retry`, the
    /// same build on the nodes of `of_rollout` that failed).
    RolloutOrigin {
        rollout_id: String,
        kind: String,
        of_rollout: String,
    },
    /// A node brought in from an existing fleet (`hydracluster import`; the cause names
    /// the file) with what that fleet's server kept of it, or replaced by a later import
    /// with `--update`. Its token is stored as a hash beside the log, never here.
    /// `kind` is `body` or `head`, `status` `pending`, `approved` or `rejected`; the
    /// last three fields are a head's (empty for a body).
    NodeImported {
        node_id: NodeId,
        kind: String,
        name: String,
        ip: String,
        status: String,
        roles: Vec<String>,
        district: String,
        venue: String,
        environment: String,
        owner: Option<String>,
        draining: bool,
        assigned_body: Option<NodeId>,
        app_id: Option<String>,
        allowed_experiences: Vec<String>,
    },
    /// A stream session began: head `head_id` reports streaming from `body_id`, its
    /// assigned body, and both are online with the body streaming. Decided in the
    /// command that made it so (`src/cluster/sessions.rs`); `session_id` is
    /// `session-N`, N counting every session the log ever started.
    SessionStarted {
        session_id: String,
        head_id: NodeId,
        body_id: NodeId,
    },
    /// The session ended, and why: `head_stopped` (the head reported something other
    /// than streaming), `body_stopped` (the body's stream left streaming),
    /// `head_offline`, `body_offline`, `unassigned` (the head was pinned elsewhere or
    /// to nothing), `node_removed`.
    SessionEnded {
        session_id: String,
        head_id: NodeId,
        body_id: NodeId,
        reason: String,
    },
    /// The node's agent registered the Ed25519 public key (hex) it proves itself with
    /// when an admin re-issues its token. Registered once: a different key later is
    /// refused.
    NodeRekeyKeyRegistered {
        node_id: NodeId,
        public_key: String,
    },
    /// An admin re-issued the node's token (`POST /api/v1/nodes/{id}/token`): the old
    /// one was revoked in the same flush. With `claim`, the agent takes the new one by
    /// signing `rekey_id` with its key; without (no key registered), the admin was
    /// handed the new token to deliver.
    NodeTokenRotated {
        node_id: NodeId,
        rekey_id: String,
        claim: bool,
    },
    /// The agent proved its key for `rekey_id` and took its new token.
    NodeRekeyed {
        node_id: NodeId,
        rekey_id: String,
    },
}

/// A node a rollout left out, and why (`offline`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedNode {
    pub node_id: NodeId,
    pub reason: String,
}

/// How a rollout goes: how many nodes reprovision at once, how many failures abort
/// it, and how long one node may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPolicy {
    pub max_parallel: u32,
    pub failure_threshold: FailureThreshold,
    pub node_deadline_ms: u64,
}

/// Past how many failed nodes a rollout aborts: more than `Count` nodes, or more than
/// `Percent` of all its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureThreshold {
    Count(u32),
    Percent(u8),
}

impl FailureThreshold {
    /// `3` or `10%`.
    pub fn parse(s: &str) -> Result<FailureThreshold, String> {
        let s = s.trim();
        let bad = || format!("bad failure threshold {s:?}: use a count like 3 or a percentage like 10%");
        match s.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(FailureThreshold::Percent(p)),
                _ => Err(bad()),
            },
            None => s.parse::<u32>().map(FailureThreshold::Count).map_err(|_| bad()),
        }
    }

    /// True when `failed` of `total` nodes is past the threshold.
    pub fn exceeded(self, failed: u32, total: u32) -> bool {
        match self {
            FailureThreshold::Count(n) => failed > n,
            FailureThreshold::Percent(p) => u64::from(failed) * 100 > u64::from(p) * u64::from(total),
        }
    }
}

impl std::fmt::Display for FailureThreshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureThreshold::Count(n) => write!(f, "{n}"),
            FailureThreshold::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// How a command ended, as its event records it (schema 3): what it printed is not
/// here but in the output store, under the blake3 hash of each stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// None when the process could not be started or was killed without a code.
    pub exit_code: Option<i32>,
    pub stdout: OutputRef,
    pub stderr: OutputRef,
    pub truncated: bool,
    pub duration_ms: u64,
    /// The output itself, only in a record written before schema 3 (which kept it in
    /// the event; records are never rewritten). None in every record written today.
    pub inline: Option<InlineOutput>,
}

/// One stream of a command's output in the output store: the blake3 hash of its bytes
/// (the store's key, and what the audit checks them against) and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    pub hash: Hash,
    pub size: u64,
}

impl OutputRef {
    pub fn of(bytes: &[u8]) -> OutputRef {
        OutputRef { hash: *blake3::hash(bytes).as_bytes(), size: bytes.len() as u64 }
    }
}

/// The output a schema-2 record held inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineOutput {
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    /// The event's part of a report: references to the output, not the output.
    pub fn result(&self) -> ExecResult {
        ExecResult {
            exit_code: self.exit_code,
            stdout: OutputRef::of(self.stdout.as_bytes()),
            stderr: OutputRef::of(self.stderr.as_bytes()),
            truncated: self.truncated,
            duration_ms: self.duration_ms,
            inline: None,
        }
    }
}

/// What a command printed and how it ended, as the agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// None when the process could not be started or was killed without a code.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub duration_ms: u64,
}

/// What an event is about (`Event::about`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct About<'a> {
    pub node: Option<&'a NodeId>,
    pub exec: Option<&'a ExecId>,
    pub rollout: Option<&'a str>,
}

impl Event {
    /// Every type name, in declaration order (a page subscribes to each by name; a
    /// test checks this list against `type_name` of every variant).
    pub const TYPES: &'static [&'static str] = &[
        "node.enrolled",
        "node.approved",
        "node.rejected",
        "node.removed",
        "node.roles_changed",
        "node.placement_changed",
        "node.drain_changed",
        "node.update_requested",
        "node.update_delivered",
        "node.online",
        "node.offline",
        "node.provider_changed",
        "node.agent_changed",
        "node.network_changed",
        "node.stream_changed",
        "exec.queued",
        "exec.dispatched",
        "exec.completed",
        "exec.timed_out",
        "exec.cancelled",
        "exec.requeued",
        "exec.failed",
        "exec.expired",
        "shell.opened",
        "shell.closed",
        "head.registered",
        "head.status_changed",
        "head.assigned",
        "head.allowed_experiences_changed",
        "provision.requested",
        "provision.started",
        "provision.completed",
        "provision.failed",
        "stream.stopped",
        "anomaly.started",
        "anomaly.cleared",
        "experience.created",
        "build.registered",
        "experience.promoted",
        "rollout.started",
        "rollout.wave_started",
        "rollout.node_requested",
        "rollout.node_started",
        "rollout.node_completed",
        "rollout.node_failed",
        "rollout.wave_completed",
        "rollout.paused",
        "rollout.resumed",
        "rollout.completed",
        "rollout.aborted",
        "rollout.cancelled",
        "node.kind_changed",
        "head.unassigned",
        "rollout.origin",
        "node.imported",
        "session.started",
        "session.ended",
        "node.rekey_key_registered",
        "node.token_rotated",
        "node.rekeyed",
    ];

    /// The dotted type name used on the wire (`event:` in SSE, `type` in JSON).
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::NodeEnrolled { .. } => "node.enrolled",
            Event::NodeApproved { .. } => "node.approved",
            Event::NodeRejected { .. } => "node.rejected",
            Event::NodeRemoved { .. } => "node.removed",
            Event::NodeRolesChanged { .. } => "node.roles_changed",
            Event::NodePlacementChanged { .. } => "node.placement_changed",
            Event::NodeDrainChanged { .. } => "node.drain_changed",
            Event::NodeUpdateRequested { .. } => "node.update_requested",
            Event::NodeUpdateDelivered { .. } => "node.update_delivered",
            Event::NodeOnline { .. } => "node.online",
            Event::NodeOffline { .. } => "node.offline",
            Event::NodeProviderChanged { .. } => "node.provider_changed",
            Event::NodeAgentChanged { .. } => "node.agent_changed",
            Event::NodeNetworkChanged { .. } => "node.network_changed",
            Event::NodeStreamChanged { .. } => "node.stream_changed",
            Event::ExecQueued { .. } => "exec.queued",
            Event::ExecDispatched { .. } => "exec.dispatched",
            Event::ExecCompleted { .. } => "exec.completed",
            Event::ExecTimedOut { .. } => "exec.timed_out",
            Event::ExecCancelled { .. } => "exec.cancelled",
            Event::ExecRequeued { .. } => "exec.requeued",
            Event::ExecFailed { .. } => "exec.failed",
            Event::ExecExpired { .. } => "exec.expired",
            Event::ShellOpened { .. } => "shell.opened",
            Event::ShellClosed { .. } => "shell.closed",
            Event::HeadRegistered { .. } => "head.registered",
            Event::HeadStatusChanged { .. } => "head.status_changed",
            Event::HeadAssigned { .. } => "head.assigned",
            Event::HeadExperiencesAllowed { .. } => "head.allowed_experiences_changed",
            Event::ReprovisionRequested { .. } => "provision.requested",
            Event::ProvisionStarted { .. } => "provision.started",
            Event::ProvisionCompleted { .. } => "provision.completed",
            Event::ProvisionFailed { .. } => "provision.failed",
            Event::StreamStopped { .. } => "stream.stopped",
            Event::AnomalyStarted { .. } => "anomaly.started",
            Event::AnomalyCleared { .. } => "anomaly.cleared",
            Event::ExperienceCreated { .. } => "experience.created",
            Event::BuildRegistered { .. } => "build.registered",
            Event::ExperiencePromoted { .. } => "experience.promoted",
            Event::RolloutStarted { .. } => "rollout.started",
            Event::RolloutWaveStarted { .. } => "rollout.wave_started",
            Event::RolloutNodeRequested { .. } => "rollout.node_requested",
            Event::RolloutNodeStarted { .. } => "rollout.node_started",
            Event::RolloutNodeCompleted { .. } => "rollout.node_completed",
            Event::RolloutNodeFailed { .. } => "rollout.node_failed",
            Event::RolloutWaveCompleted { .. } => "rollout.wave_completed",
            Event::RolloutPaused { .. } => "rollout.paused",
            Event::RolloutResumed { .. } => "rollout.resumed",
            Event::RolloutCompleted { .. } => "rollout.completed",
            Event::RolloutAborted { .. } => "rollout.aborted",
            Event::RolloutCancelled { .. } => "rollout.cancelled",
            Event::NodeKindChanged { .. } => "node.kind_changed",
            Event::HeadUnassigned { .. } => "head.unassigned",
            Event::RolloutOrigin { .. } => "rollout.origin",
            Event::NodeImported { .. } => "node.imported",
            Event::SessionStarted { .. } => "session.started",
            Event::SessionEnded { .. } => "session.ended",
            Event::NodeRekeyKeyRegistered { .. } => "node.rekey_key_registered",
            Event::NodeTokenRotated { .. } => "node.token_rotated",
            Event::NodeRekeyed { .. } => "node.rekeyed",
        }
    }

    /// What this event is about: the node (the key of the per-node index and of the
    /// `?node=` filter), the command and the rollout, each if it has one. Every variant
    /// is named here, without a wildcard: a new event must say what it is about, or it
    /// would be missing from the index without a word.
    pub fn about(&self) -> About<'_> {
        match self {
            Event::NodeEnrolled { node_id, .. }
            | Event::NodeApproved { node_id, .. }
            | Event::NodeRejected { node_id, .. }
            | Event::NodeRemoved { node_id, .. }
            | Event::NodeRolesChanged { node_id, .. }
            | Event::NodePlacementChanged { node_id, .. }
            | Event::NodeDrainChanged { node_id, .. }
            | Event::NodeUpdateRequested { node_id, .. }
            | Event::NodeUpdateDelivered { node_id, .. }
            | Event::NodeOnline { node_id, .. }
            | Event::NodeOffline { node_id, .. }
            | Event::NodeProviderChanged { node_id, .. }
            | Event::NodeAgentChanged { node_id, .. }
            | Event::NodeNetworkChanged { node_id, .. }
            | Event::NodeStreamChanged { node_id, .. }
            | Event::ShellOpened { node_id, .. }
            | Event::ShellClosed { node_id, .. }
            | Event::HeadRegistered { node_id, .. }
            | Event::HeadStatusChanged { node_id, .. }
            | Event::HeadAssigned { node_id, .. }
            | Event::HeadExperiencesAllowed { node_id, .. }
            | Event::ReprovisionRequested { node_id, .. }
            | Event::ProvisionStarted { node_id, .. }
            | Event::ProvisionCompleted { node_id, .. }
            | Event::ProvisionFailed { node_id, .. }
            | Event::StreamStopped { node_id, .. }
            | Event::AnomalyStarted { node_id, .. }
            | Event::AnomalyCleared { node_id, .. }
            | Event::NodeKindChanged { node_id, .. }
            | Event::HeadUnassigned { head_id: node_id, .. }
            | Event::SessionStarted { head_id: node_id, .. }
            | Event::SessionEnded { head_id: node_id, .. }
            | Event::NodeRekeyKeyRegistered { node_id, .. }
            | Event::NodeTokenRotated { node_id, .. }
            | Event::NodeRekeyed { node_id, .. }
            | Event::NodeImported { node_id, .. } => About { node: Some(node_id), ..About::default() },
            Event::ExecQueued { node_id, exec_id, .. }
            | Event::ExecDispatched { node_id, exec_id, .. }
            | Event::ExecCompleted { node_id, exec_id, .. }
            | Event::ExecTimedOut { node_id, exec_id, .. }
            | Event::ExecCancelled { node_id, exec_id, .. }
            | Event::ExecRequeued { node_id, exec_id, .. }
            | Event::ExecFailed { node_id, exec_id, .. }
            | Event::ExecExpired { node_id, exec_id, .. } => {
                About { node: Some(node_id), exec: Some(exec_id), rollout: None }
            }
            Event::RolloutNodeRequested { node_id, rollout_id, .. }
            | Event::RolloutNodeStarted { node_id, rollout_id, .. }
            | Event::RolloutNodeCompleted { node_id, rollout_id, .. }
            | Event::RolloutNodeFailed { node_id, rollout_id, .. } => {
                About { node: Some(node_id), exec: None, rollout: Some(rollout_id) }
            }
            Event::RolloutStarted { rollout_id, .. }
            | Event::RolloutWaveStarted { rollout_id, .. }
            | Event::RolloutWaveCompleted { rollout_id, .. }
            | Event::RolloutPaused { rollout_id, .. }
            | Event::RolloutResumed { rollout_id, .. }
            | Event::RolloutCompleted { rollout_id, .. }
            | Event::RolloutAborted { rollout_id, .. }
            | Event::RolloutCancelled { rollout_id, .. }
            | Event::RolloutOrigin { rollout_id, .. } => {
                About { rollout: Some(rollout_id), ..About::default() }
            }
            Event::ExperiencePromoted { rollout_id, .. } => {
                About { rollout: rollout_id.as_deref(), ..About::default() }
            }
            Event::ExperienceCreated { .. } | Event::BuildRegistered { .. } => About::default(),
        }
    }

    /// The node this event is about, if any.
    pub fn node_id(&self) -> Option<&NodeId> {
        self.about().node
    }

    /// The rollout this event is about, if any.
    pub fn rollout_id(&self) -> Option<&str> {
        self.about().rollout
    }

    /// The command this event is about, if any.
    pub fn exec_id(&self) -> Option<&ExecId> {
        self.about().exec
    }

    /// The outputs this event refers to in the output store: a result's non-empty
    /// streams (empty ones are not stored; a record older than schema 3 holds its
    /// output inline and refers to none).
    pub fn output_refs(&self) -> impl Iterator<Item = OutputRef> {
        let result = match self {
            Event::ExecCompleted { output, .. } => Some(output),
            Event::ExecTimedOut { output, .. } => output.as_ref(),
            _ => None,
        };
        let refs = result.filter(|r| r.inline.is_none()).map(|r| [r.stdout, r.stderr]);
        refs.into_iter().flatten().filter(|r| r.size > 0)
    }
}
