//! Draining the store: drain order, confirms in one commit with their airtime, failures,
//! notes, rejects, expiry, and damaged rows set aside. Real SQLite files; time is whatever the
//! test says it is, and nothing sleeps.

mod common;

use std::time::Duration;

use archipel_gateway::store::{Expired, Millis, Sent, Store, StoreConfig, StoreError};
use common::*;
use mesh_core::{Class, PacketId};

fn sent(key: archipel_gateway::store::DeliveryKey) -> Sent {
    Sent { key, airtime: None }
}

#[tokio::test]
async fn next_except_reads_from_the_front_leaving_out_the_rows_named() {
    let dir = TempDir::new("except");
    let store = open(&dir, 100).await;
    for (id, class) in [(1, Class::Direct), (2, Class::Direct), (3, Class::Channel)] {
        store
            .accept(&[msg_to(9, id, class, &["radio"])], T0 + Millis::from(id))
            .await
            .unwrap();
    }
    let all = store.next("radio", T0 + 10, 0, 10).await.unwrap();
    let parked = [all[0].key, all[2].key];
    assert_eq!(
        ids(&store
            .next_except("radio", T0 + 10, &parked, 10)
            .await
            .unwrap()),
        vec![2]
    );
    assert_eq!(
        ids(&store
            .next_except("radio", T0 + 10, &[all[1].key], 1)
            .await
            .unwrap()),
        vec![1],
        "the limit counts rows returned, not rows left out"
    );
    assert_eq!(
        ids(&store.next_except("radio", T0 + 10, &[], 10).await.unwrap()),
        vec![1, 2, 3]
    );
    assert!(
        store
            .next_except("elsewhere", T0 + 10, &parked, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Expired rows are left out as by `next`.
    assert!(
        store
            .next_except("radio", T0 + HOUR, &[], 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}

#[tokio::test]
async fn next_gives_the_most_urgent_class_first_then_the_oldest() {
    let dir = TempDir::new("order");
    let store = open(&dir, 100).await;
    let classes = [
        (1, Class::Telemetry),
        (2, Class::Direct),
        (3, Class::Channel),
        (4, Class::Direct),
        (5, Class::Position),
        (6, Class::Channel),
    ];
    for (id, class) in classes {
        store
            .accept(&[msg_to(9, id, class, &["radio"])], T0 + Millis::from(id))
            .await
            .unwrap();
    }

    let rows = store.next("radio", T0 + 10, 0, 100).await.unwrap();
    assert_eq!(ids(&rows), vec![2, 4, 3, 6, 5, 1]);
    assert!(
        rows.windows(2).all(|w| w[0].key < w[1].key),
        "keys sort in drain order"
    );
    assert_eq!(
        ids(&store.next("radio", T0 + 10, 0, 3).await.unwrap()),
        vec![2, 4, 3]
    );
    // A worker with three in flight asks past them.
    assert_eq!(
        ids(&store.next("radio", T0 + 10, 3, 2).await.unwrap()),
        vec![6, 5]
    );
    assert!(
        store
            .next("radio", T0 + 10, 6, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}

#[tokio::test]
async fn next_after_resumes_in_drain_order_after_a_key() {
    let dir = TempDir::new("after");
    let store = open(&dir, 100).await;
    for (id, class) in [
        (1, Class::Telemetry),
        (2, Class::Direct),
        (3, Class::Channel),
        (4, Class::Direct),
    ] {
        store
            .accept(&[msg_to(9, id, class, &["radio"])], T0 + Millis::from(id))
            .await
            .unwrap();
    }
    let first = store.next("radio", T0 + 10, 0, 2).await.unwrap();
    assert_eq!(ids(&first), vec![2, 4]);
    let rest = store
        .next_after("radio", T0 + 10, first[1].key, 10)
        .await
        .unwrap();
    assert_eq!(ids(&rest), vec![3, 1], "the channel text, then telemetry");
    let none = store
        .next_after("radio", T0 + 10, rest[1].key, 10)
        .await
        .unwrap();
    assert!(none.is_empty());
    // A key of another destination reads from the front.
    store
        .accept(&[msg_to(9, 5, Class::Channel, &["mqtt"])], T0 + 5)
        .await
        .unwrap();
    let other = store
        .next_after("mqtt", T0 + 10, first[0].key, 10)
        .await
        .unwrap();
    assert_eq!(ids(&other), vec![5]);
}

#[tokio::test]
async fn confirm_deletes_the_deliveries_in_one_commit() {
    let dir = TempDir::new("confirm");
    let store = open(&dir, 100).await;
    let batch: Vec<_> = (1..=5)
        .map(|id| msg_to(3, id, Class::Channel, &["mqtt"]))
        .collect();
    store.accept(&batch, T0).await.unwrap();
    let rows = store.next("mqtt", T0, 0, 100).await.unwrap();
    let commits = store.commits();

    store
        .confirm(
            &[sent(rows[0].key), sent(rows[2].key), sent(rows[4].key)],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(store.commits(), commits + 1);
    assert_eq!(
        ids(&store.next("mqtt", T0, 0, 100).await.unwrap()),
        vec![2, 4]
    );
    assert_eq!(
        store.depths().await.unwrap(),
        vec![depth("mqtt", Class::Channel, 2)]
    );

    // Confirming again, or nothing, is harmless.
    store.confirm(&[sent(rows[0].key)], T0).await.unwrap();
    store.confirm(&[], T0).await.unwrap();
    assert_eq!(
        store.depths().await.unwrap(),
        vec![depth("mqtt", Class::Channel, 2)]
    );
    assert_eq!(deliveries_in_table(&dir, "mqtt").await, 2);
    assert_eq!(rows_in(&dir, "message").await, 2);
    store.close().await;
}

#[tokio::test]
async fn airtime_is_recorded_with_the_confirm_read_back_and_pruned_beyond_the_window() {
    let dir = TempDir::new("airtime");
    let store = Store::open(StoreConfig {
        airtime_window: Duration::from_secs(60),
        ..StoreConfig::new(dir.file(), 100)
    })
    .await
    .unwrap();
    let batch: Vec<_> = (1..=4)
        .map(|id| msg_to(4, id, Class::Channel, &["south", "mqtt"]))
        .collect();
    store.accept(&batch, T0).await.unwrap();
    let south = store.next("south", T0, 0, 10).await.unwrap();
    let mqtt = store.next("mqtt", T0, 0, 10).await.unwrap();
    let on_air = |key, ms| Sent {
        key,
        airtime: Some(Duration::from_millis(ms)),
    };

    store
        .confirm(&[on_air(south[0].key, 120), sent(mqtt[0].key)], T0)
        .await
        .unwrap();
    store
        .confirm(
            &[on_air(south[1].key, 130), on_air(south[2].key, 140)],
            T0 + 30_000,
        )
        .await
        .unwrap();
    store
        .confirm(&[on_air(south[3].key, 150)], T0 + 61_000)
        .await
        .unwrap();
    let ms = |v: Vec<(Millis, Duration)>| -> Vec<(Millis, u128)> {
        v.into_iter().map(|(at, d)| (at, d.as_millis())).collect()
    };
    assert_eq!(
        ms(store.airtime_since("south", T0).await.unwrap()),
        vec![
            (T0, 120),
            (T0 + 30_000, 130),
            (T0 + 30_000, 140),
            (T0 + 61_000, 150)
        ]
    );
    assert_eq!(
        ms(store.airtime_since("south", T0 + 1).await.unwrap()),
        vec![(T0 + 30_000, 130), (T0 + 30_000, 140), (T0 + 61_000, 150)]
    );
    assert!(store.airtime_since("mqtt", T0).await.unwrap().is_empty());
    assert!(store.airtime_since("nobody", T0).await.unwrap().is_empty());

    // Survives a restart; the sweep drops what is older than the window.
    store.close().await;
    let store = Store::open(StoreConfig {
        airtime_window: Duration::from_secs(60),
        ..StoreConfig::new(dir.file(), 100)
    })
    .await
    .unwrap();
    assert_eq!(store.airtime_since("south", T0).await.unwrap().len(), 4);
    store.expire(T0 + 61_000).await.unwrap();
    assert_eq!(
        ms(store.airtime_since("south", T0).await.unwrap()),
        vec![(T0 + 30_000, 130), (T0 + 30_000, 140), (T0 + 61_000, 150)]
    );
    store.expire(T0 + 200_000).await.unwrap();
    assert!(store.airtime_since("south", T0).await.unwrap().is_empty());
    assert_eq!(rows_in(&dir, "airtime").await, 0);
    store.close().await;
}

#[tokio::test]
async fn fail_counts_attempts_and_note_only_records_the_reason() {
    let dir = TempDir::new("fail");
    let store = open(&dir, 100).await;
    store
        .accept(
            &[
                msg_to(4, 1, Class::Direct, &["radio"]),
                msg_to(4, 2, Class::Direct, &["radio"]),
            ],
            T0,
        )
        .await
        .unwrap();
    let first = store.next("radio", T0, 0, 1).await.unwrap().remove(0);
    assert_eq!(first.id, PacketId::new(1));

    assert_eq!(store.fail(first.key, "no ack").await.unwrap(), 1);
    assert_eq!(store.fail(first.key, "no ack").await.unwrap(), 2);
    store.note(first.key, "link down").await.unwrap();
    store.note(first.key, "link down").await.unwrap();
    let again = store.next("radio", T0, 0, 10).await.unwrap();
    assert_eq!(
        ids(&again),
        vec![1, 2],
        "still first: retry timing is the worker's"
    );
    assert_eq!(again[0].attempts, 2, "a note counts no attempt");
    let mut conn = raw_connection(&dir).await;
    let last_error: String =
        sqlx::query_scalar("SELECT last_error FROM delivery ORDER BY message LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(last_error, "link down");

    // Failing a delivery that is gone is harmless.
    store.confirm(&[sent(first.key)], T0).await.unwrap();
    assert_eq!(store.fail(first.key, "late").await.unwrap(), 0);
    store.note(first.key, "late").await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn reject_moves_a_delivery_to_the_dead_letters() {
    let dir = TempDir::new("reject");
    let store = open(&dir, 100).await;
    let mut item = msg_to(5, 1, Class::Direct, &["xmpp", "radio"]);
    item.deliveries[0].to_channel = Some("room".to_owned());
    store
        .accept(&[item, msg_to(5, 2, Class::Direct, &["xmpp"])], T0)
        .await
        .unwrap();
    let rows = store.next("xmpp", T0, 0, 10).await.unwrap();
    store.fail(rows[0].key, "timeout").await.unwrap();

    store
        .reject(rows[0].key, "recipient unknown", T0 + 5)
        .await
        .unwrap();
    assert_eq!(store.dead_letters().await.unwrap(), 1);
    assert_eq!(ids(&store.next("xmpp", T0, 0, 10).await.unwrap()), vec![2]);
    assert_eq!(ids(&store.next("radio", T0, 0, 10).await.unwrap()), vec![1]);
    assert_eq!(
        store.depths().await.unwrap(),
        vec![
            depth("radio", Class::Direct, 1),
            depth("xmpp", Class::Direct, 1)
        ]
    );

    let mut conn = raw_connection(&dir).await;
    type Row = (
        String,
        String,
        i64,
        i64,
        String,
        String,
        i64,
        String,
        String,
        i64,
        i64,
    );
    let row: Row = sqlx::query_as(
        "SELECT destination, source, from_node, packet_id, channel, to_channel, hops, reason, \
                last_error, attempts, rejected_at FROM dead_letter",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "xmpp".to_owned(),
            "north".to_owned(),
            5,
            1,
            "LongFast".to_owned(),
            "room".to_owned(),
            3,
            "recipient unknown".to_owned(),
            "timeout".to_owned(),
            1,
            T0 + 5
        )
    );

    store.reject(rows[0].key, "again", T0 + 6).await.unwrap();
    assert_eq!(
        store.dead_letters().await.unwrap(),
        1,
        "a delivery goes once"
    );
    store.close().await;
}

#[tokio::test]
async fn expire_drops_old_deliveries_and_counts_them_per_destination_and_class() {
    let dir = TempDir::new("expire");
    let store = open(&dir, 100).await;
    let expiring = |id, class, destinations: &[&str], at: Millis| {
        let mut m = msg_to(6, id, class, destinations);
        m.expires_at = at;
        m
    };
    store
        .accept(
            &[
                expiring(1, Class::Telemetry, &["mqtt", "radio"], T0 + 10),
                expiring(2, Class::Telemetry, &["mqtt"], T0 + 20),
                expiring(3, Class::Position, &["mqtt"], T0 + 20),
                expiring(4, Class::Direct, &["mqtt"], T0 + HOUR),
            ],
            T0,
        )
        .await
        .unwrap();

    // Already invisible to next, before expire runs.
    assert_eq!(
        ids(&store.next("mqtt", T0 + 20, 0, 10).await.unwrap()),
        vec![4]
    );
    assert_eq!(
        ids(&store.next("mqtt", T0 + 19, 0, 10).await.unwrap()),
        vec![4, 3, 2]
    );

    assert_eq!(store.expire(T0 + 9).await.unwrap(), vec![]);
    let expired = store.expire(T0 + 20).await.unwrap();
    let e = |destination: &str, class, count| Expired {
        destination: destination.to_owned(),
        class,
        count,
    };
    assert_eq!(
        expired,
        vec![
            e("mqtt", Class::Position, 1),
            e("mqtt", Class::Telemetry, 2),
            e("radio", Class::Telemetry, 1),
        ]
    );
    assert_eq!(
        store.depths().await.unwrap(),
        vec![depth("mqtt", Class::Direct, 1)]
    );
    assert_eq!(deliveries_in_table(&dir, "mqtt").await, 1);
    assert_eq!(deliveries_in_table(&dir, "radio").await, 0);
    assert_eq!(rows_in(&dir, "message").await, 1);
    store.close().await;
}

#[tokio::test]
async fn a_long_backlog_expires_in_bounded_transactions() {
    let dir = TempDir::new("expire-chunks");
    let store = open(&dir, u64::MAX).await;
    let batch: Vec<_> = (1..=1500)
        .map(|id| {
            let mut m = msg_to(7, id, Class::Telemetry, &["radio"]);
            m.expires_at = T0 + Millis::from(id);
            m
        })
        .collect();
    store.accept(&batch, T0).await.unwrap();
    let commits = store.commits();
    let expired = store.expire(T0 + 1200).await.unwrap();
    assert_eq!(
        expired,
        vec![Expired {
            destination: "radio".to_owned(),
            class: Class::Telemetry,
            count: 1200
        }]
    );
    assert_eq!(store.commits() - commits, 3, "512 + 512 + 176");
    assert_eq!(
        ids(&store.next("radio", T0, 0, 1).await.unwrap()),
        vec![1201]
    );
    assert_eq!(rows_in(&dir, "message").await, 300);
    store.close().await;
}

#[tokio::test]
async fn a_damaged_row_is_an_error_that_names_it_and_can_be_set_aside() {
    let dir = TempDir::new("damaged");
    let store = open(&dir, 10).await;
    store
        .accept(
            &[
                msg_to(16, 1, Class::Direct, &["radio"]),
                msg_to(16, 3, Class::Channel, &["mqtt"]),
            ],
            T0,
        )
        .await
        .unwrap();
    let mut conn = raw_connection(&dir).await;
    // A class rank of 9 on the radio's queue, a node number that is not a u32 on MQTT's, and a
    // delivery whose message is missing.
    sqlx::query(
        "INSERT INTO message (id, from_node, packet_id, priority, source, channel, packet, \
             enqueued_at, expires_at) \
         VALUES (100, 16, 2, 9, NULL, 'LongFast', x'00', ?1, ?2), \
                (101, 1099511627776, 2, 1, NULL, 'LongFast', x'00', ?1, ?2)",
    )
    .bind(T0)
    .bind(T0 + HOUR)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO delivery (destination, priority, message, leg, hops) \
         SELECT id, 9, 100, 0, 3 FROM endpoint WHERE name = 'radio' UNION ALL \
         SELECT id, 1, 101, 0, 3 FROM endpoint WHERE name = 'mqtt' UNION ALL \
         SELECT id, 1, 555, 0, 3 FROM endpoint WHERE name = 'mqtt'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);

    // The good row comes first (direct), so a limit of 1 does not reach the bad one.
    assert_eq!(ids(&store.next("radio", T0, 0, 1).await.unwrap()), vec![1]);
    let bad_rank = match store.next("radio", T0, 0, 10).await.unwrap_err() {
        StoreError::Corrupt { key, what, .. } => {
            assert!(what.contains("priority is 9"), "{what}");
            assert!(what.contains("for radio"), "{what}");
            key.unwrap()
        }
        other => panic!("expected Corrupt, got {other}"),
    };
    assert_eq!(ids(&store.next("mqtt", T0, 0, 1).await.unwrap()), vec![3]);
    let bad_node = match store.next("mqtt", T0, 1, 1).await.unwrap_err() {
        StoreError::Corrupt { key, what, .. } => {
            assert!(what.contains("from_node is 1099511627776"), "{what}");
            key.unwrap()
        }
        other => panic!("expected Corrupt, got {other}"),
    };
    let orphan = match store.next("mqtt", T0, 2, 1).await.unwrap_err() {
        StoreError::Corrupt { key, what, .. } => {
            assert!(what.contains("its message 555 is missing"), "{what}");
            key.unwrap()
        }
        other => panic!("expected Corrupt, got {other}"),
    };
    store.close().await;

    // The file still opens; the row with no class is not counted, and all can be moved aside.
    let store = open(&dir, 10).await;
    assert_eq!(
        store.depths().await.unwrap(),
        vec![
            depth("mqtt", Class::Channel, 3),
            depth("radio", Class::Direct, 1)
        ]
    );
    assert!(store.next("radio", T0, 0, 10).await.is_err());
    for key in [bad_rank, bad_node, orphan] {
        store.reject(key, "unreadable", T0).await.unwrap();
    }
    assert_eq!(ids(&store.next("radio", T0, 0, 10).await.unwrap()), vec![1]);
    assert_eq!(ids(&store.next("mqtt", T0, 0, 10).await.unwrap()), vec![3]);
    assert_eq!(store.dead_letters().await.unwrap(), 3);
    assert_eq!(
        store.depths().await.unwrap(),
        vec![
            depth("mqtt", Class::Channel, 1),
            depth("radio", Class::Direct, 1)
        ]
    );
    assert_eq!(
        rows_in(&dir, "message").await,
        2,
        "damaged messages went too"
    );
    store.close().await;
}
