//! The simulated nodes' PKI keys and the node-database rules around them, shared by the RF
//! world (which encrypts and decrypts) and the attached devices (which report keys to their
//! clients and apply the MQTT downlink rule).
//!
//! Every node with `pki = true` (the default) has an x25519 key pair derived from the world's
//! seed and its node number, so a run replays with the same keys. A node with `pki = false`
//! is firmware built with `MESHTASTIC_EXCLUDE_PKI` (what firmware before 2.5 does on the air):
//! no key pair, no `User.public_key`, channel-key direct messages only.
//!
//! What a node learns from a `NodeInfo` follows v2.7.26 `NodeDB::updateUser`:
//!
//! | incoming `User` | with a key already stored for that node | with none |
//! |-----------------|-----------------------------------------|-----------|
//! | our own public key | dropped (someone advertises our key) | dropped |
//! | the stored key | taken (names may change) | — |
//! | another key, or none | the whole NodeInfo dropped ("Public Key mismatch") | taken, key stored if 32 bytes |
//!
//! A node without PKI applies none of this (the rule sits under `#if !(MESHTASTIC_EXCLUDE_PKI)`).

use std::collections::HashMap;

use mesh_core::{NodeId, PrivateKey, PublicKey, proto};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Mixed into the seed so key streams differ from every other seeded stream of the world.
const KEY_STREAM: u64 = 0x504b_495f_6b65_7973; // "PKI_keys"

/// The key pair of `node` in a world seeded with `seed`.
pub fn node_key(seed: u64, node: NodeId) -> PrivateKey {
    let mut rng = StdRng::seed_from_u64(seed ^ KEY_STREAM ^ u64::from(node.get()).rotate_left(32));
    PrivateKey::generate(&mut rng)
}

/// Whether `perhapsEncode` may PKI-encrypt a packet of this port: everything but TRACEROUTE,
/// NODEINFO, ROUTING and POSITION, which always go with the channel key.
pub fn pki_port(port: i32) -> bool {
    use proto::PortNum as P;
    ![
        P::TracerouteApp,
        P::NodeinfoApp,
        P::RoutingApp,
        P::PositionApp,
    ]
    .iter()
    .any(|p| *p as i32 == port)
}

/// Channel names on which the firmware sends no PKI unless the client asks for it
/// (`Channels::serialChannel`, `Channels::gpioChannel`).
pub fn pki_exempt_channel(name: &str) -> bool {
    name.eq_ignore_ascii_case("serial") || name.eq_ignore_ascii_case("gpio")
}

/// What `NodeDB::updateUser` does with an incoming `User`. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserUpdate {
    /// Taken; carries the key it holds, if any.
    Take(Option<PublicKey>),
    /// The incoming key is ours: dropped.
    OwnKey,
    /// The node's stored key differs from (or is missing in) the incoming `User`: dropped.
    KeyMismatch,
}

/// Applies the rules of the module doc: `stored` is the key already known for the node,
/// `own` the receiver's own public key (`None` for a node without PKI, which takes anything).
pub fn user_update(
    stored: Option<&PublicKey>,
    incoming: &proto::User,
    own: Option<&PublicKey>,
) -> UserUpdate {
    // A key field that is not 32 bytes is stored as no key (`public_key.size == 32` tests).
    let key = PublicKey::from_user_field(&incoming.public_key)
        .ok()
        .flatten();
    let Some(own) = own else {
        return UserUpdate::Take(key);
    };
    if key.as_ref() == Some(own) {
        return UserUpdate::OwnKey;
    }
    match stored {
        Some(stored) if key.as_ref() != Some(stored) => UserUpdate::KeyMismatch,
        _ => UserUpdate::Take(key),
    }
}

/// A node's own key pair and the public keys it learned, by node.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    /// Its private key; `None` for firmware without PKI.
    own: Option<PrivateKey>,
    /// Its public key, kept so every NodeInfo check does not recompute it.
    public: Option<PublicKey>,
    /// Keys heard in NodeInfo (or known from the start), which PKI messages need both ways.
    peers: HashMap<NodeId, PublicKey>,
}

