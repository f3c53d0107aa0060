//! Counters for the terminal summary and the metrics. Atomics only on the hot path; the
//! per-endpoint map is filled at start and never grows, so every label set is bounded.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mesh_core::{Class, NodeId};

/// Counters of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Deliveries the far side confirmed.
    pub relayed: AtomicU64,
    /// Attempts that found it unreachable.
    pub unreachable: AtomicU64,
    /// Attempts it failed (counted toward the attempt limit).
    pub failed: AtomicU64,
    /// Airtime injected, in microseconds (radios).
    pub airtime_us: AtomicU64,
    /// Packets accepted from it.
    pub heard: AtomicU64,
    /// The same by class ([`Class::rank`] order), for the metrics.
    pub heard_by_class: [AtomicU64; Class::ALL.len()],
    /// What its ingress dropped (abuse, spoofs, loops).
    pub dropped: AtomicU64,
    /// Deliveries waiting for their node to be heard again, now (a gauge).
    pub parked: AtomicU64,
    /// The nodes those wait for, with how many each; a lock, but only when parking changes.
    waiting_for: Mutex<Vec<(NodeId, u64)>>,
    /// Radios: what the governor sees, published by the radio's drain worker at each send.
    pub governor: GovernorGauges,
}

/// A radio governor's state as gauges: the drain worker owns the governor (no lock on the
/// send path), and copies these out for the page and the metrics.
#[derive(Debug)]
pub struct GovernorGauges {
    /// Airtime spent in the current duty-cycle window, in microseconds.
    pub window_us: AtomicU64,
    /// What the window allows, in microseconds; [`GovernorGauges::NONE`] without a limit.
    pub budget_us: AtomicU64,
    /// The channel utilisation the radio last reported, in tenths of a percent;
    /// [`GovernorGauges::NONE`] before any report.
    pub utilization_permille: AtomicU64,
    /// Times the governor held the queue back (budget or a busy channel).
    pub holds: AtomicU64,
}

impl Default for GovernorGauges {
    fn default() -> Self {
        GovernorGauges {
            window_us: AtomicU64::new(0),
            budget_us: AtomicU64::new(Self::NONE),
            utilization_permille: AtomicU64::new(Self::NONE),
            holds: AtomicU64::new(0),
        }
    }
}

impl GovernorGauges {
    /// "Not known" or "no limit".
    pub const NONE: u64 = u64::MAX;

    /// Copies out a governor's state at `now`.
    pub fn publish(&self, governor: &mut mesh_core::Governor, now: std::time::Instant) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX - 1);
        self.window_us
            .store(us(governor.spent(now)), Ordering::Relaxed);
        self.budget_us
            .store(governor.budget().map_or(Self::NONE, us), Ordering::Relaxed);
        self.utilization_permille.store(
            governor.utilization(now).map_or(Self::NONE, |p| {
                (f64::from(p) * 10.0).round().clamp(0.0, 1000.0) as u64
            }),
            Ordering::Relaxed,
        );
    }

    /// Airtime spent in the window.
    pub fn window(&self) -> Duration {
        Duration::from_micros(Stats::get(&self.window_us))
    }

    /// The window's budget, if there is a limit.
    pub fn budget(&self) -> Option<Duration> {
        let b = Stats::get(&self.budget_us);
        (b != Self::NONE).then(|| Duration::from_micros(b))
    }

    /// The channel utilisation last reported, in percent.
    pub fn utilization(&self) -> Option<f64> {
        let u = Stats::get(&self.utilization_permille);
        (u != Self::NONE).then(|| u as f64 / 10.0)
    }
}

impl EndpointStats {
    /// The deliveries waiting for their node are now these, by node.
    pub fn set_parked(&self, by_node: Vec<(NodeId, u64)>) {
        self.parked
            .store(by_node.iter().map(|(_, n)| n).sum(), Ordering::Relaxed);
        *self.waiting_for.lock().unwrap_or_else(|p| p.into_inner()) = by_node;
    }

