//! Virtual nodes: the mesh identities the gateway gives to people of other worlds (XMPP users),
//! kept so that an owner is the same node, with the same key, across restarts.
//!
//! A node id is derived from its owner, so it is stable even if the store were lost: the first
//! four bytes (big-endian) of SHA-256 of [`LABEL`] and the owner; when that number is reserved
//! (0..=3, broadcast), known to a radio's node database (the caller's `taken`), or another
//! owner's, the owner is hashed again with a counter (`LABEL ‖ owner ‖ 0x00 ‖ n` as a
//! big-endian u32, n = 1, 2, ...). The private key is 32 bytes from the OS random generator,
//! kept in the store file and never in a log line or a `Debug` output; X25519 clamps it where
//! it is used.

use std::collections::HashSet;

use mesh_core::NodeId;
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::schema::Durability;
use super::{Millis, Store, StoreError};

/// What the owner is hashed with; changing it would move every virtual node to a new id.
pub const LABEL: &[u8] = b"archipel virtual node v1";

/// Candidate ids tried before giving up: with a few thousand nodes known out of four billion
/// numbers, more than a handful means something is wrong.
const MAX_TRIES: u32 = 1000;

/// A mesh identity the gateway holds for someone of another world.
#[derive(Clone, PartialEq, Eq)]
pub struct VirtualNode {
    /// Who it stands for (the bare JID of an XMPP user).
    pub owner: String,
    /// Its node number on the meshes.
    pub node: NodeId,
    /// Its x25519 private key. Never printed.
    pub secret: [u8; 32],
    /// When it was made (unix ms).
    pub created_at: Millis,
}

