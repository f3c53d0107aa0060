//! Archipel's radio link against the simulator's attached radios, over real TCP sockets and a
//! real pseudo-terminal: handshake, node DB, sending with ACK, receiving, reconnecting,
//! carrying on through garbage, and draining a backlog of relays through a full radio queue.

use std::time::Duration;

use archipel_adapters::radio::{
    self, Attachment, LinkCounters, RadioConfig, RadioEvent, RadioHandle,
};
use archipel_adapters::sim::{SimConfig, SimEvent, Simulator};
use bytes::Bytes;
use mesh_core::{ChannelKey, DeliveryStatus, NodeId, Packet};
use tokio::sync::mpsc;

const RADIO_A: NodeId = NodeId::new(0x0000_a001);
const RADIO_B: NodeId = NodeId::new(0x0000_b001);
const CAROL: NodeId = NodeId::new(0x0000_0c01);
const WAIT: Duration = Duration::from_secs(20);

fn world(tcp_a: u16) -> SimConfig {
    toml::from_str(&format!(
        r#"
time_scale = 20.0
seed = 7
[[mesh]]
name = "test"
preset = "ShortTurbo"
channels = [ {{ name = "LongFast", psk = "AQ==" }}, {{ name = "ops", psk = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=" }} ]
[[mesh.node]]
id = "!0000a001"
long_name = "Radio A"
short_name = "RADA"
attached = {{ tcp_port = {tcp_a}, pty = true }}
[[mesh.node]]
id = "!0000b001"
long_name = "Radio B"
short_name = "RADB"
attached = {{ tcp_port = 0 }}
[[mesh.node]]
id = "!00000c01"
long_name = "Carol"
short_name = "CARL"
role = "router"
"#
    ))
    .expect("test world parses")
}

async fn start() -> Simulator {
    Simulator::start(world(0)).await.expect("simulator starts")
}

fn tcp_of(sim: &Simulator, node: NodeId) -> std::net::SocketAddr {
    sim.radios()
        .into_iter()
        .find(|r| r.node == node)
        .expect("attached")
        .tcp
}

fn link(name: &str, endpoint: Attachment) -> (RadioHandle, mpsc::Receiver<RadioEvent>) {
    radio::spawn(RadioConfig {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ..RadioConfig::new(name, endpoint)
    })
}

/// Waits for the first event that `pick` accepts, skipping others.
async fn expect_event<T>(
    events: &mut mpsc::Receiver<RadioEvent>,
    what: &str,
    mut pick: impl FnMut(RadioEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(ev) = events.recv().await {
            if let Some(t) = pick(ev) {
                return Some(t);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(t)) => t,
        Ok(None) => panic!("event stream ended while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

async fn expect_text(events: &mut mpsc::Receiver<RadioEvent>, wanted: &str) -> Packet {
    expect_event(events, &format!("text {wanted:?}"), |ev| match ev {
        RadioEvent::Packet(p) if p.text().as_deref() == Some(wanted) => Some(p),
        _ => None,
    })
    .await
}

async fn expect_reconnect(events: &mut mpsc::Receiver<RadioEvent>) {
    expect_event(events, "disconnect", |ev| {
        matches!(ev, RadioEvent::Disconnected { .. }).then_some(())
    })
    .await;
    expect_event(events, "reconnect", |ev| {
        matches!(ev, RadioEvent::Connected(_)).then_some(())
    })
    .await;
}

fn text(to: NodeId, channel: u32, body: &str, want_ack: bool) -> Packet {
    let mut p = Packet::text_message(to, channel, body);
    p.meta_mut().want_ack = want_ack;
    p
}

async fn send(handle: &RadioHandle, packet: Packet, within: Duration) -> DeliveryStatus {
    tokio::time::timeout(within, handle.send(packet))
        .await
        .expect("an outcome in time")
}

#[tokio::test]
async fn the_handshake_over_tcp_gives_identity_channels_and_node_db() {
    let sim = start().await;
    let (handle, _events) = link("a", Attachment::Tcp(tcp_of(&sim, RADIO_A).to_string()));
    let info = tokio::time::timeout(WAIT, handle.connected())
        .await
        .expect("connected in time")
        .unwrap();
    assert_eq!(info.node_id(), Some(RADIO_A));
    assert_eq!(info.user().unwrap().long_name, "Radio A");
    let known: Vec<NodeId> = info.nodes.iter().map(|n| NodeId::new(n.num)).collect();
    assert!(
        known.contains(&RADIO_B) && known.contains(&CAROL),
        "{known:?}"
    );
    let names: Vec<String> = info
        .active_channels()
        .map(|c| info.channel_name(c))
        .collect();
    assert_eq!(names, ["LongFast", "ops"]);
    assert_eq!(info.preset(), Some(mesh_core::ModemPreset::ShortTurbo));
    handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_broadcast_with_ack_is_delivered_and_heard_by_the_other_radio() {
    let sim = start().await;
    let (a, _a_events) = link("a", Attachment::Tcp(tcp_of(&sim, RADIO_A).to_string()));
    let (b, mut b_events) = link("b", Attachment::Tcp(tcp_of(&sim, RADIO_B).to_string()));
    a.connected().await.unwrap();
    b.connected().await.unwrap();
    let status = send(&a, text(NodeId::BROADCAST, 0, "hello mesh", true), WAIT).await;
    assert_eq!(status, DeliveryStatus::Delivered);
    let heard = expect_text(&mut b_events, "hello mesh").await;
    assert_eq!(heard.from(), RADIO_A);
    assert_eq!(heard.channel(), 0, "local channel index, not the hash");
    a.shutdown().await;
    b.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_direct_message_is_delivered_only_on_the_destinations_ack() {
    let sim = start().await;
    let (a, _events) = link("a", Attachment::Tcp(tcp_of(&sim, RADIO_A).to_string()));
    a.connected().await.unwrap();
    let status = send(&a, text(CAROL, 0, "are you there, Carol?", true), WAIT).await;
    assert_eq!(status, DeliveryStatus::Delivered);
    // A node that is not on the mesh never answers: the radio gives up with a NAK.
    let nobody = text(NodeId::new(0x0bad_0bad), 0, "anyone?", true);
    let status = send(&a, nobody, Duration::from_secs(60)).await;
    assert!(
        matches!(status, DeliveryStatus::Failed { .. }),
        "{status:?}"
    );
    a.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn texts_from_the_mesh_arrive_on_their_channel() {
    let sim = start().await;
    let (a, mut events) = link("a", Attachment::Tcp(tcp_of(&sim, RADIO_A).to_string()));
    a.connected().await.unwrap();
    sim.send_text(CAROL, NodeId::BROADCAST, 1, "ops: generator fuelled")
        .unwrap();
    let p = expect_text(&mut events, "ops: generator fuelled").await;
    assert_eq!(p.from(), CAROL);
    assert_eq!(p.channel(), 1);
    a.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_link_reconnects_after_being_kicked_off() {
    let sim = start().await;
    let (a, mut events) = link("a", Attachment::Tcp(tcp_of(&sim, RADIO_A).to_string()));
    a.connected().await.unwrap();
    sim.kick_client(RADIO_A);
    expect_reconnect(&mut events).await;
    sim.send_text(CAROL, NodeId::BROADCAST, 0, "after the kick")
        .unwrap();
    expect_text(&mut events, "after the kick").await;
    assert_eq!(LinkCounters::get(&a.counters().handshakes), 2);
    a.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_link_reconnects_after_the_radio_restarts() {
    let sim = start().await;
    let port = tcp_of(&sim, RADIO_A).port();
    let (a, mut events) = link("a", Attachment::Tcp(format!("127.0.0.1:{port}")));
    a.connected().await.unwrap();
    sim.shutdown().await;
    expect_event(&mut events, "disconnect", |ev| {
        matches!(ev, RadioEvent::Disconnected { .. }).then_some(())
    })
    .await;
    let sim = Simulator::start(world(port))
        .await
        .expect("restarts on the same port");
    expect_event(&mut events, "reconnect", |ev| {
        matches!(ev, RadioEvent::Connected(_)).then_some(())
    })
    .await;
    let status = send(&a, text(NodeId::BROADCAST, 0, "back again", false), WAIT).await;
    assert_eq!(status, DeliveryStatus::Delivered);
    a.shutdown().await;
    sim.shutdown().await;
}

/// A fixed pseudo-random byte sequence without start bytes, so none of it is a header.
fn random_noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match (x & 0xff) as u8 {
                0x94 => 0x20,
                b => b,
            }
        })
        .collect()
}

#[tokio::test]
async fn garbage_truncated_and_oversize_frames_are_counted_and_skipped() {
    let sim = start().await;
    let (a, mut events) = link("a", Attachment::Tcp(tcp_of(&sim, RADIO_A).to_string()));
    a.connected().await.unwrap();
    let mut junk = random_noise(2000);
    junk.push(b'\n');
    // An oversize header; an undecodable protobuf; and a frame whose declared length
    // swallows the bytes after it, as the firmware's parser does.
    junk.extend_from_slice(&[0x94, 0xc3, 0x7f, 0xff]);
    junk.extend_from_slice(&[0x94, 0xc3, 0x00, 0x03, 0xff, 0xff, 0xff]);
    junk.extend_from_slice(&[0x94, 0xc3, 0x00, 0x08, 0x01, 0x02]);
    junk.extend_from_slice(&[0u8; 6]);
    sim.inject_bytes(RADIO_A, Bytes::from(junk));
    sim.send_text(CAROL, NodeId::BROADCAST, 0, "still here")
        .unwrap();
    expect_text(&mut events, "still here").await;
    let c = a.counters();
    assert!(LinkCounters::get(&c.noise_bytes) >= 2000);
    assert_eq!(LinkCounters::get(&c.oversize_frames), 1);
    assert!(
        LinkCounters::get(&c.undecodable_frames) >= 2,
        "the undecodable frame and the one that swallowed zeros"
    );
    assert_eq!(
        LinkCounters::get(&c.handshakes),
        1,
        "the link never dropped"
    );
    a.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn over_a_pseudo_terminal_the_link_handshakes_sends_and_receives() {
    let sim = start().await;
    let pty = sim
        .radios()
        .into_iter()
        .find(|r| r.node == RADIO_A)
        .and_then(|r| r.pty)
        .expect("radio A has a pseudo-terminal");
    let (a, mut events) = link(
        "a-serial",
        Attachment::Serial {
            path: pty,
            baud: 115_200,
        },
    );
    let info = tokio::time::timeout(WAIT, a.connected())
        .await
        .expect("connected in time")
        .unwrap();
    assert_eq!(info.node_id(), Some(RADIO_A));
    assert!(info.nodes.iter().any(|n| n.num == CAROL.get()));
    let status = send(&a, text(CAROL, 0, "over serial", true), WAIT).await;
    assert_eq!(status, DeliveryStatus::Delivered);
    sim.send_text(CAROL, NodeId::BROADCAST, 0, "to the serial radio")
        .unwrap();
    expect_text(&mut events, "to the serial radio").await;
    a.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_radio_that_keeps_kicking_the_link_off_is_retried_with_growing_delays() {
    // Another client taking the single TCP slot over and over (a phone app, a second
    // gateway): connections that die at once must not be retried in a tight loop.
    let sim = start().await;
    let (a, mut events) = link("a", Attachment::Tcp(tcp_of(&sim, RADIO_A).to_string()));
    a.connected().await.unwrap();
    let mut delays = Vec::new();
    for _ in 0..4 {
        sim.kick_client(RADIO_A);
        let delay = expect_event(&mut events, "disconnect", |ev| match ev {
            RadioEvent::Disconnected { retry_in, .. } => Some(retry_in),
            _ => None,
        })
        .await;
        delays.push(delay);
        expect_event(&mut events, "reconnect", |ev| {
            matches!(ev, RadioEvent::Connected(_)).then_some(())
        })
        .await;
    }
    // 50 ms doubling to the 400 ms cap, each within its upper fifth: strictly growing.
    assert!(delays.windows(2).all(|w| w[1] > w[0]), "{delays:?}");
    assert!(delays[3] >= Duration::from_millis(320), "{delays:?}");
    a.shutdown().await;
    sim.shutdown().await;
}

/// A mesh on a slow preset, so a burst of relays fills the radio's 16-slot transmit queue.
fn slow_world() -> SimConfig {
    toml::from_str(
        r#"
time_scale = 10.0
seed = 11
[[mesh]]
name = "slow"
preset = "LongFast"
channels = [ { name = "LongFast", psk = "AQ==" } ]
[[mesh.node]]
id = "!0000a001"
long_name = "Radio A"
short_name = "RADA"
attached = { tcp_port = 0 }
[[mesh.node]]
id = "!00000c01"
long_name = "Carol"
short_name = "CARL"
"#,
    )
    .expect("test world parses")
}

#[tokio::test]
async fn a_backlog_of_relays_drains_through_a_full_radio_queue_long_before_the_heartbeat() {
    // 40 relays against a 16-slot queue: after 16 the radio says `free = 0`, and the firmware
    // sends no status of its own after a heartbeat's answer, so the session must ask again.
    let sim = Simulator::start(slow_world())
        .await
        .expect("simulator starts");
    let (a, _events) = link("a", Attachment::Tcp(tcp_of(&sim, RADIO_A).to_string()));
    a.connected().await.unwrap();
    let mut heard = sim.events();
    let key = ChannelKey::from_psk(&[1]);
    let far_away = NodeId::new(0x0dd0_0001);
    let relays: Vec<Packet> = (0..40u32)
        .map(|i| {
            let mut p = Packet::text_message(NodeId::BROADCAST, 0, &format!("backlog {i}"));
            (p.meta_mut().from, p.meta_mut().id) = (far_away.get(), 0x5000 + i);
            p.encrypt("LongFast", &key)
        })
        .collect();
    let gateway = NodeId::new(0x0a7c_0001);
    let started = std::time::Instant::now();
    let outcomes = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(
            relays
                .into_iter()
                .map(|p| async { a.relay(p, "LongFast", gateway, 0).await }),
        ),
    )
    .await
    .expect("the backlog drains well before the 300 s heartbeat");
    assert!(
        outcomes.iter().all(DeliveryStatus::is_delivered),
        "{outcomes:?}"
    );
    // And every one of them went on the air from the radio.
    let mut on_air = std::collections::HashSet::new();
    tokio::time::timeout(WAIT, async {
        while on_air.len() < 40 {
            match heard.recv().await {
                Ok(SimEvent::Transmitted { node, packet, .. })
                    if node == RADIO_A && packet.from() == far_away =>
                {
                    on_air.insert(packet.id());
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("simulator events ended: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of 40 relays went on the air", on_air.len()));
    eprintln!(
        "40 relays confirmed and on the air in {:?}",
        started.elapsed()
    );
    a.shutdown().await;
    sim.shutdown().await;
}
