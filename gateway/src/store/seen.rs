//! The seen-set, in two generations.
//!
//! A (from, id) is seen if it is in either `seen_a` or `seen_b`; new entries go into the
//! current one. [`Store::rotate_seen`] empties the other one (a `DELETE` without `WHERE`,
//! which SQLite turns into a truncation of the b-tree: no scan, no index) and makes it
//! current once the current one is a window old. So an entry lives between one and two
//! windows, and the wall clock matters little: a clock that went back re-anchors the
//! generation instead of holding it for years, and a jump forward rotates once, keeping the
//! entries of the generation that was current for one more window.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::{NodeId, PacketId};
use sqlx::{Row, SqliteConnection};

use super::rows::pair_list;
use super::schema::Durability;
use super::{Millis, Store, StoreError};

/// One of the two seen-set tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// `seen_a`.
    A,
    /// `seen_b`.
    B,
}

impl Side {
    /// The other table.
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// As `seen_generation.current` holds it.
    fn letter(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }

    /// Inserts the (from, id) pairs of a JSON array, skipping those already there, and
    /// returns the ones inserted.
    fn insert_sql(self) -> &'static str {
        match self {
            Side::A => {
                "INSERT INTO seen_a (from_node, packet_id) \
                 SELECT value ->> 0, value ->> 1 FROM json_each(?1) WHERE true \
                 ON CONFLICT DO NOTHING RETURNING from_node, packet_id"
            }
            Side::B => {
                "INSERT INTO seen_b (from_node, packet_id) \
                 SELECT value ->> 0, value ->> 1 FROM json_each(?1) WHERE true \
                 ON CONFLICT DO NOTHING RETURNING from_node, packet_id"
            }
        }
    }

    /// Empties the table.
    fn clear_sql(self) -> &'static str {
        match self {
            Side::A => "DELETE FROM seen_a",
            Side::B => "DELETE FROM seen_b",
        }
    }
}

/// Which generation is current, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation {
    /// The table new entries go into.
    pub(crate) current: Side,
    /// When it became current (unix ms); `None` until the first rotation check anchors it.
    pub(crate) started: Option<Millis>,
}

impl Generation {
    /// Reads `seen_generation`.
    pub(crate) async fn load(
        conn: &mut SqliteConnection,
        path: &Path,
    ) -> Result<Generation, StoreError> {
        let row: Option<(String, Option<Millis>)> =
            sqlx::query_as("SELECT current, started FROM seen_generation WHERE only = 0")
                .fetch_optional(&mut *conn)
                .await
                .map_err(|cause| StoreError::Query {
                    path: path.to_owned(),
                    what: "loading the seen-set generation",
                    cause: Arc::new(cause),
                })?;
        let (current, started) = row.unwrap_or_else(|| ("a".to_owned(), None));
        let current = match current.as_str() {
            "b" => Side::B,
            "a" => Side::A,
            other => {
                return Err(StoreError::Corrupt {
                    path: path.to_owned(),
                    key: None,
                    what: format!("seen_generation.current is {other:?}, expected 'a' or 'b'"),
                });
            }
        };
        Ok(Generation { current, started })
    }
}

impl Store {
    /// Starts a new seen-set generation when the current one is `window` old at `now`: the
    /// older generation is emptied and takes new entries from then on. Returns whether it
    /// rotated. A generation that started after `now` (the clock went back) is re-anchored at
    /// `now`; one never anchored is anchored at `now`. Call it every so often (a tenth of the
    /// window is plenty): every entry stays seen for at least `window`.
    pub async fn rotate_seen(&self, now: Millis, window: Duration) -> Result<bool, StoreError> {
        const WHAT: &str = "rotate_seen";
        let window = Millis::try_from(window.as_millis()).unwrap_or(Millis::MAX);
        {
            // Most calls change nothing: answer them without a transaction.
            let writing = self.shared.writing.lock().await;
            let Generation { started, .. } = writing.books.seen;
            if writing.clean
                && let Some(started) = started
                && now >= started
                && now.saturating_sub(started) < window
            {
                return Ok(false);
            }
        }
        let mut tx = self.begin(WHAT, Durability::Normal).await?;
        let Generation { current, started } = tx.books().seen;
        let next = match started {
            Some(started) if now >= started && now.saturating_sub(started) < window => {
                return self.commit(tx).await.map(|()| false);
            }
            Some(started) if now >= started => Generation {
                current: current.other(),
                started: Some(now),
            },
            Some(started) => {
                tracing::warn!(
                    path = %self.shared.path.display(), started, now,
                    "the clock is before the seen-set generation's start: re-anchoring it"
                );
                Generation {
                    current,
                    started: Some(now),
                }
            }
            None => Generation {
                current,
                started: Some(now),
            },
        };
        let rotated = next.current != current;
        if rotated {
            sqlx::query(next.current.clear_sql())
                .execute(tx.conn())
                .await
                .map_err(|e| self.query_error(WHAT, e))?;
        }
        sqlx::query(
            "INSERT INTO seen_generation (only, current, started) VALUES (0, ?1, ?2) \
             ON CONFLICT (only) DO UPDATE SET current = excluded.current, \
                 started = excluded.started",
        )
        .bind(next.current.letter())
        .bind(next.started)
        .execute(tx.conn())
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        tx.books().seen = next;
        self.commit(tx).await?;
        Ok(rotated)
    }

