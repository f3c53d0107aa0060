//! The node directory: what the hub knows of every mesh node its radios heard, shared by
//! ingest (which feeds it), the radio sinks (a direct message waits while its node is away)
//! and whoever shows nodes to people (the XMPP endpoint: contacts, presence, vCards).
//!
//! Fed by radio ingest with every packet heard, routed or not (an encrypted one still says
//! its sender is here), and by each radio's handshake, whose node database names the nodes it
//! heard before the gateway started. The pure parts are plain functions and structs taking
//! `now` ([`Node`], [`Book`]); [`NodeDirectory`] puts a lock, a change feed and wake-ups
//! around them.
//!
//! # Bounded
//!
//! A node number is 32 bits, and anyone on a mesh (or an MQTT feed) can make packets from
//! numbers that do not exist: an unbounded map would grow until the gateway runs out of
//! memory. The directory keeps at most [`DEFAULT_CAPACITY`] nodes (far more than any mesh a
//! hub bridges), and evicts the one heard least recently, never-heard entries of a node
//! database first; an evicted node is learned again the next time it is heard.
//!
//! # Changes
//!
//! [`NodeDirectory::subscribe`] announces a node that appeared, changed its names, hardware or
//! key, came back after being away, or whose hops or battery changed: what a contact's vCard
//! and presence show. Nothing is announced for a packet that changes none of these (the time
//! in "heard 4 min ago" moves on its own; [`Node::away_at`] says when to look again). A
//! subscriber that lags re-reads [`NodeDirectory::snapshot`].

mod node;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use archipel_adapters::radio::RadioInfo;
use mesh_core::{NodeId, Packet};
use tokio::sync::{Notify, broadcast};

pub use node::{LONG_NAME_MAX, MIN_VALID_TIME, Node, NodeUser, Presence, SHORT_NAME_MAX, ago};

use crate::store::Millis;

/// Nodes kept at most (see "Bounded" in the module doc).
pub const DEFAULT_CAPACITY: usize = 10_000;
/// A node is available while heard within this, away after: two hours.
pub const DEFAULT_AWAY_AFTER: Duration = Duration::from_secs(2 * 3600);
/// Changes a subscriber may fall behind by before it is told it lagged.
const CHANGE_FEED: usize = 1024;

/// What changed about a node, with the node as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeChange {
    /// The node after the change.
    pub node: Node,
    /// It was not in the directory before.
    pub new: bool,
    /// Its names, hardware or public key changed.
    pub user: bool,
    /// It is available again after being away (or never heard).
    pub back: bool,
    /// Its hops or battery changed (what its status line shows besides the time).
    pub status: bool,
}

/// The nodes themselves, bounded, with no lock and no clock: what [`NodeDirectory`] guards.
#[derive(Debug)]
pub struct Book {
    /// Most nodes kept.
    capacity: usize,
    /// Presence threshold, for telling "came back" apart.
    away_after: Duration,
    /// Each node with its place in `order`.
    nodes: HashMap<NodeId, (Node, u64)>,
    /// Eviction order, least recently heard first: (last heard, insertion stamp, node). Never
    /// heard sorts first; the stamp breaks ties in arrival order.
    order: BTreeSet<(Option<Instant>, u64, NodeId)>,
    /// Next insertion stamp.
    stamp: u64,
}

impl Book {
    /// An empty book of at most `capacity` nodes (at least one).
    pub fn new(capacity: usize, away_after: Duration) -> Book {
        Book {
            capacity: capacity.max(1),
            away_after,
            nodes: HashMap::new(),
            order: BTreeSet::new(),
            stamp: 0,
        }
    }

