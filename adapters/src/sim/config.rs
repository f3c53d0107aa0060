//! The simulated world's configuration: meshes, their channels and nodes, which nodes are
//! served as Meshtastic devices, and what traffic the virtual people generate.
//!
//! It is plain serde, so the gateway loads it with figment like the rest of its config, and
//! [`SimConfig::validate`] checks everything serde cannot, naming the key, the bad value and
//! the fix. Every other part of the simulator assumes a validated config.

use std::collections::{HashMap, HashSet};

use mesh_core::proto::config::device_config::Role as ProtoRole;
use mesh_core::proto::config::lo_ra_config::RegionCode;
use mesh_core::{FREQUENCY_MHZ, ModemPreset, NodeId, PrivateKey, Psk, Root, TopicError, proto};
use serde::Deserialize;

/// The most channels a Meshtastic device holds (`MAX_NUM_CHANNELS`).
pub const MAX_CHANNELS: usize = 8;

/// Fastest simulated clock accepted (simulated seconds per real second).
pub const MAX_TIME_SCALE: f64 = 1_000_000.0;
/// Longest traffic period accepted, in simulated seconds (about 30 years).
pub const MAX_PERIOD_SECS: f64 = 1e9;

/// The demo world shipped with the binary (`archipel demo`, `archipel sim` without a file).
const DEMO_TOML: &str = include_str!("demo.toml");

/// A whole simulated world.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Simulated seconds per real second: 1.0 is real time, tests use large values so minutes
    /// of mesh life pass in a fraction of a second.
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// Seeds every random choice (losses, delays, generated texts, link qualities), so a run
    /// can be replayed.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The meshes; nodes of different meshes never hear each other.
    #[serde(default, rename = "mesh")]
    pub meshes: Vec<MeshConfig>,
}

/// One LoRa mesh: nodes sharing a modem preset and a channel table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// Name used in events, logs and `channel_utilization`.
    pub name: String,
    /// Modem preset, which decides airtime (and the default primary channel name).
    #[serde(default)]
    pub preset: ModemPreset,
    /// LoRa region the attached devices report (`US`, `EU_868`, ... as in the apps).
    #[serde(default = "default_region")]
    pub region: String,
    /// The frequency its radios are pinned to, in MHz, as `lora.override_frequency` (Gaulix:
    /// 869.4625). Absent: none, the radios use their preset's slot. Meshes never hear each
    /// other whatever their frequencies; this is what attached radios report.
    #[serde(default)]
    pub frequency_mhz: Option<f64>,
    /// The MQTT topic root its attached radios report and take downlink under (`msh/EU_868/FR`).
    /// Absent: what the firmware sets when a region is chosen, `msh/<REGION>`.
    #[serde(default)]
    pub mqtt_root: Option<String>,
    /// Probability that one reception (one transmitter, one listener) is lost.
    #[serde(default)]
    pub loss: f64,
    /// Channel table shared by every node of the mesh; index 0 is the primary.
    #[serde(default = "default_channels")]
    pub channels: Vec<ChannelConfig>,
    /// The nodes.
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeConfig>,
}

/// One channel: a name and a pre-shared key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Channel name; empty means the preset's name (`LongFast`), as on a fresh device.
    #[serde(default)]
    pub name: String,
    /// Pre-shared key: `default`, `none`, `simpleN` or base64 of 1, 16 or 32 bytes.
    pub psk: Psk,
}

impl ChannelConfig {
    /// The name that goes into the channel hash: the configured one, or the preset's.
    pub fn effective_name(&self, preset: ModemPreset) -> String {
        if self.name.is_empty() {
            preset.display_name().to_owned()
        } else {
            self.name.clone()
        }
    }
}

