//! One attached radio's PhoneAPI: what a Meshtastic device says to its client over the stream
//! API. Pure: it takes decoded `ToRadio` messages, mesh packets and `now`, and returns the
//! `FromRadio` messages to send and the packets to transmit. Sockets live in `server`.
//!
//! Session states (firmware `PhoneAPI`):
//!
//! | state  | entered by                               | sends                                              |
//! |--------|------------------------------------------|----------------------------------------------------|
//! | idle   | start, `disconnect`, a new TCP client    | only a heartbeat's `QueueStatus`; mesh packets wait |
//! | live   | `want_config_id` (after the handshake)   | packets, queue status, ACK/NAK, telemetry          |
//!
//! The handshake is sent whole when `want_config_id` arrives, in the v2.7.26 order: my_info,
//! deviceui_config, own node_info, metadata, 8 channels, 10 configs, 13 module configs, the
//! other nodes, `config_complete_id`. Nonce 69420 leaves out the other nodes; 69421 sends only
//! the node infos. Packets heard while idle wait in a 32-packet queue (oldest dropped), as in
//! the firmware's to-phone queue, and follow the next `config_complete_id`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use mesh_core::proto::config::lo_ra_config::RegionCode;
use mesh_core::proto::from_radio::PayloadVariant as Out;
use mesh_core::proto::mesh_packet::Priority;
use mesh_core::proto::routing::Error as RoutingError;
use mesh_core::proto::to_radio::PayloadVariant as In;
use mesh_core::proto::{self, config, module_config};
use mesh_core::{ModemPreset, NodeId, Packet, PacketId};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::channels::ChannelTable;
use super::config::{MAX_CHANNELS, NodeRole, SimConfig, parse_region};
use super::world::{DEFAULT_HOP_LIMIT, MAX_LORA_FRAME, TX_QUEUE_LEN};

/// The firmware version attached radios report.
pub const FIRMWARE_VERSION: &str = "2.7.26.sim";
/// Oldest app build the device accepts, as the firmware reports it.
pub const MIN_APP_VERSION: u32 = 30200;
/// `want_config_id` nonce asking for the configuration only (no other nodes).
pub const SPECIAL_NONCE_ONLY_CONFIG: u32 = 69420;
/// `want_config_id` nonce asking for the node infos only.
pub const SPECIAL_NONCE_ONLY_NODES: u32 = 69421;
/// `QueueStatus.res` when the transmit queue is full (`ERRNO_UNKNOWN`).
pub const QUEUE_FULL: i32 = 32;
/// How many recent client packet ids are remembered to drop repeats.
const RECENT_IDS: usize = 20;
/// Phone-API pacing of texts.
const TEXT_INTERVAL: Duration = Duration::from_secs(2);
/// Phone-API pacing of positions, waypoints, alerts and telemetry.
const POSITION_INTERVAL: Duration = Duration::from_secs(10);
/// How often the device sends its own telemetry to its client.
const TELEMETRY_EVERY: Duration = Duration::from_secs(60);
/// Packets kept for a client that is not (yet) configured.
const TO_PHONE_QUEUE: usize = 32;
/// Own packet ids remembered, to route ACKs and NAKs to the client that sent them.
const SENT_MEMORY: usize = 64;
/// `DeviceState` version the firmware reports in metadata.
const DEVICE_STATE_VERSION: u32 = 24;
/// Position fields the firmware reports by default (altitude, MSL, speed, heading, DOP...).
const POSITION_FLAGS: u32 = 811;

/// Everything a device needs to know about itself and its mesh.
#[derive(Debug, Clone)]
pub struct DeviceProfile {
    /// Its node number.
    pub node: NodeId,
    /// Its names and hardware, as announced.
    pub user: proto::User,
    /// Its role.
    pub role: NodeRole,
    /// The mesh's modem preset.
    pub preset: ModemPreset,
    /// The LoRa region it reports.
    pub region: RegionCode,
    /// The mesh's channels.
    pub channels: ChannelTable,
    /// The other nodes of its mesh, known from the start (as after a long uptime).
    pub peers: Vec<proto::User>,
    /// Seeds its packet ids.
    pub seed: u64,
    /// Unix time at sim time zero.
    pub epoch_unix: u32,
    /// Whether its MQTT client proxy is on, with downlink on every channel.
    pub mqtt_proxy: bool,
}

impl DeviceProfile {
    /// The profile of node `node` of a validated config; `salt` separates the random streams
    /// of two devices of one node (TCP and serial).
    pub fn from_config(
        config: &SimConfig,
        node: NodeId,
        epoch_unix: u32,
        salt: u64,
    ) -> Option<DeviceProfile> {
        let (mesh, me) = config.find_node(node)?;
        Some(DeviceProfile {
            node,
            user: me.user(),
            role: me.role,
            preset: mesh.preset,
            region: parse_region(&mesh.region).unwrap_or(RegionCode::Us),
            channels: ChannelTable::new(&mesh.channels, mesh.preset),
            peers: mesh
                .nodes
                .iter()
                .filter(|n| n.id != node)
                .map(|n| n.user())
                .collect(),
            seed: config.seed ^ u64::from(node.get()).rotate_left(17) ^ salt,
            epoch_unix,
            mqtt_proxy: me.attached.as_ref().is_some_and(|a| a.mqtt_proxy),
        })
    }
}

/// What the radio reports about itself at the moment, from the RF world.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RadioStatus {
    /// Free slots in its transmit queue.
    pub tx_queue_free: usize,
    /// Channel utilisation of its mesh, percent of the last minute.
    pub channel_utilization: f32,
    /// Its own transmit airtime, percent of the last hour.
    pub air_util_tx: f32,
}

/// What the device does in answer to one input.
#[derive(Debug, Default)]
pub struct DeviceOutput {
    /// Messages for the client, in order.
    pub to_client: Vec<proto::FromRadio>,
    /// Packets to transmit (decoded, `channel` = index, `from` = this node).
    pub to_mesh: Vec<Packet>,
    /// Packets that came in through the MQTT client proxy (encrypted, as their sender made
    /// them): the world takes them as received by this node.
    pub downlink: Vec<Packet>,
}

/// Where the PhoneAPI session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    /// No configured client: nothing is sent but a heartbeat's queue status.
    Idle,
    /// A client completed the handshake: everything goes to it.
    Live,
}

/// One attached radio's PhoneAPI state. See the module doc.
#[derive(Debug)]
pub struct Device {
    /// Who it is and what its mesh looks like.
    profile: DeviceProfile,
    /// Its node database (other nodes only), ordered by number so handshakes are stable.
    nodes: BTreeMap<NodeId, proto::NodeInfo>,
    /// Whether a client is configured.
    session: Session,
    /// Ids of the last client packets, to drop repeats (`wasSeenRecently`).
    recent_ids: VecDeque<u32>,
    /// When each port last got a client packet through, for pacing.
    last_sent: HashMap<i32, Duration>,
    /// Packets heard while no client is configured, delivered after the next handshake.
    to_phone: VecDeque<proto::FromRadio>,
    /// Ids of the reliable packets this client sent, so ACKs and NAKs reach only it.
    sent: VecDeque<PacketId>,
    /// When the next telemetry report to the client is due.
    next_telemetry: Option<Duration>,
    /// Random high bits of generated packet ids.
    rng: StdRng,
    /// Low bits of generated packet ids.
    counter: u32,
}

