//! The durable outbox and seen-set: store-and-forward on one SQLite file.
//!
//! Every message the gateway accepts from an endpoint is committed here before anything else
//! happens ([`Store::accept`], usually through the group-commit [`Writer`]), in one
//! transaction: its (from, id) in the seen-set, the packet once, as heard (a `message` row), and
//! one small `delivery` row per destination. A destination's worker drains its own queue with
//! [`Store::next`], and a delivery is deleted only when the far side confirmed it
//! ([`Store::confirm`], many at once); a failure is counted ([`Store::fail`]), an unreachable
//! destination noted ([`Store::note`]), a refusal set aside for good ([`Store::reject`], the
//! dead-letter table), and what waited too long dropped ([`Store::expire`]). The message row goes
//! with its last delivery. Radios' confirms also record the airtime spent, which
//! [`Store::airtime_since`] reads back so an airtime governor's budget holds across restarts.
//!
//! The store never reads a clock: every call that needs the time takes `now` (unix ms). A
//! step of the wall clock is followed by [`Store::rebase`], which moves what was stamped
//! before it, so messages keep their age (`steps.rs`; the rule is in `crate::clock`).
//!
//! # Files
//!
//! `schema.rs` (migrations, connections), `books.rs` (what is kept in memory: queue depths,
//! endpoint names, the next message id), `accept.rs`, `queue.rs` (next, confirm, fail, note,
//! reject, depths, queues), `expire.rs`, `seen.rs` (the seen-set's two generations),
//! `airtime.rs`, `rows.rs` (row decoding), `writer.rs` (group commit), `virtual_nodes.rs`
//! (the mesh identities of people of other worlds, with their keys), `error.rs`.
//!
//! # What survives a crash
//!
//! The file is in WAL mode. Accepts commit with `synchronous = FULL`: the WAL is fsynced before
//! the commit returns. Everything else (confirms, fails, notes, rejects, expiry, seen-set
//! rotation) commits with `synchronous = NORMAL`: appended to the WAL, not fsynced. The next
//! FULL commit fsyncs the WAL file, which holds those earlier frames too, so they become
//! durable with it (a checkpoint syncs them as well).
//! - **kill -9, panic, OOM kill:** nothing that returned `Ok` is lost, accept or confirm alike:
//!   a committed transaction is in the WAL, in the OS page cache, the moment the commit
//!   returns, and the next open replays it.
//! - **Power cut:** nothing that [`Store::accept`] (or [`Writer::accept`]) returned `Ok` for
//!   is lost, as far as the medium honours a flush (cheap SD cards are known to acknowledge
//!   writes they still cache). A confirm (or fail, reject, expiry) committed since the last
//!   accept may be lost: the delivery is then queued again and re-sent after the restart, and
//!   the far side's deduplication on (from, id) drops it. That is the trade: accepts stay
//!   exactly as durable as before, and a relayed message costs one fsync instead of two.
//! - What is lost either way is what was not committed yet: items still waiting in the
//!   [`Writer`]'s queue, whose callers had no answer.
//! - Delivery is at least once: a destination may have received a delivery whose confirm was
//!   not committed when the gateway died, and gets it again after the restart.
//!
//! # Concurrency
//!
//! One writer connection does every write, in `BEGIN IMMEDIATE` transactions serialised by a
//! mutex that also guards the in-memory queue depths, so the size cap is checked without a
//! `COUNT(*)` per insert. A write that failed or was cancelled closes its connection (SQLite
//! rolls the transaction back and releases the file's write lock); the next write starts on a
//! fresh connection and reloads what is kept in memory, so one error never wedges the writer. Reads (`next`, `seen`, `queues`, ...) go through a small
//! pool of read-only connections that WAL lets run beside a commit. [`Store`] is a cheap clone.
//!
//! # The size cap
//!
//! Each destination holds at most [`StoreConfig::max_per_destination`] deliveries. When a
//! delivery meets a full queue, the store evicts the oldest delivery of the least urgent class
//! that is not more urgent than the incoming one (possibly one of the same batch); if only more
//! urgent deliveries are queued, the incoming one is refused. Both are reported in
//! [`Accepted::New`].
//!
//! # Expiry
//!
//! Within one destination and class every delivery has the same time to live and they arrive
//! in message order, so [`Store::expire`] walks each (destination, class) from the front and
//! stops at the first delivery not expired: no index on expiry times, and no scan. A delivery
//! stuck behind one with a longer TTL (the TTL was raised between runs) waits for it, but
//! [`Store::next`] never hands out an expired one.
//!
//! # Damaged rows
//!
//! A row holding a value the store never writes (say a class rank of 9, or a delivery whose
//! message is gone) makes [`Store::next`] fail with [`StoreError::Corrupt`] carrying the
//! delivery's [`DeliveryKey`]; a worker can [`Store::reject`] that key to move it aside. Opening
//! a file with such rows succeeds (they are logged and left out of the queue depths), so one bad
//! row does not keep the gateway from starting.

