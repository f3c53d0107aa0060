//! The simulated RF world: nodes, who hears whom, airtime, loss, managed flooding and
//! acknowledgements. Pure: no clock, no socket, no task.
//!
//! Time is a [`Duration`] since the simulation started ("sim time"). Every input carries
//! `now`; the world never reads a clock. Its outputs are [`WorldEvent`]s, taken with
//! [`World::poll_event`], and its next deadline is [`World::poll_timeout`]. A driver calls
//! [`World::handle_timeout`] when that deadline passes (quinn-proto's shape).
//!
//! What happens to one packet:
//!
//! | step | rule |
//! |------|------|
//! | originate | a direct message of a node with PKI is encrypted with the destination's public key (`channel` = 0; refused when that key is unknown), anything else with the channel key (`channel` becomes the 8-bit hash); queued after a short random contention delay |
//! | transmit | a node sends one packet at a time, and waits while it hears someone else; the sender is busy for `time_on_air` |
//! | receive | each neighbour gets it at the end of the airtime, unless lost (per reception, seeded) |
//! | dedup | a (from, id) already seen is dropped; a client with a queued relay of it cancels that relay |
//! | decode | a PKI direct message to the node with its own key and the sender's; else the channels; a node with PKI rejects a channel-key text addressed to it ("legacy DM"); NodeInfo teaches public keys (the `keys` module) |
//! | relay | when `hop_limit > 0`, not from or to the node, id not 0, and the role relays: a copy with `hop_limit - 1` and `relay_node` = own last byte, after a role- and SNR-dependent delay |
//! | ack | a node that receives a direct message with `want_ack` answers with a ROUTING_APP packet (`request_id` = the id), on the channel it came on (index 0 for PKI), always with the channel key; one it cannot decode gets a NAK on the primary channel: `PKI_UNKNOWN_PUBKEY` for a PKI message from a node whose key it lacks, else `NO_CHANNEL` |
//! | retry | the originator of a reliable packet retransmits it up to 3 times until an ACK (direct message) or an overheard relay (broadcast: implicit ACK), then gives up with a NAK |
//!
//! Simplifications: no collisions and no half-duplex loss (loss is the only impairment);
//! links are symmetric with a fixed SNR each; next-hop routing is not modelled (every
//! direct message is flooded, as on its last retry in the firmware). PKI follows firmware
//! v2.7.26 (`Router.cpp` `perhapsEncode`/`perhapsDecode`, `ReliableRouter::sniffReceived`);
//! the PKI rules themselves are in `world/pki.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use mesh_core::packet::HOP_MAX;
use mesh_core::proto::mesh_packet::Priority;
use mesh_core::proto::routing::Error as RoutingError;
use mesh_core::{Dedup, ModemPreset, NodeId, Packet, PacketId, Seen, proto};
use prost::Message;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::channels::ChannelTable;
use super::config::{NodeRole, SimConfig, TrafficConfig};
use super::keys::Keyring;

mod pki;

/// Packets a radio's transmit queue holds (`MAX_TX_QUEUE`), reported as `QueueStatus.maxlen`.
pub const TX_QUEUE_LEN: usize = 16;
/// The hop limit packets start with (`HOP_RELIABLE`).
pub const DEFAULT_HOP_LIMIT: u8 = 3;
/// Retransmissions of our own reliable packets before giving up (`NUM_RELIABLE_RETX`).
pub const RELIABLE_RETRIES: u8 = 3;
/// Largest LoRa frame (`MAX_LORA_PAYLOAD_LEN`): 16 bytes of header plus the encrypted `Data`.
pub const MAX_LORA_FRAME: usize = mesh_core::packet::MAX_LORA_FRAME;
/// Contention window bounds, as powers of two (`CWmin`, `CWmax`).
const CW_MIN: u32 = 3;
const CW_MAX: u32 = 8;
/// The SNR range mapped onto the contention window for relays.
const SNR_MIN: f32 = -20.0;
const SNR_MAX: f32 = 10.0;
/// The firmware's allowance for processing in the retransmission timeout.
const PROCESSING_TIME: Duration = Duration::from_millis(4500);
/// Channel utilisation is the busy share of this window (as the firmware reports it).
const UTILIZATION_WINDOW: Duration = Duration::from_secs(60);
/// A node's own transmit airtime is reported over this window (`air_util_tx`).
const AIR_UTIL_TX_WINDOW: Duration = Duration::from_secs(3600);
/// How long a node remembers a (from, id), and how many it remembers.
const DEDUP_WINDOW: Duration = Duration::from_secs(600);
const DEDUP_CAPACITY: usize = 512;
/// Unix time of sim time zero when the driver does not give one (2026-01-01T00:00:00Z).
pub const DEFAULT_EPOCH_UNIX: u32 = 1_767_225_600;

/// Chat lines the virtual people send, picked by the seeded generator.
const PHRASES: &[&str] = &[
    "Water point at the school is open until 6pm",
    "Anyone have a spare 12V battery for the clinic fridge?",
    "Bakery has bread left, come by before 5",
    "Road to the ridge is blocked by a fallen tree",
    "Generator at the community hall is running, phones can charge there",
    "Checking in: all fine on Hill Street",
    "Need two volunteers to carry water to the elderly on Oak Lane",
    "Power back on the east side",
    "The pharmacy opens tomorrow at 9",
    "Who can lend a ladder? Gutter blocked at number 12",
    "Soup kitchen at the church at noon",
    "Radio check, how do you read me?",
    "Mobile network down again, use the mesh",
    "Found a brown dog near the bridge, anyone missing one?",
    "Meeting at the town square at 7 to plan the week",
    "Solar panel on the water tower relay cleaned",
    "Flood warning: keep away from the river path",
    "Bus to the hospital leaves at 10 from the market",
    "Thanks everyone for the help today!",
    "Ops: next check-in at the top of the hour",
    "First aid kit restocked at the library",
    "Battery low here, going quiet until tomorrow",
    "Seeds available at the garden plots, free",
    "Is the north road passable by car?",
];

