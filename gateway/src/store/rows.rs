//! Reading rows back, and the lists statements take.
//!
//! Lists of keys go to SQLite as one JSON array bound to one parameter (`json_each(?1)`), so a
//! statement is the same text for any number of them and stays in the statement cache.

use std::fmt::Write as _;

use mesh_core::{NodeId, PacketId};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Delivery, DeliveryKey, Store, StoreError, class_of};

/// The most rows one multi-row INSERT carries. Statements are cut into power-of-two sizes up
/// to this, so the statement cache holds a handful of shapes instead of one per batch size.
const MAX_ROWS_PER_STATEMENT: usize = 512;

/// Rows for the next multi-row statement: the largest power of two not above `remaining`
/// (which is at least 1) or [`MAX_ROWS_PER_STATEMENT`].
pub(crate) fn statement_rows(remaining: usize) -> usize {
    let n = remaining.clamp(1, MAX_ROWS_PER_STATEMENT);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// `[[a,b],...]`.
pub(crate) fn pair_list<A, B>(pairs: impl IntoIterator<Item = (A, B)>) -> String
where
    A: std::fmt::Display,
    B: std::fmt::Display,
{
    let mut list = String::from("[");
    for (i, (a, b)) in pairs.into_iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        let _ = write!(list, "[{a},{b}]");
    }
    list.push(']');
    list
}

/// `[[destination,priority,message,leg],...]`.
pub(crate) fn key_list<'a>(keys: impl IntoIterator<Item = &'a DeliveryKey>) -> String {
    let mut list = String::from("[");
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        let _ = write!(
            list,
            "[{},{},{},{}]",
            k.destination, k.priority, k.message, k.leg
        );
    }
    list.push(']');
    list
}

/// [`Store::next`]'s SELECT; [`Store::delivery`] reads its columns. A delivery whose message
/// is missing is returned too (with NULLs), so it can be reported and set aside.
pub(crate) const NEXT: &str = "SELECT d.destination, d.priority, d.message, d.leg, \
         COALESCE(d.to_channel, m.channel), d.hops, d.attempts, m.id, m.from_node, m.packet_id, \
         m.source, m.channel, m.packet, m.enqueued_at, m.expires_at, m.origin \
     FROM delivery d LEFT JOIN message m ON m.id = d.message \
     WHERE d.destination = ?1 AND (m.id IS NULL OR m.expires_at > ?2) \
     ORDER BY d.priority, d.message, d.leg \
     LIMIT ?4 OFFSET ?3";

/// [`NEXT`], resuming after a key: the rows that follow `(priority, message, leg)` in drain
/// order, read straight from the primary key.
pub(crate) const NEXT_AFTER: &str = "SELECT d.destination, d.priority, d.message, d.leg, \
         COALESCE(d.to_channel, m.channel), d.hops, d.attempts, m.id, m.from_node, m.packet_id, \
         m.source, m.channel, m.packet, m.enqueued_at, m.expires_at, m.origin \
     FROM delivery d LEFT JOIN message m ON m.id = d.message \
     WHERE d.destination = ?1 AND (d.priority, d.message, d.leg) > (?3, ?4, ?5) \
         AND (m.id IS NULL OR m.expires_at > ?2) \
     ORDER BY d.priority, d.message, d.leg \
     LIMIT ?6";

/// [`NEXT`] from the front, leaving out a list of keys (`json_each(?3)`, as [`key_list`]
/// writes it): a worker's rows parked until their node is heard.
pub(crate) const NEXT_EXCEPT: &str = "SELECT d.destination, d.priority, d.message, d.leg, \
         COALESCE(d.to_channel, m.channel), d.hops, d.attempts, m.id, m.from_node, m.packet_id, \
         m.source, m.channel, m.packet, m.enqueued_at, m.expires_at, m.origin \
     FROM delivery d LEFT JOIN message m ON m.id = d.message \
     WHERE d.destination = ?1 AND (m.id IS NULL OR m.expires_at > ?2) \
         AND (d.priority, d.message, d.leg) NOT IN \
             (SELECT value ->> 1, value ->> 2, value ->> 3 FROM json_each(?3)) \
     ORDER BY d.priority, d.message, d.leg \
     LIMIT ?4";