/// One node of a mesh.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node number, written `!a1b2c3d4`; unique across the whole world.
    pub id: NodeId,
    /// Long name shown by the apps.
    pub long_name: String,
    /// Short name (up to 4 characters on real devices).
    pub short_name: String,
    /// Relaying behaviour.
    #[serde(default)]
    pub role: NodeRole,
    /// Whom this node hears. Absent: every other node of its mesh. Links are made symmetric:
    /// if A lists B, B hears A too.
    #[serde(default)]
    pub neighbours: Option<Vec<NodeId>>,
    /// Present when this node is served as a Meshtastic device to real clients.
    #[serde(default)]
    pub attached: Option<AttachedConfig>,
    /// Present when this node generates traffic by itself.
    #[serde(default)]
    pub traffic: Option<TrafficConfig>,
    /// Whether the node runs firmware with PKI (2.5 and later, the default): an x25519 key
    /// pair derived from the world's seed and the node number, its public key in NodeInfo,
    /// and direct messages encrypted with the destination's key. `false` is firmware
    /// without PKI (older firmware, or a build with `MESHTASTIC_EXCLUDE_PKI`): no key, no
    /// public key in NodeInfo, channel-key direct messages only.
    #[serde(default = "yes")]
    pub pki: bool,
}

impl NodeConfig {
    /// The `User` record this node announces (NodeInfo) and attached devices report, in a
    /// world seeded with `seed` (which decides its public key).
    pub fn user(&self, seed: u64) -> proto::User {
        proto::User {
            id: self.id.to_string(),
            long_name: self.long_name.clone(),
            short_name: self.short_name.clone(),
            hw_model: hardware_model(self.id, self.attached.is_some()) as i32,
            role: self.role.to_proto() as i32,
            public_key: self
                .private_key(seed)
                .map_or_else(Vec::new, |k| k.public_key().as_bytes().to_vec()),
            ..Default::default()
        }
    }

    /// The node's private key in a world seeded with `seed`; `None` without PKI.
    pub fn private_key(&self, seed: u64) -> Option<PrivateKey> {
        self.pki.then(|| super::keys::node_key(seed, self.id))
    }
}

/// A plausible hardware model: attached radios run the Linux build (`PORTDUINO`), the people
/// around carry common boards, picked from the node number so it never changes.
pub fn hardware_model(node: NodeId, attached: bool) -> proto::HardwareModel {
    use proto::HardwareModel as Hw;
    if attached {
        return Hw::Portduino;
    }
    const BOARDS: [Hw; 5] = [
        Hw::HeltecV3,
        Hw::Tbeam,
        Hw::Rak4631,
        Hw::TEcho,
        Hw::StationG2,
    ];
    BOARDS[node.get() as usize % BOARDS.len()]
}

/// How a node takes part in flooding (the subset of `DeviceConfig.Role` that matters here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Relays after a contention delay, and cancels if it hears another relay first.
    #[default]
    Client,
    /// Never relays.
    ClientMute,
    /// Relays early and always.
    Router,
    /// Relays always, after everyone else.
    RouterLate,
    /// Relays like a router (deprecated by the firmware, still found in the field).
    Repeater,
}

impl NodeRole {
    /// The protobuf role.
    pub fn to_proto(self) -> ProtoRole {
        match self {
            NodeRole::Client => ProtoRole::Client,
            NodeRole::ClientMute => ProtoRole::ClientMute,
            NodeRole::Router => ProtoRole::Router,
            NodeRole::RouterLate => ProtoRole::RouterLate,
            // Deprecated by the firmware (2.7.11), but still a valid value on the wire.
            #[allow(deprecated)]
            NodeRole::Repeater => ProtoRole::Repeater,
        }
    }

    /// Whether this role rebroadcasts other nodes' packets at all.
    pub fn relays(self) -> bool {
        self != NodeRole::ClientMute
    }

    /// Whether a queued relay is dropped on hearing someone else relay the packet first.
    pub fn cancels_duplicates(self) -> bool {
        matches!(self, NodeRole::Client | NodeRole::ClientMute)
    }
}

/// How an attached node is served.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachedConfig {
    /// Loopback TCP port for the stream API; 0 picks a free port.
    #[serde(default)]
    pub tcp_port: u16,
    /// Also serve the device on a pseudo-terminal, like a radio on USB serial.
    #[serde(default)]
    pub pty: bool,
    /// The MQTT module with its client proxy on and downlink on every channel: how a radio is
    /// set up to take relayed traffic from a gateway (the default).
    #[serde(default = "yes")]
    pub mqtt_proxy: bool,
}

fn yes() -> bool {
    true
}