/// What a transmission is, for events and queue handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxKind {
    /// A packet the node itself sends for the first time.
    Originated,
    /// A repeat of the node's own reliable packet, no ACK having come.
    Retransmission,
    /// Someone else's packet, rebroadcast.
    Relay,
    /// An acknowledgement of a direct message.
    Ack,
}

/// Something that happened in the world.
// Packets are carried inline: events are taken once and moved on, so boxing them would only
// add an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum WorldEvent {
    /// A node started transmitting.
    Transmitted {
        /// When it started.
        at: Duration,
        /// The mesh it happened in.
        mesh: String,
        /// The transmitting node.
        node: NodeId,
        /// The packet as on the air (encrypted, `channel` = hash).
        packet: Packet,
        /// How long it occupies the channel.
        airtime: Duration,
        /// Why it was sent.
        kind: TxKind,
    },
    /// A node received a packet it had not seen before.
    Received {
        /// When the reception completed.
        at: Duration,
        /// The receiving node.
        node: NodeId,
        /// The packet as received: encrypted, with `rx_time`, `rx_snr` and `rx_rssi` set.
        packet: Packet,
        /// The same as the node reads it: with a channel key (`channel` = local index), or,
        /// for a PKI direct message to it, with its key and the sender's (`pki_encrypted`,
        /// `public_key` = the sender's key, `channel` 0). `None` when it cannot read it, or
        /// refuses to (a legacy DM).
        decoded: Option<Packet>,
    },
    /// A node overheard a relay of its own reliable broadcast: an implicit ACK.
    ImplicitAck {
        /// When.
        at: Duration,
        /// The originator.
        node: NodeId,
        /// The acknowledged packet.
        id: PacketId,
        /// Its channel index.
        channel: u8,
    },
    /// A node gave up on its own reliable packet.
    Nak {
        /// When.
        at: Duration,
        /// The originator.
        node: NodeId,
        /// The packet given up on.
        id: PacketId,
        /// Its channel index.
        channel: u8,
        /// Why (`MAX_RETRANSMIT`).
        error: RoutingError,
    },
}

/// Why the world refused a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorldError {
    /// No such node.
    #[error("{0} is not a node of the simulated world")]
    UnknownNode(NodeId),
    /// No such channel in the node's mesh.
    #[error("{node} has no channel {index}: its mesh has channels 0..{count}")]
    NoChannel {
        /// The sender.
        node: NodeId,
        /// The bad index.
        index: u32,
        /// How many channels there are.
        count: usize,
    },
    /// The firmware refuses to send the packet (`perhapsEncode`): a direct message for a node
    /// whose public key is unknown, or PKI asked for where it cannot be done.
    #[error("{node} refuses to send packet {id} to {to}: {}", .error.as_str_name())]
    Refused {
        /// The sender.
        node: NodeId,
        /// The destination.
        to: NodeId,
        /// The packet.
        id: PacketId,
        /// The routing error the firmware reports (`PKI_SEND_FAIL_PUBLIC_KEY`, `PKI_FAILED`).
        error: RoutingError,
    },
    /// The packet does not fit a LoRa frame.
    #[error(
        "a packet of {len} bytes on the air does not fit a LoRa frame ({MAX_LORA_FRAME} bytes)"
    )]
    TooLarge {
        /// Its size on the air.
        len: usize,
    },
    /// The packet has no plaintext payload to encrypt.
    #[error("the packet has no decoded payload")]
    NotDecoded,
    /// The node's transmit queue is full.
    #[error("{0}'s transmit queue is full ({TX_QUEUE_LEN} packets)")]
    QueueFull(NodeId),
}

/// A scheduled wake-up. Ordered by time, then by insertion, so runs are reproducible.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    /// When it fires.
    at: Duration,
    /// Insertion order, to break ties deterministically.
    seq: u64,
    /// What to do.
    kind: TimerKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// The node's transmission ends: deliver it.
    TxEnd(usize),
    /// Look at the node's queue again (a delay expired or the channel went quiet).
    Wake(usize),
    /// The retransmission timeout of a reliable packet, for one attempt.
    Retry {
        node: usize,
        id: PacketId,
        attempt: u8,
    },
    /// A traffic generator fires.
    Traffic { node: usize, kind: TrafficKind },
}

/// The kinds of packets a node generates by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TrafficKind {
    Text,
    Position,
    Telemetry,
    NodeInfo,
}

impl TrafficKind {
    const ALL: [TrafficKind; 4] = [
        TrafficKind::Text,
        TrafficKind::Position,
        TrafficKind::Telemetry,
        TrafficKind::NodeInfo,
    ];

    fn period(self, traffic: &TrafficConfig) -> Option<f64> {
        match self {
            TrafficKind::Text => traffic.text_every_secs,
            TrafficKind::Position => traffic.position_every_secs,
            TrafficKind::Telemetry => traffic.telemetry_every_secs,
            TrafficKind::NodeInfo => traffic.nodeinfo_every_secs,
        }
    }
}

/// One mesh: the shared medium.
struct MeshState {
    /// For events and lookups.
    name: String,
    /// Decides airtime and slot time.
    preset: ModemPreset,
    /// Probability that one reception is lost.
    loss: f64,
    /// The channels every node of the mesh shares.
    channels: ChannelTable,
    /// The contention slot: a little more than the time to detect activity on the channel.
    slot: Duration,
    /// Transmissions (start, end) of the last minute, in start order, for utilisation.
    busy: VecDeque<(Duration, Duration)>,
}

/// A link from one node to a neighbour, with what the neighbour measures.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// Index of the neighbour.
    to: usize,
    /// SNR the neighbour measures (dB); links are symmetric.
    snr: f32,
    /// RSSI the neighbour measures (dBm).
    rssi: i32,
}

/// A packet waiting in a node's transmit queue.
#[derive(Debug, Clone)]
struct Queued {
    /// As it will go on the air.
    packet: Packet,
    /// Why it is sent.
    kind: TxKind,
    /// Not before this time (contention delay).
    ready_at: Duration,
    /// Higher goes first among ready packets (ACKs before the rest).
    priority: i32,
    /// Insertion order among equal priorities.
    seq: u64,
}

/// A transmission in progress.
#[derive(Debug, Clone)]
struct OnAir {
    packet: Packet,
    kind: TxKind,
}

