//! Re-issuing a node's token without a trip to the machine. The agent registers an
//! Ed25519 public key once (its private half never leaves `<state>/rekey-key`). When an
//! admin re-issues the token, the old one is revoked in the same flush as the event
//! that says so; the agent, refused from then on, asks for the pending re-issue's id,
//! signs it, and takes its new token. A leaked token is of no use for that: the claim
//! needs the key, and each re-issue can be claimed once. A node without a key gets its
//! new token through the admin instead (it is in the answer to the re-issue).

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use hydra_core::auth::{node_principal, rekey_message, TokenHash};
use hydra_core::error::DomainError;
use hydra_core::ledger::Decision;
use hydra_core::store::TokenWrite;
use hydra_events::{Event, NodeId};
use hydra_projections::{ClusterViews, NodeStatus, NodeView};

/// A public key as the agent sends it: 64 hex digits of a valid Ed25519 point.
pub fn public_key(hex_key: &str) -> Result<VerifyingKey, DomainError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut bytes).map_err(|_| {
        DomainError::Invalid("public_key must be 64 hex digits (an Ed25519 public key)".into())
    })?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| DomainError::Invalid("public_key is not an Ed25519 public key".into()))
}

fn live_node<'a>(views: &'a ClusterViews, id: &NodeId) -> Result<&'a NodeView, DomainError> {
    let node = views.nodes.get(id).ok_or_else(|| DomainError::NotFound(format!("no node {id}")))?;
    if node.status == NodeStatus::Rejected {
        return Err(DomainError::Conflict(format!("node {id} was rejected; it has no token to re-issue")));
    }
    Ok(node)
}

/// The agent registers its key: once. The same key again changes nothing; another
/// key is refused, so a stolen token cannot swap in the thief's key.
pub fn register_key(id: NodeId, key: String) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        public_key(&key)?;
        match &live_node(views, &id)?.rekey_public_key {
            Some(k) if *k == key => Ok(Decision::default()),
            Some(_) => Err(DomainError::Conflict(format!(
                "node {id} has another re-key key registered; remove the node and enroll the machine again"
            ))),
            None => {
                Ok(Decision::events(vec![Event::NodeRekeyKeyRegistered { node_id: id, public_key: key }]))
            }
        }
    }
}

/// An admin re-issues the node's token: the old token is revoked now. A node with a
/// key claims its new token; for one without, `fallback` (the hash of a token the
/// caller hands to the admin) is put in force in the same flush.
pub fn rotate(
    id: NodeId,
    rekey_id: String,
    fallback: TokenHash,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let claim = live_node(views, &id)?.rekey_public_key.is_some();
        let principal = node_principal(&id);
        let mut tokens = vec![TokenWrite::Revoke { principal: principal.clone() }];
        if !claim {
            tokens.push(TokenWrite::Put { hash: fallback, principal });
        }
        let events = vec![Event::NodeTokenRotated { node_id: id, rekey_id, claim }];
        Ok(Decision { events, tokens, ..Decision::default() })
    }
}

/// A node that may take a re-issued token: it exists and was not rejected. Asked
/// without a token, so an unknown or rejected node looks like one with nothing pending.
fn claimable<'a>(views: &'a ClusterViews, id: &NodeId) -> Option<&'a NodeView> {
    views.nodes.get(id).filter(|n| n.status != NodeStatus::Rejected)
}

/// The id of the re-issue pending for a node, for the agent to sign.
pub fn pending(views: &ClusterViews, id: &NodeId) -> Result<String, DomainError> {
    claimable(views, id)
        .and_then(|n| n.rekey_pending.clone())
        .ok_or_else(|| DomainError::NotFound(format!("no token re-issue is pending for node {id}")))
}

