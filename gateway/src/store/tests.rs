//! Inside the store: what the writer connection is set to for each kind of write, read back
//! from SQLite itself on that connection.

use std::path::PathBuf;

use super::*;

const T0: Millis = 1_700_000_000_000;

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("archipel-store-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `PRAGMA synchronous` of the writer connection: the mode its last transaction ran in
/// (the store sets it only right before `BEGIN`). 2 is FULL, 1 NORMAL.
async fn synchronous(store: &Store) -> i64 {
    let mut writing = store.shared.writing.lock().await;
    sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(writing.conn.as_mut().unwrap())
        .await
        .unwrap()
}

fn message(id: u32) -> Inbound {
    Inbound {
        from: NodeId::new(1),
        id: PacketId::new(id),
        class: Class::Channel,
        source: "north".to_owned(),
        channel: "LongFast".to_owned(),
        packet: vec![7; 40],
        origin: None,
        expires_at: T0 + 1000,
        deliveries: vec![NewDelivery {
            destination: "south".to_owned(),
            to_channel: None,
            hops: 3,
        }],
    }
}

#[tokio::test]
async fn accepts_commit_with_full_and_everything_else_with_normal() {
    const FULL: i64 = 2;
    const NORMAL: i64 = 1;
    let dir = TempDir::new("synchronous");
    let store = Store::open(StoreConfig::new(dir.0.join("s.sqlite"), 10))
        .await
        .unwrap();
    store
        .accept(&[message(1), message(2), message(3)], T0)
        .await
        .unwrap();
    assert_eq!(synchronous(&store).await, FULL);
    let rows = store.next("south", T0, 0, 10).await.unwrap();

    store
        .confirm(
            &[Sent {
                key: rows[0].key,
                airtime: None,
            }],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(synchronous(&store).await, NORMAL);
    store.accept(&[message(4)], T0).await.unwrap();
    assert_eq!(
        synchronous(&store).await,
        FULL,
        "switched back for an accept"
    );
    store.fail(rows[1].key, "no ack").await.unwrap();
    assert_eq!(synchronous(&store).await, NORMAL);

    let mut kinds = 0;
    for step in 0..4 {
        store.accept(&[message(10 + step)], T0).await.unwrap();
        assert_eq!(synchronous(&store).await, FULL);
        match step {
            0 => store.note(rows[1].key, "link down").await.unwrap(),
            1 => store.reject(rows[1].key, "refused", T0).await.unwrap(),
            2 => drop(store.expire(T0 + 2000).await.unwrap()),
            _ => drop(
                store
                    .rotate_seen(T0, Duration::from_secs(60))
                    .await
                    .unwrap(),
            ),
        }
        assert_eq!(synchronous(&store).await, NORMAL, "step {step}");
        kinds += 1;
    }
    assert_eq!(kinds, 4);
    store.close().await;
}

#[tokio::test]
async fn a_new_file_has_small_pages_and_no_index_beyond_the_primary_keys() {
    let dir = TempDir::new("pages");
    let store = Store::open(StoreConfig::new(dir.0.join("s.sqlite"), 10))
        .await
        .unwrap();
    let mut writing = store.shared.writing.lock().await;
    let conn = writing.conn.as_mut().unwrap();
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(page_size, 1024);
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name NOT LIKE '_sqlx%' \
         ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    // Only UNIQUE(endpoint.name) and UNIQUE(virtual_node.node), on tables of a handful of
    // rows written once each.
    assert_eq!(
        indexes,
        [
            "sqlite_autoindex_endpoint_1",
            "sqlite_autoindex_virtual_node_2"
        ]
    );
    drop(writing);
    store.close().await;
}
