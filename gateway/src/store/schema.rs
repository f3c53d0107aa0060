//! The file itself: the embedded migrations, the connection settings, and what the store loads
//! at open.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, SqlSafeStr, SqliteConnection};

use super::StoreError;
use std::sync::Arc;

/// The schema, oldest first: (version, description, SQL). Embedded so the binary carries its
/// schema; applied by sqlx's [`Migrator`], which records each version and its checksum.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "store", include_str!("../../migrations/0001_store.sql")),
    (
        2,
        "messages and deliveries",
        include_str!("../../migrations/0002_messages_and_deliveries.sql"),
    ),
    (
        3,
        "virtual nodes",
        include_str!("../../migrations/0003_virtual_nodes.sql"),
    ),
    (
        4,
        "origin hub",
        include_str!("../../migrations/0004_origin.sql"),
    ),
];

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections beside the writer: enough for a few workers polling at once.
const READERS: u32 = 2;

/// Page size of a new file. Small pages mean small writes: a commit writes every page it
/// touched in full, and a relayed message touches a handful of them. 1 KiB still holds several
/// messages (about 150 bytes each) per page. An existing file keeps the page size it has.
const PAGE_SIZE: u32 = 1024;

/// How a write transaction reaches the disk (see "What survives a crash" in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// `synchronous = FULL`: the WAL is fsynced before the commit returns. Accepts.
    Full,
    /// `synchronous = NORMAL`: no fsync at commit; the next FULL commit (or checkpoint) syncs
    /// these frames with its own. Confirms, failures, rejects, expiry, rotation.
    Normal,
}

impl Durability {
    /// The statement that puts the writer connection in this mode.
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "PRAGMA synchronous = FULL",
            Durability::Normal => "PRAGMA synchronous = NORMAL",
        }
    }
}

/// Settings of the writer connection: creates the file, WAL, FULL until told otherwise.
pub(crate) fn writer_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(BUSY_TIMEOUT)
        .create_if_missing(true)
        // Applied before anything else touches a new file (sqlx orders it first), so the
        // tables are created with it; a no-op on an existing file.
        .page_size(PAGE_SIZE)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
}

/// Opens the writer connection.
pub(crate) async fn connect_writer(
    options: &SqliteConnectOptions,
    path: &Path,
) -> Result<SqliteConnection, StoreError> {
    SqliteConnection::connect_with(options)
        .await
        .map_err(|cause| {
            // SQLITE_NOTADB (26) and SQLITE_CORRUPT (11): the file is there but is not a
            // database it can read; said as such, never replaced.
            let code = cause
                .as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned());
            if matches!(code.as_deref(), Some("26" | "11")) {
                StoreError::Damaged {
                    path: path.to_owned(),
                    cause: Arc::new(cause),
                }
            } else {
                StoreError::Open {
                    path: path.to_owned(),
                    cause: Arc::new(cause),
                }
            }
        })
}

/// Applies the embedded migrations not applied yet.
pub(crate) async fn migrate(conn: &mut SqliteConnection, path: &Path) -> Result<(), StoreError> {
    migrator()
        .run(conn)
        .await
        .map_err(|cause| StoreError::Migrate {
            path: path.to_owned(),
            cause: Arc::new(cause),
        })
}

/// The read-only connections (`next`, `seen`, `queues`, ...), which WAL lets read beside a
/// commit: connections kept for the life of the store (their statement caches with them), no
/// ping before each use.
pub(crate) async fn connect_readers(path: &Path) -> Result<SqlitePool, StoreError> {
    SqlitePoolOptions::new()
        .max_connections(READERS)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(BUSY_TIMEOUT)
                .pragma("query_only", "ON"),
        )
        .await
        .map_err(|cause| StoreError::Open {
            path: path.to_owned(),
            cause: Arc::new(cause),
        })
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
