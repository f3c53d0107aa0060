//! The link between gateways (`archipel_adapters::peer::spawn`, `PeerAcceptor`) on real
//! loopback TLS: items both ways, `Delivered` only after the receiver committed, connections
//! cut or peers restarted mid-stream without loss and without acknowledged items coming back,
//! two hubs dialling each other keeping one connection, a wrong key reported with its
//! fingerprint, and a peer that stops answering declared down and dialled again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use archipel_adapters::peer::{
    Identity, Lifecycle, PeerAcceptor, PeerCounters, PeerEvent, PeerHandle, PeerKey,
    PeerLinkConfig, PeerListener, spawn,
};
use archipel_e2e::relay::Relay;
use mesh_core::peer::{Outgoing, SessionConfig};
use mesh_core::{DeliveryStatus, NodeId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Bound on every wait that should end quickly.
const WAIT: Duration = Duration::from_secs(20);

/// A session that notices a silent peer within a second.
fn quick_session() -> SessionConfig {
    SessionConfig {
        keepalive: Duration::from_millis(200),
        dead_after: Duration::from_secs(1),
        ..SessionConfig::default()
    }
}

fn config(
    name: &str,
    identity: &Identity,
    gateway: u32,
    peer_key: PeerKey,
    address: Option<SocketAddr>,
) -> PeerLinkConfig {
    PeerLinkConfig {
        name: name.into(),
        identity: identity.clone(),
        gateway: NodeId::new(gateway),
        channels: vec!["LongFast".into()],
        peer_key,
        address,
        session: quick_session(),
        connect_timeout: Duration::from_secs(5),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
    }
}

/// A listener for `identity` that knows `peers`, accepting into their links.
async fn acceptor(
    identity: &Identity,
    at: SocketAddr,
    peers: &[&PeerHandle],
    keys: &[PeerKey],
) -> (SocketAddr, JoinHandle<()>) {
    let listener = PeerListener::bind(at, identity, keys.iter().copied(), Duration::from_secs(5))
        .await
        .expect("listening on loopback");
    let addr = listener.local_addr().unwrap();
    let map: HashMap<PeerKey, PeerHandle> = keys
        .iter()
        .copied()
        .zip(peers.iter().map(|p| (*p).clone()))
        .collect();
    (addr, tokio::spawn(PeerAcceptor::new(listener, map).run()))
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// An item whose packet starts with its key, so the receiver knows which it got.
fn item(key: u64) -> Outgoing {
    let mut packet = key.to_be_bytes().to_vec();
    packet.resize(60, 0xA5);
    Outgoing {
        key,
        channel: "LongFast".into(),
        origin: NodeId::new(0x1234),
        hops: 0,
        packet,
    }
}

fn key_of(packet: &[u8]) -> u64 {
    u64::from_be_bytes(packet[..8].try_into().unwrap())
}

async fn next_event(events: &mut mpsc::Receiver<PeerEvent>, what: &str) -> PeerEvent {
    timeout(WAIT, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {WAIT:?} while waiting for {what}"))
        .expect("the link is running")
}

async fn wait_up(events: &mut mpsc::Receiver<PeerEvent>, what: &str) -> NodeId {
    loop {
        if let PeerEvent::Up { gateway, .. } = next_event(events, what).await {
            return gateway;
        }
    }
}

/// The sending owner: an outbox of keys (its rows), offered again in key order after every
/// `Up`; a row goes only when its offer is `Delivered`.
struct Outbox {
    /// The rows not yet acknowledged.
    rows: BTreeMap<u64, ()>,
    /// Outcomes of the offers: (key, outcome).
    outcomes: mpsc::UnboundedSender<(u64, DeliveryStatus)>,
    /// Keys answered `Delivered`: a receiver must never get one of these again.
    acked: Arc<std::sync::Mutex<HashSet<u64>>>,
    /// Offers answered `Unreachable`.
    unreachable: usize,
}

impl Outbox {
    fn new(
        keys: impl IntoIterator<Item = u64>,
    ) -> (Outbox, mpsc::UnboundedReceiver<(u64, DeliveryStatus)>) {
        let (outcomes, rx) = mpsc::unbounded_channel();
        let outbox = Outbox {
            rows: keys.into_iter().map(|k| (k, ())).collect(),
            outcomes,
            acked: Arc::default(),
            unreachable: 0,
        };
        (outbox, rx)
    }

    fn offer_all(&self, link: &PeerHandle) {
        for &key in self.rows.keys() {
            let outcome = link.offer(item(key));
            let tx = self.outcomes.clone();
            tokio::spawn(async move {
                let _ = tx.send((key, outcome.await));
            });
        }
    }

    fn outcome(&mut self, key: u64, status: DeliveryStatus) {
        match status {
            DeliveryStatus::Delivered => {
                self.rows.remove(&key);
                self.acked.lock().unwrap().insert(key);
            }
            DeliveryStatus::Unreachable { .. } => self.unreachable += 1,
            other => panic!("item {key}: unexpected outcome {other:?}"),
        }
    }
}

/// The receiving owner: a store with a seen-set; commits what it got unless told to hold.
struct Store {
    /// How many times each key arrived (a repeat of an uncommitted item is allowed).
    arrivals: HashMap<u64, u32>,
    /// Keys committed.
    stored: HashSet<u64>,
    /// The sender's acknowledged keys: one arriving again is a resend of an acknowledged item.
    acked: Arc<std::sync::Mutex<HashSet<u64>>>,
}

impl Store {
    fn new(acked: Arc<std::sync::Mutex<HashSet<u64>>>) -> Store {
        Store {
            arrivals: HashMap::new(),
            stored: HashSet::new(),
            acked,
        }
    }

    /// Takes a delivery; commits it (and tells the link) when `commit`.
    fn deliver(
        &mut self,
        link: &PeerHandle,
        connection: u64,
        items: &[mesh_core::peer::Incoming],
        commit: bool,
    ) {
        for incoming in items {
            let key = key_of(&incoming.packet);
            assert!(
                !self.acked.lock().unwrap().contains(&key),
                "item {key} came again after it was acknowledged"
            );
            *self.arrivals.entry(key).or_default() += 1;
            if commit {
                self.stored.insert(key);
            }
        }
        if commit && let Some(last) = items.last() {
            link.committed(connection, last.seq);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_cross_both_ways_and_are_delivered_only_once_committed() {
    let (a_id, b_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (b, mut b_events) = spawn(config("a", &b_id, 0xB, a_id.public_key(), None));
    let (b_addr, _listener) = acceptor(&b_id, any_port(), &[&b], &[a_id.public_key()]).await;
    let (a, mut a_events) = spawn(config("b", &a_id, 0xA, b_id.public_key(), Some(b_addr)));
    assert_eq!(wait_up(&mut a_events, "A's Up").await, NodeId::new(0xB));
    assert_eq!(wait_up(&mut b_events, "B's Up").await, NodeId::new(0xA));
    timeout(WAIT, a.connected()).await.unwrap().unwrap();
    assert!(a.is_connected() && b.is_connected());

    // One item A→B: delivered to B's owner, but not acknowledged until B commits it.
    let outcome = tokio::spawn(a.offer(item(1)));
    let (connection, items) = loop {
        if let PeerEvent::Deliver { connection, items } =
            next_event(&mut b_events, "B's Deliver").await
        {
            break (connection, items);
        }
    };
    assert_eq!(items.len(), 1);
    assert_eq!(key_of(&items[0].packet), 1);
    assert_eq!(&*items[0].channel, "LongFast");
    assert_eq!(items[0].origin, NodeId::new(0x1234));
    // Far longer than the session's acknowledgement delay (10 ms): an ack would be here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !outcome.is_finished(),
        "Delivered before the receiver committed"
    );
    b.committed(connection, items[0].seq);
    assert_eq!(
        timeout(WAIT, outcome).await.unwrap().unwrap(),
        DeliveryStatus::Delivered
    );

    // An item no session can carry is refused for good, and the link carries on.
    let mut huge = item(2);
    huge.packet = vec![0; 4096];
    assert!(matches!(
        timeout(WAIT, a.offer(huge)).await.unwrap(),
        DeliveryStatus::Rejected { .. }
    ));
    assert_eq!(PeerCounters::get(&a.counters().items_rejected), 1);

    // Many both ways at once, each side committing as it receives.
    let (mut a_out, mut a_outcomes) = Outbox::new(100..400);
    let (mut b_out, mut b_outcomes) = Outbox::new(1000..1300);
    let mut at_b = Store::new(a_out.acked.clone());
    let mut at_a = Store::new(b_out.acked.clone());
    a_out.offer_all(&a);
    b_out.offer_all(&b);
    let exchange = async {
        while !(a_out.rows.is_empty() && b_out.rows.is_empty()) {
            tokio::select! {
                Some((k, s)) = a_outcomes.recv() => a_out.outcome(k, s),
                Some((k, s)) = b_outcomes.recv() => b_out.outcome(k, s),
                Some(e) = a_events.recv() => if let PeerEvent::Deliver { connection, items } = e {
                    at_a.deliver(&a, connection, &items, true);
                },
                Some(e) = b_events.recv() => if let PeerEvent::Deliver { connection, items } = e {
                    at_b.deliver(&b, connection, &items, true);
                },
            }
        }
    };
    timeout(WAIT, exchange)
        .await
        .expect("every item acknowledged both ways");
    assert_eq!(at_b.stored, (100..400).collect());
    assert_eq!(at_a.stored, (1000..1300).collect());
    assert!(
        at_b.arrivals.values().all(|&n| n == 1),
        "no repeats on a steady connection"
    );
    assert_eq!(a_out.unreachable + b_out.unreachable, 0);
    assert_eq!(PeerCounters::get(&a.counters().items_acked), 301);
    assert_eq!(PeerCounters::get(&b.counters().items_received), 301);
    assert_eq!(PeerCounters::get(&a.counters().connects), 1);
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(a.lifecycle(), Lifecycle::Stopped);
    let stopped = a.offer(item(5)).await;
    assert!(matches!(stopped, DeliveryStatus::Unreachable { .. }));
}

/// What disturbs the stream in [`an_interrupted_stream_loses_nothing`].
enum Interruption {
    /// The TCP connection is dropped under both links.
    Cut,
    /// The receiving gateway's link and listener stop, and start again on the same port.
    Restart,
}

/// A sends 2,000 items to B. B commits the first few hundred, then holds its commits (so
/// many are in flight) while the stream is interrupted; A's unacknowledged offers come back
/// `Unreachable`, A offers its outbox again after the next `Up`, and everything arrives:
/// none lost, none acknowledged and then sent again.
async fn an_interrupted_stream_loses_nothing(how: Interruption) {
    let (a_id, b_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (mut b, mut b_events) = spawn(config("a", &b_id, 0xB, a_id.public_key(), None));
    let (b_addr, mut listener) = acceptor(&b_id, any_port(), &[&b], &[a_id.public_key()]).await;
    let relay = Relay::start(b_addr).await;
    let (a, mut a_events) = spawn(config("b", &a_id, 0xA, b_id.public_key(), Some(relay.addr)));
    const N: u64 = 2000;
    let (mut outbox, mut outcomes) = Outbox::new(0..N);
    let mut store = Store::new(outbox.acked.clone());
    let (mut interrupted, mut committing) = (false, true);
    let (mut downs, mut ups) = (0, 0);
    let run = async {
        while !outbox.rows.is_empty() {
            tokio::select! {
                Some((k, s)) = outcomes.recv() => outbox.outcome(k, s),
                Some(e) = a_events.recv() => match e {
                    PeerEvent::Up { .. } => { ups += 1; outbox.offer_all(&a) }
                    PeerEvent::Down { .. } => downs += 1,
                    _ => {}
                },
                Some(e) = b_events.recv() => match e {
                    PeerEvent::Deliver { connection, items } => {
                        store.deliver(&b, connection, &items, committing);
                        if !interrupted && store.arrivals.len() >= 300 {
                            // From now on nothing is committed on this connection: B's
                            // window fills and A has items in flight and waiting.
                            committing = false;
                        }
                        if !interrupted && store.arrivals.len() >= 1000 {
                            interrupted = true;
                            match how {
                                Interruption::Cut => relay.cut(),
                                Interruption::Restart => {
                                    b.shutdown().await;
                                    listener.abort();
                                    let _ = (&mut listener).await;
                                    let (again, events) =
                                        spawn(config("a", &b_id, 0xB, a_id.public_key(), None));
                                    (b, b_events) = (again, events);
                                    listener = acceptor(&b_id, b_addr, &[&b], &[a_id.public_key()]).await.1;
                                }
                            }
                        }
                    }
                    PeerEvent::Up { .. } if interrupted => committing = true,
                    _ => {}
                },
            }
        }
    };
    timeout(WAIT * 2, run)
        .await
        .expect("every item acknowledged after the interruption");
    assert!(interrupted, "the stream was interrupted");
    assert!(
        outbox.unreachable > 0,
        "offers in flight came back Unreachable"
    );
    assert!(
        downs >= 1 && ups >= 2,
        "A saw the connection go and come back"
    );
    for key in 0..N {
        assert!(store.stored.contains(&key), "item {key} was lost");
    }
    assert!(
        store.arrivals.values().any(|&n| n > 1),
        "the items held uncommitted came again"
    );
    assert!(PeerCounters::get(&a.counters().connects) >= 2);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_loses_nothing_and_resends_nothing_acknowledged() {
    an_interrupted_stream_loses_nothing(Interruption::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_receiver_loses_nothing_and_gets_nothing_acknowledged_again() {
    an_interrupted_stream_loses_nothing(Interruption::Restart).await;
}

fn connected_pair(l: Lifecycle) -> Option<(SocketAddr, SocketAddr)> {
    match l {
        Lifecycle::Connected { local, remote, .. } => Some((local, remote)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_that_dial_each_other_keep_one_connection() {
    for _ in 0..3 {
        let (a_id, b_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        // Both listeners first, so both links can dial at once.
        let a_listener = PeerListener::bind(any_port(), &a_id, [b_id.public_key()], WAIT)
            .await
            .unwrap();
        let b_listener = PeerListener::bind(any_port(), &b_id, [a_id.public_key()], WAIT)
            .await
            .unwrap();
        let (a_addr, b_addr) = (
            a_listener.local_addr().unwrap(),
            b_listener.local_addr().unwrap(),
        );
        let (a, mut a_events) = spawn(config("b", &a_id, 0xA, b_id.public_key(), Some(b_addr)));
        let (b, mut b_events) = spawn(config("a", &b_id, 0xB, a_id.public_key(), Some(a_addr)));
        tokio::spawn(PeerAcceptor::new(a_listener, [(b_id.public_key(), a.clone())].into()).run());
        tokio::spawn(PeerAcceptor::new(b_listener, [(a_id.public_key(), b.clone())].into()).run());
        let (mut a_watch, mut b_watch) = (a.watch_lifecycle(), b.watch_lifecycle());
        let same = async {
            loop {
                let (on_a, on_b) = (
                    connected_pair(*a_watch.borrow_and_update()),
                    connected_pair(*b_watch.borrow_and_update()),
                );
                if let (Some((a_local, a_remote)), Some((b_local, b_remote))) = (on_a, on_b)
                    && a_local == b_remote
                    && a_remote == b_local
                {
                    return a.lifecycle();
                }
                tokio::select! {
                    _ = a_watch.changed() => {}
                    _ = b_watch.changed() => {}
                }
            }
        };
        timeout(WAIT, same)
            .await
            .expect("both keep the same connection");
        // Items cross both ways. A connection both sides agreed on may still be replaced by
        // the winning one finishing its handshake late: offers on it come back Unreachable
        // and the owners offer them again after the next Up, as an outbox does.
        let (mut a_out, mut a_outcomes) = Outbox::new([1]);
        let (mut b_out, mut b_outcomes) = Outbox::new([2]);
        a_out.offer_all(&a);
        b_out.offer_all(&b);
        let exchange = async {
            while !(a_out.rows.is_empty() && b_out.rows.is_empty()) {
                tokio::select! {
                    Some((k, s)) = a_outcomes.recv() => a_out.outcome(k, s),
                    Some((k, s)) = b_outcomes.recv() => b_out.outcome(k, s),
                    Some(e) = a_events.recv() => match e {
                        PeerEvent::Up { .. } => a_out.offer_all(&a),
                        PeerEvent::Deliver { connection, items } => a.committed(connection, items.last().unwrap().seq),
                        _ => {}
                    },
                    Some(e) = b_events.recv() => match e {
                        PeerEvent::Up { .. } => b_out.offer_all(&b),
                        PeerEvent::Deliver { connection, items } => b.committed(connection, items.last().unwrap().seq),
                        _ => {}
                    },
                }
            }
        };
        timeout(WAIT, exchange)
            .await
            .expect("an item each way, acknowledged");
        let (on_a, on_b) = (connected_pair(a.lifecycle()), connected_pair(b.lifecycle()));
        let ((a_local, a_remote), (b_local, b_remote)) = (on_a.unwrap(), on_b.unwrap());
        assert_eq!(
            (a_local, a_remote),
            (b_remote, b_local),
            "one connection, the same on both"
        );
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_reported_with_its_fingerprint_and_never_connects() {
    let (a_id, b_id, other) = (
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
    );
    let (b, _b_events) = spawn(config("a", &b_id, 0xB, a_id.public_key(), None));
    let (b_addr, _listener) = acceptor(&b_id, any_port(), &[&b], &[a_id.public_key()]).await;
    // A expects another key at B's address.
    let (a, mut a_events) = spawn(config("b", &a_id, 0xA, other.public_key(), Some(b_addr)));
    // Each refusal is a problem naming the key; the first also tells the owner the peer is
    // down (once, not at every retry), with the same words.
    let mut downs = 0;
    let mut attempt = 0;
    while attempt < 2 {
        match next_event(&mut a_events, "a refusal").await {
            PeerEvent::Problem(text) => {
                assert!(
                    text.contains(&b_id.public_key().fingerprint().to_string()),
                    "attempt {attempt}: the problem names the key presented: {text}"
                );
                attempt += 1;
            }
            PeerEvent::Down { reason } => {
                downs += 1;
                assert!(
                    reason.contains(&b_id.public_key().fingerprint().to_string()),
                    "{reason}"
                );
            }
            other => panic!("attempt {attempt}: expected a Problem, got {other:?}"),
        }
    }
    assert_eq!(downs, 1, "told down once");
    assert!(!a.is_connected() && !b.is_connected());
    assert!(PeerCounters::get(&a.counters().refusals) >= 2);
    assert_eq!(PeerCounters::get(&a.counters().connects), 0);
    assert!(matches!(
        a.offer(item(1)).await,
        DeliveryStatus::Unreachable { .. }
    ));

    // A key B does not know dials B: it hears the refusal; B counts it.
    let (c, mut c_events) = spawn(config("b", &other, 0xC, b_id.public_key(), Some(b_addr)));
    let listener = PeerListener::bind(any_port(), &b_id, [a_id.public_key()], WAIT)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = PeerAcceptor::new(listener, [(a_id.public_key(), b.clone())].into());
    let counters = acceptor.counters();
    tokio::spawn(acceptor.run());
    let (d, mut d_events) = spawn(config("b", &other, 0xD, b_id.public_key(), Some(addr)));
    let mut refusals = 0;
    while refusals < 2 {
        match next_event(&mut d_events, "B refusing an unknown key").await {
            PeerEvent::Problem(_) => refusals += 1,
            PeerEvent::Down { .. } => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // The second refusal came after the first was counted (its own backoff in between).
    assert!(PeerCounters::get(&counters.unknown_keys) >= 1);
    assert_eq!(PeerCounters::get(&counters.adopted), 0);
    assert!(matches!(
        next_event(&mut c_events, "a refusal").await,
        PeerEvent::Problem(_)
    ));
    for link in [&a, &b, &c, &d] {
        link.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_is_declared_down_and_dialled_again() {
    let (a_id, b_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (b, mut b_events) = spawn(config("a", &b_id, 0xB, a_id.public_key(), None));
    let (b_addr, _listener) = acceptor(&b_id, any_port(), &[&b], &[a_id.public_key()]).await;
    let relay = Relay::start(b_addr).await;
    let (a, mut a_events) = spawn(config("b", &a_id, 0xA, b_id.public_key(), Some(relay.addr)));
    wait_up(&mut a_events, "the first Up").await;
    wait_up(&mut b_events, "B's first Up").await;
    relay.freeze();
    // An offer on the frozen connection: never acknowledged, answered when A gives up.
    let stuck = tokio::spawn(a.offer(item(1)));
    let reason = loop {
        if let PeerEvent::Down { reason } = next_event(&mut a_events, "A's Down").await {
            break reason;
        }
    };
    assert!(
        reason.contains("nothing heard"),
        "declared down for silence: {reason}"
    );
    assert!(matches!(
        timeout(WAIT, stuck).await.unwrap().unwrap(),
        DeliveryStatus::Unreachable { .. }
    ));
    wait_up(&mut a_events, "the Up after the redial").await;
    // The new connection works: an item crosses and is acknowledged.
    let outcome = tokio::spawn(a.offer(item(2)));
    loop {
        if let PeerEvent::Deliver { connection, items } =
            next_event(&mut b_events, "the item at B").await
        {
            assert_eq!(key_of(&items[0].packet), 2);
            b.committed(connection, items.last().unwrap().seq);
            break;
        }
    }
    assert_eq!(
        timeout(WAIT, outcome).await.unwrap().unwrap(),
        DeliveryStatus::Delivered
    );
    assert!(PeerCounters::get(&a.counters().connects) >= 2);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_client_is_cut_at_the_handshake_timeout_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (b_id, a_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let limit = Duration::from_millis(400);
    let listener = PeerListener::bind(any_port(), &b_id, [a_id.public_key()], limit)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = PeerAcceptor::new(listener, HashMap::new());
    let counters = acceptor.counters();
    let task = tokio::spawn(acceptor.run());

    // The start of a TLS ClientHello, one byte every 50 ms (a second, scaled to the test's
    // timeout), until the listener closes the connection.
    let hello = [
        0x16u8, 0x03, 0x01, 0x00, 0xf0, 0x01, 0x00, 0x00, 0xec, 0x03, 0x03,
    ];
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut buf = [0u8; 64];
    let mut sent = 0;
    timeout(WAIT, async {
        loop {
            tokio::select! {
                read = tcp.read(&mut buf) => match read {
                    Ok(n) if n > 0 => continue,
                    _ => break,
                },
                _ = tick.tick() => {
                    let byte = hello.get(sent).copied().unwrap_or(0);
                    if tcp.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
            }
        }
    })
    .await
    .expect("the listener closes a trickling client");
    let lasted = started.elapsed();
    assert!(lasted >= limit && lasted < WAIT, "{lasted:?}");
    assert!(sent >= 4, "it trickled {sent} bytes");
    // The accept task counts right after it gave the connection up.
    let counted = timeout(WAIT, async {
        while PeerCounters::get(&counters.timeouts) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(counted.is_ok(), "the timeout is counted");
    assert_eq!(PeerCounters::get(&counters.timeouts), 1);
    assert_eq!(PeerCounters::get(&counters.failed), 0);
    task.abort();
}
