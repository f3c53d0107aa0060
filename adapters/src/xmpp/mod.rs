//! An XMPP server, as a XEP-0114 component (tokio-xmpp 6): kept rooms on the server's MUC
//! service where mesh nodes speak as occupants, and one contact `local@domain` per node.
//!
//! - [`config`]: the settings, the rooms to keep ([`RoomSpec`]) and the contacts ([`Contact`]);
//! - [`handle`]: the owner's side: [`XmppHandle`], [`XmppEvent`], [`spawn`], [`XmppCounters`];
//! - `rooms` / `occupants` / `pending`: the decisions without I/O (joins, nick conflicts,
//!   reflections, self-pings);
//! - `directory`: presence, subscriptions, probes, vCard and disco of the contacts;
//! - `stanza` / `parse`: building what the link sends and reading what it receives;
//! - `stream`: the component connection and its handshake, read so that a stanza the parsers
//!   refuse is skipped rather than ending the stream;
//! - `link` / `inbound`: the task that owns the stream, reconnects with capped backoff and
//!   routes stanzas and requests.
//!
//! # Rooms
//! Each kept room is joined by a bridge occupant (`bridge@domain/archipel`, nick
//! `bridge_nick`) asking for no history. After its first join the bridge submits the owner
//! configuration (persistent, public, archived with MAM, name, description). Nodes join on
//! demand as `local@domain/archipel`; a nick in use (`conflict`) is retried as `nick (2)`,
//! `nick (3)`… and the nick that worked is kept. Every occupant is joined again after a
//! reconnect and after a kick; a room that silently lost the bridge is noticed by the
//! XEP-0410 self-ping every `self_ping_every`.
//!
//! # Delivery
//! [`XmppHandle::say`] answers `Delivered` only on the room's reflection of the message with
//! the id the link gave it, `Failed` when none came within `reflection_timeout`, `Rejected`
//! on the room's error, `Unreachable` while down or not joined. [`XmppHandle::chat`] answers
//! `Delivered` once the server answered a ping sent after the message on the same stream (the
//! server handles a component's stanzas in order, so the message was routed by then).
//!
//! # Receiving
//! Room messages are reported once (through the bridge, never for our own occupants, never
//! history), with the speaker's real JID when the room shows it to the bridge (its owner).
//! Bodies above `max_body` bytes are bounced with `not-acceptable` "text above N bytes",
//! counted, and reported as a [`XmppEvent::Problem`].

pub mod config;
mod directory;
pub mod handle;
mod inbound;
mod link;
mod occupants;
mod parse;
mod pending;
mod rooms;
mod stanza;
mod stream;

pub use config::{Contact, RoomSpec, XmppConfig};
pub use handle::{
    ChatMessage, Lifecycle, LinkStopped, RoomMessage, XmppCounters, XmppEvent, XmppHandle, spawn,
};
pub use stanza::ErrorCondition;
pub use stream::XmppError;

/// The stanza reader, from XML text, for the fuzz crate (fuzz/fuzz_targets/xmpp_stanza.rs).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use tokio_xmpp::Stanza;
    use tokio_xmpp::minidom::Element;
    use tokio_xmpp::parsers::{iq::Iq, message::Message, presence::Presence};

    use super::parse::{self, Inbound};

    /// Parses `xml` as one stanza and reads it as the link does (`rooms` is the MUC domain);
    /// `None` when the XML is not a stanza. Panics when what was read breaks what the link
    /// relies on: room and nick names are never empty.
    pub fn read_stanza(xml: &str, rooms: &str) -> Option<String> {
        let element: Element = xml.parse().ok()?;
        let stanza = match element.name() {
            "message" => Stanza::Message(Message::try_from(element).ok()?),
            "presence" => Stanza::Presence(Presence::try_from(element).ok()?),
            "iq" => Stanza::Iq(Iq::try_from(element).ok()?),
            _ => return None,
        };
        let inbound = parse::read(stanza, rooms);
        if let Inbound::Room { room, nick, .. } | Inbound::Groupchat { room, nick, .. } = &inbound {
            assert!(!room.is_empty() && !nick.is_empty(), "{inbound:?}");
        }
        Some(format!("{inbound:?}"))
    }
}
