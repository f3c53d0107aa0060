//! Direct messages wait for their node: the drain worker with a real store file, the real
//! router and node directory, and a sink that decides as the radio sink does (a packet for
//! one node not heard for `absent_after` is parked) and "sends" at once, recording what went.
//!
//! Every wait is for an event (an activity, a send), bounded; nothing sleeps.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use archipel_gateway::activity::Activity;
use archipel_gateway::app::now_ms;
use archipel_gateway::config::Config;
use archipel_gateway::nodes::{DEFAULT_AWAY_AFTER, NodeDirectory};
use archipel_gateway::router::{Decision, Heard, Rendered, Router};
use archipel_gateway::sink::radio::must_wait;
use archipel_gateway::sink::{Prepared, Sink, Stopped};
use archipel_gateway::stats::Stats;
use archipel_gateway::store::{Delivery, Store, StoreConfig};
use archipel_gateway::worker::{DrainWorker, Shared};
use common::TempDir;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use mesh_core::{DeliveryStatus, NodeId, Packet, PacketId, proto};
use prost::Message;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(20);
const ABSENT_AFTER: Duration = Duration::from_secs(7200);
/// The node the direct messages are for (away), a node that is here, and the sender.
const AMIRA: NodeId = NodeId::new(0xa1b2_c3d4);
const BEN: NodeId = NodeId::new(0x0000_be01);
const SENDER: NodeId = NodeId::new(0x5151_0001);
/// How far ahead of the host's clock the test's clock runs: the fake radio decides at
/// `now + SKEW`, and nodes are heard at `now + SKEW - ago`, so "heard 3 h ago" needs no
/// `Instant` before the host booted (which some platforms cannot hold).
const SKEW: Duration = Duration::from_secs(24 * 3600);

/// The test's clock.
fn clock() -> Instant {
    Instant::now() + SKEW
}

/// What the fake radio sent: (sender, packet id, to).
type Sent = (NodeId, PacketId, NodeId);

/// Parks as the radio sink does, except for nodes in `never_park` (a sink that changed its mind
/// between two rows), and delivers at once.
struct FakeRadio {
    nodes: Arc<NodeDirectory>,
    never_park: Arc<Mutex<HashSet<NodeId>>>,
    sent: mpsc::UnboundedSender<Sent>,
}

impl Sink for FakeRadio {
    fn window(&self) -> usize {
        1
    }

    fn ready(&self) -> BoxFuture<'static, Result<(), Stopped>> {
        futures_util::future::ready(Ok(())).boxed()
    }

    fn prepare(&mut self, row: &Delivery, out: Rendered, now: Instant) -> Prepared {
        let now = now + SKEW;
        let to = out.packet.to();
        let heard = self.nodes.last_heard(to);
        if !self.never_park.lock().unwrap().contains(&to)
            && must_wait(to, None, heard, now, ABSENT_AFTER)
        {
            return Prepared::Park {
                node: to,
                reason: self.nodes.waiting_line(to, now),
                heard,
            };
        }
        let (tx, what) = (self.sent.clone(), (row.from, row.id, to));
        Prepared::Send {
            send: async move {
                let _ = tx.send(what);
                DeliveryStatus::Delivered
            }
            .boxed(),
            airtime: None,
        }
    }
}

fn config(store: &std::path::Path) -> Config {
    Config::from_toml(&format!(
        r#"
[gateway]
name = "park"
id = "!a7c40001"
[store]
path = "{}"
[[radio]]
name = "a"
tcp = "127.0.0.1:9"
channels = [ {{ name = "LongFast", psk = "AQ==" }} ]
[[radio]]
name = "elsewhere"
tcp = "127.0.0.1:10"
channels = [ {{ name = "LongFast", psk = "AQ==" }} ]
[[route]]
channel = "LongFast"
from = ["elsewhere"]
to = ["a"]
one_way = true
"#,
        store.display()
    ))
    .expect("test config is valid")
}

/// A gateway's insides around one worker for radio `a`.
struct World {
    _dir: TempDir,
    store: Store,
    router: Arc<Router>,
    nodes: Arc<NodeDirectory>,
    never_park: Arc<Mutex<HashSet<NodeId>>>,
    stats: Arc<Stats>,
    activity: broadcast::Sender<Activity>,
    wake: Arc<Notify>,
}

