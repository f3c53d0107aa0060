//! The simulated world's configuration: meshes, their channels and nodes, which nodes are
//! served as Meshtastic devices, and what traffic the virtual people generate.
//!
//! It is plain serde, so the gateway loads it with figment like the rest of its config, and
//! [`SimConfig::validate`] checks everything serde cannot, naming the key, the bad value and
//! the fix. Every other part of the simulator assumes a validated config.
//!
//! This file holds the shape and the loader; the error messages (`config/error.rs`) and the
//! checks behind them (`config/validate.rs`) live apart, so the shape reads without them.

use mesh_core::proto::config::device_config::Role as ProtoRole;
use mesh_core::proto::config::lo_ra_config::RegionCode;
use mesh_core::{ModemPreset, NodeId, PrivateKey, Psk, Root, TopicError, proto};
use serde::Deserialize;

mod error;
mod validate;

pub use error::SimConfigError;

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
}

#[cfg(test)]
mod tests;