mod accept;
mod airtime;
mod books;
mod error;
mod expire;
mod owner;
mod queue;
mod rows;
mod schema;
mod seen;
mod steps;
pub mod virtual_nodes;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mesh_core::{Class, NodeId, PacketId};
use sqlx::SqliteConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use books::{Books, Endpoints};
use schema::Durability;

pub use error::StoreError;
pub use virtual_nodes::VirtualNode;
pub use writer::{Pending, Writer};

/// Unix time in milliseconds. The store never reads a clock: callers pass `now`.
pub type Millis = i64;

/// How long airtime records are kept unless told otherwise: an hour, the window of the
/// strictest duty-cycle rule (EU868).
pub const DEFAULT_AIRTIME_WINDOW: Duration = Duration::from_secs(3600);

/// Where the store lives and how big a queue may grow.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The SQLite file; created if missing (its directory must exist). SQLite puts `-wal` and
    /// `-shm` files beside it.
    pub path: PathBuf,
    /// The most deliveries one destination's queue may hold (see the module doc for what
    /// happens when it is full).
    pub max_per_destination: u64,
    /// How long airtime records are kept ([`Store::expire`] prunes older ones, at most every
    /// sixteenth of this): at least the airtime governor's window, so a restarted governor
    /// sees all that still counts.
    pub airtime_window: Duration,
}

impl StoreConfig {
    /// A config keeping airtime for [`DEFAULT_AIRTIME_WINDOW`].
    pub fn new(path: impl Into<PathBuf>, max_per_destination: u64) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            max_per_destination,
            airtime_window: DEFAULT_AIRTIME_WINDOW,
        }
    }
}

/// A message to accept: stored once, delivered to each of `deliveries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The originating node, half of the deduplication key.
    pub from: NodeId,
    /// The packet id, the other half. Zero is never deduplicated nor recorded.
    pub id: PacketId,
    /// Priority class: drain order and eviction order, the same for every delivery.
    pub class: Class,
    /// The endpoint it was heard on.
    pub source: String,
    /// The channel `packet` is encrypted for.
    pub channel: String,
    /// The packet as heard (encoded), opaque to the store.
    pub packet: Vec<u8>,
    /// The gateway that put it on the federation, when a peer delivered it; `None` when it
    /// was heard here. Forwarded to other peers as their origin.
    pub origin: Option<NodeId>,
    /// When it stops being worth sending; [`Store::expire`] drops its deliveries then.
    pub expires_at: Millis,
    /// One delivery per destination (or several to one destination: two rooms of one XMPP
    /// server fed by one channel).
    pub deliveries: Vec<NewDelivery>,
}

/// One destination's share of an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The destination endpoint's name, as its worker asks for it in [`Store::next`].
    pub destination: String,
    /// The channel on the destination; `None` means the message's own channel.
    pub to_channel: Option<String>,
    /// Hop limit on arrival for a radio; for a peer, the hubs the message will have crossed
    /// when the peer has it; zero elsewhere.
    pub hops: u8,
}

