//! Deterministic crash points, so the crash-recovery tests can kill the gateway at exactly
//! the moment they mean to: with `ARCHIPEL_CRASH_AT=<point>:<n>` in its environment, the
//! process sends itself SIGKILL (what `kill -9` does: no destructor, no flush) the n-th time
//! it passes `<point>`. Without the variable, [`hit`] is one relaxed atomic load.
//!
//! Points: `accept.before-commit` (a packet received, not yet in the store),
//! `drain.before-relay` (a delivery read from the store, not yet handed to the radio),
//! `drain.before-confirm` (the radio confirmed a delivery, its row not yet deleted).

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

/// Passes `point`; dies here if this is the armed point's n-th pass.
pub fn hit(point: &str) {
    if let Some((armed, left)) = armed()
        && armed == point
        && left.fetch_sub(1, Ordering::SeqCst) == 1
    {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
