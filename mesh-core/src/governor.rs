//! The airtime governor of one radio: what the gateway may inject into a mesh, and when.
//!
//! Two limits, both pure functions of what was sent and `now`:
//! - the region's duty cycle over a rolling window (EU868: 10 % of an hour), counting the
//!   airtime of every packet the gateway injected, computed from the mesh's modem preset;
//! - politeness towards the mesh: above `defer_low_above` percent of channel utilisation (as
//!   the radio itself measures and reports it) positions and telemetry wait, above
//!   `defer_all_above` everything waits.
//!
//! Nothing is ever dropped here: what cannot go now waits in the outbox until it may, or until
//! its time to live runs out there.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::class::Class;

/// The limits of one radio.
#[derive(Debug, Clone, PartialEq)]
pub struct GovernorConfig {
    /// Share of the window the gateway may transmit, in percent; `None` means no legal limit.
    pub duty_cycle_percent: Option<f64>,
    /// The rolling window the duty cycle is measured over (an hour in EU868).
    pub window: Duration,
    /// Channel utilisation (percent) above which positions and telemetry wait.
    pub defer_low_above: f32,
    /// Channel utilisation (percent) above which everything waits.
    pub defer_all_above: f32,
    /// How long a utilisation report counts; an older one is ignored.
    pub utilization_max_age: Duration,
    /// How long to wait before re-checking when only a busy channel holds traffic back.
    pub busy_recheck: Duration,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig {
            duty_cycle_percent: None,
            window: Duration::from_secs(3600),
            defer_low_above: 25.0,
            defer_all_above: 40.0,
            utilization_max_age: Duration::from_secs(300),
            busy_recheck: Duration::from_secs(15),
        }
    }
}

/// The governor's answer for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it now.
    Go,
    /// Not before this moment.
    WaitUntil(Instant),
}

/// Why something waits, for logs and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The duty-cycle budget is spent for now.
    DutyCycle,
    /// The channel is too busy for this class.
    BusyChannel,
}

/// Airtime accounting for one radio.
#[derive(Debug, Clone)]
pub struct Governor {
    /// The limits.
    config: GovernorConfig,
    /// Airtime injected within the window, oldest first, for the rolling sum.
    sent: VecDeque<(Instant, Duration)>,
    /// Sum of `sent`, kept so checks do not walk the window.
    spent: Duration,
    /// Last channel utilisation the radio reported, and when.
    utilization: Option<(f32, Instant)>,
    /// Airtime injected since the governor started, for metrics.
    total: Duration,
}