/// What became of one [`Inbound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// First time seen: its deliveries were queued, except as listed.
    New {
        /// Destinations whose full queue held only more urgent deliveries and refused this one.
        refused: Vec<String>,
        /// Deliveries evicted to make room: their destination and class.
        evicted: Vec<(String, Class)>,
    },
    /// Already seen (in an earlier call, or earlier in the same batch): nothing was queued.
    Duplicate,
}

/// Identifies one delivery: cheap, `Copy`, opaque outside the store, and never reused while the
/// store that handed it out is open (a key of a delivery that is gone never names another one;
/// no key outlives its process). Its order is the drain order within one destination.
///
/// `Default` is a key no delivery has (ids start at 1), for values built outside the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey {
    /// `endpoint.id` of the destination.
    destination: i64,
    /// Class rank as stored (kept raw, so a damaged rank can still be named and rejected).
    priority: i64,
    /// `message.id`.
    message: i64,
    /// Which of the message's deliveries to this destination.
    leg: i64,
}

impl std::fmt::Display for DeliveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "delivery (destination #{}, class rank {}, message {}, leg {})",
            self.destination, self.priority, self.message, self.leg
        )
    }
}

/// A queued delivery, as a worker gets it from [`Store::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its key, for confirm, fail, note and reject.
    pub key: DeliveryKey,
    /// The destination it is queued for.
    pub destination: String,
    /// Originating node.
    pub from: NodeId,
    /// Packet id.
    pub id: PacketId,
    /// Priority class.
    pub class: Class,
    /// The endpoint it was heard on; `None` for messages carried over from schema version 1.
    pub source: Option<String>,
    /// The gateway that put it on the federation; `None` when it was heard here.
    pub origin: Option<NodeId>,
    /// The channel `packet` is encrypted for.
    pub channel: String,
    /// The channel on the destination (the message's own channel unless the route maps it).
    pub to_channel: String,
    /// Hop limit on arrival.
    pub hops: u8,
    /// The packet as heard (encoded).
    pub packet: Vec<u8>,
    /// Counted failed attempts so far (each [`Store::fail`] adds one).
    pub attempts: u32,
    /// When it was accepted.
    pub enqueued_at: Millis,
    /// When it expires.
    pub expires_at: Millis,
}

/// One delivery the far side confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The delivery.
    pub key: DeliveryKey,
    /// What it cost on the air (radios only), recorded for the airtime governor.
    pub airtime: Option<Duration>,
}

/// Deliveries [`Store::expire`] dropped for one destination and class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The destination.
    pub destination: String,
    /// The class.
    pub class: Class,
    /// How many.
    pub count: u64,
}

/// Queued deliveries of one destination and class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depth {
    /// The destination.
    pub destination: String,
    /// The class.
    pub class: Class,
    /// How many.
    pub count: u64,
}

/// One destination's queue, for status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// The destination (possibly one the configuration no longer has: its queue is kept).
    pub destination: String,
    /// Deliveries queued.
    pub count: u64,
    /// When the oldest of them was accepted.
    pub oldest: Option<Millis>,
    /// The most urgent class waiting.
    pub most_urgent: Option<Class>,
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
    /// How the writer connection is opened, to open a fresh one after a failed write.
    writer_options: SqliteConnectOptions,
    /// The write side: one connection (SQLite allows one writer at a time anyway; owning it
    /// means no write waits on SQLite's busy handler) and the books kept in step with it.
    /// Held for the whole of every write transaction, which makes it the writers' mutex.
    writing: tokio::sync::Mutex<Writing>,
    /// Read-only connections (`query_only`) for `next`, `seen`, `queues`, ..., so workers
    /// polling their queues do not wait behind a commit's fsync.
    readers: SqlitePool,
    /// Endpoint names and ids, read by every query that names one. Apart from `writing`
    /// because readers need it without waiting for a commit; written only after a commit
    /// that added names.
    endpoints: RwLock<Endpoints>,
    /// The size cap per destination.
    max_per_destination: u64,
    /// Airtime records older than this (before `now`) are pruned.
    airtime_window: Millis,
    /// Write transactions committed since open: shows group commit at work (tests, metrics).
    commits: AtomicU64,
    /// The store's lock, held until [`Store::close`] (or the process ends): one gateway per
    /// store.
    lock: std::sync::Mutex<Option<nix::fcntl::Flock<std::fs::File>>>,
}