    /// Nodes known.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// One node.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id).map(|(n, _)| n)
    }

    /// Every node, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().map(|(n, _)| n)
    }

    /// Changes node `id` (created if unknown) with `f` at `now`, evicting the least recently
    /// heard node beyond capacity. Returns what changed that a subscriber cares about, if
    /// anything did.
    pub fn update(
        &mut self,
        id: NodeId,
        now: Instant,
        f: impl FnOnce(&mut Node),
    ) -> Option<NodeChange> {
        let (before, stamp) = match self.nodes.remove(&id) {
            Some((node, stamp)) => {
                self.order.remove(&(node.last_heard, stamp, id));
                (Some(node), stamp)
            }
            None => {
                self.stamp += 1;
                (None, self.stamp)
            }
        };
        let mut node = before.clone().unwrap_or_else(|| Node::new(id));
        f(&mut node);
        self.order.insert((node.last_heard, stamp, id));
        let change = self.change(before.as_ref(), &node, now);
        self.nodes.insert(id, (node, stamp));
        let mut kept = true;
        while self.nodes.len() > self.capacity {
            let Some((_, _, oldest)) = self.order.pop_first() else {
                break;
            };
            self.nodes.remove(&oldest);
            kept &= oldest != id;
        }
        // A never-heard entry arriving in a full book is itself the least recently heard.
        change.filter(|_| kept)
    }

    fn change(&self, before: Option<&Node>, after: &Node, now: Instant) -> Option<NodeChange> {
        let away = |n: &Node| n.presence(now, self.away_after) == Presence::Away;
        let change = NodeChange {
            new: before.is_none(),
            user: before.is_some_and(|b| b.user != after.user),
            back: before.is_none_or(away) && !away(after),
            status: before.is_some_and(|b| b.status_key() != after.status_key()),
            node: after.clone(),
        };
        (change.new || change.user || change.back || change.status).then_some(change)
    }
}

/// Told when watched nodes are heard: one per drain worker, so a row waiting for its node
/// goes as soon as the node is heard.
#[derive(Debug, Default)]
pub struct NodeWatch {
    /// Watched nodes heard since the owner last looked.
    woken: Mutex<BTreeSet<NodeId>>,
    /// Rung when a node is added to `woken`.
    bell: Notify,
}

impl NodeWatch {
    /// Resolves once some watched node was heard (at once if one was since the last
    /// [`NodeWatch::take`]).
    pub async fn heard(&self) {
        self.bell.notified().await;
    }

