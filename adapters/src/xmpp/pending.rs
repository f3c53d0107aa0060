//! Stanzas sent and not yet confirmed, by the id the link gave them, each with whoever waits
//! for the outcome and the time by which the far side must have answered. No I/O: callers
//! pass `now`.
//!
//! Used twice: room messages wait for their reflection (the room sends the message back with
//! the id we set), and chat messages wait for the answer to a ping sent right after them on
//! the same stream.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One stanza waiting for its confirmation.
#[derive(Debug)]
pub(crate) struct Entry<W, T> {
    /// Whoever waits for the outcome.
    pub(crate) waiter: W,
    /// When it counts as lost.
    pub(crate) deadline: Instant,
    /// What it was, for the outcome's wording and follow-up (the room and sender of a
    /// reflection, the recipient of a chat).
    pub(crate) tag: T,
}

/// Waiters by stanza id, each with a tag `T` saying what it was.
#[derive(Debug)]
pub(crate) struct Pending<W, T = String> {
    /// What waits, by the id the far side answers with.
    entries: HashMap<String, Entry<W, T>>,
    /// How long the far side has to answer.
    timeout: Duration,
}

impl<W, T> Pending<W, T> {
    /// Nothing waiting; each entry gets `timeout`.
    pub(crate) fn new(timeout: Duration) -> Pending<W, T> {
        Pending {
            entries: HashMap::new(),
            timeout,
        }
    }

    /// `waiter` waits for the answer to `id` from `now` on.
    pub(crate) fn insert(&mut self, id: String, tag: T, waiter: W, now: Instant) {
        let deadline = now + self.timeout;
        self.entries.insert(
            id,
            Entry {
                waiter,
                deadline,
                tag,
            },
        );
    }

    /// The far side answered `id`: the waiter, if anyone waited.
    pub(crate) fn take(&mut self, id: &str) -> Option<Entry<W, T>> {
        self.entries.remove(id)
    }

    /// Entries whose deadline passed.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<Entry<W, T>> {
        let late: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        late.iter()
            .filter_map(|id| self.entries.remove(id))
            .collect()
    }

    /// Everything, e.g. when the stream is gone and no answer can come any more.
    pub(crate) fn drain(&mut self) -> Vec<Entry<W, T>> {
        self.entries.drain().map(|(_, e)| e).collect()
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.deadline).min()
    }

    /// How many wait.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_settles_only_its_own_id() {
        let now = Instant::now();
        let mut p: Pending<i32> = Pending::new(Duration::from_secs(30));
        p.insert("a".into(), "room".into(), 1, now);
        p.insert("b".into(), "room".into(), 2, now);
        assert_eq!(p.take("b").map(|e| e.waiter), Some(2));
        assert!(p.take("b").is_none());
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn entries_expire_at_their_deadline_and_not_before() {
        let now = Instant::now();
        let mut p: Pending<i32> = Pending::new(Duration::from_secs(30));
        p.insert("a".into(), String::new(), 1, now);
        p.insert("b".into(), String::new(), 2, now + Duration::from_secs(10));
        assert_eq!(p.next_deadline(), Some(now + Duration::from_secs(30)));
        assert!(p.expired(now + Duration::from_secs(29)).is_empty());
        let late: Vec<i32> = p
            .expired(now + Duration::from_secs(30))
            .into_iter()
            .map(|e| e.waiter)
            .collect();
        assert_eq!(late, [1]);
        assert_eq!(p.drain().len(), 1);
        assert_eq!(p.next_deadline(), None);
    }
}