/// The writer connection and what must change in step with it.
struct Writing {
    /// The connection; `None` once closed, or before a fresh one replaces a failed one.
    conn: Option<SqliteConnection>,
    /// Queue depths, the next message id, the seen-set generation.
    books: Books,
    /// False from the start of a write transaction until its commit: if still false at the
    /// next write, the last one failed or was cancelled mid-way, so the connection may be
    /// inside a transaction (or a wedged one) and the books out of step. Start afresh then.
    clean: bool,
    /// The `synchronous` mode the connection is in, so it is set only when it changes.
    synchronous: Option<Durability>,
    /// [`Store::close`] was called: refuse every write.
    closed: bool,
}

/// A write transaction in progress: the writer lock, with the connection inside a
/// `BEGIN IMMEDIATE`. Dropped without a successful [`Store::commit`] (an error, a cancelled
/// future), it closes the connection, which rolls the transaction back and releases SQLite's
/// write lock at once; the writer is left unclean (see [`Writing::clean`]), so the next write
/// opens a fresh connection and reloads the books.
struct Tx<'a> {
    /// The writer, locked.
    guard: tokio::sync::MutexGuard<'a, Writing>,
    /// The operation, for errors.
    what: &'static str,
    /// Set once COMMIT succeeded.
    committed: bool,
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.guard.conn = None;
            self.guard.synchronous = None;
        }
    }
}

impl Tx<'_> {
    /// The connection and the books at once.
    fn parts(&mut self) -> (&mut SqliteConnection, &mut Books) {
        let Writing { conn, books, .. } = &mut *self.guard;
        (
            conn.as_mut().expect("a transaction has a connection"),
            books,
        )
    }

    /// The connection.
    fn conn(&mut self) -> &mut SqliteConnection {
        self.parts().0
    }

    /// The books.
    fn books(&mut self) -> &mut Books {
        &mut self.guard.books
    }
}

impl Store {
    /// Opens (creating if missing) the store file: WAL, 1 KiB pages for a new file, a busy
    /// timeout, the embedded migrations (converting a schema-1 store in place), and what is
    /// kept in memory loaded.
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let StoreConfig {
            path,
            max_per_destination,
            airtime_window,
        } = config;
        // A store that cannot be written is said as such, before its lock file fails to be
        // made or SQLite quietly opens it for reading only.
        owner::check_writable(&path)?;
        // First, before the file is touched: a second gateway on it must not even migrate.
        let lock = owner::lock(&path)?;
        let writer_options = schema::writer_options(&path);
        let mut conn = schema::connect_writer(&writer_options, &path).await?;
        owner::check(&mut conn, &path).await?;
        schema::migrate(&mut conn, &path).await?;
        owner::mark(&mut conn, &path).await?;
        let readers = schema::connect_readers(&path).await?;
        let books = Books::load(&mut conn, &path).await?;
        let endpoints = Endpoints::load(&mut conn, &path).await?;
        let queued: u64 = books.depth.values().flatten().sum();
        tracing::info!(path = %path.display(), queued, "store opened");

