//! Agent endpoints (node token): the heartbeat. Liveness is volatile; only real
//! changes become events, so a fleet of quiet nodes writes nothing, and a node's
//! changes are written at most once per interval (its event budget), so a flapping
//! node cannot fill the disk. What it sends is bounded (`limits`).

use super::limits::{self, MAX_FIELD_BYTES};
use super::{ApiError, ApiJson, AppState, NodeCaller};
use crate::cluster::liveness::{self, Budget};
use crate::cluster::nodes::{self, coalescable, heartbeat_events, Part, Report};
use crate::cluster::provision;
use axum::extract::State;
use axum::Json;
use hydra_core::ledger::now_ms;
use hydra_events::NodeId;
use hydra_projections::NodeStatus;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Heartbeat {
    agent_version: Option<String>,
    os: Option<String>,
    wireguard_ip: Option<String>,
    provider_status: Option<String>,
    provider_version: Option<String>,
    stream_status: Option<String>,
    #[schema(value_type = Option<Object>)]
    telemetry: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    diagnostics: Option<serde_json::Map<String, serde_json::Value>>,
    /// The agent has a provisioning in hand (from the flag until its result was
    /// delivered). Agents that do not say are taken at their word for nothing.
    provisioning: Option<bool>,
}

fn field(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    if let Some(s) = &v {
        limits::check_len(name, s, MAX_FIELD_BYTES)?;
        if s.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!("{name} must be printable characters only")));
        }
    }
    Ok(v.filter(|s| !s.is_empty()))
}

