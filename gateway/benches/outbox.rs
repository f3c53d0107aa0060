//! Outbox benchmark: messages stored once with three destinations each (two radios and an MQTT
//! broker), committed through the group-commit writer, drained and confirmed. Prints figures,
//! asserts nothing. Runs against real files in a temporary directory (removed afterwards).
//!
//! ```text
//! cargo bench -p archipel-gateway --bench outbox
//! ARCHIPEL_BENCH_MESSAGES=100000 cargo bench -p archipel-gateway --bench outbox   # quick run
//! ARCHIPEL_BENCH_ONLY=mesh strace -f -c -e trace=fsync,fdatasync \
//!     target/release/deps/outbox-* --bench                                        # fsyncs
//! ```
//!
//! 1. durable accept throughput through [`Writer`] with many concurrent submitters;
//! 2. disk bytes per queued message (seen-set, WAL and all), peak RSS with everything queued,
//!    and the time to reopen a store that full;
//! 3. drain throughput: one task per destination, `next(limit)` + `confirm` until empty;
//! 4. enqueue latency (submit to commit) at a steady offered load through [`Writer`];
//! 5. bytes written per relayed message at mesh rates: one message accepted, then its
//!    deliveries confirmed one at a time, each in a commit of its own, with a sweep between
//!    messages, as a hub with light traffic does; measured from `/proc/self/io`.
//!
//! Settings, all from the environment: `ARCHIPEL_BENCH_MESSAGES` (1,000,000),
//! `ARCHIPEL_BENCH_SUBMITTERS` (1024), `ARCHIPEL_BENCH_MAX_BATCH` (1024),
//! `ARCHIPEL_BENCH_DRAIN_LIMIT` (500), `ARCHIPEL_BENCH_RATE` (1000 msg/s),
//! `ARCHIPEL_BENCH_LATENCY_SECS` (10), `ARCHIPEL_BENCH_RELAYED` (500 relayed messages),
//! `ARCHIPEL_BENCH_SEEN` (35,000 seen-set entries before the mesh-rate run: four days at one
//! message every ten seconds), `ARCHIPEL_BENCH_ONLY` (`mesh`: only section 5).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use archipel_gateway::store::{Inbound, Millis, NewDelivery, Sent, Store, StoreConfig, Writer};
use mesh_core::{ChannelKey, Class, NodeId, Packet};

const T0: Millis = 1_700_000_000_000;
const PAYLOAD: usize = 60;
/// The destinations of every message: two radios (their confirms carry airtime) and MQTT.
const DESTINATIONS: [&str; 3] = ["south", "east", "mqtt"];
const RADIOS: [&str; 2] = ["south", "east"];

fn setting<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let messages: u64 = setting("ARCHIPEL_BENCH_MESSAGES", 1_000_000);
    let submitters: u64 = setting("ARCHIPEL_BENCH_SUBMITTERS", 1024);
    let max_batch: usize = setting("ARCHIPEL_BENCH_MAX_BATCH", 1024);
    let drain_limit: usize = setting("ARCHIPEL_BENCH_DRAIN_LIMIT", 500);
    let rate: u64 = setting("ARCHIPEL_BENCH_RATE", 1000);
    let latency_secs: u64 = setting("ARCHIPEL_BENCH_LATENCY_SECS", 10);
    let relayed: u64 = setting("ARCHIPEL_BENCH_RELAYED", 500);
    let seen: u64 = setting("ARCHIPEL_BENCH_SEEN", 35_000);
    let only_mesh = std::env::var("ARCHIPEL_BENCH_ONLY").is_ok_and(|v| v == "mesh");

    let dir = TempDir::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        if !only_mesh {
            bulk(
                &dir,
                messages,
                submitters,
                max_batch,
                drain_limit,
                rate,
                latency_secs,
            )
            .await;
        }
        for destinations in [3, 1] {
            mesh_rate(&dir, relayed, seen, destinations).await;
        }
    });
}

