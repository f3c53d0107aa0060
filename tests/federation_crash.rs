//! Federation under crashes (issue 8): two `archipel run` hubs over loopback TLS, hub A taking
//! texts from a real Mosquitto of its own (as downlink from another gateway) and routing them
//! to hub B, which publishes what A hands it to a real Mosquitto of its own, where
//! `mosquitto_sub` records every message. What is checked is what that subscriber sees and what
//! the hubs print.
//!
//! What the product promises, and so what "once" means here:
//! - a hub stores a message once ((from, id) seen-set), and deletes a delivery only when the far
//!   side confirmed it: the next hub's commit for a peer, the broker's PUBACK for MQTT;
//! - so across kill -9 nothing is lost and a hub re-offers what was not confirmed. Between
//!   hubs the seen-set absorbs it: B stores each message once, whatever A re-offers. At
//!   MQTT (QoS 1, no deduplication in the protocol) a message B published but had not yet
//!   deleted when it was killed goes out again after the restart: at-least-once. The
//!   subscriber therefore counts distinct (from, id), and a copy beyond the first is allowed
//!   only for a message published by a B that was then killed: B's own books (the `queued`
//!   and `relayed` lines of all its runs) show each message taken and confirmed at most once.
//!
//! Every wait is for a line or a message, bounded; the only pauses are the ones the test
//! causes (SIGSTOP).

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use archipel_adapters::peer::PeerKey;
use archipel_e2e::bridge::*;
use archipel_e2e::free_port;
use archipel_e2e::mosquitto::{BrokerOptions, Mosquitto, Subscriber};
use archipel_gateway::store::{Store, StoreConfig};
use mesh_core::{ChannelKey, Class, Envelope, GatewayId, NodeId, Packet, PacketId, proto};
use nix::sys::signal::Signal;
use prost::Message as _;

/// The topic root both hubs use (no radio names a region here).
const ROOT: &str = "msh/US";
/// The gateway whose envelopes hub A takes from its broker.
const FAR_GW: &str = "!0badcafe";
/// Hub B's gateway id: the last level of what it publishes.
const B_ID: &str = "!a7c40002";
/// A's MQTT client id, to wait for its subscription.
const A_CLIENT: &str = "archipel-a7c40001";
/// The first of the nodes behind the far gateway; each origin is one of them.
const ORIGIN: u32 = 0x00c0_0001;
/// Bound on a whole drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The world

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hub {
    A,
    B,
}

/// The two hubs' configs and brokers, and the subscriber on B's broker.
struct Hubs {
    /// Feeds hub A.
    into_a: Mosquitto,
    /// Where hub B publishes.
    out_of_b: Mosquitto,
    a_cfg: PathBuf,
    b_cfg: PathBuf,
    /// Runs started so far, for log names.
    runs: usize,
    dir: Scratch,
}

fn write_config(
    dir: &Scratch,
    name: &str,
    id: &str,
    sections: &[String],
    routes: &[String],
) -> PathBuf {
    let home = dir.path(name);
    std::fs::create_dir_all(&home).expect("hub directory");
    let text = gateway_toml_as(id, &home.join("store.sqlite"), "", sections, routes);
    let path = dir.path(&format!("{name}-gateway.toml"));
    std::fs::write(&path, text).expect("config written");
    path
}

