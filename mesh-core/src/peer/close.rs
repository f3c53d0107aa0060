//! How a session ends: the reasons the owner is told, and the protocol errors that close it.

use std::fmt;
use std::time::Duration;

use super::frame::{CloseCode, FrameError};

/// How the peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A frame could not be decoded.
    #[error("{0}")]
    Frame(FrameError),
    /// A frame that makes no sense in the current state.
    #[error("{frame} frame {state}")]
    Unexpected {
        /// The frame's kind.
        frame: &'static str,
        /// Where it came, "before Hello" or "after the handshake".
        state: &'static str,
    },
    /// A definition skipped or reused an index.
    #[error("{table} definition {index} out of order (expected {expected})")]
    DefineOutOfOrder {
        /// Which table.
        table: &'static str,
        /// The index it defined.
        index: u32,
        /// The next free index.
        expected: usize,
    },
    /// An item named a channel index never defined.
    #[error("item with undefined channel index {0}")]
    UnknownChannel(u32),
    /// An item named an origin index never defined.
    #[error("item with undefined origin index {0}")]
    UnknownOrigin(u32),
    /// A `Data` frame did not continue the sequence.
    #[error("data starting at {got}, expected {expected}")]
    SequenceGap {
        /// The next sequence number.
        expected: u64,
        /// The frame's first one.
        got: u64,
    },
    /// More unacknowledged data than we advertised.
    #[error("window exceeded: {items} items, {bytes} bytes unacknowledged")]
    WindowExceeded {
        /// Items that would be unacknowledged.
        items: usize,
        /// Bytes that would be unacknowledged.
        bytes: usize,
    },
    /// An `Ack` for items never sent.
    #[error("ack up to {up_to} but only {sent} sent")]
    AckBeyondSent {
        /// The position acknowledged.
        up_to: u64,
        /// The last position sent.
        sent: u64,
    },
    /// An `Ack` below an earlier one.
    #[error("ack up to {up_to} after ack up to {acked}")]
    AckBackwards {
        /// The position acknowledged.
        up_to: u64,
        /// The earlier acknowledgement.
        acked: u64,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The owner closed it ([`Session::close`](super::Session::close)).
    Local {
        /// The code sent.
        code: CloseCode,
        /// The text sent.
        text: String,
    },
    /// The peer closed it.
    Remote {
        /// Its code.
        code: CloseCode,
        /// Its text (at most 255 bytes, from the wire: log it as data).
        text: String,
    },
    /// The peer broke the protocol; we said so in our `Close`.
    Protocol(ProtocolError),
    /// No version both sides speak.
    Version {
        /// Ours.
        ours: Vec<u16>,
        /// The peer's.
        theirs: Vec<u16>,
    },
    /// Nothing heard from the peer for this long.
    Timeout(Duration),
    /// The stream ended without a `Close`.
    Eof,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local { code, text } => write!(f, "closed by us ({code:?}): {text}"),
            CloseReason::Remote { code, text } => {
                write!(f, "closed by the peer ({code:?}): {text:?}")
            }
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseReason::Version { ours, theirs } => {
                write!(
                    f,
                    "no common protocol version: ours {ours:?}, the peer's {theirs:?}"
                )
            }
            CloseReason::Timeout(d) => {
                write!(f, "nothing heard from the peer for {} s", d.as_secs())
            }
            CloseReason::Eof => f.write_str("the stream ended without a Close"),
        }
    }
}
