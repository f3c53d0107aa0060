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
//! other nodes, `config_complete_id` (the `handshake` module). Nonce 69420 leaves out the other nodes;
//! 69421 sends only the node infos. What comes up while no client is configured waits in the
//! firmware's separate, bounded to-phone queues ([`to_phone`]), counted when they overflow,
//! and follows the next `config_complete_id`.
//!
//! Queue statuses follow `MeshService`: every client packet gets one, and once the transmit
//! queue has room again after the last of them said `free = 0`, the device sends one by itself
//! ([`Device::service_loop`], like `MeshService::loop`; the firmware's "last status" starts at
//! `free = 0`, so one also goes out once after boot). A heartbeat's answer is not such a status.
//!
//! The MQTT client proxy speaks [`mesh_core::envelope`] on the mesh's topic root (by default
//! `msh/<REGION>`, as the firmware sets it with the region), PKI direct messages on the `PKI`
//! pseudo-channel (the `mqtt` module says which it takes and publishes), and pacing follows
//! [`mesh_core::pacing`] with one window per port, as `PhoneAPI::handleToRadioPacket` keeps it.
//!
//! The RF world reads what the radio hears (channel keys, or PKI for a direct message to it)
//! and hands the device both forms; the device keeps the phone-side node database, public keys
//! included, and refuses a client's direct message the firmware would not send
//! (`PKI_SEND_FAIL_PUBLIC_KEY` when the destination's key is unknown).

