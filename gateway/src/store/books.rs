//! What the store keeps in memory beside the file: queue depths (the size cap without a
//! `COUNT(*)` per insert), the next message id, the seen-set's current generation, and the
//! endpoint names. Loaded at open (and after a failed write), kept in step by every write.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sqlx::{Row, SqliteConnection};

use super::seen::Generation;
use super::{CLASSES, StoreError, class_of};

/// The writer's books, guarded by the writer mutex.
pub(crate) struct Books {
    /// Deliveries per destination (endpoint id), indexed by class rank.
    pub(crate) depth: HashMap<i64, [u64; CLASSES]>,
    /// True while a write transaction is under way, and after one that failed: `depth` may
    /// then disagree with the table, and the next write (or [`Store::depths`]) reloads it.
    ///
    /// [`Store::depths`]: super::Store::depths
    pub(crate) stale: bool,
    /// Set when a count was found out of step with the table (a delete removed deliveries
    /// that were not counted, an eviction found none to evict): reload after this commit.
    pub(crate) resync: bool,
    /// The id the next accepted message gets. Ids are handed out here rather than by SQLite,
    /// so a batch knows them without reading them back, and so they never go down while the
    /// store is open (SQLite's `max(rowid) + 1` would hand the id of a newest message that was
    /// delivered to the next one, and a late key of the old one would name the new one).
    pub(crate) next_message: i64,
    /// Which seen-set generation takes new entries, and since when.
    pub(crate) seen: Generation,
    /// When airtime records were last pruned: pruning at most every sixteenth of the window
    /// deletes them a page at a time instead of one row (one page write) per sweep.
    pub(crate) airtime_pruned: Option<super::Millis>,
}

impl Books {
    /// Reads the books from the file.
    pub(crate) async fn load(
        conn: &mut SqliteConnection,
        path: &Path,
    ) -> Result<Books, StoreError> {
        let depth = load_depths(conn, path).await?;
        let highest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM message")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| load_error(path, e))?;
        let seen = Generation::load(conn, path).await?;
        Ok(Books {
            depth,
            stale: false,
            resync: false,
            next_message: highest.saturating_add(1),
            seen,
            airtime_pruned: None,
        })
    }

    /// Counts `n` deliveries of `rank` gone from `destination`. Ranks the store does not know
    /// were never counted; a count that would go below zero means a drift, so reload.
    pub(crate) fn remove(&mut self, destination: i64, rank: i64, n: u64) {
        let Some(class) = class_of(rank) else {
            return;
        };
        let rank = usize::from(class.rank());
        match self.depth.get_mut(&destination) {
            Some(depth) if depth[rank] >= n => depth[rank] -= n,
            Some(depth) => {
                depth[rank] = 0;
                self.resync = true;
            }
            None => self.resync = true,
        }
    }
}

/// Deliveries per destination and class, counted from the table (one pass over its primary
/// key). Rows with a rank the store does not know are logged and left out (see "Damaged rows"
/// in the module doc).
pub(crate) async fn load_depths(
    conn: &mut SqliteConnection,
    path: &Path,
) -> Result<HashMap<i64, [u64; CLASSES]>, StoreError> {
    let rows = sqlx::query(
        "SELECT destination, priority, COUNT(*) FROM delivery GROUP BY destination, priority",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| load_error(path, e))?;
    let mut depth: HashMap<i64, [u64; CLASSES]> = HashMap::new();
    for row in &rows {
        let destination: i64 = row.try_get(0).map_err(|e| load_error(path, e))?;
        let rank: i64 = row.try_get(1).map_err(|e| load_error(path, e))?;
        let count: i64 = row.try_get(2).map_err(|e| load_error(path, e))?;
        match class_of(rank) {
            Some(class) => {
                depth.entry(destination).or_default()[usize::from(class.rank())] =
                    u64::try_from(count).unwrap_or(0);
            }
            None => tracing::warn!(
                path = %path.display(), destination, rank, count,
                "queued deliveries with an unknown class rank: next() will report them"
            ),
        }
    }
    Ok(depth)
}

/// Endpoint names and their ids, both ways.
#[derive(Debug, Default)]
pub(crate) struct Endpoints {
    /// Name to id, for every query naming a destination.
    by_name: HashMap<String, i64>,
    /// Id to name, for rows read back.
    by_id: HashMap<i64, String>,
}

impl Endpoints {
    /// Reads the endpoint table.
    pub(crate) async fn load<'e, E>(executor: E, path: &Path) -> Result<Endpoints, StoreError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
    {
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, name FROM endpoint")
            .fetch_all(executor)
            .await
            .map_err(|e| load_error(path, e))?;
        let mut endpoints = Endpoints::default();
        for (id, name) in rows {
            endpoints.add(id, name);
        }
        Ok(endpoints)
    }

    /// Records one name.
    pub(crate) fn add(&mut self, id: i64, name: String) {
        self.by_id.insert(id, name.clone());
        self.by_name.insert(name, id);
    }

    /// The id of a name.
    pub(crate) fn id(&self, name: &str) -> Option<i64> {
        self.by_name.get(name).copied()
    }

    /// The name of an id.
    pub(crate) fn name(&self, id: i64) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }
}

fn load_error(path: &Path, cause: sqlx::Error) -> StoreError {
    StoreError::Query {
        path: path.to_owned(),
        what: "loading the store",
        cause: Arc::new(cause),
    }
}
