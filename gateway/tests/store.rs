//! The durable outbox and seen-set against real SQLite files in a temporary directory.
//!
//! Time is whatever the test says it is (`now` arguments); nothing here sleeps. The kill -9
//! test runs this same test binary as a child process (see `kill_nine_child`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use archipel_gateway::store::{
    Accepted, Delivery, Depth, Expired, Inbound, Millis, NewDelivery, Store, StoreConfig,
    StoreError, Writer,
};
use mesh_core::{Class, NodeId, PacketId};

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "archipel-store-test-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("outbox.sqlite")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const T0: Millis = 1_700_000_000_000;
const HOUR: Millis = 3_600_000;

async fn open(dir: &TempDir, cap: u64) -> Store {
    Store::open(StoreConfig {
        path: dir.file(),
        max_per_destination: cap,
    })
    .await
    .unwrap()
}

fn to(destination: &str, class: Class) -> NewDelivery {
    NewDelivery {
        destination: destination.to_owned(),
        class,
        channel: "LongFast".to_owned(),
        hop_limit: 3,
        packet: vec![0xA5; 60],
        expires_at: T0 + HOUR,
    }
}

fn msg(from: u32, id: u32, deliveries: Vec<NewDelivery>) -> Inbound {
    Inbound {
        from: NodeId::new(from),
        id: PacketId::new(id),
        deliveries,
    }
}

fn new_clean() -> Accepted {
    Accepted::New {
        refused: vec![],
        evicted: vec![],
    }
}

fn ids(rows: &[Delivery]) -> Vec<u32> {
    rows.iter().map(|r| r.id.get()).collect()
}

fn depth(destination: &str, class: Class, count: u64) -> Depth {
    Depth {
        destination: destination.to_owned(),
        class,
        count,
    }
}

/// Rows of one destination, counted in the table itself (not the store's in-memory depths).
async fn rows_in_table(dir: &TempDir, destination: &str) -> i64 {
    let mut conn = raw_connection(dir).await;
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE destination = ?1")
        .bind(destination)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// A connection of the test's own to the store file, behind the store's back.
async fn raw_connection(dir: &TempDir) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.file());
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_accepted_message_comes_back_from_next_with_every_field() {
    let dir = TempDir::new("round-trip");
    let store = open(&dir, 100).await;
    let mut d = to("mqtt", Class::Channel);
    d.channel = "Family".to_owned();
    d.hop_limit = 7;
    d.packet = (0..=255).collect();
    d.expires_at = T0 + 5 * HOUR;
    let item = msg(
        0xa1b2c3d4,
        0xdeadbeef,
        vec![d.clone(), to("radio", Class::Channel)],
    );

    let answers = store.accept(&[item], T0).await.unwrap();
    assert_eq!(answers, vec![new_clean()]);

    let rows = store.next("mqtt", T0, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        *row,
        Delivery {
            seq: row.seq,
            destination: "mqtt".to_owned(),
            from: NodeId::new(0xa1b2c3d4),
            id: PacketId::new(0xdeadbeef),
            class: Class::Channel,
            channel: "Family".to_owned(),
            hop_limit: 7,
            packet: d.packet,
            attempts: 0,
            enqueued_at: T0,
            expires_at: T0 + 5 * HOUR,
        }
    );
    assert_eq!(
        ids(&store.next("radio", T0, 10).await.unwrap()),
        vec![0xdeadbeef]
    );
    assert!(store.next("nobody", T0, 10).await.unwrap().is_empty());
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
    let a = msg(1, 10, vec![to("mqtt", Class::Channel)]);
    let b = msg(1, 11, vec![to("mqtt", Class::Channel)]);
    let a_from_other_node = msg(2, 10, vec![to("mqtt", Class::Channel)]);

    let answers = store
        .accept(&[a.clone(), b.clone(), a.clone(), a_from_other_node], T0)
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![new_clean(), new_clean(), Accepted::Duplicate, new_clean()]
    );

    let answers = store
        .accept(&[b, a, msg(1, 12, vec![])], T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![Accepted::Duplicate, Accepted::Duplicate, new_clean()]
    );
    assert_eq!(store.next("mqtt", T0, 100).await.unwrap().len(), 3);
    store.close().await;
}

