//! PKI direct messages through the simulator's real TCP stream API: Archipel's own radio link
//! on two attached radios, and a raw client playing the gateway's MQTT side of a radio's
//! client proxy. Every wait is bounded and on an event; nothing sleeps to synchronise.

use std::time::Duration;

use archipel_adapters::codec::{StreamCodec, StreamItem};
use archipel_adapters::radio::{self, Attachment, RadioConfig, RadioEvent, RadioHandle};
use archipel_adapters::sim::{DownlinkDrop, SimConfig, SimEvent, Simulator};
use bytes::BytesMut;
use mesh_core::frame::{self, WAKE_UP};
use mesh_core::proto::from_radio::PayloadVariant as Out;
use mesh_core::proto::to_radio::PayloadVariant as In;
use mesh_core::{Envelope, NodeId, Packet, PrivateKey, PublicKey, proto};
use prost::Message;
use rand::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};
use tokio::time::timeout;
use tokio_util::codec::Decoder;

const RADIO_A: NodeId = NodeId::new(0x0000_a001);
const RADIO_B: NodeId = NodeId::new(0x0000_b001);
const CAROL: NodeId = NodeId::new(0x0000_0c01);
const OLD: NodeId = NodeId::new(0x0000_0d01);
/// An XMPP user's virtual node, which reaches the mesh only through radio A's proxy.
const VIRTUAL: NodeId = NodeId::new(0x5eed_0001);
const GATEWAY: NodeId = NodeId::new(0x0a7c_0001);
const WAIT: Duration = Duration::from_secs(20);

/// Everyone hears everyone; Old runs firmware without PKI.
fn world() -> SimConfig {
    SimConfig::from_toml_str(
        r#"
time_scale = 20.0
seed = 11
[[mesh]]
name = "test"
preset = "ShortTurbo"
[[mesh.node]]
id = "!0000a001"
long_name = "Radio A"
short_name = "RADA"
attached = { tcp_port = 0 }
[[mesh.node]]
id = "!0000b001"
long_name = "Radio B"
short_name = "RADB"
attached = { tcp_port = 0 }
[[mesh.node]]
id = "!00000c01"
long_name = "Carol"
short_name = "CARL"
role = "router"
[[mesh.node]]
id = "!00000d01"
long_name = "Old radio"
short_name = "OLD"
pki = false
"#,
    )
    .expect("test world parses")
}

fn tcp_of(sim: &Simulator, node: NodeId) -> String {
    sim.radios()
        .into_iter()
        .find(|r| r.node == node)
        .expect("attached")
        .tcp
        .to_string()
}

async fn connect(sim: &Simulator, node: NodeId) -> (RadioHandle, mpsc::Receiver<RadioEvent>) {
    let (handle, events) = radio::spawn(RadioConfig {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ..RadioConfig::new(node.to_string(), Attachment::Tcp(tcp_of(sim, node)))
    });
    timeout(WAIT, handle.connected())
        .await
        .expect("handshake in time")
        .expect("link runs");
    (handle, events)
}

async fn radio_event<T>(
    events: &mut mpsc::Receiver<RadioEvent>,
    what: &str,
    mut pick: impl FnMut(RadioEvent) -> Option<T>,
) -> T {
    let found = timeout(WAIT, async {
        while let Some(ev) = events.recv().await {
            if let Some(t) = pick(ev) {
                return Some(t);
            }
        }
        None
    })
    .await;
    found
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("events ended while waiting for {what}"))
}

async fn sim_event<T>(
    events: &mut broadcast::Receiver<SimEvent>,
    what: &str,
    mut pick: impl FnMut(&SimEvent) -> Option<T>,
) -> T {
    timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events closed"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn user_key(user: Option<&proto::User>) -> Option<PublicKey> {
    PublicKey::from_user_field(&user?.public_key).ok().flatten()
}

fn dm(to: NodeId, body: &str) -> Packet {
    let mut p = Packet::text_message(to, 0, body);
    p.meta_mut().want_ack = true;
    p
}