mod client;
mod handshake;
mod mqtt;
mod nodes;
#[cfg(test)]
mod tests;
pub mod to_phone;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use mesh_core::proto;
use mesh_core::proto::config::lo_ra_config::RegionCode;
use mesh_core::proto::from_radio::PayloadVariant as Out;
use mesh_core::proto::mesh_packet::Priority;
use mesh_core::proto::routing::Error as RoutingError;
use mesh_core::proto::to_radio::PayloadVariant as In;
use mesh_core::{ModemPreset, NodeId, Packet, PacketId, PrivateKey, Root};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use self::mqtt::{DownlinkDrop, DownlinkDrops};
use self::to_phone::{ToPhone, ToPhoneDrops};
use super::channels::ChannelTable;
use super::config::{NodeRole, SimConfig, parse_region};
use super::world::{DEFAULT_HOP_LIMIT, TX_QUEUE_LEN};

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
/// How often the device sends its own telemetry to its client.
const TELEMETRY_EVERY: Duration = Duration::from_secs(60);
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
    /// Its names, hardware and public key, as announced.
    pub user: proto::User,
    /// Its private key (`None` without PKI), which the firmware reports in its security
    /// config; the RF world holds the same key for the crypto.
    pub private_key: Option<PrivateKey>,
    /// Its role.
    pub role: NodeRole,
    /// The mesh's modem preset.
    pub preset: ModemPreset,
    /// The LoRa region it reports.
    pub region: RegionCode,
    /// The override frequency it reports (MHz), 0 for none, as the firmware's `LoRaConfig`.
    pub override_frequency: f32,
    /// The mesh's channels.
    pub channels: ChannelTable,
    /// The other nodes of its mesh, known from the start (as after a long uptime), with
    /// their public keys.
    pub peers: Vec<proto::User>,
    /// Seeds its packet ids.
    pub seed: u64,
    /// Unix time at sim time zero.
    pub epoch_unix: u32,
    /// Whether its MQTT client proxy is on, with downlink on every channel.
    pub mqtt_proxy: bool,
    /// The MQTT topic root it reports, publishes under and takes downlink under.
    pub mqtt_root: Root,
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
            user: me.user(config.seed),
            private_key: me.private_key(config.seed),
            role: me.role,
            preset: mesh.preset,
            region: parse_region(&mesh.region).unwrap_or(RegionCode::Us),
            // The firmware keeps it as a 32-bit float: 869.4625 reads back as 869.46252.
            override_frequency: mesh.frequency_mhz.unwrap_or(0.0) as f32,
            channels: ChannelTable::new(&mesh.channels, mesh.preset),
            peers: mesh
                .nodes
                .iter()
                .filter(|n| n.id != node)
                .map(|n| n.user(config.seed))
                .collect(),
            seed: config.seed ^ u64::from(node.get()).rotate_left(17) ^ salt,
            epoch_unix,
            mqtt_proxy: me.attached.as_ref().is_some_and(|a| a.mqtt_proxy),
            // Checked by the config's validation; a bad one cannot reach here.
            mqtt_root: mesh.mqtt_root().unwrap_or_default(),
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
    /// Why a message of the MQTT client proxy was refused, if one was.
    pub downlink_refused: Option<DownlinkDrop>,
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
    /// The nodes whose `User` it has from a NodeInfo (the firmware's `has_user`; the others
    /// carry default names): a PKI downlink between two others needs both announced.
    announced: BTreeSet<NodeId>,
    /// What the MQTT client proxy refused, by reason.
    downlink_drops: DownlinkDrops,
    /// Whether a client is configured.
    session: Session,
    /// Ids of the last client packets, to drop repeats (`wasSeenRecently`).
    recent_ids: VecDeque<u32>,
    /// When each paced port last got a client packet through (one window per port, as the
    /// firmware's `lastPortNumToRadio`).
    last_sent: HashMap<i32, Duration>,
    /// What waits for a client that is not (yet) configured, delivered after the next
    /// handshake.
    to_phone: ToPhone,
    /// `free` of the last queue status queued for the client (`MeshService::lastQueueStatus`):
    /// while it is 0, room in the transmit queue is announced by a status of its own.
    last_status_free: usize,
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
        let nodes: BTreeMap<NodeId, proto::NodeInfo> = profile
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
        let announced = nodes.keys().copied().collect();
        Device {
            rng: StdRng::seed_from_u64(profile.seed),
            profile,
            nodes,
            announced,
            downlink_drops: DownlinkDrops::default(),
            session: Session::Idle,
            recent_ids: VecDeque::new(),
            last_sent: HashMap::new(),
            to_phone: ToPhone::default(),
            // As the firmware's `lastQueueStatus = {0, 0, 16, 0}`.
            last_status_free: 0,
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
            Some(In::MqttClientProxyMessage(m)) => match self.mqtt_downlink(m) {
                Ok(packet) => DeviceOutput {
                    downlink: vec![packet],
                    ..Default::default()
                },
                Err(why) => DeviceOutput {
                    downlink_refused: Some(why),
                    ..Default::default()
                },
            },
            // XModem is not simulated; unknown variants are ignored too.
            Some(In::XmodemPacket(_)) | None => DeviceOutput::default(),
        }
    }

    /// A packet heard on the mesh: `packet` as on the air (with rx metadata), `decoded` as
    /// the radio read it (the world decodes: channel keys, or PKI for a direct message to this
    /// node). Delivered decoded when it is for this node or everyone; it updates the node
    /// database either way.
    ///
    /// With the MQTT client proxy on, what is neither its own nor already from MQTT is also
    /// published through the client, as MQTT uplink is (`Router::handleReceived` →
    /// `MQTT::onSend`): whatever it could read, whoever it is addressed to (a PKI one on the
    /// `PKI` topic), and PKI messages between others, which it cannot read, still encrypted.
    pub fn on_mesh_packet(
        &mut self,
        packet: &Packet,
        decoded: Option<&Packet>,
        now: Duration,
    ) -> Vec<proto::FromRadio> {
        let mut out = Vec::new();
        let uplink = self.profile.mqtt_proxy
            && packet.from() != self.profile.node
            && !packet.meta().via_mqtt;
        let Some(decoded) = decoded else {
            if uplink && let Some(msg) = self.uplink_unreadable(packet) {
                out.extend(self.send_or_keep(msg));
            }
            return out;
        };
        let index = decoded.channel().min(u32::from(u8::MAX)) as u8;
        self.learn(decoded, index);
        if uplink && let Some(msg) = self.uplink(packet, decoded) {
            out.extend(self.send_or_keep(msg));
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

    /// Sends to the live client, or keeps it (bounded, counted) for the next one.
    fn send_or_keep(&mut self, msg: proto::FromRadio) -> Vec<proto::FromRadio> {
        if self.is_live() {
            return vec![msg];
        }
        if self.to_phone.keep(msg) {
            tracing::warn!(
                node = %self.profile.node,
                "no client is reading and a to-phone queue is full: dropping as the firmware does, counted; totals when a client is back"
            );
        }
        Vec::new()
    }

    /// What waited for the client, for the end of a handshake; says what was lost meanwhile.
    fn drain_to_phone(&mut self) -> Vec<proto::FromRadio> {
        let (msgs, lost) = self.to_phone.drain();
        if !lost.is_empty() {
            tracing::warn!(
                node = %self.profile.node,
                packets = lost.packets,
                queue_status = lost.queue_status,
                mqtt_proxy = lost.mqtt_proxy,
                notifications = lost.notifications,
                "while no client was reading, the to-phone queues dropped these"
            );
        }
        msgs
    }

    /// What the to-phone queues dropped since the device started.
    pub fn to_phone_drops(&self) -> ToPhoneDrops {
        self.to_phone.dropped()
    }

    /// What the MQTT client proxy refused since the device started.
    pub fn downlink_drops(&self) -> DownlinkDrops {
        self.downlink_drops
    }

    /// `MeshService::loop`: once the transmit queue has room again after the last queue status
    /// for the client said it was full, a status of its own says so (queued like any other).
    /// Call it whenever the world may have moved the queue.
    pub fn service_loop(&mut self, status: RadioStatus) -> Vec<proto::FromRadio> {
        if self.last_status_free == 0 && status.tx_queue_free != 0 {
            return self.queue_status_for_phone(0, status.tx_queue_free, 0);
        }
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

    /// A queue status for the client (`MeshService::sendQueueStatusToPhone`): sent to a live
    /// client, otherwise kept with the other statuses; either way it becomes the "last status"
    /// that decides whether room is announced later.
    fn queue_status_for_phone(
        &mut self,
        res: i32,
        free: usize,
        mesh_packet_id: u32,
    ) -> Vec<proto::FromRadio> {
        self.last_status_free = free.min(TX_QUEUE_LEN);
        self.send_or_keep(queue_status(res, free, mesh_packet_id))
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