    /// Whether (from, id) is in the seen-set. Always false for id 0.
    pub async fn seen(&self, from: NodeId, id: PacketId) -> Result<bool, StoreError> {
        if id.is_unset() {
            return Ok(false);
        }
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM seen_a WHERE from_node = ?1 AND packet_id = ?2) \
                 OR EXISTS (SELECT 1 FROM seen_b WHERE from_node = ?1 AND packet_id = ?2)",
        )
        .bind(i64::from(from.get()))
        .bind(i64::from(id.get()))
        .fetch_one(&self.shared.readers)
        .await
        .map_err(|e| self.query_error("seen", e))
    }

    /// Records `pairs` (none of id 0, no repeats) in the current generation, inside an accept
    /// transaction, and returns those that were in neither generation.
    pub(crate) async fn record_seen(
        &self,
        conn: &mut SqliteConnection,
        current: Side,
        pairs: &[(NodeId, PacketId)],
    ) -> Result<HashSet<(NodeId, PacketId)>, StoreError> {
        const WHAT: &str = "accept";
        if pairs.is_empty() {
            return Ok(HashSet::new());
        }
        let list = pair_list(pairs.iter().map(|&(f, i)| (f.get(), i.get())));
        // In the other generation: seen, and not recorded again (an entry lives from its first
        // sighting, not its last, so a packet re-sent for ever is still forgotten in time).
        let older_sql = match current.other() {
            Side::A => {
                "SELECT value ->> 0, value ->> 1 FROM json_each(?1) \
                 WHERE EXISTS (SELECT 1 FROM seen_a WHERE from_node = value ->> 0 \
                                                     AND packet_id = value ->> 1)"
            }
            Side::B => {
                "SELECT value ->> 0, value ->> 1 FROM json_each(?1) \
                 WHERE EXISTS (SELECT 1 FROM seen_b WHERE from_node = value ->> 0 \
                                                     AND packet_id = value ->> 1)"
            }
        };
        let older = sqlx::query(older_sql)
            .bind(&list)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.query_error(WHAT, e))?;
        let older: HashSet<(NodeId, PacketId)> = older
            .iter()
            .map(|row| self.pair(row))
            .collect::<Result<_, _>>()?;
        let list = if older.is_empty() {
            list
        } else {
            pair_list(
                pairs
                    .iter()
                    .filter(|pair| !older.contains(pair))
                    .map(|&(f, i)| (f.get(), i.get())),
            )
        };
        let inserted = sqlx::query(current.insert_sql())
            .bind(&list)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.query_error(WHAT, e))?;
        inserted.iter().map(|row| self.pair(row)).collect()
    }

    /// Columns 0 and 1 of a seen-set row.
    fn pair(&self, row: &sqlx::sqlite::SqliteRow) -> Result<(NodeId, PacketId), StoreError> {
        let column = |index: usize| -> Result<u32, StoreError> {
            let value: i64 = row
                .try_get(index)
                .map_err(|e| self.corrupt(None, format!("seen-set entry: {e}")))?;
            u32::try_from(value)
                .map_err(|_| self.corrupt(None, format!("seen-set entry {value} is not a u32")))
        };
        Ok((NodeId::new(column(0)?), PacketId::new(column(1)?)))
    }
}
