//! Rows that wait for their node: what a worker remembers of the deliveries its sink parked
//! ([`Prepared::Park`](crate::sink::Prepared::Park)) because the one node they are for has not
//! been heard for a while. Pure: no store, no clock (expiry takes `now`).
//!
//! The rows stay in the store the whole time; this only lets the worker read past them (its
//! cursor moves on, its reads from the front leave them out) and find them again, in their
//! original order, when their node is heard. After a restart nothing is remembered: the
//! normal scan finds them and the sink parks them again.
//!
//! Bounded: at most `max_rows` rows. Past that, the node that started waiting longest ago is
//! forgotten first (its rows are still queued and are parked again when a read from the front
//! meets them); a row that does not fit even then is [`Parking::Full`], and the worker only
//! reads past it.

use std::collections::{BTreeMap, HashMap};

use mesh_core::NodeId;

use crate::store::Millis;

/// What became of a row handed to [`Parked::park`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parking {
    /// The first row waiting for its node: the worker starts watching the node.
    New,
    /// Its node already had rows waiting; it waits with them.
    Joined,
    /// It was parked already.
    Already,
    /// Nothing more fits: not remembered (it stays queued; the worker reads past it).
    Full,
}

/// One waiting node's rows.
#[derive(Debug)]
struct Group<K> {
    /// The rows, in drain order, each with when it expires.
    rows: BTreeMap<K, Millis>,
    /// When the node started waiting, as a count of groups made: the oldest is forgotten first.
    since: u64,
}

/// Parked rows by node, bounded.
#[derive(Debug)]
pub struct Parked<K> {
    /// Most rows remembered at once.
    max_rows: usize,
    /// Each waiting node's rows.
    groups: HashMap<NodeId, Group<K>>,
    /// The node each parked row waits for.
    rows: BTreeMap<K, NodeId>,
    /// Groups made so far, for [`Group::since`].
    made: u64,
}

impl<K: Ord + Copy> Parked<K> {
    /// Nothing parked; at most `max_rows` rows (at least one).
    pub fn new(max_rows: usize) -> Parked<K> {
        Parked {
            max_rows: max_rows.max(1),
            groups: HashMap::new(),
            rows: BTreeMap::new(),
            made: 0,
        }
    }

    /// Rows parked.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether this row is parked.
    pub fn contains(&self, key: &K) -> bool {
        self.rows.contains_key(key)
    }

    /// Whether rows wait for `node`: a later row for it must wait with them, never overtake.
    pub fn waits_for(&self, node: NodeId) -> bool {
        self.groups.contains_key(&node)
    }

    /// Every parked row, in drain order (for a read that leaves them out).
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.rows.keys()
    }

    /// Each waiting node with its count of rows, by node.
    pub fn nodes(&self) -> Vec<(NodeId, usize)> {
        let mut nodes: Vec<(NodeId, usize)> = self
            .groups
            .iter()
            .map(|(n, g)| (*n, g.rows.len()))
            .collect();
        nodes.sort();
        nodes
    }

    /// Parks `key` (expiring at `expires_at`) until `node` is heard. Returns what became of it
    /// and the nodes forgotten to make room (the worker stops watching them).
    pub fn park(&mut self, key: K, node: NodeId, expires_at: Millis) -> (Parking, Vec<NodeId>) {
        if self.rows.contains_key(&key) {
            return (Parking::Already, Vec::new());
        }
        let mut forgotten = Vec::new();
        while self.rows.len() >= self.max_rows {
            let oldest = self
                .groups
                .iter()
                .filter(|(n, _)| **n != node)
                .min_by_key(|(_, g)| g.since)
                .map(|(n, _)| *n);
            let Some(oldest) = oldest else {
                return (Parking::Full, forgotten);
            };
            self.forget(oldest);
            forgotten.push(oldest);
        }
        let parking = if self.groups.contains_key(&node) {
            Parking::Joined
        } else {
            self.made += 1;
            Parking::New
        };
        let since = self.made;
        self.groups
            .entry(node)
            .or_insert_with(|| Group {
                rows: BTreeMap::new(),
                since,
            })
            .rows
            .insert(key, expires_at);
        self.rows.insert(key, node);
        (parking, forgotten)
    }

    /// `node` was heard: its rows, in drain order, are no longer parked.
    pub fn wake(&mut self, node: NodeId) -> Vec<K> {
        let Some(group) = self.groups.remove(&node) else {
            return Vec::new();
        };
        let keys: Vec<K> = group.rows.into_keys().collect();
        for k in &keys {
            self.rows.remove(k);
        }
        keys
    }

    /// Forgets rows expired at `now` (the store drops them); returns the nodes left with no
    /// row waiting.
    pub fn expire(&mut self, now: Millis) -> Vec<NodeId> {
        let mut emptied = Vec::new();
        for (node, group) in &mut self.groups {
            group.rows.retain(|k, expires_at| {
                let keep = *expires_at > now;
                if !keep {
                    self.rows.remove(k);
                }
                keep
            });
            if group.rows.is_empty() {
                emptied.push(*node);
            }
        }
        for node in &emptied {
            self.groups.remove(node);
        }
        emptied.sort();
        emptied
    }

    fn forget(&mut self, node: NodeId) {
        self.wake(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId::new(0xa);
    const B: NodeId = NodeId::new(0xb);
    const C: NodeId = NodeId::new(0xc);

    #[test]
    fn rows_wait_by_node_and_a_wake_gives_them_back_in_drain_order() {
        let mut p: Parked<u32> = Parked::new(10);
        assert_eq!(p.park(5, A, 100), (Parking::New, vec![]));
        assert_eq!(p.park(2, B, 100), (Parking::New, vec![]));
        assert_eq!(p.park(3, A, 100), (Parking::Joined, vec![]));
        assert_eq!(p.park(3, A, 100), (Parking::Already, vec![]));
        assert!(p.contains(&5) && p.waits_for(A) && !p.waits_for(C));
        assert_eq!(p.keys().copied().collect::<Vec<_>>(), [2, 3, 5]);
        assert_eq!(p.nodes(), [(A, 2), (B, 1)]);
        assert_eq!(p.wake(A), [3, 5]);
        assert_eq!(p.wake(A), Vec::<u32>::new(), "a wake is used once");
        assert!(!p.contains(&5) && !p.waits_for(A));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn past_the_bound_the_node_waiting_longest_is_forgotten_and_a_lone_node_is_full() {
        let mut p: Parked<u32> = Parked::new(3);
        p.park(1, A, 100);
        p.park(2, B, 100);
        p.park(3, B, 100);
        assert_eq!(p.park(4, C, 100), (Parking::New, vec![A]));
        assert!(!p.contains(&1) && !p.waits_for(A));
        assert_eq!(p.park(5, C, 100), (Parking::Joined, vec![B]));
        assert_eq!(p.len(), 2);
        p.park(6, C, 100);
        assert_eq!(
            p.park(7, C, 100),
            (Parking::Full, vec![]),
            "only C is left to forget"
        );
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn expired_rows_are_forgotten_and_empty_nodes_reported() {
        let mut p: Parked<u32> = Parked::new(10);
        p.park(1, A, 100);
        p.park(2, A, 200);
        p.park(3, B, 100);
        assert_eq!(p.expire(99), Vec::<NodeId>::new());
        assert_eq!(p.expire(100), [B]);
        assert_eq!(p.keys().copied().collect::<Vec<_>>(), [2]);
        assert!(p.waits_for(A) && !p.waits_for(B));
    }
}
