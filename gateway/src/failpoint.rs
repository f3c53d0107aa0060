//! Deterministic crash points, so the crash-recovery tests can kill the gateway at exactly
//! the moment they mean to: with `ARCHIPEL_CRASH_AT=<point>:<n>` in its environment, the
//! process sends itself SIGKILL (what `kill -9` does: no destructor, no flush) the n-th time
//! it passes `<point>`. Without the variable, [`hit`] is one relaxed atomic load.
//!
//! The points are the variants of [`CrashPoint`], so a misspelt point cannot compile.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The armed point and how many passes remain before it fires.
static ARMED: OnceLock<Option<(String, AtomicU64)>> = OnceLock::new();

fn armed() -> &'static Option<(String, AtomicU64)> {
    ARMED.get_or_init(|| {
        let spec = std::env::var("ARCHIPEL_CRASH_AT").ok()?;
        let (point, n) = spec.rsplit_once(':')?;
        let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
        tracing::warn!(%point, n, "crash point armed (ARCHIPEL_CRASH_AT): this process will kill itself");
        Some((point.to_owned(), AtomicU64::new(n)))
    })
}

/// A place where a test may have the process die.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// `accept.before-commit`: a packet received and routed, not yet in the store.
    AcceptBeforeCommit,
    /// `drain.before-send`: a delivery read from the store, not yet handed to its destination.
    DrainBeforeSend,
    /// `drain.before-confirm`: deliveries confirmed by the far side, their rows not yet deleted.
    DrainBeforeConfirm,
    /// `mqtt.before-ack`: an MQTT downlink message committed, its PUBACK not yet sent.
    MqttBeforeAck,
}

impl CrashPoint {
    /// The name `ARCHIPEL_CRASH_AT` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            CrashPoint::AcceptBeforeCommit => "accept.before-commit",
            CrashPoint::DrainBeforeSend => "drain.before-send",
            CrashPoint::DrainBeforeConfirm => "drain.before-confirm",
            CrashPoint::MqttBeforeAck => "mqtt.before-ack",
        }
    }
}

/// Passes `point`; dies here if this is the armed point's n-th pass.
pub fn hit(point: CrashPoint) {
    if let Some((armed, left)) = armed()
        && armed == point.as_str()
        && left.fetch_sub(1, Ordering::SeqCst) == 1
    {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
