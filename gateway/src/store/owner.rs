//! Whose file this is, checked before anything is written to it: Archipel marks its stores
//! (`PRAGMA application_id`) and refuses another application's database (migrating our tables
//! into it would damage it), a store from a newer Archipel (its schema is not ours to guess),
//! a file that is not a database at all (never silently started over: it may hold someone's
//! backlog), a second gateway on a store that one already drains (each would send every
//! message), and a store that cannot be written (it would open, then refuse every message).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use sqlx::SqliteConnection;

use super::StoreError;
use super::schema::MIGRATIONS;

/// "Arch" in ASCII: what `PRAGMA application_id` reads on every Archipel store.
pub(crate) const APPLICATION_ID: i64 = 0x4172_6368;

/// The lock file beside a store: `archipel.sqlite.lock`.
pub(crate) fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the store's lock (an exclusive `flock` on its lock file, which the system releases
/// when the process ends, however it ends), writing this process's pid in it for whoever
/// finds it taken.
pub(crate) fn lock(path: &Path) -> Result<Flock<File>, StoreError> {
    let lock = lock_path(path);
    let io = |cause: std::io::Error| StoreError::Lock {
        path: path.to_owned(),
        lock: lock.clone(),
        cause: Arc::new(cause),
    };
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(io)?;
    let mut held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => held,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim() {
                "" => "pid unknown".to_owned(),
                pid => format!("pid {pid}"),
            };
            return Err(StoreError::Locked {
                path: path.to_owned(),
                lock,
                holder,
            });
        }
        Err((_, errno)) => return Err(io(errno.into())),
    };
    held.set_len(0).map_err(io)?;
    held.rewind().map_err(io)?;
    write!(held, "{}", std::process::id()).map_err(io)?;
    Ok(held)
}

/// Refuses a store that cannot be written, before anything else touches it: the file itself
/// and the companions SQLite keeps beside it when they exist, and the directory, where SQLite
/// must be able to create its `-wal`, `-shm` and journal files. Without this a read-only file
/// or disk opened fine (SQLite falls back to reading) and every message was then refused.
///
/// `access(2)` asks the kernel the question the writes will ask: it answers for root too
/// (a read-only mount, an immutable file), and for the user the service runs as. Other
/// answers (a missing directory) are left to the open, which names them.
pub(crate) fn check_writable(path: &Path) -> Result<(), StoreError> {
    use nix::errno::Errno;
    use nix::unistd::{AccessFlags, access};
    let refused = |at: &Path, what: &'static str, errno: Errno| match errno {
        Errno::EROFS | Errno::EACCES | Errno::EPERM | Errno::ETXTBSY => Err(StoreError::ReadOnly {
            path: path.to_owned(),
            at: at.to_owned(),
            what,
            cause: errno.desc().to_owned(),
        }),
        _ => Ok(()),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Err(errno) = access(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
        refused(dir, "directory", errno)?;
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        if file.exists()
            && let Err(errno) = access(&file, AccessFlags::W_OK)
        {
            refused(&file, "file", errno)?;
        }
    }
    Ok(())
}

/// True when SQLite refused a write because the database is read-only (`SQLITE_READONLY`
/// and its extended codes): a store that cannot be written, whatever the reason.
pub(crate) fn is_read_only(cause: &sqlx::Error) -> bool {
    cause
        .as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 8)
}

/// Refuses a file that is not an Archipel store (or is damaged), or one from a newer schema.
/// A new, empty file passes; so does a store made before stores were marked.
pub(crate) async fn check(conn: &mut SqliteConnection, path: &Path) -> Result<(), StoreError> {
    let damaged = |cause: sqlx::Error| StoreError::Damaged {
        path: path.to_owned(),
        cause: Arc::new(cause),
    };
    let id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut *conn)
        .await
        .map_err(damaged)?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(damaged)?;
    let ours_unmarked = id == 0 && first_migration(conn, &tables).await.map_err(damaged)?;
    if id != APPLICATION_ID && !ours_unmarked && !(id == 0 && tables.is_empty()) {
        let what = if id != 0 {
            format!("its application id is {id:#x}")
        } else {
            let mut list: Vec<&str> = tables.iter().map(String::as_str).take(5).collect();
            if tables.len() > 5 {
                list.push("...");
            }
            format!("it holds the tables {}", list.join(", "))
        };
        return Err(StoreError::Foreign {
            path: path.to_owned(),
            what,
        });
    }
    if tables.iter().any(|t| t == "_sqlx_migrations") {
        let found: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
            .fetch_one(&mut *conn)
            .await
            .map_err(damaged)?;
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if let Some(found) = found.filter(|&f| f > known) {
            return Err(StoreError::Newer {
                path: path.to_owned(),
                found,
                known,
            });
        }
    }
    Ok(())
}

/// True when the file's first applied migration is Archipel's first: a store from before
/// stores carried their application id.
async fn first_migration(
    conn: &mut SqliteConnection,
    tables: &[String],
) -> Result<bool, sqlx::Error> {
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        return Ok(false);
    }
    let first: Option<(i64, String)> = sqlx::query_as(
        "SELECT version, description FROM _sqlx_migrations ORDER BY version LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(first.is_some_and(|(v, d)| MIGRATIONS.first().is_some_and(|m| m.0 == v && m.1 == d)))
}

/// Marks the file as an Archipel store (after the migrations made it one).
pub(crate) async fn mark(conn: &mut SqliteConnection, path: &Path) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA application_id = {APPLICATION_ID}"
    )))
    .execute(&mut *conn)
    .await
    .map_err(|cause| {
        // The first write of every open: where a store SQLite could only open for reading
        // shows, even when `check_writable` saw nothing wrong.
        if is_read_only(&cause) {
            StoreError::ReadOnly {
                path: path.to_owned(),
                at: path.to_owned(),
                what: "file",
                cause: cause.to_string(),
            }
        } else {
            StoreError::Open {
                path: path.to_owned(),
                cause: Arc::new(cause),
            }
        }
    })?;
    Ok(())
}
