//! Keeping stored times true across a wall-clock step (see `crate::clock` for the rule): every
//! message keeps the age, and so the life left, it had before the step.

use super::schema::Durability;
use super::{Millis, Store, StoreError};
use crate::clock::Step;

impl Store {
    /// Moves the times stamped by the clock before `step` (messages' `enqueued_at` and
    /// `expires_at`, airtime records, the seen-set generation's start) by `step.delta`, so each keeps its age under the new
    /// clock; returns how many messages moved.
    ///
    /// Which stamps are old: after a step forward, every one at or before `step.old_now` (the
    /// new clock's are later by more than the step's tolerance). After a step back, the new
    /// clock's are within `step.within` of `step.new_now`, so every stamp outside that span is
    /// old; an old one inside it (stamped exactly a step ago) cannot be told apart and is left
    /// as it is: it then lives the step longer, never forever.
    pub async fn rebase(&self, step: Step) -> Result<u64, StoreError> {
        const WHAT: &str = "rebase";
        // Old stamps are those with `t <= below` or `t > above`.
        let (below, above) = if step.delta > 0 {
            (step.old_now, Millis::MAX)
        } else {
            let since = step
                .new_now
                .saturating_sub(step.within)
                .saturating_sub(1_000);
            (since.saturating_sub(1), step.new_now)
        };
        let mut tx = self.begin(WHAT, Durability::Full).await?;
        let moved = sqlx::query(
            "UPDATE message SET enqueued_at = enqueued_at + ?1, expires_at = expires_at + ?1 \
             WHERE enqueued_at <= ?2 OR enqueued_at > ?3",
        )
        .bind(step.delta)
        .bind(below)
        .bind(above)
        .execute(tx.conn())
        .await
        .map_err(|e| self.query_error(WHAT, e))?
        .rows_affected();
        sqlx::query("UPDATE airtime SET at = at + ?1 WHERE at <= ?2 OR at > ?3")
            .bind(step.delta)
            .bind(below)
            .bind(above)
            .execute(tx.conn())
            .await
            .map_err(|e| self.query_error(WHAT, e))?;
        // The seen-set's generation keeps its age too: a step forward must not rotate it (and
        // forget the older generation a window early), nor a step back hold it.
        let started = tx.books().seen.started;
        if let Some(started) = started.filter(|&t| t <= below || t > above) {
            let moved = started.saturating_add(step.delta);
            sqlx::query("UPDATE seen_generation SET started = ?1 WHERE only = 0")
                .bind(moved)
                .execute(tx.conn())
                .await
                .map_err(|e| self.query_error(WHAT, e))?;
            tx.books().seen.started = Some(moved);
        }
        // The next airtime prune must not wait for a time the clock has left.
        tx.books().airtime_pruned = None;
        self.commit(tx).await?;
        Ok(moved)
    }

    /// Brings back to `now` the messages stamped later than `now` (the clock went back while
    /// the gateway was stopped), keeping the life each had left: none then lives longer than
    /// its TTL from now. Returns how many moved. Called at start; a scan of the message table,
    /// which at start is cheap beside loading the queues.
    pub async fn clamp_future(&self, now: Millis) -> Result<u64, StoreError> {
        const WHAT: &str = "clamp_future";
        let mut tx = self.begin(WHAT, Durability::Full).await?;
        let moved = sqlx::query(
            "UPDATE message SET expires_at = expires_at - (enqueued_at - ?1), enqueued_at = ?1 \
             WHERE enqueued_at > ?1",
        )
        .bind(now)
        .execute(tx.conn())
        .await
        .map_err(|e| self.query_error(WHAT, e))?
        .rows_affected();
        sqlx::query("UPDATE airtime SET at = ?1 WHERE at > ?1")
            .bind(now)
            .execute(tx.conn())
            .await
            .map_err(|e| self.query_error(WHAT, e))?;
        self.commit(tx).await?;
        Ok(moved)
    }
}
