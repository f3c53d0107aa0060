//! The world of the MQTT end-to-end tests: the north mesh with the test's person beside the
//! gateway's radio, a broker, envelopes as other gateways publish them, and the independent
//! reader of what the gateway publishes (a Python script on the `meshtastic` package's own
//! protobufs and the `cryptography` package's AES-CTR).

use std::path::{Path, PathBuf};
use std::process::Command;

use archipel_e2e::bridge::*;
use archipel_e2e::mosquitto::{BrokerOptions, Mosquitto, Received};
use archipel_e2e::{MeshClient, meshtastic_cli, run_with_limit};
use mesh_core::{ChannelKey, Envelope, GatewayId, NodeId, Packet, PacketId};

/// The topic root: the firmware's default for radios in region US, as every radio here is.
pub const ROOT: &str = "msh/US";
/// The second gateway's id (two gateways through one broker).
pub const GATEWAY_B: &str = "!a7c40002";
/// Other gateways publishing on the broker.
pub const OTHER_GW: &str = "!0badcafe";
pub const THIRD_GW: &str = "!0badcaf3";
/// Nodes of meshes behind those gateways.
pub const FAR: u32 = 0x00c0_ffee;
pub const FAR2: u32 = 0x00c0_ff02;
pub const FLOOD: u32 = 0x00f1_00d0;

/// The key of north's Harbour (`AQ==`, the default key), as another gateway has it.
pub fn harbour_key() -> ChannelKey {
    ChannelKey::from_psk(&[1])
}

/// `<root>/2/<kind>/<channel>/<gateway>`, kind `e` (envelopes) or `json`.
pub fn topic(kind: &str, channel: &str, gateway: &str) -> String {
    format!("{ROOT}/2/{kind}/{channel}/{gateway}")
}

/// The downlink filter a gateway subscribes to for `channel`.
pub fn filter(channel: &str) -> String {
    format!("{ROOT}/2/e/{channel}/+")
}

/// A gateway's default MQTT client id.
pub fn client_id(gateway: &str) -> String {
    format!("archipel-{}", &gateway[1..])
}

/// One `[[mqtt]]` on the loopback broker at `port`; `extra` adds keys.
pub fn mqtt_section(name: &str, port: u16, extra: &str) -> String {
    format!("[[mqtt]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n{extra}")
}

/// A text on Harbour from `from`, as the mesh behind another gateway sends it.
pub fn far_text(from: u32, id: u32, text: &str) -> (Msg, Packet) {
    let mut p = Packet::text_message(NodeId::BROADCAST, 0, text);
    let m = p.meta_mut();
    (m.from, m.id, m.hop_limit, m.hop_start) = (from, id, 3, 3);
    let msg = Msg {
        from: NodeId::new(from),
        id: PacketId::new(id),
        text: text.to_owned(),
    };
    (msg, p)
}

/// The envelope another gateway publishes for `packet` (decoded), encrypted with `key`.
pub fn envelope(packet: &Packet, key: &ChannelKey, gateway: &str) -> Vec<u8> {
    let encrypted = packet.encrypt("Harbour", key);
    Envelope::new(encrypted, "Harbour", GatewayId::parse(gateway)).encode()
}

/// Whether `m` is an envelope carrying `msg`.
pub fn carries(m: &Received, msg: &Msg) -> bool {
    m.topic.contains("/2/e/") && Envelope::decode(&m.payload).is_ok_and(|e| msg.is(&e.packet))
}

/// Whether `m` is the JSON of `msg`.
pub fn json_of(m: &Received, msg: &Msg) -> bool {
    m.topic.contains("/2/json/")
        && String::from_utf8_lossy(&m.payload).contains(&format!("\"id\":{},", msg.id.get()))
}

// ---------------------------------------------------------------------------------------------
// The independent reader: the meshtastic package's protobufs and AES-CTR from `cryptography`.

/// Reads `TOPIC HEX` lines (argv[2]) with the channel PSK in base64 (argv[1]); prints one line
/// per message. The key expansion and nonce follow the reference (§3.1, §3.2), not Archipel.
pub const READ_ENVELOPES_PY: &str = include_str!("read_envelopes.py");