/// One of the node's own reliable packets, waiting for its ACK.
#[derive(Debug, Clone)]
struct Reliable {
    /// Its id.
    id: PacketId,
    /// Channel index, for the ACK or NAK reported to the client.
    channel: u8,
    /// As on the air, for retransmissions.
    packet: Packet,
    /// The plaintext of a PKI packet: the firmware encrypts each retransmission again, with
    /// a fresh extra nonce (its retry copy is taken before `perhapsEncode`).
    plain: Option<Packet>,
    /// Retransmissions left.
    retries_left: u8,
    /// Counts transmissions, so a stale retry timer is recognised.
    attempt: u8,
    /// Broadcasts are acknowledged implicitly, by an overheard relay.
    broadcast: bool,
}

/// Per-node state.
struct NodeState {
    /// Node number.
    id: NodeId,
    /// Index of its mesh.
    mesh: usize,
    /// Relaying behaviour.
    role: NodeRole,
    /// Names, hardware and public key, announced in NodeInfo packets.
    user: proto::User,
    /// Its key pair (if it has PKI) and the public keys it learned: what PKI direct messages
    /// need at both ends.
    keys: Keyring,
    /// Whom it hears (and who hears it), with link quality.
    neighbours: Vec<Link>,
    /// (from, id) already handled.
    dedup: Dedup,
    /// Transmit queue.
    queue: Vec<Queued>,
    /// The transmission in progress, if any.
    on_air: Option<OnAir>,
    /// It hears someone until then, and does not transmit before.
    rx_busy_until: Duration,
    /// A wake-up is scheduled for then; avoids piling up timers.
    wake_at: Option<Duration>,
    /// Own reliable packets awaiting an ACK.
    reliable: Vec<Reliable>,
    /// Own transmissions (start, end) of the last hour, for `air_util_tx`.
    tx_log: VecDeque<(Duration, Duration)>,
    /// Low bits of generated packet ids.
    counter: u32,
    /// Generators, if the node has any.
    traffic: Option<TrafficConfig>,
    /// Battery level in percent, for generated telemetry.
    battery: f32,
    /// Where it is (degrees), for generated positions.
    position: (f64, f64),
}

/// The whole simulated RF world. See the module doc.
pub struct World {
    /// The meshes, in config order.
    meshes: Vec<MeshState>,
    /// The nodes, in config order.
    nodes: Vec<NodeState>,
    /// Node number → index in `nodes`.
    index: HashMap<NodeId, usize>,
    /// Pending wake-ups.
    timers: BinaryHeap<Reverse<Timer>>,
    /// Next timer or queue sequence number.
    seq: u64,
    /// Sim time of the last input; never goes backwards.
    now: Duration,
    /// An arbitrary origin for the `Instant`s that `Dedup` wants; only differences matter.
    anchor: Instant,
    /// Unix time at sim time zero, for `rx_time` and generated timestamps.
    epoch_unix: u32,
    /// Every random choice comes from here, seeded from the config.
    rng: StdRng,
    /// The extra nonces of PKI packets, seeded from the config; apart from `rng` so that PKI
    /// leaves every other random choice of a run as it was.
    pki_rng: StdRng,
    /// Events not yet taken by the driver.
    events: VecDeque<WorldEvent>,
}

impl World {
    /// Builds the world of a validated config, with sim time zero at [`DEFAULT_EPOCH_UNIX`].
    pub fn new(config: &SimConfig) -> World {
        World::with_epoch(config, DEFAULT_EPOCH_UNIX)
    }

    /// Builds the world with sim time zero at the given Unix time.
    pub fn with_epoch(config: &SimConfig, epoch_unix: u32) -> World {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut meshes = Vec::new();
        let mut nodes = Vec::new();
        let mut index = HashMap::new();
        for (m, mesh) in config.meshes.iter().enumerate() {
            let symbol = mesh.preset.params().symbol_time().as_secs_f64();
            // Where the neighbourhood is, for generated positions (degrees).
            let origin = (45.7640 + 0.05 * m as f64, 4.8357 + 0.08 * m as f64);
            meshes.push(MeshState {
                name: mesh.name.clone(),
                preset: mesh.preset,
                loss: mesh.loss,
                channels: ChannelTable::new(&mesh.channels, mesh.preset),
                slot: Duration::from_secs_f64(2.5 * symbol + 0.0076),
                busy: VecDeque::new(),
            });
            for node in &mesh.nodes {
                index.insert(node.id, nodes.len());
                let position = (
                    origin.0 + rng.random_range(-0.01..0.01),
                    origin.1 + rng.random_range(-0.015..0.015),
                );
                nodes.push(NodeState {
                    id: node.id,
                    mesh: m,
                    role: node.role,
                    user: node.user(config.seed),
                    keys: Keyring::new(node.private_key(config.seed)),
                    neighbours: Vec::new(),
                    dedup: Dedup::new(DEDUP_WINDOW, DEDUP_CAPACITY),
                    queue: Vec::new(),
                    on_air: None,
                    rx_busy_until: Duration::ZERO,
                    wake_at: None,
                    reliable: Vec::new(),
                    tx_log: VecDeque::new(),
                    counter: 0,
                    traffic: node.traffic.clone(),
                    battery: rng.random_range(55.0..100.0),
                    position,
                });
            }
        }
        // Every node knows the public keys of its mesh from the start, as after a long uptime
        // (the attached devices' node databases start the same way).
        for mesh in &config.meshes {
            for node in &mesh.nodes {
                let me = index[&node.id];
                for other in mesh.nodes.iter().filter(|o| o.id != node.id) {
                    nodes[me].keys.learn(other.id, &other.user(config.seed));
                }
            }
        }
        // Links: each node's list (or everyone in its mesh), made symmetric.
        let mut pairs = BTreeSet::new();
        for mesh in &config.meshes {
            for node in &mesh.nodes {
                let a = index[&node.id];
                let heard: Vec<usize> = match &node.neighbours {
                    Some(list) => list.iter().filter_map(|n| index.get(n).copied()).collect(),
                    None => mesh.nodes.iter().map(|n| index[&n.id]).collect(),
                };
                for b in heard.into_iter().filter(|&b| b != a) {
                    pairs.insert((a.min(b), a.max(b)));
                }
            }
        }
        for (a, b) in pairs {
            // SNR in quarter dB, as radios report it; RSSI follows it loosely.
            let snr = (rng.random_range(-15.0f32..9.0) * 4.0).round() / 4.0;
            let rssi = -118 + (snr * 2.5) as i32 + rng.random_range(-4..=4);
            nodes[a].neighbours.push(Link { to: b, snr, rssi });
            nodes[b].neighbours.push(Link { to: a, snr, rssi });
        }
        let mut world = World {
            meshes,
            nodes,
            index,
            timers: BinaryHeap::new(),
            seq: 0,
            now: Duration::ZERO,
            anchor: Instant::now(),
            epoch_unix,
            rng,
            pki_rng: StdRng::seed_from_u64(config.seed ^ 0x5049_4b49),
            events: VecDeque::new(),
        };
        for node in 0..world.nodes.len() {
            let Some(traffic) = world.nodes[node].traffic.clone() else {
                continue;
            };
            for kind in TrafficKind::ALL {
                let phase = world.rng.random_range(0.0..1.0);
                if let Some(first) = kind.period(&traffic).and_then(|p| secs(p * phase)) {
                    world.schedule(first, TimerKind::Traffic { node, kind });
                }
            }
        }
        world
    }

