//! Federation drain on the real path: hub A's store prefilled with queued 60-byte texts for
//! its peer hub B, then both `archipel run` (release) start and A sends the backlog over the
//! peer protocol (mutually authenticated TLS 1.3); B commits each message to its own store
//! (routed to a radio that is down, so it stays there) before acknowledging it. Two parts:
//!
//! - loopback: 1,000,000 messages over 127.0.0.1. Figures: msg/s from A's start to its last
//!   acknowledged delivery (A prints `relayed` only once B's acknowledgement came), and the
//!   peak resident memory (`VmHWM`) and CPU time of both processes;
//! - thin link: 10,000 messages between two network namespaces joined by a veth pair shaped
//!   to 9,600 bit/s each way (`archipel_e2e::netns`, needs root). Figures: the drain time,
//!   and the bytes the veth device counted both ways (Ethernet, IP, TCP, TLS, the peer
//!   protocol, handshake, acks and keepalives) per message.
//!
//! Both check at the end, with the hubs stopped, that A's queue for B is empty and that B's
//! store holds every message once.
//!
//! ```text
//! cargo build --release -p archipel-gateway
//! cargo bench -p archipel-e2e --bench federation
//! ARCHIPEL_BENCH_MESSAGES=100000 ARCHIPEL_BENCH_THIN_MESSAGES=0 cargo bench -p archipel-e2e --bench federation
//! ```
//!
//! Settings: `ARCHIPEL_BENCH_MESSAGES` (1,000,000 over loopback; 0 skips that part),
//! `ARCHIPEL_BENCH_THIN_MESSAGES` (10,000 over the thin link; 0 skips it),
//! `ARCHIPEL_BENCH_THIN_TEXT_BYTES` (60: the length of each text on the thin link; 33 makes
//! the 60-byte packets of the frame format's own example), `ARCHIPEL_BENCH_THIN_WINDOW_KIB` (B's `[federation] window_kib` on the thin link; the
//! default window when unset),
//! `ARCHIPEL_BENCH_LIMIT_SECS` (1,800 per part: the bench gives up past it), `ARCHIPEL_BIN`
//! (target/release/archipel).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use archipel_e2e::netns::{Shape, Veth};
use common::hubs::{Hubs, peak_rss_kib};
use common::{BenchDir, Process, Tally, rate, secs, setting};

/// One part's settings.
struct Part {
    /// Messages in the backlog (0: the part is skipped).
    messages: u64,
    /// Length of each text.
    text_bytes: usize,
    /// B's `[federation] window_kib`, when not the default.
    window_kib: Option<u32>,
    /// The part gives up past this.
    limit: Duration,
}

