//! A store that cannot be written is refused at open, naming what cannot be written: a
//! read-only file, a writable file in a directory where SQLite cannot make its `-wal`, `-shm`
//! and journal files, and a read-only disk. (Before, the open either went through and every
//! message was then refused with a WARN, or failed with SQLite's bare "unable to open database
//! file".) A writable store opens and takes messages as ever.
//!
//! The suite runs as root, which file permission bits do not stop: the tests make writes
//! really fail with `chattr +i` (immutable file or directory) and a read-only bind mount.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use archipel_gateway::store::{Store, StoreConfig, StoreError};
use common::*;
use mesh_core::Class;

/// Runs `program args`, failing the test with what it said when it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed (this test needs root on a file system with attributes): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn text(path: &Path) -> &str {
    path.to_str().expect("scratch paths are UTF-8")
}

/// `chattr +i` on a file or directory, undone on drop (before its [`TempDir`] is removed:
/// declare it after).
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        run("chattr", &["+i", text(path)]);
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A directory bind-mounted read-only onto itself, unmounted on drop.
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    fn mount(dir: &Path) -> ReadOnlyMount {
        run("mount", &["--bind", text(dir), text(dir)]);
        let mount = ReadOnlyMount(dir.to_owned());
        run("mount", &["-o", "remount,bind,ro", text(dir)]);
        mount
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn try_open(dir: &TempDir) -> Result<Store, StoreError> {
    Store::open(StoreConfig::new(dir.file(), 100)).await
}

/// A store with one message queued, closed again (the lock file stays, as after a stop).
async fn made(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    let store = open(&dir, 100).await;
    store
        .accept(&[msg_to(7, 1, Class::Channel, &["south"])], T0)
        .await
        .unwrap();
    store.close().await;
    dir
}

/// The refusal: a [`StoreError::ReadOnly`] naming the store and what cannot be written.
fn assert_refused(result: Result<Store, StoreError>, store: &Path, at: &Path) {
    let err = match result {
        Ok(_) => panic!("a store that cannot be written was opened"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{text}");
    assert!(text.contains(&store.display().to_string()), "{text}");
    assert!(text.contains(&at.display().to_string()), "{text}");
    assert!(text.contains("cannot be written"), "{text}");
}

#[tokio::test]
async fn a_read_only_store_file_is_refused_naming_it() {
    let dir = made("ro-file").await;
    {
        let _frozen = Immutable::set(&dir.file());
        assert_refused(try_open(&dir).await, &dir.file(), &dir.file());
    }
    // Writable again: it opens, with its message still queued.
    let store = try_open(&dir).await.unwrap();
    assert_eq!(store.next("south", T0, 0, 10).await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn a_writable_store_in_a_read_only_directory_is_refused_naming_the_directory() {
    let dir = made("ro-dir").await;
    // The file itself stays writable; SQLite could not make its -wal and -shm beside it.
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.file())
        .expect("the file itself is writable");
    {
        let _frozen = Immutable::set(&dir.0);
        assert_refused(try_open(&dir).await, &dir.file(), &dir.0);
    }
    let store = try_open(&dir).await.unwrap();
    assert_eq!(store.next("south", T0, 0, 10).await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn a_store_on_a_read_only_disk_is_refused() {
    let dir = made("ro-mount").await;
    {
        let _mount = ReadOnlyMount::mount(&dir.0);
        assert_refused(try_open(&dir).await, &dir.file(), &dir.0);
    }
    let store = try_open(&dir).await.unwrap();
    assert_eq!(store.next("south", T0, 0, 10).await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn a_writable_store_opens_and_takes_messages() {
    let dir = TempDir::new("rw");
    let store = try_open(&dir).await.unwrap();
    store
        .accept(&[msg_to(7, 2, Class::Channel, &["south"])], T0)
        .await
        .unwrap();
    assert_eq!(store.next("south", T0, 0, 10).await.unwrap().len(), 1);
    store.close().await;
}