#[tokio::test]
async fn packet_id_zero_is_never_deduplicated_nor_recorded() {
    let dir = TempDir::new("id-zero");
    let store = open(&dir, 100).await;
    let item = msg(7, 0, vec![to("mqtt", Class::Direct)]);

    let answers = store
        .accept(&[item.clone(), item.clone()], T0)
        .await
        .unwrap();
    assert_eq!(answers, vec![new_clean(), new_clean()]);
    assert_eq!(store.accept(&[item], T0).await.unwrap(), vec![new_clean()]);

    assert_eq!(store.next("mqtt", T0, 100).await.unwrap().len(), 3);
    assert!(!store.seen(NodeId::new(7), PacketId::new(0)).await.unwrap());
    assert_eq!(
        store.prune_seen(T0 + HOUR).await.unwrap(),
        0,
        "nothing was recorded"
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
            .accept(
                &[msg(9, id, vec![to("radio", class)])],
                T0 + Millis::from(id),
            )
            .await
            .unwrap();
    }

    let rows = store.next("radio", T0 + 10, 100).await.unwrap();
    assert_eq!(ids(&rows), vec![2, 4, 3, 6, 5, 1]);
    assert!(
        rows.windows(2)
            .all(|w| w[0].class < w[1].class || w[0].seq < w[1].seq)
    );
    assert_eq!(
        ids(&store.next("radio", T0 + 10, 3).await.unwrap()),
        vec![2, 4, 3]
    );
    // A row is due from the moment it was accepted, not before.
    assert_eq!(
        ids(&store.next("radio", T0 + 3, 100).await.unwrap()),
        vec![2, 3, 1]
    );
    store.close().await;
}

#[tokio::test]
async fn confirm_deletes_the_rows_in_one_commit() {
    let dir = TempDir::new("confirm");
    let store = open(&dir, 100).await;
    let batch: Vec<Inbound> = (1..=5)
        .map(|id| msg(3, id, vec![to("mqtt", Class::Channel)]))
        .collect();
    store.accept(&batch, T0).await.unwrap();
    let rows = store.next("mqtt", T0, 100).await.unwrap();
    let commits = store.commits();

    store
        .confirm(&[rows[0].seq, rows[2].seq, rows[4].seq, 999_999])
        .await
        .unwrap();
    assert_eq!(store.commits(), commits + 1);
    assert_eq!(ids(&store.next("mqtt", T0, 100).await.unwrap()), vec![2, 4]);
    assert_eq!(
        store.depths().await.unwrap(),
        vec![depth("mqtt", Class::Channel, 2)]
    );

    // Confirming again, or nothing, is harmless.
    store.confirm(&[rows[0].seq]).await.unwrap();
    store.confirm(&[]).await.unwrap();
    assert_eq!(
        store.depths().await.unwrap(),
        vec![depth("mqtt", Class::Channel, 2)]
    );
    assert_eq!(rows_in_table(&dir, "mqtt").await, 2);
    store.close().await;
}

