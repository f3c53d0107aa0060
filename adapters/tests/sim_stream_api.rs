//! The simulator's attached radios seen from outside, as a client sees them: a raw stream API
//! client over TCP and over the pseudo-terminal, speaking the framing with prost types.
//! Every wait is bounded; nothing sleeps to synchronise.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use archipel_adapters::codec::{StreamCodec, StreamItem};
use archipel_adapters::sim::{SimConfig, SimEvent, Simulator};
use bytes::{Bytes, BytesMut};
use mesh_core::frame::{self, WAKE_UP};
use mesh_core::proto::from_radio::PayloadVariant as Out;
use mesh_core::proto::to_radio::PayloadVariant as In;
use mesh_core::{NodeId, proto};
use prost::Message;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::time::timeout;
use tokio_util::codec::Decoder;

const GATEWAY: NodeId = NodeId::new(0xa000_0001);
const TOWER: NodeId = NodeId::new(0xb000_0002);
const AMIRA: NodeId = NodeId::new(0xc000_0003);
const WAIT: Duration = Duration::from_secs(10);

fn config(pty: bool) -> SimConfig {
    SimConfig::from_toml_str(&format!(
        r#"
        time_scale = 100.0
        seed = 3
        [[mesh]]
        name = "town"
        preset = "ShortFast"
        channels = [ {{ name = "", psk = "AQ==" }}, {{ name = "ops", psk = "simple3" }} ]
        [[mesh.node]]
        id = "!a0000001"
        long_name = "Gateway radio"
        short_name = "GW"
        attached = {{ tcp_port = 0, pty = {pty} }}
        [[mesh.node]]
        id = "!b0000002"
        long_name = "Tower relay"
        short_name = "TWR"
        role = "router"
        [[mesh.node]]
        id = "!c0000003"
        long_name = "Amira"
        short_name = "AMRA"
        "#
    ))
    .unwrap()
}

/// The client end of a link: a TCP socket or the pty's slave side.
enum Conn {
    Tcp(TcpStream),
    Pty(AsyncFd<File>),
}

/// A minimal stream API client.
struct Client {
    conn: Conn,
    /// Bytes read, not yet decoded.
    buf: BytesMut,
    /// Text seen outside frames (a serial console's log).
    noise: Vec<u8>,
}

impl Client {
    async fn tcp(sim: &Simulator) -> Client {
        let addr = sim.radios()[0].tcp;
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        Client::new(Conn::Tcp(stream))
    }

