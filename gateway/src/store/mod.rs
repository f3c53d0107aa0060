//! The durable outbox and seen-set: store-and-forward on one SQLite file.
//!
//! Every message the gateway accepts from an adapter is committed here before anything else
//! happens: one [`seen`](Store::seen) entry for its (from, id) and one outbox row per
//! destination, in one transaction ([`Store::accept`], usually through the group-commit
//! [`Writer`]). A destination's worker drains its own queue with [`Store::next`], and a row is
//! deleted only when the far side confirmed it ([`Store::confirm`]); otherwise it is put back
//! for later ([`Store::retry`]), set aside for good ([`Store::reject`], the dead-letter table),
//! or dropped when its time is up ([`Store::expire`]).
//!
//! # What survives a crash
//!
//! The file is in WAL mode with `synchronous = FULL`: every commit appends to the WAL and
//! fsyncs it before the commit returns.
//! - **kill -9, panic, OOM kill:** nothing that [`Store::accept`] (or [`Writer::accept`])
//!   returned `Ok` for is lost, nor any confirm, retry or reject that returned. The WAL is in
//!   the OS page cache the moment the commit returns, and the next open replays it.
//! - **Power cut:** the same, because FULL syncs the WAL on every commit: a committed
//!   transaction is on the medium. What is lost is what was not committed yet (items still
//!   waiting in the [`Writer`]'s batch, whose callers had no answer). This holds as far as the
//!   medium honours a flush; cheap SD cards are known to acknowledge writes they still cache.
//! - Delivery is at least once: a destination may have received a row whose confirm was not
//!   committed when the gateway died, and gets it again after the restart.
//!
//! # Concurrency
//!
//! One writer connection does every write, in `BEGIN IMMEDIATE` transactions serialised by a
//! mutex that also guards the in-memory queue depths, so the size cap is checked without a
//! `COUNT(*)` per insert. Reads (`next`, `next_due*`, `seen`, `dead_letters`) go through a small
//! pool of read-only connections that WAL lets run beside a commit. [`Store`] is a cheap clone.
//!
//! # The size cap
//!
//! Each destination holds at most [`StoreConfig::max_per_destination`] rows. When a delivery
//! meets a full queue, the store evicts the oldest row of the least urgent class that is not
//! more urgent than the incoming one; if only more urgent rows are queued, the incoming delivery
//! is refused. Both are reported in [`Accepted::New`].
//!
//! # Damaged rows
//!
//! A row holding a value the store never writes (say a class rank of 9) makes [`Store::next`]
//! fail with [`StoreError::Corrupt`] carrying the row's `seq`; a worker can [`Store::reject`]
//! that seq to move the row aside. Opening a file with such rows succeeds (they are logged and
//! left out of the queue depths), so one bad row does not keep the gateway from starting.

mod error;
mod writer;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mesh_core::{Class, NodeId, PacketId};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, SqlSafeStr, Sqlite, SqliteConnection, Transaction};

pub use error::StoreError;
pub use writer::Writer;

/// Unix time in milliseconds. The store never reads a clock: callers pass `now`.
pub type Millis = i64;

/// The schema, oldest first: (version, description, SQL). Embedded so the binary carries its
/// schema; applied by sqlx's [`Migrator`], which records each version and its checksum.
const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "store", include_str!("../../migrations/0001_store.sql"))];

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections beside the writer: enough for a few workers polling at once.
const READERS: u32 = 2;

/// The most rows one multi-row INSERT carries. Statements are cut into power-of-two sizes up
/// to this, so the statement cache holds a handful of shapes instead of one per batch size.
const MAX_ROWS_PER_STATEMENT: usize = 512;

/// Number of priority classes, the length of a queue-depth array.
const CLASSES: usize = Class::ALL.len();

/// Where the store lives and how big a queue may grow.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The SQLite file; created if missing (its directory must exist). SQLite puts `-wal` and
    /// `-shm` files beside it.
    pub path: PathBuf,
    /// The most rows one destination's queue may hold (see the module doc for what happens
    /// when it is full).
    pub max_per_destination: u64,
}

/// A message to accept: its mesh identity and one delivery per destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The originating node, half of the deduplication key.
    pub from: NodeId,
    /// The packet id, the other half. Zero is never deduplicated nor recorded.
    pub id: PacketId,
    /// One row to queue per destination.
    pub deliveries: Vec<NewDelivery>,
}

