//! What the store keeps across a close and reopen and across kill -9, and the group-commit
//! writer. Real SQLite files; nothing sleeps. The kill -9 test runs this same test binary as a
//! child process (see `kill_nine_child`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use archipel_gateway::store::{
    Accepted, Inbound, Millis, Sent, Store, StoreConfig, StoreError, Writer,
};
use common::*;
use mesh_core::{Class, NodeId, PacketId};

#[tokio::test]
async fn everything_survives_closing_and_reopening_the_file() {
    let dir = TempDir::new("reopen");
    let store = open(&dir, 100).await;
    let batch: Vec<Inbound> = (1..=6)
        .map(|id| {
            msg_to(
                11,
                id,
                Class::ALL[(id as usize + 1) % 3 + 1],
                &["mqtt", "radio"],
            )
        })
        .collect();
    store.accept(&batch, T0).await.unwrap();
    let rows = store.next("mqtt", T0, 0, 100).await.unwrap();
    store.fail(rows[0].key, "busy").await.unwrap();
    store.reject(rows[1].key, "refused", T0).await.unwrap();
    // The newest message of all (6) is delivered everywhere: its row goes, and its id is not
    // handed out again while the store is open (a late key of it names nothing).
    let newest_id = message_id_of(&dir, 6).await.unwrap();
    let sixes: Vec<Sent> = store
        .next("radio", T0, 0, 100)
        .await
        .unwrap()
        .iter()
        .chain(rows.iter())
        .filter(|d| d.id == PacketId::new(6))
        .map(|d| Sent {
            key: d.key,
            airtime: None,
        })
        .collect();
    assert_eq!(sixes.len(), 2);
    store.confirm(&sixes, T0).await.unwrap();
    assert_eq!(message_id_of(&dir, 6).await, None);
    store
        .accept(&[msg_to(11, 7, Class::Direct, &["mqtt", "radio"])], T0)
        .await
        .unwrap();
    assert!(message_id_of(&dir, 7).await.unwrap() > newest_id);
    store.confirm(&sixes, T0).await.unwrap();
    assert_eq!(
        ids(&store.next("radio", T0, 0, 1).await.unwrap()),
        vec![7],
        "a late confirm of 6 did not hit 7"
    );

    let before_mqtt = store.next("mqtt", T0, 0, 100).await.unwrap();
    let before_radio = store.next("radio", T0, 0, 100).await.unwrap();
    let before_depths = store.depths().await.unwrap();
    let before_queues = store.queues().await.unwrap();
    store.close().await;

    let store = open(&dir, 100).await;
    assert_eq!(store.next("mqtt", T0, 0, 100).await.unwrap(), before_mqtt);
    assert_eq!(store.next("radio", T0, 0, 100).await.unwrap(), before_radio);
    let failed = before_mqtt.iter().find(|d| d.id == PacketId::new(2));
    assert_eq!(failed.unwrap().attempts, 1);
    assert_eq!(store.depths().await.unwrap(), before_depths);
    assert_eq!(store.queues().await.unwrap(), before_queues);
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

    store.close().await;
}

