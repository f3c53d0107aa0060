//! A destination's queue: what its worker reads ([`Store::next`]) and what it reports back
//! (confirm, fail, note, reject), and the queue figures for status pages.

use std::collections::HashSet;
use std::fmt::Write as _;

use mesh_core::Class;
use sqlx::{Row, SqliteConnection};

use super::rows::{NEXT, key_list};
use super::schema::Durability;
use super::{Delivery, DeliveryKey, Depth, Millis, QueueInfo, Sent, Store, StoreError};

impl Store {
    /// Queued deliveries of one destination not expired at `now`, in drain order (most urgent
    /// class first, then oldest first), at most `limit`, skipping the first `skip` (a worker
    /// with deliveries in flight asks past them). Deliveries stay queued until confirmed,
    /// rejected or expired: calling this twice returns them twice.
    ///
    /// `skip` counts positions, so a delivery queued ahead of those in flight (a more urgent
    /// class) shifts the window by one: a worker should recognise what it has in flight by
    /// [`DeliveryKey`].
    pub async fn next(
        &self,
        destination: &str,
        now: Millis,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        const WHAT: &str = "next";
        let id = match self.endpoint_id(destination) {
            Some(id) => id,
            None => {
                self.reload_endpoints().await?;
                match self.endpoint_id(destination) {
                    Some(id) => id,
                    None => return Ok(Vec::new()),
                }
            }
        };
        let rows = sqlx::query(NEXT)
            .bind(id)
            .bind(now)
            .bind(i64::try_from(skip).unwrap_or(i64::MAX))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.shared.readers)
            .await
            .map_err(|e| self.query_error(WHAT, e))?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            deliveries.push(self.delivery(row, destination).await?);
        }
        Ok(deliveries)
    }

    /// Like [`Store::next`], but only rows after `after` in drain order: a worker that sent
    /// everything up to `after` reads on from there instead of past its rows in flight again.
    pub async fn next_after(
        &self,
        destination: &str,
        now: Millis,
        after: DeliveryKey,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        const WHAT: &str = "next";
        if self.endpoint_id(destination) != Some(after.destination) {
            return self.next(destination, now, 0, limit).await;
        }
        let rows = sqlx::query(super::rows::NEXT_AFTER)
            .bind(after.destination)
            .bind(now)
            .bind(after.priority)
            .bind(after.message)
            .bind(after.leg)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.shared.readers)
            .await
            .map_err(|e| self.query_error(WHAT, e))?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            deliveries.push(self.delivery(row, destination).await?);
        }
        Ok(deliveries)
    }

    /// Like [`Store::next`] from the front, but leaving out the deliveries in `except` (a
    /// worker's rows parked until their node is heard), in SQLite rather than after reading
    /// them: they sit at the front of the queue (direct messages drain first).
    pub async fn next_except<'a>(
        &self,
        destination: &str,
        now: Millis,
        except: impl IntoIterator<Item = &'a DeliveryKey>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        const WHAT: &str = "next";
        let Some(id) = self.endpoint_id(destination) else {
            return self.next(destination, now, 0, limit).await;
        };
        let rows = sqlx::query(super::rows::NEXT_EXCEPT)
            .bind(id)
            .bind(now)
            .bind(key_list(except))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.shared.readers)
            .await
            .map_err(|e| self.query_error(WHAT, e))?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            deliveries.push(self.delivery(row, destination).await?);
        }
        Ok(deliveries)
    }

    /// Deletes delivered deliveries (and the messages left with none), and records the airtime
    /// of those that have one, all in one transaction. Keys no longer queued (expired,
    /// evicted, confirmed twice) are ignored, but their airtime is recorded all the same: it
    /// was spent.
    pub async fn confirm(&self, sent: &[Sent], now: Millis) -> Result<(), StoreError> {
        const WHAT: &str = "confirm";
        if sent.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin(WHAT, Durability::Normal).await?;
        let rows = sqlx::query(
            "DELETE FROM delivery WHERE (destination, priority, message, leg) IN \
                 (SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?1)) \
             RETURNING destination, priority, message",
        )
        .bind(key_list(sent.iter().map(|s| &s.key)))
        .fetch_all(tx.conn())
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        let mut released = HashSet::new();
        for row in &rows {
            let (destination, rank, message) = self.deleted(row)?;
            tx.books().remove(destination, rank, 1);
            released.insert(message);
        }
        self.release(tx.conn(), &released, WHAT).await?;
        self.record_airtime(tx.conn(), sent, now).await?;
        self.commit(tx).await
    }

    /// Counts a failed attempt: `attempts += 1`, `reason` kept as its last error. Returns the
    /// attempts now counted, or 0 if the delivery is no longer queued. Retry timing is the
    /// worker's (on monotonic time), not the store's.
    pub async fn fail(&self, key: DeliveryKey, reason: &str) -> Result<u32, StoreError> {
        const WHAT: &str = "fail";
        let mut tx = self.begin(WHAT, Durability::Normal).await?;
        let attempts: Option<i64> = sqlx::query_scalar(
            "UPDATE delivery SET attempts = attempts + 1, last_error = ?5 \
             WHERE destination = ?1 AND priority = ?2 AND message = ?3 AND leg = ?4 \
             RETURNING attempts",
        )
        .bind(key.destination)
        .bind(key.priority)
        .bind(key.message)
        .bind(key.leg)
        .bind(reason)
        .fetch_optional(tx.conn())
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        self.commit(tx).await?;
        match attempts {
            Some(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
            None => {
                tracing::debug!(%key, "failure of a delivery no longer queued");
                Ok(0)
            }
        }
    }

    /// Records why a delivery waits without counting an attempt (the destination is
    /// unreachable: not the delivery's fault). Writes nothing when the reason is the one
    /// already recorded, so a link that keeps dropping costs one write per change of reason.
    pub async fn note(&self, key: DeliveryKey, reason: &str) -> Result<(), StoreError> {
        const WHAT: &str = "note";
        let mut tx = self.begin(WHAT, Durability::Normal).await?;
        sqlx::query(
            "UPDATE delivery SET last_error = ?5 \
             WHERE destination = ?1 AND priority = ?2 AND message = ?3 AND leg = ?4 \
                 AND last_error IS NOT ?5",
        )
        .bind(key.destination)
        .bind(key.priority)
        .bind(key.message)
        .bind(key.leg)
        .bind(reason)
        .execute(tx.conn())
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        self.commit(tx).await
    }

    /// Moves a delivery the destination refused for good (or a damaged one) to the dead-letter
    /// table, with `reason` and the time. A key no longer queued is ignored.
    pub async fn reject(
        &self,
        key: DeliveryKey,
        reason: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        const WHAT: &str = "reject";
        let mut tx = self.begin(WHAT, Durability::Normal).await?;
        sqlx::query(
            "INSERT INTO dead_letter (destination, source, from_node, packet_id, priority, \
                 channel, to_channel, hops, packet, enqueued_at, expires_at, attempts, \
                 last_error, rejected_at, reason) \
             SELECT COALESCE(e.name, '#' || d.destination), \
                 CASE WHEN m.source IS NULL THEN NULL ELSE COALESCE(s.name, '#' || m.source) END, \
                 m.from_node, m.packet_id, d.priority, m.channel, \
                 COALESCE(d.to_channel, m.channel), d.hops, m.packet, m.enqueued_at, \
                 m.expires_at, d.attempts, d.last_error, ?5, ?6 \
             FROM delivery d \
                 LEFT JOIN message m ON m.id = d.message \
                 LEFT JOIN endpoint e ON e.id = d.destination \
                 LEFT JOIN endpoint s ON s.id = m.source \
             WHERE d.destination = ?1 AND d.priority = ?2 AND d.message = ?3 AND d.leg = ?4",
        )
        .bind(key.destination)
        .bind(key.priority)
        .bind(key.message)
        .bind(key.leg)
        .bind(now)
        .bind(reason)
        .execute(tx.conn())
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        let deleted = sqlx::query(
            "DELETE FROM delivery \
             WHERE destination = ?1 AND priority = ?2 AND message = ?3 AND leg = ?4 \
             RETURNING destination, priority, message",
        )
        .bind(key.destination)
        .bind(key.priority)
        .bind(key.message)
        .bind(key.leg)
        .fetch_optional(tx.conn())
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        match deleted {
            Some(row) => {
                let (destination, rank, message) = self.deleted(&row)?;
                tx.books().remove(destination, rank, 1);
                self.release(tx.conn(), &HashSet::from([message]), WHAT)
                    .await?;
            }
            None => tracing::debug!(%key, "reject of a delivery no longer queued"),
        }
        self.commit(tx).await
    }

    /// Queued deliveries per destination and class (non-empty ones), sorted by destination,
    /// then class. Served from memory.
    pub async fn depths(&self) -> Result<Vec<Depth>, StoreError> {
        let counts = self.counts().await?;
        let mut depths: Vec<Depth> = counts
            .into_iter()
            .flat_map(|(destination, counts)| {
                Class::ALL
                    .into_iter()
                    .zip(counts)
                    .filter(|&(_, count)| count > 0)
                    .map(move |(class, count)| Depth {
                        destination: destination.clone(),
                        class,
                        count,
                    })
            })
            .collect();
        depths.sort_by(|a, b| (&a.destination, a.class).cmp(&(&b.destination, b.class)));
        Ok(depths)
    }

    /// Every destination with deliveries queued, whether or not it is still configured:
    /// how many, when the oldest was accepted, and the most urgent class waiting. Sorted by
    /// destination.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let mut queues = Vec::new();
        for (destination, counts) in self.counts_by_id().await? {
            let count: u64 = counts.iter().sum();
            if count == 0 {
                continue;
            }
            // The front of each class is its oldest; message ids grow with arrival.
            let mut oldest: Option<Millis> = None;
            for (rank, _) in counts.iter().enumerate().filter(|&(_, &n)| n > 0) {
                let front: Option<Option<Millis>> = sqlx::query_scalar(
                    "SELECT m.enqueued_at FROM delivery d LEFT JOIN message m \
                         ON m.id = d.message \
                     WHERE d.destination = ?1 AND d.priority = ?2 \
                     ORDER BY d.message, d.leg LIMIT 1",
                )
                .bind(destination)
                .bind(rank as i64)
                .fetch_optional(&self.shared.readers)
                .await
                .map_err(|e| self.query_error("queues", e))?;
                if let Some(Some(at)) = front {
                    oldest = Some(oldest.map_or(at, |o| o.min(at)));
                }
            }
            queues.push(QueueInfo {
                destination: self.name_or_number(destination),
                count,
                oldest,
                most_urgent: Class::ALL
                    .into_iter()
                    .zip(counts)
                    .find(|&(_, n)| n > 0)
                    .map(|(class, _)| class),
            });
        }
        queues.sort_by(|a, b| a.destination.cmp(&b.destination));
        Ok(queues)
    }

    /// Deliveries in the dead-letter table.
    pub async fn dead_letters(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letter")
            .fetch_one(&self.shared.readers)
            .await
            .map_err(|e| self.query_error("dead_letters", e))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The in-memory depths by destination name.
    async fn counts(&self) -> Result<Vec<(String, [u64; super::CLASSES])>, StoreError> {
        let by_id = self.counts_by_id().await?;
        let mut named = Vec::with_capacity(by_id.len());
        for (id, counts) in by_id {
            let name = match self.endpoint_name(id).await? {
                Some(name) => name,
                None => format!("#{id}"),
            };
            named.push((name, counts));
        }
        Ok(named)
    }

    /// The in-memory depths, reloaded first if they may be out of step.
    async fn counts_by_id(&self) -> Result<Vec<(i64, [u64; super::CLASSES])>, StoreError> {
        let mut writing = self.shared.writing.lock().await;
        if writing.books.stale {
            // No write is under way (we hold the lock), so a read sees the latest commit.
            let mut conn = self
                .shared
                .readers
                .acquire()
                .await
                .map_err(|e| self.query_error("depths", e))?;
            writing.books.depth = super::books::load_depths(&mut conn, &self.shared.path).await?;
            writing.books.stale = false;
        }
        Ok(writing
            .books
            .depth
            .iter()
            .filter(|(_, counts)| counts.iter().any(|&n| n > 0))
            .map(|(&id, &counts)| (id, counts))
            .collect())
    }

    /// Deletes those of `messages` (which just lost a delivery) that have none left. Their
    /// deliveries share their priority, so the look-up is one primary-key seek per endpoint:
    /// reads only, where a count of deliveries left would rewrite the message's page at every
    /// confirm.
    pub(crate) async fn release(
        &self,
        conn: &mut SqliteConnection,
        messages: &HashSet<i64>,
        what: &'static str,
    ) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut list = String::from("[");
        for (i, message) in messages.iter().enumerate() {
            if i > 0 {
                list.push(',');
            }
            let _ = write!(list, "{message}");
        }
        list.push(']');
        sqlx::query(
            "DELETE FROM message \
             WHERE id IN (SELECT value FROM json_each(?1)) \
               AND NOT EXISTS (SELECT 1 FROM delivery d \
                               WHERE d.destination IN (SELECT id FROM endpoint) \
                                 AND d.priority = message.priority AND d.message = message.id)",
        )
        .bind(&list)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.query_error(what, e))?;
        Ok(())
    }

    /// A `RETURNING destination, priority, message` row.
    pub(crate) fn deleted(
        &self,
        row: &sqlx::sqlite::SqliteRow,
    ) -> Result<(i64, i64, i64), StoreError> {
        let column = |index: usize, name: &str| -> Result<i64, StoreError> {
            row.try_get(index)
                .map_err(|e| self.corrupt(None, format!("delivery.{name}: {e}")))
        };
        Ok((
            column(0, "destination")?,
            column(1, "priority")?,
            column(2, "message")?,
        ))
    }
}
