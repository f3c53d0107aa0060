//! Archipel's domain: everything about a Meshtastic mesh that can be decided without I/O.
//!
//! Nothing here opens a socket, reads a clock or spawns a task: functions that depend on time
//! take `now` as an argument, so they are tested with plain values.
//!
//! Modules, in the order one received message meets them:
//! - [`frame`]: the stream API's `0x94 0xC3 LEN` framing and its resync rules;
//! - [`wire`]: a protobuf field walker, so raw bytes can be kept where prost would drop fields;
//! - [`packet`]: a mesh packet that keeps its original bytes and exposes decoded fields;
//! - [`node`]: node and packet identifiers;
//! - [`channel`]: channel keys, PSK expansion, the 8-bit channel hash and AES-CTR;
//! - [`pki`]: PKI direct messages: x25519 key pairs, the shared key and AES-CCM;
//! - [`dedup`]: the bounded, expiring (from, id) seen-set;
//! - [`airtime`]: modem presets and LoRa time-on-air;
//! - [`class`]: priority classes, the order in which a backlog drains;
//! - [`governor`]: a radio's duty-cycle and channel-utilisation limits;
//! - [`backoff`]: capped reconnect delays shared by every link;
//! - [`delivery`]: the delivery status every destination reports;
//! - [`routing`]: a mesh's ACK or NAK read as such a status;
//! - [`pacing`]: how often a client may hand its radio each kind of packet;
//! - [`envelope`]: the MQTT `ServiceEnvelope` and its topics, shared by radios, the simulator
//!   and the MQTT bridge;
//! - [`peer`]: the protocol between federated gateways: frames and the session engine.
#![warn(missing_docs)]

pub mod airtime;
pub mod backoff;
pub mod channel;
pub mod class;
pub mod dedup;
pub mod delivery;
pub mod envelope;
pub mod frame;
pub mod governor;
pub mod mqtt_json;
pub mod node;
pub mod pacing;
pub mod packet;
pub mod peer;
pub mod pki;
pub mod routing;
pub mod wire;

/// The Meshtastic protobuf types (from the `meshtastic` crate, GPL-3.0), re-exported so every
/// crate of the workspace names them the same way.
pub use meshtastic::protobufs as proto;

pub use airtime::{FREQUENCY_MHZ, LoraParams, ModemPreset};
pub use backoff::Backoff;
pub use channel::{ChannelKey, Psk};
pub use class::Class;
pub use dedup::{Dedup, Seen};
pub use delivery::DeliveryStatus;
pub use envelope::{
    Envelope, EnvelopeError, GatewayId, Root, Topic, TopicChannel, TopicError, TopicKind,
};
pub use governor::{Governor, GovernorConfig, Verdict};
pub use node::{NodeId, PacketId};
pub use pacing::PacingClass;
pub use packet::{Packet, Payload};
pub use pki::{PkiError, PrivateKey, PublicKey};