impl Keyring {
    /// A keyring with this private key (or none), knowing no one yet.
    pub fn new(own: Option<PrivateKey>) -> Keyring {
        Keyring {
            public: own.as_ref().map(PrivateKey::public_key),
            own,
            peers: HashMap::new(),
        }
    }

    /// Its private key, when it has PKI.
    pub fn private_key(&self) -> Option<&PrivateKey> {
        self.own.as_ref()
    }

    /// Its public key, when it has PKI.
    pub fn public_key(&self) -> Option<&PublicKey> {
        self.public.as_ref()
    }

    /// The key it knows for `node`.
    pub fn peer(&self, node: NodeId) -> Option<&PublicKey> {
        self.peers.get(&node)
    }

    /// Learns from a `User` that `node` announced; says what was done with it.
    pub fn learn(&mut self, node: NodeId, user: &proto::User) -> UserUpdate {
        let verdict = user_update(self.peers.get(&node), user, self.public.as_ref());
        if let UserUpdate::Take(Some(key)) = verdict {
            self.peers.insert(node, key);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(key: Option<&PublicKey>) -> proto::User {
        proto::User {
            long_name: "Someone".into(),
            public_key: key.map_or_else(Vec::new, |k| k.as_bytes().to_vec()),
            ..Default::default()
        }
    }

    #[test]
    fn keys_are_stable_for_a_seed_and_differ_between_nodes_and_seeds() {
        let a = node_key(1, NodeId::new(5)).public_key();
        assert_eq!(a, node_key(1, NodeId::new(5)).public_key());
        assert_ne!(a, node_key(1, NodeId::new(6)).public_key());
        assert_ne!(a, node_key(2, NodeId::new(5)).public_key());
    }

    #[test]
    fn the_four_ports_of_perhaps_encode_never_go_pki() {
        for port in [3, 4, 5, 70] {
            assert!(!pki_port(port), "{port}");
        }
        for port in [1, 6, 8, 67, 256] {
            assert!(pki_port(port), "{port}");
        }
        assert!(pki_exempt_channel("Serial") && pki_exempt_channel("gpio"));
        assert!(!pki_exempt_channel("LongFast"));
    }

    #[test]
    fn a_stored_key_is_pinned_and_our_own_is_refused() {
        let me = node_key(1, NodeId::new(1));
        let (k1, k2) = (
            node_key(1, NodeId::new(2)).public_key(),
            node_key(1, NodeId::new(3)).public_key(),
        );
        let mut ring = Keyring::new(Some(me.clone()));
        let peer = NodeId::new(2);
        assert_eq!(ring.learn(peer, &user(None)), UserUpdate::Take(None));
        assert_eq!(
            ring.learn(peer, &user(Some(&k1))),
            UserUpdate::Take(Some(k1))
        );
        assert_eq!(ring.peer(peer), Some(&k1));
        assert_eq!(
            ring.learn(peer, &user(Some(&k1))),
            UserUpdate::Take(Some(k1))
        );
        assert_eq!(ring.learn(peer, &user(Some(&k2))), UserUpdate::KeyMismatch);
        assert_eq!(ring.learn(peer, &user(None)), UserUpdate::KeyMismatch);
        assert_eq!(ring.peer(peer), Some(&k1), "pinned");
        let own = me.public_key();
        assert_eq!(
            ring.learn(NodeId::new(9), &user(Some(&own))),
            UserUpdate::OwnKey
        );
        assert_eq!(ring.peer(NodeId::new(9)), None);
        let mut bad = user(None);
        bad.public_key = vec![1; 31];
        assert_eq!(ring.learn(NodeId::new(8), &bad), UserUpdate::Take(None));
    }

    #[test]
    fn a_node_without_pki_takes_any_key() {
        let k1 = node_key(1, NodeId::new(2)).public_key();
        let k2 = node_key(1, NodeId::new(3)).public_key();
        assert_eq!(
            user_update(Some(&k1), &user(Some(&k2)), None),
            UserUpdate::Take(Some(k2))
        );
        assert_eq!(Keyring::new(None).public_key(), None);
    }
}