/// What a node sends by itself, in simulated seconds. Each kind fires at its rate with
/// ±20% jitter, first at a random moment within one period.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficConfig {
    /// A chat text (picked from a list of phrases) every so often.
    #[serde(default)]
    pub text_every_secs: Option<f64>,
    /// A position report every so often.
    #[serde(default)]
    pub position_every_secs: Option<f64>,
    /// Device telemetry (battery, channel utilisation) every so often.
    #[serde(default)]
    pub telemetry_every_secs: Option<f64>,
    /// A NodeInfo announcement (names, hardware) every so often.
    #[serde(default)]
    pub nodeinfo_every_secs: Option<f64>,
    /// Destination of the texts: `^all` or a node of the same mesh (then with want_ack).
    #[serde(default = "broadcast")]
    pub to: NodeId,
    /// Channel index the texts go out on.
    #[serde(default)]
    pub channel: u8,
}

impl TrafficConfig {
    /// The configured periods, by name, for checking.
    fn periods(&self) -> [(&'static str, Option<f64>); 4] {
        [
            ("text_every_secs", self.text_every_secs),
            ("position_every_secs", self.position_every_secs),
            ("telemetry_every_secs", self.telemetry_every_secs),
            ("nodeinfo_every_secs", self.nodeinfo_every_secs),
        ]
    }
}

fn default_time_scale() -> f64 {
    1.0
}

fn default_seed() -> u64 {
    1
}

fn default_region() -> String {
    "US".to_owned()
}

fn default_channels() -> Vec<ChannelConfig> {
    vec![ChannelConfig {
        name: String::new(),
        psk: Psk::default_key(),
    }]
}

fn broadcast() -> NodeId {
    NodeId::BROADCAST
}

/// Parses a region name the way the apps write it (`EU_868`, `us`).
pub fn parse_region(text: &str) -> Option<RegionCode> {
    RegionCode::from_str_name(&text.to_ascii_uppercase()).filter(|r| *r != RegionCode::Unset)
}

/// What is wrong with a simulation config. Each message names the key, the value and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimConfigError {
    /// The TOML text does not parse into a config.
    #[error("simulation config does not parse: {0}")]
    Parse(String),
    /// No mesh at all.
    #[error("no [[mesh]] in the simulation config: declare at least one mesh with its nodes")]
    NoMesh,
    /// `time_scale` is not a positive number.
    #[error(
        "time_scale = {0}: must be a positive number of simulated seconds per real second, at most {MAX_TIME_SCALE} (1.0 is real time)"
    )]
    TimeScale(f64),
    /// Two meshes share a name.
    #[error("mesh name `{0}` is used twice: give every [[mesh]] its own name")]
    DuplicateMesh(String),
    /// A mesh has an empty name.
    #[error("mesh #{index} has an empty name: set `name = \"...\"`")]
    EmptyMeshName {
        /// Position of the mesh in the file.
        index: usize,
    },
    /// `loss` outside 0..=1.
    #[error(
        "mesh `{mesh}`: loss = {loss} is not a probability: use a number from 0.0 (never lost) to 1.0 (always lost)"
    )]
    Loss {
        /// The mesh.
        mesh: String,
        /// The bad value.
        loss: f64,
    },
    /// Unknown region name.
    #[error(
        "mesh `{mesh}`: region = \"{region}\" is unknown: use a Meshtastic region such as US, EU_868, EU_433, ANZ, IN"
    )]
    Region {
        /// The mesh.
        mesh: String,
        /// The bad value.
        region: String,
    },
    /// An override frequency no LoRa radio tunes to.
    #[error(
        "mesh `{mesh}`: frequency_mhz = {value}: give the radios' override frequency in MHz, within {} to {} (such as 869.4625), or leave it out for the preset's slot",
        FREQUENCY_MHZ.start(),
        FREQUENCY_MHZ.end()
    )]
    Frequency {
        /// The mesh.
        mesh: String,
        /// The bad value.
        value: f64,
    },
    /// An MQTT root that cannot head a topic.
    #[error("mesh `{mesh}`: mqtt_root: {reason}")]
    MqttRoot {
        /// The mesh.
        mesh: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Channel count outside 1..=8.
    #[error(
        "mesh `{mesh}`: {count} channels: a device holds 1 to {MAX_CHANNELS} (index 0 is the primary)"
    )]
    ChannelCount {
        /// The mesh.
        mesh: String,
        /// How many were given.
        count: usize,
    },
    /// A channel name longer than the firmware allows.
    #[error("mesh `{mesh}`: channel #{index} name `{name}` is longer than 11 bytes: shorten it")]
    ChannelName {
        /// The mesh.
        mesh: String,
        /// Channel index.
        index: usize,
        /// The bad name.
        name: String,
    },
    /// A node id is a reserved number.
    #[error(
        "node id {0} is reserved (0, 1 and !ffffffff are addresses, not nodes): pick another id"
    )]
    ReservedNode(NodeId),
    /// Two nodes share an id.
    #[error("node id {0} is declared twice: node ids are unique across all meshes")]
    DuplicateNode(NodeId),
    /// A node names a neighbour that is not in its mesh.
    #[error(
        "node {node}: neighbours lists {neighbour}, which is not a node of mesh `{mesh}`: list only ids declared in that mesh"
    )]
    UnknownNeighbour {
        /// The node whose list is wrong.
        node: NodeId,
        /// The unknown id.
        neighbour: NodeId,
        /// The node's mesh.
        mesh: String,
    },
    /// A node lists itself as a neighbour.
    #[error("node {0}: neighbours lists the node itself: remove it")]
    SelfNeighbour(NodeId),
    /// Two attached radios want the same fixed TCP port.
    #[error(
        "attached.tcp_port = {port} is used by both {first} and {second}: give each radio its own port, or 0 for any free port"
    )]
    DuplicatePort {
        /// The port.
        port: u16,
        /// First node using it.
        first: NodeId,
        /// Second node using it.
        second: NodeId,
    },
    /// A traffic period is not a positive number.
    #[error(
        "node {node}: traffic.{key} = {value}: must be a positive number of simulated seconds, at most {MAX_PERIOD_SECS} (or leave it out)"
    )]
    TrafficPeriod {
        /// The node.
        node: NodeId,
        /// Which period.
        key: &'static str,
        /// The bad value.
        value: f64,
    },
    /// Traffic on a channel the mesh does not have.
    #[error(
        "node {node}: traffic.channel = {channel}, but mesh `{mesh}` has channels 0..{count}: pick one of them"
    )]
    TrafficChannel {
        /// The node.
        node: NodeId,
        /// The bad index.
        channel: u8,
        /// The node's mesh.
        mesh: String,
        /// How many channels the mesh has.
        count: usize,
    },
    /// Traffic addressed to a node outside the mesh.
    #[error(
        "node {node}: traffic.to = {to} is not a node of mesh `{mesh}`: use \"^all\" or a node of the same mesh"
    )]
    TrafficDestination {
        /// The node.
        node: NodeId,
        /// The bad destination.
        to: NodeId,
        /// The node's mesh.
        mesh: String,
    },
}