#[tokio::test]
async fn retry_delays_a_row_and_counts_its_attempts() {
    let dir = TempDir::new("retry");
    let store = open(&dir, 100).await;
    store
        .accept(
            &[
                msg(4, 1, vec![to("radio", Class::Direct)]),
                msg(4, 2, vec![to("radio", Class::Direct)]),
            ],
            T0,
        )
        .await
        .unwrap();
    let first = store.next("radio", T0, 1).await.unwrap().remove(0);
    assert_eq!(first.id, PacketId::new(1));

    store.retry(first.seq, T0 + 30_000, "no ack").await.unwrap();
    assert_eq!(
        ids(&store.next("radio", T0 + 1, 10).await.unwrap()),
        vec![2]
    );
    assert_eq!(store.next_due("radio", T0 - 1).await.unwrap(), Some(T0));
    assert_eq!(
        store.next_due("radio", T0 + 1).await.unwrap(),
        Some(T0 + 30_000)
    );
    assert_eq!(store.next_due("radio", T0 + 30_000).await.unwrap(), None);
    assert_eq!(store.next_due("nobody", T0 - 1).await.unwrap(), None);

    let again = store.next("radio", T0 + 30_000, 10).await.unwrap();
    assert_eq!(ids(&again), vec![1, 2], "due again, and still first");
    assert_eq!(again[0].attempts, 1);
    store.retry(first.seq, T0 + 60_000, "no ack").await.unwrap();
    assert_eq!(
        store.next("radio", T0 + 60_000, 1).await.unwrap()[0].attempts,
        2
    );

    // A retry past the row's expiry never makes it due: next_due does not wake for it.
    store
        .retry(first.seq, T0 + 2 * HOUR, "no ack")
        .await
        .unwrap();
    let second = store.next("radio", T0 + 1, 1).await.unwrap().remove(0);
    store.confirm(&[second.seq]).await.unwrap();
    assert_eq!(store.next_due("radio", T0 - 1).await.unwrap(), None);
    assert_eq!(store.next_due("radio", T0).await.unwrap(), None);
    // Retrying a row that is gone is harmless.
    store.retry(second.seq, T0, "late").await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn reject_moves_a_row_to_the_dead_letters() {
    let dir = TempDir::new("reject");
    let store = open(&dir, 100).await;
    store
        .accept(
            &[
                msg(5, 1, vec![to("xmpp", Class::Direct)]),
                msg(5, 2, vec![to("xmpp", Class::Direct)]),
            ],
            T0,
        )
        .await
        .unwrap();
    let rows = store.next("xmpp", T0, 10).await.unwrap();
    store.retry(rows[0].seq, T0, "timeout").await.unwrap();

    store
        .reject(rows[0].seq, "recipient unknown", T0 + 5)
        .await
        .unwrap();
    assert_eq!(store.dead_letters().await.unwrap(), 1);
    assert_eq!(ids(&store.next("xmpp", T0, 10).await.unwrap()), vec![2]);
    assert_eq!(
        store.depths().await.unwrap(),
        vec![depth("xmpp", Class::Direct, 1)]
    );

    let mut conn = raw_connection(&dir).await;
    let (reason, last_error, attempts, rejected_at): (String, String, i64, i64) = sqlx::query_as(
        "SELECT reason, last_error, attempts, rejected_at FROM dead_letter WHERE seq = ?1",
    )
    .bind(rows[0].seq)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (reason.as_str(), last_error.as_str(), attempts, rejected_at),
        ("recipient unknown", "timeout", 1, T0 + 5)
    );

    store.reject(rows[0].seq, "again", T0 + 6).await.unwrap();
    assert_eq!(store.dead_letters().await.unwrap(), 1, "a row goes once");
    store.close().await;
}

#[tokio::test]
async fn expire_drops_old_rows_and_counts_them_per_destination_and_class() {
    let dir = TempDir::new("expire");
    let store = open(&dir, 100).await;
    let expiring = |destination: &str, class: Class, at: Millis| NewDelivery {
        expires_at: at,
        ..to(destination, class)
    };
    store
        .accept(
            &[
                msg(
                    6,
                    1,
                    vec![
                        expiring("mqtt", Class::Telemetry, T0 + 10),
                        expiring("radio", Class::Telemetry, T0 + 10),
                    ],
                ),
                msg(6, 2, vec![expiring("mqtt", Class::Telemetry, T0 + 20)]),
                msg(6, 3, vec![expiring("mqtt", Class::Position, T0 + 20)]),
                msg(6, 4, vec![expiring("mqtt", Class::Direct, T0 + HOUR)]),
            ],
            T0,
        )
        .await
        .unwrap();

    // Already invisible to next, before expire runs.
    assert_eq!(
        ids(&store.next("mqtt", T0 + 20, 10).await.unwrap()),
        vec![4]
    );
    assert_eq!(
        ids(&store.next("mqtt", T0 + 19, 10).await.unwrap()),
        vec![4, 3, 2]
    );

    assert_eq!(store.expire(T0 + 9).await.unwrap(), vec![]);
    let expired = store.expire(T0 + 20).await.unwrap();
    assert_eq!(
        expired,
        vec![
            Expired {
                destination: "mqtt".into(),
                class: Class::Position,
                count: 1
            },
            Expired {
                destination: "mqtt".into(),
                class: Class::Telemetry,
                count: 2
            },
            Expired {
                destination: "radio".into(),
                class: Class::Telemetry,
                count: 1
            },
        ]
    );
    assert_eq!(
        store.depths().await.unwrap(),
        vec![depth("mqtt", Class::Direct, 1)]
    );
    assert_eq!(rows_in_table(&dir, "mqtt").await, 1);
    assert_eq!(rows_in_table(&dir, "radio").await, 0);
    store.close().await;
}