impl Governor {
    /// A governor with nothing spent.
    pub fn new(config: GovernorConfig) -> Governor {
        Governor {
            config,
            sent: VecDeque::new(),
            spent: Duration::ZERO,
            utilization: None,
            total: Duration::ZERO,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &GovernorConfig {
        &self.config
    }

    /// Changes the legal limit (the radio reported another region than the one expected),
    /// keeping what was already spent in the window.
    pub fn set_duty_cycle_percent(&mut self, percent: Option<f64>) {
        self.config.duty_cycle_percent = percent;
    }

    /// The airtime the window allows, if there is a legal limit.
    pub fn budget(&self) -> Option<Duration> {
        self.config
            .duty_cycle_percent
            .map(|p| self.config.window.mul_f64((p / 100.0).clamp(0.0, 1.0)))
    }

    /// Airtime injected within the window ending at `now`.
    pub fn spent(&mut self, now: Instant) -> Duration {
        self.expire(now);
        self.spent
    }

    /// Airtime injected since start.
    pub fn total(&self) -> Duration {
        self.total
    }

    /// The radio measured `percent` channel utilisation at `now`.
    pub fn observe_utilization(&mut self, percent: f32, now: Instant) {
        if percent.is_finite() {
            self.utilization = Some((percent.clamp(0.0, 100.0), now));
        }
    }

    /// The last utilisation report that still counts.
    pub fn utilization(&self, now: Instant) -> Option<f32> {
        self.utilization
            .filter(|(_, at)| now.saturating_duration_since(*at) <= self.config.utilization_max_age)
            .map(|(p, _)| p)
    }

    /// May a packet of `class` costing `airtime` go at `now`? If not, when to ask again, and
    /// why it waits.
    pub fn check(
        &mut self,
        class: Class,
        airtime: Duration,
        now: Instant,
    ) -> (Verdict, Option<Hold>) {
        self.expire(now);
        if let Some(util) = self.utilization(now) {
            let limit = if class.is_low() {
                self.config.defer_low_above
            } else {
                self.config.defer_all_above
            };
            if util > limit {
                return (
                    Verdict::WaitUntil(now + self.config.busy_recheck),
                    Some(Hold::BusyChannel),
                );
            }
        }
        let Some(budget) = self.budget() else {
            return (Verdict::Go, None);
        };
        if self.spent + airtime <= budget {
            return (Verdict::Go, None);
        }
        // Wait until enough old transmissions leave the window.
        let mut freed = self.spent;
        for (at, cost) in &self.sent {
            freed -= *cost;
            if freed + airtime <= budget {
                return (
                    Verdict::WaitUntil(*at + self.config.window),
                    Some(Hold::DutyCycle),
                );
            }
        }
        // A single packet longer than the whole budget: it may go once the window is empty.
        let until = self
            .sent
            .back()
            .map_or(now + self.config.window, |(at, _)| *at + self.config.window);
        (Verdict::WaitUntil(until), Some(Hold::DutyCycle))
    }

    /// A packet costing `airtime` was injected at `now`.
    pub fn record(&mut self, airtime: Duration, now: Instant) {
        self.expire(now);
        self.sent.push_back((now, airtime));
        self.spent += airtime;
        self.total += airtime;
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, cost)) = self.sent.front() {
            if now.saturating_duration_since(at) < self.config.window {
                break;
            }
            self.sent.pop_front();
            self.spent -= cost;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn eu(window_secs: u64) -> Governor {
        Governor::new(GovernorConfig {
            duty_cycle_percent: Some(10.0),
            window: Duration::from_secs(window_secs),
            ..Default::default()
        })
    }

    #[test]
    fn without_a_duty_cycle_everything_goes() {
        let mut g = Governor::new(GovernorConfig::default());
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(g.check(Class::Telemetry, ms(700), t0).0, Verdict::Go);
            g.record(ms(700), t0);
        }
    }

    #[test]
    fn the_duty_cycle_budget_is_never_exceeded_over_the_window() {
        // 10 % of 100 s = 10 s of airtime.
        let mut g = eu(100);
        let t0 = Instant::now();
        let mut now = t0;
        let mut sent: Vec<(Instant, Duration)> = Vec::new();
        for _ in 0..1000 {
            match g.check(Class::Channel, ms(682), now) {
                (Verdict::Go, _) => {
                    g.record(ms(682), now);
                    sent.push((now, ms(682)));
                    now += ms(100);
                }
                (Verdict::WaitUntil(t), hold) => {
                    assert_eq!(hold, Some(Hold::DutyCycle));
                    assert!(t > now);
                    now = t;
                }
            }
        }
        // Check every window that ends at a send time.
        for &(end, _) in &sent {
            let in_window: Duration = sent
                .iter()
                .filter(|(at, _)| *at <= end && end.duration_since(*at) < Duration::from_secs(100))
                .map(|(_, c)| *c)
                .sum();
            assert!(in_window <= Duration::from_secs(10), "{in_window:?}");
        }
        assert!(
            sent.len() > 14 * 5,
            "the budget is used, not just respected: {}",
            sent.len()
        );
    }

    #[test]
    fn a_busy_channel_defers_low_classes_first() {
        let mut g = Governor::new(GovernorConfig::default());
        let t0 = Instant::now();
        g.observe_utilization(30.0, t0);
        assert!(matches!(
            g.check(Class::Telemetry, ms(100), t0),
            (Verdict::WaitUntil(_), Some(Hold::BusyChannel))
        ));
        assert_eq!(g.check(Class::Direct, ms(100), t0).0, Verdict::Go);
        g.observe_utilization(45.0, t0);
        assert!(matches!(
            g.check(Class::Direct, ms(100), t0).0,
            Verdict::WaitUntil(_)
        ));
    }

    #[test]
    fn a_stale_utilization_report_is_ignored() {
        let mut g = Governor::new(GovernorConfig::default());
        let t0 = Instant::now();
        g.observe_utilization(90.0, t0);
        assert_eq!(
            g.check(Class::Telemetry, ms(100), t0 + Duration::from_secs(301))
                .0,
            Verdict::Go
        );
    }

    #[test]
    fn spent_airtime_leaves_the_window() {
        let mut g = eu(100);
        let t0 = Instant::now();
        g.record(Duration::from_secs(10), t0);
        assert!(
            matches!(g.check(Class::Direct, ms(1), t0).0, Verdict::WaitUntil(t) if t == t0 + Duration::from_secs(100))
        );
        assert_eq!(g.spent(t0 + Duration::from_secs(100)), Duration::ZERO);
        assert_eq!(g.total(), Duration::from_secs(10));
    }
}
