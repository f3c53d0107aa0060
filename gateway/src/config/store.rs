//! `[store]`, `[store.ttl]` and `[airtime]`: how long messages wait, and how politely the
//! gateway uses the meshes it injects into.
//!
//! Every duration and count has an upper bound, chosen so that it stays far from overflow
//! when turned into milliseconds (`i64`) and far beyond what a hub could mean: a value past
//! it is a typo, and accepting it would make the store prune everything, or nothing.

use std::path::PathBuf;
use std::time::Duration;

use mesh_core::Class;
use serde::Deserialize;

use super::error::Problem;

/// The longest seen-set window: a year.
const MAX_SEEN_HOURS: u64 = 24 * 365;
/// The most messages one destination may hold.
const MAX_QUEUE: u64 = 10_000_000;
/// The most attempts at one delivery.
const MAX_ATTEMPTS: u32 = 1_000;
/// The longest airtime window: a day (duty-cycle rules speak of an hour).
const MAX_WINDOW_SECS: u64 = 24 * 3600;

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// The SQLite file.
    pub path: PathBuf,
    /// How long a (from, id) stays in the seen-set, in hours.
    pub seen_window_hours: u64,
    /// Most messages queued for one destination; beyond it the least urgent go first.
    pub max_queue_per_destination: u64,
    /// How long each class of message may wait before it is dropped (and counted).
    pub ttl: TtlSection,
    /// Attempts before a delivery the destination keeps refusing is set aside.
    pub max_attempts: u32,
    /// A direct message for a radio's node not heard for this long (minutes, fractions
    /// allowed) waits in the outbox until the node is heard again, within its TTL.
    pub absent_after_minutes: f64,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            path: PathBuf::from("archipel.sqlite"),
            seen_window_hours: 96,
            max_queue_per_destination: 10_000,
            ttl: TtlSection::default(),
            max_attempts: 10,
            absent_after_minutes: 120.0,
        }
    }
}

impl StoreSection {
    /// How long a node may go unheard before direct messages for it wait
    /// (`absent_after_minutes`, bounded as validation does).
    pub fn absent_after(&self) -> Duration {
        let minutes = if self.absent_after_minutes.is_nan() {
            0.0
        } else {
            self.absent_after_minutes
                .clamp(0.0, (MAX_SEEN_HOURS * 60) as f64)
        };
        Duration::from_secs_f64(minutes * 60.0)
    }
}

/// `[store.ttl]`, in minutes per class (fractions allowed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtlSection {
    /// Direct texts.
    pub direct_minutes: f64,
    /// Channel texts.
    pub channel_minutes: f64,
    /// Positions and node info.
    pub position_minutes: f64,
    /// Telemetry and the rest.
    pub telemetry_minutes: f64,
}

impl Default for TtlSection {
    fn default() -> Self {
        TtlSection {
            direct_minutes: 72.0 * 60.0,
            channel_minutes: 24.0 * 60.0,
            position_minutes: 60.0,
            telemetry_minutes: 30.0,
        }
    }
}

impl TtlSection {
    /// The time to live of a class.
    pub fn of(&self, class: Class) -> Duration {
        let minutes = match class {
            Class::Direct => self.direct_minutes,
            Class::Channel => self.channel_minutes,
            Class::Position => self.position_minutes,
            Class::Telemetry => self.telemetry_minutes,
        };
        // Validation bounds it; this keeps a config built in code from panicking here.
        let minutes = if minutes.is_nan() {
            0.0
        } else {
            minutes.clamp(0.0, (MAX_SEEN_HOURS * 60) as f64)
        };
        Duration::from_secs_f64(minutes * 60.0)
    }

    fn each(&self) -> [(&'static str, f64); 4] {
        [
            ("direct_minutes", self.direct_minutes),
            ("channel_minutes", self.channel_minutes),
            ("position_minutes", self.position_minutes),
            ("telemetry_minutes", self.telemetry_minutes),
        ]
    }
}

/// `[airtime]`: how politely the gateway uses the meshes it injects into.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AirtimeSection {
    /// The rolling window duty cycles are measured over, in seconds.
    pub window_secs: u64,
    /// Channel utilisation (percent) above which positions and telemetry wait.
    pub defer_low_above: f32,
    /// Channel utilisation (percent) above which everything waits.
    pub defer_all_above: f32,
}