    /// Sim time of the last input.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Unix time (seconds) at a sim time, for `rx_time` and similar fields.
    pub fn unix_time(&self, at: Duration) -> u32 {
        self.epoch_unix.saturating_add(at.as_secs() as u32)
    }

    /// Whether the node exists.
    pub fn contains(&self, node: NodeId) -> bool {
        self.index.contains_key(&node)
    }

    /// The name of the node's mesh.
    pub fn mesh_of(&self, node: NodeId) -> Option<&str> {
        let i = *self.index.get(&node)?;
        Some(&self.meshes[self.nodes[i].mesh].name)
    }

    /// Free slots in the node's transmit queue (0 for an unknown node).
    pub fn tx_queue_free(&self, node: NodeId) -> usize {
        self.index.get(&node).map_or(0, |&i| {
            TX_QUEUE_LEN.saturating_sub(self.nodes[i].queue.len())
        })
    }

    /// The node sends a packet it originates (what an attached device does with its client's
    /// packets). `packet` is decoded, with `channel` = index; `from` is set to the node, an
    /// unset id is generated, and `hop_start` follows `hop_limit`. A reliable (`want_ack`)
    /// packet is retransmitted until acknowledged, which is reported as
    /// [`WorldEvent::ImplicitAck`] for a broadcast, as the destination's ACK packet arriving
    /// ([`WorldEvent::Received`]) for a direct message, or as [`WorldEvent::Nak`].
    pub fn transmit(
        &mut self,
        node: NodeId,
        packet: Packet,
        now: Duration,
    ) -> Result<PacketId, WorldError> {
        self.handle_timeout(now);
        let idx = *self.index.get(&node).ok_or(WorldError::UnknownNode(node))?;
        if self.nodes[idx].queue.len() >= TX_QUEUE_LEN {
            return Err(WorldError::QueueFull(node));
        }
        self.originate(idx, packet)
    }

    /// Node `node` takes `packet` (encrypted, as its sender made it) from MQTT downlink: as if
    /// heard over the air, so it is deduplicated, handed to the node's client, and
    /// rebroadcast with one hop less when its hop limit allows. Returns false for a duplicate.
    pub fn receive_from_mqtt(
        &mut self,
        node: NodeId,
        packet: Packet,
        now: Duration,
    ) -> Result<bool, WorldError> {
        self.handle_timeout(now);
        let idx = *self.index.get(&node).ok_or(WorldError::UnknownNode(node))?;
        let at = self.instant(now);
        if self.nodes[idx]
            .dedup
            .contains(packet.from(), packet.id(), at)
        {
            return Ok(false);
        }
        let link = Link {
            to: idx,
            snr: 0.0,
            rssi: 0,
        };
        self.receive(idx, &packet, link);
        Ok(true)
    }

    /// A node says `text` to `to` on channel `index` now (a direct message asks for an ACK).
    pub fn send_text(
        &mut self,
        from: NodeId,
        to: NodeId,
        channel: u8,
        text: &str,
        now: Duration,
    ) -> Result<PacketId, WorldError> {
        self.handle_timeout(now);
        let idx = *self.index.get(&from).ok_or(WorldError::UnknownNode(from))?;
        let packet = text_packet(to, channel, text);
        if self.nodes[idx].queue.len() >= TX_QUEUE_LEN {
            return Err(WorldError::QueueFull(from));
        }
        self.originate(idx, packet)
    }