/// What the Python reader makes of `messages`, one line each.
pub fn read_with_python(dir: &Scratch, messages: &[Received], psk: &str) -> Vec<String> {
    let input = dir.path("received.txt");
    let text: String = messages
        .iter()
        .map(|m| {
            let hex: String = m.payload.iter().map(|b| format!("{b:02x}")).collect();
            format!("{} {hex}\n", m.topic)
        })
        .collect();
    std::fs::write(&input, text).expect("messages written");
    let mut cmd = Command::new(meshtastic_cli().with_file_name("python3"));
    cmd.arg("-c").arg(READ_ENVELOPES_PY).arg(psk).arg(&input);
    let out = run_with_limit(cmd, LIMIT, "the Python reader");
    assert!(
        out.status.success(),
        "the Python reader failed (`tests/run` installs meshtastic and cryptography):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The Python reader's line for the envelope of `m` published by `gateway`.
pub fn envelope_line(m: &Msg, gateway: &str) -> String {
    format!(
        "envelope topic={} channel_id=Harbour gateway_id={gateway} from={} id={} variant=encrypted port=TEXT_MESSAGE_APP text={:?}",
        topic("e", "Harbour", gateway),
        m.from,
        m.id,
        m.text
    )
}

/// The Python reader's line for the JSON of `m` published by `gateway`.
pub fn json_line(m: &Msg, gateway: &str) -> String {
    format!(
        "json topic={} from={} id={} sender={gateway} type=text text={:?}",
        topic("json", "Harbour", gateway),
        m.from,
        m.id,
        m.text
    )
}

// ---------------------------------------------------------------------------------------------
// The world: the north mesh (the gateway's radio A, the test's A2) and a broker.

pub struct North {
    /// The test's person on the mesh, once the mesh runs.
    pub a2: Option<MeshClient>,
    /// The mesh; `None` while it is away.
    pub sim: Option<Sim>,
    /// Fixed ports, so a mesh started late is the radio the gateway expects.
    pub ports: Ports,
    /// The broker.
    pub broker: Mosquitto,
    /// Configs, stores and logs; removed last.
    pub dir: Scratch,
}

impl North {
    /// The mesh running, A2 connected, and a broker.
    pub fn start(tag: &str, options: BrokerOptions) -> North {
        let mut north = North::away(tag, options);
        north.start_sim();
        north
    }

    /// A broker, and the mesh not started (the gateway's radio is away).
    pub fn away(tag: &str, options: BrokerOptions) -> North {
        North {
            a2: None,
            sim: None,
            ports: Ports::new(),
            broker: Mosquitto::start(options),
            dir: Scratch::new(tag),
        }
    }

    pub fn start_sim(&mut self) {
        let sim = Sim::start(&self.dir, "north", &north_world(&self.ports), 2);
        self.a2 = Some(MeshClient::connect("A2", &sim.tcp(A2), LIMIT));
        self.sim = Some(sim);
    }

    pub fn a2(&self) -> &MeshClient {
        self.a2.as_ref().expect("the mesh runs")
    }

    /// Writes the gateway config: radio `north`, MQTT endpoint `broker` (with `extra`), routes.
    pub fn config(&self, extra: &str, routes: &[String]) -> PathBuf {
        let sections = [
            radio("north", self.ports.a, "ShortTurbo", &north_channels(), ""),
            mqtt_section("broker", self.broker.port(), extra),
        ];
        let text = gateway_toml(&self.dir.path("store.sqlite"), "", &sections, routes);
        let path = self.dir.path("gateway.toml");
        std::fs::write(&path, text).expect("gateway config written");
        path
    }

    /// Starts the gateway and waits until its broker link is up and subscribed to Harbour
    /// (and its radio is up, when the mesh runs).
    pub fn gateway(&self, config: &Path, crash: Option<&str>, log: &str) -> Gateway {
        let mut gw = Gateway::start_logged(&self.dir, config, crash, log);
        gw.wait_endpoint_up(0, "mqtt", "broker");
        if self.sim.is_some() {
            gw.wait_endpoint_up(0, "radio", "north");
        }
        self.broker
            .wait_subscriptions(&[(&client_id(GATEWAY_ID), &filter("Harbour"))]);
        gw
    }
}
