//! Accepting a batch: the seen-set, one message row per new item, one delivery row per
//! destination under the size cap, all in one FULL transaction.

use std::collections::{HashMap, HashSet, VecDeque};

use mesh_core::Class;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::rows::statement_rows;
use super::schema::Durability;
use super::{Accepted, CLASSES, Inbound, Millis, NewDelivery, Store, StoreError};

/// A new item's message row, planned in memory before anything is written.
struct PlannedMessage<'a> {
    /// The item.
    item: &'a Inbound,
    /// When it was accepted.
    now: Millis,
    /// Its id (handed out by the books).
    id: i64,
    /// `endpoint.id` of its source.
    source: i64,
    /// Deliveries still planned: the row is written only if some are left.
    live: i64,
}

/// A delivery row planned in memory.
struct PlannedRow<'a> {
    /// Index of its message in the plan.
    message: usize,
    /// Its message's id.
    message_id: i64,
    /// Its message's class rank.
    rank: i64,
    /// `endpoint.id` of the destination.
    destination: i64,
    /// Its leg among the message's deliveries to this destination.
    leg: i64,
    /// What the caller asked for.
    delivery: &'a NewDelivery,
    /// False once a later item of the same batch evicted it.
    alive: bool,
}

impl Store {
    /// Accepts a batch in one transaction, all at time `now`. For each item: record (from, id)
    /// in the seen-set (id 0 is never deduplicated nor recorded); if it was new, store its
    /// packet once and queue its deliveries under the size cap, and answer [`Accepted::New`],
    /// else [`Accepted::Duplicate`]. A repeat within the batch is a duplicate too. The answers
    /// are in the order of `batch`; when this returns `Ok`, all of it is on disk (the commit is
    /// `synchronous = FULL`).
    pub async fn accept(
        &self,
        batch: &[Inbound],
        now: Millis,
    ) -> Result<Vec<Accepted>, StoreError> {
        let items: Vec<(&Inbound, Millis)> = batch.iter().map(|item| (item, now)).collect();
        self.accept_timed(&items).await
    }

    /// [`Store::accept`] with a time per item (the [`Writer`](super::Writer) batches items
    /// submitted at different times).
    pub(crate) async fn accept_timed(
        &self,
        items: &[(&Inbound, Millis)],
    ) -> Result<Vec<Accepted>, StoreError> {
        const WHAT: &str = "accept";
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin(WHAT, Durability::Full).await?;

        // Which items are new: first within the batch, then against both generations.
        let mut new = vec![false; items.len()];
        let mut in_batch = HashSet::with_capacity(items.len());
        let mut to_record = Vec::with_capacity(items.len());
        for (i, &(item, _)) in items.iter().enumerate() {
            if item.id.is_unset() {
                new[i] = true;
            } else if in_batch.insert((item.from, item.id)) {
                new[i] = true;
                to_record.push((item.from, item.id));
            }
        }
        let current = tx.books().seen.current;
        let recorded = self.record_seen(tx.conn(), current, &to_record).await?;
        for (i, &(item, _)) in items.iter().enumerate() {
            if new[i] && !item.id.is_unset() && !recorded.contains(&(item.from, item.id)) {
                new[i] = false;
            }
        }

        // Endpoint ids, adding the names never used before.
        let mut added: Vec<(i64, String)> = Vec::new();
        let mut ids: HashMap<&str, i64> = HashMap::new();
        for (i, &(item, _)) in items.iter().enumerate() {
            if !new[i] || item.deliveries.is_empty() {
                continue;
            }
            let names = std::iter::once(item.source.as_str())
                .chain(item.deliveries.iter().map(|d| d.destination.as_str()));
            for name in names {
                if ids.contains_key(name) {
                    continue;
                }
                let id = match self.endpoint_id(name) {
                    Some(id) => id,
                    None => {
                        let id = self.add_endpoint(tx.conn(), name).await?;
                        added.push((id, name.to_owned()));
                        id
                    }
                };
                ids.insert(name, id);
            }
        }

        // The plan: message ids, legs, and the cap, in memory first. A victim of the cap is the
        // oldest delivery of its class: in the table if the table has one (it is older than all
        // of this batch), else one planned earlier in this batch, which is then never written.
        let cap = self.shared.max_per_destination;
        let mut answers = Vec::with_capacity(items.len());
        let mut messages: Vec<PlannedMessage<'_>> = Vec::new();
        let mut rows: Vec<PlannedRow<'_>> = Vec::new();
        let mut planned: HashMap<(i64, usize), VecDeque<usize>> = HashMap::new();
        let mut released: HashSet<i64> = HashSet::new();
        for (i, &(item, now)) in items.iter().enumerate() {
            if !new[i] {
                answers.push(Accepted::Duplicate);
                continue;
            }
            let mut refused = Vec::new();
            let mut evicted = Vec::new();
            if item.deliveries.is_empty() {
                answers.push(Accepted::New { refused, evicted });
                continue;
            }
            let slot = messages.len();
            let (conn, books) = tx.parts();
            let id = books.next_message;
            books.next_message += 1;
            messages.push(PlannedMessage {
                item,
                now,
                id,
                source: ids[item.source.as_str()],
                live: 0,
            });
            let rank = usize::from(item.class.rank());
            let mut legs: HashMap<i64, i64> = HashMap::new();
            'deliveries: for delivery in &item.deliveries {
                let destination = ids[delivery.destination.as_str()];
                let depth = books.depth.entry(destination).or_default();
                while depth.iter().sum::<u64>() >= cap {
                    // The least urgent class at or below the incoming one's urgency.
                    let Some(victim) = (rank..CLASSES).rev().find(|&r| depth[r] > 0) else {
                        refused.push(delivery.destination.clone());
                        continue 'deliveries;
                    };
                    let in_batch = planned.get(&(destination, victim)).map_or(0, VecDeque::len);
                    let in_table = depth[victim] - in_batch as u64;
                    if in_table > 0 {
                        if let Some(message) = self.evict(conn, destination, victim).await? {
                            released.insert(message);
                        } else {
                            // The count was wrong: correct it, look again, reload after commit.
                            tracing::warn!(
                                path = %self.shared.path.display(),
                                destination = %delivery.destination,
                                class = %Class::ALL[victim], counted = depth[victim],
                                "queue depth out of step with the table"
                            );
                            depth[victim] = in_batch as u64;
                            books.resync = true;
                            continue;
                        }
                    } else {
                        let index = planned
                            .get_mut(&(destination, victim))
                            .and_then(VecDeque::pop_front)
                            .expect("a class with no row in the table has one in the batch");
                        rows[index].alive = false;
                        messages[rows[index].message].live -= 1;
                    }
                    depth[victim] -= 1;
                    evicted.push((delivery.destination.clone(), Class::ALL[victim]));
                    break;
                }
                depth[rank] += 1;
                let leg = legs.entry(destination).or_default();
                planned
                    .entry((destination, rank))
                    .or_default()
                    .push_back(rows.len());
                rows.push(PlannedRow {
                    message: slot,
                    message_id: id,
                    rank: rank as i64,
                    destination,
                    leg: *leg,
                    delivery,
                    alive: true,
                });
                *leg += 1;
                messages[slot].live += 1;
            }
            answers.push(Accepted::New { refused, evicted });
        }

