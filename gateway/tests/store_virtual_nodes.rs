//! Virtual nodes in the store: made once per owner and the same after reopening the file, a
//! node number derived from the owner that skips numbers a radio knows and other owners', a
//! key that never shows in `Debug`, and damaged rows reported, not trusted. Real SQLite files.

mod common;

use std::collections::HashSet;

use archipel_gateway::store::StoreError;
use archipel_gateway::store::virtual_nodes::{candidate, is_reserved};
use common::*;

const AMIRA: &str = "amira@hub.lan";

/// The first usable candidate of `owner` at or after `attempt`, as the store picks them
/// when nothing is taken.
fn usable_from(owner: &str, attempt: u32) -> (u32, u32) {
    (attempt..)
        .map(|a| (a, candidate(owner, a)))
        .find(|(_, n)| !is_reserved(*n))
        .unwrap()
}

#[tokio::test]
async fn a_virtual_node_is_made_once_and_is_the_same_after_reopening_the_file() {
    let dir = TempDir::new("vnode-stable");
    let store = open(&dir, 100).await;
    let made = store.virtual_node(AMIRA, T0, |_| false).await.unwrap();
    assert_eq!(made.owner, AMIRA);
    assert_eq!(made.node.get(), usable_from(AMIRA, 0).1);
    assert_eq!(made.created_at, T0);
    assert_ne!(made.secret, [0; 32], "a key from the OS generator");
    let again = store
        .virtual_node(AMIRA, T0 + HOUR, |_| true)
        .await
        .unwrap();
    assert_eq!(
        again, made,
        "the same node, key and time: `taken` only counts for new ones"
    );
    let ben = store
        .virtual_node("ben@hub.lan", T0 + 1, |_| false)
        .await
        .unwrap();
    assert_ne!(ben.node, made.node);
    assert_ne!(ben.secret, made.secret);
    store.close().await;

    let store = open(&dir, 100).await;
    assert_eq!(
        store
            .virtual_node(AMIRA, T0 + 2 * HOUR, |_| false)
            .await
            .unwrap(),
        made
    );
    assert_eq!(store.virtual_nodes().await.unwrap(), vec![made, ben]);
    store.close().await;
}

#[tokio::test]
async fn a_number_a_radio_knows_or_another_owner_holds_is_skipped_by_hashing_again() {
    let dir = TempDir::new("vnode-collide");
    let store = open(&dir, 100).await;
    let (first, n0) = usable_from(AMIRA, 0);
    let (second, n1) = usable_from(AMIRA, first + 1);
    let (_, n2) = usable_from(AMIRA, second + 1);

    // Radios know the first two candidates.
    let known: HashSet<u32> = [n0, n1].into();
    let made = store
        .virtual_node(AMIRA, T0, |n| known.contains(&n.get()))
        .await
        .unwrap();
    assert_eq!(made.node.get(), n2);

    // Another owner already holds an owner's first candidate (written behind the store's
    // back, as if that owner's own hashing had landed there).
    let mut conn = raw_connection(&dir).await;
    let (_, ben0) = usable_from("ben@hub.lan", 0);
    sqlx::query(
        "INSERT INTO virtual_node (owner, node, secret, created_at) VALUES ('someone', ?1, ?2, 0)",
    )
    .bind(i64::from(ben0))
    .bind(vec![7u8; 32])
    .execute(&mut conn)
    .await
    .unwrap();
    let ben = store
        .virtual_node("ben@hub.lan", T0, |_| false)
        .await
        .unwrap();
    assert_ne!(ben.node.get(), ben0);
    let (_, ben1) = usable_from("ben@hub.lan", usable_from("ben@hub.lan", 0).0 + 1);
    assert_eq!(ben.node.get(), ben1);
    store.close().await;
}

#[tokio::test]
async fn when_every_candidate_is_taken_the_error_names_the_owner_and_nothing_is_stored() {
    let dir = TempDir::new("vnode-full");
    let store = open(&dir, 100).await;
    let e = store.virtual_node(AMIRA, T0, |_| true).await.unwrap_err();
    assert!(matches!(e, StoreError::NoNodeId { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("amira@hub.lan") && text.contains("1000 candidates"),
        "{text}"
    );
    assert!(store.virtual_nodes().await.unwrap().is_empty());
    // The store is still fine for the next one.
    store.virtual_node(AMIRA, T0, |_| false).await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn the_secret_never_shows_in_debug() {
    let dir = TempDir::new("vnode-debug");
    let store = open(&dir, 100).await;
    let made = store.virtual_node(AMIRA, T0, |_| false).await.unwrap();
    let text = format!("{made:?} {:?}", store.virtual_nodes().await.unwrap());
    assert!(text.contains(AMIRA) && text.contains(&made.node.to_string()));
    assert!(text.contains("not shown"), "{text}");
    let bytes: Vec<String> = made.secret.iter().map(|b| b.to_string()).collect();
    assert!(!text.contains(&bytes.join(", ")), "{text}");
    let hex: String = made.secret.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!text.contains(&hex[..16]), "{text}");
    store.close().await;
}

#[tokio::test]
async fn a_damaged_row_is_reported_by_owner_and_column() {
    let dir = TempDir::new("vnode-damaged");
    let store = open(&dir, 100).await;
    store.virtual_node(AMIRA, T0, |_| false).await.unwrap();
    let mut conn = raw_connection(&dir).await;
    // The schema refuses what the store never writes...
    let refused = sqlx::query(
        "INSERT INTO virtual_node (owner, node, secret, created_at) VALUES ('x', 5, x'00', 0)",
    )
    .execute(&mut conn)
    .await;
    assert!(refused.is_err(), "a 1-byte secret is refused by the table");
    let refused = sqlx::query(
        "INSERT INTO virtual_node (owner, node, secret, created_at) VALUES ('x', 3, ?1, 0)",
    )
    .bind(vec![1u8; 32])
    .execute(&mut conn)
    .await;
    assert!(
        refused.is_err(),
        "a reserved number is refused by the table"
    );
    // ...and a value of the wrong type that slipped in is named, not trusted.
    sqlx::query("UPDATE virtual_node SET created_at = 'yesterday' WHERE owner = ?1")
        .bind(AMIRA)
        .execute(&mut conn)
        .await
        .unwrap();
    let e = store.virtual_nodes().await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("virtual_node of `amira@hub.lan`: created_at"),
        "{e}"
    );
    store.close().await;
}