/// Sections 1 to 4 on one store.
#[allow(clippy::too_many_arguments)]
async fn bulk(
    dir: &TempDir,
    messages: u64,
    submitters: u64,
    max_batch: usize,
    drain_limit: usize,
    rate: u64,
    latency_secs: u64,
) {
    let path = dir.0.join("bulk.sqlite");
    println!(
        "outbox bench: {messages} messages, {PAYLOAD}-byte text payloads, each to {} \
         destinations ({}), file {}",
        DESTINATIONS.len(),
        DESTINATIONS.join(", "),
        path.display()
    );
    let config = StoreConfig::new(&path, u64::MAX);
    let store = Store::open(config.clone()).await.expect("open");

    // 1. Durable accept throughput.
    let commits = store.commits();
    let writer = Writer::spawn(store.clone(), max_batch);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..submitters)
        .map(|_| {
            let writer = writer.clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= messages {
                        return;
                    }
                    writer
                        .accept(message(i, &DESTINATIONS), T0)
                        .await
                        .expect("accept");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("submitter");
    }
    let elapsed = started.elapsed();
    drop(writer);
    let commits = store.commits() - commits;
    println!(
        "1. accept:  {:>9.0} msgs/s  ({messages} in {:.2} s; {submitters} submitters, \
         max batch {max_batch}: {commits} commits, {:.0} msgs per commit)",
        messages as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        messages as f64 / commits.max(1) as f64,
    );

    // 2. Disk and memory with everything queued; reopening a full store.
    let queued: u64 = store
        .depths()
        .await
        .expect("depths")
        .iter()
        .map(|d| d.count)
        .sum();
    assert_eq!(
        queued,
        messages * DESTINATIONS.len() as u64,
        "every delivery queued"
    );
    let (db, wal, shm) = (
        file_size(&path, ""),
        file_size(&path, "-wal"),
        file_size(&path, "-shm"),
    );
    let total = db + wal + shm;
    println!(
        "2. disk:    {:>9.1} bytes per queued message with {} destinations  ({} MB: db {db} + \
         wal {wal} + shm {shm} bytes)",
        total as f64 / messages as f64,
        DESTINATIONS.len(),
        total / 1_000_000,
    );
    if let Some(tables) = table_sizes(&path).await {
        println!("   by table (bytes per message): {tables}");
    }
    println!(
        "   memory:  peak RSS (VmHWM) {} MB with {messages} messages queued",
        vm_hwm_kb() / 1024
    );
    store.close().await;
    let started = Instant::now();
    let store = Store::open(config.clone()).await.expect("reopen");
    println!(
        "   reopen:  {:.0} ms with {queued} deliveries queued (migrations check + books)",
        started.elapsed().as_secs_f64() * 1000.0
    );

    // 3. Drain throughput: one task per destination, as one worker each.
    let commits = store.commits();
    let started = Instant::now();
    let drains: Vec<_> = DESTINATIONS
        .iter()
        .map(|&destination| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut drained = 0u64;
                loop {
                    let rows = store
                        .next(destination, T0, 0, drain_limit)
                        .await
                        .expect("next");
                    if rows.is_empty() {
                        return drained;
                    }
                    let sent: Vec<Sent> = rows
                        .iter()
                        .map(|r| Sent {
                            key: r.key,
                            airtime: None,
                        })
                        .collect();
                    store.confirm(&sent, T0).await.expect("confirm");
                    drained += rows.len() as u64;
                }
            })
        })
        .collect();
    let mut drained = 0;
    for drain in drains {
        drained += drain.await.expect("drain");
    }
    let elapsed = started.elapsed();
    assert_eq!(drained, queued, "every delivery drained");
    println!(
        "3. drain:   {:>9.0} msgs/s  ({:.0} deliveries/s; {drained} deliveries in {:.2} s, one \
         task per destination, next(limit {drain_limit}) + confirm, {} commits)",
        messages as f64 / elapsed.as_secs_f64(),
        drained as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        store.commits() - commits
    );

    // 4. Enqueue latency at a steady offered load.
    latency(&store, max_batch, rate, latency_secs, messages).await;
    println!(
        "   memory:  peak RSS (VmHWM) over sections 1-4 {} MB",
        vm_hwm_kb() / 1024
    );
    store.close().await;
}