/// One destination's copy of an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The destination's name, as its worker asks for it in [`Store::next`].
    pub destination: String,
    /// Priority class: drain order and eviction order.
    pub class: Class,
    /// Channel name on the destination.
    pub channel: String,
    /// Hop limit to send with.
    pub hop_limit: u8,
    /// The encoded packet, opaque to the store.
    pub packet: Vec<u8>,
    /// When the row stops being worth sending; [`Store::expire`] deletes it then.
    pub expires_at: Millis,
}

/// What became of one [`Inbound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// First time seen: its deliveries were queued, except as listed.
    New {
        /// Destinations whose full queue held only more urgent rows and refused this one.
        refused: Vec<String>,
        /// Rows evicted to make room: their destination and class.
        evicted: Vec<(String, Class)>,
    },
    /// Already seen (in an earlier call, or earlier in the same batch): nothing was queued.
    Duplicate,
}

/// A queued row, as a worker gets it from [`Store::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The row's key, for confirm, retry and reject. Increases with arrival, never reused.
    pub seq: i64,
    /// The destination it is queued for.
    pub destination: String,
    /// Originating node.
    pub from: NodeId,
    /// Packet id.
    pub id: PacketId,
    /// Priority class.
    pub class: Class,
    /// Channel name on the destination.
    pub channel: String,
    /// Hop limit to send with.
    pub hop_limit: u8,
    /// The encoded packet.
    pub packet: Vec<u8>,
    /// Failed attempts so far (each [`Store::retry`] adds one).
    pub attempts: u32,
    /// When it was accepted.
    pub enqueued_at: Millis,
    /// When it expires.
    pub expires_at: Millis,
}

/// Rows [`Store::expire`] dropped for one destination and class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The destination.
    pub destination: String,
    /// The class.
    pub class: Class,
    /// How many rows.
    pub count: u64,
}

/// Queued rows of one destination and class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depth {
    /// The destination.
    pub destination: String,
    /// The class.
    pub class: Class,
    /// How many rows.
    pub count: u64,
}

/// The outbox and seen-set on one SQLite file. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct Store {
    /// Everything, behind one `Arc` so a clone is a reference count.
    shared: Arc<Shared>,
}

/// The state all clones of a [`Store`] share.
struct Shared {
    /// The file, for error messages and logs.
    path: PathBuf,
    /// The single write connection. SQLite allows one writer at a time anyway; owning it
    /// means no write ever waits on SQLite's busy handler, only on [`Shared::queues`].
    writer: SqlitePool,
    /// Read-only connections (`query_only`) for `next`, `next_due`, `seen` and
    /// `dead_letters`, so workers polling their queues do not wait behind a commit's fsync.
    readers: SqlitePool,
    /// Queue depths per destination and class. Held for the whole of every write
    /// transaction, which makes it the writers' mutex too.
    queues: tokio::sync::Mutex<Queues>,
    /// The size cap per destination.
    max_per_destination: u64,
    /// Write transactions committed since open: shows group commit at work (tests, metrics).
    commits: AtomicU64,
}

/// In-memory queue depths, loaded at open and kept in step with every write transaction.
#[derive(Default)]
struct Queues {
    /// Rows per destination, indexed by class rank.
    depth: HashMap<String, [u64; CLASSES]>,
    /// True while a write transaction is under way, and after one that failed or was
    /// cancelled (its future dropped): `depth` may then disagree with the table, and the next
    /// write (or [`Store::depths`]) reloads it from the table first.
    stale: bool,
    /// Set when a count was found out of step with the table (a delete removed rows that
    /// were not counted, an eviction found none to evict): reload after this commit.
    resync: bool,
}

impl Queues {
    /// Counts `n` rows of `rank` gone from `destination`. Ranks the store does not know were
    /// never counted; a count that would go below zero means a drift, so reload.
    fn remove(&mut self, destination: &str, rank: i64, n: u64) {
        let Some(rank) = class_of(rank) else {
            return;
        };
        let rank = usize::from(rank.rank());
        match self.depth.get_mut(destination) {
            Some(depth) if depth[rank] >= n => depth[rank] -= n,
            Some(depth) => {
                depth[rank] = 0;
                self.resync = true;
            }
            None => self.resync = true,
        }
    }
}

