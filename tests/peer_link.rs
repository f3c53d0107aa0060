//! The link between gateways (`archipel_adapters::peer::spawn`, `PeerAcceptor`) on real
//! loopback TLS: items both ways, `Delivered` only after the receiver committed, connections
//! cut or peers restarted mid-stream without loss and without acknowledged items coming back,
//! two hubs dialling each other keeping one connection, a wrong key reported with its
//! fingerprint, and a peer that stops answering declared down and dialled again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use archipel_adapters::peer::{
    Identity, Lifecycle, PeerAcceptor, PeerCounters, PeerEvent, PeerHandle, PeerKey,
    PeerLinkConfig, PeerListener, spawn,
};
use mesh_core::peer::{Outgoing, SessionConfig};
use mesh_core::{DeliveryStatus, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
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
    fn new(keys: impl IntoIterator<Item = u64>) -> (Outbox, mpsc::UnboundedReceiver<(u64, DeliveryStatus)>) {
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
        if let PeerEvent::Deliver { connection, items } = next_event(&mut b_events, "B's Deliver").await {
            break (connection, items);
        }
    };
    assert_eq!(items.len(), 1);
    assert_eq!(key_of(&items[0].packet), 1);
    assert_eq!(&*items[0].channel, "LongFast");
    assert_eq!(items[0].origin, NodeId::new(0x1234));
    // Far longer than the session's acknowledgement delay (10 ms): an ack would be here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!outcome.is_finished(), "Delivered before the receiver committed");
    b.committed(connection, items[0].seq);
    assert_eq!(
        timeout(WAIT, outcome).await.unwrap().unwrap(),
        DeliveryStatus::Delivered
    );

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
    timeout(WAIT, exchange).await.expect("every item acknowledged both ways");
    assert_eq!(at_b.stored, (100..400).collect());
    assert_eq!(at_a.stored, (1000..1300).collect());
    assert!(at_b.arrivals.values().all(|&n| n == 1), "no repeats on a steady connection");
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