impl Default for AirtimeSection {
    fn default() -> Self {
        AirtimeSection {
            window_secs: 3600,
            defer_low_above: 25.0,
            defer_all_above: 40.0,
        }
    }
}

/// Checks `[store]` and `[store.ttl]`.
pub fn check_store(s: &StoreSection, p: &mut Vec<Problem>) {
    let path = s.path.to_string_lossy();
    if path.trim().is_empty() {
        p.push(Problem::new(
            "store.path",
            "is empty: give the file the queue lives in, such as /var/lib/archipel/archipel.sqlite (SQLite would make an empty path a throw-away temporary database)",
        ));
    } else if path == ":memory:"
        || path.starts_with("file::memory:")
        || path.contains("mode=memory")
    {
        p.push(Problem::new(
            "store.path",
            format!("`{path}` is an in-memory database: the queue and the seen-set would be lost at every restart; give a file"),
        ));
    }
    if s.seen_window_hours == 0 || s.seen_window_hours > MAX_SEEN_HOURS {
        p.push(Problem::new(
            "store.seen_window_hours",
            format!(
                "{} hours: give 1 to {MAX_SEEN_HOURS} (a year); 96 keeps duplicates out across a four-day partition",
                s.seen_window_hours
            ),
        ));
    }
    if s.max_queue_per_destination == 0 || s.max_queue_per_destination > MAX_QUEUE {
        p.push(Problem::new(
            "store.max_queue_per_destination",
            format!(
                "{}: give 1 to {MAX_QUEUE}; 10000 is plenty for a mesh",
                s.max_queue_per_destination
            ),
        ));
    }
    if s.max_attempts == 0 || s.max_attempts > MAX_ATTEMPTS {
        p.push(Problem::new(
            "store.max_attempts",
            format!("{}: give 1 to {MAX_ATTEMPTS}; 10 or so", s.max_attempts),
        ));
    }
    let absent = s.absent_after_minutes;
    if !(absent > 0.0 && absent <= (MAX_SEEN_HOURS * 60) as f64) {
        p.push(Problem::new(
            "store.absent_after_minutes",
            format!(
                "{absent}: give how many minutes a node may go unheard before direct messages for it wait until it is heard again, above 0 and at most {} (a year); 120 is two hours",
                MAX_SEEN_HOURS * 60
            ),
        ));
    }
    let window_minutes = s.seen_window_hours.min(MAX_SEEN_HOURS) as f64 * 60.0;
    for (key, v) in s.ttl.each() {
        if !(v > 0.0 && v <= (MAX_SEEN_HOURS * 60) as f64) {
            p.push(Problem::new(
                format!("store.ttl.{key}"),
                format!(
                    "{v}: give how many minutes such a message may wait, above 0 and at most {} (a year)",
                    MAX_SEEN_HOURS * 60
                ),
            ));
        } else if s.seen_window_hours > 0 && v > window_minutes {
            p.push(Problem::new(
                format!("store.ttl.{key}"),
                format!(
                    "{v} minutes is longer than the seen-set remembers a packet (store.seen_window_hours = {}): a copy heard again after it is forgotten, while the first still waits, would be queued twice; raise seen_window_hours to at least {} or shorten the TTL",
                    s.seen_window_hours,
                    (v / 60.0).ceil()
                ),
            ));
        }
    }
}