    /// When the world next needs [`World::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.peek().map(|Reverse(t)| t.at)
    }

    /// Runs everything due at or before `now`, each at its own sim time.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(Reverse(timer)) = self.timers.peek() {
            if timer.at > now {
                break;
            }
            let Some(Reverse(timer)) = self.timers.pop() else {
                break;
            };
            self.now = self.now.max(timer.at);
            self.fire(timer.kind);
        }
        self.now = self.now.max(now);
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<WorldEvent> {
        self.events.pop_front()
    }

    /// Percent of the last minute the mesh's channel was busy (any transmission), at `now`.
    pub fn channel_utilization(&self, mesh: &str, now: Duration) -> Option<f32> {
        let mesh = self.meshes.iter().find(|m| m.name == mesh)?;
        Some(busy_percent(
            &mesh.busy,
            UTILIZATION_WINDOW,
            now.max(self.now),
        ))
    }

    /// Channel utilisation of the node's mesh.
    pub fn node_channel_utilization(&self, node: NodeId, now: Duration) -> Option<f32> {
        let i = *self.index.get(&node)?;
        let busy = &self.meshes[self.nodes[i].mesh].busy;
        Some(busy_percent(busy, UTILIZATION_WINDOW, now.max(self.now)))
    }

    /// Percent of the last hour the node spent transmitting, at `now`.
    pub fn air_util_tx(&self, node: NodeId, now: Duration) -> Option<f32> {
        let i = *self.index.get(&node)?;
        Some(busy_percent(
            &self.nodes[i].tx_log,
            AIR_UTIL_TX_WINDOW,
            now.max(self.now),
        ))
    }

    // ---- internals ----

    fn schedule(&mut self, at: Duration, kind: TimerKind) {
        self.seq += 1;
        self.timers.push(Reverse(Timer {
            at,
            seq: self.seq,
            kind,
        }));
    }

    fn instant(&self, at: Duration) -> Instant {
        self.anchor + at
    }

    fn next_id(&mut self, idx: usize) -> PacketId {
        let node = &mut self.nodes[idx];
        node.counter = node.counter.wrapping_add(1);
        let counter = node.counter;
        PacketId::generate(self.rng.random(), counter)
    }

    fn fire(&mut self, kind: TimerKind) {
        match kind {
            TimerKind::TxEnd(idx) => self.end_transmission(idx),
            TimerKind::Wake(idx) => {
                if self.nodes[idx].wake_at.is_some_and(|t| t <= self.now) {
                    self.nodes[idx].wake_at = None;
                }
                self.try_start(idx);
            }
            TimerKind::Retry { node, id, attempt } => self.retry(node, id, attempt),
            TimerKind::Traffic { node, kind } => self.generate(node, kind),
        }
    }

    /// Queues a packet the node originates. See [`World::transmit`].
    fn originate(&mut self, idx: usize, mut packet: Packet) -> Result<PacketId, WorldError> {
        let node_id = self.nodes[idx].id;
        let mesh = self.nodes[idx].mesh;
        let index = packet.channel();
        let count = self.meshes[mesh].channels.len();
        if index as usize >= count {
            return Err(WorldError::NoChannel {
                node: node_id,
                index,
                count,
            });
        }
        let raw_len = match packet.payload() {
            mesh_core::Payload::Decoded { raw, .. } => raw.len(),
            mesh_core::Payload::Encrypted(_) => return Err(WorldError::NotDecoded),
        };
        if raw_len + mesh_core::packet::ON_AIR_HEADER > MAX_LORA_FRAME {
            return Err(WorldError::TooLarge {
                len: raw_len + mesh_core::packet::ON_AIR_HEADER,
            });
        }
        let id = if packet.id().is_unset() {
            self.next_id(idx)
        } else {
            packet.id()
        };
        let priority = match Priority::try_from(packet.meta().priority) {
            Ok(Priority::Unset) | Err(_) if packet.want_ack() => Priority::Reliable as i32,
            Ok(Priority::Unset) | Err(_) => Priority::Default as i32,
            Ok(p) => p as i32,
        };
        {
            let m = packet.meta_mut();
            m.from = node_id.get();
            m.id = id.get();
            m.hop_limit = m.hop_limit.min(u32::from(HOP_MAX));
            m.hop_start = m.hop_limit;
            m.relay_node = 0;
            m.next_hop = 0;
        }
        let encrypted = self.encode(idx, &packet)?;
        let now = self.now;
        let anchor = self.instant(now);
        self.nodes[idx].dedup.observe(node_id, id, anchor);
        let broadcast = packet.to().is_broadcast();
        let mut on_air = air_form(&encrypted);
        if broadcast {
            // The firmware clears want_ack on the air for broadcasts: nobody answers them.
            on_air.meta_mut().want_ack = false;
        }
        if packet.want_ack() {
            self.nodes[idx].reliable.push(Reliable {
                id,
                channel: index as u8,
                packet: on_air.clone(),
                plain: encrypted.meta().pki_encrypted.then(|| packet.clone()),
                retries_left: RELIABLE_RETRIES,
                attempt: 0,
                broadcast,
            });
        }
        let delay = self.originate_delay(mesh);
        self.enqueue(idx, on_air, TxKind::Originated, now + delay, priority);
        Ok(id)
    }

    fn enqueue(
        &mut self,
        idx: usize,
        packet: Packet,
        kind: TxKind,
        ready_at: Duration,
        priority: i32,
    ) {
        self.seq += 1;
        let seq = self.seq;
        // A radio sends packets of equal priority in the order it queued them: a later one
        // never becomes ready before an earlier one.
        let ready_at = self.nodes[idx]
            .queue
            .iter()
            .filter(|q| q.priority == priority)
            .map(|q| q.ready_at)
            .fold(ready_at, Duration::max);
        self.nodes[idx].queue.push(Queued {
            packet,
            kind,
            ready_at,
            priority,
            seq,
        });
        self.try_start(idx);
    }

    fn schedule_wake(&mut self, idx: usize, at: Duration) {
        if self.nodes[idx]
            .wake_at
            .is_some_and(|t| t <= at && t > self.now)
        {
            return;
        }
        self.nodes[idx].wake_at = Some(at);
        self.schedule(at, TimerKind::Wake(idx));
    }

    /// Starts the node's next transmission if it is free, hears nobody, and a packet is ready.
    fn try_start(&mut self, idx: usize) {
        let now = self.now;
        let node = &self.nodes[idx];
        if node.on_air.is_some() || node.queue.is_empty() {
            return;
        }
        if node.rx_busy_until > now {
            let at = node.rx_busy_until;
            self.schedule_wake(idx, at);
            return;
        }
        let best = node
            .queue
            .iter()
            .enumerate()
            .filter(|(_, q)| q.ready_at <= now)
            .max_by_key(|(_, q)| (q.priority, Reverse(q.seq)))
            .map(|(i, _)| i);
        let Some(pos) = best else {
            let next = node.queue.iter().map(|q| q.ready_at).min().unwrap_or(now);
            self.schedule_wake(idx, next);
            return;
        };
        let queued = self.nodes[idx].queue.remove(pos);
        let mesh = self.nodes[idx].mesh;
        let airtime = self.meshes[mesh]
            .preset
            .time_on_air(queued.packet.on_air_len());
        let ends = now + airtime;
        let m = &mut self.meshes[mesh];
        prune(&mut m.busy, UTILIZATION_WINDOW, now);
        m.busy.push_back((now, ends));
        let node = &mut self.nodes[idx];
        prune(&mut node.tx_log, AIR_UTIL_TX_WINDOW, now);
        node.tx_log.push_back((now, ends));
        node.on_air = Some(OnAir {
            packet: queued.packet.clone(),
            kind: queued.kind,
        });
        let listeners: Vec<usize> = node.neighbours.iter().map(|l| l.to).collect();
        for n in listeners {
            let rx = &mut self.nodes[n].rx_busy_until;
            *rx = (*rx).max(ends);
        }
        self.events.push_back(WorldEvent::Transmitted {
            at: now,
            mesh: self.meshes[mesh].name.clone(),
            node: self.nodes[idx].id,
            packet: queued.packet,
            airtime,
            kind: queued.kind,
        });
        self.schedule(ends, TimerKind::TxEnd(idx));
    }

    fn end_transmission(&mut self, idx: usize) {
        let Some(on_air) = self.nodes[idx].on_air.take() else {
            return;
        };
        let mesh = self.nodes[idx].mesh;
        let loss = self.meshes[mesh].loss;
        let links = self.nodes[idx].neighbours.clone();
        for link in &links {
            if loss > 0.0 && self.rng.random::<f64>() < loss {
                continue;
            }
            self.receive(link.to, &on_air.packet, *link);
        }
        if matches!(on_air.kind, TxKind::Originated | TxKind::Retransmission) {
            let id = on_air.packet.id();
            if let Some(r) = self.nodes[idx].reliable.iter().find(|r| r.id == id) {
                let attempt = r.attempt;
                let at = self.now + self.retransmission_delay(mesh, &on_air.packet);
                self.schedule(
                    at,
                    TimerKind::Retry {
                        node: idx,
                        id,
                        attempt,
                    },
                );
            }
        }
        self.try_start(idx);
        for link in &links {
            self.try_start(link.to);
        }
    }

    /// Node `idx` hears `packet` over `link` (whose SNR and RSSI it measures).
    fn receive(&mut self, idx: usize, packet: &Packet, link: Link) {
        let now = self.now;
        let me = self.nodes[idx].id;
        if packet.from() == me {
            self.heard_own_packet(idx, packet.id());
            return;
        }
        let at = self.instant(now);
        if self.nodes[idx]
            .dedup
            .observe(packet.from(), packet.id(), at)
            == Seen::Duplicate
        {
            self.heard_duplicate(idx, packet, link.snr);
            return;
        }
        let mut heard = packet.clone();
        {
            let m = heard.meta_mut();
            m.rx_time = self.unix_time(now);
            m.rx_snr = link.snr;
            m.rx_rssi = link.rssi;
        }
        let decoded = self.decode(idx, &heard);
        if let Some(d) = &decoded {
            self.learn(idx, d);
        }
        self.events.push_back(WorldEvent::Received {
            at: now,
            node: me,
            packet: heard,
            decoded: decoded.clone(),
        });
        if packet.to() == me {
            self.addressed(idx, packet, decoded.as_ref());
            return;
        }
        if self.should_relay(idx, packet) {
            self.queue_relay(idx, packet, link.snr);
        }
    }

    /// A relay of the node's own packet came back: for a reliable broadcast, that is the
    /// implicit ACK.
    fn heard_own_packet(&mut self, idx: usize, id: PacketId) {
        let node = &mut self.nodes[idx];
        let Some(pos) = node.reliable.iter().position(|r| r.id == id && r.broadcast) else {
            return;
        };
        let r = node.reliable.remove(pos);
        node.queue
            .retain(|q| !(q.kind == TxKind::Retransmission && q.packet.id() == id));
        self.events.push_back(WorldEvent::ImplicitAck {
            at: self.now,
            node: node.id,
            id,
            channel: r.channel,
        });
    }

    fn heard_duplicate(&mut self, idx: usize, packet: &Packet, snr: f32) {
        let me = self.nodes[idx].id;
        // Straight from the originator, nothing consumed: a retransmission.
        let from_originator = packet.hop_start() > 0 && packet.hop_limit() == packet.hop_start();
        let same = |q: &Queued| {
            q.kind == TxKind::Relay
                && q.packet.from() == packet.from()
                && q.packet.id() == packet.id()
        };
        let node = &mut self.nodes[idx];
        if !from_originator {
            if node.role.cancels_duplicates() {
                // Someone else relayed it first: our copy would add nothing.
                node.queue.retain(|q| !same(q));
            }
            return;
        }
        // The originator repeats itself: our relay, or our ACK, may have been lost.
        if packet.to() == me {
            let decoded = self.decode(idx, packet);
            self.addressed(idx, packet, decoded.as_ref());
        } else if !self.nodes[idx].queue.iter().any(same) && self.should_relay(idx, packet) {
            self.queue_relay(idx, packet, snr);
        }
    }

    /// A decoded packet addressed to this node: ACKs end our retries; requests for an ACK
    /// get one.
    fn handle_addressed(&mut self, idx: usize, packet: &Packet) {
        let Some(data) = packet.data() else {
            return;
        };
        if data.portnum == proto::PortNum::RoutingApp as i32 {
            let id = PacketId::new(data.request_id);
            let node = &mut self.nodes[idx];
            node.reliable.retain(|r| r.id != id || r.broadcast);
            node.queue
                .retain(|q| !(q.kind == TxKind::Retransmission && q.packet.id() == id));
            self.on_routing_error(idx, packet, data);
            return;
        }
        if packet.want_ack() {
            self.queue_ack(idx, packet);
        }
    }

    fn queue_ack(&mut self, idx: usize, request: &Packet) {
        self.queue_routing(idx, request, RoutingError::None, request.channel());
    }

    /// An ACK (`RoutingError::None`) or NAK of `request`, on channel index `channel`, with the
    /// channel key (ROUTING_APP is never PKI-encrypted).
    fn queue_routing(&mut self, idx: usize, request: &Packet, error: RoutingError, channel: u32) {
        let routing = proto::Routing {
            variant: Some(proto::routing::Variant::ErrorReason(error as i32)),
        };
        let data = proto::Data {
            portnum: proto::PortNum::RoutingApp as i32,
            payload: routing.encode_to_vec(),
            request_id: request.id().get(),
            ..Default::default()
        };
        let hop_limit = hop_limit_for_response(request.hop_start(), request.hop_limit());
        let id = self.next_id(idx);
        let meta = proto::MeshPacket {
            from: self.nodes[idx].id.get(),
            to: request.from().get(),
            id: id.get(),
            channel,
            hop_limit: u32::from(hop_limit),
            hop_start: u32::from(hop_limit),
            ..Default::default()
        };
        let mesh = self.nodes[idx].mesh;
        let Some(encrypted) = self.meshes[mesh]
            .channels
            .encrypt(&Packet::from_data(meta, data), channel as usize)
        else {
            return;
        };
        let anchor = self.instant(self.now);
        let me = self.nodes[idx].id;
        self.nodes[idx].dedup.observe(me, id, anchor);
        let ready = self.now + self.originate_delay(mesh);
        self.enqueue(
            idx,
            air_form(&encrypted),
            TxKind::Ack,
            ready,
            Priority::Ack as i32,
        );
    }

    fn should_relay(&self, idx: usize, packet: &Packet) -> bool {
        let node = &self.nodes[idx];
        let next_hop = packet.meta().next_hop;
        node.role.relays()
            && packet.hop_limit() > 0
            && !packet.id().is_unset()
            && packet.to() != node.id
            && packet.from() != node.id
            && packet.to() != NodeId::BROADCAST_NO_LORA
            && (next_hop == 0 || next_hop == u32::from(node.id.last_byte()))
    }

    fn queue_relay(&mut self, idx: usize, packet: &Packet, snr: f32) {
        if self.nodes[idx].queue.len() >= TX_QUEUE_LEN {
            tracing::debug!(node = %self.nodes[idx].id, id = %packet.id(), "transmit queue full, relay dropped");
            return;
        }
        let mut copy = air_form(packet);
        {
            let m = copy.meta_mut();
            m.hop_limit = m.hop_limit.saturating_sub(1);
            m.relay_node = u32::from(self.nodes[idx].id.last_byte());
        }
        let delay = self.relay_delay(idx, snr);
        let ready = self.now + delay;
        self.enqueue(idx, copy, TxKind::Relay, ready, Priority::Default as i32);
    }

    /// How long a relay waits (`getTxDelayMsecWeighted`): routers early, clients after them
    /// with weak-SNR listeners first, late routers after everyone.
    fn relay_delay(&mut self, idx: usize, snr: f32) -> Duration {
        let slot = self.meshes[self.nodes[idx].mesh].slot;
        let span = (CW_MAX - CW_MIN) as f32;
        let cw = ((snr - SNR_MIN) * span / (SNR_MAX - SNR_MIN) + CW_MIN as f32)
            .clamp(CW_MIN as f32, CW_MAX as f32) as u32;
        let slots = match self.nodes[idx].role {
            NodeRole::Router | NodeRole::Repeater => self.rng.random_range(0..=2 * cw),
            NodeRole::RouterLate => 2 * CW_MAX + (1 << CW_MAX) + self.rng.random_range(0..=2 * cw),
            NodeRole::Client | NodeRole::ClientMute => {
                2 * CW_MAX + self.rng.random_range(0..(1u32 << cw))
            }
        };
        slot * slots
    }

    /// Contention window size from the channel utilisation (0..100% → CWmin..CWmax).
    fn util_cw(&self, mesh: usize) -> u32 {
        let util = busy_percent(&self.meshes[mesh].busy, UTILIZATION_WINDOW, self.now);
        let cw = CW_MIN as f32 + util / 100.0 * (CW_MAX - CW_MIN) as f32;
        (cw as u32).clamp(CW_MIN, CW_MAX)
    }

    /// The random wait before a packet of our own (`getTxDelayMsec`).
    fn originate_delay(&mut self, mesh: usize) -> Duration {
        let cw = self.util_cw(mesh);
        let slots = self.rng.random_range(0..(1u32 << cw));
        self.meshes[mesh].slot * slots
    }

    /// How long to wait for an ACK before retransmitting (`getRetransmissionMsec`).
    fn retransmission_delay(&self, mesh: usize, packet: &Packet) -> Duration {
        let m = &self.meshes[mesh];
        let airtime = m.preset.time_on_air(packet.on_air_len());
        let cw = self.util_cw(mesh);
        let slots = (1u32 << cw) + 2 * CW_MAX + (1u32 << ((CW_MAX + CW_MIN) / 2));
        airtime * 2 + m.slot * slots + PROCESSING_TIME
    }

    fn retry(&mut self, idx: usize, id: PacketId, attempt: u8) {
        let node = &mut self.nodes[idx];
        let Some(pos) = node
            .reliable
            .iter()
            .position(|r| r.id == id && r.attempt == attempt)
        else {
            return;
        };
        if node.reliable[pos].retries_left == 0 {
            let r = node.reliable.remove(pos);
            self.events.push_back(WorldEvent::Nak {
                at: self.now,
                node: node.id,
                id,
                channel: r.channel,
                error: RoutingError::MaxRetransmit,
            });
            return;
        }
        let r = &mut node.reliable[pos];
        r.retries_left -= 1;
        r.attempt += 1;
        let (mut packet, plain) = (r.packet.clone(), r.plain.clone());
        if let Some(plain) = plain {
            match self.encode(idx, &plain) {
                Ok(again) => packet = air_form(&again),
                Err(e) => tracing::debug!(error = %e, "retransmission sent as before"),
            }
        }
        let now = self.now;
        self.enqueue(
            idx,
            packet,
            TxKind::Retransmission,
            now,
            Priority::Reliable as i32,
        );
    }

    fn generate(&mut self, idx: usize, kind: TrafficKind) {
        let Some(traffic) = self.nodes[idx].traffic.clone() else {
            return;
        };
        let jitter = self.rng.random_range(0.8..1.2);
        let Some(next) = kind.period(&traffic).and_then(|p| secs(p * jitter)) else {
            return;
        };
        self.schedule(self.now + next, TimerKind::Traffic { node: idx, kind });
        if self.nodes[idx].queue.len() >= TX_QUEUE_LEN {
            return;
        }
        let packet = match kind {
            TrafficKind::Text => {
                let text = PHRASES.choose(&mut self.rng).copied().unwrap_or("hello");
                text_packet(traffic.to, traffic.channel, text)
            }
            TrafficKind::Position => self.position_packet(idx),
            TrafficKind::Telemetry => self.telemetry_packet(idx),
            TrafficKind::NodeInfo => {
                let user = self.nodes[idx].user.clone();
                broadcast_packet(proto::PortNum::NodeinfoApp, user.encode_to_vec())
            }
        };
        if let Err(e) = self.originate(idx, packet) {
            tracing::debug!(node = %self.nodes[idx].id, error = %e, "generated packet not sent");
        }
    }

    fn position_packet(&mut self, idx: usize) -> Packet {
        let (lat, lon) = self.nodes[idx].position;
        let jitter = (
            self.rng.random_range(-0.0002..0.0002),
            self.rng.random_range(-0.0002..0.0002),
        );
        let position = proto::Position {
            latitude_i: Some(((lat + jitter.0) * 1e7) as i32),
            longitude_i: Some(((lon + jitter.1) * 1e7) as i32),
            altitude: Some(170 + self.rng.random_range(0..60)),
            time: self.unix_time(self.now),
            location_source: proto::position::LocSource::LocInternal as i32,
            precision_bits: 32,
            ..Default::default()
        };
        broadcast_packet(proto::PortNum::PositionApp, position.encode_to_vec())
    }

    fn telemetry_packet(&mut self, idx: usize) -> Packet {
        let now = self.now;
        let id = self.nodes[idx].id;
        let channel_utilization = self.node_channel_utilization(id, now).unwrap_or(0.0);
        let air_util_tx = self.air_util_tx(id, now).unwrap_or(0.0);
        let node = &mut self.nodes[idx];
        node.battery -= 0.4;
        if node.battery < 20.0 {
            node.battery = 100.0; // someone recharged it
        }
        let metrics = proto::DeviceMetrics {
            battery_level: Some(node.battery as u32),
            voltage: Some(3.3 + node.battery / 100.0 * 0.9),
            channel_utilization: Some(channel_utilization),
            air_util_tx: Some(air_util_tx),
            uptime_seconds: Some(now.as_secs() as u32),
        };
        let telemetry = proto::Telemetry {
            time: self.unix_time(now),
            variant: Some(proto::telemetry::Variant::DeviceMetrics(metrics)),
        };
        broadcast_packet(proto::PortNum::TelemetryApp, telemetry.encode_to_vec())
    }
}

