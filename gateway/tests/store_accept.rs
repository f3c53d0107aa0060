//! Accepting messages into the store: every field back, deduplication, one message for many
//! deliveries, the size cap, and the queue figures. Real SQLite files; time is whatever the
//! test says it is (`now` arguments), and nothing sleeps.

mod common;

use archipel_gateway::store::{
    Accepted, Delivery, Inbound, NewDelivery, QueueInfo, Sent, StoreError,
};
use common::*;
use mesh_core::{Class, NodeId, PacketId};

#[tokio::test]
async fn an_accepted_message_comes_back_from_next_with_every_field() {
    let dir = TempDir::new("round-trip");
    let store = open(&dir, 100).await;
    let item = Inbound {
        from: NodeId::new(0xa1b2c3d4),
        id: PacketId::new(0xdeadbeef),
        class: Class::Channel,
        source: "north".to_owned(),
        channel: "LongFast".to_owned(),
        packet: (0..=255).collect(),
        origin: Some(NodeId::new(0xa7c4_0002)),
        expires_at: T0 + 5 * HOUR,
        deliveries: vec![
            NewDelivery {
                destination: "mqtt".to_owned(),
                to_channel: Some("Family".to_owned()),
                hops: 7,
            },
            to("radio"),
        ],
    };

    let answers = store.accept(std::slice::from_ref(&item), T0).await.unwrap();
    assert_eq!(answers, vec![new_clean()]);

    let rows = store.next("mqtt", T0, 0, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        *row,
        Delivery {
            key: row.key,
            destination: "mqtt".to_owned(),
            from: NodeId::new(0xa1b2c3d4),
            id: PacketId::new(0xdeadbeef),
            class: Class::Channel,
            source: Some("north".to_owned()),
            origin: Some(NodeId::new(0xa7c4_0002)),
            channel: "LongFast".to_owned(),
            to_channel: "Family".to_owned(),
            hops: 7,
            packet: item.packet.clone(),
            attempts: 0,
            enqueued_at: T0,
            expires_at: T0 + 5 * HOUR,
        }
    );
    let radio = store.next("radio", T0, 0, 10).await.unwrap();
    assert_eq!(ids(&radio), vec![0xdeadbeef]);
    assert_eq!(
        (radio[0].to_channel.as_str(), radio[0].hops),
        ("LongFast", 3),
        "no to_channel: the message's own channel"
    );
    assert_ne!(radio[0].key, row.key);
    assert!(store.next("nobody", T0, 0, 10).await.unwrap().is_empty());
    assert!(
        store
            .seen(NodeId::new(0xa1b2c3d4), PacketId::new(0xdeadbeef))
            .await
            .unwrap()
    );
    assert!(
        !store
            .seen(NodeId::new(0xa1b2c3d4), PacketId::new(1))
            .await
            .unwrap()
    );
    assert_eq!(
        store.depths().await.unwrap(),
        vec![
            depth("mqtt", Class::Channel, 1),
            depth("radio", Class::Channel, 1)
        ]
    );
    store.close().await;
}

#[tokio::test]
async fn duplicates_are_reported_across_calls_and_within_a_batch() {
    let dir = TempDir::new("duplicates");
    let store = open(&dir, 100).await;
    let a = msg_to(1, 10, Class::Channel, &["mqtt"]);
    let b = msg_to(1, 11, Class::Channel, &["mqtt"]);
    let a_from_other_node = msg_to(2, 10, Class::Channel, &["mqtt"]);

    let answers = store
        .accept(&[a.clone(), b.clone(), a.clone(), a_from_other_node], T0)
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![new_clean(), new_clean(), Accepted::Duplicate, new_clean()]
    );

    let answers = store
        .accept(&[b, a, msg(1, 12, Class::Channel, vec![])], T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![Accepted::Duplicate, Accepted::Duplicate, new_clean()]
    );
    assert_eq!(store.next("mqtt", T0, 0, 100).await.unwrap().len(), 3);
    // A message with no delivery is only seen: no message row for it.
    assert_eq!(rows_in(&dir, "message").await, 3);
    assert!(store.seen(NodeId::new(1), PacketId::new(12)).await.unwrap());
    store.close().await;
}

