//! What is wrong with a simulation config, one variant per check of `validate.rs`. Apart
//! from the shape because the messages are long: each names the key, the value and the fix,
//! which is what a volunteer reading the error needs, and they would bury the types.

use mesh_core::{FREQUENCY_MHZ, NodeId};

use super::{MAX_CHANNELS, MAX_PERIOD_SECS, MAX_TIME_SCALE};

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
