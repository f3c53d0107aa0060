//! The drain policy of one destination: which queued rows may be sent now, what each
//! [`DeliveryStatus`] means for its row, and when delivered rows are confirmed to the store.
//! Pure: `now` is an argument, nothing here touches a socket, a timer or the store; the
//! [`worker`](crate::worker) carries out the [`Step`]s.
//!
//! | status        | the row                                      | the queue                                  |
//! |---------------|----------------------------------------------|--------------------------------------------|
//! | `Delivered`   | confirmed in the next batch                  | goes on                                    |
//! | `Unreachable` | stays, no attempt counted                    | waits a capped, growing pause (and for the sink to be ready) |
//! | `Failed`      | one attempt counted; set aside after the limit | waits for the row's retry time, so what one sender said never overtakes what they said before |
//! | `Rejected`    | set aside at once                            | goes on                                    |
//!
//! A link that drops a hundred times while messages wait therefore loses none of them: only
//! the far side saying no, again and again, sets a row aside.
//!
//! Confirms are batched: delivered rows are committed together when the batch is full, when
//! nothing else is in flight, or after a short linger, so a fast destination (MQTT, a peer) pays
//! one commit per batch and not one per message. Rows delivered but not yet confirmed are still
//! in the store and come back from its queue: [`Drain::is_busy`] tells the worker to skip them.
//!
//! Rows for one node that is away wait for it without holding the queue: see [`Parked`].

mod parked;

pub use parked::{Parked, Parking};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mesh_core::DeliveryStatus;

/// How a destination drains. Plain numbers, so a test can shrink every delay.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainPolicy {
    /// Deliveries in flight at once: a radio takes one at a time, a broker dozens.
    pub window: usize,
    /// Counted failures before a row is set aside.
    pub max_attempts: u32,
    /// Pause after the first counted failure; doubles with each attempt of that row.
    pub retry_base: Duration,
    /// Longest pause after a counted failure.
    pub retry_max: Duration,
    /// Pause after the destination was unreachable; doubles while it stays so.
    pub unreachable_base: Duration,
    /// Longest pause while unreachable (the sink's own readiness usually ends it first).
    pub unreachable_max: Duration,
    /// Delivered rows confirmed in one commit at most.
    pub confirm_batch: usize,
    /// How long a delivered row may wait for company before it is confirmed anyway.
    pub confirm_linger: Duration,
}

impl DrainPolicy {
    /// The policy for a destination that takes `window` deliveries at once.
    pub fn new(window: usize, max_attempts: u32) -> DrainPolicy {
        DrainPolicy {
            window: window.max(1),
            max_attempts: max_attempts.max(1),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            unreachable_base: Duration::from_millis(100),
            unreachable_max: Duration::from_secs(30),
            confirm_batch: 512,
            confirm_linger: Duration::from_millis(20),
        }
    }
}

/// Why the queue is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pause {
    /// A row failed; it and everything behind it wait for its retry.
    Retry,
    /// The destination was unreachable.
    Unreachable,
    /// The sink's pacer (a radio's airtime governor) holds traffic back; a more urgent row
    /// arriving may lift it ([`Drain::lift_hold`]).
    Paced,
}

/// What the worker must do after an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<K, M> {
    /// Count a failed attempt of this row (the store keeps attempts and the last error).
    Fail {
        /// The row.
        key: K,
        /// What went wrong.
        reason: String,
    },
    /// Move this row to the dead letters.
    SetAside {
        /// The row.
        key: K,
        /// Why, for the operator.
        reason: String,
        /// What the worker attached to it.
        meta: M,
    },
}

/// One destination's drain state: what is in flight, what waits for its confirm commit, and
/// whether the queue is paused.
#[derive(Debug)]
pub struct Drain<K, M = ()> {
    /// The limits and delays.
    policy: DrainPolicy,
    /// Rows handed to the sink whose outcome is not known yet, with what the worker attached
    /// to them (airtime, for radios).
    in_flight: BTreeMap<K, M>,
    /// Rows the far side confirmed, waiting for the store commit that deletes them.
    delivered: BTreeMap<K, M>,
    /// When the oldest of `delivered` arrived, for the linger.
    delivered_since: Option<Instant>,
    /// The queue is paused until then, and why.
    paused: Option<(Instant, Pause)>,
    /// Unreachable outcomes in a row, for the growing pause; a delivery resets it.
    unreachable_streak: u32,
}