impl Heartbeat {
    /// Checks every field (nothing is stored before this passes) and splits off what
    /// may become events.
    fn report(self, max_map_bytes: usize) -> Result<(Report, Heartbeat), ApiError> {
        if let Some(d) = &self.diagnostics {
            limits::check_map("diagnostics", d, max_map_bytes)?;
        }
        if let Some(t) = &self.telemetry {
            limits::check_object("telemetry", t, max_map_bytes)?;
        }
        if let Some(s) = &self.stream_status {
            if !["idle", "streaming"].contains(&s.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "stream_status must be idle or streaming, got {s:?}"
                )));
            }
        }
        if let Some(ip) = &self.wireguard_ip {
            if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
                return Err(ApiError::bad_request(format!("wireguard_ip {ip:?} is not an IP address")));
            }
        }
        let report = Report {
            agent_version: field("agent_version", self.agent_version.clone())?,
            os: field("os", self.os.clone())?,
            wireguard_ip: field("wireguard_ip", self.wireguard_ip.clone())?,
            provider_status: field("provider_status", self.provider_status.clone())?,
            provider_version: field("provider_version", self.provider_version.clone())?,
            stream_status: self.stream_status.clone(),
        };
        Ok((report, self))
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/body/heartbeat",
    tag = "agent",
    request_body = Heartbeat,
    security(("node" = [])),
    responses(
        (status = 200, description = "What the agent is asked to do: the pending flags", body = HeartbeatAnswer),
    )
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    NodeCaller(id): NodeCaller,
    ApiJson(body): ApiJson<Heartbeat>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let (report, body) = body.report(state.config.max_diagnostics_bytes)?;
    state.liveness.touch(&id, now_ms(), body.diagnostics, body.telemetry);
    // What the node says now, over what it said before and is still held back.
    let report = state.liveness.with_held(&id, report);
    // Decide on the committed views first: a heartbeat that changes nothing never
    // reaches the writer.
    let (urgent, changes, approved) = state
        .ledger
        .read(|v| {
            v.nodes.get(&id).map(|n| {
                let events = heartbeat_events(n, &report);
                (
                    events.iter().any(|e| !coalescable(e)),
                    events.iter().any(coalescable),
                    n.status == NodeStatus::Approved,
                )
            })
        })
        .ok_or_else(|| ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "missing or invalid token"))?;
    state.cluster_metrics.heartbeats.inc();
    // Pending nodes get the smallest budget: anyone who reaches `/enroll` has one.
    let c = &state.config;
    let budget = liveness::budget(approved, c.heartbeat_event_interval, c.pending_heartbeat_event_interval);
    let part = match state.liveness.spend(&id, now_ms(), budget, &report, changes) {
        Budget::Write => Part::All,
        Budget::Hold => Part::Urgent,
    };
    let mut delivered = (false, false);
    // The reprovision flag is carried by the answer to the heartbeat that recorded
    // `provision.started`, once: a node that keeps heartbeating does not reinstall again.
    let mut reprovision = false;
    if urgent || (changes && part == Part::All) {
        let written = state
            .ledger
            .submit(format!("node:{id}"), nodes::heartbeat(id.clone(), report.clone(), part))
            .await;
        let envelopes = match written {
            Ok(envelopes) => envelopes,
            Err(e) => {
                // The changes were taken off the budget: keep them for the next write.
                if changes && part == Part::All {
                    state.liveness.restore(&id, report);
                }
                return Err(e.into());
            }
        };
        for e in &envelopes {
            if let hydra_events::Event::ProvisionStarted { .. } = &e.event {
                reprovision = true;
            }
            if let hydra_events::Event::NodeUpdateDelivered { target, .. } = &e.event {
                match target {
                    hydra_events::UpdateTarget::Node => delivered.0 = true,
                    hydra_events::UpdateTarget::Services => delivered.1 = true,
                }
            }
        }
    }
    if !reprovision && body.provisioning == Some(false) {
        reprovision = state.ledger.read(|v| provision::flag_lost(v, &id));
        if reprovision {
            tracing::info!(node = %id, "the reprovision flag did not reach the node; carrying it again");
        }
    }
    let node = state
        .ledger
        .read(|v| v.nodes.get(&id).cloned())
        .ok_or_else(|| ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "missing or invalid token"))?;
    let approved = node.status == NodeStatus::Approved;
    // What each of the node's roles needs (roles without a recipe are names only).
    let recipes: Vec<Recipe> = if approved {
        node.roles
            .iter()
            .filter_map(|role| {
                state.config.role_recipes.get(role).map(|r| Recipe {
                    role: role.clone(),
                    artifact_url: r.artifact_url.clone(),
                    version: r.version.clone(),
                    sha256: r.sha256.to_ascii_lowercase(),
                    install: r.install.clone(),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Json(HeartbeatAnswer {
        status: node.status.as_str(),
        roles: if approved { node.roles.clone() } else { Vec::new() },
        recipes,
        district: node.district,
        venue: node.venue,
        environment: node.environment,
        draining: node.draining,
        reprovision,
        update_node: delivered.0,
        update_services: delivered.1,
        heartbeat_interval_s: state.config.heartbeat_interval.as_secs().max(1),
        kind: node.kind.as_str(),
        node_id: node.id,
    }))
}

/// The answer to a heartbeat: what the agent is asked to do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeartbeatAnswer {
    #[schema(value_type = String)]
    node_id: NodeId,
    /// `pending`, `approved` or `rejected`.
    status: &'static str,
    /// The node's roles; empty until it is approved.
    roles: Vec<String>,
    /// What each role with a recipe needs installed; empty until approved.
    recipes: Vec<Recipe>,
    district: String,
    venue: String,
    environment: String,
    draining: bool,
    /// Reinstall now (carried once, by the answer that started the provisioning).
    reprovision: bool,
    /// Update the node's OS packages (carried once).
    update_node: bool,
    /// Update the node's services (carried once).
    update_services: bool,
    /// How often to heartbeat, in seconds.
    heartbeat_interval_s: u64,
    /// `body` or `head`: a body's agent becomes a kiosk's (status reports) when its
    /// roles make it a head.
    kind: &'static str,
}

/// What a role needs installed (`role_recipes` in the config).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Recipe {
    role: String,
    artifact_url: String,
    version: String,
    /// Lower-case hex.
    sha256: String,
    /// The install hook; null when the recipe has none.
    install: Option<String>,
}