impl Device {
    /// A freshly booted device, idle.
    pub fn new(profile: DeviceProfile) -> Device {
        let nodes = profile
            .peers
            .iter()
            .filter_map(|user| {
                let id: NodeId = user.id.parse().ok()?;
                Some((
                    id,
                    proto::NodeInfo {
                        num: id.get(),
                        user: Some(user.clone()),
                        ..Default::default()
                    },
                ))
            })
            .collect();
        Device {
            rng: StdRng::seed_from_u64(profile.seed),
            profile,
            nodes,
            session: Session::Idle,
            recent_ids: VecDeque::new(),
            last_sent: HashMap::new(),
            to_phone: VecDeque::new(),
            sent: VecDeque::new(),
            next_telemetry: None,
            counter: 0,
        }
    }

    /// Its node number.
    pub fn node(&self) -> NodeId {
        self.profile.node
    }

    /// Whether a client completed the handshake and gets live packets.
    pub fn is_live(&self) -> bool {
        self.session == Session::Live
    }

    /// Back to idle (`PhoneAPI::close`): the client left or said `disconnect`.
    pub fn close(&mut self) {
        self.session = Session::Idle;
        self.next_telemetry = None;
    }

    /// A new client on a fresh connection: idle, and it starts with no remembered ids or
    /// pacing (each TCP connection has its own PhoneAPI in the firmware).
    pub fn reset_session(&mut self) {
        self.close();
        self.recent_ids.clear();
        self.last_sent.clear();
        self.sent.clear();
    }

    /// Handles one decoded `ToRadio`.
    pub fn handle_to_radio(
        &mut self,
        msg: proto::ToRadio,
        now: Duration,
        status: RadioStatus,
    ) -> DeviceOutput {
        match msg.payload_variant {
            Some(In::WantConfigId(nonce)) => DeviceOutput {
                to_client: self.handshake(nonce, now, status),
                ..Default::default()
            },
            Some(In::Packet(packet)) => self.client_packet(packet, now, status),
            Some(In::Heartbeat(beat)) if beat.nonce == 1 => {
                // The "nodeinfo ping": announce ourselves on the mesh, no queue status.
                let meta = proto::MeshPacket {
                    to: NodeId::BROADCAST.get(),
                    hop_limit: u32::from(DEFAULT_HOP_LIMIT),
                    ..Default::default()
                };
                let data = proto::Data {
                    portnum: proto::PortNum::NodeinfoApp as i32,
                    payload: self.profile.user.encode_to_vec(),
                    bitfield: Some(0),
                    ..Default::default()
                };
                DeviceOutput {
                    to_mesh: vec![Packet::from_data(meta, data)],
                    ..Default::default()
                }
            }
            Some(In::Heartbeat(_)) => DeviceOutput {
                to_client: vec![queue_status(0, status.tx_queue_free, 0)],
                ..Default::default()
            },
            Some(In::Disconnect(_)) => {
                self.close();
                DeviceOutput::default()
            }
            Some(In::MqttClientProxyMessage(m)) => DeviceOutput {
                downlink: self.mqtt_downlink(m).into_iter().collect(),
                ..Default::default()
            },
            // XModem is not simulated; unknown variants are ignored too.
            Some(In::XmodemPacket(_)) | None => DeviceOutput::default(),
        }
    }

    /// A message the client publishes for us through the MQTT client proxy, taken as MQTT
    /// downlink is (`MQTT::onReceiveProto`): only an encrypted `ServiceEnvelope` on a channel
    /// with downlink, not from this node or gateway, with sane hop fields, that decrypts with
    /// the channel's key. Returns the packet, still encrypted, with `via_mqtt` set.
    fn mqtt_downlink(&self, m: proto::MqttClientProxyMessage) -> Option<Packet> {
        use proto::mqtt_client_proxy_message::PayloadVariant as P;
        if !self.profile.mqtt_proxy || self.session != Session::Live {
            return None;
        }
        let Some(P::Data(data)) = m.payload_variant else {
            return None;
        };
        if !m.topic.starts_with("msh/2/e/") {
            tracing::debug!(topic = %m.topic, "downlink on a topic this radio does not follow");
            return None;
        }
        let envelope = bytes::Bytes::from(data);
        let fields = mesh_core::wire::fields(&envelope).ok()?;
        let text = |tag| {
            fields
                .iter()
                .find(|f| f.tag == tag)
                .map(|f| String::from_utf8_lossy(&f.value).into_owned())
                .unwrap_or_default()
        };
        let (channel_id, gateway_id) = (text(2), text(3));
        let raw = fields.iter().find(|f| f.tag == 1)?.value.clone();
        let mut packet = Packet::decode(raw).ok()?;
        let me = self.profile.node;
        let entry = self
            .profile
            .channels
            .entries()
            .iter()
            .find(|e| e.name == channel_id)?;
        let sane = gateway_id != me.to_string()
            && packet.from() != me
            && packet.from() != NodeId::BROADCAST
            && packet.meta().hop_limit <= 7
            && packet.meta().hop_start <= 7
            && packet.channel() == u32::from(entry.hash)
            && packet.decrypt(&entry.key).is_ok();
        if !sane {
            tracing::debug!(from = %packet.from(), id = %packet.id(), channel = %channel_id, "downlink dropped");
            return None;
        }
        packet.meta_mut().via_mqtt = true;
        Some(packet)
    }

    /// A packet heard on the mesh (as on the air, with rx metadata). Delivered decoded when
    /// a channel key fits and it is for this node or everyone; used to update the node
    /// database either way.
    ///
    /// With the MQTT client proxy on, every packet it could decode that is neither its own nor
    /// already from MQTT is also published through the client, as MQTT uplink is
    /// (`Router::handleReceived` → `MQTT::onSend`), whoever it is addressed to.
    pub fn on_mesh_packet(&mut self, packet: &Packet, now: Duration) -> Vec<proto::FromRadio> {
        let Some((index, decoded)) = self.profile.channels.decrypt(packet) else {
            return Vec::new();
        };
        self.learn(&decoded, index);
        let mut out = Vec::new();
        if self.profile.mqtt_proxy && packet.from() != self.profile.node && !packet.meta().via_mqtt
        {
            let uplink = self.uplink(packet, index);
            out.extend(self.send_or_keep(uplink));
        }
        let to = decoded.to();
        if to != self.profile.node && !to.is_broadcast() {
            return out;
        }
        let mut meta = decoded.to_proto();
        if meta.rx_time == 0 {
            meta.rx_time = self.unix_time(now);
        }
        out.extend(self.deliver(meta));
        out
    }