impl<K: Ord + Copy, M> Drain<K, M> {
    /// Nothing in flight, nothing paused.
    pub fn new(policy: DrainPolicy) -> Drain<K, M> {
        Drain {
            policy,
            in_flight: BTreeMap::new(),
            delivered: BTreeMap::new(),
            delivered_since: None,
            paused: None,
            unreachable_streak: 0,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &DrainPolicy {
        &self.policy
    }

    /// How many more rows may be sent at `now` (zero while paused or the window is full).
    pub fn room(&self, now: Instant) -> usize {
        if self.paused_at(now).is_some() {
            return 0;
        }
        self.policy.window.saturating_sub(self.in_flight.len())
    }

    /// Why and until when the queue is paused at `now`, if it is.
    pub fn paused_at(&self, now: Instant) -> Option<(Instant, &Pause)> {
        self.paused
            .as_ref()
            .filter(|(until, _)| *until > now)
            .map(|(until, why)| (*until, why))
    }

    /// True for a row that is in flight or delivered and not yet confirmed: the store still
    /// lists it, and it must not be sent again.
    pub fn is_busy(&self, key: &K) -> bool {
        self.in_flight.contains_key(key) || self.delivered.contains_key(key)
    }

    /// Rows in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The worker handed this row to the sink.
    pub fn sent(&mut self, key: K, meta: M) {
        self.in_flight.insert(key, meta);
    }

    /// The outcome of a row in flight, whose store record shows `attempts` counted failures
    /// so far. Unknown keys (an outcome after the row was forgotten) change nothing.
    pub fn outcome(
        &mut self,
        key: K,
        attempts: u32,
        status: DeliveryStatus,
        now: Instant,
    ) -> Option<Step<K, M>> {
        let meta = self.in_flight.remove(&key)?;
        match status {
            DeliveryStatus::Delivered => {
                self.unreachable_streak = 0;
                self.delivered_since.get_or_insert(now);
                self.delivered.insert(key, meta);
                None
            }
            DeliveryStatus::Unreachable { .. } => {
                let delay = doubling(
                    self.policy.unreachable_base,
                    self.unreachable_streak,
                    self.policy.unreachable_max,
                );
                self.unreachable_streak = self.unreachable_streak.saturating_add(1);
                self.pause(now + delay, Pause::Unreachable);
                None
            }
            DeliveryStatus::Failed { reason } => {
                let attempts = attempts.saturating_add(1);
                if attempts >= self.policy.max_attempts {
                    return Some(Step::SetAside {
                        key,
                        reason: format!("{attempts} attempts failed; last: {reason}"),
                        meta,
                    });
                }
                let delay = doubling(self.policy.retry_base, attempts - 1, self.policy.retry_max);
                self.pause(now + delay, Pause::Retry);
                Some(Step::Fail { key, reason })
            }
            DeliveryStatus::Rejected { reason } => Some(Step::SetAside { key, reason, meta }),
        }
    }

    /// The sink's pacer holds the queue until `until`: a pause that blames no row.
    pub fn hold_until(&mut self, until: Instant) {
        self.pause(until, Pause::Paced);
    }

    /// Something new arrived that the pacer may let through sooner (a more urgent class):
    /// lift a pacer hold, but never a retry or unreachable pause.
    pub fn lift_hold(&mut self) {
        if matches!(self.paused, Some((_, Pause::Paced))) {
            self.paused = None;
        }
    }

    fn pause(&mut self, until: Instant, why: Pause) {
        // A longer pause already in force stays.
        if self.paused.as_ref().is_some_and(|(u, _)| *u >= until) {
            return;
        }
        self.paused = Some((until, why));
    }

    /// Delivered rows due for their confirm commit at `now`: a full batch, everything when
    /// nothing is in flight (or `flush`), or what waited out the linger.
    pub fn confirms_due(&mut self, now: Instant, flush: bool) -> Vec<(K, M)> {
        let Some(since) = self.delivered_since else {
            return Vec::new();
        };
        let due = flush
            || self.in_flight.is_empty()
            || self.delivered.len() >= self.policy.confirm_batch
            || now.saturating_duration_since(since) >= self.policy.confirm_linger;
        if !due {
            return Vec::new();
        }
        self.delivered_since = None;
        std::mem::take(&mut self.delivered).into_iter().collect()
    }

    /// The next moment something changes by itself: a pause ends or a linger runs out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let linger = self
            .delivered_since
            .map(|since| since + self.policy.confirm_linger);
        let pause = self.paused.as_ref().map(|(until, _)| *until);
        match (linger, pause) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Rows delivered and waiting for their confirm commit.
    pub fn unconfirmed(&self) -> usize {
        self.delivered.len()
    }
}

/// `base * 2^n`, at most `max`.
fn doubling(base: Duration, n: u32, max: Duration) -> Duration {
    base.saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(window: usize) -> Drain<u32> {
        Drain::new(DrainPolicy::new(window, 3))
    }

    #[test]
    fn the_window_bounds_what_is_in_flight() {
        let t = Instant::now();
        let mut d = drain(2);
        assert_eq!(d.room(t), 2);
        d.sent(1, ());
        d.sent(2, ());
        assert_eq!(d.room(t), 0);
        assert!(d.is_busy(&1) && !d.is_busy(&3));
        d.outcome(1, 0, DeliveryStatus::Delivered, t);
        assert_eq!(d.room(t), 1);
        assert!(
            d.is_busy(&1),
            "delivered but not confirmed yet: still listed by the store"
        );
    }

    #[test]
    fn confirms_wait_for_company_while_others_are_in_flight() {
        let t = Instant::now();
        let mut d = drain(8);
        for k in 1..=3 {
            d.sent(k, ());
        }
        d.outcome(1, 0, DeliveryStatus::Delivered, t);
        assert!(d.confirms_due(t, false).is_empty(), "two still in flight");
        d.outcome(
            2,
            0,
            DeliveryStatus::Delivered,
            t + Duration::from_millis(5),
        );
        assert_eq!(d.poll_timeout(), Some(t + Duration::from_millis(20)));
        let due = d.confirms_due(t + Duration::from_millis(20), false);
        assert_eq!(due.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [1, 2]);
        d.outcome(3, 0, DeliveryStatus::Delivered, t);
        assert_eq!(
            d.confirms_due(t, false).len(),
            1,
            "nothing in flight: at once"
        );
        assert!(!d.is_busy(&3));
    }

    #[test]
    fn unreachable_never_counts_and_pauses_longer_each_time_up_to_a_cap() {
        let t = Instant::now();
        let mut d = drain(1);
        let mut pauses = Vec::new();
        for _ in 0..100 {
            d.sent(7, ());
            let step = d.outcome(7, 0, DeliveryStatus::unreachable("link down"), t);
            assert_eq!(step, None, "no attempt counted, nothing set aside");
            let (until, why) = d.paused_at(t).unwrap();
            assert_eq!(why, &Pause::Unreachable);
            pauses.push(until - t);
        }
        assert_eq!(pauses[0], Duration::from_millis(100));
        assert_eq!(pauses[1], Duration::from_millis(200));
        assert_eq!(*pauses.last().unwrap(), Duration::from_secs(30));
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        let later = t + Duration::from_secs(60);
        d.sent(7, ());
        d.outcome(7, 0, DeliveryStatus::Delivered, later);
        d.sent(8, ());
        d.outcome(8, 0, DeliveryStatus::unreachable("again"), later);
        assert_eq!(
            d.paused_at(later).unwrap().0 - later,
            Duration::from_millis(100),
            "a delivery resets the pause"
        );
    }

    #[test]
    fn failures_count_pause_the_queue_and_set_the_row_aside_at_the_limit() {
        let t = Instant::now();
        let mut d = drain(1);
        d.sent(1, ());
        let step = d.outcome(1, 0, DeliveryStatus::failed("NAK"), t);
        assert_eq!(
            step,
            Some(Step::Fail {
                key: 1,
                reason: "NAK".into()
            })
        );
        assert_eq!(d.room(t), 0);
        assert_eq!(d.room(t + Duration::from_secs(1)), 1);
        d.sent(1, ());
        d.outcome(1, 1, DeliveryStatus::failed("NAK"), t);
        assert_eq!(d.paused_at(t).unwrap().0 - t, Duration::from_secs(2));
        d.sent(1, ());
        let step = d.outcome(1, 2, DeliveryStatus::failed("NAK"), t);
        assert!(
            matches!(step, Some(Step::SetAside { key: 1, ref reason, .. }) if reason.starts_with("3 attempts failed"))
        );
    }

    #[test]
    fn a_rejection_sets_the_row_aside_and_the_queue_goes_on() {
        let t = Instant::now();
        let mut d = drain(1);
        d.sent(1, ());
        let step = d.outcome(1, 0, DeliveryStatus::rejected("too large"), t);
        assert!(matches!(step, Some(Step::SetAside { key: 1, .. })));
        assert_eq!(d.room(t), 1);
    }

    #[test]
    fn a_pacer_hold_blames_no_row_and_can_be_lifted_unlike_a_retry() {
        let t = Instant::now();
        let mut d = drain(1);
        d.hold_until(t + Duration::from_secs(10));
        assert_eq!(
            d.paused_at(t).unwrap(),
            (t + Duration::from_secs(10), &Pause::Paced)
        );
        d.lift_hold();
        assert_eq!(d.room(t), 1);
        d.sent(1, ());
        d.outcome(1, 0, DeliveryStatus::failed("NAK"), t);
        d.lift_hold();
        assert_eq!(d.room(t), 0, "a retry pause stays");
    }

    #[test]
    fn outcomes_for_unknown_rows_change_nothing() {
        let t = Instant::now();
        let mut d = drain(1);
        assert_eq!(d.outcome(9, 0, DeliveryStatus::failed("x"), t), None);
        assert_eq!(d.room(t), 1);
    }
}