    /// The watched nodes heard since the last call; each is no longer watched.
    pub fn take(&self) -> BTreeSet<NodeId> {
        std::mem::take(&mut *self.woken.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn wake(&self, node: NodeId) {
        self.woken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node);
        self.bell.notify_one();
    }
}

/// Every node the hub heard, shared (`Arc`) between ingest, the sinks and the endpoints that
/// show nodes. Cheap to query: one short lock, no I/O.
pub struct NodeDirectory {
    /// The nodes and who waits for which, under one lock so that "not heard yet, so watch
    /// it" cannot miss a packet arriving in between.
    inner: Mutex<Inner>,
    /// The change feed (see the module doc).
    changes: broadcast::Sender<NodeChange>,
    /// Presence threshold.
    away_after: Duration,
}

/// What the directory's lock guards.
struct Inner {
    /// The nodes.
    book: Book,
    /// Who is told when a node is heard next; a watch is used once.
    watches: HashMap<NodeId, Vec<Arc<NodeWatch>>>,
}

impl NodeDirectory {
    /// A directory of at most `capacity` nodes, calling a node away after `away_after`.
    pub fn new(capacity: usize, away_after: Duration) -> NodeDirectory {
        NodeDirectory {
            inner: Mutex::new(Inner {
                book: Book::new(capacity, away_after),
                watches: HashMap::new(),
            }),
            changes: broadcast::channel(CHANGE_FEED).0,
            away_after,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The presence threshold.
    pub fn away_after(&self) -> Duration {
        self.away_after
    }

    /// Follows changes (see the module doc).
    pub fn subscribe(&self) -> broadcast::Receiver<NodeChange> {
        self.changes.subscribe()
    }

    /// A packet from `packet.from()` heard by `endpoint` at `now` (`wall`). Packets from no
    /// node (0, broadcast) are ignored.
    ///
    /// Returns true when the packet is a NodeInfo that would change or empty the public key
    /// its node was first seen with (the first key is kept: [`Node::observe`]).
    #[must_use]
    pub fn heard(&self, endpoint: &str, packet: &Packet, now: Instant, wall: Millis) -> bool {
        let from = packet.from();
        if !is_node(from) {
            return false;
        }
        let mut refused = false;
        self.update(from, now, |n| {
            refused = n.observe(endpoint, packet, now, wall)
        });
        refused
    }

    /// A radio's handshake: its node database (names and keys of nodes it heard before), and
    /// the radio itself, heard now.
    pub fn learn(&self, endpoint: &str, info: &RadioInfo, now: Instant, wall: Millis) {
        for entry in info.nodes.iter().filter(|e| is_node(NodeId::new(e.num))) {
            self.update(NodeId::new(entry.num), now, |n| {
                n.observe_db(endpoint, entry, now, wall)
            });
        }
        if let Some(own) = info.node_id().filter(|n| is_node(*n)) {
            self.update(own, now, |n| {
                if let Some(entry) = &info.own {
                    n.observe_db(endpoint, entry, now, wall);
                }
                n.last_heard = Some(n.last_heard.map_or(now, |at| at.max(now)));
                n.last_heard_at = Some(wall);
                n.heard_by = Some(endpoint.to_owned());
                n.hops_away = Some(0);
            });
        }
    }

    fn update(&self, id: NodeId, now: Instant, f: impl FnOnce(&mut Node)) {
        let change = {
            let mut inner = self.lock();
            let before = inner.book.get(id).and_then(|n| n.last_heard);
            let change = inner.book.update(id, now, f);
            let after = inner.book.get(id).and_then(|n| n.last_heard);
            if after > before
                && let Some(watches) = inner.watches.remove(&id)
            {
                for w in watches {
                    w.wake(id);
                }
            }
            change
        };
        if let Some(change) = change {
            // No subscriber is fine: nobody shows nodes.
            let _ = self.changes.send(change);
        }
    }

    /// One node as it is now.
    pub fn get(&self, id: NodeId) -> Option<Node> {
        self.lock().book.get(id).cloned()
    }

    /// Every node as it is now (for a subscriber starting or catching up).
    pub fn snapshot(&self) -> Vec<Node> {
        let mut nodes: Vec<Node> = self.lock().book.iter().cloned().collect();
        nodes.sort_by_key(|n| n.id);
        nodes
    }

    /// Nodes known.
    pub fn len(&self) -> usize {
        self.lock().book.len()
    }

    /// True when no node is known.
    pub fn is_empty(&self) -> bool {
        self.lock().book.is_empty()
    }

    /// When `id` was last heard (monotonic), if ever.
    pub fn last_heard(&self, id: NodeId) -> Option<Instant> {
        self.lock().book.get(id).and_then(|n| n.last_heard)
    }

    /// Whether `id` is available at `now`.
    pub fn presence(&self, id: NodeId, now: Instant) -> Presence {
        self.lock()
            .book
            .get(id)
            .map_or(Presence::Away, |n| n.presence(now, self.away_after))
    }

    /// Its long name, else short name, else `!a1b2c3d4`.
    pub fn display_name(&self, id: NodeId) -> String {
        self.lock()
            .book
            .get(id)
            .map_or_else(|| id.to_string(), Node::display_name)
    }

    /// "waiting for Amira's radio (!a1b2c3d4 last heard 3 h ago)", at `now`.
    pub fn waiting_line(&self, id: NodeId, now: Instant) -> String {
        match self.lock().book.get(id) {
            Some(n) => n.waiting_line(now),
            None => Node::new(id).waiting_line(now),
        }
    }

    /// Tells `watch` when `id` is heard after `seen` (its last-heard time when the caller
    /// looked): at once if it already was, so nothing heard in between is missed.
    pub fn watch(&self, id: NodeId, seen: Option<Instant>, watch: &Arc<NodeWatch>) {
        let mut inner = self.lock();
        if inner.book.get(id).and_then(|n| n.last_heard) > seen {
            drop(inner);
            watch.wake(id);
            return;
        }
        let list = inner.watches.entry(id).or_default();
        if !list.iter().any(|w| Arc::ptr_eq(w, watch)) {
            list.push(watch.clone());
        }
    }

    /// `watch` no longer cares about `id`.
    pub fn unwatch(&self, id: NodeId, watch: &Arc<NodeWatch>) {
        let mut inner = self.lock();
        if let Some(list) = inner.watches.get_mut(&id) {
            list.retain(|w| !Arc::ptr_eq(w, watch));
            if list.is_empty() {
                inner.watches.remove(&id);
            }
        }
    }
}

impl std::fmt::Debug for NodeDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeDirectory")
            .field("nodes", &self.len())
            .field("away_after", &self.away_after)
            .finish_non_exhaustive()
    }
}

/// Whether `id` can be a node: not 0..=3 (reserved) nor broadcast.
pub fn is_node(id: NodeId) -> bool {
    id.get() > 3 && id != NodeId::BROADCAST
}
