//! What each radio put on the air, kept so an airtime governor restarted after a crash (or two
//! quick restarts) still counts what it spent within its window.
//!
//! Rows are written in the transaction that confirms the delivery ([`Store::confirm`]), with the
//! caller's wall clock, and pruned by [`Store::expire`] beyond
//! [`StoreConfig::airtime_window`](super::StoreConfig::airtime_window), at most every sixteenth
//! of the window (so a page of old rows goes at once, not a row, and a page write, per sweep).
//! They arrive in time order, so pruning walks from the front and stops at the first row still
//! in the window: no index, no scan. A clock that went back leaves a few rows behind a younger
//! one a little longer, which only costs their bytes ([`Store::airtime_since`] filters on
//! time).

use std::fmt::Write as _;
use std::time::Duration;

use sqlx::SqliteConnection;

use super::{Millis, Sent, Store, StoreError};

impl Store {
    /// What `destination` put on the air at or after `since`: (when, how long), oldest first.
    /// Empty for a destination never used.
    pub async fn airtime_since(
        &self,
        destination: &str,
        since: Millis,
    ) -> Result<Vec<(Millis, Duration)>, StoreError> {
        const WHAT: &str = "airtime_since";
        let Some(id) = self.endpoint_id(destination) else {
            return Ok(Vec::new());
        };
        let rows: Vec<(Millis, i64)> = sqlx::query_as(
            "SELECT at, micros FROM airtime WHERE destination = ?1 AND at >= ?2 ORDER BY rowid",
        )
        .bind(id)
        .bind(since)
        .fetch_all(&self.shared.readers)
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        Ok(rows
            .into_iter()
            .map(|(at, micros)| {
                (
                    at,
                    Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
                )
            })
            .collect())
    }

    /// Inserts the airtime of the confirmed deliveries that have one, at `now`.
    pub(crate) async fn record_airtime(
        &self,
        conn: &mut SqliteConnection,
        sent: &[Sent],
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut list = String::from("[");
        let mut any = false;
        for s in sent {
            let Some(airtime) = s.airtime else {
                continue;
            };
            if any {
                list.push(',');
            }
            any = true;
            let micros = i64::try_from(airtime.as_micros()).unwrap_or(i64::MAX);
            let _ = write!(list, "[{},{micros}]", s.key.destination);
        }
        list.push(']');
        if !any {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO airtime (destination, at, micros) \
             SELECT value ->> 0, ?2, value ->> 1 FROM json_each(?1)",
        )
        .bind(list)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.query_error("confirm", e))?;
        Ok(())
    }

    /// Deletes the airtime rows older than the window before `now`, from the front, unless
    /// that was done less than a sixteenth of the window ago.
    pub(crate) async fn prune_airtime(
        &self,
        conn: &mut SqliteConnection,
        books: &mut super::books::Books,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let window = self.shared.airtime_window;
        if books
            .airtime_pruned
            .is_some_and(|at| now >= at && now - at < window / 16)
        {
            return Ok(0);
        }
        books.airtime_pruned = Some(now);
        let cutoff = now.saturating_sub(window);
        let done = sqlx::query(
            "DELETE FROM airtime WHERE rowid < COALESCE( \
                 (SELECT rowid FROM airtime WHERE at >= ?1 ORDER BY rowid LIMIT 1), \
                 (SELECT MAX(rowid) + 1 FROM airtime))",
        )
        .bind(cutoff)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.query_error("expire", e))?;
        Ok(done.rows_affected())
    }
}
