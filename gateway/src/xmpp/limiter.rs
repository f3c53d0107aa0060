//! How many texts one XMPP user may put on the mesh: a token bucket per user
//! ([`RateLimiter`]), keyed by bare JID so a user's phone and laptop share one, and bounded
//! in memory like the MQTT downlink's.

use std::time::Instant;

use crate::ratelimit::{Rate, RateLimiter};

use super::names::bare_jid;

/// Users remembered at once: far more than one hub's server has. Past it, the user idle
/// longest is forgotten (and starts again with a full bucket).
pub const MAX_USERS: usize = 10_000;

/// Every XMPP user's bucket.
#[derive(Debug)]
pub struct UserLimiter {
    /// The buckets, by bare JID (lower case, no resource).
    buckets: RateLimiter<String>,
}

impl UserLimiter {
    /// Every user gets `rate` (the section's `rate_per_user` and `burst_per_user`).
    pub fn new(rate: Rate) -> UserLimiter {
        UserLimiter {
            buckets: RateLimiter::new(rate, MAX_USERS),
        }
    }

    /// May the user `jid` (full or bare; in a room that hides real JIDs, the occupant JID
    /// `room@service/nick`) put one more text on the mesh at `now`? Takes a token when so.
    pub fn allow(&mut self, jid: &str, now: Instant) -> bool {
        self.buckets.allow(&bare_jid(jid), now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const RATE: Rate = Rate {
        per_minute: 6.0,
        burst: 3.0,
    };

    #[test]
    fn a_flood_from_one_user_passes_the_burst_then_one_every_ten_seconds() {
        let t = Instant::now();
        let mut l = UserLimiter::new(RATE);
        let passed = (0..100)
            .filter(|i| l.allow("alice@hub.lan/phone", t + Duration::from_millis(*i)))
            .count();
        assert_eq!(passed, 3);
        assert!(
            !l.allow("alice@hub.lan/laptop", t + Duration::from_secs(5)),
            "one user"
        );
        assert!(
            l.allow("ALICE@hub.lan", t + Duration::from_secs(11)),
            "case folded"
        );
        assert!(l.allow("bob@hub.lan/x", t), "bob has his own bucket");
    }
}