#[tokio::test]
async fn a_full_queue_evicts_the_oldest_row_of_the_least_urgent_class() {
    let dir = TempDir::new("cap-evict");
    let store = open(&dir, 3).await;
    let one = |id, class| msg(8, id, vec![to("radio", class)]);
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
        ids(&store.next("radio", T0, 10).await.unwrap()),
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
        ids(&store.next("radio", T0, 10).await.unwrap()),
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
    assert_eq!(rows_in_table(&dir, "radio").await, 3);
    store.close().await;
}

#[tokio::test]
async fn a_full_queue_refuses_what_is_less_urgent_than_everything_queued() {
    let dir = TempDir::new("cap-refuse");
    let store = open(&dir, 2).await;
    store
        .accept(
            &[
                msg(9, 1, vec![to("radio", Class::Direct)]),
                msg(9, 2, vec![to("radio", Class::Channel)]),
            ],
            T0,
        )
        .await
        .unwrap();

    // Full of more urgent rows: refused there, queued where there is room.
    let answers = store
        .accept(
            &[msg(
                9,
                3,
                vec![to("radio", Class::Position), to("mqtt", Class::Position)],
            )],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![Accepted::New {
            refused: vec!["radio".to_owned()],
            evicted: vec![]
        }]
    );
    assert_eq!(ids(&store.next("radio", T0, 10).await.unwrap()), vec![1, 2]);
    assert_eq!(ids(&store.next("mqtt", T0, 10).await.unwrap()), vec![3]);
    // The refused message was still seen: a repeat is a duplicate, not a second try.
    assert_eq!(
        store
            .accept(&[msg(9, 3, vec![to("radio", Class::Position)])], T0)
            .await
            .unwrap(),
        vec![Accepted::Duplicate]
    );
    // A direct message evicts the channel one.
    assert_eq!(
        store
            .accept(&[msg(9, 4, vec![to("radio", Class::Direct)])], T0)
            .await
            .unwrap(),
        vec![Accepted::New {
            refused: vec![],
            evicted: vec![("radio".to_owned(), Class::Channel)]
        }]
    );
    assert_eq!(ids(&store.next("radio", T0, 10).await.unwrap()), vec![1, 4]);
    store.close().await;
}

#[tokio::test]
async fn the_cap_also_applies_within_one_batch() {
    let dir = TempDir::new("cap-batch");
    let store = open(&dir, 2).await;
    let answers = store
        .accept(
            &[
                msg(10, 1, vec![to("radio", Class::Telemetry)]),
                msg(10, 2, vec![to("radio", Class::Telemetry)]),
                msg(10, 3, vec![to("radio", Class::Channel)]),
                msg(10, 4, vec![to("radio", Class::Telemetry)]),
            ],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![
            new_clean(),
            new_clean(),
            Accepted::New {
                refused: vec![],
                evicted: vec![("radio".to_owned(), Class::Telemetry)]
            },
            Accepted::New {
                refused: vec![],
                evicted: vec![("radio".to_owned(), Class::Telemetry)]
            },
        ]
    );
    assert_eq!(ids(&store.next("radio", T0, 10).await.unwrap()), vec![3, 4]);
    assert_eq!(rows_in_table(&dir, "radio").await, 2);
    store.close().await;
}

