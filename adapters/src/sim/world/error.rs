//! Why the world refuses a packet a driver hands it. Apart from the state so the refusals a
//! client can meet read as one list, as `config/error.rs` does for the config.

use mesh_core::proto::routing::Error as RoutingError;
use mesh_core::{NodeId, PacketId};

use super::{MAX_LORA_FRAME, TX_QUEUE_LEN};

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