    fn pty(path: &Path) -> Client {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOCTTY.bits())
            .open(path)
            .unwrap();
        // SAFETY: the File owns an open descriptor that stays the same until it is dropped.
        let fd = unsafe { AsyncFd::register(file) }.unwrap();
        Client::new(Conn::Pty(fd))
    }

    fn new(conn: Conn) -> Client {
        Client {
            conn,
            buf: BytesMut::new(),
            noise: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        match &mut self.conn {
            Conn::Tcp(s) => s.write_all(bytes).await.unwrap(),
            Conn::Pty(fd) => {
                let mut rest = bytes;
                while !rest.is_empty() {
                    let mut guard = fd.writable().await.unwrap();
                    if let Ok(n) = guard.try_io(|f| f.get_ref().write(rest)) {
                        rest = &rest[n.unwrap()..];
                    }
                }
            }
        }
    }

    async fn send(&mut self, msg: proto::ToRadio) {
        let mut framed = BytesMut::new();
        frame::encode(&msg.encode_to_vec(), &mut framed).unwrap();
        self.write(&framed).await;
    }

    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 2048];
        let n = match &mut self.conn {
            Conn::Tcp(s) => s.read(&mut chunk).await.unwrap_or(0),
            Conn::Pty(fd) => loop {
                let mut guard = fd.readable().await.unwrap();
                if let Ok(n) = guard.try_io(|f| f.get_ref().read(&mut chunk)) {
                    break n.unwrap();
                }
            },
        };
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next framing item, or `None` at the end of the stream.
    async fn item(&mut self) -> Option<StreamItem> {
        loop {
            if let Some(item) = StreamCodec.decode(&mut self.buf).unwrap() {
                return Some(item);
            }
            if !timeout(WAIT, self.fill())
                .await
                .expect("no data from the radio")
            {
                return None;
            }
        }
    }

    /// The next `FromRadio`, keeping noise aside.
    async fn next(&mut self) -> proto::FromRadio {
        loop {
            match self.item().await.expect("stream ended") {
                StreamItem::Frame(bytes) => return proto::FromRadio::decode(bytes).unwrap(),
                StreamItem::Noise(text) => self.noise.extend_from_slice(&text),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Reads until a message matches, returning it.
    async fn until<T>(&mut self, mut f: impl FnMut(&proto::FromRadio) -> Option<T>) -> T {
        loop {
            let msg = self.next().await;
            if let Some(t) = f(&msg) {
                return t;
            }
        }
    }

    /// Wakes the device and runs the whole handshake; returns its messages.
    async fn handshake(&mut self, nonce: u32) -> Vec<proto::FromRadio> {
        self.write(&WAKE_UP).await;
        self.send(want_config(nonce)).await;
        let mut msgs = Vec::new();
        loop {
            let msg = self.next().await;
            let done = msg.payload_variant == Some(Out::ConfigCompleteId(nonce));
            msgs.push(msg);
            if done {
                return msgs;
            }
        }
    }

    /// The next queue status, skipping anything else.
    async fn queue_status(&mut self) -> proto::QueueStatus {
        self.until(|m| match &m.payload_variant {
            Some(Out::QueueStatus(q)) => Some(*q),
            _ => None,
        })
        .await
    }

    /// Waits for the peer to close the connection (TCP).
    async fn closed(&mut self) {
        while self.item().await.is_some() {}
    }
}

fn want_config(nonce: u32) -> proto::ToRadio {
    proto::ToRadio {
        payload_variant: Some(In::WantConfigId(nonce)),
    }
}

fn text(id: u32, to: NodeId, channel: u32, want_ack: bool, body: &str) -> proto::ToRadio {
    proto::ToRadio {
        payload_variant: Some(In::Packet(proto::MeshPacket {
            to: to.get(),
            id,
            channel,
            hop_limit: 3,
            want_ack,
            payload_variant: Some(proto::mesh_packet::PayloadVariant::Decoded(proto::Data {
                portnum: proto::PortNum::TextMessageApp as i32,
                payload: body.as_bytes().to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        })),
    }
}

fn packet_of(msg: &proto::FromRadio) -> Option<&proto::MeshPacket> {
    match &msg.payload_variant {
        Some(Out::Packet(p)) => Some(p),
        _ => None,
    }
}

fn data_of(p: &proto::MeshPacket) -> Option<&proto::Data> {
    match &p.payload_variant {
        Some(proto::mesh_packet::PayloadVariant::Decoded(d)) => Some(d),
        _ => None,
    }
}

/// The routing result for `request_id`: (from, to, error).
fn routing_for(msg: &proto::FromRadio, request_id: u32) -> Option<(u32, u32, i32)> {
    let p = packet_of(msg)?;
    let d = data_of(p)?;
    if d.portnum != proto::PortNum::RoutingApp as i32 || d.request_id != request_id {
        return None;
    }
    match proto::Routing::decode(&d.payload[..]).ok()?.variant? {
        proto::routing::Variant::ErrorReason(e) => Some((p.from, p.to, e)),
        _ => None,
    }
}

async fn wait_event<T>(
    events: &mut broadcast::Receiver<SimEvent>,
    mut f: impl FnMut(&SimEvent) -> Option<T>,
) -> T {
    timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(t) = f(&e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events closed"),
            }
        }
    })
    .await
    .expect("event did not come")
}

fn kind(msg: &proto::FromRadio) -> &'static str {
    match msg.payload_variant.as_ref() {
        Some(Out::MyInfo(_)) => "my_info",
        Some(Out::DeviceuiConfig(_)) => "deviceui",
        Some(Out::NodeInfo(_)) => "node_info",
        Some(Out::Metadata(_)) => "metadata",
        Some(Out::Channel(_)) => "channel",
        Some(Out::Config(_)) => "config",
        Some(Out::ModuleConfig(_)) => "module_config",
        Some(Out::ConfigCompleteId(_)) => "complete",
        Some(Out::QueueStatus(_)) => "queue_status",
        Some(Out::Packet(_)) => "packet",
        Some(Out::Rebooted(_)) => "rebooted",
        _ => "other",
    }
}

async fn stop(sim: Simulator) {
    timeout(WAIT, sim.shutdown()).await.expect("shutdown hangs");
}

#[tokio::test]
async fn a_tcp_client_gets_the_handshake_in_firmware_order() {
    let sim = Simulator::start(config(false)).await.unwrap();
    let mut events = sim.events();
    let mut client = Client::tcp(&sim).await;
    wait_event(&mut events, |e| {
        matches!(e, SimEvent::ClientConnected { node } if *node == GATEWAY).then_some(())
    })
    .await;
    let msgs = client.handshake(0x5eed).await;
    let kinds: Vec<_> = msgs.iter().map(kind).collect();
    let mut expected = vec!["my_info", "deviceui", "node_info", "metadata"];
    expected.extend(["channel"; 8]);
    expected.extend(["config"; 10]);
    expected.extend(["module_config"; 13]);
    expected.extend(["node_info"; 2]);
    expected.push("complete");
    assert_eq!(kinds, expected);
    let Some(Out::MyInfo(my)) = &msgs[0].payload_variant else {
        panic!()
    };
    assert_eq!(my.my_node_num, GATEWAY.get());
    let Some(Out::NodeInfo(own)) = &msgs[2].payload_variant else {
        panic!()
    };
    assert_eq!(own.user.as_ref().unwrap().id, "!a0000001");
    assert!(own.is_favorite);
    stop(sim).await;
}

#[tokio::test]
async fn a_client_text_gets_queue_status_then_an_implicit_ack() {
    let sim = Simulator::start(config(false)).await.unwrap();
    let mut events = sim.events();
    let mut client = Client::tcp(&sim).await;
    client.handshake(1).await;
    client
        .send(text(0x0102_0304, NodeId::BROADCAST, 0, true, "hello town"))
        .await;
    let status = client
        .until(|m| match &m.payload_variant {
            Some(Out::QueueStatus(q)) if q.mesh_packet_id != 0 => Some(*q),
            _ => None,
        })
        .await;
    assert_eq!(status.res, 0);
    assert_eq!(status.mesh_packet_id, 0x0102_0304);
    assert_eq!(status.maxlen, 16);
    assert!(status.free > 0 && status.free < 16, "{status:?}");
    let ack = client.until(|m| routing_for(m, 0x0102_0304)).await;
    assert_eq!(
        ack,
        (GATEWAY.get(), GATEWAY.get(), 0),
        "implicit ACK: from = to = us"
    );
    // The tower relayed it and the others heard it, decoded, from the gateway.
    let heard = wait_event(&mut events, |e| match e {
        SimEvent::Received { node, packet }
            if *node == AMIRA && packet.id().get() == 0x0102_0304 =>
        {
            Some(packet.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(heard.from(), GATEWAY);
    assert_eq!(heard.text().as_deref(), Some("hello town"));
    stop(sim).await;
}

#[tokio::test]
async fn channel_utilization_counts_the_airtime_of_the_last_minute() {
    // Real time here, so the minute cannot pass while the test runs.
    let mut slow = config(false);
    slow.time_scale = 1.0;
    let sim = Simulator::start(slow).await.unwrap();
    let mut events = sim.events();
    assert_eq!(sim.channel_utilization("town"), 0.0);
    let id = sim.send_text(AMIRA, NodeId::BROADCAST, 0, "busy").unwrap();
    // Heard: the whole airtime is behind us.
    wait_event(&mut events, |e| {
        matches!(e, SimEvent::Received { packet, .. } if packet.id() == id).then_some(())
    })
    .await;
    assert!(sim.channel_utilization("town") > 0.0);
    assert_eq!(sim.channel_utilization("nowhere"), 0.0);
    stop(sim).await;
}

#[tokio::test]
async fn a_direct_message_gets_the_destinations_ack() {
    let sim = Simulator::start(config(false)).await.unwrap();
    let mut client = Client::tcp(&sim).await;
    client.handshake(2).await;
    client
        .send(text(0x0bad_cafe, AMIRA, 0, true, "just for you"))
        .await;
    let ack = client.until(|m| routing_for(m, 0x0bad_cafe)).await;
    assert_eq!(
        ack,
        (AMIRA.get(), GATEWAY.get(), 0),
        "a real ACK comes from the destination"
    );
    stop(sim).await;
}

#[tokio::test]
async fn a_virtual_node_text_reaches_the_client_decoded() {
    let sim = Simulator::start(config(false)).await.unwrap();
    let mut events = sim.events();
    let mut client = Client::tcp(&sim).await;
    client.handshake(3).await;
    let id = sim
        .send_text(AMIRA, NodeId::BROADCAST, 1, "meeting at the hall")
        .unwrap();
    let p = client
        .until(|m| packet_of(m).filter(|p| p.id == id.get()).cloned())
        .await;
    assert_eq!(p.from, AMIRA.get());
    assert_eq!(p.channel, 1, "local channel index, not the hash");
    let d = data_of(&p).unwrap();
    assert_eq!(d.portnum, proto::PortNum::TextMessageApp as i32);
    assert_eq!(d.payload, b"meeting at the hall");
    assert!(p.rx_time > 0 && p.hop_start == 3);
    let delivered = wait_event(&mut events, |e| match e {
        SimEvent::ToClient { node, packet } if *node == GATEWAY && packet.id() == id => {
            Some(packet.text())
        }
        _ => None,
    })
    .await;
    assert_eq!(delivered.as_deref(), Some("meeting at the hall"));
    assert!(
        sim.send_text(NodeId::new(0x1234_5678), NodeId::BROADCAST, 0, "x")
            .is_err()
    );
    assert!(sim.send_text(AMIRA, NodeId::BROADCAST, 7, "x").is_err());
    stop(sim).await;
}

#[tokio::test]
async fn tcp_serves_one_client_at_a_time_and_kick_closes_it() {
    let sim = Simulator::start(config(false)).await.unwrap();
    let mut events = sim.events();
    let mut first = Client::tcp(&sim).await;
    first.handshake(10).await;
    let mut second = Client::tcp(&sim).await;
    // The first is force-closed; the second gets a fresh session.
    timeout(WAIT, first.closed()).await.unwrap();
    wait_event(&mut events, |e| {
        matches!(e, SimEvent::ClientDisconnected { node } if *node == GATEWAY).then_some(())
    })
    .await;
    let msgs = second.handshake(11).await;
    assert_eq!(kind(&msgs[0]), "my_info");
    sim.kick_client(GATEWAY);
    timeout(WAIT, second.closed()).await.unwrap();
    wait_event(&mut events, |e| {
        matches!(e, SimEvent::ClientDisconnected { node } if *node == GATEWAY).then_some(())
    })
    .await;
    // The radio still answers the next client.
    let mut third = Client::tcp(&sim).await;
    third.handshake(12).await;
    stop(sim).await;
}

#[tokio::test]
async fn garbage_oversize_and_undecodable_input_do_not_hurt_the_device() {
    let sim = Simulator::start(config(false)).await.unwrap();
    let mut client = Client::tcp(&sim).await;
    client.write(b"\x00\xffgarbage\r\n\x94\x94").await;
    // An oversize header is dropped by itself; the frame after it is read.
    client.write(&[0x94, 0xc3, 0x02, 0x01]).await;
    // A well-framed protobuf that is no ToRadio: counted and ignored.
    client
        .write(&[0x94, 0xc3, 0x00, 0x03, 0xff, 0xff, 0xff])
        .await;
    // A frame announcing 8 bytes with 2 sent swallows the next frame, as in the firmware.
    client.write(&[0x94, 0xc3, 0x00, 0x08, 0x01, 0x02]).await;
    client.send(want_config(20)).await;
    let msgs = client.handshake(21).await;
    assert!(
        !msgs
            .iter()
            .any(|m| m.payload_variant == Some(Out::ConfigCompleteId(20))),
        "the swallowed want_config got no answer"
    );
    assert_eq!(kind(&msgs[0]), "my_info");
    // The status a freshly booted radio sends by itself comes first.
    assert_eq!(client.queue_status().await.mesh_packet_id, 0);
    // Garbage towards the client is skipped by its parser; frames keep coming after it.
    sim.inject_bytes(GATEWAY, Bytes::from_static(b"\x94\xc3\x7f\xffjunk"));
    sim.inject_bytes(GATEWAY, Bytes::from_static(b"\x94\xc3\x00\x01\xff"));
    client
        .send(proto::ToRadio {
            payload_variant: Some(In::Heartbeat(proto::Heartbeat { nonce: 0 })),
        })
        .await;
    let mut undecodable = 0;
    loop {
        // Oversize headers and noise are skipped; frames are decoded if they can be.
        if let StreamItem::Frame(b) = client.item().await.unwrap() {
            match proto::FromRadio::decode(b) {
                Ok(m) if kind(&m) == "queue_status" => break,
                Ok(_) => {}
                Err(_) => undecodable += 1,
            }
        }
    }
    assert_eq!(undecodable, 1, "the injected one-byte frame");
    stop(sim).await;
}

#[tokio::test]
async fn a_serial_radio_boots_with_text_then_speaks_frames_only() {
    let sim = Simulator::start(config(true)).await.unwrap();
    let mut events = sim.events();
    let path = sim.radios()[0].pty.clone().expect("a pty");
    let mut client = Client::pty(&path);
    // Boot: text log lines and a `rebooted` frame.
    let rebooted = client.next().await;
    assert_eq!(rebooted.payload_variant, Some(Out::Rebooted(true)));
    let boot = String::from_utf8_lossy(&client.noise).into_owned();
    assert!(boot.contains("INFO  | "), "{boot}");
    // Before the client talks, what the radio hears is logged as text.
    sim.send_text(AMIRA, NodeId::BROADCAST, 0, "before")
        .unwrap();
    timeout(WAIT, async {
        while !String::from_utf8_lossy(&client.noise).contains("TEXT_MESSAGE_APP") {
            match client.item().await.unwrap() {
                StreamItem::Noise(t) => client.noise.extend_from_slice(&t),
                other => panic!("only text before the first frame: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    let msgs = client.handshake(30).await;
    assert_eq!(kind(&msgs[0]), "my_info");
    wait_event(&mut events, |e| {
        matches!(e, SimEvent::ClientConnected { node } if *node == GATEWAY).then_some(())
    })
    .await;
    // The text heard before the handshake was kept for the client, and follows it.
    client
        .until(|m| {
            packet_of(m)
                .and_then(data_of)
                .filter(|d| d.payload == b"before")
                .map(|_| ())
        })
        .await;
    // From now on only frames: the next text arrives as a packet, with no text around it.
    client.noise.clear();
    let id = sim.send_text(TOWER, NodeId::BROADCAST, 0, "after").unwrap();
    loop {
        match client.item().await.unwrap() {
            StreamItem::Frame(b) => {
                let m = proto::FromRadio::decode(b).unwrap();
                if packet_of(&m).is_some_and(|p| p.id == id.get()) {
                    break;
                }
            }
            other => panic!("no text once the client talks protobufs: {other:?}"),
        }
    }
    // Sending works as over TCP, and `disconnect` ends the session.
    client
        .send(text(0x0a0b_0c0d, NodeId::BROADCAST, 0, true, "over serial"))
        .await;
    let ack = client.until(|m| routing_for(m, 0x0a0b_0c0d)).await;
    assert_eq!(ack, (GATEWAY.get(), GATEWAY.get(), 0));
    client
        .send(proto::ToRadio {
            payload_variant: Some(In::Disconnect(true)),
        })
        .await;
    wait_event(&mut events, |e| {
        matches!(e, SimEvent::ClientDisconnected { node } if *node == GATEWAY).then_some(())
    })
    .await;
    stop(sim).await;
}

#[tokio::test]
async fn an_invalid_config_or_a_taken_port_is_an_error_not_a_panic() {
    let mut bad = config(false);
    bad.time_scale = 0.0;
    let err = Simulator::start(bad).await.err().unwrap();
    assert!(err.to_string().contains("time_scale"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut busy = config(false);
    busy.meshes[0].nodes[0].attached.as_mut().unwrap().tcp_port =
        taken.local_addr().unwrap().port();
    let err = Simulator::start(busy).await.err().unwrap();
    assert!(err.to_string().contains("cannot listen"), "{err}");
}

#[tokio::test]
async fn a_full_transmit_queue_is_announced_by_the_radio_when_it_has_room_again() {
    let sim = Simulator::start(config(false)).await.unwrap();
    let mut client = Client::tcp(&sim).await;
    client.handshake(30).await;
    assert_eq!(client.queue_status().await.mesh_packet_id, 0, "from boot");
    // A burst of unpaced packets, in one write: more than the 16 slots can hold.
    let mut burst = BytesMut::new();
    for i in 0..40u32 {
        let msg = proto::ToRadio {
            payload_variant: Some(In::Packet(proto::MeshPacket {
                to: NodeId::BROADCAST.get(),
                id: 0x7000 + i,
                payload_variant: Some(proto::mesh_packet::PayloadVariant::Decoded(proto::Data {
                    portnum: proto::PortNum::PrivateApp as i32,
                    payload: vec![0x55; 64],
                    ..Default::default()
                })),
                ..Default::default()
            })),
        };
        frame::encode(&msg.encode_to_vec(), &mut burst).unwrap();
    }
    client.write(&burst).await;
    let full = client
        .until(|m| match &m.payload_variant {
            Some(Out::QueueStatus(q)) if q.mesh_packet_id != 0 && q.free == 0 => Some(*q),
            _ => None,
        })
        .await;
    assert!(full.mesh_packet_id >= 0x7000);
    // No heartbeat is sent: the radio says by itself that there is room again.
    let room = client
        .until(|m| match &m.payload_variant {
            Some(Out::QueueStatus(q)) if q.mesh_packet_id == 0 => Some(*q),
            _ => None,
        })
        .await;
    assert!(room.free > 0 && room.res == 0, "{room:?}");
    stop(sim).await;
}

#[tokio::test]
async fn an_absent_client_finds_what_the_firmware_keeps_and_the_drops_are_counted() {
    let sim = Simulator::start(config(false)).await.unwrap();
    let mut events = sim.events();
    // 48 texts heard while nobody is connected, in rounds the sender's queue can hold.
    for round in 0..4 {
        let mut last = None;
        for i in 0..12 {
            let n = round * 12 + i;
            last = Some(
                sim.send_text(AMIRA, NodeId::BROADCAST, 0, &format!("away {n}"))
                    .unwrap(),
            );
        }
        let last = last.unwrap();
        wait_event(&mut events, |e| {
            matches!(e, SimEvent::Received { node, packet } if *node == GATEWAY && packet.id() == last)
                .then_some(())
        })
        .await;
    }
    // The radio keeps 32 packets and 8 uplink messages; texts push out the oldest.
    let drops = sim.to_phone_drops(GATEWAY);
    assert_eq!(
        (drops.packets, drops.mqtt_proxy, drops.queue_status),
        (16, 40, 0),
        "{drops:?}"
    );
    assert_eq!(
        sim.to_phone_drops(AMIRA).total(),
        0,
        "not an attached radio"
    );
    let mut client = Client::tcp(&sim).await;
    client.handshake(40).await;
    assert_eq!(
        client.queue_status().await.mesh_packet_id,
        0,
        "statuses first"
    );
    let mut uplinks = 0;
    let first = loop {
        let msg = client.next().await;
        match &msg.payload_variant {
            Some(Out::MqttClientProxyMessage(_)) => uplinks += 1,
            Some(Out::Packet(p)) => break p.clone(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(uplinks, 8, "the uplink messages next");
    assert_eq!(
        data_of(&first).unwrap().payload,
        b"away 16",
        "the oldest kept"
    );
    assert_eq!(sim.to_phone_drops(GATEWAY), drops, "totals stay");
    stop(sim).await;
}