#[tokio::test]
async fn queue_depths_put_out_of_step_behind_the_stores_back_correct_themselves() {
    let dir = TempDir::new("cap-drift");
    let store = open(&dir, 2).await;
    let batch = [
        msg(18, 1, vec![to("radio", Class::Telemetry)]),
        msg(18, 2, vec![to("radio", Class::Telemetry)]),
    ];
    store.accept(&batch, T0).await.unwrap();
    let mut conn = raw_connection(&dir).await;
    sqlx::query("DELETE FROM outbox")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);

    // The store believes the queue is full of telemetry; the table has nothing to evict.
    let answers = store
        .accept(&[msg(18, 3, vec![to("radio", Class::Channel)])], T0)
        .await
        .unwrap();
    assert_eq!(answers, vec![new_clean()]);
    assert_eq!(
        store.depths().await.unwrap(),
        vec![depth("radio", Class::Channel, 1)]
    );
    assert_eq!(rows_in_table(&dir, "radio").await, 1);
    store.close().await;
}

#[tokio::test]
async fn everything_survives_closing_and_reopening_the_file() {
    let dir = TempDir::new("reopen");
    let store = open(&dir, 100).await;
    let batch: Vec<Inbound> = (1..=6)
        .map(|id| {
            let class = Class::ALL[id as usize % 4];
            msg(11, id, vec![to("mqtt", class), to("radio", Class::Channel)])
        })
        .collect();
    store.accept(&batch, T0).await.unwrap();
    let rows = store.next("mqtt", T0, 100).await.unwrap();
    let last = rows.iter().map(|r| r.seq).max().unwrap();
    store.retry(rows[0].seq, T0 + 500, "busy").await.unwrap();
    store.reject(rows[1].seq, "refused", T0).await.unwrap();
    let highest = store.next("radio", T0, 100).await.unwrap().pop().unwrap();
    assert_eq!(highest.seq, last + 1, "the newest row of all");
    store.confirm(&[highest.seq]).await.unwrap();

    let before_mqtt = store.next("mqtt", T0 + 500, 100).await.unwrap();
    let before_radio = store.next("radio", T0 + 500, 100).await.unwrap();
    let before_depths = store.depths().await.unwrap();
    store.close().await;

    let store = open(&dir, 100).await;
    assert_eq!(
        store.next("mqtt", T0 + 500, 100).await.unwrap(),
        before_mqtt
    );
    assert_eq!(
        store.next("radio", T0 + 500, 100).await.unwrap(),
        before_radio
    );
    assert_eq!(store.next_due("mqtt", T0).await.unwrap(), Some(T0 + 500));
    assert_eq!(store.depths().await.unwrap(), before_depths);
    assert_eq!(store.dead_letters().await.unwrap(), 1);
    for id in 1..=6 {
        assert!(
            store
                .seen(NodeId::new(11), PacketId::new(id))
                .await
                .unwrap()
        );
    }
    assert_eq!(
        store.accept(&batch[..1], T0).await.unwrap(),
        vec![Accepted::Duplicate]
    );

    // Sequence numbers are never reused, even the confirmed highest one.
    store
        .accept(&[msg(11, 7, vec![to("radio", Class::Direct)])], T0)
        .await
        .unwrap();
    let newest = store.next("radio", T0, 1).await.unwrap().remove(0);
    assert_eq!(newest.id, PacketId::new(7));
    assert!(newest.seq > highest.seq);
    store.close().await;
}