        // The writes.
        let messages: Vec<&PlannedMessage<'_>> = messages.iter().filter(|m| m.live > 0).collect();
        self.insert_messages(tx.conn(), &messages).await?;
        let rows: Vec<&PlannedRow<'_>> = rows.iter().filter(|r| r.alive).collect();
        self.insert_deliveries(tx.conn(), &rows).await?;
        self.release(tx.conn(), &released, WHAT).await?;
        self.commit(tx).await?;

        if !added.is_empty() {
            let mut endpoints = self
                .shared
                .endpoints
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for (id, name) in added {
                endpoints.add(id, name);
            }
        }
        Ok(answers)
    }

    /// Adds an endpoint name (or finds it, if it was added behind the store's back).
    async fn add_endpoint(
        &self,
        conn: &mut SqliteConnection,
        name: &str,
    ) -> Result<i64, StoreError> {
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO endpoint (name) VALUES (?1) ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.query_error("accept", e))?;
        match inserted {
            Some(id) => Ok(id),
            None => sqlx::query_scalar("SELECT id FROM endpoint WHERE name = ?1")
                .bind(name)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| self.query_error("accept", e)),
        }
    }

    /// Deletes the oldest delivery of one class of one destination (the cap's victim) and
    /// returns its message, or `None` if that destination has no delivery of that class.
    async fn evict(
        &self,
        conn: &mut SqliteConnection,
        destination: i64,
        rank: usize,
    ) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "DELETE FROM delivery WHERE (destination, priority, message, leg) = \
                 (SELECT destination, priority, message, leg FROM delivery \
                  WHERE destination = ?1 AND priority = ?2 ORDER BY message, leg LIMIT 1) \
             RETURNING message",
        )
        .bind(destination)
        .bind(rank as i64)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.query_error("accept", e))
    }

    /// Inserts message rows in multi-row statements.
    async fn insert_messages(
        &self,
        conn: &mut SqliteConnection,
        messages: &[&PlannedMessage<'_>],
    ) -> Result<(), StoreError> {
        let mut rest = messages;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(statement_rows(rest.len()));
            rest = tail;
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO message (id, from_node, packet_id, priority, source, channel, packet, \
                 enqueued_at, expires_at, origin) ",
            );
            insert.push_values(chunk, |mut row, m| {
                row.push_bind(m.id)
                    .push_bind(i64::from(m.item.from.get()))
                    .push_bind(i64::from(m.item.id.get()))
                    .push_bind(i64::from(m.item.class.rank()))
                    .push_bind(m.source)
                    .push_bind(m.item.channel.as_str())
                    .push_bind(m.item.packet.as_slice())
                    .push_bind(m.now)
                    .push_bind(m.item.expires_at)
                    .push_bind(m.item.origin.map(|o| i64::from(o.get())));
            });
            insert
                .build()
                .execute(&mut *conn)
                .await
                .map_err(|e| self.query_error("accept", e))?;
        }
        Ok(())
    }

    /// Inserts delivery rows in multi-row statements.
    async fn insert_deliveries(
        &self,
        conn: &mut SqliteConnection,
        rows: &[&PlannedRow<'_>],
    ) -> Result<(), StoreError> {
        let mut rest = rows;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(statement_rows(rest.len()));
            rest = tail;
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO delivery (destination, priority, message, leg, to_channel, hops) ",
            );
            insert.push_values(chunk, |mut row, r| {
                row.push_bind(r.destination)
                    .push_bind(r.rank)
                    .push_bind(r.message_id)
                    .push_bind(r.leg)
                    .push_bind(r.delivery.to_channel.as_deref())
                    .push_bind(i64::from(r.delivery.hops));
            });
            insert
                .build()
                .execute(&mut *conn)
                .await
                .map_err(|e| self.query_error("accept", e))?;
        }
        Ok(())
    }
}