/// The agent claims re-issue `rekey_id` with its signature: checked against its key,
/// and the pending re-issue must be that one (each is claimed once). The new token's
/// hash goes in force in the same flush as `node.rekeyed`.
pub fn claim(
    id: NodeId,
    rekey_id: String,
    signature: Vec<u8>,
    token: TokenHash,
) -> impl FnOnce(&ClusterViews) -> Result<Decision, DomainError> {
    move |views| {
        let refused =
            || DomainError::Forbidden(format!("no claim of that re-issue for node {id} is accepted"));
        let Some(node) = claimable(views, &id) else { return Err(refused()) };
        let (Some(key), Some(pending)) = (&node.rekey_public_key, &node.rekey_pending) else {
            return Err(refused());
        };
        let signature = Signature::from_slice(&signature).map_err(|_| refused())?;
        if *pending != rekey_id
            || public_key(key)?.verify(&rekey_message(id.as_str(), &rekey_id), &signature).is_err()
        {
            return Err(refused());
        }
        Ok(Decision {
            tokens: vec![TokenWrite::Put { hash: token, principal: node_principal(&id) }],
            events: vec![Event::NodeRekeyed { node_id: id, rekey_id }],
            ..Decision::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn node() -> NodeId {
        NodeId::parse("node-0000000000000001").unwrap()
    }

    /// The log so far: an enrolled node, then what each decision added.
    fn enrolled() -> Vec<Event> {
        vec![Event::NodeEnrolled { node_id: node(), name: "b".into(), ip: "10.0.0.1".into() }]
    }

    fn step(log: &mut Vec<Event>, d: Decision) -> ClusterViews {
        log.extend(d.events);
        hydra_projections::fold(log.clone())
    }

    #[test]
    fn a_claim_needs_the_key_and_the_pending_id_and_works_once() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = hex::encode(key.verifying_key().as_bytes());
        let mut log = enrolled();
        let v: ClusterViews = hydra_projections::fold(log.clone());
        let d = register_key(node(), public.clone())(&v).unwrap();
        let v = step(&mut log, d);
        assert!(register_key(node(), public.clone())(&v).unwrap().events.is_empty(), "the same key again");
        let other = hex::encode(SigningKey::from_bytes(&[8; 32]).verifying_key().as_bytes());
        assert!(matches!(register_key(node(), other)(&v), Err(DomainError::Conflict(_))));

        let d = rotate(node(), "r1".into(), [1; 32])(&v).unwrap();
        assert_eq!(d.tokens.len(), 1, "revoked, nothing put: the agent claims");
        let v = step(&mut log, d);
        assert_eq!(pending(&v, &node()).unwrap(), "r1");
        let sign = |k: &SigningKey, id: &str| k.sign(&rekey_message(node().as_str(), id)).to_bytes().to_vec();
        let thief = SigningKey::from_bytes(&[9; 32]);
        for (id, sig) in [("r1", sign(&thief, "r1")), ("r0", sign(&key, "r0")), ("r1", vec![0; 3])] {
            assert!(
                matches!(claim(node(), id.into(), sig, [2; 32])(&v), Err(DomainError::Forbidden(_))),
                "{id}"
            );
        }
        let d = claim(node(), "r1".into(), sign(&key, "r1"), [2; 32])(&v).unwrap();
        assert_eq!(d.tokens.len(), 1);
        let v = step(&mut log, d);
        assert!(claim(node(), "r1".into(), sign(&key, "r1"), [3; 32])(&v).is_err(), "claimed once");
        assert!(pending(&v, &node()).is_err());
        // A rejected node has nothing to claim, and says no more than an unknown one.
        let d = rotate(node(), "r2".into(), [1; 32])(&v).unwrap();
        step(&mut log, d);
        log.push(Event::NodeRejected { node_id: node() });
        let v: ClusterViews = hydra_projections::fold(log.clone());
        assert!(matches!(pending(&v, &node()), Err(DomainError::NotFound(_))));
        let claimed = claim(node(), "r2".into(), sign(&key, "r2"), [4; 32])(&v);
        assert!(matches!(claimed, Err(DomainError::Forbidden(_))));
    }

    #[test]
    fn without_a_key_the_new_token_is_put_at_once() {
        let v: ClusterViews = hydra_projections::fold(enrolled());
        let d = rotate(node(), "r1".into(), [1; 32])(&v).unwrap();
        assert!(matches!(
            d.tokens.as_slice(),
            [TokenWrite::Revoke { .. }, TokenWrite::Put { hash: [1, ..], .. }]
        ));
        assert!(matches!(d.events[0], Event::NodeTokenRotated { claim: false, .. }));
        assert!(public_key("zz").is_err() && public_key(&"00".repeat(31)).is_err());
    }
}