/// The `message.id` of packet `id`, read in the file.
async fn message_id_of(dir: &TempDir, id: u32) -> Option<i64> {
    let mut conn = raw_connection(dir).await;
    sqlx::query_scalar("SELECT id FROM message WHERE packet_id = ?1")
        .bind(i64::from(id))
        .fetch_optional(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_writer_groups_what_is_waiting_into_one_commit() {
    let dir = TempDir::new("writer");
    let store = open(&dir, 1_000).await;
    // Even ids are known already: their callers must hear Duplicate, odd ones New.
    let known: Vec<Inbound> = (0..200)
        .step_by(2)
        .map(|id| msg(13, id + 1_000, Class::Channel, vec![]))
        .collect();
    store.accept(&known, T0).await.unwrap();
    let commits = store.commits();

    // On this single-threaded runtime the writer task cannot run before we await: all 200
    // are waiting when it does, and it takes them in batches of (at most) 100.
    let writer = Writer::spawn(store.clone(), 100);
    let pending: Vec<_> = (0..200u32)
        .map(|i| {
            let item = msg_to(13, i + 1_000, Class::Channel, &["mqtt"]);
            (i, writer.submit(item, T0 + Millis::from(i)).unwrap())
        })
        .collect();
    for (i, answer) in pending {
        let expected = if i % 2 == 0 {
            Accepted::Duplicate
        } else {
            new_clean()
        };
        assert_eq!(answer.await.unwrap(), expected, "caller {i}");
    }

    assert_eq!(store.commits() - commits, 2);
    let rows = store.next("mqtt", T0 + 1_000, 0, 1_000).await.unwrap();
    assert_eq!(rows.len(), 100);
    assert!(
        rows.iter()
            .all(|r| r.id.get() % 2 == 1 && r.enqueued_at == T0 + Millis::from(r.id.get() - 1_000))
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_through_the_writer_share_commits() {
    let dir = TempDir::new("writer-concurrent");
    let store = open(&dir, 10_000).await;
    let writer = Writer::spawn(store.clone(), 64);
    let commits = store.commits();
    let callers: Vec<_> = (0..400u32)
        .map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move {
                let item = msg_to(19, i + 1, Class::Channel, &["mqtt", "radio"]);
                writer.accept(item, T0).await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), new_clean());
    }
    let commits = store.commits() - commits;
    assert!(commits < 400, "{commits} commits for 400 accepts");
    assert_eq!(store.next("radio", T0, 0, 1_000).await.unwrap().len(), 400);
    store.close().await;
}

#[tokio::test]
async fn a_lone_item_is_committed_on_its_own_without_waiting_for_company() {
    let dir = TempDir::new("writer-lone");
    let store = open(&dir, 10).await;
    let writer = Writer::spawn(store.clone(), 100);
    let answer = writer
        .accept(msg_to(14, 1, Class::Direct, &["mqtt"]), T0)
        .await;
    assert_eq!(answer.unwrap(), new_clean());
    assert_eq!(store.commits(), 1);
    let answer = writer
        .accept(msg_to(14, 1, Class::Direct, &["mqtt"]), T0)
        .await;
    assert_eq!(answer.unwrap(), Accepted::Duplicate);
    assert_eq!(store.commits(), 2);
    store.close().await;
}

#[tokio::test]
async fn submit_fails_fast_when_the_writer_queue_is_full() {
    let dir = TempDir::new("writer-busy");
    let store = open(&dir, 10).await;
    // A queue of two; the task does not run until we await.
    let writer = Writer::spawn(store.clone(), 1);
    let first = writer
        .submit(msg_to(21, 1, Class::Direct, &["mqtt"]), T0)
        .unwrap();
    let second = writer
        .submit(msg_to(21, 2, Class::Direct, &["mqtt"]), T0)
        .unwrap();
    let error = writer
        .submit(msg_to(21, 3, Class::Direct, &["mqtt"]), T0)
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Busy { capacity: 2, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&dir.file().display().to_string())
    );
    assert_eq!(first.await.unwrap(), new_clean());
    assert_eq!(second.await.unwrap(), new_clean());
    // Room again.
    let third = writer
        .submit(msg_to(21, 3, Class::Direct, &["mqtt"]), T0)
        .unwrap();
    assert_eq!(third.await.unwrap(), new_clean());
    store.close().await;
}

#[tokio::test]
async fn a_closed_store_answers_writer_callers_with_an_error() {
    let dir = TempDir::new("writer-closed");
    let store = open(&dir, 10).await;
    let writer = Writer::spawn(store.clone(), 100);
    store.clone().close().await;
    let error = writer
        .accept(msg(15, 1, Class::Channel, vec![]), T0)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Closed { what: "accept", .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&dir.file().display().to_string()),
        "{error}"
    );
    let error = store.confirm(&[], T0).await;
    assert!(error.is_ok(), "nothing to confirm, nothing written");
    assert!(store.expire(T0).await.is_err());
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
    let mut confirmed = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("committed ") {
            committed.push(id.parse::<u32>().unwrap());
            if committed.len() == COMMITTED_BEFORE_KILL {
                break;
            }
        } else if let Some(id) = line.strip_prefix("confirmed ") {
            confirmed.push(id.parse::<u32>().unwrap());
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
        let queued = |rows: Vec<archipel_gateway::store::Delivery>| {
            rows.iter()
                .map(|r| r.id.get())
                .collect::<std::collections::HashSet<u32>>()
        };
        let mqtt = queued(store.next("mqtt", T0, 0, usize::MAX).await.unwrap());
        let radio = queued(store.next("radio", T0, 0, usize::MAX).await.unwrap());
        for id in &committed {
            assert!(
                mqtt.contains(id),
                "item {id} was answered Ok but is not queued"
            );
            assert!(
                store
                    .seen(NodeId::new(17), PacketId::new(*id))
                    .await
                    .unwrap()
            );
        }
        // Confirms commit without an fsync, but a kill -9 does not lose them either.
        for id in &confirmed {
            assert!(!radio.contains(id), "confirmed {id} is queued again");
        }
        store.close().await;
    });
}

