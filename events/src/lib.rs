//! The event vocabulary of Hydra: every fact the control plane records, the envelope
//! that carries it in the log, and the codec that turns envelopes into bytes.
//!
//! This crate knows nothing of HTTP, storage or async runtimes: it is plain data.

mod codec;
mod envelope;
mod ids;

pub use codec::{decode, encode, hash, CodecError, FORMAT_V1};
pub use envelope::{Envelope, Hash, CURRENT_SCHEMA, ZERO_HASH};
pub use ids::{IdError, NodeId};

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
            | Event::NodeStreamChanged { node_id, .. } => Some(node_id),
        }
    }
}