impl Hubs {
    /// A dials B. `a_federation` goes into A's `[federation]`; unless `b_knows_a`, B lists
    /// another key for hub-a than A's, and so refuses it.
    fn new(tag: &str, a_federation: &str, b_knows_a: bool) -> Hubs {
        let dir = Scratch::new(tag);
        let into_a = Mosquitto::start(BrokerOptions::default());
        let out_of_b = Mosquitto::start(BrokerOptions::default());
        let listen = free_port();
        let harbour = "[[channel]]\nname = \"Harbour\"\npsk = \"AQ==\"\n".to_owned();
        let mqtt = |name: &str, port: u16, extra: &str| {
            format!(
                "[[mqtt]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\nroot = \"{ROOT}\"\n{extra}"
            )
        };
        let a_key = identity(&write_config(
            &dir,
            "a",
            GATEWAY_ID,
            std::slice::from_ref(&harbour),
            &[],
        ));
        let b_key = identity(&write_config(
            &dir,
            "b",
            B_ID,
            std::slice::from_ref(&harbour),
            &[],
        ));
        let known_a = if b_knows_a {
            a_key
        } else {
            PeerKey::from_bytes([9; 32])
        };
        // The backlog comes from a few nodes in a burst: the downlink rate limit must let it in.
        let a_in = mqtt(
            "in",
            into_a.port(),
            "rate_per_node = 600.0\nburst_per_node = 1000\n",
        );
        let a_cfg = write_config(
            &dir,
            "a",
            GATEWAY_ID,
            &[
                harbour.clone(),
                a_in,
                format!("[federation]\n{a_federation}"),
                format!(
                    "[[peer]]\nname = \"hub-b\"\naddress = \"127.0.0.1:{listen}\"\nkey = \"{b_key}\"\n"
                ),
            ],
            &[route(
                "Harbour",
                &["in"],
                &["hub-b"],
                "Harbour",
                "one_way = true\n",
            )],
        );
        let b_cfg = write_config(
            &dir,
            "b",
            B_ID,
            &[
                harbour,
                mqtt("out", out_of_b.port(), ""),
                format!("[federation]\nlisten = \"127.0.0.1:{listen}\"\n"),
                format!("[[peer]]\nname = \"hub-a\"\nkey = \"{known_a}\"\n"),
            ],
            &[route(
                "Harbour",
                &["hub-a"],
                &["out"],
                "Harbour",
                "one_way = true\n",
            )],
        );
        Hubs {
            into_a,
            out_of_b,
            a_cfg,
            b_cfg,
            runs: 0,
            dir,
        }
    }

    /// Starts a run of `hub` on its config and store, and waits for its broker link.
    fn start(&mut self, hub: Hub) -> Gateway {
        self.runs += 1;
        let (cfg, name, mqtt) = match hub {
            Hub::A => (&self.a_cfg, "a", "in"),
            Hub::B => (&self.b_cfg, "b", "out"),
        };
        let log = format!("{name}-gateway-{}.log", self.runs);
        let mut gw = Gateway::start_logged(&self.dir, cfg, None, &log);
        gw.wait_endpoint_up(0, "mqtt", mqtt);
        gw
    }

    /// Hands `msgs` to A through its broker, each acknowledged (so committed) before the next.
    fn feed_a(&self, msgs: &[Sent]) {
        let key = ChannelKey::from_psk(&[1]);
        let topic = format!("{ROOT}/2/e/Harbour/{FAR_GW}");
        self.into_a.publish_in_order(
            msgs.iter()
                .map(|m| {
                    let e = Envelope::new(
                        m.packet.encrypt("Harbour", &key),
                        "Harbour",
                        GatewayId::parse(FAR_GW),
                    );
                    (topic.clone(), e.encode())
                })
                .collect(),
        );
    }

    /// Asserts that neither hub's store holds a delivery (both stopped: the summary a hub
    /// prints on SIGTERM comes before it confirms what was in flight).
    fn assert_drained(&self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime to read the stores");
        for name in ["a", "b"] {
            let path = self.dir.path(name).join("store.sqlite");
            let queues = runtime.block_on(async {
                let store = Store::open(StoreConfig::new(&path, u64::MAX))
                    .await
                    .expect("the store opens");
                let queues = store.queues().await.expect("its queues");
                store.close().await;
                queues
            });
            let left: Vec<String> = queues
                .iter()
                .filter(|q| q.count > 0)
                .map(|q| format!("{} {}", q.destination, q.count))
                .collect();
            assert!(left.is_empty(), "hub {name} still holds {left:?}");
        }
    }

