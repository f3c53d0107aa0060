//! Federation with other gateways: who a gateway is, and authenticated connections between
//! gateways that know each other by IP address and public key only (no DNS, no CA).
//!
//! - [`key`]: [`PeerKey`], its copyable string form (`archipel:` + base32) and its
//!   [`Fingerprint`] to read aloud;
//! - [`identity`]: this gateway's key pair, kept in a mode-0600 file ([`Identity`]);
//! - [`tls`]: rustls configs (TLS 1.3, RFC 7250 raw public keys) that pin peers' keys;
//! - [`transport`]: [`connect`], [`PeerListener`] and [`Incoming`] over TCP, under a
//!   handshake timeout;
//! - [`duplicate`]: the rule that keeps one connection when two gateways dial each other
//!   ([`resolve_duplicate`]);
//! - the link to one peer ([`spawn`], [`PeerHandle`]): a task that dials with capped backoff,
//!   adopts inbound connections, and drives the peer protocol's session
//!   ([`mesh_core::peer::Session`]) over the connection it keeps; [`PeerAcceptor`] hands each
//!   inbound connection to the link of the key it proved.
//!
//! # Delivery through a link
//! The owner's outbox is the only queue across connections. An offer made while no connection
//! is open is answered `Unreachable` at once; one made while the session's window is full
//! waits in the link, in call order. `Delivered` comes only once the peer acknowledged the
//! item, which it does only after its owner committed it ([`PeerHandle::committed`]). When a
//! connection closes every offer not acknowledged on it is answered `Unreachable`, and after
//! the next [`PeerEvent::Up`] the owner offers them again. Offers, deliveries and commits are
//! tied to the connection they were made on (its number), so nothing sent on one connection
//! is acknowledged on another.

mod acceptor;
mod conn;
pub mod duplicate;
mod handle;
pub mod identity;
pub mod key;
mod link;
mod offers;
pub mod tls;
pub mod transport;

pub use acceptor::{AcceptorCounters, PeerAcceptor};
pub use handle::{
    Lifecycle, LinkStopped, PeerCounters, PeerEvent, PeerHandle, PeerLinkConfig, spawn,
};
pub use link::STABLE_AFTER;

pub use duplicate::{Direction, Duplicate, resolve_duplicate};
pub use identity::{Identity, IdentityError};
pub use key::{Fingerprint, KEY_PREFIX, PeerKey};
pub use transport::{ACCEPTED, Incoming, PeerListener, PeerStream, TransportError, connect};
