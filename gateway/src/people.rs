//! The people of other worlds who speak on the mesh: each XMPP user is a virtual mesh node
//! (its number and key from the store, [`crate::store::VirtualNode`]), and what the gateway
//! must remember about them while it runs: which node is whose, which direct messages wait
//! for the mesh's acknowledgement (to turn it into a XEP-0184 receipt), and when each virtual
//! node last introduced itself (its NodeInfo) to each radio's mesh.
//!
//! Pure bookkeeping behind one lock, bounded: `now` is an argument.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mesh_core::pki::PrivateKey;
use mesh_core::{NodeId, PacketId};

use crate::store::VirtualNode;

/// How often a virtual node's NodeInfo is sent again to a mesh it speaks on: radios forget
/// nodes they have not heard, and a mesh person answering needs its key.
pub const INTRODUCE_EVERY: Duration = Duration::from_secs(3 * 3600);

/// Direct messages waiting for the mesh's acknowledgement, at most: the oldest is forgotten
/// first (its receipt then never comes, which the user's client shows as unconfirmed).
const MAX_AWAITED: usize = 4096;

/// One XMPP user as a mesh node.
#[derive(Clone)]
pub struct Person {
    /// The bare JID it stands for.
    pub owner: String,
    /// Its node number.
    pub node: NodeId,
    /// The XMPP endpoint it speaks through: where the mesh's answers to it are queued.
    pub endpoint: String,
    /// Its x25519 key, for PKI direct messages to and from it.
    pub key: PrivateKey,
}

impl std::fmt::Debug for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Person")
            .field("owner", &self.owner)
            .field("node", &self.node)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Who waits for the acknowledgement of one direct message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Awaiting {
    /// The full JID that sent it.
    pub jid: String,
    /// The id of its stanza, which the receipt names.
    pub stanza: String,
}

/// What is kept behind the lock.
#[derive(Default)]
struct Inner {
    /// Virtual nodes by owner (bare JID).
    by_owner: HashMap<String, Person>,
    /// The same, by node number: what radio ingest asks of every packet's `to`.
    by_node: HashMap<NodeId, String>,
    /// Direct messages waiting for their ACK, by (sender node, packet id).
    awaited: HashMap<(NodeId, PacketId), Awaiting>,
    /// The same keys, oldest first, to forget the oldest when full.
    awaited_order: VecDeque<(NodeId, PacketId)>,
    /// When each virtual node last introduced itself on each radio (endpoint name).
    introduced: HashMap<(NodeId, String), Instant>,
    /// The room nickname each owner last spoke with: its NodeInfo's long name.
    nicks: HashMap<String, String>,
}

/// The registry (see the module doc).
#[derive(Default)]
pub struct People(Mutex<Inner>);

