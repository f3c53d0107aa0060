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
//!   ([`resolve_duplicate`]).

pub mod duplicate;
pub mod identity;
pub mod key;
pub mod tls;
pub mod transport;

pub use duplicate::{Direction, Duplicate, resolve_duplicate};
pub use identity::{Identity, IdentityError};
pub use key::{Fingerprint, KEY_PREFIX, PeerKey};
pub use transport::{ACCEPTED, Incoming, PeerListener, PeerStream, TransportError, connect};
