//! A wall-clock step of three days, forward and back, with messages queued and the seen-set
//! filled: after [`Store::rebase`] every message keeps the life it had left (none expires at
//! once, none is kept three days too long), what the new clock stamped is left alone, and
//! the seen-set neither forgets nor holds its entries. Pure time: `now` is an argument.

mod common;

use std::time::Duration;

use archipel_gateway::clock::{Step, StepWatch};
use archipel_gateway::store::{Millis, Store};
use common::*;
use mesh_core::{Class, NodeId, PacketId};

const DAY: Millis = 24 * HOUR;
const SWEEP: Millis = 10_000;
const WINDOW: Duration = Duration::from_secs(3600);

/// Accepts `ids` from node 7 for `south` at `now`, living an hour.
async fn queue(store: &Store, ids: std::ops::Range<u32>, now: Millis) {
    let batch: Vec<_> = ids
        .map(|id| {
            let mut m = msg_to(7, id, Class::Channel, &["south"]);
            m.expires_at = now + HOUR;
            m
        })
        .collect();
    store.accept(&batch, now).await.unwrap();
}

async fn expired(store: &Store, now: Millis) -> u64 {
    store
        .expire(now)
        .await
        .unwrap()
        .iter()
        .map(|e| e.count)
        .sum()
}

async fn seen(store: &Store, id: u32) -> bool {
    store.seen(NodeId::new(7), PacketId::new(id)).await.unwrap()
}

/// The step the maintenance loop sees: a sweep `SWEEP` after one at `T0` finds the wall
/// clock `delta` away.
fn step(delta: Millis) -> Step {
    let mut watch = StepWatch::new();
    watch.observe(Duration::from_secs(100), T0);
    watch
        .observe(
            Duration::from_millis(100_000 + SWEEP as u64),
            T0 + SWEEP + delta,
        )
        .expect("a step of days is seen")
}

#[tokio::test]
async fn without_a_rebase_a_step_forward_expires_the_backlog_at_once() {
    // What the rebase is for: the store alone trusts the wall clock.
    let dir = TempDir::new("clock-naive");
    let store = open(&dir, 1000).await;
    queue(&store, 1..51, T0).await;
    assert_eq!(expired(&store, T0 + SWEEP + 3 * DAY).await, 50);
    store.close().await;
}

#[tokio::test]
async fn a_step_forward_by_days_keeps_every_queued_message_its_time_left() {
    let dir = TempDir::new("clock-forward");
    let store = open(&dir, 1000).await;
    store.rotate_seen(T0, WINDOW).await.unwrap();
    queue(&store, 1..51, T0).await;
    let step = step(3 * DAY);
    assert_eq!(step.delta, 3 * DAY);
    // Between the step and the sweep that sees it, the new clock stamped one more.
    queue(&store, 100..101, step.new_now - 1).await;

    assert_eq!(store.rebase(step).await.unwrap(), 50, "the old stamps only");
    let now = step.new_now;
    assert_eq!(expired(&store, now).await, 0, "nothing expires at the step");
    assert_eq!(store.next("south", now, 0, 100).await.unwrap().len(), 51);
    // They had an hour less the sweep left; not more.
    assert_eq!(expired(&store, now + HOUR - SWEEP - 1).await, 0);
    assert_eq!(expired(&store, now + HOUR - SWEEP).await, 50);
    assert_eq!(
        expired(&store, now + HOUR).await,
        1,
        "the new one, on its own clock"
    );

    // The seen-set did not rotate at the step: every entry is still seen, for its window.
    assert!(!store.rotate_seen(now, WINDOW).await.unwrap());
    assert!(seen(&store, 1).await && seen(&store, 100).await);
    assert!(store.rotate_seen(now + HOUR, WINDOW).await.unwrap());
    assert!(seen(&store, 1).await, "still seen for one more window");
    assert!(store.rotate_seen(now + 2 * HOUR, WINDOW).await.unwrap());
    assert!(
        !seen(&store, 1).await,
        "and then forgotten: not kept forever"
    );
    store.close().await;
}

#[tokio::test]
async fn a_step_back_by_days_keeps_no_message_longer_than_its_time_left() {
    let dir = TempDir::new("clock-back");
    let store = open(&dir, 1000).await;
    store.rotate_seen(T0, WINDOW).await.unwrap();
    queue(&store, 1..51, T0).await;
    let step = step(-3 * DAY);
    queue(&store, 100..101, step.new_now - 1).await;

    assert_eq!(store.rebase(step).await.unwrap(), 50);
    let now = step.new_now;
    assert_eq!(expired(&store, now).await, 0);
    assert_eq!(store.next("south", now, 0, 100).await.unwrap().len(), 51);
    // Without the rebase they would have waited until three days from now.
    assert_eq!(expired(&store, now + HOUR - SWEEP).await, 50);
    assert_eq!(expired(&store, now + HOUR).await, 1);

    // The generation started three days "ahead" was moved back with it: it rotates a window
    // after it really started, not three days later.
    assert!(
        !store
            .rotate_seen(now + HOUR - SWEEP - 1, WINDOW)
            .await
            .unwrap()
    );
    assert!(store.rotate_seen(now + HOUR - SWEEP, WINDOW).await.unwrap());
    assert!(seen(&store, 1).await);
    assert!(
        store
            .rotate_seen(now + 2 * HOUR - SWEEP, WINDOW)
            .await
            .unwrap()
    );
    assert!(!seen(&store, 1).await, "forgotten after two windows");
    store.close().await;
}

#[tokio::test]
async fn a_clock_that_went_back_while_stopped_counts_each_time_left_from_the_restart() {
    let dir = TempDir::new("clock-restart");
    let store = open(&dir, 1000).await;
    queue(&store, 1..11, T0).await;
    store.close().await;
    // Restarted with the clock three days back: stamped "in the future", they get their
    // time to live from now, not three days more.
    let store = open(&dir, 1000).await;
    let now = T0 - 3 * DAY;
    assert_eq!(store.clamp_future(now).await.unwrap(), 10);
    assert_eq!(store.clamp_future(now).await.unwrap(), 0, "once");
    assert_eq!(expired(&store, now + HOUR - 1).await, 0);
    assert_eq!(
        expired(&store, now + HOUR).await,
        10,
        "not three days later"
    );
    store.close().await;
}
