//! The pure glue between the mesh and an XMPP server: what the XMPP link (`archipel_adapters::
//! xmpp`) is handed and what the gateway decides about what it reports. No I/O and no clock:
//! where time matters, `now` is an argument.
//!
//! - [`text`]: whether a text can go on the mesh in one message, and the `[nick] text` form
//!   for rooms the gateway radio speaks for;
//! - [`names`]: JID local parts for nodes (`!a1b2c3d4`), occupant nicknames, and the NodeInfo
//!   of the virtual node an XMPP user speaks as;
//! - [`contact`]: what the directory shows of a node (presence, status line, vCard fields) and
//!   how a channel's room describes itself;
//! - [`limiter`]: how many texts one XMPP user may put on the mesh.

pub mod contact;
pub mod limiter;
pub mod names;
pub mod text;

pub use contact::{contact, room_spec};
pub use limiter::{MAX_USERS, UserLimiter};
pub use names::{
    LONG_NAME_LIMIT, SHORT_NAME_LIMIT, XMPP_MARKER, bare_jid, nick_from_jid, node_local,
    occupant_nick, parse_node_local, virtual_user,
};
pub use text::{Carriage, Refusal, fits, fits_on, gateway_text, max_text};