#[tokio::test]
async fn prune_seen_forgets_entries_older_than_the_window() {
    let dir = TempDir::new("prune");
    let store = open(&dir, 100).await;
    store.accept(&[msg(12, 1, vec![])], T0).await.unwrap();
    store
        .accept(&[msg(12, 2, vec![])], T0 + HOUR)
        .await
        .unwrap();

    assert_eq!(
        store.prune_seen(T0).await.unwrap(),
        0,
        "strictly older only"
    );
    assert_eq!(store.prune_seen(T0 + 1).await.unwrap(), 1);
    assert!(!store.seen(NodeId::new(12), PacketId::new(1)).await.unwrap());
    assert!(store.seen(NodeId::new(12), PacketId::new(2)).await.unwrap());
    // Forgotten, so new again.
    assert_eq!(
        store
            .accept(&[msg(12, 1, vec![])], T0 + 2 * HOUR)
            .await
            .unwrap(),
        vec![new_clean()]
    );
    assert_eq!(
        store
            .accept(&[msg(12, 2, vec![])], T0 + 2 * HOUR)
            .await
            .unwrap(),
        vec![Accepted::Duplicate]
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_groups_concurrent_accepts_into_few_commits() {
    let dir = TempDir::new("writer");
    let store = open(&dir, 1_000).await;
    // Even ids are known already: their callers must hear Duplicate, odd ones New.
    let known: Vec<Inbound> = (0..200)
        .step_by(2)
        .map(|id| msg(13, id + 1_000, vec![]))
        .collect();
    store.accept(&known, T0).await.unwrap();
    let commits = store.commits();

    // The linger is long, so batches close only when full: 200 items, 4 batches of 50.
    let writer = Writer::spawn(store.clone(), Duration::from_secs(10), 50);
    let callers: Vec<_> = (0..200u32)
        .map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move {
                let item = msg(13, i + 1_000, vec![to("mqtt", Class::Channel)]);
                (i, writer.accept(item, T0 + Millis::from(i)).await)
            })
        })
        .collect();
    for caller in callers {
        let (i, answer) = caller.await.unwrap();
        let expected = if i % 2 == 0 {
            Accepted::Duplicate
        } else {
            new_clean()
        };
        assert_eq!(answer.unwrap(), expected, "caller {i}");
    }

    assert_eq!(store.commits() - commits, 4);
    let rows = store.next("mqtt", T0 + 1_000, 1_000).await.unwrap();
    assert_eq!(rows.len(), 100);
    assert!(
        rows.iter()
            .all(|r| r.id.get() % 2 == 1 && r.enqueued_at == T0 + Millis::from(r.id.get() - 1_000))
    );
    store.close().await;
}

#[tokio::test]
async fn a_lone_item_is_committed_when_the_linger_runs_out() {
    let dir = TempDir::new("writer-linger");
    let store = open(&dir, 10).await;
    let writer = Writer::spawn(store.clone(), Duration::from_millis(5), 100);
    let answer = writer
        .accept(msg(14, 1, vec![to("mqtt", Class::Direct)]), T0)
        .await;
    assert_eq!(answer.unwrap(), new_clean());
    let answer = writer
        .accept(msg(14, 1, vec![to("mqtt", Class::Direct)]), T0)
        .await;
    assert_eq!(answer.unwrap(), Accepted::Duplicate);
    assert_eq!(store.commits(), 2);
    store.close().await;
}

#[tokio::test]
async fn a_closed_store_answers_writer_callers_with_an_error() {
    let dir = TempDir::new("writer-closed");
    let store = open(&dir, 10).await;
    let writer = Writer::spawn(store.clone(), Duration::ZERO, 100);
    store.close().await;
    let error = writer.accept(msg(15, 1, vec![]), T0).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Query { what: "accept", .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&dir.file().display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn an_unopenable_file_is_an_error_naming_it() {
    let dir = TempDir::new("unopenable");
    let path = dir.0.join("no-such-dir").join("outbox.sqlite");
    let error = Store::open(StoreConfig {
        path: path.clone(),
        max_per_destination: 10,
    })
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("cannot open store {}: ", path.display())),
        "{message}"
    );
}

