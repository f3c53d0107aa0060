//! Wall-clock steps, seen against the monotonic clock.
//!
//! A Pi has no real-time clock: it boots with a stale time (or 1970) and jumps, by days, when
//! NTP or a GPS answers; an operator may also set the date by hand. Scheduling (retries,
//! governor windows, keepalives) runs on monotonic time and never notices. But the store
//! stamps messages with wall time (`enqueued_at`, `expires_at`, airtime records), so a step
//! forward of three days would expire the whole backlog at once, and a step back would keep
//! it three days too long.
//!
//! The rule: **a stored message keeps its age across a step.** The maintenance loop asks
//! [`StepWatch::observe`] at every sweep how far the wall clock moved against the monotonic
//! clock since the last look; beyond [`TOLERANCE`] (NTP slews small errors, it steps big
//! ones) that is a step, and [`Store::rebase`](crate::store::Store::rebase) moves every time
//! stamped before it by the same amount, so each message has the life it had left. What a
//! step cannot tell apart (a message stamped in the few seconds around a step back) is left
//! as it is: at worst it lives the step longer, never forever. A step taken while the gateway
//! was stopped cannot be seen: one forward reads as a long stop (what waited too long
//! expires, as it would have), and one back is clamped at start
//! ([`Store::clamp_future`](crate::store::Store::clamp_future)): nothing is older than now,
//! so nothing lives longer than its TTL from the restart.
//!
//! The seen-set needs none of this: its generations re-anchor by themselves (see
//! `store/seen.rs`).

use std::time::Duration;

use crate::store::Millis;

/// How far the wall clock may drift from the monotonic clock between two looks before it
/// counts as a step: well above what NTP slews (at most 0.5 ms/s), and above a sweep's
/// lateness on a busy Pi.
pub const TOLERANCE: Millis = 60_000;

/// A step of the wall clock, as [`StepWatch::observe`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// How far the wall clock moved beyond what the monotonic clock says passed: positive
    /// forward.
    pub delta: Millis,
    /// What the old clock would read now (`new_now - delta`): stamps at or before it are old.
    pub old_now: Millis,
    /// The wall clock now.
    pub new_now: Millis,
    /// How long since the last look: the step happened within it, so stamps from the new
    /// clock are at most this old.
    pub within: Millis,
}

/// Watches the wall clock against the monotonic clock. Pure: the caller passes both.
#[derive(Debug, Clone, Default)]
pub struct StepWatch {
    /// The last look: monotonic time (from any fixed origin) and wall time.
    last: Option<(Duration, Millis)>,
}

impl StepWatch {
    /// A watch that has not looked yet.
    pub fn new() -> StepWatch {
        StepWatch::default()
    }

    /// Looks at the clocks: `mono` is monotonic time since a fixed origin, `wall` the wall
    /// clock (unix ms). Says whether the wall clock stepped since the last look.
    pub fn observe(&mut self, mono: Duration, wall: Millis) -> Option<Step> {
        let last = self.last.replace((mono, wall));
        let (last_mono, last_wall) = last?;
        let passed = Millis::try_from(mono.saturating_sub(last_mono).as_millis()).unwrap_or(0);
        let old_now = last_wall.saturating_add(passed);
        let delta = wall.saturating_sub(old_now);
        (delta.abs() > TOLERANCE).then_some(Step {
            delta,
            old_now,
            new_now: wall,
            within: passed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_700_000_000_000;
    const DAY: Millis = 86_400_000;
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn time_passing_on_both_clocks_is_no_step() {
        let mut w = StepWatch::new();
        assert_eq!(
            w.observe(S, T0),
            None,
            "the first look has nothing to compare"
        );
        assert_eq!(w.observe(11 * S, T0 + 10_000), None);
        // NTP slewing, a late sweep: small differences are no step.
        assert_eq!(w.observe(21 * S, T0 + 20_000 + 30_000), None);
        assert_eq!(w.observe(31 * S, T0 + 30_000 + 30_000 - 50_000), None);
    }

    #[test]
    fn a_step_forward_or_back_by_days_is_seen_with_its_size() {
        let mut w = StepWatch::new();
        w.observe(S, T0);
        let step = w.observe(11 * S, T0 + 10_000 + 3 * DAY).unwrap();
        assert_eq!(
            step,
            Step {
                delta: 3 * DAY,
                old_now: T0 + 10_000,
                new_now: T0 + 10_000 + 3 * DAY,
                within: 10_000,
            }
        );
        // The next look compares with the new clock: no second step.
        assert_eq!(w.observe(21 * S, T0 + 20_000 + 3 * DAY), None);
        let back = w.observe(31 * S, T0 + 30_000).unwrap();
        assert_eq!(back.delta, -3 * DAY);
        assert_eq!(back.old_now, T0 + 30_000 + 3 * DAY);
    }

    #[test]
    fn a_boot_in_1970_then_the_real_time_is_one_step() {
        let mut w = StepWatch::new();
        w.observe(S, 5_000);
        let step = w.observe(11 * S, T0).unwrap();
        assert_eq!(step.delta, T0 - 15_000);
        assert_eq!(step.old_now, 15_000);
    }
}