fn main() {
    let limit = Duration::from_secs(setting("ARCHIPEL_BENCH_LIMIT_SECS", 1_800));
    let loopback_part = Part {
        messages: setting("ARCHIPEL_BENCH_MESSAGES", 1_000_000),
        text_bytes: common::PAYLOAD,
        window_kib: None,
        limit,
    };
    let window_kib: u32 = setting("ARCHIPEL_BENCH_THIN_WINDOW_KIB", 0);
    let thin_part = Part {
        messages: setting("ARCHIPEL_BENCH_THIN_MESSAGES", 10_000),
        text_bytes: setting("ARCHIPEL_BENCH_THIN_TEXT_BYTES", common::PAYLOAD),
        window_kib: (window_kib > 0).then_some(window_kib),
        limit,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if loopback_part.messages > 0 {
        runtime.block_on(loopback(&loopback_part));
    }
    if thin_part.messages > 0 {
        runtime.block_on(thin_link(&thin_part));
    }
}

async fn loopback(part: &Part) {
    let what = "federation over loopback";
    let dir = BenchDir::new("bench-federation");
    let listen = SocketAddr::from(([127, 0, 0, 1], archipel_e2e::free_port()));
    let hubs = prepare(what, &dir, listen, part).await;
    let d = run(&dir, &hubs, part, |config, log| {
        Process::gateway(config, log)
    });
    println!(
        "{what}: {} acknowledged in {}: {} from A's start (first `relayed` {} after it)",
        part.messages,
        secs(d.took),
        rate(part.messages, d.took),
        secs(d.first)
    );
    report(what, &d);
    check(&hubs, part.messages).await;
}

async fn thin_link(part: &Part) {
    let what = match part.window_kib {
        Some(k) => format!("federation over 9,600 bit/s, window {k} KiB"),
        None => "federation over 9,600 bit/s".to_owned(),
    };
    let what = what.as_str();
    let dir = BenchDir::new("bench-federation-thin");
    let link = Veth::new("bench", Some(Shape::THIN_9600));
    let listen = SocketAddr::new(link.b.address.into(), 4404);
    let hubs = prepare(what, &dir, listen, part).await;
    let before = link.a.counters();
    let d = run(&dir, &hubs, part, |config, log| {
        let end = if config == hubs.a_config.as_path() {
            &link.a
        } else {
            &link.b
        };
        let mut cmd: Command = end.command(&common::archipel_bin());
        cmd.arg("run").arg("--config").arg(config);
        Process::spawn(cmd, "archipel run", log)
    });
    let wire = link.a.counters().since(before);
    let n = part.messages;
    println!(
        "{what}: {n} acknowledged in {}: {}; A's device sent {} bytes and received {}: \
         {:.1} bytes per message both ways ({:.1} sent, {:.1} received)",
        secs(d.took),
        rate(n, d.took),
        wire.tx,
        wire.rx,
        wire.total() as f64 / n as f64,
        wire.tx as f64 / n as f64,
        wire.rx as f64 / n as f64,
    );
    println!(
        "{what}: {} packets sent and {} received on A's device; TCP retransmitted {} segments \
         at A",
        wire.tx_packets, wire.rx_packets, wire.retransmits
    );
    report(what, &d);
    check(&hubs, n).await;
    drop(link);
}

/// Writes both hubs' configs and prefills A.
async fn prepare(what: &str, dir: &BenchDir, listen: SocketAddr, part: &Part) -> Hubs {
    let bin = common::archipel_bin();
    let hubs = Hubs::write(&dir.0, &bin, listen, part.messages, part.window_kib);
    let started = Instant::now();
    hubs.prefill(part.messages, part.text_bytes).await;
    // What the peer protocol carries per message: the whole Meshtastic packet, not its text.
    let packet = common::backlog::backlog_packet(0, part.text_bytes)
        .encode()
        .len();
    println!(
        "{what}: {} texts of {} bytes ({packet}-byte packets) queued on A for B in {} ({} \
         store bytes)",
        part.messages,
        part.text_bytes,
        secs(started.elapsed()),
        common::store_bytes(&hubs.a_store)
    );
    hubs
}

/// What one drain showed.
struct Drain {
    /// From A's start to the line that made every message acknowledged.
    took: Duration,
    /// From A's start to its first `relayed` line.
    first: Duration,
    /// Peak resident memory of A and B, KiB.
    peak_kib: (Option<u64>, Option<u64>),
    /// CPU time of A and B.
    cpu: (Duration, Duration),
    /// `relayed` lines A printed and events it did not show (its feed lagged).
    a_tally: Tally,
    /// B's last summary line.
    b_summary: Option<String>,
}

/// Starts B, then A (each with `spawn(config, log)`), and reads A's lines until every
/// message was acknowledged; stops both.
fn run(dir: &BenchDir, hubs: &Hubs, part: &Part, spawn: impl Fn(&Path, &Path) -> Process) -> Drain {
    let (messages, limit) = (part.messages, part.limit);
    let b = spawn(&hubs.b_config, &dir.join("b-gateway.log"));
    let b_pid = b.pid();
    // B prints a `queued` line per message: read them on a thread of their own so its pipe
    // never fills, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let b_reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                if let Some((at, line)) = b.next_line(Duration::from_millis(200)) {
                    tally.add(at, &line);
                }
            }
            (b, tally)
        })
    };
    wait_listening(&dir.join("b-gateway.log"), limit);
    let start = Instant::now();
    let a = spawn(&hubs.a_config, &dir.join("a-gateway.log"));
    let a_pid = a.pid();
    let deadline = start + limit;
    let mut tally = Tally::default();
    let mut done = None;
    while Instant::now() < deadline {
        if let Some((at, line)) = a.next_line(Duration::from_millis(200)) {
            tally.add(at, &line);
            if tally.relayed + tally.not_shown >= messages {
                done = Some(at);
                break;
            }
        }
    }
    let peak_kib = (peak_rss_kib(a_pid), peak_rss_kib(b_pid));
    let cpu = (common::cpu_time(a_pid), common::cpu_time(b_pid));
    let (a_status, rest) = a.terminate(Duration::from_secs(30));
    for (at, line) in &rest {
        tally.add(*at, line);
    }
    stop.store(true, Ordering::Relaxed);
    let (b, mut b_tally) = b_reader.join().expect("B's reader");
    let (b_status, rest) = b.terminate(Duration::from_secs(30));
    for (at, line) in &rest {
        b_tally.add(*at, line);
    }
    let done = done.unwrap_or_else(|| {
        panic!(
            "A had {} of {messages} acknowledged after {limit:?}; logs in {}",
            tally.relayed + tally.not_shown,
            dir.0.display()
        )
    });
    assert!(
        a_status.is_some_and(|s| s.success()) && b_status.is_some_and(|s| s.success()),
        "both hubs stop cleanly: A {a_status:?}, B {b_status:?}"
    );
    let first = tally
        .relayed_span
        .map_or(Duration::ZERO, |(f, _)| f - start);
    Drain {
        took: done - start,
        first,
        peak_kib,
        cpu,
        a_tally: tally,
        b_summary: b_tally.summary,
    }
}

/// Waits until B's log says it listens for neighbours (A would only back off and retry).
fn wait_listening(log: &Path, limit: Duration) {
    let deadline = Instant::now() + limit.min(Duration::from_secs(60));
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("federation listening")
    {
        assert!(
            Instant::now() < deadline,
            "B never listened; log {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn report(what: &str, d: &Drain) {
    let mib =
        |k: Option<u64>| k.map_or("?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!(
        "{what}: peak RSS (VmHWM) A {}, B {}; CPU (user+system) A {}, B {}",
        mib(d.peak_kib.0),
        mib(d.peak_kib.1),
        secs(d.cpu.0),
        secs(d.cpu.1)
    );
    println!(
        "{what}: A printed {} `relayed` lines, {} events not shown; B's last summary: {}",
        d.a_tally.relayed,
        d.a_tally.not_shown,
        d.b_summary.as_deref().unwrap_or("(none)")
    );
}

/// With both stopped: A's queue for B empty, B's store holding every message.
async fn check(hubs: &Hubs, messages: u64) {
    let (a_left, b_holds) = hubs.left().await;
    println!("stores after stop: A has {a_left} left for B, B holds {b_holds} for its radio");
    assert_eq!(a_left, 0, "A's queue for B is empty");
    assert_eq!(b_holds, messages, "B's store holds every message once");
}
