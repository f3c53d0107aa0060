//! Helpers shared by the store tests: a scratch directory, messages, and a connection of the
//! test's own to look at the file behind the store's back.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use archipel_gateway::store::{
    Accepted, Delivery, Depth, Inbound, Millis, NewDelivery, Store, StoreConfig,
};
use mesh_core::{Class, NodeId, PacketId};

/// A directory of its own under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
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

    pub fn file(&self) -> PathBuf {
        self.0.join("outbox.sqlite")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const T0: Millis = 1_700_000_000_000;
pub const HOUR: Millis = 3_600_000;

pub async fn open(dir: &TempDir, cap: u64) -> Store {
    Store::open(StoreConfig::new(dir.file(), cap))
        .await
        .unwrap()
}

/// A delivery to `destination` on the message's own channel.
pub fn to(destination: &str) -> NewDelivery {
    NewDelivery {
        destination: destination.to_owned(),
        to_channel: None,
        hops: 3,
    }
}

/// A message heard on `north`, channel `LongFast`, expiring an hour after T0.
pub fn msg(from: u32, id: u32, class: Class, deliveries: Vec<NewDelivery>) -> Inbound {
    Inbound {
        from: NodeId::new(from),
        id: PacketId::new(id),
        class,
        source: "north".to_owned(),
        channel: "LongFast".to_owned(),
        packet: vec![0xA5; 60],
        origin: None,
        expires_at: T0 + HOUR,
        deliveries,
    }
}

/// A message to each of `destinations`.
pub fn msg_to(from: u32, id: u32, class: Class, destinations: &[&str]) -> Inbound {
    msg(
        from,
        id,
        class,
        destinations.iter().map(|d| to(d)).collect(),
    )
}

pub fn new_clean() -> Accepted {
    Accepted::New {
        refused: vec![],
        evicted: vec![],
    }
}

pub fn ids(rows: &[Delivery]) -> Vec<u32> {
    rows.iter().map(|r| r.id.get()).collect()
}

pub fn depth(destination: &str, class: Class, count: u64) -> Depth {
    Depth {
        destination: destination.to_owned(),
        class,
        count,
    }
}

/// A connection of the test's own to the store file, behind the store's back.
pub async fn raw_connection(dir: &TempDir) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.file());
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap()
}

/// Rows of a table (`message`, `delivery`, ...), counted in the file itself.
pub async fn rows_in(dir: &TempDir, table: &str) -> i64 {
    let mut conn = raw_connection(dir).await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Deliveries of one destination, counted in the file itself (not the store's depths).
pub async fn deliveries_in_table(dir: &TempDir, destination: &str) -> i64 {
    let mut conn = raw_connection(dir).await;
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM delivery d JOIN endpoint e ON e.id = d.destination \
         WHERE e.name = ?1",
    )
    .bind(destination)
    .fetch_one(&mut conn)
    .await
    .unwrap()
}
