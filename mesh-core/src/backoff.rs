//! Capped exponential backoff for every link that reconnects (radios, and later brokers and
//! peers).
//!
//! The attempt count is only forgiven once a connection has stayed up for `stable_after`: a
//! link that connects and dies at once (a TCP radio that kicks us off because another client
//! connected, a broker that refuses us after accepting the socket) keeps backing off instead of
//! flapping.

use std::time::Duration;

/// Reconnect delays: `initial`, doubled per failed attempt, never above `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// First delay after a failure.
    initial: Duration,
    /// The cap.
    max: Duration,
    /// How long a connection must last before a later failure starts again from `initial`.
    stable_after: Duration,
    /// Failures since the last stable connection.
    attempt: u32,
}

impl Backoff {
    /// A backoff from `initial` up to `max`, forgiven after `stable_after` of good connection.
    pub fn new(initial: Duration, max: Duration, stable_after: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            stable_after,
            attempt: 0,
        }
    }

    /// The delay before the next attempt, given how long the last connection lasted
    /// (`None` if it never came up). `jitter` in `0.0..=1.0` spreads the delay over its
    /// upper fifth so gateways restarted together do not reconnect in lockstep.
    pub fn next_delay(&mut self, connected_for: Option<Duration>, jitter: f64) -> Duration {
        if connected_for.is_some_and(|d| d >= self.stable_after) {
            self.attempt = 0;
        }
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        let base = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let spread = base.mul_f64(0.2 * jitter.clamp(0.0, 1.0));
        (base.saturating_sub(base.mul_f64(0.2)) + spread).max(Duration::from_millis(1))
    }

    /// Failures since the last stable connection.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut b = Backoff::new(secs(1), secs(8), secs(60));
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay(None, 1.0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn a_connection_that_dies_quickly_keeps_backing_off() {
        let mut b = Backoff::new(secs(1), secs(60), secs(30));
        b.next_delay(None, 1.0);
        b.next_delay(Some(secs(2)), 1.0);
        assert_eq!(b.next_delay(Some(secs(2)), 1.0), secs(4));
    }

    #[test]
    fn a_stable_connection_starts_again_from_the_initial_delay() {
        let mut b = Backoff::new(secs(1), secs(60), secs(30));
        for _ in 0..5 {
            b.next_delay(None, 1.0);
        }
        assert_eq!(b.next_delay(Some(secs(31)), 1.0), secs(1));
    }

    #[test]
    fn jitter_stays_within_the_upper_fifth() {
        let mut b = Backoff::new(secs(10), secs(60), secs(30));
        let low = b.next_delay(None, 0.0);
        assert_eq!(low, secs(8));
    }
}
