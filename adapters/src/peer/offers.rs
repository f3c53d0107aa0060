//! The owner's offers on one connection, and who waits for each: those beyond the session's
//! window wait here in call order, those handed to the session wait for their acknowledgement.
//! No I/O; the link answers the waiters.
//!
//! Everything here belongs to one connection and dies with it: on a close every waiter is
//! answered (the link says `Unreachable`) and the owner offers the items again on the next
//! connection. So an item offered on an old connection can never be acknowledged by a new one.

use std::collections::{HashMap, VecDeque};

use mesh_core::peer::Outgoing;

/// One connection's offers; `R` is whoever waits for an item's outcome.
#[derive(Debug)]
pub(super) struct Offers<R> {
    /// Offered while the session's window was full, in call order: handed to the session
    /// first-in first-out as acknowledgements open room, so the wire keeps the calls' order.
    waiting: VecDeque<(Outgoing, R)>,
    /// Handed to the session, not yet acknowledged, by the owner's store key. A list per key
    /// because nothing stops an owner from offering one key twice; acknowledgements of a key
    /// come in offer order, so the oldest waiter is answered first.
    in_flight: HashMap<u64, VecDeque<R>>,
    /// How many waiters `in_flight` holds (the map's length counts keys, not offers).
    in_flight_len: usize,
}

impl<R> Default for Offers<R> {
    fn default() -> Self {
        Offers {
            waiting: VecDeque::new(),
            in_flight: HashMap::new(),
            in_flight_len: 0,
        }
    }
}

impl<R> Offers<R> {
    /// True when an offer must queue behind earlier ones rather than go to the session, even
    /// if the session has room: a later offer never overtakes an earlier one.
    pub(super) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Queues an offer the session has no room for yet.
    pub(super) fn wait(&mut self, item: Outgoing, reply: R) {
        self.waiting.push_back((item, reply));
    }

    /// Puts back at the head the offer just taken by [`Offers::next_waiting`] that the
    /// session refused for lack of room.
    pub(super) fn wait_first(&mut self, item: Outgoing, reply: R) {
        self.waiting.push_front((item, reply));
    }

    /// The oldest waiting offer.
    pub(super) fn next_waiting(&mut self) -> Option<(Outgoing, R)> {
        self.waiting.pop_front()
    }

    /// The session took the item with store key `key`.
    pub(super) fn sent(&mut self, key: u64, reply: R) {
        self.in_flight.entry(key).or_default().push_back(reply);
        self.in_flight_len += 1;
    }

    /// The peer committed the items with these keys: their waiters, in the keys' order. A key
    /// nobody waits for (already answered) is skipped.
    pub(super) fn acknowledged(&mut self, keys: &[u64]) -> Vec<R> {
        let mut replies = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(waiters) = self.in_flight.get_mut(key) else {
                continue;
            };
            if let Some(reply) = waiters.pop_front() {
                replies.push(reply);
                self.in_flight_len -= 1;
            }
            if waiters.is_empty() {
                self.in_flight.remove(key);
            }
        }
        replies
    }

    /// Offers handed to the session and not yet acknowledged.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight_len
    }

    /// Offers waiting for room.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The connection is over: every waiter, waiting ones first, none left behind.
    pub(super) fn drain(&mut self) -> Vec<R> {
        let mut replies: Vec<R> = self.waiting.drain(..).map(|(_, r)| r).collect();
        replies.extend(self.in_flight.drain().flat_map(|(_, waiters)| waiters));
        self.in_flight_len = 0;
        replies
    }
}

/// Whether an offer stamped with connection `stamp` (0: none was open when the owner made it)
/// may go on the link's connection `current` (its number, and whether its session takes
/// offers), or why it is answered `Unreachable`. Only the connection that was open when the
/// owner offered takes the offer: one made before a reconnect never overtakes, on the new
/// connection, the items the owner offers again after `Up`.
pub(super) fn admit(
    stamp: u64,
    current: Option<(u64, bool)>,
    stopping: bool,
) -> Result<(), &'static str> {
    match current {
        _ if stopping => Err("the peer link is shutting down"),
        None => Err("no connection to the peer"),
        Some(_) if stamp == 0 => Err("no connection to the peer when it was offered"),
        Some((number, _)) if number != stamp => Err("offered on a connection that has closed"),
        Some((_, false)) => Err("the connection is closing"),
        Some((_, true)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::NodeId;

    #[test]
    fn only_the_connection_open_when_offered_takes_an_offer() {
        assert_eq!(admit(3, Some((3, true)), false), Ok(()));
        for (stamp, current, stopping) in [
            (3, Some((3, true)), true),
            (3, None, false),
            (0, Some((3, true)), false),
            (2, Some((3, true)), false),
            (3, Some((3, false)), false),
        ] {
            assert!(
                admit(stamp, current, stopping).is_err(),
                "stamp {stamp} on {current:?} (stopping: {stopping})"
            );
        }
    }

    fn item(key: u64) -> Outgoing {
        Outgoing {
            key,
            channel: "LongFast".into(),
            origin: NodeId::new(7),
            hops: 0,
            packet: vec![1, 2, 3],
        }
    }

    #[test]
    fn waiting_offers_come_out_in_call_order_and_a_refused_one_goes_back_first() {
        let mut offers = Offers::default();
        for key in 1..=3 {
            offers.wait(item(key), key);
        }
        assert!(offers.has_waiting());
        let (first, reply) = offers.next_waiting().unwrap();
        assert_eq!((first.key, reply), (1, 1));
        offers.wait_first(first, reply);
        let order: Vec<u64> = std::iter::from_fn(|| offers.next_waiting())
            .map(|(i, _)| i.key)
            .collect();
        assert_eq!(order, [1, 2, 3]);
        assert!(!offers.has_waiting());
    }

    #[test]
    fn acknowledgements_answer_their_waiters_only_once() {
        let mut offers = Offers::default();
        for key in [10, 20, 30] {
            offers.sent(key, key * 100);
        }
        assert_eq!(offers.in_flight(), 3);
        // The outbox drains by priority: acknowledged keys need not be in key order.
        assert_eq!(offers.acknowledged(&[30, 10]), [3000, 1000]);
        assert_eq!(
            offers.acknowledged(&[30, 99]),
            Vec::<u64>::new(),
            "unknown or answered keys are skipped"
        );
        assert_eq!(offers.in_flight(), 1);
        assert_eq!(offers.acknowledged(&[20]), [2000]);
        assert_eq!(offers.in_flight(), 0);
    }

    #[test]
    fn a_key_offered_twice_is_answered_oldest_first() {
        let mut offers = Offers::default();
        offers.sent(5, "first");
        offers.sent(5, "second");
        assert_eq!(offers.in_flight(), 2);
        assert_eq!(offers.acknowledged(&[5]), ["first"]);
        assert_eq!(offers.acknowledged(&[5]), ["second"]);
        assert_eq!(offers.in_flight(), 0);
    }

    #[test]
    fn a_closed_connection_answers_every_waiter() {
        let mut offers = Offers::default();
        offers.sent(1, 1);
        offers.sent(2, 2);
        offers.wait(item(3), 3);
        let mut answered = offers.drain();
        answered.sort_unstable();
        assert_eq!(answered, [1, 2, 3]);
        assert_eq!((offers.in_flight(), offers.waiting()), (0, 0));
        assert!(offers.acknowledged(&[1, 2]).is_empty());
    }
}