impl SimConfig {
    /// The built-in demo world: two neighbourhood meshes on different presets, chatting
    /// people, a router each, and one attached radio each on any free TCP port.
    pub fn demo() -> SimConfig {
        match SimConfig::from_toml_str(DEMO_TOML) {
            Ok(config) => config,
            // The file is compiled in and checked by a unit test; reaching this is a build bug.
            Err(e) => panic!("the built-in demo world is invalid: {e}"),
        }
    }

    /// Parses and validates a TOML text (the gateway itself loads files through figment).
    pub fn from_toml_str(text: &str) -> Result<SimConfig, SimConfigError> {
        let config: SimConfig =
            toml::from_str(text).map_err(|e| SimConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges, uniqueness and cross references.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        if !(self.time_scale > 0.0 && self.time_scale <= MAX_TIME_SCALE) {
            return Err(SimConfigError::TimeScale(self.time_scale));
        }
        if self.meshes.is_empty() {
            return Err(SimConfigError::NoMesh);
        }
        let mut mesh_names = HashSet::new();
        let mut node_ids = HashSet::new();
        let mut ports: HashMap<u16, NodeId> = HashMap::new();
        for (index, mesh) in self.meshes.iter().enumerate() {
            if mesh.name.is_empty() {
                return Err(SimConfigError::EmptyMeshName { index });
            }
            if !mesh_names.insert(mesh.name.as_str()) {
                return Err(SimConfigError::DuplicateMesh(mesh.name.clone()));
            }
            mesh.validate()?;
            for node in &mesh.nodes {
                if !node_ids.insert(node.id) {
                    return Err(SimConfigError::DuplicateNode(node.id));
                }
                if let Some(port) = node.attached.map(|a| a.tcp_port).filter(|&p| p != 0) {
                    if let Some(&first) = ports.get(&port) {
                        return Err(SimConfigError::DuplicatePort {
                            port,
                            first,
                            second: node.id,
                        });
                    }
                    ports.insert(port, node.id);
                }
            }
        }
        Ok(())
    }

    /// The mesh a node belongs to, with the node's config.
    pub fn find_node(&self, id: NodeId) -> Option<(&MeshConfig, &NodeConfig)> {
        self.meshes
            .iter()
            .find_map(|m| m.nodes.iter().find(|n| n.id == id).map(|n| (m, n)))
    }
}

impl MeshConfig {
    /// The MQTT root of the mesh's attached radios: the configured one, or the firmware's
    /// default for the region.
    pub fn mqtt_root(&self) -> Result<Root, TopicError> {
        match &self.mqtt_root {
            Some(root) => Root::new(root.as_str()),
            None => Root::firmware_default(
                parse_region(&self.region).map_or("UNSET", |r| r.as_str_name()),
            ),
        }
    }