/// Checks `[airtime]`.
pub fn check_airtime(a: &AirtimeSection, p: &mut Vec<Problem>) {
    if a.window_secs == 0 || a.window_secs > MAX_WINDOW_SECS {
        p.push(Problem::new(
            "airtime.window_secs",
            format!(
                "{}: give 1 to {MAX_WINDOW_SECS} seconds; 3600 (an hour, as duty-cycle rules do)",
                a.window_secs
            ),
        ));
    }
    let (low, all) = (a.defer_low_above, a.defer_all_above);
    if !(0.0..=100.0).contains(&low) || !(0.0..=100.0).contains(&all) || low > all {
        p.push(Problem::new(
            "airtime.defer_low_above",
            format!(
                "{low} with airtime.defer_all_above = {all}: give percentages from 0 to 100, the first not above the second (low-priority traffic is deferred first)"
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_problems(s: &StoreSection) -> String {
        let mut p = Vec::new();
        check_store(s, &mut p);
        p.iter().map(|p| p.to_string() + "\n").collect()
    }

    #[test]
    fn the_defaults_pass() {
        assert_eq!(store_problems(&StoreSection::default()), "");
        let mut p = Vec::new();
        check_airtime(&AirtimeSection::default(), &mut p);
        assert!(p.is_empty());
    }

    #[test]
    fn huge_durations_and_counts_are_refused_before_they_overflow() {
        let e = store_problems(&StoreSection {
            seen_window_hours: 10_000_000_000_000,
            max_queue_per_destination: u64::MAX,
            max_attempts: u32::MAX,
            ..StoreSection::default()
        });
        assert!(
            e.contains("store.seen_window_hours: 10000000000000 hours: give 1 to 8760"),
            "{e}"
        );
        assert!(
            e.contains("store.max_queue_per_destination: 18446744073709551615"),
            "{e}"
        );
        assert!(e.contains("store.max_attempts: 4294967295"), "{e}");
        let ttl = TtlSection {
            direct_minutes: f64::INFINITY,
            channel_minutes: f64::NAN,
            ..TtlSection::default()
        };
        let e = store_problems(&StoreSection {
            ttl,
            ..StoreSection::default()
        });
        assert!(
            e.contains("store.ttl.direct_minutes: inf")
                && e.contains("store.ttl.channel_minutes: NaN"),
            "{e}"
        );
        let mut p = Vec::new();
        check_airtime(
            &AirtimeSection {
                window_secs: u64::MAX,
                ..AirtimeSection::default()
            },
            &mut p,
        );
        assert!(
            p[0].to_string()
                .starts_with("airtime.window_secs: 18446744073709551615")
        );
    }

    #[test]
    fn an_unvalidated_ttl_never_panics() {
        let ttl = TtlSection {
            direct_minutes: f64::NAN,
            channel_minutes: f64::INFINITY,
            position_minutes: -1.0,
            telemetry_minutes: 1e300,
        };
        assert_eq!(ttl.of(Class::Direct), Duration::ZERO);
        assert_eq!(
            ttl.of(Class::Channel),
            Duration::from_secs(MAX_SEEN_HOURS * 3600)
        );
        assert_eq!(ttl.of(Class::Position), Duration::ZERO);
        assert_eq!(ttl.of(Class::Telemetry), ttl.of(Class::Channel));
    }

    #[test]
    fn absent_after_is_two_hours_unless_set_and_bounded() {
        assert_eq!(
            StoreSection::default().absent_after(),
            Duration::from_secs(7200)
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e12] {
            let s = StoreSection {
                absent_after_minutes: bad,
                ..StoreSection::default()
            };
            assert!(
                store_problems(&s).contains("store.absent_after_minutes"),
                "{bad}"
            );
            assert!(s.absent_after() <= Duration::from_secs(MAX_SEEN_HOURS * 3600));
        }
        let s = StoreSection {
            absent_after_minutes: 0.5,
            ..StoreSection::default()
        };
        assert_eq!(store_problems(&s), "");
        assert_eq!(s.absent_after(), Duration::from_secs(30));
    }

    #[test]
    fn an_empty_or_in_memory_store_is_refused() {
        for path in ["", " ", ":memory:", "file::memory:?cache=shared"] {
            let e = store_problems(&StoreSection {
                path: path.into(),
                ..StoreSection::default()
            });
            assert!(e.contains("store.path"), "{path}: {e}");
        }
    }

    #[test]
    fn a_ttl_longer_than_the_seen_window_is_refused() {
        let e = store_problems(&StoreSection {
            seen_window_hours: 24,
            ..StoreSection::default()
        });
        assert!(
            e.contains("store.ttl.direct_minutes: 4320 minutes is longer"),
            "{e}"
        );
        assert!(e.contains("at least 72"), "{e}");
        assert!(
            !e.contains("channel_minutes"),
            "24 h is exactly the channel TTL: {e}"
        );
    }
}