/// A text on channel `channel`; a direct message asks for an ACK, as the apps do.
fn text_packet(to: NodeId, channel: u8, text: &str) -> Packet {
    let meta = proto::MeshPacket {
        to: to.get(),
        channel: u32::from(channel),
        hop_limit: u32::from(DEFAULT_HOP_LIMIT),
        want_ack: !to.is_broadcast(),
        ..Default::default()
    };
    // What the firmware originates always carries the bitfield (OK-to-MQTT off).
    let data = proto::Data {
        portnum: proto::PortNum::TextMessageApp as i32,
        payload: text.as_bytes().to_vec(),
        bitfield: Some(0),
        ..Default::default()
    };
    Packet::from_data(meta, data)
}

/// A broadcast on the primary channel with the default hop limit.
fn broadcast_packet(port: proto::PortNum, payload: Vec<u8>) -> Packet {
    let meta = proto::MeshPacket {
        to: NodeId::BROADCAST.get(),
        hop_limit: u32::from(DEFAULT_HOP_LIMIT),
        ..Default::default()
    };
    Packet::from_data(
        meta,
        proto::Data {
            portnum: port as i32,
            payload,
            bitfield: Some(0),
            ..Default::default()
        },
    )
}

/// Only what the 16-byte LoRa header carries, plus the payload: local fields (rx metadata,
/// priority) never go on the air.
fn air_form(packet: &Packet) -> Packet {
    let m = packet.meta();
    let meta = proto::MeshPacket {
        from: m.from,
        to: m.to,
        channel: m.channel,
        id: m.id,
        hop_limit: m.hop_limit,
        want_ack: m.want_ack,
        via_mqtt: m.via_mqtt,
        hop_start: m.hop_start,
        next_hop: m.next_hop,
        relay_node: m.relay_node,
        ..Default::default()
    };
    Packet::new(meta, packet.payload().clone())
}