/// A running worker: what it sends, what it says, how to stop it.
struct Running {
    sent: mpsc::UnboundedReceiver<Sent>,
    activity: broadcast::Receiver<Activity>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl World {
    async fn new(tag: &str) -> World {
        let dir = TempDir::new(tag);
        let config = config(&dir.file());
        let store = Store::open(StoreConfig::new(config.store.path.clone(), 1000))
            .await
            .unwrap();
        World {
            _dir: dir,
            store,
            router: Arc::new(Router::new(&config)),
            nodes: Arc::new(NodeDirectory::new(100, DEFAULT_AWAY_AFTER)),
            never_park: Arc::default(),
            stats: Arc::new(Stats::new(["a", "elsewhere"])),
            activity: broadcast::channel(1024).0,
            wake: Arc::new(Notify::new()),
        }
    }

    fn start(&self) -> Running {
        let (tx, sent) = mpsc::unbounded_channel();
        let sink = FakeRadio {
            nodes: self.nodes.clone(),
            never_park: self.never_park.clone(),
            sent: tx,
        };
        let shared = Shared {
            store: self.store.clone(),
            router: self.router.clone(),
            activity: self.activity.clone(),
            stats: self.stats.clone(),
            max_attempts: 3,
            nodes: self.nodes.clone(),
            show_direct: false,
        };
        let activity = self.activity.subscribe();
        let worker = DrainWorker::new("a".into(), sink, &shared, self.wake.clone());
        let (stop, stop_rx) = watch::channel(false);
        Running {
            sent,
            activity,
            stop,
            task: tokio::spawn(worker.run(stop_rx)),
        }
    }

    /// Queues texts heard elsewhere for radio `a`: (id, to), a direct message unless `to` is
    /// broadcast. Rings the worker, as ingest does after a commit.
    async fn queue(&self, texts: &[(u32, NodeId)]) {
        let batch: Vec<_> = texts
            .iter()
            .map(|&(id, to)| {
                let mut p = Packet::text_message(to, 0, &format!("text {id:x}"));
                let m = p.meta_mut();
                (m.from, m.id, m.hop_start) = (SENDER.get(), id, 3);
                let heard = Heard {
                    source: "elsewhere",
                    channel: "LongFast",
                    packet: &p,
                    local: None,
                    federated: None,
                };
                match self.router.route(heard, now_ms()) {
                    Decision::Relay(inbound) => inbound,
                    Decision::Ignore(why) => panic!("not routed: {why:?}"),
                }
            })
            .collect();
        self.store.accept(&batch, now_ms()).await.unwrap();
        self.wake.notify_one();
    }

    /// Radio `a` hears `node` (a text from it) `ago` before now.
    fn hear(&self, node: NodeId, ago: Duration) {
        let mut p = Packet::text_message(NodeId::BROADCAST, 0, "here");
        (p.meta_mut().from, p.meta_mut().id) = (node.get(), 0x77);
        let at = clock() - ago;
        assert!(!self.nodes.heard("a", &p, at, now_ms()));
    }

    /// Radio `a` learns `node`'s names (a NodeInfo heard `ago` before now).
    fn name(&self, node: NodeId, long_name: &str, ago: Duration) {
        let user = proto::User {
            long_name: long_name.into(),
            ..Default::default()
        };
        let p = Packet::from_data(
            proto::MeshPacket {
                from: node.get(),
                to: NodeId::BROADCAST.get(),
                id: 0x78,
                ..Default::default()
            },
            proto::Data {
                portnum: proto::PortNum::NodeinfoApp as i32,
                payload: user.encode_to_vec(),
                ..Default::default()
            },
        );
        let at = clock() - ago;
        assert!(!self.nodes.heard("a", &p, at, now_ms()));
    }

    fn parked_gauge(&self) -> u64 {
        Stats::get(&self.stats.endpoint("a").unwrap().parked)
    }
}

impl Running {
    /// The next `n` sends, in order.
    async fn sends(&mut self, n: usize) -> Vec<u32> {
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout(LIMIT, self.sent.recv()).await {
                Ok(Some((_, id, _))) => got.push(id.get()),
                other => panic!("only {got:x?} of {n} sends came: {other:?}"),
            }
        }
        got
    }

