//! The seen-set's two generations: an entry lives between one and two windows, both
//! generations are consulted, and a wall clock that steps either way neither forgets
//! everything nor keeps it for ever. Real SQLite files; nothing sleeps.

mod common;

use std::time::Duration;

use archipel_gateway::store::Accepted;
use common::*;
use mesh_core::{Class, NodeId, PacketId};

const WINDOW: Duration = Duration::from_secs(3600);

fn seen_only(id: u32) -> archipel_gateway::store::Inbound {
    msg(12, id, Class::Channel, vec![])
}

async fn is_seen(store: &archipel_gateway::store::Store, id: u32) -> bool {
    store
        .seen(NodeId::new(12), PacketId::new(id))
        .await
        .unwrap()
}

#[tokio::test]
async fn an_entry_is_seen_for_at_least_one_window_and_at_most_two() {
    let dir = TempDir::new("seen-rotate");
    let store = open(&dir, 100).await;
    // The first call anchors the generation.
    assert!(!store.rotate_seen(T0, WINDOW).await.unwrap());
    store.accept(&[seen_only(1)], T0).await.unwrap();
    store.accept(&[seen_only(2)], T0 + HOUR / 2).await.unwrap();

    assert!(!store.rotate_seen(T0 + HOUR - 1, WINDOW).await.unwrap());
    assert!(store.rotate_seen(T0 + HOUR, WINDOW).await.unwrap());
    // Both generations are consulted: entries of the previous one are still seen.
    assert!(is_seen(&store, 1).await && is_seen(&store, 2).await);
    assert_eq!(
        store
            .accept(&[seen_only(1), seen_only(3)], T0 + HOUR + 1)
            .await
            .unwrap(),
        vec![Accepted::Duplicate, new_clean()]
    );
    // Nothing rotates again within the window.
    assert!(!store.rotate_seen(T0 + 2 * HOUR - 1, WINDOW).await.unwrap());
    assert!(is_seen(&store, 1).await);

    // The second rotation drops the first generation (1 and 2), keeps the second (3).
    assert!(store.rotate_seen(T0 + 2 * HOUR, WINDOW).await.unwrap());
    assert!(!is_seen(&store, 1).await && !is_seen(&store, 2).await);
    assert!(is_seen(&store, 3).await);
    // Forgotten, so new again; 3 is still a duplicate.
    assert_eq!(
        store
            .accept(&[seen_only(1), seen_only(3)], T0 + 2 * HOUR)
            .await
            .unwrap(),
        vec![new_clean(), Accepted::Duplicate]
    );
    assert!(store.rotate_seen(T0 + 3 * HOUR, WINDOW).await.unwrap());
    assert!(!is_seen(&store, 3).await, "at most two windows");
    assert!(is_seen(&store, 1).await);
    store.close().await;
}

#[tokio::test]
async fn generations_survive_a_restart() {
    let dir = TempDir::new("seen-restart");
    let store = open(&dir, 100).await;
    store.rotate_seen(T0, WINDOW).await.unwrap();
    store.accept(&[seen_only(1)], T0).await.unwrap();
    assert!(store.rotate_seen(T0 + HOUR, WINDOW).await.unwrap());
    store.accept(&[seen_only(2)], T0 + HOUR).await.unwrap();
    store.close().await;

    let store = open(&dir, 100).await;
    assert!(is_seen(&store, 1).await && is_seen(&store, 2).await);
    // The generation started at T0 + HOUR is still current after the restart.
    assert!(!store.rotate_seen(T0 + 2 * HOUR - 1, WINDOW).await.unwrap());
    assert!(store.rotate_seen(T0 + 2 * HOUR, WINDOW).await.unwrap());
    assert!(!is_seen(&store, 1).await && is_seen(&store, 2).await);
    store.close().await;
}

#[tokio::test]
async fn a_clock_that_went_back_re_anchors_instead_of_waiting() {
    let dir = TempDir::new("seen-back");
    let store = open(&dir, 100).await;
    store.rotate_seen(T0, WINDOW).await.unwrap();
    store.accept(&[seen_only(1)], T0).await.unwrap();

    // A Pi without a clock booted in 1970: the generation's start is in its future.
    let back = 86_400_000;
    assert!(!store.rotate_seen(back, WINDOW).await.unwrap());
    assert!(is_seen(&store, 1).await, "nothing forgotten");
    // A window later by the new clock it rotates, rather than in 53 years.
    assert!(!store.rotate_seen(back + HOUR - 1, WINDOW).await.unwrap());
    assert!(store.rotate_seen(back + HOUR, WINDOW).await.unwrap());
    assert!(is_seen(&store, 1).await, "still in the previous generation");
    assert!(store.rotate_seen(back + 2 * HOUR, WINDOW).await.unwrap());
    assert!(!is_seen(&store, 1).await);
    store.close().await;
}

#[tokio::test]
async fn a_forward_jump_rotates_once_and_keeps_the_current_generation() {
    let dir = TempDir::new("seen-forward");
    let store = open(&dir, 100).await;
    store.rotate_seen(T0, WINDOW).await.unwrap();
    store.accept(&[seen_only(1)], T0).await.unwrap();
    assert!(store.rotate_seen(T0 + HOUR, WINDOW).await.unwrap());
    store.accept(&[seen_only(2)], T0 + HOUR).await.unwrap();

    // The clock jumps ten days ahead (an NTP server appeared).
    let later = T0 + 240 * HOUR;
    assert!(store.rotate_seen(later, WINDOW).await.unwrap());
    assert!(!is_seen(&store, 1).await);
    assert!(
        is_seen(&store, 2).await,
        "the then-current generation lives one more window"
    );
    assert!(!store.rotate_seen(later + 1, WINDOW).await.unwrap(), "once");
    assert!(is_seen(&store, 2).await);
    assert!(store.rotate_seen(later + HOUR, WINDOW).await.unwrap());
    assert!(!is_seen(&store, 2).await);
    store.close().await;
}