#[tokio::test]
async fn a_dm_between_two_radio_links_goes_pki_and_is_acknowledged() {
    let sim = Simulator::start(world()).await.expect("simulator starts");
    let mut air = sim.events();
    let (a, _a_events) = connect(&sim, RADIO_A).await;
    let (b, mut b_events) = connect(&sim, RADIO_B).await;
    let info = a.info().expect("connected");
    let a_key = user_key(info.own.as_ref().and_then(|n| n.user.as_ref())).expect("A has a key");
    let keys: Vec<(NodeId, Option<PublicKey>)> = info
        .nodes
        .iter()
        .map(|n| (NodeId::new(n.num), user_key(n.user.as_ref())))
        .collect();
    assert!(
        keys.contains(&(RADIO_B, sim.known_key(RADIO_A, RADIO_B))),
        "{keys:?}"
    );
    assert!(keys.contains(&(OLD, None)), "{keys:?}");

    let status = timeout(WAIT, a.send(dm(RADIO_B, "only for B")))
        .await
        .unwrap();
    assert!(status.is_delivered(), "{status:?}");
    let got = radio_event(&mut b_events, "the DM at B", |ev| match ev {
        RadioEvent::Packet(p) if p.text().as_deref() == Some("only for B") => Some(p),
        _ => None,
    })
    .await;
    assert!(got.meta().pki_encrypted);
    assert_eq!(
        got.meta().public_key,
        a_key.as_bytes().to_vec(),
        "the sender's key"
    );
    assert_eq!(got.from(), RADIO_A);
    let on_air = sim_event(&mut air, "A's transmission", |e| match e {
        SimEvent::Transmitted { node, packet, .. }
            if *node == RADIO_A && packet.to() == RADIO_B =>
        {
            Some(packet.clone())
        }
        _ => None,
    })
    .await;
    assert!(on_air.is_pki() && on_air.channel() == 0);
    b.shutdown().await;
    a.shutdown().await;
    timeout(WAIT, sim.shutdown()).await.expect("shutdown");
}

#[tokio::test]
async fn firmware_with_pki_refuses_dms_to_and_from_a_radio_without_pki() {
    let sim = Simulator::start(world()).await.expect("simulator starts");
    let mut air = sim.events();
    let (a, mut a_events) = connect(&sim, RADIO_A).await;
    let status = timeout(WAIT, a.send(dm(OLD, "are you there?")))
        .await
        .unwrap();
    assert!(!status.is_delivered(), "{status:?}");
    assert!(
        status.reason().is_some_and(|r| r.contains("39")),
        "PKI_SEND_FAIL_PUBLIC_KEY is code 39: {status:?}"
    );
    // The old radio's channel-key text to A is a legacy DM there: refused, NAKed NO_CHANNEL.
    let id = sim.send_text(OLD, RADIO_A, 0, "old style DM").unwrap();
    let nak = sim_event(&mut air, "the NAK at Old", |e| match e {
        SimEvent::Received { node, packet } if *node == OLD => {
            let d = packet.data()?;
            (d.request_id == id.get()).then(|| proto::Routing::decode(&d.payload[..]).unwrap())
        }
        _ => None,
    })
    .await;
    assert_eq!(
        nak.variant,
        Some(proto::routing::Variant::ErrorReason(
            proto::routing::Error::NoChannel as i32
        ))
    );
    // A's client never saw it; a broadcast from Old still arrives.
    sim.send_text(OLD, NodeId::BROADCAST, 0, "hello all")
        .unwrap();
    let seen = radio_event(&mut a_events, "Old's broadcast", |ev| match ev {
        RadioEvent::Packet(p) if p.from() == OLD => p.text(),
        _ => None,
    })
    .await;
    assert_eq!(seen, "hello all");
    a.shutdown().await;
    timeout(WAIT, sim.shutdown()).await.expect("shutdown");
}