/// An outbox row waiting in memory for the next multi-row INSERT of a batch.
struct PendingRow<'a> {
    /// The delivery to queue.
    delivery: &'a NewDelivery,
    /// Its message's sender.
    from: NodeId,
    /// Its message's id.
    id: PacketId,
    /// When its message was accepted.
    now: Millis,
}

impl Store {
    /// Opens (creating if missing) the store file: WAL, `synchronous = FULL`, a busy timeout,
    /// the embedded migrations, one writer connection, and the queue depths loaded.
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let StoreConfig {
            path,
            max_per_destination,
        } = config;
        let open_error = |cause| StoreError::Open {
            path: path.clone(),
            cause: Arc::new(cause),
        };

        let base = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(BUSY_TIMEOUT);
        let writer = pool_options(1)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full),
            )
            .await
            .map_err(open_error)?;
        migrator()
            .run(&writer)
            .await
            .map_err(|cause| StoreError::Migrate {
                path: path.clone(),
                cause: Arc::new(cause),
            })?;
        let readers = pool_options(READERS)
            .connect_with(base.pragma("query_only", "ON"))
            .await
            .map_err(open_error)?;

        let mut conn = writer.acquire().await.map_err(open_error)?;
        let depth = load_depths(&mut conn, &path).await?;
        drop(conn);
        let queued: u64 = depth.values().flatten().sum();
        tracing::info!(path = %path.display(), queued, "store opened");

        Ok(Store {
            shared: Arc::new(Shared {
                path,
                writer,
                readers,
                queues: tokio::sync::Mutex::new(Queues {
                    depth,
                    stale: false,
                    resync: false,
                }),
                max_per_destination,
                commits: AtomicU64::new(0),
            }),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Write transactions committed since open (accepts, confirms, retries, ...). Group
    /// commit shows as far fewer of these than accepted items.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Accepts a batch in one transaction, all at time `now`. For each item: record (from, id)
    /// in the seen-set (id 0 is never deduplicated nor recorded); if it was new, queue its
    /// deliveries under the size cap and answer [`Accepted::New`], else
    /// [`Accepted::Duplicate`]. A repeat within the batch is a duplicate too. The answers are
    /// in the order of `batch`; when this returns `Ok`, all of it is on disk.
    pub async fn accept(
        &self,
        batch: &[Inbound],
        now: Millis,
    ) -> Result<Vec<Accepted>, StoreError> {
        let items: Vec<(&Inbound, Millis)> = batch.iter().map(|item| (item, now)).collect();
        self.accept_timed(&items).await
    }

    /// [`Store::accept`] with a time per item (the [`Writer`] batches items submitted at
    /// different times).
    pub(crate) async fn accept_timed(
        &self,
        items: &[(&Inbound, Millis)],
    ) -> Result<Vec<Accepted>, StoreError> {
        const WHAT: &str = "accept";
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut queues = self.shared.queues.lock().await;
        let mut tx = self.begin(&mut queues, WHAT).await?;

        // Which items are new: first within the batch, then against the table.
        let mut new = vec![false; items.len()];
        let mut in_batch = HashSet::with_capacity(items.len());
        let mut to_record = Vec::with_capacity(items.len());
        for (i, &(item, now)) in items.iter().enumerate() {
            if item.id.is_unset() {
                new[i] = true;
            } else if in_batch.insert((item.from, item.id)) {
                new[i] = true;
                to_record.push((item.from, item.id, now));
            }
        }
        let recorded = self.record_seen(&mut tx, &to_record).await?;
        for (i, &(item, _)) in items.iter().enumerate() {
            if new[i] && !item.id.is_unset() && !recorded.contains(&(item.from, item.id)) {
                new[i] = false;
            }
        }

        // Their deliveries, under the cap.
        let cap = self.shared.max_per_destination;
        let mut answers = Vec::with_capacity(items.len());
        let mut pending: Vec<PendingRow<'_>> = Vec::new();
        for (i, &(item, now)) in items.iter().enumerate() {
            if !new[i] {
                answers.push(Accepted::Duplicate);
                continue;
            }
            let mut refused = Vec::new();
            let mut evicted = Vec::new();
            'deliveries: for delivery in &item.deliveries {
                let rank = usize::from(delivery.class.rank());
                let Queues { depth, resync, .. } = &mut *queues;
                let depth = depth.entry(delivery.destination.clone()).or_default();
                while depth.iter().sum::<u64>() >= cap {
                    // The least urgent class at or below the incoming one's urgency.
                    let Some(victim) = (rank..CLASSES).rev().find(|&r| depth[r] > 0) else {
                        refused.push(delivery.destination.clone());
                        continue 'deliveries;
                    };
                    // The victim may be a row of this very batch: put those in the table first.
                    self.flush(&mut tx, &mut pending).await?;
                    if self.evict(&mut tx, &delivery.destination, victim).await? {
                        depth[victim] -= 1;
                        evicted.push((delivery.destination.clone(), Class::ALL[victim]));
                        break;
                    }
                    // The count was wrong: correct it, look again, and reload after commit.
                    tracing::warn!(
                        path = %self.shared.path.display(), destination = %delivery.destination,
                        class = %Class::ALL[victim], counted = depth[victim],
                        "queue depth out of step with the table"
                    );
                    depth[victim] = 0;
                    *resync = true;
                }
                depth[rank] += 1;
                pending.push(PendingRow {
                    delivery,
                    from: item.from,
                    id: item.id,
                    now,
                });
            }
            answers.push(Accepted::New { refused, evicted });
        }
        self.flush(&mut tx, &mut pending).await?;
        self.commit(tx, &mut queues, WHAT).await?;
        Ok(answers)
    }

    /// Due rows of one destination (`next_attempt_at <= now`, not expired at `now`), most
    /// urgent class first, then oldest first, at most `limit`. Rows stay queued until
    /// confirmed, retried, rejected or expired: calling this twice returns them twice.
    pub async fn next(
        &self,
        destination: &str,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        const WHAT: &str = "next";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT seq, destination, from_node, packet_id, priority, channel, hop_limit, \
                    packet, attempts, enqueued_at, expires_at \
             FROM outbox INDEXED BY outbox_next \
             WHERE destination = ?1 AND next_attempt_at <= ?2 AND expires_at > ?2 \
             ORDER BY priority, seq \
             LIMIT ?3",
        )
        .bind(destination)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.shared.readers)
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        rows.iter().map(|row| self.delivery(row)).collect()
    }

    /// When the earliest not-yet-due row of this destination becomes due: the smallest
    /// `next_attempt_at` after `now` among rows that will not have expired by then, or `None`
    /// if nothing is waiting. Rows due already are [`Store::next`]'s, so after an empty `next`
    /// the answer is always in the future and a worker never wakes for nothing (rows that came
    /// due and expired before [`Store::expire`] swept them are left out too).
    pub async fn next_due(
        &self,
        destination: &str,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        sqlx::query_scalar(
            "SELECT next_attempt_at FROM outbox INDEXED BY outbox_due \
             WHERE destination = ?1 AND next_attempt_at > ?2 AND expires_at > next_attempt_at \
             ORDER BY next_attempt_at LIMIT 1",
        )
        .bind(destination)
        .bind(now)
        .fetch_optional(&self.shared.readers)
        .await
        .map_err(|e| self.query_error("next_due", e))
    }

    /// Deletes delivered rows, all in one statement and transaction. Seqs no longer queued
    /// (expired, evicted, confirmed twice) are ignored.
    pub async fn confirm(&self, seqs: &[i64]) -> Result<(), StoreError> {
        const WHAT: &str = "confirm";
        if seqs.is_empty() {
            return Ok(());
        }
        let list = seq_list(seqs);
        let mut queues = self.shared.queues.lock().await;
        let mut tx = self.begin(&mut queues, WHAT).await?;
        let rows = sqlx::query(
            "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?1)) \
             RETURNING destination, priority",
        )
        .bind(list)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        for row in &rows {
            let (destination, rank) = self.destination_rank(row)?;
            queues.remove(&destination, rank, 1);
        }
        self.commit(tx, &mut queues, WHAT).await
    }

    /// Puts a row back for later: `attempts += 1`, the next attempt at `next_attempt_at`, and
    /// `reason` kept as its last error. A seq no longer queued is ignored.
    pub async fn retry(
        &self,
        seq: i64,
        next_attempt_at: Millis,
        reason: &str,
    ) -> Result<(), StoreError> {
        const WHAT: &str = "retry";
        let mut queues = self.shared.queues.lock().await;
        let mut tx = self.begin(&mut queues, WHAT).await?;
        let done = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 \
             WHERE seq = ?1",
        )
        .bind(seq)
        .bind(next_attempt_at)
        .bind(reason)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        if done.rows_affected() == 0 {
            tracing::debug!(seq, "retry of a row no longer queued");
        }
        self.commit(tx, &mut queues, WHAT).await
    }

    /// Moves a row the destination refused for good to the dead-letter table, with `reason`
    /// and the time. A seq no longer queued is ignored.
    pub async fn reject(&self, seq: i64, reason: &str, now: Millis) -> Result<(), StoreError> {
        const WHAT: &str = "reject";
        let mut queues = self.shared.queues.lock().await;
        let mut tx = self.begin(&mut queues, WHAT).await?;
        sqlx::query(
            "INSERT INTO dead_letter (seq, destination, priority, from_node, packet_id, channel, \
                 hop_limit, packet, enqueued_at, expires_at, attempts, last_error, rejected_at, \
                 reason) \
             SELECT seq, destination, priority, from_node, packet_id, channel, hop_limit, \
                 packet, enqueued_at, expires_at, attempts, last_error, ?2, ?3 \
             FROM outbox WHERE seq = ?1",
        )
        .bind(seq)
        .bind(now)
        .bind(reason)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        let row = sqlx::query("DELETE FROM outbox WHERE seq = ?1 RETURNING destination, priority")
            .bind(seq)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.query_error(WHAT, e))?;
        match row {
            Some(row) => {
                let (destination, rank) = self.destination_rank(&row)?;
                queues.remove(&destination, rank, 1);
            }
            None => tracing::debug!(seq, "reject of a row no longer queued"),
        }
        self.commit(tx, &mut queues, WHAT).await
    }

    /// Deletes the rows whose `expires_at` is at or before `now`, and says how many went per
    /// destination and class.
    pub async fn expire(&self, now: Millis) -> Result<Vec<Expired>, StoreError> {
        const WHAT: &str = "expire";
        let mut queues = self.shared.queues.lock().await;
        let mut tx = self.begin(&mut queues, WHAT).await?;
        let groups = sqlx::query(
            "SELECT destination, priority, COUNT(*) FROM outbox INDEXED BY outbox_expiry \
             WHERE expires_at <= ?1 \
             GROUP BY destination, priority ORDER BY destination, priority",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        let mut expired = Vec::with_capacity(groups.len());
        if !groups.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE expires_at <= ?1")
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.query_error(WHAT, e))?;
        }
        for row in &groups {
            let (destination, rank) = self.destination_rank(row)?;
            let count = self.count(row, 2)?;
            queues.remove(&destination, rank, count);
            match class_of(rank) {
                Some(class) => expired.push(Expired {
                    destination,
                    class,
                    count,
                }),
                None => tracing::warn!(
                    path = %self.shared.path.display(), %destination, rank, count,
                    "expired rows with an unknown class rank"
                ),
            }
        }
        self.commit(tx, &mut queues, WHAT).await?;
        Ok(expired)
    }

    /// Forgets seen-set entries first seen before `older_than`; returns how many.
    pub async fn prune_seen(&self, older_than: Millis) -> Result<u64, StoreError> {
        const WHAT: &str = "prune_seen";
        let mut queues = self.shared.queues.lock().await;
        let mut tx = self.begin(&mut queues, WHAT).await?;
        let done = sqlx::query("DELETE FROM seen WHERE first_seen < ?1")
            .bind(older_than)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.query_error(WHAT, e))?;
        self.commit(tx, &mut queues, WHAT).await?;
        Ok(done.rows_affected())
    }

    /// Whether (from, id) is in the seen-set. Always false for id 0.
    pub async fn seen(&self, from: NodeId, id: PacketId) -> Result<bool, StoreError> {
        if id.is_unset() {
            return Ok(false);
        }
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM seen WHERE from_node = ?1 AND packet_id = ?2)",
        )
        .bind(i64::from(from.get()))
        .bind(i64::from(id.get()))
        .fetch_one(&self.shared.readers)
        .await
        .map_err(|e| self.query_error("seen", e))
    }

    /// Queued rows per destination and class (non-empty ones), sorted by destination, then
    /// class. Served from memory.
    pub async fn depths(&self) -> Result<Vec<Depth>, StoreError> {
        let mut queues = self.shared.queues.lock().await;
        if queues.stale {
            // No write is under way (we hold the lock), so a read sees the latest commit.
            let mut conn = self
                .shared
                .readers
                .acquire()
                .await
                .map_err(|e| self.query_error("depths", e))?;
            queues.depth = load_depths(&mut conn, &self.shared.path).await?;
            queues.stale = false;
        }
        let mut depths: Vec<Depth> = queues
            .depth
            .iter()
            .flat_map(|(destination, counts)| {
                Class::ALL
                    .into_iter()
                    .zip(counts)
                    .filter(|&(_, &count)| count > 0)
                    .map(|(class, &count)| Depth {
                        destination: destination.clone(),
                        class,
                        count,
                    })
            })
            .collect();
        depths.sort_by(|a, b| (&a.destination, a.class).cmp(&(&b.destination, b.class)));
        Ok(depths)
    }

    /// Rows in the dead-letter table.
    pub async fn dead_letters(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letter")
            .fetch_one(&self.shared.readers)
            .await
            .map_err(|e| self.query_error("dead_letters", e))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Closes the connections, waiting for a transaction in progress to finish. Any clone
    /// (a [`Writer`]'s too) fails from then on.
    pub async fn close(self) {
        self.shared.readers.close().await;
        self.shared.writer.close().await;
    }

    // Write transactions.

    /// Starts a write transaction, holding the queue lock: reloads the depths if a previous
    /// write failed, and marks them stale until [`Store::commit`] succeeds.
    async fn begin(
        &self,
        queues: &mut Queues,
        what: &'static str,
    ) -> Result<Transaction<'static, Sqlite>, StoreError> {
        let mut tx = self
            .shared
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.query_error(what, e))?;
        if queues.stale {
            tracing::debug!(path = %self.shared.path.display(), "reloading queue depths");
            queues.depth = load_depths(&mut tx, &self.shared.path).await?;
        }
        queues.stale = true;
        queues.resync = false;
        Ok(tx)
    }

    /// Commits, counts the commit, and trusts the depths again (unless a drift was seen).
    async fn commit(
        &self,
        tx: Transaction<'static, Sqlite>,
        queues: &mut Queues,
        what: &'static str,
    ) -> Result<(), StoreError> {
        tx.commit().await.map_err(|e| self.query_error(what, e))?;
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        queues.stale = std::mem::take(&mut queues.resync);
        Ok(())
    }

    /// Inserts seen-set entries, skipping those already there; returns the ones inserted.
    async fn record_seen(
        &self,
        conn: &mut SqliteConnection,
        entries: &[(NodeId, PacketId, Millis)],
    ) -> Result<HashSet<(NodeId, PacketId)>, StoreError> {
        let mut recorded = HashSet::with_capacity(entries.len());
        let mut rest = entries;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(statement_rows(rest.len()));
            rest = tail;
            let mut insert =
                QueryBuilder::<Sqlite>::new("INSERT INTO seen (from_node, packet_id, first_seen) ");
            insert.push_values(chunk, |mut row, &(from, id, now)| {
                row.push_bind(i64::from(from.get()))
                    .push_bind(i64::from(id.get()))
                    .push_bind(now);
            });
            // With DO NOTHING, RETURNING yields only the rows actually inserted.
            insert.push(" ON CONFLICT DO NOTHING RETURNING from_node, packet_id");
            let rows = insert
                .build()
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| self.query_error("accept", e))?;
            for row in &rows {
                let from = self.u32_column(row, 0, "seen", "from_node")?;
                let id = self.u32_column(row, 1, "seen", "packet_id")?;
                recorded.insert((NodeId::new(from), PacketId::new(id)));
            }
        }
        Ok(recorded)
    }

    /// Inserts the pending outbox rows in multi-row statements and empties `pending`.
    async fn flush(
        &self,
        conn: &mut SqliteConnection,
        pending: &mut Vec<PendingRow<'_>>,
    ) -> Result<(), StoreError> {
        let mut rest = &pending[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(statement_rows(rest.len()));
            rest = tail;
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO outbox (destination, priority, from_node, packet_id, channel, \
                 hop_limit, packet, enqueued_at, expires_at, next_attempt_at) ",
            );
            insert.push_values(chunk, |mut row, pending| {
                let d = pending.delivery;
                row.push_bind(d.destination.as_str())
                    .push_bind(i64::from(d.class.rank()))
                    .push_bind(i64::from(pending.from.get()))
                    .push_bind(i64::from(pending.id.get()))
                    .push_bind(d.channel.as_str())
                    .push_bind(i64::from(d.hop_limit))
                    .push_bind(d.packet.as_slice())
                    .push_bind(pending.now)
                    .push_bind(d.expires_at)
                    .push_bind(pending.now);
            });
            insert
                .build()
                .execute(&mut *conn)
                .await
                .map_err(|e| self.query_error("accept", e))?;
        }
        pending.clear();
        Ok(())
    }

    /// Deletes the oldest row of one class of one destination (the cap's victim); false if
    /// that destination has no row of that class.
    async fn evict(
        &self,
        conn: &mut SqliteConnection,
        destination: &str,
        rank: usize,
    ) -> Result<bool, StoreError> {
        let victim: Option<i64> = sqlx::query_scalar(
            "DELETE FROM outbox WHERE seq = \
                 (SELECT seq FROM outbox WHERE destination = ?1 AND priority = ?2 \
                  ORDER BY seq LIMIT 1) \
             RETURNING seq",
        )
        .bind(destination)
        .bind(rank as i64)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.query_error("accept", e))?;
        Ok(victim.is_some())
    }

    // Reading rows.

    /// Decodes a row of [`Store::next`]'s SELECT.
    fn delivery(&self, row: &SqliteRow) -> Result<Delivery, StoreError> {
        let seq: i64 = self.column(row, 0, "outbox", "seq")?;
        let bad = |column: &str, value: i64, expected: &str| {
            self.corrupt(
                Some(seq),
                format!("outbox row seq {seq}: {column} is {value}, expected {expected}"),
            )
        };
        let int = |index: usize, column: &'static str| -> Result<i64, StoreError> {
            row.try_get::<i64, _>(index).map_err(|e| {
                self.corrupt(Some(seq), format!("outbox row seq {seq}: {column}: {e}"))
            })
        };
        let text = |index: usize, column: &'static str| -> Result<String, StoreError> {
            row.try_get::<String, _>(index).map_err(|e| {
                self.corrupt(Some(seq), format!("outbox row seq {seq}: {column}: {e}"))
            })
        };

        let from = int(2, "from_node")?;
        let id = int(3, "packet_id")?;
        let rank = int(4, "priority")?;
        let hop_limit = int(6, "hop_limit")?;
        let attempts = int(8, "attempts")?;
        Ok(Delivery {
            seq,
            destination: text(1, "destination")?,
            from: NodeId::new(u32::try_from(from).map_err(|_| bad("from_node", from, "a u32"))?),
            id: PacketId::new(u32::try_from(id).map_err(|_| bad("packet_id", id, "a u32"))?),
            class: class_of(rank).ok_or_else(|| bad("priority", rank, "a class rank 0..=3"))?,
            channel: text(5, "channel")?,
            hop_limit: u8::try_from(hop_limit)
                .map_err(|_| bad("hop_limit", hop_limit, "0..=255"))?,
            packet: row.try_get::<Vec<u8>, _>(7).map_err(|e| {
                self.corrupt(Some(seq), format!("outbox row seq {seq}: packet: {e}"))
            })?,
            attempts: u32::try_from(attempts).map_err(|_| bad("attempts", attempts, "a u32"))?,
            enqueued_at: int(9, "enqueued_at")?,
            expires_at: int(10, "expires_at")?,
        })
    }

    /// Columns 0 and 1 of a `RETURNING destination, priority` or a GROUP BY row.
    fn destination_rank(&self, row: &SqliteRow) -> Result<(String, i64), StoreError> {
        Ok((
            self.column(row, 0, "outbox", "destination")?,
            self.column(row, 1, "outbox", "priority")?,
        ))
    }

    /// A `COUNT(*)` column.
    fn count(&self, row: &SqliteRow, index: usize) -> Result<u64, StoreError> {
        let n: i64 = self.column(row, index, "outbox", "COUNT(*)")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// An integer column that must hold a u32.
    fn u32_column(
        &self,
        row: &SqliteRow,
        index: usize,
        table: &str,
        column: &str,
    ) -> Result<u32, StoreError> {
        let value: i64 = self.column(row, index, table, column)?;
        u32::try_from(value)
            .map_err(|_| self.corrupt(None, format!("{table}.{column} is {value}, not a u32")))
    }

    /// One column, its decoding error reported as corruption.
    fn column<'r, T>(
        &self,
        row: &'r SqliteRow,
        index: usize,
        table: &str,
        column: &str,
    ) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
    {
        row.try_get(index)
            .map_err(|e| self.corrupt(None, format!("{table}.{column}: {e}")))
    }

    // Errors.

    fn query_error(&self, what: &'static str, cause: sqlx::Error) -> StoreError {
        StoreError::Query {
            path: self.shared.path.clone(),
            what,
            cause: Arc::new(cause),
        }
    }

    fn corrupt(&self, seq: Option<i64>, what: String) -> StoreError {
        StoreError::Corrupt {
            path: self.shared.path.clone(),
            seq,
            what,
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .field("max_per_destination", &self.shared.max_per_destination)
            .finish_non_exhaustive()
    }
}