/// Offers `rate` messages a second for `secs` seconds through a fresh [`Writer`] and prints
/// the submit-to-commit latency percentiles. Ids start after `offset` so none is a duplicate.
async fn latency(store: &Store, max_batch: usize, rate: u64, secs: u64, offset: u64) {
    static ROUND: AtomicU64 = AtomicU64::new(1);
    let base = offset + ROUND.fetch_add(1, Ordering::Relaxed) * 10_000_000;
    let writer = Writer::spawn(store.clone(), max_batch);
    let commits = store.commits();
    let total = rate * secs;
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    let mut waits = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let writer = writer.clone();
        waits.spawn(async move {
            let submitted = Instant::now();
            writer
                .accept(message(base + i, &DESTINATIONS), T0)
                .await
                .expect("accept");
            submitted.elapsed()
        });
    }
    let mut latencies = waits.join_all().await;
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let commits = store.commits() - commits;
    println!(
        "4. latency: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} msgs offered at {rate}/s over \
         {:.1} s; {commits} commits, {:.1} msgs per commit)",
        ms(at(0.50)),
        ms(at(0.99)),
        ms(at(1.0)),
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / commits.max(1) as f64,
    );
}

/// Section 5: a hub with light traffic. `relayed` times: accept one message for the first
/// `destinations` of [`DESTINATIONS`], then confirm each delivery alone (radios with their
/// airtime), then sweep, ten seconds of wall clock apart; prints what reached the disk.
async fn mesh_rate(dir: &TempDir, relayed: u64, seen: u64, destinations: usize) {
    let path = dir.0.join(format!("mesh-{destinations}.sqlite"));
    let store = Store::open(StoreConfig::new(&path, 10_000))
        .await
        .expect("open");
    // A seen-set as four days of traffic leave it, and one generation anchored.
    store
        .rotate_seen(T0, Duration::from_secs(96 * 3600))
        .await
        .expect("rotate");
    for start in (0..seen).step_by(1000) {
        let batch: Vec<Inbound> = (start..(start + 1000).min(seen))
            .map(|i| {
                let mut m = message(i, &[]);
                m.id = mesh_core::PacketId::new(m.id.get() + 0x4000_0000);
                m
            })
            .collect();
        store.accept(&batch, T0).await.expect("seen-set");
    }
    let to = &DESTINATIONS[..destinations];
    let before = io_counters();
    let (db0, wal0) = (file_size(&path, ""), file_size(&path, "-wal"));
    let commits = store.commits();
    let started = Instant::now();
    for i in 0..relayed {
        let now = T0 + Millis::try_from(i).unwrap_or(0) * 10_000;
        store.accept(&[message(i, to)], now).await.expect("accept");
        for destination in to {
            let rows = store.next(destination, now, 0, 1).await.expect("next");
            let airtime = RADIOS
                .contains(destination)
                .then_some(Duration::from_millis(640));
            store
                .confirm(
                    &[Sent {
                        key: rows[0].key,
                        airtime,
                    }],
                    now,
                )
                .await
                .expect("confirm");
        }
        store.expire(now).await.expect("sweep");
    }
    let elapsed = started.elapsed();
    let after = io_counters();
    let commits = store.commits() - commits;
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / relayed as f64;
    println!(
        "5. mesh rate, {destinations} destination(s): {:.0} bytes reached the disk per relayed \
         message (write_bytes), {:.0} bytes written (wchar), {:.1} write calls; db grew {} \
         bytes, WAL {} -> {} bytes; {relayed} messages, {commits} commits ({:.1} per message, \
         one FULL), {:.2} s, seen-set of {seen}",
        per(after.write_bytes, before.write_bytes),
        per(after.wchar, before.wchar),
        per(after.syscw, before.syscw),
        file_size(&path, "").saturating_sub(db0),
        wal0,
        file_size(&path, "-wal"),
        commits as f64 / relayed as f64,
        elapsed.as_secs_f64(),
    );
    store.close().await;
}

