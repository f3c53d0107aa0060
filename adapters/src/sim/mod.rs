//! A simulated RF world whose attached radios speak the Meshtastic stream API, so real
//! clients (the gateway's radio link, the Python `meshtastic` CLI) can use them.
//!
//! Layout, from the pure core out to the sockets:
//! - [`config`]: the world's TOML shape and its validation;
//! - [`channels`]: a mesh's channel table (encrypt to the hash, decrypt back to the index);
//! - [`keys`]: the nodes' PKI key pairs and the node-database rules for public keys;
//! - [`world`]: the RF world itself, pure: airtime, loss, flooding, ACKs, traffic;
//! - [`device`]: one attached radio's PhoneAPI, pure: handshake, queue status, pacing;
//! - [`server`]: the tokio edge: the virtual clock, TCP listeners, pseudo-terminals;
//! - `pty`: the pseudo-terminal plumbing behind a serial-attached radio.

pub mod channels;
pub mod config;
pub mod device;
pub mod keys;
mod pty;
pub mod server;
pub mod world;

pub use config::{NodeRole, SimConfig, SimConfigError};
pub use device::to_phone::ToPhoneDrops;
pub use device::{DownlinkDrop, DownlinkDrops};
pub use pty::PtyError;
pub use server::{AttachedRadio, SimError, SimEvent, Simulator};
