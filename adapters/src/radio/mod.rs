//! A Meshtastic radio over its stream API (USB serial or TCP port 4403).
//!
//! - [`state`]: the session's decisions (handshake, flow control, ACKs, heartbeats), no I/O;
//! - [`link`]: the task that owns the port and reconnects with capped backoff;
//! - [`info`]: what the radio tells about itself during the handshake;
//! - [`noise`]: serial log text and garbage turned into rate-limited log lines.
//!
//! A message from the mesh reaches the gateway as [`RadioEvent::Packet`]; a message for the
//! mesh goes out through [`RadioHandle::send`], which answers with a
//! [`mesh_core::DeliveryStatus`] only once the radio (and, for `want_ack`, the mesh) confirmed.

pub mod info;
pub mod link;
pub mod noise;
pub mod state;

pub use info::RadioInfo;
pub use link::{Attachment, LinkCounters, RadioConfig, RadioEvent, RadioHandle, spawn};
pub use state::{SessionConfig, SessionError};