/// The child half of `accepted_items_survive_kill_9`; does nothing in a normal run. Accepts
/// items through a `Writer` from several tasks and prints `committed ID` once each is `Ok`;
/// confirms radio deliveries as they come and prints `confirmed ID`; until the parent kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open(StoreConfig::new(PathBuf::from(path), u64::MAX))
        .await
        .unwrap();
    let writer = Writer::spawn(store.clone(), 64);
    let drain = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                let rows = store.next("radio", T0, 0, 16).await.unwrap();
                let sent: Vec<Sent> = rows
                    .iter()
                    .map(|r| Sent {
                        key: r.key,
                        airtime: Some(std::time::Duration::from_millis(50)),
                    })
                    .collect();
                store.confirm(&sent, T0).await.unwrap();
                let printed = {
                    let mut out = std::io::stdout().lock();
                    rows.iter()
                        .try_for_each(|r| writeln!(out, "confirmed {}", r.id.get()))
                        .and_then(|()| out.flush())
                };
                if printed.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let tasks: Vec<_> = (0..8u32)
        .map(|task| {
            let writer = writer.clone();
            tokio::spawn(async move {
                // Bounded, in case the parent never kills: 8 × 20k items.
                for n in 0..20_000u32 {
                    let id = 1 + task + 8 * n;
                    let item = msg_to(17, id, Class::Channel, &["mqtt", "radio"]);
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
    drain.abort();
}

#[tokio::test]
async fn a_failed_write_leaves_nothing_half_done_and_the_next_one_starts_afresh() {
    let dir = TempDir::new("failed-write");
    let store = open(&dir, 100).await;
    store
        .accept(
            &[
                msg_to(22, 1, Class::Channel, &["radio", "mqtt"]),
                msg_to(22, 2, Class::Channel, &["radio"]),
            ],
            T0,
        )
        .await
        .unwrap();
    let rows = store.next("radio", T0, 0, 10).await.unwrap();
    // Behind the store's back, the airtime table goes away: a confirm with airtime fails
    // after its delivery was already deleted within the transaction.
    let mut conn = raw_connection(&dir).await;
    sqlx::query("ALTER TABLE airtime RENAME TO airtime_away")
        .execute(&mut conn)
        .await
        .unwrap();
    let on_air = |key| Sent {
        key,
        airtime: Some(std::time::Duration::from_millis(300)),
    };
    let error = store.confirm(&[on_air(rows[0].key)], T0).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Query {
                what: "confirm",
                ..
            }
        ),
        "{error}"
    );
    // The failed transaction let go of the file at once: another writer gets in.
    sqlx::query("ALTER TABLE airtime_away RENAME TO airtime")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);

    // Nothing of it happened, and the store carries on.
    assert_eq!(
        ids(&store.next("radio", T0, 0, 10).await.unwrap()),
        vec![1, 2]
    );
    assert_eq!(deliveries_in_table(&dir, "radio").await, 2);
    assert_eq!(
        store.depths().await.unwrap(),
        vec![
            depth("mqtt", Class::Channel, 1),
            depth("radio", Class::Channel, 2)
        ]
    );
    store.confirm(&[on_air(rows[0].key)], T0).await.unwrap();
    assert_eq!(
        store
            .accept(&[msg_to(22, 3, Class::Channel, &["radio"])], T0)
            .await
            .unwrap(),
        vec![new_clean()]
    );
    assert_eq!(
        ids(&store.next("radio", T0, 0, 10).await.unwrap()),
        vec![2, 3]
    );
    assert_eq!(store.airtime_since("radio", T0).await.unwrap().len(), 1);
    store.close().await;
}