impl std::fmt::Debug for VirtualNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualNode")
            .field("owner", &self.owner)
            .field("node", &self.node)
            .field("secret", &"<32 bytes, not shown>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// The `attempt`-th candidate node number for `owner` (see the module doc).
pub fn candidate(owner: &str, attempt: u32) -> u32 {
    let mut h = Sha256::new();
    h.update(LABEL);
    h.update(owner.as_bytes());
    if attempt > 0 {
        h.update([0]);
        h.update(attempt.to_be_bytes());
    }
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Numbers no node may have: 0..=3 (reserved by the firmware) and broadcast.
pub fn is_reserved(num: u32) -> bool {
    num <= 3 || num == NodeId::BROADCAST.get()
}

/// The first of `candidates` that is neither reserved nor `taken`, with how many were tried.
pub fn first_free(
    candidates: impl IntoIterator<Item = u32>,
    taken: impl Fn(u32) -> bool,
) -> Option<(u32, u32)> {
    candidates
        .into_iter()
        .zip(1..)
        .find(|&(num, _)| !is_reserved(num) && !taken(num))
}

impl Store {
    /// The virtual node of `owner`: the one made before, or a new one made now (at `now`)
    /// with a node number no radio's node database knows (`taken`), no other owner has and
    /// that is not reserved, and a fresh key. Committed durably before it is returned: a key
    /// announced on the mesh is never lost to a power cut.
    pub async fn virtual_node(
        &self,
        owner: &str,
        now: Millis,
        taken: impl Fn(NodeId) -> bool,
    ) -> Result<VirtualNode, StoreError> {
        const WHAT: &str = "virtual_node";
        let select = "SELECT owner, node, secret, created_at FROM virtual_node WHERE owner = ?1";
        let found = sqlx::query(select)
            .bind(owner)
            .fetch_optional(&self.shared.readers)
            .await
            .map_err(|e| self.query_error(WHAT, e))?;
        if let Some(row) = found {
            return self.virtual_row(&row);
        }
        let mut tx = self.begin(WHAT, Durability::Full).await?;
        // Another caller may have made it since the read above.
        let found = sqlx::query(select)
            .bind(owner)
            .fetch_optional(tx.conn())
            .await
            .map_err(|e| self.query_error(WHAT, e))?;
        if let Some(row) = found {
            let node = self.virtual_row(&row)?;
            self.commit(tx).await?;
            return Ok(node);
        }
        let used: HashSet<i64> = sqlx::query_scalar("SELECT node FROM virtual_node")
            .fetch_all(tx.conn())
            .await
            .map_err(|e| self.query_error(WHAT, e))?
            .into_iter()
            .collect();
        let candidates = (0..MAX_TRIES).map(|attempt| candidate(owner, attempt));
        let Some((num, tries)) = first_free(candidates, |num| {
            used.contains(&i64::from(num)) || taken(NodeId::new(num))
        }) else {
            return Err(StoreError::NoNodeId {
                path: self.shared.path.clone(),
                owner: owner.to_owned(),
                tries: MAX_TRIES,
            });
        };
        let mut secret = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut secret)
            .map_err(|e| StoreError::Entropy {
                path: self.shared.path.clone(),
                owner: owner.to_owned(),
                cause: e.to_string(),
            })?;
        sqlx::query(
            "INSERT INTO virtual_node (owner, node, secret, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(owner)
        .bind(i64::from(num))
        .bind(&secret[..])
        .bind(now)
        .execute(tx.conn())
        .await
        .map_err(|e| self.query_error(WHAT, e))?;
        self.commit(tx).await?;
        let node = NodeId::new(num);
        tracing::info!(%owner, %node, tries, "virtual node made");
        Ok(VirtualNode {
            owner: owner.to_owned(),
            node,
            secret,
            created_at: now,
        })
    }

    /// Every virtual node, oldest first (for start-up: announce them, hold their keys).
    pub async fn virtual_nodes(&self) -> Result<Vec<VirtualNode>, StoreError> {
        let rows = sqlx::query(
            "SELECT owner, node, secret, created_at FROM virtual_node ORDER BY created_at, owner",
        )
        .fetch_all(&self.shared.readers)
        .await
        .map_err(|e| self.query_error("virtual_nodes", e))?;
        rows.iter().map(|row| self.virtual_row(row)).collect()
    }

    /// Decodes a `virtual_node` row; a value the store never writes is [`StoreError::Corrupt`].
    fn virtual_row(&self, row: &SqliteRow) -> Result<VirtualNode, StoreError> {
        let corrupt = |what: String| self.corrupt(None, what);
        let owner: String = row
            .try_get(0)
            .map_err(|e| corrupt(format!("virtual_node.owner: {e}")))?;
        let at = |column: &str| format!("virtual_node of `{owner}`: {column}");
        let num: i64 = row
            .try_get(1)
            .map_err(|e| corrupt(format!("{}: {e}", at("node"))))?;
        let node = u32::try_from(num)
            .ok()
            .filter(|n| !is_reserved(*n))
            .ok_or_else(|| corrupt(format!("{} is {num}, expected 4..=4294967294", at("node"))))?;
        let secret: Vec<u8> = row
            .try_get(2)
            .map_err(|e| corrupt(format!("{}: {e}", at("secret"))))?;
        let secret: [u8; 32] = secret.as_slice().try_into().map_err(|_| {
            corrupt(format!(
                "{} is {} bytes, expected 32",
                at("secret"),
                secret.len()
            ))
        })?;
        let created_at: Millis = row
            .try_get(3)
            .map_err(|e| corrupt(format!("{}: {e}", at("created_at"))))?;
        Ok(VirtualNode {
            node: NodeId::new(node),
            secret,
            created_at,
            owner,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_numbers_and_taken_ones_are_skipped_in_order() {
        let taken = |n: u32| n == 42;
        assert_eq!(
            first_free([0, 3, u32::MAX, 42, 77, 78], taken),
            Some((77, 5))
        );
        assert_eq!(first_free([1, 2], |_| false), None);
        assert!(is_reserved(0) && is_reserved(3) && is_reserved(0xFFFF_FFFF));
        assert!(!is_reserved(4) && !is_reserved(0xFFFF_FFFE));
    }

    #[test]
    fn candidates_are_stable_and_differ_by_owner_and_attempt() {
        let a = candidate("amira@hub.lan", 0);
        assert_eq!(a, candidate("amira@hub.lan", 0));
        assert_ne!(a, candidate("amira@hub.lan", 1));
        assert_ne!(a, candidate("ben@hub.lan", 0));
        // The derivation as the module doc states it, with sha2 directly.
        let digest = Sha256::digest([LABEL, b"amira@hub.lan".as_slice()].concat());
        assert_eq!(
            a,
            u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
        );
        let digest = Sha256::digest([LABEL, b"amira@hub.lan", &[0, 0, 0, 0, 2]].concat());
        assert_eq!(
            candidate("amira@hub.lan", 2),
            u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
        );
    }
}
