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
//!
//! This file holds the state and the driver's interface; each step's rules live apart,
//! roughly as the firmware splits them, so one can be read and checked against its source
//! without the others: `transmit` (the queue and the medium), `flood` (receive, dedup,
//! relay: `FloodingRouter`), `reliable` (ACKs, NAKs, retries: `ReliableRouter`), `pki`
//! (encode and decode), `airtime` (channel utilisation and the contention waits that follow
//! from it) and `traffic` (what the virtual people send).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use mesh_core::proto::routing::Error as RoutingError;
use mesh_core::{Dedup, ModemPreset, NodeId, Packet, PacketId, proto};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::channels::ChannelTable;
use super::config::{NodeRole, SimConfig, TrafficConfig};
use super::keys::Keyring;

mod airtime;
mod error;
mod flood;
mod pki;
mod reliable;
mod traffic;
mod transmit;

pub use error::WorldError;
use reliable::Reliable;
use traffic::{TrafficKind, text_packet};
use transmit::{OnAir, Queued};

// What world/tests.rs reaches through its `use super::*` since these moved to submodules.
#[cfg(test)]
use {prost::Message, reliable::hop_limit_for_response};

/// Packets a radio's transmit queue holds (`MAX_TX_QUEUE`), reported as `QueueStatus.maxlen`.
pub const TX_QUEUE_LEN: usize = 16;
/// The hop limit packets start with (`HOP_RELIABLE`).
pub const DEFAULT_HOP_LIMIT: u8 = 3;
/// Retransmissions of our own reliable packets before giving up (`NUM_RELIABLE_RETX`).
pub const RELIABLE_RETRIES: u8 = 3;
/// Largest LoRa frame (`MAX_LORA_PAYLOAD_LEN`): 16 bytes of header plus the encrypted `Data`.
pub const MAX_LORA_FRAME: usize = mesh_core::packet::MAX_LORA_FRAME;
/// How long a node remembers a (from, id), and how many it remembers.
const DEDUP_WINDOW: Duration = Duration::from_secs(600);
const DEDUP_CAPACITY: usize = 512;
/// Unix time of sim time zero when the driver does not give one (2026-01-01T00:00:00Z).
pub const DEFAULT_EPOCH_UNIX: u32 = 1_767_225_600;

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
        world.start_traffic();
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
}

#[cfg(test)]
mod tests;
