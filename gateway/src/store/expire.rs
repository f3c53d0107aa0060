//! Dropping what waited too long, without an index on expiry times.
//!
//! Within one (destination, class) every delivery has the same time to live and they arrive in
//! message order, so the expired ones are a prefix of that class's part of the primary key.
//! [`Store::expire`] reads each prefix from the front in bounded chunks and stops at the first
//! delivery not expired. Each transaction deletes at most [`CHUNK`] deliveries, so a sweep
//! after a long partition never holds the writer for long: accepts get in between.

use std::collections::{BTreeMap, HashSet};

use mesh_core::Class;
use sqlx::Row;

use super::schema::Durability;
use super::{CLASSES, Expired, Millis, Store, StoreError};

/// The most deliveries one expiry transaction deletes.
const CHUNK: usize = 512;

/// Deliveries read from the front of one class at a time: most sweeps find the first one live.
const STEP: usize = 64;

impl Store {
    /// Deletes the deliveries whose message's `expires_at` is at or before `now` (and the
    /// messages left with none), and says how many went per destination and class, sorted by
    /// destination then class. Also prunes airtime records older than the airtime window.
    pub async fn expire(&self, now: Millis) -> Result<Vec<Expired>, StoreError> {
        const WHAT: &str = "expire";
        let mut expired: BTreeMap<(i64, usize), u64> = BTreeMap::new();
        // The (destination, class) queues still to walk, from the books of the first
        // transaction (reloaded by `begin` if stale); one is done at its first live delivery.
        let mut groups: Option<Vec<(i64, usize)>> = None;
        loop {
            let mut tx = self.begin(WHAT, Durability::Normal).await?;
            if groups.is_none() {
                let (conn, books) = tx.parts();
                self.prune_airtime(conn, books, now).await?;
                let mut all: Vec<(i64, usize)> = tx
                    .books()
                    .depth
                    .iter()
                    .flat_map(|(&destination, counts)| {
                        (0..CLASSES)
                            .filter(|&rank| counts[rank] > 0)
                            .map(move |rank| (destination, rank))
                    })
                    .collect();
                all.sort_unstable_by(|a, b| b.cmp(a));
                groups = Some(all);
            }
            let groups = groups.as_mut().expect("filled above");
            let mut budget = CHUNK;
            let mut released: HashSet<i64> = HashSet::new();
            while let Some(&(destination, rank)) = groups.last() {
                if budget == 0 {
                    break;
                }
                let step = budget.min(STEP);
                let front = sqlx::query(
                    "SELECT d.message, d.leg, m.expires_at \
                     FROM delivery d LEFT JOIN message m ON m.id = d.message \
                     WHERE d.destination = ?1 AND d.priority = ?2 \
                     ORDER BY d.message, d.leg LIMIT ?3",
                )
                .bind(destination)
                .bind(rank as i64)
                .bind(step as i64)
                .fetch_all(tx.conn())
                .await
                .map_err(|e| self.query_error(WHAT, e))?;
                // The expired prefix; a delivery without a message stops it (next() reports it).
                let mut last = None;
                let mut count = 0usize;
                for row in &front {
                    let expires_at: Option<Millis> = row
                        .try_get(2)
                        .map_err(|e| self.corrupt(None, format!("message.expires_at: {e}")))?;
                    if expires_at.is_none_or(|at| at > now) {
                        break;
                    }
                    let message: i64 = row
                        .try_get(0)
                        .map_err(|e| self.corrupt(None, format!("delivery.message: {e}")))?;
                    let leg: i64 = row
                        .try_get(1)
                        .map_err(|e| self.corrupt(None, format!("delivery.leg: {e}")))?;
                    last = Some((message, leg));
                    count += 1;
                }
                if count < step {
                    // A live delivery, or the end of the queue: this class is done.
                    groups.pop();
                }
                let Some((message, leg)) = last else {
                    continue;
                };
                let deleted = sqlx::query(
                    "DELETE FROM delivery \
                     WHERE destination = ?1 AND priority = ?2 AND (message, leg) <= (?3, ?4) \
                     RETURNING destination, priority, message",
                )
                .bind(destination)
                .bind(rank as i64)
                .bind(message)
                .bind(leg)
                .fetch_all(tx.conn())
                .await
                .map_err(|e| self.query_error(WHAT, e))?;
                for row in &deleted {
                    let (_, _, message) = self.deleted(row)?;
                    released.insert(message);
                }
                let n = deleted.len() as u64;
                tx.books().remove(destination, rank as i64, n);
                *expired.entry((destination, rank)).or_default() += n;
                budget = budget.saturating_sub(deleted.len());
            }
            let done = groups.is_empty();
            self.release(tx.conn(), &released, WHAT).await?;
            self.commit(tx).await?;
            if done {
                break;
            }
        }

        let mut out: Vec<Expired> = expired
            .into_iter()
            .filter(|&(_, count)| count > 0)
            .map(|((destination, rank), count)| Expired {
                destination: self.name_or_number(destination),
                class: Class::ALL[rank],
                count,
            })
            .collect();
        out.sort_by(|a, b| (&a.destination, a.class).cmp(&(&b.destination, b.class)));
        Ok(out)
    }
}
