//! Per-sender token buckets: how much one node may push through an ingress that anyone can
//! write to (an MQTT broker shared with other gateways; XMPP users, through
//! `xmpp::UserLimiter`). Pure: `now` is an argument. Memory is bounded: past `max_senders` the
//! bucket idle longest is forgotten (a forgotten sender starts again with a full bucket, which
//! only ever lets a little more through).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// Rate and burst of one sender's bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Messages per minute a sender may keep up.
    pub per_minute: f64,
    /// Messages a sender may send at once after a quiet time.
    pub burst: f64,
}

/// One sender's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left; a message costs one.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

/// The buckets of every recent sender.
#[derive(Debug)]
pub struct RateLimiter<K> {
    /// The limit every sender gets.
    rate: Rate,
    /// Buckets by sender.
    buckets: HashMap<K, Bucket>,
    /// Most senders remembered at once.
    max_senders: usize,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// Every sender gets `rate`; at most `max_senders` are remembered.
    pub fn new(rate: Rate, max_senders: usize) -> RateLimiter<K> {
        RateLimiter {
            rate,
            buckets: HashMap::new(),
            max_senders: max_senders.max(1),
        }
    }

    /// May `sender` pass one message at `now`? Takes a token when it may.
    pub fn allow(&mut self, sender: &K, now: Instant) -> bool {
        let per_second = self.rate.per_minute.max(0.0) / 60.0;
        let burst = self.rate.burst.max(1.0);
        if !self.buckets.contains_key(sender) && self.buckets.len() >= self.max_senders {
            self.forget_idlest();
        }
        let bucket = self.buckets.entry(sender.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at);
        bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * per_second).min(burst);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn forget_idlest(&mut self) {
        if let Some(idlest) = self
            .buckets
            .iter()
            .min_by_key(|(_, b)| b.at)
            .map(|(k, _)| k.clone())
        {
            self.buckets.remove(&idlest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RATE: Rate = Rate {
        per_minute: 30.0,
        burst: 5.0,
    };

    #[test]
    fn a_flood_from_one_sender_passes_the_burst_then_the_rate() {
        let t = Instant::now();
        let mut r = RateLimiter::new(RATE, 100);
        // 1,000 messages in one second.
        let passed = (0..1000)
            .filter(|i| r.allow(&1u32, t + Duration::from_millis(*i)))
            .count();
        assert_eq!(passed, 5, "the burst, and half a token of refill");
        assert!(
            r.allow(&1u32, t + Duration::from_secs(3)),
            "refilled at 0.5/s"
        );
    }

    #[test]
    fn senders_do_not_share_a_bucket() {
        let t = Instant::now();
        let mut r = RateLimiter::new(RATE, 100);
        for _ in 0..5 {
            assert!(r.allow(&1u32, t));
        }
        assert!(!r.allow(&1u32, t));
        assert!(r.allow(&2u32, t));
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_idlest_sender() {
        let t = Instant::now();
        let mut r = RateLimiter::new(RATE, 3);
        for k in 0..1000u32 {
            r.allow(&k, t + Duration::from_millis(u64::from(k)));
        }
        assert_eq!(r.buckets.len(), 3);
        assert!(r.buckets.contains_key(&999));
    }

    #[test]
    fn a_clock_that_goes_back_grants_nothing_extra() {
        let t = Instant::now() + Duration::from_secs(100);
        let mut r = RateLimiter::new(RATE, 10);
        for _ in 0..5 {
            assert!(r.allow(&1u32, t));
        }
        assert!(!r.allow(&1u32, t - Duration::from_secs(50)));
    }
}
