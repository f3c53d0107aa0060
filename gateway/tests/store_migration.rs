//! A store written by a release with schema version 1 (one outbox row per destination, each
//! with its own packet) opens with the new store and keeps every queued row, every seen entry
//! and every dead letter. The old file is built the way that release built it: sqlx's
//! migrator applying the embedded 0001 text, then rows written with plain SQL.

mod common;

use std::borrow::Cow;

use archipel_gateway::store::{Accepted, Delivery, Sent};
use common::*;
use mesh_core::{Class, NodeId, PacketId};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

const SCHEMA_1: &str = include_str!("../migrations/0001_store.sql");

/// A schema-1 store at `dir.file()`, with rows.
async fn old_store(dir: &TempDir) {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.file())
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("store"),
        MigrationType::Simple,
        SCHEMA_1.into_sql_str(),
        false,
    )])
    .run(&mut conn)
    .await
    .unwrap();
    // Message 0x51 went to two radios (two rows, two copies); 0x52 is a direct message that
    // failed twice; 0x53 has been confirmed already (gone, but still seen).
    sqlx::raw_sql(
        "INSERT INTO outbox (seq, destination, priority, from_node, packet_id, channel, hop_limit, \
             packet, enqueued_at, expires_at, attempts, next_attempt_at, last_error) VALUES \
         (1, 'south', 1, 4660, 81, 'MediumFast', 3, x'0A0B', 1700000000000, 1700086400000, 0, \
             1700000000000, NULL), \
         (2, 'east', 1, 4660, 81, 'LongFast', 2, x'0C0D', 1700000000000, 1700086400000, 0, \
             1700000000000, NULL), \
         (3, 'south', 0, 4661, 82, 'MediumFast', 7, x'0E0F', 1700000000500, 1700259200500, 2, \
             1700000090000, 'no ack'); \
         INSERT INTO outbox (seq, destination, priority, from_node, packet_id, channel, hop_limit, \
             packet, enqueued_at, expires_at, next_attempt_at) VALUES \
         (4, 'south', 1, 4662, 83, 'MediumFast', 3, x'00', 1700000000600, 1700086400600, \
             1700000000600); \
         DELETE FROM outbox WHERE seq = 4; \
         INSERT INTO seen (from_node, packet_id, first_seen) VALUES \
         (4660, 81, 1700000000000), (4661, 82, 1700000000500), (4662, 83, 1700000000600); \
         INSERT INTO dead_letter (seq, destination, priority, from_node, packet_id, channel, \
             hop_limit, packet, enqueued_at, expires_at, attempts, last_error, rejected_at, \
             reason) VALUES \
         (0, 'south', 2, 4663, 84, 'MediumFast', 3, x'FF', 1699999990000, 1700003590000, 10, \
             'no ack', 1699999999000, '10 attempts failed');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_schema_1_store_is_converted_in_place_with_every_row_queued_as_it_was() {
    let dir = TempDir::new("migrate");
    old_store(&dir).await;
    let store = open(&dir, 100).await;

    let south = store.next("south", T0, 0, 10).await.unwrap();
    let key = |i: usize, rows: &[Delivery]| rows[i].key;
    assert_eq!(
        south,
        vec![
            Delivery {
                key: key(0, &south),
                destination: "south".to_owned(),
                from: NodeId::new(4661),
                id: PacketId::new(82),
                class: Class::Direct,
                source: None,
                origin: None,
                channel: "MediumFast".to_owned(),
                to_channel: "MediumFast".to_owned(),
                hops: 7,
                packet: vec![0x0E, 0x0F],
                attempts: 2,
                enqueued_at: 1_700_000_000_500,
                expires_at: 1_700_259_200_500,
            },
            Delivery {
                key: key(1, &south),
                destination: "south".to_owned(),
                from: NodeId::new(4660),
                id: PacketId::new(81),
                class: Class::Channel,
                source: None,
                origin: None,
                channel: "MediumFast".to_owned(),
                to_channel: "MediumFast".to_owned(),
                hops: 3,
                packet: vec![0x0A, 0x0B],
                attempts: 0,
                enqueued_at: T0,
                expires_at: 1_700_086_400_000,
            },
        ]
    );
    let east = store.next("east", T0, 0, 10).await.unwrap();
    assert_eq!(east.len(), 1);
    assert_eq!(
        (
            east[0].id.get(),
            east[0].channel.as_str(),
            east[0].to_channel.as_str(),
            east[0].hops,
            east[0].packet.as_slice()
        ),
        (81, "LongFast", "LongFast", 2, &[0x0C, 0x0D][..])
    );
    assert_eq!(
        store.depths().await.unwrap(),
        vec![
            depth("east", Class::Channel, 1),
            depth("south", Class::Direct, 1),
            depth("south", Class::Channel, 1),
        ]
    );
    let mut conn = raw_connection(&dir).await;
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM delivery WHERE message = 3")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(last_error.as_deref(), Some("no ack"));

    // The seen-set came along: all three are duplicates, the confirmed one too.
    for id in 81..=83 {
        let item = msg_to(4660 + id - 81, id, Class::Channel, &["south"]);
        assert_eq!(
            store.accept(&[item], T0).await.unwrap(),
            vec![Accepted::Duplicate],
            "packet {id}"
        );
    }
    assert_eq!(store.dead_letters().await.unwrap(), 1);
    let dead: (String, i64, String, String, i64, String) = sqlx::query_as(
        "SELECT destination, packet_id, channel, to_channel, hops, reason FROM dead_letter",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        dead,
        (
            "south".to_owned(),
            84,
            "MediumFast".to_owned(),
            "MediumFast".to_owned(),
            3,
            "10 attempts failed".to_owned()
        )
    );

    // The old tables are gone; the file keeps its page size (4096, sqlx's default then).
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name NOT LIKE '_sqlx%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "airtime",
            "dead_letter",
            "delivery",
            "endpoint",
            "message",
            "seen_a",
            "seen_b",
            "seen_generation",
            "virtual_node"
        ]
    );
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(page_size, 4096);
    drop(conn);

    // New messages come after the migrated ones.
    store
        .accept(&[msg_to(9, 9, Class::Direct, &["south"])], T0)
        .await
        .unwrap();
    assert_eq!(
        ids(&store.next("south", T0, 0, 10).await.unwrap()),
        vec![82, 9, 81],
        "after the older direct message"
    );

    // Migrated deliveries drain like any other.
    let all: Vec<Sent> = store
        .next("south", T0, 0, 10)
        .await
        .unwrap()
        .iter()
        .chain(east.iter())
        .map(|d| Sent {
            key: d.key,
            airtime: None,
        })
        .collect();
    store.confirm(&all, T0).await.unwrap();
    assert_eq!(store.depths().await.unwrap(), vec![]);
    assert_eq!(rows_in(&dir, "message").await, 0);
    store.close().await;
}

#[tokio::test]
async fn the_seen_set_of_schema_1_starts_its_generation_at_its_newest_entry() {
    let dir = TempDir::new("migrate-seen");
    old_store(&dir).await;
    let store = open(&dir, 100).await;
    let window = std::time::Duration::from_secs(3600);
    // Newest first_seen was 1_700_000_000_600: a window from there, nothing rotates.
    assert!(
        !store
            .rotate_seen(1_700_000_000_600 + HOUR - 1, window)
            .await
            .unwrap()
    );
    assert!(
        store
            .rotate_seen(1_700_000_000_600 + HOUR, window)
            .await
            .unwrap()
    );
    assert!(
        store
            .seen(NodeId::new(4660), PacketId::new(81))
            .await
            .unwrap()
    );
    assert!(
        store
            .rotate_seen(1_700_000_000_600 + 2 * HOUR, window)
            .await
            .unwrap()
    );
    assert!(
        !store
            .seen(NodeId::new(4660), PacketId::new(81))
            .await
            .unwrap()
    );
    store.close().await;
}