/// Pool settings shared by the writer and the readers: connections kept for the life of the
/// store (their statement caches with them), no ping before each use.
fn pool_options(connections: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(connections)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
}

/// The embedded migrations as sqlx's migrator wants them.
fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Rows per destination and class, counted from the table. Rows with a rank the store does
/// not know are logged and left out (see "Damaged rows" in the module doc).
async fn load_depths(
    conn: &mut SqliteConnection,
    path: &Path,
) -> Result<HashMap<String, [u64; CLASSES]>, StoreError> {
    let query_error = |cause| StoreError::Query {
        path: path.to_owned(),
        what: "loading queue depths",
        cause: Arc::new(cause),
    };
    let rows = sqlx::query(
        "SELECT destination, priority, COUNT(*) FROM outbox GROUP BY destination, priority",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(query_error)?;
    let mut depth: HashMap<String, [u64; CLASSES]> = HashMap::new();
    for row in &rows {
        let destination: String = row.try_get(0).map_err(query_error)?;
        let rank: i64 = row.try_get(1).map_err(query_error)?;
        let count: i64 = row.try_get(2).map_err(query_error)?;
        match class_of(rank) {
            Some(class) => {
                depth.entry(destination).or_default()[usize::from(class.rank())] =
                    u64::try_from(count).unwrap_or(0);
            }
            None => tracing::warn!(
                path = %path.display(), %destination, rank, count,
                "queued rows with an unknown class rank: next() will report them"
            ),
        }
    }
    Ok(depth)
}

/// The class stored as `rank`, if it is one.
fn class_of(rank: i64) -> Option<Class> {
    u8::try_from(rank).ok().and_then(Class::from_rank)
}

/// Rows for the next multi-row statement: the largest power of two not above `remaining`
/// (which is at least 1) or [`MAX_ROWS_PER_STATEMENT`].
fn statement_rows(remaining: usize) -> usize {
    let n = remaining.clamp(1, MAX_ROWS_PER_STATEMENT);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// Seqs as a JSON array, for `json_each(?)`: one static statement for any number of them.
fn seq_list(seqs: &[i64]) -> String {
    let mut list = String::with_capacity(seqs.len() * 8 + 2);
    list.push('[');
    for (i, seq) in seqs.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str(&seq.to_string());
    }
    list.push(']');
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_cut_in_powers_of_two() {
        assert_eq!(statement_rows(1), 1);
        assert_eq!(statement_rows(3), 2);
        assert_eq!(statement_rows(512), 512);
        assert_eq!(statement_rows(1000), 512);
        assert_eq!(statement_rows(488), 256);
        let mut left = 1000;
        let mut statements = 0;
        while left > 0 {
            left -= statement_rows(left);
            statements += 1;
        }
        assert_eq!(statements, 6, "512 + 256 + 128 + 64 + 32 + 8");
    }

    #[test]
    fn seq_lists_are_json_arrays() {
        assert_eq!(seq_list(&[1]), "[1]");
        assert_eq!(seq_list(&[3, -4, 5]), "[3,-4,5]");
    }

    #[test]
    fn only_known_ranks_are_classes() {
        assert_eq!(class_of(0), Some(Class::Direct));
        assert_eq!(class_of(3), Some(Class::Telemetry));
        assert_eq!(class_of(4), None);
        assert_eq!(class_of(-1), None);
        assert_eq!(class_of(256), None);
    }
}