#[tokio::test]
async fn packet_id_zero_is_never_deduplicated_nor_recorded() {
    let dir = TempDir::new("id-zero");
    let store = open(&dir, 100).await;
    let item = msg_to(7, 0, Class::Direct, &["mqtt"]);

    let answers = store
        .accept(&[item.clone(), item.clone()], T0)
        .await
        .unwrap();
    assert_eq!(answers, vec![new_clean(), new_clean()]);
    assert_eq!(store.accept(&[item], T0).await.unwrap(), vec![new_clean()]);

    assert_eq!(store.next("mqtt", T0, 0, 100).await.unwrap().len(), 3);
    assert!(!store.seen(NodeId::new(7), PacketId::new(0)).await.unwrap());
    assert_eq!(
        rows_in(&dir, "seen_a").await + rows_in(&dir, "seen_b").await,
        0
    );
    store.close().await;
}

#[tokio::test]
async fn a_message_to_three_destinations_is_stored_once() {
    let dir = TempDir::new("once");
    let store = open(&dir, 100).await;
    let mut item = msg_to(3, 30, Class::Channel, &["south", "mqtt", "xmpp"]);
    // A second room on the same XMPP server: a second leg to one destination.
    item.deliveries.push(NewDelivery {
        destination: "xmpp".to_owned(),
        to_channel: Some("ops-room".to_owned()),
        hops: 0,
    });
    store.accept(&[item], T0).await.unwrap();
    assert_eq!(rows_in(&dir, "message").await, 1, "the packet once");
    assert_eq!(rows_in(&dir, "delivery").await, 4);
    let xmpp = store.next("xmpp", T0, 0, 10).await.unwrap();
    assert_eq!(
        xmpp.iter()
            .map(|d| d.to_channel.as_str())
            .collect::<Vec<_>>(),
        ["LongFast", "ops-room"]
    );
    assert!(xmpp[0].key < xmpp[1].key, "legs in order");

    let sent = |d: &Delivery| Sent {
        key: d.key,
        airtime: None,
    };
    let south = store.next("south", T0, 0, 10).await.unwrap();
    let mqtt = store.next("mqtt", T0, 0, 10).await.unwrap();
    store.confirm(&[sent(&south[0])], T0).await.unwrap();
    store
        .confirm(&[sent(&mqtt[0]), sent(&xmpp[0])], T0)
        .await
        .unwrap();
    assert_eq!(rows_in(&dir, "message").await, 1, "one delivery still owed");
    assert_eq!(ids(&store.next("xmpp", T0, 0, 10).await.unwrap()), vec![30]);
    store.confirm(&[sent(&xmpp[1])], T0).await.unwrap();
    assert_eq!(
        rows_in(&dir, "message").await,
        0,
        "gone with its last delivery"
    );
    assert_eq!(rows_in(&dir, "delivery").await, 0);
    assert_eq!(store.depths().await.unwrap(), vec![]);
    store.close().await;
}

#[tokio::test]
async fn a_full_queue_evicts_the_oldest_delivery_of_the_least_urgent_class() {
    let dir = TempDir::new("cap-evict");
    let store = open(&dir, 3).await;
    let one = |id, class| msg_to(8, id, class, &["radio"]);
    store
        .accept(
            &[
                one(1, Class::Telemetry),
                one(2, Class::Position),
                one(3, Class::Telemetry),
            ],
            T0,
        )
        .await
        .unwrap();

    let evicted = |class| Accepted::New {
        refused: vec![],
        evicted: vec![("radio".to_owned(), class)],
    };
    // Channel text pushes out the oldest telemetry, then the next telemetry.
    assert_eq!(
        store.accept(&[one(4, Class::Channel)], T0).await.unwrap(),
        vec![evicted(Class::Telemetry)]
    );
    assert_eq!(
        ids(&store.next("radio", T0, 0, 10).await.unwrap()),
        vec![4, 2, 3]
    );
    assert_eq!(
        store.accept(&[one(5, Class::Direct)], T0).await.unwrap(),
        vec![evicted(Class::Telemetry)]
    );
    // Same class: the oldest of that class makes room.
    assert_eq!(
        store.accept(&[one(6, Class::Position)], T0).await.unwrap(),
        vec![evicted(Class::Position)]
    );
    assert_eq!(
        ids(&store.next("radio", T0, 0, 10).await.unwrap()),
        vec![5, 4, 6]
    );
    assert_eq!(
        store.depths().await.unwrap(),
        vec![
            depth("radio", Class::Direct, 1),
            depth("radio", Class::Channel, 1),
            depth("radio", Class::Position, 1),
        ]
    );
    assert_eq!(deliveries_in_table(&dir, "radio").await, 3);
    assert_eq!(
        rows_in(&dir, "message").await,
        3,
        "evicted messages are gone"
    );
    store.close().await;
}

