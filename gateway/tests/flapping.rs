//! A radio link that keeps dropping while messages wait for it (the phone app taking the
//! single TCP client slot, a loose USB cable) must deliver every one of them, once: an
//! unreachable destination is waiting, not failing, and never dead-letters its queue.
//!
//! The real path below the router: a real store file, the drain worker with the radio sink,
//! the radio link over TCP to the simulator. Between the link and the simulated radio sits a
//! proxy that cuts the connection right after forwarding a relay, 50 times: each cut lands
//! with that relay written and unconfirmed, the case that used to count against the row.
//! Another simulated radio of the same mesh listens for what arrives.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use mesh_core::frame::{self, FrameEvent};
use mesh_core::proto;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use archipel_adapters::radio::{self, Attachment, RadioConfig, RadioEvent};
use archipel_adapters::sim::{SimConfig, Simulator};
use archipel_gateway::app::now_ms;
use archipel_gateway::config::Config;
use archipel_gateway::nodes::{DEFAULT_AWAY_AFTER, NodeDirectory};
use archipel_gateway::router::{Decision, Heard, Router};
use archipel_gateway::sink::radio::{Airtime, DirectWait, RadioSink};
use archipel_gateway::stats::Stats;
use archipel_gateway::store::{Store, StoreConfig};
use archipel_gateway::worker::{DrainWorker, Shared};
use mesh_core::{Governor, GovernorConfig, NodeId, Packet};
use tokio::sync::{Notify, broadcast, watch};

const RADIO: NodeId = NodeId::new(0x0000_a001);
const LISTENER: NodeId = NodeId::new(0x0000_b001);
const MESSAGES: u32 = 300;
const FLAPS: usize = 50;
const LIMIT: Duration = Duration::from_secs(120);

fn world() -> SimConfig {
    SimConfig::from_toml_str(
        r#"
time_scale = 5.0
seed = 5
[[mesh]]
name = "test"
preset = "ShortTurbo"
channels = [ { name = "LongFast", psk = "AQ==" } ]
[[mesh.node]]
id = "!0000a001"
long_name = "Gateway radio"
short_name = "GWR"
attached = { tcp_port = 0 }
[[mesh.node]]
id = "!0000b001"
long_name = "Listener"
short_name = "LSTN"
attached = { tcp_port = 0 }
"#,
    )
    .expect("test world parses")
}