    /// The client-proxy message that publishes `packet` (encrypted, as heard) on its
    /// channel's uplink topic.
    fn uplink(&self, packet: &Packet, index: u8) -> proto::FromRadio {
        let channel = self
            .profile
            .channels
            .get(usize::from(index))
            .map(|e| e.name.clone())
            .unwrap_or_default();
        let me = self.profile.node.to_string();
        let envelope = mesh_core::proto::ServiceEnvelope {
            packet: None,
            channel_id: channel.clone(),
            gateway_id: me.clone(),
        };
        // The packet goes in field 1 as its exact bytes; prost encodes fields 2 and 3.
        let mut data = Vec::new();
        mesh_core::wire::put_bytes_field(1, &packet.encode(), &mut data);
        data.extend_from_slice(&envelope.encode_to_vec());
        from_radio(Out::MqttClientProxyMessage(proto::MqttClientProxyMessage {
            topic: format!("msh/2/e/{channel}/{me}"),
            retained: false,
            payload_variant: Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(data)),
        }))
    }

    /// The world reports an implicit ACK of one of our broadcasts.
    pub fn on_implicit_ack(
        &mut self,
        id: PacketId,
        channel: u8,
        now: Duration,
    ) -> Vec<proto::FromRadio> {
        self.on_routing_result(id, channel, RoutingError::None, now)
    }

    /// The world reports that one of our reliable packets was given up on.
    pub fn on_nak(
        &mut self,
        id: PacketId,
        channel: u8,
        error: RoutingError,
        now: Duration,
    ) -> Vec<proto::FromRadio> {
        self.on_routing_result(id, channel, error, now)
    }

    /// When [`Device::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.next_telemetry.filter(|_| self.is_live())
    }

    /// Periodic work: the once-a-minute telemetry report to the client.
    pub fn handle_timeout(&mut self, now: Duration, status: RadioStatus) -> Vec<proto::FromRadio> {
        match self.next_telemetry {
            Some(due) if self.is_live() && due <= now => {
                self.next_telemetry = Some(now + TELEMETRY_EVERY);
                let packet = self.telemetry_packet(now, status);
                self.deliver(packet)
            }
            _ => Vec::new(),
        }
    }

    // ---- internals ----

    fn unix_time(&self, now: Duration) -> u32 {
        self.profile.epoch_unix.saturating_add(now.as_secs() as u32)
    }

    fn next_id(&mut self) -> PacketId {
        self.counter = self.counter.wrapping_add(1);
        PacketId::generate(self.rng.random(), self.counter)
    }

    /// Sends a packet to the live client, or keeps it for the next one.
    fn deliver(&mut self, packet: proto::MeshPacket) -> Vec<proto::FromRadio> {
        self.send_or_keep(from_radio(Out::Packet(packet)))
    }

    /// Sends to the live client, or keeps it (bounded) for the next one.
    fn send_or_keep(&mut self, msg: proto::FromRadio) -> Vec<proto::FromRadio> {
        if self.is_live() {
            return vec![msg];
        }
        if self.to_phone.len() >= TO_PHONE_QUEUE {
            self.to_phone.pop_front();
        }
        self.to_phone.push_back(msg);
        Vec::new()
    }

    fn on_routing_result(
        &mut self,
        id: PacketId,
        channel: u8,
        error: RoutingError,
        now: Duration,
    ) -> Vec<proto::FromRadio> {
        let Some(pos) = self.sent.iter().position(|&s| s == id) else {
            return Vec::new();
        };
        self.sent.remove(pos);
        let packet = self.routing_packet(id, channel, error, now);
        self.deliver(packet)
    }

    /// A ROUTING_APP packet from this node to itself, as the firmware hands its client for
    /// an implicit ACK or a local error.
    fn routing_packet(
        &mut self,
        request: PacketId,
        channel: u8,
        error: RoutingError,
        now: Duration,
    ) -> proto::MeshPacket {
        let routing = proto::Routing {
            variant: Some(proto::routing::Variant::ErrorReason(error as i32)),
        };
        let own = self.profile.node.get();
        proto::MeshPacket {
            from: own,
            to: own,
            channel: u32::from(channel),
            id: self.next_id().get(),
            rx_time: self.unix_time(now),
            priority: Priority::Ack as i32,
            payload_variant: Some(proto::mesh_packet::PayloadVariant::Decoded(proto::Data {
                portnum: proto::PortNum::RoutingApp as i32,
                payload: routing.encode_to_vec(),
                request_id: request.get(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn client_packet(
        &mut self,
        mut packet: proto::MeshPacket,
        now: Duration,
        status: RadioStatus,
    ) -> DeviceOutput {
        let mut out = DeviceOutput::default();
        if packet.id != 0 {
            if self.recent_ids.contains(&packet.id) {
                let id = PacketId::new(packet.id);
                tracing::debug!(%id, "ignore packet from client, already seen recently");
                return out;
            }
            if self.recent_ids.len() >= RECENT_IDS {
                self.recent_ids.pop_front();
            }
            self.recent_ids.push_back(packet.id);
        }
        let Some(proto::mesh_packet::PayloadVariant::Decoded(mut data)) =
            packet.payload_variant.take()
        else {
            // The firmware encrypts what it sends itself; a client gives it plaintext.
            let id = self.id_or_new(packet.id);
            out.to_client
                .extend(self.queue_reply(0, status.tx_queue_free, id.get()));
            let nak = self.routing_packet(id, 0, RoutingError::BadRequest, now);
            out.to_client.extend(self.deliver(nak));
            return out;
        };
        let port = data.portnum;
        if let Some(interval) = pacing(port)
            && self
                .last_sent
                .get(&port)
                .is_some_and(|&t| now.saturating_sub(t) < interval)
        {
            tracing::debug!(port, "rate limit: client packet refused");
            out.to_client
                .extend(self.queue_reply(0, status.tx_queue_free, packet.id));
            if port == proto::PortNum::TextMessageApp as i32 {
                let id = PacketId::new(packet.id);
                let channel = packet.channel.min(7) as u8;
                let nak = self.routing_packet(id, channel, RoutingError::RateLimitExceeded, now);
                out.to_client.extend(self.deliver(nak));
            }
            return out;
        }
        let id = self.id_or_new(packet.id);
        let refuse = |this: &mut Device, error: RoutingError, channel: u8| {
            let mut msgs: Vec<_> = this
                .queue_reply(0, status.tx_queue_free, id.get())
                .into_iter()
                .collect();
            let nak = this.routing_packet(id, channel, error, now);
            msgs.extend(this.deliver(nak));
            msgs
        };
        if packet.channel as usize >= self.profile.channels.len().min(MAX_CHANNELS) {
            out.to_client = refuse(self, RoutingError::NoChannel, 0);
            return out;
        }
        let channel = packet.channel as u8;
        if data.bitfield.is_none() {
            // Set on every packet the firmware originates; bit 0 (ok to MQTT) stays off.
            data.bitfield = Some(0);
        }
        if data.encoded_len() + mesh_core::packet::ON_AIR_HEADER > MAX_LORA_FRAME {
            out.to_client = refuse(self, RoutingError::TooLarge, channel);
            return out;
        }
        if status.tx_queue_free == 0 {
            out.to_client
                .extend(self.queue_reply(QUEUE_FULL, 0, id.get()));
            return out;
        }
        let own = self.profile.node.get();
        packet.from = own;
        packet.id = id.get();
        packet.relay_node = 0;
        packet.next_hop = 0;
        packet.rx_time = self.unix_time(now);
        if packet.hop_limit == 0 && packet.want_ack {
            packet.hop_limit = u32::from(DEFAULT_HOP_LIMIT);
        }
        if packet.hop_limit > u32::from(mesh_core::packet::HOP_MAX) {
            packet.hop_limit = u32::from(DEFAULT_HOP_LIMIT);
        }
        packet.hop_start = packet.hop_limit;
        if packet.priority == Priority::Unset as i32 {
            packet.priority = if packet.want_ack {
                Priority::Reliable as i32
            } else {
                Priority::Default as i32
            };
        }
        if packet.want_ack {
            if self.sent.len() >= SENT_MEMORY {
                self.sent.pop_front();
            }
            self.sent.push_back(id);
        }
        self.last_sent.insert(port, now);
        out.to_mesh.push(Packet::from_data(packet, data));
        out.to_client
            .extend(self.queue_reply(0, status.tx_queue_free.saturating_sub(1), id.get()));
        out
    }

    /// The queue status answering a client packet. The firmware queues it for the live
    /// session, so an unconfigured client gets none (only heartbeats are answered then).
    fn queue_reply(&self, res: i32, free: usize, mesh_packet_id: u32) -> Option<proto::FromRadio> {
        self.is_live()
            .then(|| queue_status(res, free, mesh_packet_id))
    }

    fn id_or_new(&mut self, id: u32) -> PacketId {
        if id == 0 {
            self.next_id()
        } else {
            PacketId::new(id)
        }
    }

    /// Updates the node database from a decoded packet heard on the mesh.
    fn learn(&mut self, packet: &Packet, channel: u8) {
        let from = packet.from();
        if from == self.profile.node || from.is_broadcast() || from == NodeId::LOCAL {
            return;
        }
        let meta = packet.meta();
        let entry = self.nodes.entry(from).or_insert_with(|| unknown_node(from));
        entry.last_heard = meta.rx_time;
        entry.snr = meta.rx_snr;
        entry.channel = u32::from(channel);
        entry.via_mqtt = meta.via_mqtt;
        if packet.hop_start() > 0 {
            entry.hops_away = Some(u32::from(
                packet.hop_start().saturating_sub(packet.hop_limit()),
            ));
        }
        let Some(data) = packet.data() else {
            return;
        };
        match proto::PortNum::try_from(data.portnum) {
            Ok(proto::PortNum::NodeinfoApp) => {
                if let Ok(mut user) = proto::User::decode(&data.payload[..]) {
                    user.id = from.to_string();
                    entry.user = Some(user);
                }
            }
            Ok(proto::PortNum::PositionApp) => {
                if let Ok(position) = proto::Position::decode(&data.payload[..]) {
                    entry.position = Some(position);
                }
            }
            Ok(proto::PortNum::TelemetryApp) => {
                if let Ok(proto::Telemetry {
                    variant: Some(proto::telemetry::Variant::DeviceMetrics(m)),
                    ..
                }) = proto::Telemetry::decode(&data.payload[..])
                {
                    entry.device_metrics = Some(m);
                }
            }
            _ => {}
        }
    }

    fn own_metrics(&self, now: Duration, status: RadioStatus) -> proto::DeviceMetrics {
        proto::DeviceMetrics {
            // 101 means "on external power", as radios on USB report.
            battery_level: Some(101),
            voltage: Some(4.2),
            channel_utilization: Some(status.channel_utilization),
            air_util_tx: Some(status.air_util_tx),
            uptime_seconds: Some(now.as_secs() as u32),
        }
    }

    fn telemetry_packet(&mut self, now: Duration, status: RadioStatus) -> proto::MeshPacket {
        let telemetry = proto::Telemetry {
            time: self.unix_time(now),
            variant: Some(proto::telemetry::Variant::DeviceMetrics(
                self.own_metrics(now, status),
            )),
        };
        proto::MeshPacket {
            from: self.profile.node.get(),
            to: NodeId::BROADCAST.get(),
            id: self.next_id().get(),
            rx_time: self.unix_time(now),
            payload_variant: Some(proto::mesh_packet::PayloadVariant::Decoded(proto::Data {
                portnum: proto::PortNum::TelemetryApp as i32,
                payload: telemetry.encode_to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// The whole `want_config_id` answer, after which the session is live.
    fn handshake(
        &mut self,
        nonce: u32,
        now: Duration,
        status: RadioStatus,
    ) -> Vec<proto::FromRadio> {
        let mut out = Vec::new();
        let only_nodes = nonce == SPECIAL_NONCE_ONLY_NODES;
        let only_config = nonce == SPECIAL_NONCE_ONLY_CONFIG;
        if !only_nodes {
            out.push(from_radio(Out::MyInfo(self.my_info())));
            out.push(from_radio(Out::DeviceuiConfig(
                proto::DeviceUiConfig::default(),
            )));
        }
        out.push(from_radio(Out::NodeInfo(self.own_node_info(now, status))));
        if !only_nodes {
            out.push(from_radio(Out::Metadata(self.metadata())));
            for index in 0..MAX_CHANNELS {
                out.push(from_radio(Out::Channel(self.channel(index))));
            }
            for config in self.configs() {
                out.push(from_radio(Out::Config(config)));
            }
            for module in module_configs(self.profile.mqtt_proxy) {
                out.push(from_radio(Out::ModuleConfig(module)));
            }
        }
        if !only_config {
            for info in self.nodes.values() {
                out.push(from_radio(Out::NodeInfo(info.clone())));
            }
        }
        out.push(from_radio(Out::ConfigCompleteId(nonce)));
        self.session = Session::Live;
        if self.next_telemetry.is_none() {
            self.next_telemetry = Some(now + TELEMETRY_EVERY);
        }
        out.extend(self.to_phone.drain(..));
        out
    }

    fn my_info(&self) -> proto::MyNodeInfo {
        let mut device_id = [0u8; 16];
        device_id[..4].copy_from_slice(b"ASIM");
        device_id[12..].copy_from_slice(&self.profile.node.get().to_be_bytes());
        proto::MyNodeInfo {
            my_node_num: self.profile.node.get(),
            reboot_count: 1,
            min_app_version: MIN_APP_VERSION,
            device_id: device_id.to_vec(),
            pio_env: "native".into(),
            firmware_edition: proto::FirmwareEdition::Vanilla as i32,
            nodedb_count: 1 + self.nodes.len() as u32,
        }
    }

    fn own_node_info(&self, now: Duration, status: RadioStatus) -> proto::NodeInfo {
        proto::NodeInfo {
            num: self.profile.node.get(),
            user: Some(self.profile.user.clone()),
            last_heard: self.unix_time(now),
            device_metrics: Some(self.own_metrics(now, status)),
            is_favorite: true,
            ..Default::default()
        }
    }

    fn metadata(&self) -> proto::DeviceMetadata {
        proto::DeviceMetadata {
            firmware_version: FIRMWARE_VERSION.into(),
            device_state_version: DEVICE_STATE_VERSION,
            can_shutdown: false,
            has_wifi: true,
            has_bluetooth: false,
            has_ethernet: false,
            role: self.profile.role.to_proto() as i32,
            position_flags: POSITION_FLAGS,
            hw_model: self.profile.user.hw_model,
            has_remote_hardware: false,
            has_pkc: false,
            excluded_modules: 0,
        }
    }

    fn channel(&self, index: usize) -> proto::Channel {
        let Some(entry) = self.profile.channels.get(index) else {
            return proto::Channel {
                index: index as i32,
                settings: Some(proto::ChannelSettings::default()),
                role: proto::channel::Role::Disabled as i32,
            };
        };
        let role = if index == 0 {
            proto::channel::Role::Primary
        } else {
            proto::channel::Role::Secondary
        };
        proto::Channel {
            index: index as i32,
            settings: Some(proto::ChannelSettings {
                psk: entry.psk.as_bytes().to_vec(),
                name: entry.configured_name.clone(),
                downlink_enabled: self.profile.mqtt_proxy,
                uplink_enabled: self.profile.mqtt_proxy,
                module_settings: Some(proto::ModuleSettings {
                    position_precision: if index == 0 { 13 } else { 0 },
                    is_muted: false,
                }),
                ..Default::default()
            }),
            role: role as i32,
        }
    }

    fn configs(&self) -> Vec<proto::Config> {
        use config::PayloadVariant as C;
        let p = &self.profile;
        [
            C::Device(config::DeviceConfig {
                role: p.role.to_proto() as i32,
                node_info_broadcast_secs: 10_800,
                ..Default::default()
            }),
            C::Position(config::PositionConfig {
                position_broadcast_secs: 900,
                position_broadcast_smart_enabled: true,
                gps_update_interval: 120,
                position_flags: POSITION_FLAGS,
                broadcast_smart_minimum_distance: 100,
                broadcast_smart_minimum_interval_secs: 30,
                gps_mode: config::position_config::GpsMode::NotPresent as i32,
                ..Default::default()
            }),
            C::Power(config::PowerConfig {
                ls_secs: 300,
                wait_bluetooth_secs: 60,
                sds_secs: u32::MAX,
                min_wake_secs: 10,
                ..Default::default()
            }),
            C::Network(config::NetworkConfig {
                wifi_enabled: true,
                ntp_server: "meshtastic.pool.ntp.org".into(),
                ..Default::default()
            }),
            C::Display(config::DisplayConfig {
                screen_on_secs: 600,
                ..Default::default()
            }),
            C::Lora(config::LoRaConfig {
                use_preset: true,
                modem_preset: p.preset.to_proto() as i32,
                region: p.region as i32,
                hop_limit: u32::from(DEFAULT_HOP_LIMIT),
                tx_enabled: true,
                tx_power: 0,
                sx126x_rx_boosted_gain: true,
                ..Default::default()
            }),
            C::Bluetooth(config::BluetoothConfig {
                enabled: false,
                mode: config::bluetooth_config::PairingMode::RandomPin as i32,
                fixed_pin: 0,
            }),
            C::Security(config::SecurityConfig {
                serial_enabled: true,
                ..Default::default()
            }),
            C::Sessionkey(config::SessionkeyConfig {}),
            C::DeviceUi(proto::DeviceUiConfig::default()),
        ]
        .into_iter()
        .map(|v| proto::Config {
            payload_variant: Some(v),
        })
        .collect()
    }
}

/// The module configs, in the firmware's order (its `ModuleConfigType` values).
fn module_configs(mqtt_proxy: bool) -> Vec<proto::ModuleConfig> {
    use module_config::PayloadVariant as M;
    [
        M::Mqtt(module_config::MqttConfig {
            enabled: mqtt_proxy,
            proxy_to_client_enabled: mqtt_proxy,
            // A private address: the firmware uplinks other nodes' packets without their
            // OK-to-MQTT bit only towards private brokers.
            address: if mqtt_proxy {
                "127.0.0.1".into()
            } else {
                "mqtt.meshtastic.org".into()
            },
            encryption_enabled: true,
            root: "msh".into(),
            ..Default::default()
        }),
        M::Serial(module_config::SerialConfig::default()),
        M::ExternalNotification(module_config::ExternalNotificationConfig::default()),
        M::StoreForward(module_config::StoreForwardConfig::default()),
        M::RangeTest(module_config::RangeTestConfig::default()),
        M::Telemetry(module_config::TelemetryConfig {
            device_update_interval: 1800,
            environment_update_interval: 1800,
            device_telemetry_enabled: true,
            ..Default::default()
        }),
        M::CannedMessage(module_config::CannedMessageConfig::default()),
        M::Audio(module_config::AudioConfig::default()),
        M::RemoteHardware(module_config::RemoteHardwareConfig::default()),
        M::NeighborInfo(module_config::NeighborInfoConfig::default()),
        M::AmbientLighting(module_config::AmbientLightingConfig::default()),
        M::DetectionSensor(module_config::DetectionSensorConfig::default()),
        M::Paxcounter(module_config::PaxcounterConfig::default()),
    ]
    .into_iter()
    .map(|v| proto::ModuleConfig {
        payload_variant: Some(v),
    })
    .collect()
}

/// How often the client may send on this port (the firmware's Phone-API limits).
fn pacing(port: i32) -> Option<Duration> {
    use proto::PortNum as P;
    match P::try_from(port).ok()? {
        P::TextMessageApp => Some(TEXT_INTERVAL),
        P::PositionApp | P::WaypointApp | P::AlertApp | P::TelemetryApp => Some(POSITION_INTERVAL),
        _ => None,
    }
}

/// A node heard but never announced: the firmware's default names.
fn unknown_node(id: NodeId) -> proto::NodeInfo {
    let short = format!("{:04x}", id.get() & 0xffff);
    proto::NodeInfo {
        num: id.get(),
        user: Some(proto::User {
            id: id.to_string(),
            long_name: format!("Meshtastic {short}"),
            short_name: short,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn from_radio(variant: Out) -> proto::FromRadio {
    proto::FromRadio {
        id: 0,
        payload_variant: Some(variant),
    }
}

fn queue_status(res: i32, free: usize, mesh_packet_id: u32) -> proto::FromRadio {
    from_radio(Out::QueueStatus(proto::QueueStatus {
        res,
        free: free.min(TX_QUEUE_LEN) as u32,
        maxlen: TX_QUEUE_LEN as u32,
        mesh_packet_id,
    }))
}

/// The packet a `FromRadio` hands the client, if it is one.
pub fn client_packet(msg: &proto::FromRadio) -> Option<Packet> {
    let Some(Out::Packet(p)) = &msg.payload_variant else {
        return None;
    };
    let mut meta = p.clone();
    match meta.payload_variant.take()? {
        proto::mesh_packet::PayloadVariant::Decoded(data) => Some(Packet::from_data(meta, data)),
        proto::mesh_packet::PayloadVariant::Encrypted(c) => {
            Some(Packet::new(meta, mesh_core::Payload::Encrypted(c.into())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = NodeId::new(0xa1b2_c3d4);
    const PEER: NodeId = NodeId::new(0x0c4d_2e61);

    fn config() -> SimConfig {
        SimConfig::from_toml_str(
            r#"
            [[mesh]]
            name = "north"
            preset = "LongFast"
            region = "EU_868"
            channels = [ { name = "", psk = "AQ==" }, { name = "ops", psk = "simple5" } ]
            [[mesh.node]]
            id = "!a1b2c3d4"
            long_name = "North hub radio"
            short_name = "NHUB"
            attached = { tcp_port = 0 }
            [[mesh.node]]
            id = "!0c4d2e61"
            long_name = "Amira (bakery)"
            short_name = "AMRA"
            [[mesh.node]]
            id = "!7a91b3c2"
            long_name = "Jonas Weber"
            short_name = "JNS"
        "#,
        )
        .unwrap()
    }

    fn device() -> Device {
        Device::new(DeviceProfile::from_config(&config(), ME, 1_700_000_000, 0).unwrap())
    }

    fn status(free: usize) -> RadioStatus {
        RadioStatus {
            tx_queue_free: free,
            channel_utilization: 1.5,
            air_util_tx: 0.25,
        }
    }

    fn want_config(nonce: u32) -> proto::ToRadio {
        proto::ToRadio {
            payload_variant: Some(In::WantConfigId(nonce)),
        }
    }

    fn heartbeat() -> proto::ToRadio {
        proto::ToRadio {
            payload_variant: Some(In::Heartbeat(proto::Heartbeat { nonce: 0 })),
        }
    }

    fn text_from_client(id: u32, to: NodeId, want_ack: bool) -> proto::ToRadio {
        proto::ToRadio {
            payload_variant: Some(In::Packet(proto::MeshPacket {
                to: to.get(),
                id,
                want_ack,
                payload_variant: Some(proto::mesh_packet::PayloadVariant::Decoded(proto::Data {
                    portnum: proto::PortNum::TextMessageApp as i32,
                    payload: b"hi".to_vec(),
                    ..Default::default()
                })),
                ..Default::default()
            })),
        }
    }

    /// A broadcast text from `PEER` on the primary channel, decoded.
    fn heard_text(id: u32, body: &str) -> Packet {
        let mut p = Packet::text_message(NodeId::BROADCAST, 0, body);
        let m = p.meta_mut();
        (m.from, m.id, m.hop_limit) = (PEER.get(), id, 0);
        p
    }

    fn live(d: &mut Device) {
        d.handle_to_radio(want_config(1), Duration::ZERO, status(16));
    }

    fn kinds(msgs: &[proto::FromRadio]) -> Vec<&'static str> {
        msgs.iter()
            .map(|m| match m.payload_variant.as_ref().unwrap() {
                Out::MyInfo(_) => "my_info",
                Out::DeviceuiConfig(_) => "deviceui",
                Out::NodeInfo(_) => "node_info",
                Out::Metadata(_) => "metadata",
                Out::Channel(_) => "channel",
                Out::Config(_) => "config",
                Out::ModuleConfig(_) => "module_config",
                Out::ConfigCompleteId(_) => "complete",
                Out::QueueStatus(_) => "queue_status",
                Out::Packet(_) => "packet",
                _ => "other",
            })
            .collect()
    }

    fn queue_statuses(msgs: &[proto::FromRadio]) -> Vec<proto::QueueStatus> {
        msgs.iter()
            .filter_map(|m| match &m.payload_variant {
                Some(Out::QueueStatus(q)) => Some(*q),
                _ => None,
            })
            .collect()
    }

    fn routing_errors(msgs: &[proto::FromRadio]) -> Vec<(u32, u32, i32)> {
        msgs.iter()
            .filter_map(client_packet)
            .filter(|p| p.portnum() == Some(proto::PortNum::RoutingApp))
            .map(|p| {
                let data = p.data().unwrap();
                let r = proto::Routing::decode(&data.payload[..]).unwrap();
                let Some(proto::routing::Variant::ErrorReason(e)) = r.variant else {
                    panic!("no error reason")
                };
                assert_eq!(p.from(), ME);
                assert_eq!(p.to(), ME);
                (data.request_id, p.channel(), e)
            })
            .collect()
    }

    #[test]
    fn the_handshake_follows_the_firmware_order_and_is_complete() {
        let mut d = device();
        let out = d.handle_to_radio(want_config(0xdead_beef), Duration::from_secs(5), status(16));
        let mut expected = vec!["my_info", "deviceui", "node_info", "metadata"];
        expected.extend(["channel"; 8]);
        expected.extend(["config"; 10]);
        expected.extend(["module_config"; 13]);
        expected.extend(["node_info"; 2]);
        expected.push("complete");
        assert_eq!(kinds(&out.to_client), expected);
        assert!(out.to_mesh.is_empty());
        let msgs: Vec<_> = out
            .to_client
            .iter()
            .map(|m| m.payload_variant.clone().unwrap())
            .collect();
        let Out::MyInfo(my) = &msgs[0] else { panic!() };
        assert_eq!(my.my_node_num, ME.get());
        assert_eq!(my.min_app_version, 30200);
        assert_eq!(my.nodedb_count, 3);
        let Out::NodeInfo(own) = &msgs[2] else {
            panic!()
        };
        let user = own.user.as_ref().unwrap();
        assert!(own.is_favorite && own.hops_away.is_none());
        assert_eq!(user.id, "!a1b2c3d4");
        assert_eq!(
            (user.long_name.as_str(), user.short_name.as_str()),
            ("North hub radio", "NHUB")
        );
        let Out::Metadata(meta) = &msgs[3] else {
            panic!()
        };
        assert_eq!(meta.firmware_version, "2.7.26.sim");
        let channels: Vec<_> = msgs[4..12]
            .iter()
            .map(|m| match m {
                Out::Channel(c) => (c.index, c.role),
                _ => panic!(),
            })
            .collect();
        assert_eq!(channels[0], (0, proto::channel::Role::Primary as i32));
        assert_eq!(channels[1], (1, proto::channel::Role::Secondary as i32));
        for (i, (index, role)) in channels.iter().enumerate().skip(2) {
            assert_eq!(
                (*index, *role),
                (i as i32, proto::channel::Role::Disabled as i32)
            );
        }
        let Out::Channel(primary) = &msgs[4] else {
            panic!()
        };
        assert_eq!(primary.settings.as_ref().unwrap().psk, vec![1]);
        let Out::Config(lora) = &msgs[17] else {
            panic!()
        };
        let Some(config::PayloadVariant::Lora(lora)) = &lora.payload_variant else {
            panic!("6th config is lora: {lora:?}")
        };
        assert!(lora.use_preset && lora.tx_enabled);
        assert_eq!(lora.hop_limit, 3);
        assert_eq!(lora.region, RegionCode::Eu868 as i32);
        let Out::NodeInfo(peer) = &msgs[msgs.len() - 3] else {
            panic!()
        };
        assert_eq!(peer.user.as_ref().unwrap().id, PEER.to_string());
        assert!(!peer.is_favorite);
        assert_eq!(msgs.last(), Some(&Out::ConfigCompleteId(0xdead_beef)));
        assert!(d.is_live());
    }

    #[test]
    fn special_nonces_send_config_only_or_nodes_only() {
        let out = device().handle_to_radio(
            want_config(SPECIAL_NONCE_ONLY_CONFIG),
            Duration::ZERO,
            status(16),
        );
        let k = kinds(&out.to_client);
        assert_eq!(
            k.iter().filter(|k| **k == "node_info").count(),
            1,
            "own node only"
        );
        assert_eq!(k.last(), Some(&"complete"));
        let out = device().handle_to_radio(
            want_config(SPECIAL_NONCE_ONLY_NODES),
            Duration::ZERO,
            status(16),
        );
        assert_eq!(
            kinds(&out.to_client),
            vec!["node_info", "node_info", "node_info", "complete"]
        );
    }

    #[test]
    fn nothing_is_sent_before_want_config_but_a_heartbeats_queue_status() {
        let mut d = device();
        let heard = heard_text(77, "early");
        let on_air = d.profile.channels.encrypt(&heard, 0).unwrap();
        assert!(d.on_mesh_packet(&on_air, Duration::ZERO).is_empty());
        assert!(
            d.handle_timeout(Duration::from_secs(3600), status(16))
                .is_empty()
        );
        let out = d.handle_to_radio(heartbeat(), Duration::ZERO, status(16));
        assert_eq!(kinds(&out.to_client), vec!["queue_status"]);
        let out = d.handle_to_radio(
            text_from_client(3, NodeId::BROADCAST, false),
            Duration::ZERO,
            status(16),
        );
        assert_eq!(out.to_mesh.len(), 1, "transmitted");
        assert!(
            out.to_client.is_empty(),
            "but not answered before the handshake"
        );
        // The packet heard while idle follows the handshake.
        let out = d.handle_to_radio(want_config(9), Duration::ZERO, status(16));
        let last = out.to_client.last().unwrap();
        assert_eq!(
            client_packet(last).unwrap().text().as_deref(),
            Some("early")
        );
    }

    #[test]
    fn a_second_want_config_restarts_and_disconnect_goes_idle() {
        let mut d = device();
        live(&mut d);
        let again = d.handle_to_radio(want_config(2), Duration::ZERO, status(16));
        assert_eq!(kinds(&again.to_client)[0], "my_info");
        d.handle_to_radio(
            proto::ToRadio {
                payload_variant: Some(In::Disconnect(true)),
            },
            Duration::ZERO,
            status(16),
        );
        assert!(!d.is_live());
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn a_heartbeat_gets_exactly_one_queue_status() {
        let mut d = device();
        live(&mut d);
        let out = d.handle_to_radio(heartbeat(), Duration::ZERO, status(12));
        assert_eq!(
            queue_statuses(&out.to_client),
            vec![proto::QueueStatus {
                res: 0,
                free: 12,
                maxlen: 16,
                mesh_packet_id: 0
            }]
        );
        assert_eq!(out.to_client.len(), 1);
    }

    #[test]
    fn a_client_packet_is_fixed_up_queued_and_answered_with_queue_status() {
        let mut d = device();
        live(&mut d);
        let out = d.handle_to_radio(
            text_from_client(0x1234, NodeId::BROADCAST, true),
            Duration::from_secs(1),
            status(16),
        );
        assert_eq!(
            queue_statuses(&out.to_client),
            vec![proto::QueueStatus {
                res: 0,
                free: 15,
                maxlen: 16,
                mesh_packet_id: 0x1234
            }]
        );
        assert_eq!(out.to_client.len(), 1, "the packet is not echoed back");
        let sent = &out.to_mesh[0];
        assert_eq!(sent.from(), ME);
        assert_eq!(sent.id(), PacketId::new(0x1234));
        assert_eq!((sent.hop_limit(), sent.hop_start()), (3, 3));
        assert_eq!(sent.channel(), 0);
        // An unset id is generated.
        let out = d.handle_to_radio(
            text_from_client(0, NodeId::BROADCAST, false),
            Duration::from_secs(5),
            status(16),
        );
        let id = out.to_mesh[0].id();
        assert!(!id.is_unset());
        assert_eq!(queue_statuses(&out.to_client)[0].mesh_packet_id, id.get());
    }

    #[test]
    fn a_repeated_packet_id_is_dropped_silently() {
        let mut d = device();
        live(&mut d);
        d.handle_to_radio(
            text_from_client(42, NodeId::BROADCAST, false),
            Duration::ZERO,
            status(16),
        );
        let again = d.handle_to_radio(
            text_from_client(42, NodeId::BROADCAST, false),
            Duration::from_secs(60),
            status(16),
        );
        assert!(again.to_client.is_empty() && again.to_mesh.is_empty());
    }

    #[test]
    fn texts_are_paced_to_one_every_two_seconds() {
        let mut d = device();
        live(&mut d);
        let first = d.handle_to_radio(
            text_from_client(1, NodeId::BROADCAST, false),
            Duration::from_secs(10),
            status(16),
        );
        assert_eq!(first.to_mesh.len(), 1);
        let second = d.handle_to_radio(
            text_from_client(2, NodeId::BROADCAST, false),
            Duration::from_millis(11_500),
            status(16),
        );
        assert!(second.to_mesh.is_empty());
        assert_eq!(queue_statuses(&second.to_client)[0].res, 0);
        assert_eq!(
            routing_errors(&second.to_client),
            vec![(2, 0, RoutingError::RateLimitExceeded as i32)]
        );
        let third = d.handle_to_radio(
            text_from_client(3, NodeId::BROADCAST, false),
            Duration::from_secs(12),
            status(16),
        );
        assert_eq!(third.to_mesh.len(), 1);
    }

    #[test]
    fn a_full_transmit_queue_refuses_the_packet() {
        let mut d = device();
        live(&mut d);
        let out = d.handle_to_radio(
            text_from_client(5, NodeId::BROADCAST, false),
            Duration::ZERO,
            status(0),
        );
        assert!(out.to_mesh.is_empty());
        let q = queue_statuses(&out.to_client);
        assert_eq!(q.len(), 1);
        assert_ne!(q[0].res, 0);
        assert_eq!((q[0].free, q[0].mesh_packet_id), (0, 5));
    }

    #[test]
    fn a_missing_channel_or_an_oversize_payload_is_refused_with_a_routing_error() {
        let mut d = device();
        live(&mut d);
        let mut msg = text_from_client(7, NodeId::BROADCAST, true);
        if let Some(In::Packet(p)) = &mut msg.payload_variant {
            p.channel = 5;
        }
        let out = d.handle_to_radio(msg, Duration::ZERO, status(16));
        assert!(out.to_mesh.is_empty());
        assert_eq!(
            routing_errors(&out.to_client),
            vec![(7, 0, RoutingError::NoChannel as i32)]
        );
        let mut msg = text_from_client(8, NodeId::BROADCAST, true);
        if let Some(In::Packet(p)) = &mut msg.payload_variant
            && let Some(proto::mesh_packet::PayloadVariant::Decoded(data)) = &mut p.payload_variant
        {
            data.payload = vec![b'x'; 300];
        }
        let out = d.handle_to_radio(msg, Duration::from_secs(10), status(16));
        assert!(out.to_mesh.is_empty());
        assert_eq!(
            routing_errors(&out.to_client),
            vec![(8, 0, RoutingError::TooLarge as i32)]
        );
    }

    #[test]
    fn mesh_packets_are_delivered_decoded_on_the_local_channel_index() {
        let mut d = device();
        live(&mut d);
        let mut heard = heard_text(500, "on ops");
        let m = heard.meta_mut();
        (m.hop_limit, m.hop_start, m.rx_snr, m.rx_rssi, m.rx_time) =
            (2, 3, 4.5, -100, 1_700_000_100);
        let on_air = d.profile.channels.encrypt(&heard, 1).unwrap();
        let out = d.on_mesh_packet(&on_air, Duration::from_secs(100));
        let p = out.iter().find_map(client_packet).unwrap();
        assert_eq!(p.channel(), 1);
        assert_eq!(p.text().as_deref(), Some("on ops"));
        assert_eq!((p.meta().rx_snr, p.meta().rx_rssi), (4.5, -100));
        assert_eq!((p.hop_limit(), p.hop_start()), (2, 3));
        assert_eq!(d.nodes[&PEER].hops_away, Some(1));
        assert_eq!(d.nodes[&PEER].last_heard, 1_700_000_100);
        // A direct message to someone else is not for our client, but it is published on
        // the uplink (the client proxy), encrypted as heard; a foreign key is unreadable.
        let mut other = heard.clone();
        other.meta_mut().to = 0x7a91_b3c2;
        other.meta_mut().id = 501;
        let on_air = d.profile.channels.encrypt(&other, 0).unwrap();
        let out = d.on_mesh_packet(&on_air, Duration::ZERO);
        assert!(out.iter().all(|m| client_packet(m).is_none()));
        let Some(Out::MqttClientProxyMessage(m)) = out[0].payload_variant.clone() else {
            panic!("{out:?}")
        };
        assert!(m.topic.starts_with("msh/2/e/"), "{}", m.topic);
        let Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(env)) = m.payload_variant
        else {
            panic!()
        };
        let env = proto::ServiceEnvelope::decode(&env[..]).unwrap();
        assert_eq!(env.gateway_id, d.profile.node.to_string());
        assert_eq!(env.packet.unwrap().id, 501);
        // What came from MQTT is never published back to it.
        let mut from_mqtt = on_air.clone();
        from_mqtt.meta_mut().via_mqtt = true;
        from_mqtt.meta_mut().id = 502;
        assert!(d.on_mesh_packet(&from_mqtt, Duration::ZERO).is_empty());
        let foreign = ChannelTable::new(
            &[super::super::config::ChannelConfig {
                name: "x".into(),
                psk: mesh_core::Psk::from_bytes(vec![3; 32]),
            }],
            ModemPreset::LongFast,
        );
        assert!(
            d.on_mesh_packet(&foreign.encrypt(&heard, 0).unwrap(), Duration::ZERO)
                .is_empty()
        );
    }

    #[test]
    fn acks_and_naks_reach_the_client_that_sent_the_packet() {
        let mut d = device();
        live(&mut d);
        let out = d.handle_to_radio(
            text_from_client(0x99, NodeId::BROADCAST, true),
            Duration::ZERO,
            status(16),
        );
        assert_eq!(out.to_mesh.len(), 1);
        let ack = d.on_implicit_ack(PacketId::new(0x99), 0, Duration::from_secs(3));
        assert_eq!(routing_errors(&ack), vec![(0x99, 0, 0)]);
        assert!(
            d.on_implicit_ack(PacketId::new(0x99), 0, Duration::from_secs(3))
                .is_empty(),
            "once"
        );
        assert!(
            d.on_implicit_ack(PacketId::new(0x55), 0, Duration::from_secs(3))
                .is_empty(),
            "not ours"
        );
        d.handle_to_radio(
            text_from_client(0x98, PEER, true),
            Duration::from_secs(10),
            status(16),
        );
        let nak = d.on_nak(
            PacketId::new(0x98),
            0,
            RoutingError::MaxRetransmit,
            Duration::from_secs(50),
        );
        assert_eq!(
            routing_errors(&nak),
            vec![(0x98, 0, RoutingError::MaxRetransmit as i32)]
        );
    }

    #[test]
    fn the_device_reports_its_telemetry_once_a_minute() {
        let mut d = device();
        live(&mut d);
        assert_eq!(d.poll_timeout(), Some(Duration::from_secs(60)));
        assert!(
            d.handle_timeout(Duration::from_secs(59), status(16))
                .is_empty()
        );
        let out = d.handle_timeout(Duration::from_secs(60), status(16));
        let p = client_packet(&out[0]).unwrap();
        assert_eq!(p.portnum(), Some(proto::PortNum::TelemetryApp));
        assert_eq!(p.from(), ME);
        let t = proto::Telemetry::decode(&p.data().unwrap().payload[..]).unwrap();
        let Some(proto::telemetry::Variant::DeviceMetrics(m)) = t.variant else {
            panic!()
        };
        assert_eq!(m.channel_utilization, Some(1.5));
        assert_eq!(m.air_util_tx, Some(0.25));
        assert_eq!(m.uptime_seconds, Some(60));
        assert_eq!(d.poll_timeout(), Some(Duration::from_secs(120)));
    }
}