/// The hop limit for an answer (`getHopLimitForResponse`): enough for the hops the request
/// took, with some margin, else the default.
fn hop_limit_for_response(hop_start: u8, hop_limit: u8) -> u8 {
    if hop_start == 0 {
        return DEFAULT_HOP_LIMIT;
    }
    let used = hop_start.saturating_sub(hop_limit);
    if used > DEFAULT_HOP_LIMIT {
        used
    } else if used + 2 < DEFAULT_HOP_LIMIT {
        used + 2
    } else {
        DEFAULT_HOP_LIMIT
    }
}

/// Seconds as a duration; `None` for what a validated config never holds (negative, NaN,
/// absurdly large), so an unchecked config cannot make the world panic.
fn secs(value: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(value).ok()
}

/// Drops intervals that ended before the window.
fn prune(intervals: &mut VecDeque<(Duration, Duration)>, window: Duration, now: Duration) {
    let start = now.saturating_sub(window);
    while intervals.front().is_some_and(|&(_, end)| end <= start) {
        intervals.pop_front();
    }
}

/// Percent of `window` before `now` covered by the (start-ordered) intervals.
fn busy_percent(
    intervals: &VecDeque<(Duration, Duration)>,
    window: Duration,
    now: Duration,
) -> f32 {
    let start = now.saturating_sub(window);
    let mut busy = Duration::ZERO;
    let mut covered_to = start;
    for &(s, e) in intervals {
        let s = s.max(covered_to);
        let e = e.min(now);
        if e > s {
            busy += e - s;
            covered_to = e;
        }
    }
    (busy.as_secs_f64() / window.as_secs_f64() * 100.0) as f32
}

#[cfg(test)]
mod tests;