/// Message `i` as the router stores it: 64 senders, unique ids, a 60-byte text encrypted once
/// with the source channel's key, every fourth one a direct message.
fn message(i: u64, destinations: &[&str]) -> Inbound {
    let mut text = format!("{i:020}");
    text.push_str(&"x".repeat(PAYLOAD - text.len()));
    let to = if i.is_multiple_of(4) {
        NodeId::new(0x2000)
    } else {
        NodeId::BROADCAST
    };
    let mut packet = Packet::text_message(to, 0, &text);
    let meta = packet.meta_mut();
    meta.from = 0x1000 + (i % 64) as u32;
    meta.id = (i / 64 + 1) as u32;
    (meta.hop_limit, meta.hop_start) = (3, 3);
    let class = Class::of(&packet);
    let key = ChannelKey::from_psk(&[1]);
    let heard = packet.encrypt("LongFast", &key);
    Inbound {
        from: heard.from(),
        id: heard.id(),
        class,
        source: "north".to_owned(),
        channel: "LongFast".to_owned(),
        packet: heard.encode(),
        origin: None,
        expires_at: T0 + 24 * 3_600_000,
        deliveries: destinations
            .iter()
            .map(|&destination| NewDelivery {
                destination: destination.to_owned(),
                to_channel: (destination != "mqtt").then(|| "MediumFast".to_owned()),
                hops: 3,
            })
            .collect(),
    }
}

/// Bytes per message of each table and the free pages, from SQLite's `dbstat` table when the
/// library has it.
async fn table_sizes(path: &Path) -> Option<String> {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await.ok()?;
    let messages: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM message")
        .fetch_one(&mut conn)
        .await
        .ok()?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY SUM(pgsize) DESC",
    )
    .fetch_all(&mut conn)
    .await
    .ok()?;
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(&mut conn)
        .await
        .ok()?;
    let page: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut conn)
        .await
        .ok()?;
    let per = |bytes: i64| bytes as f64 / messages.max(1) as f64;
    let mut out: Vec<String> = rows
        .iter()
        .filter(|(_, bytes)| per(*bytes) >= 0.1)
        .map(|(name, bytes)| format!("{name} {:.1}", per(*bytes)))
        .collect();
    out.push(format!("free pages {:.1}", per(free * page)));
    Some(out.join(", "))
}

/// This process's I/O counters (`/proc/self/io`), zero where it is missing.
#[derive(Default)]
struct Io {
    /// Bytes passed to write calls.
    wchar: u64,
    /// Write calls.
    syscw: u64,
    /// Bytes this process caused to be sent to the block layer, less those cancelled
    /// (dirty pages truncated before writeback).
    write_bytes: u64,
}

fn io_counters() -> Io {
    let Ok(text) = std::fs::read_to_string("/proc/self/io") else {
        return Io::default();
    };
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Io {
        wchar: field("wchar:"),
        syscw: field("syscw:"),
        write_bytes: field("write_bytes:").saturating_sub(field("cancelled_write_bytes:")),
    }
}

fn file_size(path: &Path, suffix: &str) -> u64 {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    std::fs::metadata(PathBuf::from(name))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Peak resident set size so far, in kB (0 where /proc is missing).
fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The bench's directory, removed on drop. Under the system temp dir unless
/// `ARCHIPEL_BENCH_DIR` names another (the figures of section 5 need a real disk, not tmpfs).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let base = std::env::var_os("ARCHIPEL_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("archipel-outbox-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