    /// Waits for `id` to be said parked; returns its reason.
    async fn parked(&mut self, id: u32) -> String {
        loop {
            match tokio::time::timeout(LIMIT, self.activity.recv()).await {
                Ok(Ok(Activity::Parked {
                    id: got, reason, ..
                })) if got.get() == id => return reason,
                Ok(Ok(_)) => {}
                other => panic!("{id:#x} was not parked: {other:?}"),
            }
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("the worker stops")
            .unwrap();
    }
}

#[tokio::test]
async fn a_direct_message_for_an_absent_node_waits_without_holding_the_queue_and_goes_when_it_is_heard()
 {
    let w = World::new("park-basic").await;
    w.name(AMIRA, "Amira", Duration::from_secs(3 * 3600 + 60));
    w.hear(BEN, Duration::from_secs(60));
    // Drain order is direct first: 1, 2 for Amira (away), 3 for Ben (here); then the
    // channel texts 4 and 5.
    w.queue(&[
        (1, AMIRA),
        (4, NodeId::BROADCAST),
        (2, AMIRA),
        (3, BEN),
        (5, NodeId::BROADCAST),
    ])
    .await;
    let mut run = w.start();
    assert_eq!(
        run.parked(1).await,
        "waiting for Amira's radio (!a1b2c3d4 last heard 3 h ago)"
    );
    assert_eq!(run.sends(3).await, [3, 4, 5], "the rest of the queue goes");
    run.parked(2).await;
    assert_eq!(w.parked_gauge(), 2);
    assert_eq!(w.stats.endpoint("a").unwrap().waiting_for(), [(AMIRA, 2)]);
    assert_eq!(
        w.store.depths().await.unwrap().len(),
        1,
        "both still queued"
    );

    // A later text for Amira waits with the others, even queued while they wait.
    w.queue(&[(6, AMIRA), (7, NodeId::BROADCAST)]).await;
    assert_eq!(run.sends(1).await, [7]);
    run.parked(6).await;
    assert_eq!(w.parked_gauge(), 3);

    // Amira is heard: hers go, in their original order.
    w.hear(AMIRA, Duration::ZERO);
    assert_eq!(run.sends(3).await, [1, 2, 6]);
    run.stop().await;
    assert_eq!(w.parked_gauge(), 0);
    assert_eq!(w.store.depths().await.unwrap(), vec![], "all confirmed");
    assert_eq!(w.store.dead_letters().await.unwrap(), 0);
}

#[tokio::test]
async fn a_later_direct_message_never_overtakes_one_waiting_for_the_same_node() {
    let w = World::new("park-order").await;
    // Amira was never heard at all: absent too.
    w.queue(&[(1, AMIRA)]).await;
    let mut run = w.start();
    assert_eq!(
        run.parked(1).await,
        "waiting for radio !a1b2c3d4 (never heard)"
    );
    // The sink would now send hers (it changed its mind), but the first still waits: the
    // second waits with it, and other traffic flows.
    w.never_park.lock().unwrap().insert(AMIRA);
    w.queue(&[(2, AMIRA), (3, NodeId::BROADCAST)]).await;
    assert_eq!(run.sends(1).await, [3]);
    run.parked(2).await;
    w.hear(AMIRA, Duration::ZERO);
    assert_eq!(run.sends(2).await, [1, 2]);
    run.stop().await;
}

#[tokio::test]
async fn after_a_restart_waiting_rows_are_found_by_the_normal_scan_and_wait_again() {
    let w = World::new("park-restart").await;
    w.queue(&[(1, AMIRA), (2, NodeId::BROADCAST)]).await;
    let mut run = w.start();
    run.parked(1).await;
    assert_eq!(run.sends(1).await, [2]);
    run.stop().await;

    let mut run = w.start();
    run.parked(1).await;
    w.queue(&[(3, NodeId::BROADCAST)]).await;
    assert_eq!(run.sends(1).await, [3], "nothing else went");
    w.hear(AMIRA, Duration::ZERO);
    assert_eq!(run.sends(1).await, [1]);
    run.stop().await;
    assert_eq!(w.store.depths().await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_waiting_row_still_expires_with_its_class_ttl() {
    let w = World::new("park-expire").await;
    w.queue(&[(1, AMIRA)]).await;
    let mut run = w.start();
    run.parked(1).await;
    // Three days later (as far as the store is told): the direct message's TTL ran out.
    let expired = w.store.expire(now_ms() + 73 * 3_600_000).await.unwrap();
    assert_eq!(expired.iter().map(|e| e.count).sum::<u64>(), 1);
    w.hear(AMIRA, Duration::ZERO);
    w.hear(BEN, Duration::ZERO);
    w.queue(&[(2, BEN)]).await;
    assert_eq!(run.sends(1).await, [2], "the expired one did not go");
    run.stop().await;
    assert_eq!(w.store.depths().await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_node_heard_between_the_decision_and_the_watch_still_wakes_its_rows() {
    let w = World::new("park-race").await;
    // Decided absent with Amira's last-heard time as it was; heard right after, before the
    // worker watches: the watch fires at once.
    let seen = w.nodes.last_heard(AMIRA);
    w.hear(AMIRA, Duration::ZERO);
    let watch = Arc::new(archipel_gateway::nodes::NodeWatch::default());
    w.nodes.watch(AMIRA, seen, &watch);
    tokio::time::timeout(LIMIT, watch.heard())
        .await
        .expect("woken at once");
    assert!(watch.take().contains(&AMIRA));
}