#[tokio::test]
async fn a_full_queue_refuses_what_is_less_urgent_than_everything_queued() {
    let dir = TempDir::new("cap-refuse");
    let store = open(&dir, 2).await;
    store
        .accept(
            &[
                msg_to(9, 1, Class::Direct, &["radio"]),
                msg_to(9, 2, Class::Channel, &["radio"]),
            ],
            T0,
        )
        .await
        .unwrap();

    // Full of more urgent deliveries: refused there, queued where there is room.
    let answers = store
        .accept(&[msg_to(9, 3, Class::Position, &["radio", "mqtt"])], T0)
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![Accepted::New {
            refused: vec!["radio".to_owned()],
            evicted: vec![]
        }]
    );
    assert_eq!(
        ids(&store.next("radio", T0, 0, 10).await.unwrap()),
        vec![1, 2]
    );
    assert_eq!(ids(&store.next("mqtt", T0, 0, 10).await.unwrap()), vec![3]);
    // The refused message was still seen: a repeat is a duplicate, not a second try.
    assert_eq!(
        store
            .accept(&[msg_to(9, 3, Class::Position, &["radio"])], T0)
            .await
            .unwrap(),
        vec![Accepted::Duplicate]
    );
    // Refused everywhere: seen, but no message row.
    assert_eq!(
        store
            .accept(&[msg_to(9, 5, Class::Telemetry, &["radio"])], T0)
            .await
            .unwrap(),
        vec![Accepted::New {
            refused: vec!["radio".to_owned()],
            evicted: vec![]
        }]
    );
    assert_eq!(rows_in(&dir, "message").await, 3);
    // A direct message evicts the channel one.
    assert_eq!(
        store
            .accept(&[msg_to(9, 4, Class::Direct, &["radio"])], T0)
            .await
            .unwrap(),
        vec![Accepted::New {
            refused: vec![],
            evicted: vec![("radio".to_owned(), Class::Channel)]
        }]
    );
    assert_eq!(
        ids(&store.next("radio", T0, 0, 10).await.unwrap()),
        vec![1, 4]
    );
    store.close().await;
}

#[tokio::test]
async fn the_cap_also_applies_within_one_batch() {
    let dir = TempDir::new("cap-batch");
    let store = open(&dir, 2).await;
    let answers = store
        .accept(
            &[
                msg_to(10, 1, Class::Telemetry, &["radio"]),
                msg_to(10, 2, Class::Telemetry, &["radio", "mqtt"]),
                msg_to(10, 3, Class::Channel, &["radio"]),
                msg_to(10, 4, Class::Telemetry, &["radio"]),
            ],
            T0,
        )
        .await
        .unwrap();
    let evicted_telemetry = Accepted::New {
        refused: vec![],
        evicted: vec![("radio".to_owned(), Class::Telemetry)],
    };
    assert_eq!(
        answers,
        vec![
            new_clean(),
            new_clean(),
            evicted_telemetry.clone(),
            evicted_telemetry
        ]
    );
    assert_eq!(
        ids(&store.next("radio", T0, 0, 10).await.unwrap()),
        vec![3, 4]
    );
    assert_eq!(ids(&store.next("mqtt", T0, 0, 10).await.unwrap()), vec![2]);
    assert_eq!(deliveries_in_table(&dir, "radio").await, 2);
    // Message 1 lost its only delivery within the batch and was never written; message 2
    // keeps its MQTT one.
    assert_eq!(rows_in(&dir, "message").await, 3);
    assert_eq!(
        store.depths().await.unwrap(),
        vec![
            depth("mqtt", Class::Telemetry, 1),
            depth("radio", Class::Channel, 1),
            depth("radio", Class::Telemetry, 1),
        ]
    );
    store.close().await;
}

