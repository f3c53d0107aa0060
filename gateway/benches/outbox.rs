//! Router + outbox benchmark: every message is routed by the gateway's [`Router`] (decision and
//! re-encryption for the far channel), then committed, drained and confirmed through the
//! durable store. Prints figures, asserts nothing. Runs against a real file in a temporary
//! directory (removed afterwards).
//!
//! ```text
//! cargo bench -p archipel-gateway --bench outbox
//! ARCHIPEL_BENCH_MESSAGES=100000 cargo bench -p archipel-gateway --bench outbox   # quick run
//! ```
//!
//! 1. durable accept throughput through [`Writer`] with many concurrent submitters;
//! 2. disk bytes per queued message and peak RSS with everything queued, and the time to
//!    reopen a store that full;
//! 3. drain throughput: `next(limit)` + `confirm` until empty;
//! 4. enqueue latency (submit to commit) at a steady offered load through [`Writer`].
//!
//! Settings, all from the environment: `ARCHIPEL_BENCH_MESSAGES` (1,000,000),
//! `ARCHIPEL_BENCH_SUBMITTERS` (1024), `ARCHIPEL_BENCH_MAX_BATCH` (1024),
//! `ARCHIPEL_BENCH_LINGER_MS` (2), `ARCHIPEL_BENCH_DRAIN_LIMIT` (500),
//! `ARCHIPEL_BENCH_RATE` (1000 msg/s), `ARCHIPEL_BENCH_LATENCY_SECS` (10).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use archipel_gateway::config::Config;
use archipel_gateway::router::{Heard, Router, Verdict};
use archipel_gateway::store::{Inbound, Millis, Store, StoreConfig, Writer};
use mesh_core::{NodeId, Packet};

const T0: Millis = 1_700_000_000_000;
const DESTINATION: &str = "south";
const PAYLOAD: usize = 60;

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
    let linger = Duration::from_millis(setting("ARCHIPEL_BENCH_LINGER_MS", 2));
    let drain_limit: usize = setting("ARCHIPEL_BENCH_DRAIN_LIMIT", 500);
    let rate: u64 = setting("ARCHIPEL_BENCH_RATE", 1000);
    let latency_secs: u64 = setting("ARCHIPEL_BENCH_LATENCY_SECS", 10);

    let dir = TempDir::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let path = dir.0.join("outbox.sqlite");
        println!(
            "router + outbox bench: {messages} messages, {PAYLOAD}-byte text payloads routed to one destination, file {}",
            path.display()
        );
        let config = StoreConfig {
            path: path.clone(),
            max_per_destination: u64::MAX,
        };
        let store = Store::open(config.clone()).await.expect("open");

        // 1. Durable accept throughput.
        let commits = store.commits();
        let writer = Writer::spawn(store.clone(), linger, max_batch);
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
                        writer.accept(message(i), T0).await.expect("accept");
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
            "1. accept:  {:>9.0} msgs/s  ({messages} in {:.2} s; {submitters} submitters, linger {} ms, \
             max batch {max_batch}: {commits} commits, {:.0} msgs per commit)",
            messages as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            linger.as_millis(),
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
        assert_eq!(queued, messages, "every message queued");
        let (db, wal, shm) = (
            file_size(&path, ""),
            file_size(&path, "-wal"),
            file_size(&path, "-shm"),
        );
        let total = db + wal + shm;
        println!(
            "2. disk:    {:>9.1} bytes per queued message  ({} MB: db {} + wal {} + shm {} bytes)",
            total as f64 / messages as f64,
            total / 1_000_000,
            db,
            wal,
            shm
        );
        println!(
            "   memory:  peak RSS (VmHWM) {} MB with {queued} queued",
            vm_hwm_kb() / 1024
        );
        store.close().await;
        let started = Instant::now();
        let store = Store::open(config.clone()).await.expect("reopen");
        println!(
            "   reopen:  {:.0} ms with {queued} queued (migrations check + queue depths)",
            started.elapsed().as_secs_f64() * 1000.0
        );

        // 3. Drain throughput.
        let commits = store.commits();
        let started = Instant::now();
        let mut drained = 0u64;
        loop {
            let rows = store
                .next(DESTINATION, T0, drain_limit)
                .await
                .expect("next");
            if rows.is_empty() {
                break;
            }
            let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
            store.confirm(&seqs).await.expect("confirm");
            drained += rows.len() as u64;
        }
        let elapsed = started.elapsed();
        assert_eq!(drained, messages, "every message drained");
        println!(
            "3. drain:   {:>9.0} msgs/s  ({drained} in {:.2} s; next(limit {drain_limit}) + confirm, \
             {} commits)",
            drained as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            store.commits() - commits
        );

        // 4. Enqueue latency at a steady offered load, with and without a linger.
        for linger in [Duration::ZERO, linger, Duration::from_millis(10)] {
            latency(&store, linger, max_batch, rate, latency_secs, messages).await;
        }
        println!(
            "   memory:  peak RSS (VmHWM) over the whole run {} MB",
            vm_hwm_kb() / 1024
        );
        store.close().await;
    });
}

/// Offers `rate` messages a second for `secs` seconds through a fresh [`Writer`] and prints
/// the submit-to-commit latency percentiles. Ids start after `offset` so none is a duplicate.
async fn latency(
    store: &Store,
    linger: Duration,
    max_batch: usize,
    rate: u64,
    secs: u64,
    offset: u64,
) {
    static ROUND: AtomicU64 = AtomicU64::new(1);
    let base = offset + ROUND.fetch_add(1, Ordering::Relaxed) * 10_000_000;
    let writer = Writer::spawn(store.clone(), linger, max_batch);
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
            writer.accept(message(base + i), T0).await.expect("accept");
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
        "4. latency: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (linger {} ms, {} msgs offered at \
         {rate}/s over {:.1} s; {commits} commits, {:.1} msgs per commit)",
        ms(at(0.50)),
        ms(at(0.99)),
        ms(at(1.0)),
        linger.as_millis(),
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / commits.max(1) as f64,
    );
}

/// The routing table the benchmark's messages go through: one route from `north` to `south`.
fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let config = Config::from_toml(&format!(
            r#"
[gateway]
name = "bench"
id = "!a7c40001"
[[radio]]
name = "north"
tcp = "127.0.0.1:1"
region = "US"
preset = "LongFast"
channels = [ {{ name = "LongFast", psk = "AQ==" }} ]
[[radio]]
name = "{DESTINATION}"
tcp = "127.0.0.1:2"
region = "US"
preset = "MediumFast"
channels = [ {{ name = "MediumFast", psk = "AQ==" }} ]
[[route]]
channel = "LongFast"
from = ["north"]
to = ["{DESTINATION}"]
to_channel = "MediumFast"
"#
        ))
        .expect("bench config");
        Router::new(&config)
    })
}

/// Message `i`, routed as the gateway routes what a radio hears: 64 senders, unique ids, a
/// 60-byte text, every fourth one a direct message; the router decides and re-encrypts it
/// for the far channel.
fn message(i: u64) -> Inbound {
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
    let heard = Heard {
        radio: "north",
        radio_node: NodeId::new(1),
        channel: "LongFast",
        packet: &packet,
    };
    match router().route(heard, T0) {
        Verdict::Relay(inbound) => inbound,
        Verdict::Ignore(why) => panic!("bench message not routed: {why}"),
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

/// The bench's directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("archipel-outbox-bench-{}", std::process::id()));
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
