//! The store's upkeep while the gateway runs: expired messages swept, the seen-set rotated,
//! and stored times moved with a wall-clock step (see [`crate::clock`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::warn;

use crate::activity::Activity;
use crate::app::now_ms;
use crate::clock::{Step, StepWatch};
use crate::stats::Stats;
use crate::store::{Millis, Store};

/// How often expired messages are swept.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);
/// How often the seen-set is asked whether its generation is due to rotate.
const ROTATE_EVERY: Duration = Duration::from_secs(600);

/// Sweeps expired messages and rotates the seen-set, until stopped.
pub(crate) async fn maintain(
    store: Store,
    seen_window: Duration,
    activity: broadcast::Sender<Activity>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    let mut rotate = tokio::time::interval(ROTATE_EVERY);
    // Wall-clock steps, seen before each sweep so none expires a backlog at once (see `clock`).
    let origin = std::time::Instant::now();
    let mut steps = StepWatch::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = expire.tick() => {
                let now = now_ms();
                if let Some(step) = steps.observe(origin.elapsed(), now) {
                    rebase(&store, step).await;
                }
                sweep(&store, now, &activity, &stats).await;
            }
            _ = rotate.tick() => {
                if let Err(e) = store.rotate_seen(now_ms(), seen_window).await {
                    warn!(error = %e, "cannot rotate the seen-set");
                }
            }
        }
    }
}

/// Moves the stored times with a wall-clock step, saying so.
async fn rebase(store: &Store, step: Step) {
    match store.rebase(step).await {
        Ok(moved) => warn!(
            step_s = step.delta / 1000,
            messages = moved,
            "the wall clock stepped: stored times moved with it, so each message keeps the time it had left"
        ),
        Err(e) => warn!(error = %e, "the wall clock stepped; cannot move the stored times"),
    }
}

/// Drops what waited too long at `now`, counting and telling it.
async fn sweep(store: &Store, now: Millis, activity: &broadcast::Sender<Activity>, stats: &Stats) {
    match store.expire(now).await {
        Ok(expired) => {
            for e in expired {
                Stats::add(&stats.expired, e.count);
                warn!(destination = %e.destination, class = %e.class, count = e.count,
                      "messages expired before delivery");
                let _ = activity.send(Activity::Expired {
                    destination: e.destination,
                    class: e.class,
                    count: e.count,
                });
            }
        }
        Err(e) => warn!(error = %e, "cannot sweep expired messages"),
    }
}
