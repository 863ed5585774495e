//! The event vocabulary of Hydra: every fact the control plane records, the envelope
//! that carries it in the log, and the codec that turns envelopes into bytes.
//!
//! This crate knows nothing of HTTP, storage or async runtimes: it is plain data.

mod codec;
mod envelope;
mod ids;

pub use codec::{decode, encode, hash, CodecError, FORMAT_V1};
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
/// stores the variant index, so reordering would change the meaning of old logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A machine submitted the enrollment form; it waits for an admin.
    NodeEnrolled {
        node_id: NodeId,
        name: String,
        ip: String,
    },
    /// An admin approved a pending node and placed it.
    NodeApproved {
        node_id: NodeId,
        roles: Vec<String>,
        district: String,
        venue: String,
        environment: String,
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
        output: ExecOutput,
    },
    /// The command ran out of time: reported by the agent (with what it printed) or
    /// synthesised by the server's watchdog after timeout + grace (without).
    ExecTimedOut {
        exec_id: ExecId,
        node_id: NodeId,
        output: Option<ExecOutput>,
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

impl Event {
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
        }
    }

    /// The node this event is about, if any: the key of the per-node index and of
    /// the `?node=` filter.
    pub fn node_id(&self) -> Option<&NodeId> {
        match self {
            Event::NodeEnrolled { node_id, .. }
            | Event::NodeApproved { node_id, .. }
            | Event::NodeRejected { node_id }
            | Event::NodeRemoved { node_id }
            | Event::NodeRolesChanged { node_id, .. }
            | Event::NodePlacementChanged { node_id, .. }
            | Event::NodeDrainChanged { node_id, .. }
            | Event::NodeUpdateRequested { node_id, .. }
            | Event::NodeUpdateDelivered { node_id, .. }
            | Event::NodeOnline { node_id }
            | Event::NodeOffline { node_id, .. }
            | Event::NodeProviderChanged { node_id, .. }
            | Event::NodeAgentChanged { node_id, .. }
            | Event::NodeNetworkChanged { node_id, .. }
            | Event::NodeStreamChanged { node_id, .. }
            | Event::ExecQueued { node_id, .. }
            | Event::ExecDispatched { node_id, .. }
            | Event::ExecCompleted { node_id, .. }
            | Event::ExecTimedOut { node_id, .. }
            | Event::ExecCancelled { node_id, .. }
            | Event::ExecRequeued { node_id, .. }
            | Event::ExecFailed { node_id, .. }
            | Event::ExecExpired { node_id, .. }
            | Event::ShellOpened { node_id, .. }
            | Event::ShellClosed { node_id, .. }
            | Event::HeadRegistered { node_id, .. }
            | Event::HeadStatusChanged { node_id, .. }
            | Event::HeadAssigned { node_id, .. }
            | Event::HeadExperiencesAllowed { node_id, .. }
            | Event::ReprovisionRequested { node_id }
            | Event::ProvisionStarted { node_id }
            | Event::ProvisionCompleted { node_id, .. }
            | Event::ProvisionFailed { node_id, .. }
            | Event::StreamStopped { node_id, .. }
            | Event::AnomalyStarted { node_id, .. }
            | Event::AnomalyCleared { node_id, .. } => Some(node_id),
        }
    }

    /// The command this event is about, if any.
    pub fn exec_id(&self) -> Option<&ExecId> {
        match self {
            Event::ExecQueued { exec_id, .. }
            | Event::ExecDispatched { exec_id, .. }
            | Event::ExecCompleted { exec_id, .. }
            | Event::ExecTimedOut { exec_id, .. }
            | Event::ExecCancelled { exec_id, .. }
            | Event::ExecRequeued { exec_id, .. }
            | Event::ExecFailed { exec_id, .. }
            | Event::ExecExpired { exec_id, .. } => Some(exec_id),
            _ => None,
        }
    }
}