    /// The subscriber on B's broker.
    fn subscribe_b(&self) -> Subscriber {
        Subscriber::start(&self.out_of_b, &format!("{ROOT}/2/e/Harbour/#"), None)
    }
}

/// A message the test sends through A, as the far gateway's node said it.
struct Sent {
    from: NodeId,
    id: PacketId,
    class: Class,
    packet: Packet,
}

impl Sent {
    /// A message of `class` from origin `origin` (0-based) with id `id`.
    fn new(class: Class, origin: u32, id: u32) -> Sent {
        let (port, payload) = match class {
            Class::Position => (
                proto::PortNum::PositionApp,
                proto::Position {
                    latitude_i: Some(450_000_000 + id as i32),
                    longitude_i: Some(60_000_000),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            Class::Telemetry => (
                proto::PortNum::TelemetryApp,
                proto::Telemetry {
                    variant: Some(proto::telemetry::Variant::DeviceMetrics(
                        proto::DeviceMetrics {
                            battery_level: Some(id % 100),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            _ => (
                proto::PortNum::TextMessageApp,
                format!("crash test {origin}/{id}").into_bytes(),
            ),
        };
        let from = ORIGIN + origin;
        let packet = Packet::from_data(
            proto::MeshPacket {
                from,
                to: NodeId::BROADCAST.get(),
                id,
                hop_limit: 3,
                hop_start: 3,
                ..Default::default()
            },
            proto::Data {
                portnum: port as i32,
                payload,
                ..Default::default()
            },
        );
        assert_eq!(Class::of(&packet), class);
        Sent {
            from: NodeId::new(from),
            id: PacketId::new(id),
            class,
            packet,
        }
    }

    fn key(&self) -> (NodeId, PacketId) {
        (self.from, self.id)
    }

    /// Whether a gateway line is this message's `queued` line.
    fn queued(&self, line: &str) -> bool {
        line.contains(&format!("queued {} {} ", self.from, self.id))
    }

    /// Whether a gateway line is this message's `relayed` line to `dest`.
    fn relayed_to(&self, dest: &str, line: &str) -> bool {
        line.contains(&format!("relayed {} {} -> {dest}#", self.from, self.id))
    }
}

/// What B's broker delivered to the subscriber, in arrival order.
#[derive(Default)]
struct Sink {
    /// Every arrival: sender, id and class (decrypted with Harbour's key).
    arrivals: Vec<(NodeId, PacketId, Class)>,
    distinct: HashSet<(NodeId, PacketId)>,
}

impl Sink {
    /// Reads until `done` holds, within `limit`.
    fn read_until(&mut self, sub: &Subscriber, limit: Duration, done: impl Fn(&Sink) -> bool) {
        let key = ChannelKey::from_psk(&[1]);
        let deadline = Instant::now() + limit;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = sub.next(left).unwrap_or_else(|| {
                panic!(
                    "B's broker stopped delivering: {} arrivals, {} distinct, within {}s",
                    self.arrivals.len(),
                    self.distinct.len(),
                    limit.as_secs()
                )
            });
            let e = Envelope::decode(&m.payload).expect("B publishes envelopes");
            let p = e.packet.decrypt(&key).expect("decrypts with Harbour's key");
            self.distinct.insert((p.from(), p.id()));
            self.arrivals.push((p.from(), p.id(), Class::of(&p)));
        }
    }

    /// The first arrival of each message, in arrival order.
    fn firsts(&self) -> Vec<(NodeId, PacketId, Class)> {
        let mut seen = HashSet::new();
        self.arrivals
            .iter()
            .filter(|(f, i, _)| seen.insert((*f, *i)))
            .copied()
            .collect()
    }

    /// Asserts that the first arrivals from each origin come in the order `sent` has them.
    fn assert_in_order_per_origin(&self, sent: &[Sent]) {
        let rank: HashMap<(NodeId, PacketId), usize> =
            sent.iter().enumerate().map(|(i, m)| (m.key(), i)).collect();
        let mut last: HashMap<NodeId, usize> = HashMap::new();
        for (from, id, _) in self.firsts() {
            let Some(&r) = rank.get(&(from, id)) else {
                continue;
            };
            if let Some(&before) = last.get(&from) {
                assert!(
                    before < r,
                    "{from} {id} arrived after a later message of the same origin"
                );
            }
            last.insert(from, r);
        }
    }
}

/// A small seeded generator (SplitMix64): the kill points repeat for a printed seed.
struct Rng(u64);

impl Rng {
    /// `ARCHIPEL_CRASH_SEED`, or one from the clock; printed either way.
    fn from_env() -> Rng {
        let seed = std::env::var("ARCHIPEL_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(8)
            });
        eprintln!("kill points: seed {seed} (set ARCHIPEL_CRASH_SEED={seed} to repeat them)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `range`.
    fn within(&mut self, range: std::ops::RangeInclusive<usize>) -> usize {
        range.start() + (self.next() % (range.end() - range.start() + 1) as u64) as usize
    }
}

/// How many of `lines` `pick` accepts, over runs.
fn count(runs: &[Vec<String>], pick: impl Fn(&str) -> bool) -> usize {
    runs.iter().flatten().filter(|l| pick(l)).count()
}

// ---------------------------------------------------------------------------------------------
// 1. kill -9 of either side during a drain

/// Messages in the backlog, from `ORIGINS` nodes taking turns.
const BACKLOG: u32 = 1000;
const ORIGINS: u32 = 8;

#[test]
fn either_hub_killed_during_a_drain_of_a_thousand_loses_nothing_and_takes_each_message_once() {
    let mut rng = Rng::from_env();
    let mut h = Hubs::new("fed-crash-kill", "", true);
    let sent: Vec<Sent> = (0..BACKLOG)
        .map(|i| Sent::new(Class::Channel, i % ORIGINS, 0x100 + i / ORIGINS))
        .collect();
    // The backlog, all in A's store while B is away.
    let mut a = h.start(Hub::A);
    h.into_a
        .wait_subscriptions(&[(A_CLIENT, &format!("{ROOT}/2/e/Harbour/+"))]);
    h.feed_a(&sent);
    a.wait_count("the backlog queued for hub-b", sent.len(), |l| {
        l.contains(" queued ") && l.ends_with("for hub-b")
    });

    let sub = h.subscribe_b();
    let mut b = h.start(Hub::B);
    let mut sink = Sink::default();
    let mut finished: HashMap<&str, Vec<Vec<String>>> = HashMap::new();
    let first = if rng.next().is_multiple_of(2) {
        Hub::A
    } else {
        Hub::B
    };
    let kills = rng.within(3..=5);
    let mut b_kills = 0;
    for k in 0..kills {
        let victim = if (k % 2 == 0) == (first == Hub::A) {
            Hub::A
        } else {
            Hub::B
        };
        // At most 180 per kill, five kills: the last still falls inside the drain.
        let after = rng.within(20..=180);
        let goal = sink.distinct.len() + after;
        sink.read_until(&sub, DRAIN_LIMIT, |s| s.distinct.len() >= goal);
        let gw = match victim {
            Hub::A => &mut a,
            Hub::B => &mut b,
        };
        let status = gw.signal_and_wait(Signal::SIGKILL);
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status:?}");
        let dest = if victim == Hub::A {
            "-> hub-b#"
        } else {
            "-> out#"
        };
        eprintln!(
            "kill {}: SIGKILL hub {victim:?} once {} messages arrived at B's broker (that run confirmed {} {dest})",
            k + 1,
            sink.distinct.len(),
            gw.count(&|l| l.contains(" relayed ") && l.contains(dest)),
        );
        finished
            .entry(if victim == Hub::A { "a" } else { "b" })
            .or_default()
            .push(gw.texts());
        b_kills += usize::from(victim == Hub::B);
        *gw = h.start(victim);
    }
    sink.read_until(&sub, DRAIN_LIMIT, |s| s.distinct.len() >= sent.len());
    // A marker behind the backlog: once it is through, so is anything B had to send again.
    let marker = Sent::new(Class::Channel, ORIGINS, 0x100);
    h.into_a
        .wait_subscriptions(&[(A_CLIENT, &format!("{ROOT}/2/e/Harbour/+"))]);
    h.feed_a(std::slice::from_ref(&marker));
    sink.read_until(&sub, LIMIT, |s| s.distinct.contains(&marker.key()));
    a.wait("A confirmed the marker", |l| marker.relayed_to("hub-b", l));
    b.wait("B confirmed the marker", |l| marker.relayed_to("out", l));
    for (name, gw) in [("a", &mut a), ("b", &mut b)] {
        gw.terminate();
        assert_eq!(gw.summary_count("refused"), Some(0), "nothing refused");
        finished.entry(name).or_default().push(gw.texts());
    }
    h.assert_drained();

    let expected: HashSet<(NodeId, PacketId)> =
        sent.iter().chain([&marker]).map(Sent::key).collect();
    assert_eq!(
        sink.distinct, expected,
        "every message arrived, nothing else"
    );
    sink.assert_in_order_per_origin(&sent);
    let copies = sink.arrivals.len() - sink.distinct.len();
    eprintln!("{kills} kills ({b_kills} of B): {copies} copies at B's broker beyond the first");
    let (a_runs, b_runs) = (&finished["a"], &finished["b"]);
    for m in &sent {
        assert_eq!(
            count(a_runs, |l| m.queued(l)),
            1,
            "A took {} {} once",
            m.from,
            m.id
        );
        assert!(
            count(b_runs, |l| m.queued(l)) <= 1,
            "B took {} {} twice: its seen-set failed",
            m.from,
            m.id
        );
        assert!(
            count(b_runs, |l| m.relayed_to("out", l)) <= 1,
            "B confirmed {} {} to its broker twice",
            m.from,
            m.id
        );
        let arrived = sink
            .arrivals
            .iter()
            .filter(|(f, i, _)| (*f, *i) == m.key())
            .count();
        assert!(
            arrived <= 1 + b_kills,
            "{} {} arrived {arrived} times: more than B's kills can explain",
            m.from,
            m.id
        );
    }
    if b_kills == 0 {
        assert_eq!(copies, 0, "with B never killed, every message arrives once");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A stopped peer

/// SIGCONTs a stopped hub whatever happens, so its SIGTERM on drop is heard.
struct Stopped(u32);

impl Stopped {
    fn stop(gw: &Gateway) -> Stopped {
        let pid = gw.process.pid().expect("running");
        signal(pid, Signal::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, Signal::SIGCONT);
    }
}

fn signal(pid: u32, s: Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid fits an i32"));
    nix::sys::signal::kill(pid, s).expect("the hub can be signalled");
}

#[test]
fn a_peer_stopped_for_a_while_gets_the_backlog_once_and_the_most_urgent_class_first() {
    // A gives up a silent neighbour after 3 s (keepalives every second).
    let mut h = Hubs::new("fed-crash-stop", "dead_after_secs = 3\n", true);
    let mut a = h.start(Hub::A);
    let mut b = h.start(Hub::B);
    a.wait_endpoint_up(0, "peer", "hub-b");
    b.wait_endpoint_up(0, "peer", "hub-a");
    h.into_a
        .wait_subscriptions(&[(A_CLIENT, &format!("{ROOT}/2/e/Harbour/+"))]);
    let sub = h.subscribe_b();

    let mark = a.mark();
    let stopped = Stopped::stop(&b);
    a.wait_after(mark, "hub-b given up", |l| l.contains("peer hub-b down"));
    // Least urgent first, taking turns, so arrival order is the reverse of what must drain.
    let classes = [Class::Telemetry, Class::Position, Class::Channel];
    let sent: Vec<Sent> = (0..60u32)
        .map(|i| Sent::new(classes[(i % 3) as usize], i % 3, 0x200 + i))
        .collect();
    h.feed_a(&sent);
    a.wait_count("the backlog queued for hub-b", sent.len(), |l| {
        l.contains(" queued ") && l.ends_with("for hub-b")
    });
    let mark = a.mark();
    drop(stopped);

    let mut sink = Sink::default();
    sink.read_until(&sub, DRAIN_LIMIT, |s| s.distinct.len() >= sent.len());
    a.wait_after(mark, "hub-b back", |l| l.contains(" peer hub-b up"));
    // A confirms in batches and prints a batch in queue order: wait for each.
    for m in &sent {
        a.wait("A confirmed it", |l| m.relayed_to("hub-b", l));
        b.wait("B confirmed it", |l| m.relayed_to("out", l));
    }
    // Behind the backlog on both hubs: once it is through, B sent nothing more.
    let marker = Sent::new(Class::Channel, 3, 0x300);
    h.feed_a(std::slice::from_ref(&marker));
    sink.read_until(&sub, LIMIT, |s| s.distinct.contains(&marker.key()));
    assert_eq!(
        sink.arrivals.len(),
        sink.distinct.len(),
        "B never stopped for good: every message arrives once"
    );
    let expected: HashSet<(NodeId, PacketId)> =
        sent.iter().chain([&marker]).map(Sent::key).collect();
    assert_eq!(sink.distinct, expected);
    let backlog: HashSet<(NodeId, PacketId)> = sent.iter().map(Sent::key).collect();
    let order: Vec<Class> = sink
        .firsts()
        .iter()
        .filter(|(f, i, _)| backlog.contains(&(*f, *i)))
        .map(|(_, _, c)| *c)
        .collect();
    assert!(
        order.is_sorted(),
        "the backlog drained most urgent class first: {order:?}"
    );
    sink.assert_in_order_per_origin(&sent);
    // A's own order to hub-b, on its relayed lines.
    let relayed: Vec<Class> = a
        .texts()
        .iter()
        .filter_map(|l| sent.iter().find(|m| m.relayed_to("hub-b", l)))
        .map(|m| m.class)
        .collect();
    assert_eq!(
        relayed.len(),
        sent.len(),
        "A relayed each once:\n{}",
        a.printed()
    );
    assert!(
        relayed.is_sorted(),
        "A relayed most urgent first: {relayed:?}"
    );
    a.terminate();
    b.terminate();
    h.assert_drained();
}

// ---------------------------------------------------------------------------------------------
// 3. Refusals counted

#[test]
fn a_hub_presenting_a_key_no_peer_lists_is_refused_and_both_summaries_count_it() {
    let mut h = Hubs::new("fed-crash-refused", "", false);
    let mut b = h.start(Hub::B);
    let mut a = h.start(Hub::A);
    a.wait("A told it was refused", |l| {
        l.contains("PROBLEM hub-b") && l.contains("refused")
    });
    // Logged by B right after it counted the refusal.
    b.process
        .wait_log_line(LIMIT, |l| l.contains("refused an unknown key"));
    for (name, gw) in [("a", &mut a), ("b", &mut b)] {
        gw.terminate();
        let refused = gw.summary_count("refused");
        assert!(
            refused.is_some_and(|n| n >= 1),
            "{name}'s summary counts the refusal: {refused:?}\n{}",
            gw.printed()
        );
        assert_eq!(
            gw.summary_count("dropped"),
            Some(0),
            "no packet was dropped"
        );
    }
}