#[tokio::test]
async fn queue_depths_put_out_of_step_behind_the_stores_back_correct_themselves() {
    let dir = TempDir::new("cap-drift");
    let store = open(&dir, 2).await;
    let batch = [
        msg_to(18, 1, Class::Telemetry, &["radio"]),
        msg_to(18, 2, Class::Telemetry, &["radio"]),
    ];
    store.accept(&batch, T0).await.unwrap();
    let mut conn = raw_connection(&dir).await;
    sqlx::query("DELETE FROM delivery")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);

    // The store believes the queue is full of telemetry; the table has nothing to evict.
    let answers = store
        .accept(&[msg_to(18, 3, Class::Channel, &["radio"])], T0)
        .await
        .unwrap();
    assert_eq!(answers, vec![new_clean()]);
    assert_eq!(
        store.depths().await.unwrap(),
        vec![depth("radio", Class::Channel, 1)]
    );
    assert_eq!(deliveries_in_table(&dir, "radio").await, 1);
    store.close().await;
}

#[tokio::test]
async fn queues_report_count_oldest_and_most_urgent_even_for_an_unconfigured_destination() {
    let dir = TempDir::new("queues");
    let store = open(&dir, 100).await;
    store
        .accept(
            &[msg_to(20, 1, Class::Telemetry, &["old-radio", "mqtt"])],
            T0,
        )
        .await
        .unwrap();
    store
        .accept(&[msg_to(20, 2, Class::Channel, &["mqtt"])], T0 + 5)
        .await
        .unwrap();
    store
        .accept(&[msg_to(20, 3, Class::Direct, &["mqtt"])], T0 + 9)
        .await
        .unwrap();
    assert_eq!(
        store.queues().await.unwrap(),
        vec![
            QueueInfo {
                destination: "mqtt".to_owned(),
                count: 3,
                oldest: Some(T0),
                most_urgent: Some(Class::Direct),
            },
            QueueInfo {
                destination: "old-radio".to_owned(),
                count: 1,
                oldest: Some(T0),
                most_urgent: Some(Class::Telemetry),
            },
        ]
    );
    // After a restart, with nobody asking for "old-radio", it is still reported.
    store.close().await;
    let store = open(&dir, 100).await;
    let queues = store.queues().await.unwrap();
    assert_eq!(queues[1].destination, "old-radio");
    assert_eq!(queues[1].count, 1);
    let first = store.next("mqtt", T0, 0, 1).await.unwrap();
    store
        .confirm(
            &[Sent {
                key: first[0].key,
                airtime: None,
            }],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        store.queues().await.unwrap()[0],
        QueueInfo {
            destination: "mqtt".to_owned(),
            count: 2,
            oldest: Some(T0),
            most_urgent: Some(Class::Channel),
        }
    );
    store.close().await;
}

#[tokio::test]
async fn an_unopenable_file_is_an_error_naming_it() {
    let dir = TempDir::new("unopenable");
    let path = dir.0.join("no-such-dir").join("outbox.sqlite");
    let error = archipel_gateway::store::Store::open(archipel_gateway::store::StoreConfig::new(
        path.clone(),
        10,
    ))
    .await
    .unwrap_err();
    // The lock file beside it is the first thing made, and the missing directory stops it.
    assert!(matches!(error, StoreError::Lock { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("store {}: ", path.display()))
            && message.contains("No such file or directory"),
        "{message}"
    );
}