    /// The nodes deliveries wait for, with how many each (the directory words them:
    /// [`NodeDirectory::waiting_line`](crate::nodes::NodeDirectory::waiting_line)).
    pub fn waiting_for(&self) -> Vec<(NodeId, u64)> {
        self.waiting_for
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A latency histogram on atomics: four buckets per doubling from 64 µs up (each bound 19 %
/// above the one before), enough to tell 1.0 ms from 1.2 ms without a lock on the hot path.
#[derive(Debug)]
pub struct Latency {
    /// Bucket `i` counts samples below [`Latency::bound`]`(i)`; the last one everything above.
    buckets: [AtomicU64; LATENCY_BUCKETS],
    /// Every sample added up, in microseconds: a Prometheus histogram's `_sum`.
    sum_us: AtomicU64,
}

/// Buckets of a [`Latency`]: 22 doublings above 64 µs, past four minutes.
const LATENCY_BUCKETS: usize = 4 * 22;

impl Default for Latency {
    fn default() -> Self {
        Latency {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Latency {
    /// The upper bound of bucket `i`.
    pub fn bound(i: usize) -> Duration {
        Duration::from_secs_f64(64e-6 * 2f64.powf(i as f64 / 4.0))
    }

    /// Counts one sample.
    pub fn record(&self, d: Duration) {
        let ratio = d.as_secs_f64() / 64e-6;
        let i = if ratio < 1.0 {
            0
        } else {
            // The first bucket whose bound is above the sample.
            ((ratio.log2() * 4.0).floor() as usize + 1).min(LATENCY_BUCKETS - 1)
        };
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Every sample added up.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(Stats::get(&self.sum_us))
    }

    /// Cumulative counts at every `step`-th bucket bound (a coarser histogram for the
    /// metrics): (upper bound, samples below it), increasing; the last bucket (everything
    /// above) is left to the caller's `+Inf`.
    pub fn cumulative(&self, step: usize) -> Vec<(Duration, u64)> {
        let step = step.max(1);
        let mut out = Vec::new();
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate().take(LATENCY_BUCKETS - 1) {
            seen += Stats::get(b);
            if (i + 1) % step == 0 {
                out.push((Latency::bound(i), seen));
            }
        }
        out
    }

    /// Samples so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(Stats::get).sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), or `None` with no sample.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += Stats::get(b);
            if seen >= rank {
                return Some(Latency::bound(i));
            }
        }
        None
    }
}

/// Gateway-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Packets confirmed by a destination.
    pub relayed: AtomicU64,
    /// Packets dropped as already seen.
    pub duplicates: AtomicU64,
    /// Packets accepted into the store.
    pub accepted: AtomicU64,
    /// Deliveries dropped by their time to live.
    pub expired: AtomicU64,
    /// Deliveries dropped or refused by a full queue.
    pub overflowed: AtomicU64,
    /// Deliveries set aside as undeliverable.
    pub undeliverable: AtomicU64,
    /// Packets an ingress dropped (abuse, spoofs, loops).
    pub dropped: AtomicU64,
    /// Our own MQTT publishes heard back from the broker (expected, ignored).
    pub echoes: AtomicU64,
    /// What ingress dropped, by reason (a bounded set of names); a lock only on the drop
    /// path, which is the rare one.
    drop_reasons: Mutex<BTreeMap<&'static str, u64>>,
    /// Received packets that could not be stored (and so were not relayed).
    pub store_errors: AtomicU64,
    /// From a packet's arrival at ingest to its commit on disk.
    pub commit_latency: Latency,
    /// Per endpoint, by name.
    endpoints: BTreeMap<String, EndpointStats>,
}

impl Stats {
    /// Counters for these endpoints.
    pub fn new<'a>(endpoints: impl IntoIterator<Item = &'a str>) -> Stats {
        Stats {
            endpoints: endpoints
                .into_iter()
                .map(|n| (n.to_owned(), EndpointStats::default()))
                .collect(),
            ..Stats::default()
        }
    }

    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// One endpoint's counters (`None` for a name that is not configured).
    pub fn endpoint(&self, name: &str) -> Option<&EndpointStats> {
        self.endpoints.get(name)
    }

    /// A delivery confirmed by `destination`, costing `airtime` on air.
    pub fn relayed(&self, destination: &str, airtime: Option<Duration>) {
        Self::add(&self.relayed, 1);
        if let Some(e) = self.endpoint(destination) {
            Self::add(&e.relayed, 1);
            if let Some(a) = airtime {
                Self::add(
                    &e.airtime_us,
                    u64::try_from(a.as_micros()).unwrap_or(u64::MAX),
                );
            }
        }
    }

    /// Something an ingress of `source` dropped, for `reason`.
    pub fn dropped(&self, source: &str, reason: &'static str) {
        Self::add(&self.dropped, 1);
        if let Some(e) = self.endpoint(source) {
            Self::add(&e.dropped, 1);
        }
        *self
            .drop_reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Drops so far, by reason.
    pub fn drop_reasons(&self) -> Vec<(&'static str, u64)> {
        let reasons = self.drop_reasons.lock().unwrap_or_else(|p| p.into_inner());
        reasons.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Airtime injected per radio that injected any, by name.
    pub fn airtime(&self) -> Vec<(String, Duration)> {
        self.endpoints
            .iter()
            .map(|(k, e)| (k.clone(), Duration::from_micros(Self::get(&e.airtime_us))))
            .filter(|(_, d)| !d.is_zero())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds_within_a_fifth_above_the_samples() {
        let l = Latency::default();
        assert_eq!(l.quantile(0.5), None);
        for _ in 0..98 {
            l.record(Duration::from_micros(300));
        }
        l.record(Duration::from_millis(3));
        l.record(Duration::from_secs(100));
        assert_eq!(l.count(), 100);
        let p50 = l.quantile(0.5).unwrap();
        assert!(
            p50 > Duration::from_micros(300) && p50 <= Duration::from_micros(360),
            "{p50:?}"
        );
        let p99 = l.quantile(0.99).unwrap();
        assert!(
            p99 > Duration::from_millis(3) && p99 <= Duration::from_micros(3600),
            "{p99:?}"
        );
        assert!(l.quantile(1.0).unwrap() >= Duration::from_secs(100));
        l.record(Duration::ZERO);
        assert_eq!(l.count(), 101);
    }

    #[test]
    fn parked_deliveries_are_a_gauge_by_node() {
        let s = Stats::new(["south"]);
        let e = s.endpoint("south").unwrap();
        let (a, b) = (NodeId::new(0xa), NodeId::new(0xb));
        e.set_parked(vec![(a, 2), (b, 1)]);
        assert_eq!(Stats::get(&e.parked), 3);
        assert_eq!(e.waiting_for(), [(a, 2), (b, 1)]);
        e.set_parked(vec![]);
        assert_eq!(Stats::get(&e.parked), 0);
    }
}