    fn validate(&self) -> Result<(), SimConfigError> {
        let mesh = || self.name.clone();
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(SimConfigError::Loss {
                mesh: mesh(),
                loss: self.loss,
            });
        }
        if parse_region(&self.region).is_none() {
            return Err(SimConfigError::Region {
                mesh: mesh(),
                region: self.region.clone(),
            });
        }
        if let Some(value) = self.frequency_mhz.filter(|f| !FREQUENCY_MHZ.contains(f)) {
            return Err(SimConfigError::Frequency {
                mesh: mesh(),
                value,
            });
        }
        if let Err(e) = self.mqtt_root() {
            return Err(SimConfigError::MqttRoot {
                mesh: mesh(),
                reason: e.to_string(),
            });
        }
        if self.channels.is_empty() || self.channels.len() > MAX_CHANNELS {
            return Err(SimConfigError::ChannelCount {
                mesh: mesh(),
                count: self.channels.len(),
            });
        }
        for (index, ch) in self.channels.iter().enumerate() {
            if ch.name.len() > 11 {
                return Err(SimConfigError::ChannelName {
                    mesh: mesh(),
                    index,
                    name: ch.name.clone(),
                });
            }
        }
        let members: HashSet<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        for node in &self.nodes {
            if node.id.is_broadcast() || node.id == NodeId::LOCAL {
                return Err(SimConfigError::ReservedNode(node.id));
            }
            for &neighbour in node.neighbours.iter().flatten() {
                if neighbour == node.id {
                    return Err(SimConfigError::SelfNeighbour(node.id));
                }
                if !members.contains(&neighbour) {
                    return Err(SimConfigError::UnknownNeighbour {
                        node: node.id,
                        neighbour,
                        mesh: mesh(),
                    });
                }
            }
            let Some(traffic) = &node.traffic else {
                continue;
            };
            for (key, value) in traffic.periods() {
                if let Some(value) = value.filter(|v| !(*v > 0.0 && *v <= MAX_PERIOD_SECS)) {
                    return Err(SimConfigError::TrafficPeriod {
                        node: node.id,
                        key,
                        value,
                    });
                }
            }
            if usize::from(traffic.channel) >= self.channels.len() {
                return Err(SimConfigError::TrafficChannel {
                    node: node.id,
                    channel: traffic.channel,
                    mesh: mesh(),
                    count: self.channels.len(),
                });
            }
            if traffic.to != NodeId::BROADCAST
                && (!members.contains(&traffic.to) || traffic.to == node.id)
            {
                return Err(SimConfigError::TrafficDestination {
                    node: node.id,
                    to: traffic.to,
                    mesh: mesh(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
        time_scale = 100.0
        seed = 7
        [[mesh]]
        name = "north"
        preset = "LongFast"
        channels = [ { name = "LongFast", psk = "AQ==" }, { name = "ops", psk = "simple3" } ]
        [[mesh.node]]
        id = "!00000011"
        long_name = "One"
        short_name = "ONE"
        attached = { tcp_port = 4403, pty = true }
        [[mesh.node]]
        id = "!00000012"
        long_name = "Two"
        short_name = "TWO"
        role = "router"
        neighbours = ["!00000011"]
        traffic = { text_every_secs = 60.0, to = "^all", channel = 1 }
    "#;

    fn small() -> SimConfig {
        SimConfig::from_toml_str(SMALL).unwrap()
    }

    fn error_of(edit: impl FnOnce(&mut SimConfig)) -> SimConfigError {
        let mut config = small();
        edit(&mut config);
        config.validate().unwrap_err()
    }

    #[test]
    fn a_small_world_parses_with_its_defaults() {
        let c = small();
        assert_eq!(c.time_scale, 100.0);
        assert_eq!(c.meshes[0].region, "US");
        assert_eq!(c.meshes[0].loss, 0.0);
        let two = &c.meshes[0].nodes[1];
        assert_eq!(two.role, NodeRole::Router);
        assert_eq!(two.traffic.as_ref().unwrap().to, NodeId::BROADCAST);
        assert_eq!(c.meshes[0].nodes[0].role, NodeRole::Client);
        assert!(c.meshes[0].nodes[0].attached.unwrap().pty);
        assert!(two.pki, "firmware with PKI unless told otherwise");
    }

    #[test]
    fn a_node_with_pki_announces_its_seeded_public_key_and_one_without_announces_none() {
        let mut c = small();
        let one = &c.meshes[0].nodes[0];
        let key = one.private_key(c.seed).unwrap().public_key();
        assert_eq!(one.user(c.seed).public_key, key.as_bytes().to_vec());
        assert_ne!(one.user(c.seed + 1).public_key, key.as_bytes().to_vec());
        let old = SimConfig::from_toml_str(&SMALL.replace(
            "role = \"router\"",
            "role = \"router\"\n        pki = false",
        ))
        .unwrap();
        let two = &old.meshes[0].nodes[1];
        assert!(!two.pki && two.private_key(old.seed).is_none());
        assert!(two.user(old.seed).public_key.is_empty());
        c.meshes[0].nodes[0].pki = false;
        assert!(c.meshes[0].nodes[0].user(c.seed).public_key.is_empty());
    }

    #[test]
    fn the_demo_world_is_valid_and_has_two_meshes_with_an_attached_radio_each() {
        let demo = SimConfig::demo();
        assert_eq!(demo.meshes.len(), 2);
        for mesh in &demo.meshes {
            let attached: Vec<_> = mesh.nodes.iter().filter(|n| n.attached.is_some()).collect();
            assert_eq!(attached.len(), 1, "{}", mesh.name);
            assert_eq!(attached[0].attached.unwrap().tcp_port, 0);
            assert!(mesh.nodes.iter().any(|n| n.role == NodeRole::Router));
        }
        assert_ne!(demo.meshes[0].preset, demo.meshes[1].preset);
    }

    #[test]
    fn the_operator_example_in_deploy_is_valid() {
        let example = SimConfig::from_toml_str(include_str!("../../../deploy/sim.toml")).unwrap();
        let ports: Vec<u16> = example
            .meshes
            .iter()
            .flat_map(|m| {
                m.nodes
                    .iter()
                    .filter_map(|n| n.attached.map(|a| a.tcp_port))
            })
            .collect();
        assert_eq!(ports, vec![4403, 4404]);
    }

    #[test]
    fn the_gaulix_profile_pins_its_mesh_to_869_4625_mhz_on_long_moderate() {
        let gaulix =
            SimConfig::from_toml_str(include_str!("../../../deploy/profiles/gaulix/sim.toml"))
                .unwrap();
        let mesh = &gaulix.meshes[0];
        assert_eq!(
            (mesh.preset, mesh.frequency_mhz, mesh.region.as_str()),
            (ModemPreset::LongModerate, Some(869.4625), "EU_868")
        );
        let names: Vec<&str> = mesh.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Fr_Balise", "Fr_EMCOM", "Fr_BlaBla"]);
        assert_eq!(
            gaulix.meshes[1].frequency_mhz, None,
            "LongFast keeps its slot"
        );
    }

    #[test]
    fn whole_numbers_are_accepted_where_decimals_are_expected() {
        let c = SimConfig::from_toml_str("time_scale = 10\n[[mesh]]\nname = \"m\"\nloss = 0\n")
            .unwrap();
        assert_eq!((c.time_scale, c.meshes[0].loss), (10.0, 0.0));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = SimConfig::from_toml_str("time_scale = 1.0\nspeed = 2\n").unwrap_err();
        assert!(err.to_string().contains("speed"), "{err}");
    }

    #[test]
    fn errors_name_the_key_the_value_and_the_fix() {
        let e = error_of(|c| c.time_scale = 0.0);
        assert!(e.to_string().contains("time_scale = 0"), "{e}");
        let e = error_of(|c| c.meshes[0].loss = 1.5);
        assert!(
            e.to_string().contains("loss = 1.5") && e.to_string().contains("0.0"),
            "{e}"
        );
        let e = error_of(|c| {
            let dup = c.meshes[0].nodes[0].clone();
            c.meshes[0].nodes.push(dup);
        });
        assert_eq!(e, SimConfigError::DuplicateNode(NodeId::new(0x11)));
        let e = error_of(|c| {
            let ch = c.meshes[0].channels[0].clone();
            c.meshes[0].channels = vec![ch; 9];
        });
        assert!(e.to_string().contains("9 channels"), "{e}");
        let e = error_of(|c| c.meshes[0].nodes[1].neighbours = Some(vec![NodeId::new(9)]));
        assert!(
            e.to_string().contains("!00000009") && e.to_string().contains("north"),
            "{e}"
        );
        let e = error_of(|c| c.meshes[0].region = "MARS".into());
        assert!(e.to_string().contains("MARS"), "{e}");
        let e = error_of(|c| c.meshes[0].frequency_mhz = Some(0.0));
        assert!(
            e.to_string().contains("frequency_mhz = 0") && e.to_string().contains("869.4625"),
            "{e}"
        );
        let e = error_of(|c| c.meshes[0].mqtt_root = Some("msh/#".into()));
        assert!(
            e.to_string().contains("mqtt_root") && e.to_string().contains("wildcard"),
            "{e}"
        );
    }

    #[test]
    fn two_radios_on_one_fixed_port_are_refused_but_port_zero_is_shared() {
        let e = error_of(|c| c.meshes[0].nodes[1].attached = c.meshes[0].nodes[0].attached);
        assert!(e.to_string().contains("4403"), "{e}");
        let mut c = small();
        for n in &mut c.meshes[0].nodes {
            n.attached = Some(AttachedConfig::default());
        }
        c.validate().unwrap();
    }

    #[test]
    fn traffic_must_use_an_existing_channel_and_a_positive_period() {
        let e = error_of(|c| c.meshes[0].nodes[1].traffic.as_mut().unwrap().channel = 2);
        assert!(
            matches!(e, SimConfigError::TrafficChannel { channel: 2, .. }),
            "{e}"
        );
        let e = error_of(|c| {
            c.meshes[0].nodes[1]
                .traffic
                .as_mut()
                .unwrap()
                .text_every_secs = Some(0.0)
        });
        assert!(e.to_string().contains("text_every_secs"), "{e}");
    }

    #[test]
    fn reserved_ids_are_not_nodes() {
        let e = error_of(|c| c.meshes[0].nodes[1].id = NodeId::BROADCAST);
        assert_eq!(e, SimConfigError::ReservedNode(NodeId::BROADCAST));
    }

    #[test]
    fn an_empty_channel_name_means_the_preset_name() {
        let ch = ChannelConfig {
            name: String::new(),
            psk: Psk::default_key(),
        };
        assert_eq!(ch.effective_name(ModemPreset::MediumFast), "MediumFast");
    }
}
