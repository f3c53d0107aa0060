//! What can go wrong in the store. Every variant names the store file, because a gateway may
//! run more than one and an operator reads these in a log line without context.

use std::path::PathBuf;
use std::sync::Arc;

use super::DeliveryKey;

/// A store operation failed.
///
/// `Clone` because the group-commit [`Writer`](super::Writer) hands the one error of a failed
/// batch to every caller in it; the underlying errors sit behind an `Arc` for that reason. The
/// cause is part of the message (`cannot open store /x.sqlite: unable to open database file`)
/// and is kept in the `cause` field rather than as `source()`, so a log line prints it once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or created, or its pragmas not applied.
    #[error("cannot open store {}: {cause}", path.display())]
    Open {
        /// The store file.
        path: PathBuf,
        /// What SQLite or sqlx said.
        cause: Arc<sqlx::Error>,
    },
    /// The embedded schema migrations could not be applied (or an applied one was changed).
    #[error("cannot migrate store {}: {cause}", path.display())]
    Migrate {
        /// The store file.
        path: PathBuf,
        /// What sqlx's migrator said.
        cause: Arc<sqlx::migrate::MigrateError>,
    },
    /// A statement or transaction failed.
    #[error("store {}: {what} failed: {cause}", path.display())]
    Query {
        /// The store file.
        path: PathBuf,
        /// The operation, such as `accept` or `confirm`.
        what: &'static str,
        /// What SQLite or sqlx said.
        cause: Arc<sqlx::Error>,
    },
    /// A row holds a value the store never writes (a class rank out of range, a node number
    /// that is not a u32, a delivery whose message is missing, ...).
    #[error("store {}: {what}", path.display())]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The delivery at fault, when there is one: a worker can [`reject`] it to move it
        /// out of the way.
        ///
        /// [`reject`]: super::Store::reject
        key: Option<DeliveryKey>,
        /// Which row and column, and what was found.
        what: String,
    },
    /// The group-commit writer task is gone (the runtime is shutting down or it panicked);
    /// the item was not accepted.
    #[error("store {}: the writer task has stopped", path.display())]
    WriterStopped {
        /// The store file.
        path: PathBuf,
    },
    /// [`Writer::submit`](super::Writer::submit) found the writer's queue full (the disk is
    /// slower than what arrives): the item was not taken, and the caller decides whether to
    /// wait ([`Writer::accept`](super::Writer::accept)) or to let its source re-send.
    #[error("store {}: the writer is busy ({capacity} items already waiting)", path.display())]
    Busy {
        /// The store file.
        path: PathBuf,
        /// How many items the writer's queue holds.
        capacity: usize,
    },
    /// No node number could be found for a new virtual node: every candidate was reserved,
    /// known to a radio or another owner's (see
    /// [`virtual_nodes`](super::virtual_nodes)).
    #[error("store {}: no free node number for the virtual node of `{owner}` after {tries} candidates", path.display())]
    NoNodeId {
        /// The store file.
        path: PathBuf,
        /// Who the node was for.
        owner: String,
        /// Candidates tried.
        tries: u32,
    },
    /// The OS random generator failed while making a virtual node's key; nothing was stored.
    #[error("store {}: cannot make a key for the virtual node of `{owner}`: the OS random generator failed: {cause}", path.display())]
    Entropy {
        /// The store file.
        path: PathBuf,
        /// Who the node was for.
        owner: String,
        /// What the generator said.
        cause: String,
    },
    /// The file is another application's database: never migrated into a store.
    #[error("{} is not an Archipel store ({what}): give [store] path a file of its own; this one is left as it is", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What gave it away (its application id, its tables).
        what: String,
    },
    /// The store was written by a newer Archipel, whose schema this one does not know.
    #[error("store {} was written by a newer Archipel (schema version {found}; this one knows up to {known}): run that version again, or give [store] path a new file (what is queued stays in this one)", path.display())]
    Newer {
        /// The store file.
        path: PathBuf,
        /// The newest schema version the file has.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// The file is not a readable SQLite database (truncated, overwritten, a disk error).
    #[error("store {} is damaged or not an SQLite database ({cause}): move it aside to keep what it holds, then start again for a fresh store; Archipel never starts over a backlog by itself", path.display())]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What SQLite said.
        cause: Arc<sqlx::Error>,
    },
    /// Another gateway holds the store: two would drain it twice.
    #[error("store {} is in use by another archipel ({holder}; lock file {}): stop it first, or give this gateway a store of its own", path.display(), lock.display())]
    Locked {
        /// The store file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// Who holds it, as its lock file says (`pid 1234`).
        holder: String,
    },
    /// The store, or the directory SQLite makes its `-wal`, `-shm` and journal files in,
    /// cannot be written (a read-only file, directory or disk): refused at open, because every
    /// message would then fail to be stored after a start that looked fine.
    #[error("store {} cannot be written ({what} {}: {cause}): make it writable for the user archipel runs as (remount a read-only disk read-write), or give [store] path a writable place", path.display(), at.display())]
    ReadOnly {
        /// The store file.
        path: PathBuf,
        /// What cannot be written: the file, one of its companions, or its directory.
        at: PathBuf,
        /// `file` or `directory`.
        what: &'static str,
        /// What the system or SQLite said.
        cause: String,
    },
    /// The lock file could not be made.
    #[error("store {}: cannot make its lock file {}: {cause}", path.display(), lock.display())]
    Lock {
        /// The store file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// What the system said.
        cause: Arc<std::io::Error>,
    },
    /// [`Store::close`](super::Store::close) was called: nothing more is written.
    #[error("store {}: {what} after the store was closed", path.display())]
    Closed {
        /// The store file.
        path: PathBuf,
        /// The operation refused, such as `accept`.
        what: &'static str,
    },
}