impl Store {
    /// Decodes a row of [`NEXT`] for `destination`.
    pub(crate) async fn delivery(
        &self,
        row: &SqliteRow,
        destination: &str,
    ) -> Result<Delivery, StoreError> {
        let key_part = |index: usize, column: &str| -> Result<i64, StoreError> {
            row.try_get::<i64, _>(index).map_err(|e| {
                self.corrupt(None, format!("delivery for {destination}: {column}: {e}"))
            })
        };
        let key = DeliveryKey {
            destination: key_part(0, "destination")?,
            priority: key_part(1, "priority")?,
            message: key_part(2, "message")?,
            leg: key_part(3, "leg")?,
        };
        let at = || format!("{key} for {destination}");
        let bad = |column: &str, value: i64, expected: &str| {
            self.corrupt(
                Some(key),
                format!("{}: {column} is {value}, expected {expected}", at()),
            )
        };
        let int = |index: usize, column: &str| -> Result<i64, StoreError> {
            row.try_get::<i64, _>(index)
                .map_err(|e| self.corrupt(Some(key), format!("{}: {column}: {e}", at())))
        };
        let text = |index: usize, column: &str| -> Result<String, StoreError> {
            row.try_get::<String, _>(index)
                .map_err(|e| self.corrupt(Some(key), format!("{}: {column}: {e}", at())))
        };

        let message: Option<i64> = row
            .try_get(7)
            .map_err(|e| self.corrupt(Some(key), format!("{}: message.id: {e}", at())))?;
        if message.is_none() {
            return Err(self.corrupt(
                Some(key),
                format!("{}: its message {} is missing", at(), key.message),
            ));
        }
        let class = class_of(key.priority)
            .ok_or_else(|| bad("priority", key.priority, "a class rank 0..=3"))?;
        let hops = int(5, "hops")?;
        let attempts = int(6, "attempts")?;
        let from = int(8, "from_node")?;
        let id = int(9, "packet_id")?;
        let source: Option<i64> = row
            .try_get(10)
            .map_err(|e| self.corrupt(Some(key), format!("{}: source: {e}", at())))?;
        let source = match source {
            None => None,
            Some(source) => Some(self.endpoint_name(source).await?.ok_or_else(|| {
                self.corrupt(
                    Some(key),
                    format!("{}: source is endpoint #{source}, which has no name", at()),
                )
            })?),
        };
        let origin: Option<i64> = row
            .try_get(15)
            .map_err(|e| self.corrupt(Some(key), format!("{}: origin: {e}", at())))?;
        let origin = match origin {
            None => None,
            Some(o) => Some(NodeId::new(
                u32::try_from(o).map_err(|_| bad("origin", o, "a u32"))?,
            )),
        };
        Ok(Delivery {
            key,
            origin,
            destination: destination.to_owned(),
            from: NodeId::new(u32::try_from(from).map_err(|_| bad("from_node", from, "a u32"))?),
            id: PacketId::new(u32::try_from(id).map_err(|_| bad("packet_id", id, "a u32"))?),
            class,
            source,
            channel: text(11, "channel")?,
            to_channel: text(4, "to_channel")?,
            hops: u8::try_from(hops).map_err(|_| bad("hops", hops, "0..=255"))?,
            packet: row
                .try_get::<Vec<u8>, _>(12)
                .map_err(|e| self.corrupt(Some(key), format!("{}: packet: {e}", at())))?,
            attempts: u32::try_from(attempts).map_err(|_| bad("attempts", attempts, "a u32"))?,
            enqueued_at: int(13, "enqueued_at")?,
            expires_at: int(14, "expires_at")?,
        })
    }

    /// The id of an endpoint name, if it was ever used.
    pub(crate) fn endpoint_id(&self, name: &str) -> Option<i64> {
        self.shared
            .endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .id(name)
    }

    /// The name of an endpoint id; reads the table again if it is not known yet (a commit
    /// that added it may have just become visible).
    pub(crate) async fn endpoint_name(&self, id: i64) -> Result<Option<String>, StoreError> {
        if let Some(name) = self.known_name(id) {
            return Ok(Some(name));
        }
        self.reload_endpoints().await?;
        Ok(self.known_name(id))
    }

    /// The name of an endpoint id, from memory.
    pub(crate) fn known_name(&self, id: i64) -> Option<String> {
        self.shared
            .endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .name(id)
            .map(str::to_owned)
    }

    /// Reads the endpoint table again through a reader.
    pub(crate) async fn reload_endpoints(&self) -> Result<(), StoreError> {
        let endpoints =
            super::books::Endpoints::load(&self.shared.readers, &self.shared.path).await?;
        *self
            .shared
            .endpoints
            .write()
            .unwrap_or_else(|p| p.into_inner()) = endpoints;
        Ok(())
    }

    /// A display name for an endpoint id, even one without a name (`#7`).
    pub(crate) fn name_or_number(&self, id: i64) -> String {
        self.known_name(id).unwrap_or_else(|| format!("#{id}"))
    }
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
    fn lists_are_json_arrays() {
        assert_eq!(pair_list([(1, 2)]), "[[1,2]]");
        assert_eq!(pair_list([(3, -4), (5, 6)]), "[[3,-4],[5,6]]");
        assert_eq!(pair_list(Vec::<(u8, u8)>::new()), "[]");
        let key = DeliveryKey {
            destination: 1,
            priority: 2,
            message: 300,
            leg: 0,
        };
        assert_eq!(key_list([&key, &key]), "[[1,2,300,0],[1,2,300,0]]");
    }
}
