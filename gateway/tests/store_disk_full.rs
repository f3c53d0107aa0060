//! A full disk: with the store on a 200 KiB tmpfs, accepts fail with SQLite's "database or
//! disk is full" while it is full (nothing half-written), everything stored before stays
//! queued, and once space returns the same store accepts again by itself: no wedged writer,
//! no restart. (At 5d7462a the writer stayed inside a failed transaction for good: every later
//! message failed with "attempted to call begin_with at non-zero transaction depth".)
//!
//! Needs root (to mount the tmpfs), as the suite runs here; elsewhere it says why it cannot.

mod common;

use std::process::Command;

use archipel_gateway::store::{Store, StoreConfig};
use common::*;
use mesh_core::Class;

/// A tmpfs mounted on a scratch directory, unmounted on drop.
struct Tmpfs(TempDir);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Tmpfs {
        let dir = TempDir::new(name);
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.0)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} (this test needs root): {}",
            dir.0.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_new_messages_keeps_the_stored_ones_and_recovers_when_space_returns() {
    let fs = Tmpfs::mount("disk-full", "200k");
    let store = Store::open(StoreConfig::new(fs.0.file(), 1_000_000))
        .await
        .unwrap();
    // Some messages go in; then the disk fills up (another program's file, say).
    let stored = 20u32;
    for id in 1..=stored {
        store
            .accept(&[msg_to(7, id, Class::Channel, &["south"])], T0)
            .await
            .unwrap();
    }
    let filler = fs.0.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
        let _ = f.sync_all();
    }
    // A batch big enough to need new pages, which there is no room for.
    let batch: Vec<_> = (101..=400u32)
        .map(|id| msg_to(7, id, Class::Channel, &["south"]))
        .collect();
    let failure = store
        .accept(&batch, T0)
        .await
        .expect_err("the disk is full");
    let text = failure.to_string();
    assert!(
        text.contains("full"),
        "the error says the disk is full: {text}"
    );
    assert!(text.contains(&fs.0.file().display().to_string()), "{text}");

    // While full: still refused, cleanly, every time.
    for _ in 0..3 {
        assert!(store.accept(&batch, T0).await.is_err());
    }
    // Space returns: the same store takes new messages again, and nothing was lost.
    std::fs::remove_file(&filler).unwrap();
    store
        .accept(&[msg_to(7, 20_000, Class::Channel, &["south"])], T0)
        .await
        .expect("accepts again once there is space");
    let rows = store.next("south", T0, 0, 100_000).await.unwrap();
    let got = ids(&rows);
    assert_eq!(
        got.len() as u32,
        stored + 1,
        "every stored message is still queued"
    );
    assert_eq!(got.last(), Some(&20_000));
    assert!(got[..got.len() - 1].iter().copied().eq(1..=stored));
    store.close().await;
}