/// A raw stream API client: what a gateway's MQTT side sees of the radio's client proxy.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(sim: &Simulator, node: NodeId) -> Raw {
        let stream = timeout(WAIT, TcpStream::connect(tcp_of(sim, node)))
            .await
            .unwrap()
            .unwrap();
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
        };
        raw.stream.write_all(&WAKE_UP).await.unwrap();
        raw.send(In::WantConfigId(5)).await;
        raw.until(|m| (m.payload_variant == Some(Out::ConfigCompleteId(5))).then_some(()))
            .await;
        raw
    }

    async fn send(&mut self, variant: In) {
        let msg = proto::ToRadio {
            payload_variant: Some(variant),
        };
        let mut framed = BytesMut::new();
        frame::encode(&msg.encode_to_vec(), &mut framed).unwrap();
        self.stream.write_all(&framed).await.unwrap();
    }

    async fn publish(&mut self, topic: String, envelope: &Envelope) {
        self.send(In::MqttClientProxyMessage(proto::MqttClientProxyMessage {
            topic,
            retained: false,
            payload_variant: Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(
                envelope.encode(),
            )),
        }))
        .await;
    }

    async fn until<T>(&mut self, mut pick: impl FnMut(&proto::FromRadio) -> Option<T>) -> T {
        timeout(WAIT, async {
            loop {
                while let Some(item) = StreamCodec.decode(&mut self.buf).unwrap() {
                    if let StreamItem::Frame(bytes) = item
                        && let Some(t) = pick(&proto::FromRadio::decode(bytes).unwrap())
                    {
                        return t;
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the radio closed the connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("the radio said it in time")
    }
}

/// A PKI DM from the virtual node, encrypted for `to` with the key radio A reported for it.
fn virtual_dm(key: &PrivateKey, to: PublicKey, dest: NodeId, id: u32, body: &str) -> Packet {
    let mut p = Packet::text_message(dest, 0, body);
    let m = p.meta_mut();
    (m.from, m.id, m.hop_limit, m.hop_start) = (VIRTUAL.get(), id, 3, 3);
    let mut wire = p.encrypt_pki(key, &to, id.rotate_left(7)).unwrap();
    wire.meta_mut().pki_encrypted = true; // as the firmware's own uplink marks it
    wire
}

#[tokio::test]
async fn the_client_proxy_carries_pki_on_its_topic_and_takes_it_only_between_known_nodes() {
    let sim = Simulator::start(world()).await.expect("simulator starts");
    let mut air = sim.events();
    let mut a = Raw::connect(&sim, RADIO_A).await;
    let pki_topic = format!("msh/US/2/e/PKI/{RADIO_A}");

    // Uplink: a PKI DM between two others, heard by A, goes up on the PKI topic, encrypted.
    let id = sim.send_text(CAROL, RADIO_B, 0, "carol to b").unwrap();
    let up = a
        .until(|m| match &m.payload_variant {
            Some(Out::MqttClientProxyMessage(p)) if p.topic == pki_topic => {
                let Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(d)) =
                    &p.payload_variant
                else {
                    return None;
                };
                let env = Envelope::decode(d).unwrap();
                (env.packet.id() == id).then_some(env)
            }
            _ => None,
        })
        .await;
    assert!(up.is_pki());
    assert!(up.packet.meta().pki_encrypted && up.packet.data().is_none());
    assert_eq!(up.packet.from(), CAROL);

    // Downlink: the virtual node is unknown to A, so its PKI DM to Carol is dropped.
    let key = PrivateKey::generate(&mut rand::rngs::StdRng::seed_from_u64(21));
    let carol = sim.known_key(RADIO_A, CAROL).expect("A knows Carol's key");
    let first = virtual_dm(&key, carol, CAROL, 0x100, "first");
    a.publish(
        format!("msh/US/2/e/PKI/{GATEWAY}"),
        &Envelope::new(first, "PKI", GATEWAY),
    )
    .await;
    let reason = sim_event(&mut air, "the drop", |e| match e {
        SimEvent::DownlinkDropped { node, reason } if *node == RADIO_A => Some(*reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, DownlinkDrop::PkiUnknownNodes);
    assert_eq!(sim.downlink_drops(RADIO_A).pki_unknown_nodes, 1);

    // Its NodeInfo comes through the proxy on the primary channel, and reaches Carol too.
    let user = proto::User {
        id: VIRTUAL.to_string(),
        long_name: "Lea (xmpp)".into(),
        short_name: "LEA".into(),
        public_key: key.public_key().as_bytes().to_vec(),
        ..Default::default()
    };
    let mut info = Packet::from_data(
        proto::MeshPacket {
            from: VIRTUAL.get(),
            to: NodeId::BROADCAST.get(),
            id: 0x101,
            hop_limit: 3,
            hop_start: 3,
            ..Default::default()
        },
        proto::Data {
            portnum: proto::PortNum::NodeinfoApp as i32,
            payload: user.encode_to_vec(),
            ..Default::default()
        },
    );
    info = info.encrypt("ShortTurbo", &mesh_core::ChannelKey::from_psk(&[1]));
    a.publish(
        format!("msh/US/2/e/ShortTurbo/{GATEWAY}"),
        &Envelope::new(info, "ShortTurbo", GATEWAY),
    )
    .await;
    sim_event(&mut air, "the NodeInfo at Carol", |e| match e {
        SimEvent::Received { node, packet } if *node == CAROL && packet.id().get() == 0x101 => {
            Some(())
        }
        _ => None,
    })
    .await;
    assert_eq!(sim.known_key(CAROL, VIRTUAL), Some(key.public_key()));

    // Now both ends are known to A: the next PKI DM is taken, relayed, and read by Carol.
    let second = virtual_dm(&key, carol, CAROL, 0x102, "second");
    a.publish(
        format!("msh/US/2/e/PKI/{GATEWAY}"),
        &Envelope::new(second, "PKI", GATEWAY),
    )
    .await;
    let read = sim_event(&mut air, "the DM at Carol", |e| match e {
        SimEvent::Received { node, packet } if *node == CAROL && packet.id().get() == 0x102 => {
            Some(packet.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(read.text().as_deref(), Some("second"));
    assert!(read.meta().pki_encrypted);
    assert_eq!(read.meta().public_key, key.public_key().as_bytes().to_vec());
    assert_eq!(sim.downlink_drops(RADIO_A).total(), 1);
    timeout(WAIT, sim.shutdown()).await.expect("shutdown");
}
