//! Federation over a thin link: two `archipel run` hubs, each in a network namespace of its
//! own, joined by a veth pair shaped to 9,600 bit/s each way. Hub A starts with a backlog
//! queued for hub B (its store prefilled by its own router); B routes what it takes to a
//! radio that is down, so every message B committed stays in its store. Checked: every
//! message reaches B's store exactly once and leaves A's queue, also when a fifth of A's
//! packets are dropped; printed: what crossing the link cost per message, in bytes counted by
//! the veth devices (Ethernet, IP, TCP and its acks, TLS, the peer protocol, both ways,
//! handshake and keepalives included).
//!
//! Needs root (network namespaces, `tc`, `nft`): a machine where the setup fails fails the
//! test, naming the command that failed.

#[path = "benches/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use archipel_e2e::archipel_bin;
use archipel_e2e::bridge::{Gateway, Scratch, message_key};
use archipel_e2e::netns::{Counters, End, Shape, Veth};
use common::hubs::{self, Hubs};

/// The port B listens on, inside its namespace.
const PEER_PORT: u16 = 4404;

/// Bound on the whole drain: about ten times what 200 messages take on a clean 9,600 bit/s
/// link, room for TCP's retransmission timeouts under loss.
const DRAIN_LIMIT: Duration = Duration::from_secs(150);

/// What one drain over the link showed.
struct Drained {
    /// Bytes counted on A's device (what A sent, what B sent), from before the hubs started
    /// to A's last acknowledgement.
    wire: Counters,
    /// The same on B's device: A's sending less what the link dropped, and B's own.
    wire_b: Counters,
    /// From A's start to its last acknowledgement.
    took: Duration,
    /// How many times B printed each message as queued (committed to its store).
    queued_at_b: HashMap<String, usize>,
    /// A's deliveries to B left in its store, and B's to its radio, after both stopped.
    left: (u64, u64),
    /// B's last summary line.
    b_summary: String,
}

/// Prefills A with `messages`, runs both hubs in their namespaces (A's sent packets dropped
/// at `loss_percent` when given) until A has B's acknowledgement of every message, stops
/// them and reads both stores.
fn drain(tag: &str, messages: u64, loss_percent: Option<u8>) -> Drained {
    let dir = Scratch::new(tag);
    let link = Veth::new(tag, Some(Shape::THIN_9600));
    if let Some(percent) = loss_percent {
        link.a.drop_sent(percent);
    }
    let listen = SocketAddr::new(link.b.address.into(), PEER_PORT);
    let hubs = Hubs::write(&dir.0, &archipel_bin(), listen, messages, None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(hubs.prefill(messages, common::PAYLOAD));

    let (before, before_b) = (link.a.counters(), link.b.counters());
    let start_in = |end: &End, config: &std::path::Path, log: &str| {
        let mut cmd = end.command(&archipel_bin());
        cmd.arg("run").arg("--config").arg(config);
        Gateway::spawn(cmd, &dir.path(log))
    };
    let mut b = start_in(&link.b, &hubs.b_config, "b-gateway.log");
    // A dials at once; it would only back off and retry if B were not listening yet.
    b.process
        .wait_log_line(DRAIN_LIMIT, |l| l.contains("federation listening"));
    let started = Instant::now();
    let mut a = start_in(&link.a, &hubs.a_config, "a-gateway.log");
    let deadline = started + DRAIN_LIMIT;
    let acked = |l: &str| l.contains(" relayed ") && l.contains(&format!("-> {}#", hubs::HUB_B));
    read_until(
        &mut a,
        "A's relayed lines for every message",
        deadline,
        |g| g.count(&acked) as u64 >= messages,
    );
    let took = started.elapsed();
    let (wire, wire_b) = (
        link.a.counters().since(before),
        link.b.counters().since(before_b),
    );
    // B printed each commit before it acknowledged it, so its lines are all in its pipe.
    read_until(
        &mut b,
        "B's queued lines for every message",
        deadline,
        |g| g.count(&is_queued) as u64 >= messages,
    );
    assert!(a.terminate().success(), "A stopped cleanly on SIGTERM");
    assert!(b.terminate().success(), "B stopped cleanly on SIGTERM");
    let mut queued_at_b = HashMap::new();
    for line in b.texts().iter().filter(|l| is_queued(l)) {
        let key = message_key(line).unwrap_or_else(|| panic!("a queued line: {line}"));
        *queued_at_b.entry(key).or_insert(0) += 1;
    }
    let b_summary = b
        .texts()
        .into_iter()
        .rev()
        .find(|l| l.contains(" summary: "))
        .unwrap_or_default();
    let left = runtime.block_on(hubs.left());
    drop((a, b, link));
    Drained {
        wire,
        wire_b,
        took,
        queued_at_b,
        left,
        b_summary,
    }
}

/// Whether `line` is a `queued` line (`HH:MM:SS queued !from 0xid ...`), not a summary's
/// `queued N` counter.
fn is_queued(line: &str) -> bool {
    line.split_once(' ')
        .is_some_and(|(_, body)| body.starts_with("queued "))
}

/// Reads `gw`'s lines until `done` holds, failing with what it printed past `deadline`.
fn read_until(gw: &mut Gateway, what: &str, deadline: Instant, done: impl Fn(&Gateway) -> bool) {
    while !done(gw) {
        match gw
            .process
            .next_line(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => gw.lines.push(line),
            Err(e) => panic!(
                "no {what} within {}s ({e:?}); printed:\n{}\nlog tail:\n{}",
                DRAIN_LIMIT.as_secs(),
                gw.printed(),
                gw.process.log_tail(30)
            ),
        }
    }
}

/// Asserts that every one of `messages` reached B's store once and left A's queue, and
/// prints the link's cost.
fn check_and_report(what: &str, messages: u64, d: &Drained) {
    let twice: Vec<_> = d.queued_at_b.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "B committed some twice: {twice:?}");
    assert_eq!(
        d.queued_at_b.len() as u64,
        messages,
        "B committed every message"
    );
    assert_eq!(
        d.left,
        (0, messages),
        "A's queue for B is empty and B's store holds each message once"
    );
    println!(
        "{what}: {messages} messages in {:.1} s; on A's device {} bytes sent, {} received: \
         {:.1} bytes per message both ways (B's device: {} received, {} sent)",
        d.took.as_secs_f64(),
        d.wire.tx,
        d.wire.rx,
        d.wire.total() as f64 / messages as f64,
        d.wire_b.rx,
        d.wire_b.tx,
    );
    println!(
        "{what}: {} packets sent and {} received on A's device; TCP retransmitted {} segments \
         at A, {} at B",
        d.wire.tx_packets, d.wire.rx_packets, d.wire.retransmits, d.wire_b.retransmits
    );
    println!("{what}: B's last summary: {}", d.b_summary);
}

#[test]
fn a_backlog_crosses_a_9600_bit_link_once_each_and_its_bytes_per_message_are_printed() {
    let messages = 200;
    let d = drain("thin", messages, None);
    check_and_report("thin link", messages, &d);
}

#[test]
fn a_backlog_crosses_a_9600_bit_link_losing_a_fifth_of_its_packets_once_each() {
    let messages = 100;
    let d = drain("lossy", messages, Some(20));
    check_and_report("thin link, 20 % of A's packets dropped", messages, &d);
}
