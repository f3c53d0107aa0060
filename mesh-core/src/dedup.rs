//! The (from, id) seen-set that stops a packet from being handled twice.
//!
//! Bounded in memory (oldest entries go first) and expiring (an entry older than the window no
//! longer counts). Id 0 means "no id" and is never deduplicated, as in the firmware
//! (`PacketHistory::wasSeenRecently`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::node::{NodeId, PacketId};

/// Whether a packet was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time within the window: handle it.
    New,
    /// Already handled within the window: drop it.
    Duplicate,
}

/// A bounded, expiring set of (from, id) keys.
#[derive(Debug)]
pub struct Dedup {
    /// How long a key counts as seen.
    window: Duration,
    /// Most keys kept; beyond it the oldest are forgotten first.
    capacity: usize,
    /// Key → when it was first seen; the source of truth for lookups.
    seen: HashMap<(NodeId, PacketId), Instant>,
    /// Keys in the order they were first seen, so expiry and eviction pop from the front.
    order: VecDeque<((NodeId, PacketId), Instant)>,
}

impl Dedup {
    /// A seen-set remembering at most `capacity` keys for `window` each.
    pub fn new(window: Duration, capacity: usize) -> Dedup {
        Dedup {
            window,
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records (from, id) as seen at `now` and says whether it was new.
    /// `now` must not go backwards between calls.
    pub fn observe(&mut self, from: NodeId, id: PacketId, now: Instant) -> Seen {
        if id.is_unset() {
            return Seen::New;
        }
        self.expire(now);
        let key = (from, id);
        if self.seen.contains_key(&key) {
            return Seen::Duplicate;
        }
        while self.order.len() >= self.capacity {
            self.pop_oldest();
        }
        self.seen.insert(key, now);
        self.order.push_back((key, now));
        Seen::New
    }

    /// Whether (from, id) counts as seen at `now`, without recording it.
    pub fn contains(&self, from: NodeId, id: PacketId, now: Instant) -> bool {
        self.seen
            .get(&(from, id))
            .is_some_and(|&at| now.saturating_duration_since(at) < self.window)
    }

    /// Number of keys currently remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(_, at)) = self.order.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((key, _)) = self.order.pop_front() {
            self.seen.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId::new(0xa);
    const B: NodeId = NodeId::new(0xb);

    #[test]
    fn a_repeat_within_the_window_is_a_duplicate() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(60), 100);
        assert_eq!(d.observe(A, PacketId::new(1), t0), Seen::New);
        assert_eq!(
            d.observe(A, PacketId::new(1), t0 + Duration::from_secs(59)),
            Seen::Duplicate
        );
        assert_eq!(
            d.observe(B, PacketId::new(1), t0),
            Seen::New,
            "same id, other sender"
        );
    }

    #[test]
    fn an_entry_expires_after_the_window() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(60), 100);
        d.observe(A, PacketId::new(1), t0);
        let later = t0 + Duration::from_secs(60);
        assert!(!d.contains(A, PacketId::new(1), later));
        assert_eq!(d.observe(A, PacketId::new(1), later), Seen::New);
    }

    #[test]
    fn id_zero_is_never_deduplicated() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(60), 100);
        assert_eq!(d.observe(A, PacketId::new(0), t0), Seen::New);
        assert_eq!(d.observe(A, PacketId::new(0), t0), Seen::New);
        assert!(d.is_empty());
    }

    #[test]
    fn memory_stays_bounded_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(3600), 3);
        for id in 1..=5 {
            d.observe(A, PacketId::new(id), t0);
        }
        assert_eq!(d.len(), 3);
        assert!(!d.contains(A, PacketId::new(2), t0));
        assert!(d.contains(A, PacketId::new(5), t0));
    }
}