impl People {
    /// An empty registry.
    pub fn new() -> People {
        People::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a virtual node from the store as speaking through `endpoint`.
    pub fn insert(&self, v: &VirtualNode, endpoint: &str) -> Person {
        let person = Person {
            owner: v.owner.clone(),
            node: v.node,
            endpoint: endpoint.to_owned(),
            key: PrivateKey::from_bytes(v.secret),
        };
        let mut inner = self.inner();
        inner.by_node.insert(v.node, v.owner.clone());
        inner.by_owner.insert(v.owner.clone(), person.clone());
        person
    }

    /// The virtual node of `owner`, when it has one.
    pub fn by_owner(&self, owner: &str) -> Option<Person> {
        self.inner().by_owner.get(owner).cloned()
    }

    /// The person node `node` stands for, when it is a virtual node.
    pub fn by_node(&self, node: NodeId) -> Option<Person> {
        let inner = self.inner();
        let owner = inner.by_node.get(&node)?;
        inner.by_owner.get(owner).cloned()
    }

    /// Whether `node` is one of ours.
    pub fn is_virtual(&self, node: NodeId) -> bool {
        self.inner().by_node.contains_key(&node)
    }

    /// Records the nickname `owner` speaks with; true when it changed (its NodeInfo is then
    /// due again).
    pub fn set_nick(&self, owner: &str, nick: &str) -> bool {
        let mut inner = self.inner();
        if inner.nicks.get(owner).is_some_and(|n| n == nick) {
            return false;
        }
        inner.nicks.insert(owner.to_owned(), nick.to_owned());
        let node = inner.by_owner.get(owner).map(|p| p.node);
        if let Some(node) = node {
            inner.introduced.retain(|(n, _), _| *n != node);
        }
        true
    }

    /// The nickname `owner` last spoke with.
    pub fn nick(&self, owner: &str) -> Option<String> {
        self.inner().nicks.get(owner).cloned()
    }

    /// Whether `node` must introduce itself on `radio` before it speaks there at `now` (never
    /// did, or longer ago than [`INTRODUCE_EVERY`]); when it must, the introduction counts as
    /// done now.
    pub fn introduce(&self, node: NodeId, radio: &str, now: Instant) -> bool {
        let mut inner = self.inner();
        let key = (node, radio.to_owned());
        let due = inner
            .introduced
            .get(&key)
            .is_none_or(|at| now.saturating_duration_since(*at) >= INTRODUCE_EVERY);
        if due {
            inner.introduced.insert(key, now);
        }
        due
    }

    /// A direct message `id` from virtual node `node` waits for the mesh's acknowledgement.
    pub fn await_ack(&self, node: NodeId, id: PacketId, awaiting: Awaiting) {
        let mut inner = self.inner();
        if inner.awaited.insert((node, id), awaiting).is_none() {
            inner.awaited_order.push_back((node, id));
        }
        while inner.awaited_order.len() > MAX_AWAITED {
            if let Some(old) = inner.awaited_order.pop_front() {
                inner.awaited.remove(&old);
            }
        }
    }

    /// Who waited for the acknowledgement of `id` from `node`, once: a repeated ACK finds
    /// nobody.
    pub fn take_ack(&self, node: NodeId, id: PacketId) -> Option<Awaiting> {
        let mut inner = self.inner();
        let found = inner.awaited.remove(&(node, id))?;
        inner.awaited_order.retain(|k| *k != (node, id));
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> VirtualNode {
        VirtualNode {
            owner: "alice@hub.lan".into(),
            node: NodeId::new(0x1234_5678),
            secret: [7; 32],
            created_at: 0,
        }
    }

    #[test]
    fn a_person_is_found_by_owner_and_by_node() {
        let people = People::new();
        let p = people.insert(&alice(), "xmpp");
        assert_eq!(p.node, NodeId::new(0x1234_5678));
        assert_eq!(people.by_owner("alice@hub.lan").unwrap().endpoint, "xmpp");
        assert_eq!(people.by_node(p.node).unwrap().owner, "alice@hub.lan");
        assert!(people.is_virtual(p.node));
        assert!(!people.is_virtual(NodeId::new(1)));
        assert!(!format!("{p:?}").contains("key"), "the key never shows");
    }

    #[test]
    fn an_introduction_is_due_once_per_radio_then_after_three_hours_or_a_new_nick() {
        let people = People::new();
        let p = people.insert(&alice(), "xmpp");
        let t = Instant::now();
        assert!(people.introduce(p.node, "north", t));
        assert!(!people.introduce(p.node, "north", t + Duration::from_secs(60)));
        assert!(people.introduce(p.node, "south", t), "each mesh is told");
        assert!(people.introduce(p.node, "north", t + INTRODUCE_EVERY));
        assert!(people.set_nick("alice@hub.lan", "Alice"));
        assert!(!people.set_nick("alice@hub.lan", "Alice"));
        assert!(people.introduce(p.node, "north", t + INTRODUCE_EVERY));
        assert_eq!(people.nick("alice@hub.lan").as_deref(), Some("Alice"));
    }

    #[test]
    fn an_ack_is_taken_once_and_the_book_is_bounded() {
        let people = People::new();
        let node = NodeId::new(9);
        let w = |s: &str| Awaiting {
            jid: "alice@hub.lan/phone".into(),
            stanza: s.into(),
        };
        people.await_ack(node, PacketId::new(1), w("a"));
        assert_eq!(people.take_ack(node, PacketId::new(1)), Some(w("a")));
        assert_eq!(people.take_ack(node, PacketId::new(1)), None);
        for i in 0..(MAX_AWAITED as u32 + 10) {
            people.await_ack(node, PacketId::new(i + 2), w("x"));
        }
        assert_eq!(
            people.take_ack(node, PacketId::new(2)),
            None,
            "oldest forgotten"
        );
        assert!(
            people
                .take_ack(node, PacketId::new(MAX_AWAITED as u32 + 11))
                .is_some()
        );
    }
}