#[tokio::test]
async fn a_damaged_row_is_an_error_that_names_it_and_can_be_set_aside() {
    let dir = TempDir::new("damaged");
    let store = open(&dir, 10).await;
    store
        .accept(&[msg(16, 1, vec![to("radio", Class::Direct)])], T0)
        .await
        .unwrap();
    let mut conn = raw_connection(&dir).await;
    let bad_rank: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (destination, priority, from_node, packet_id, channel, hop_limit, \
             packet, enqueued_at, expires_at, next_attempt_at) \
         VALUES ('radio', 9, 16, 2, 'LongFast', 3, x'00', ?1, ?2, ?1) RETURNING seq",
    )
    .bind(T0)
    .bind(T0 + HOUR)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let bad_node: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (destination, priority, from_node, packet_id, channel, hop_limit, \
             packet, enqueued_at, expires_at, next_attempt_at) \
         VALUES ('mqtt', 1, 1099511627776, 2, 'LongFast', 3, x'00', ?1, ?2, ?1) RETURNING seq",
    )
    .bind(T0)
    .bind(T0 + HOUR)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    drop(conn);

    // The good row comes first (direct), so a limit of 1 does not reach the bad one.
    assert_eq!(ids(&store.next("radio", T0, 1).await.unwrap()), vec![1]);
    match store.next("radio", T0, 10).await.unwrap_err() {
        StoreError::Corrupt { seq, what, .. } => {
            assert_eq!(seq, Some(bad_rank));
            assert!(what.contains("priority is 9"), "{what}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    match store.next("mqtt", T0, 10).await.unwrap_err() {
        StoreError::Corrupt { seq, what, .. } => {
            assert_eq!(seq, Some(bad_node));
            assert!(what.contains("from_node is 1099511627776"), "{what}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    store.close().await;

    // The file still opens; the row with no class is not counted, and both can be moved aside.
    let store = open(&dir, 10).await;
    assert_eq!(
        store.depths().await.unwrap(),
        vec![
            depth("mqtt", Class::Channel, 1),
            depth("radio", Class::Direct, 1)
        ]
    );
    assert!(store.next("radio", T0, 10).await.is_err());
    store.reject(bad_rank, "unreadable", T0).await.unwrap();
    store.reject(bad_node, "unreadable", T0).await.unwrap();
    assert_eq!(ids(&store.next("radio", T0, 10).await.unwrap()), vec![1]);
    assert!(store.next("mqtt", T0, 10).await.unwrap().is_empty());
    assert_eq!(store.dead_letters().await.unwrap(), 2);
    assert_eq!(
        store.depths().await.unwrap(),
        vec![depth("radio", Class::Direct, 1)]
    );
    store.close().await;
}

/// Set for the child process of `accepted_items_survive_kill_9`: the store file it writes.
const CHILD_ENV: &str = "ARCHIPEL_STORE_KILL_CHILD";
/// Answers the parent needs to have read before it kills the child.
const COMMITTED_BEFORE_KILL: usize = 300;

#[test]
fn accepted_items_survive_kill_9() {
    let dir = TempDir::new("kill9");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill_nine_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.file())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut committed = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("committed ") {
            committed.push(id.parse::<u32>().unwrap());
            if committed.len() == COMMITTED_BEFORE_KILL {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-stream: the child is committing as fast as it can.
    child.wait().unwrap();
    assert_eq!(
        committed.len(),
        COMMITTED_BEFORE_KILL,
        "the child stopped early"
    );

    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = open(&dir, u64::MAX).await;
        let queued: std::collections::HashSet<u32> = store
            .next("mqtt", T0, usize::MAX)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id.get())
            .collect();
        for id in &committed {
            assert!(
                queued.contains(id),
                "item {id} was answered Ok but is not queued"
            );
            assert!(
                store
                    .seen(NodeId::new(17), PacketId::new(*id))
                    .await
                    .unwrap()
            );
        }
        store.close().await;
    });
}

/// The child half of `accepted_items_survive_kill_9`; does nothing in a normal run. Accepts
/// items through a `Writer` from several tasks and prints `committed ID` once each is `Ok`,
/// until the parent kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open(StoreConfig {
        path: PathBuf::from(path),
        max_per_destination: u64::MAX,
    })
    .await
    .unwrap();
    let writer = Writer::spawn(store, Duration::from_millis(1), 64);
    let tasks: Vec<_> = (0..8u32)
        .map(|task| {
            let writer = writer.clone();
            tokio::spawn(async move {
                // Bounded, in case the parent never kills: 8 × 20k items.
                for n in 0..20_000u32 {
                    let id = 1 + task + 8 * n;
                    let item = msg(17, id, vec![to("mqtt", Class::Channel)]);
                    writer.accept(item, T0).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    // The parent stops reading after enough lines; a closed pipe ends us.
                    if writeln!(out, "committed {id}")
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}
