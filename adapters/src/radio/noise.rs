//! Bytes a radio sends outside frames. On serial they are the firmware's text log (it prints
//! plain text until a client has talked to it); anywhere else they are garbage. Either way
//! they become log lines in our logs, rate-limited so a babbling or broken device cannot
//! flood the gateway's log. [`LogLimit`] is that rate limit, also used for the link's
//! per-frame warnings (oversize, truncated, undecodable): a hostile "radio" sending nothing
//! but bad frame headers must cost a few lines a second, not millions.

use std::time::Instant;

/// Longest line kept; the rest of an over-long line is cut.
const MAX_LINE: usize = 240;

/// A token bucket for log lines, counting what it held back. Pure: `now` is an argument.
#[derive(Debug, Clone)]
pub struct LogLimit {
    /// Lines that may still be logged in the current burst.
    tokens: f64,
    /// Burst size.
    burst: f64,
    /// Lines per second regained.
    rate: f64,
    /// When tokens were last topped up.
    last: Option<Instant>,
    /// Lines dropped since the last one logged, reported with the next one.
    suppressed: u64,
}

impl LogLimit {
    /// At most `burst` lines at once, then `per_second`.
    pub fn new(burst: u32, per_second: f64) -> LogLimit {
        LogLimit {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            rate: per_second,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`: `Some(n)` with the lines held back before it,
    /// or `None` (and it is counted).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if let Some(last) = self.last {
            let gained = now.saturating_duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + gained).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Splits noise into lines and decides which to log.
#[derive(Debug)]
pub struct NoiseLog {
    /// The unfinished line so far.
    partial: Vec<u8>,
    /// How many lines reach the log.
    limit: LogLimit,
}

/// A line to log, with how many were dropped before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoiseLine {
    /// The text (lossy UTF-8, without line ends or control characters).
    pub text: String,
    /// Lines dropped by the rate limit since the previous logged line.
    pub suppressed_before: u64,
}

impl Default for NoiseLog {
    fn default() -> Self {
        NoiseLog::new(20, 5.0)
    }
}

impl NoiseLog {
    /// At most `burst` lines at once, then `per_second`.
    pub fn new(burst: u32, per_second: f64) -> NoiseLog {
        NoiseLog {
            partial: Vec::new(),
            limit: LogLimit::new(burst, per_second),
        }
    }

    /// Takes noise bytes; returns the complete lines that may be logged now. Every dropped
    /// line is counted in the return value's `suppressed_before` and in the returned total.
    pub fn push(&mut self, bytes: &[u8], now: Instant) -> (Vec<NoiseLine>, u64) {
        let mut lines = Vec::new();
        let mut dropped = 0;
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.partial);
                let text: String = String::from_utf8_lossy(&line)
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect();
                let text = text.trim_end().to_owned();
                if text.is_empty() {
                    continue;
                }
                match self.limit.allow(now) {
                    Some(suppressed_before) => lines.push(NoiseLine {
                        text,
                        suppressed_before,
                    }),
                    None => dropped += 1,
                }
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
        (lines, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_are_split_and_cleaned() {
        let mut n = NoiseLog::default();
        let t0 = Instant::now();
        let (lines, _) = n.push(b"INFO  | 12:00 boot\r\nDEB", t0);
        assert_eq!(lines[0].text, "INFO  | 12:00 boot");
        let (lines, _) = n.push(b"UG | x\n", t0);
        assert_eq!(lines[0].text, "DEBUG | x");
    }

    #[test]
    fn a_flood_is_rate_limited_and_counted() {
        let mut n = NoiseLog::new(3, 1.0);
        let t0 = Instant::now();
        let (lines, dropped) = n.push(&b"x\n".repeat(10), t0);
        assert_eq!(lines.len(), 3);
        assert_eq!(dropped, 7);
        let (lines, _) = n.push(b"y\n", t0 + Duration::from_secs(1));
        assert_eq!(lines[0].suppressed_before, 7);
    }

    #[test]
    fn the_limit_regains_lines_with_time_and_reports_what_it_held_back() {
        let mut l = LogLimit::new(2, 10.0);
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(l.allow(t0), None);
        }
        assert_eq!(l.allow(t0 + Duration::from_millis(100)), Some(1000));
        // A clock that does not move (or an earlier `now`) regains nothing.
        assert_eq!(l.allow(t0), None);
    }

    #[test]
    fn binary_garbage_does_not_grow_without_bound() {
        let mut n = NoiseLog::default();
        n.push(&[0xff; 10_000], Instant::now());
        assert!(n.partial.len() <= MAX_LINE);
    }
}