fn gateway_config(store: &std::path::Path) -> Config {
    Config::from_toml(&format!(
        r#"
[gateway]
name = "flap"
id = "!a7c40001"
[store]
path = "{}"
max_attempts = 3
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

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_flaps_fifty_times_mid_drain_delivers_every_message_once() {
    let dir = TempDir(std::env::temp_dir().join(format!("archipel-flap-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let config = gateway_config(&dir.0.join("store.sqlite"));
    let store = Store::open(StoreConfig::new(config.store.path.clone(), 10_000))
        .await
        .unwrap();
    let router = Arc::new(Router::new(&config));

    // A backlog for radio `a`, as if heard elsewhere while it was away.
    let mut batch = Vec::new();
    for i in 0..MESSAGES {
        let mut p = Packet::text_message(NodeId::BROADCAST, 0, &format!("flap {i}"));
        let m = p.meta_mut();
        (m.from, m.id, m.hop_limit, m.hop_start) = (0x5151_0000 + i, 0x1000 + i, 0, 3);
        let heard = Heard {
            source: "elsewhere",
            channel: "LongFast",
            packet: &p,
            local: None,
            federated: None,
        };
        match router.route(heard, now_ms()) {
            Decision::Relay(inbound) => batch.push(inbound),
            Decision::Ignore(why) => panic!("not routed: {why:?}"),
        }
    }
    store.accept(&batch, now_ms()).await.unwrap();

    let sim = Simulator::start(world()).await.expect("simulator starts");
    let tcp = |node: NodeId| {
        sim.radios()
            .into_iter()
            .find(|r| r.node == node)
            .expect("attached")
            .tcp
            .to_string()
    };
    let fast = |name: &str, at: String| {
        let mut config = RadioConfig {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
            ..RadioConfig::new(name, Attachment::Tcp(at))
        };
        // A real radio may still send a queue status left from its boot; the simulator's
        // comes at once, so the session need not wait a whole second for it after each cut.
        config.session.queue_status_grace = Duration::from_millis(100);
        config
    };
    let (listener, mut heard) = radio::spawn(fast("listener", tcp(LISTENER)));
    listener.connected().await.unwrap();
    let (cutter, cuts) = cutting_proxy(tcp(RADIO), FLAPS).await;
    let (link, _events) = radio::spawn(fast("a", cutter));

    let stats = Arc::new(Stats::new(["a", "elsewhere"]));
    let (activity, _) = broadcast::channel(16);
    let (_util_tx, util_rx) = watch::channel(None);
    let wake = Arc::new(Notify::new());
    let nodes = Arc::new(NodeDirectory::new(100, DEFAULT_AWAY_AFTER));
    let sink = RadioSink::new(
        link.clone(),
        Airtime {
            governor: Governor::new(GovernorConfig::default()),
            duty_cycle_override: None,
            stats: stats.clone(),
            name: "a".to_owned(),
        },
        None,
        config.gateway.id,
        util_rx,
        DirectWait {
            nodes: nodes.clone(),
            absent_after: config.store.absent_after(),
        },
    );
    let shared = Shared {
        store: store.clone(),
        router: router.clone(),
        activity,
        stats: stats.clone(),
        max_attempts: config.store.max_attempts,
        nodes,
        show_direct: config.log.show_direct_messages,
    };
    let worker = DrainWorker::new("a".into(), sink, &shared, wake);
    let (stop, stop_rx) = watch::channel(false);
    let drain = tokio::spawn(worker.run(stop_rx));

    let mut seen: HashMap<u32, u32> = HashMap::new();
    let done = tokio::time::timeout(LIMIT, async {
        while seen.len() < MESSAGES as usize {
            let Some(ev) = heard.recv().await else { break };
            if let RadioEvent::Packet(p) = ev
                && p.text().is_some_and(|t| t.starts_with("flap "))
            {
                *seen.entry(p.id().get()).or_default() += 1;
            }
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "after {} cuts, only {} of {MESSAGES} arrived in time",
        cuts.load(Ordering::Relaxed),
        seen.len()
    );
    let _ = stop.send(true);
    link.shutdown().await;
    drain.await.unwrap();

    assert!(
        seen.values().all(|&n| n == 1),
        "each arrived once: {seen:?}"
    );
    assert_eq!(store.dead_letters().await.unwrap(), 0, "nothing set aside");
    assert_eq!(store.depths().await.unwrap(), vec![], "the queue is empty");
    let a = stats.endpoint("a").unwrap();
    assert!(
        Stats::get(&a.unreachable) >= FLAPS as u64,
        "each cut left a relay unconfirmed: {} unreachable outcomes",
        Stats::get(&a.unreachable)
    );
    assert_eq!(
        Stats::get(&a.failed),
        0,
        "and none of them counted as a failure"
    );
    listener.shutdown().await;
    sim.shutdown().await;
}

/// A TCP proxy to `upstream` that closes the connection right after it forwarded a frame
/// carrying a relay (a `ToRadio.mqttClientProxyMessage`), every third relay, `cuts` times in
/// all; it then keeps forwarding. Returns its address and the count of cuts made.
async fn cutting_proxy(upstream: String, cuts: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap().to_string();
    let made = Arc::new(AtomicUsize::new(0));
    let counter = made.clone();
    tokio::spawn(async move {
        let mut relays = 0usize;
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(mut radio) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let (mut radio_rx, mut radio_tx) = radio.split();
            let (mut client_rx, mut client_tx) = client.split();
            let mut buf = BytesMut::new();
            let to_client = tokio::io::copy(&mut radio_rx, &mut client_tx);
            let to_radio = async {
                let mut chunk = [0u8; 4096];
                loop {
                    let n = client_rx.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
                    radio_tx.write_all(&chunk[..n]).await.ok()?;
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(ev) = frame::next_event(&mut buf) {
                        let FrameEvent::Frame(payload) = ev else {
                            continue;
                        };
                        let relay = proto::ToRadio::decode(payload).is_ok_and(|m| {
                            matches!(
                                m.payload_variant,
                                Some(proto::to_radio::PayloadVariant::MqttClientProxyMessage(_))
                            )
                        });
                        if relay {
                            relays += 1;
                            if relays.is_multiple_of(3) && counter.load(Ordering::Relaxed) < cuts {
                                counter.fetch_add(1, Ordering::Relaxed);
                                return Some(());
                            }
                        }
                    }
                }
            };
            tokio::select! {
                _ = to_client => {}
                _ = to_radio => {}
            }
        }
    });
    (at, made)
}