        Ok(Store {
            shared: Arc::new(Shared {
                path,
                writer_options,
                writing: tokio::sync::Mutex::new(Writing {
                    conn: Some(conn),
                    books,
                    clean: true,
                    synchronous: None,
                    closed: false,
                }),
                readers,
                endpoints: RwLock::new(endpoints),
                max_per_destination,
                airtime_window: Millis::try_from(airtime_window.as_millis()).unwrap_or(Millis::MAX),
                commits: AtomicU64::new(0),
                lock: std::sync::Mutex::new(Some(lock)),
            }),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Write transactions committed since open (accepts, confirms, fails, ...). Group commit
    /// shows as far fewer of these than accepted items.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Closes the connections, waiting for a write in progress to finish. Any clone (a
    /// [`Writer`]'s too) fails from then on.
    pub async fn close(self) {
        self.shared.readers.close().await;
        let mut writing = self.shared.writing.lock().await;
        writing.closed = true;
        if let Some(conn) = writing.conn.take() {
            use sqlx::Connection;
            if let Err(error) = conn.close().await {
                tracing::warn!(path = %self.shared.path.display(), %error, "closing the store");
            }
        }
        // Closed for good: another store (a restart in this process) may take it now.
        drop(
            self.shared
                .lock
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }

    // Write transactions.

    /// Takes the writer and starts a write transaction in `durability`. After a write that
    /// did not commit, starts on a fresh connection and reloads the books first; reloads the
    /// queue depths when they were found out of step.
    async fn begin(
        &self,
        what: &'static str,
        durability: Durability,
    ) -> Result<Tx<'_>, StoreError> {
        let mut guard = self.shared.writing.lock().await;
        if guard.closed {
            return Err(StoreError::Closed {
                path: self.shared.path.clone(),
                what,
            });
        }
        if !guard.clean || guard.conn.is_none() {
            tracing::debug!(path = %self.shared.path.display(), "writer starts afresh");
            guard.conn = None;
            guard.synchronous = None;
            let mut conn =
                schema::connect_writer(&self.shared.writer_options, &self.shared.path).await?;
            let next_message = guard.books.next_message;
            guard.books = Books::load(&mut conn, &self.shared.path).await?;
            // Ids never go down while the store is open.
            guard.books.next_message = guard.books.next_message.max(next_message);
            let endpoints = Endpoints::load(&mut conn, &self.shared.path).await?;
            *self
                .shared
                .endpoints
                .write()
                .unwrap_or_else(|p| p.into_inner()) = endpoints;
            guard.conn = Some(conn);
            guard.clean = true;
        }
        guard.clean = false;
        let writing = &mut *guard;
        let conn = writing.conn.as_mut().expect("connected above");
        if writing.synchronous != Some(durability) {
            sqlx::query(durability.pragma())
                .execute(&mut *conn)
                .await
                .map_err(|e| self.query_error(what, e))?;
            writing.synchronous = Some(durability);
        }
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(|e| self.query_error(what, e))?;
        // From here on, an early return rolls back (see `Tx`).
        let mut tx = Tx {
            guard,
            what,
            committed: false,
        };
        let (conn, books) = tx.parts();
        if books.stale {
            tracing::debug!(path = %self.shared.path.display(), "reloading queue depths");
            books.depth = books::load_depths(conn, &self.shared.path).await?;
        }
        books.stale = true;
        books.resync = false;
        Ok(tx)
    }

    /// Commits, counts the commit, and trusts the books again (unless a drift was seen).
    async fn commit(&self, mut tx: Tx<'_>) -> Result<(), StoreError> {
        let what = tx.what;
        sqlx::query("COMMIT")
            .execute(tx.conn())
            .await
            .map_err(|e| self.query_error(what, e))?;
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        let books = tx.books();
        books.stale = std::mem::take(&mut books.resync);
        tx.guard.clean = true;
        tx.committed = true;
        Ok(())
    }

    // Errors.

    fn query_error(&self, what: &'static str, cause: sqlx::Error) -> StoreError {
        StoreError::Query {
            path: self.shared.path.clone(),
            what,
            cause: Arc::new(cause),
        }
    }

    fn corrupt(&self, key: Option<DeliveryKey>, what: String) -> StoreError {
        StoreError::Corrupt {
            path: self.shared.path.clone(),
            key,
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

/// Number of priority classes, the length of a queue-depth array.
const CLASSES: usize = Class::ALL.len();

/// The class stored as `rank`, if it is one.
fn class_of(rank: i64) -> Option<Class> {
    u8::try_from(rank).ok().and_then(Class::from_rank)
}

#[cfg(test)]
mod tests;
