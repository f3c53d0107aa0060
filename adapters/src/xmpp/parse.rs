//! Reading what the server sends into [`Inbound`]: a few shapes the link acts on, with every
//! field checked here so the link never digs in elements itself. Nothing here panics on odd
//! input: what does not fit a shape is [`Inbound::Ignored`].

use tokio_xmpp::Stanza;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::StanzaError;

/// What a presence from a room occupant JID `room/nick` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoomPresence {
    /// Our own occupant is in (status 110); `created`: status 201.
    SelfJoined {
        /// The room was created by this join.
        created: bool,
    },
    /// Our own occupant is out (status 110 on unavailable), with the status codes.
    SelfLeft {
        /// MUC status codes (307 kicked, 301 banned, 303 nick change, 332 shutdown).
        codes: Vec<u16>,
    },
    /// The join was refused.
    Error {
        /// The defined condition (`conflict`, `forbidden`…).
        condition: String,
        /// Its text, if any.
        text: String,
    },
    /// Someone else is there; the real JID when the room shows it.
    Occupant {
        /// Full real JID.
        real_jid: Option<String>,
    },
    /// Someone else left.
    OccupantLeft,
}

/// What the link acts on.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A presence from `room/nick` to one of our JIDs.
    Room {
        /// Room local part.
        room: String,
        /// The occupant's nick.
        nick: String,
        /// Which of our JIDs it went to.
        to: Jid,
        /// What it says.
        what: RoomPresence,
    },
    /// A groupchat message from `room/nick` (a reflection of ours included).
    Groupchat {
        /// Room local part.
        room: String,
        /// Speaker's nick.
        nick: String,
        /// Which of our JIDs it went to.
        to: Jid,
        /// The sender's id (kept by the room on the reflection).
        id: Option<String>,
        /// The body, if any (subjects and chat states have none).
        body: Option<String>,
        /// History or archive (delay-stamped), not live.
        delayed: bool,
    },
    /// A message error (a room refusing ours, a user's client bouncing).
    MessageError {
        /// About which message.
        id: Option<String>,
        /// Condition name.
        condition: String,
        /// Text, if any.
        text: String,
    },
    /// A message with a body to one of our JIDs (chat, normal or headline), not from a room.
    Chat {
        /// Sender.
        from: Jid,
        /// Which of our JIDs.
        to: Jid,
        /// Its id.
        id: Option<String>,
        /// Its body.
        body: String,
        /// It asks for a receipt (XEP-0184).
        wants_receipt: bool,
    },
    /// An iq get or set addressed to us.
    Request {
        /// Sender.
        from: Jid,
        /// Which of our JIDs.
        to: Jid,
        /// Iq id.
        id: String,
        /// `get` (or `set`).
        get: bool,
        /// Its payload.
        payload: Element,
    },
    /// The answer to one of our iqs: `condition` is `None` for a result.
    Answer {
        /// Iq id.
        id: String,
        /// The error's condition, if it is one.
        condition: Option<String>,
        /// The error's text.
        text: String,
    },
    /// A presence from a user (not a room) to one of our JIDs.
    Presence {
        /// Sender.
        from: Jid,
        /// Which of our JIDs.
        to: Jid,
        /// Subscribe, probe, unsubscribe…
        kind: PresenceType,
    },
    /// Anything else.
    Ignored,
}

/// The name of a defined condition, as on the wire (`not-acceptable`).
pub(crate) fn condition_name(error: &StanzaError) -> String {
    let debug = format!("{:?}", error.defined_condition);
    let word: String = debug.chars().take_while(|c| c.is_alphanumeric()).collect();
    let mut out = String::with_capacity(word.len() + 4);
    for (i, c) in word.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn error_text(error: &StanzaError) -> String {
    error.texts.values().next().cloned().unwrap_or_default()
}

/// Reads one stanza; `rooms` is the MUC service's domain.
pub(crate) fn read(stanza: Stanza, rooms: &str) -> Inbound {
    match stanza {
        Stanza::Message(m) => read_message(m, rooms),
        Stanza::Presence(p) => read_presence(p, rooms),
        Stanza::Iq(iq) => read_iq(iq),
    }
}

/// `room/nick` when `jid` is an occupant JID on the MUC service.
fn occupant(jid: &Jid, rooms: &str) -> Option<(String, String)> {
    if jid.domain().as_str() != rooms {
        return None;
    }
    let room = jid.node()?.as_str().to_owned();
    let nick = jid.resource()?.as_str().to_owned();
    Some((room, nick))
}

fn read_message(m: Message, rooms: &str) -> Inbound {
    let (Some(from), Some(to)) = (m.from.clone(), m.to.clone()) else {
        return Inbound::Ignored;
    };
    let id = m.id.as_ref().map(|i| i.0.clone());
    if m.type_ == MessageType::Error {
        let error = m
            .payloads
            .iter()
            .find(|p| p.is("error", ns::DEFAULT_NS))
            .and_then(|e| StanzaError::try_from(e.clone()).ok());
        return Inbound::MessageError {
            id,
            condition: error.as_ref().map(condition_name).unwrap_or_default(),
            text: error.as_ref().map(error_text).unwrap_or_default(),
        };
    }
    let body = m.get_best_body_cloned(vec![]).map(|(_, b)| b);
    let delayed = m.payloads.iter().any(|p| p.is("delay", ns::DELAY));
    if m.type_ == MessageType::Groupchat {
        let Some((room, nick)) = occupant(&from, rooms) else {
            return Inbound::Ignored;
        };
        return Inbound::Groupchat {
            room,
            nick,
            to,
            id,
            body,
            delayed,
        };
    }
    // Private messages through a room are not relayed: the mesh knows no room nicks.
    if from.domain().as_str() == rooms {
        return Inbound::Ignored;
    }
    let Some(body) = body else {
        return Inbound::Ignored;
    };
    let wants_receipt = m.payloads.iter().any(|p| p.is("request", ns::RECEIPTS));
    Inbound::Chat {
        from,
        to,
        id,
        body,
        wants_receipt,
    }
}

/// MUC status codes of a `muc#user` element.
fn status_codes(x: &Element) -> Vec<u16> {
    x.children()
        .filter(|c| c.is("status", ns::MUC_USER))
        .filter_map(|c| c.attr("code").and_then(|v| v.parse().ok()))
        .collect()
}

fn read_presence(p: Presence, rooms: &str) -> Inbound {
    let (Some(from), Some(to)) = (p.from.clone(), p.to.clone()) else {
        return Inbound::Ignored;
    };
    let Some((room, nick)) = occupant(&from, rooms) else {
        if from.domain().as_str() == rooms {
            return Inbound::Ignored;
        }
        return Inbound::Presence {
            from,
            to,
            kind: p.type_,
        };
    };
    let x = p.payloads.iter().find(|e| e.is("x", ns::MUC_USER));
    let codes = x.map(status_codes).unwrap_or_default();
    let is_self = codes.contains(&110);
    let what = match p.type_ {
        PresenceType::Error => {
            let error = p
                .payloads
                .iter()
                .find(|e| e.is("error", ns::DEFAULT_NS))
                .and_then(|e| StanzaError::try_from(e.clone()).ok());
            RoomPresence::Error {
                condition: error.as_ref().map(condition_name).unwrap_or_default(),
                text: error.as_ref().map(error_text).unwrap_or_default(),
            }
        }
        PresenceType::Unavailable if is_self => RoomPresence::SelfLeft { codes },
        PresenceType::Unavailable => RoomPresence::OccupantLeft,
        PresenceType::None if is_self => RoomPresence::SelfJoined {
            created: codes.contains(&201),
        },
        PresenceType::None => {
            let real_jid = x
                .and_then(|x| x.get_child("item", ns::MUC_USER))
                .and_then(|item| item.attr("jid"))
                .and_then(|j| Jid::new(j).ok())
                .map(|j| j.to_string());
            RoomPresence::Occupant { real_jid }
        }
        _ => return Inbound::Ignored,
    };
    Inbound::Room {
        room,
        nick,
        to,
        what,
    }
}

fn read_iq(iq: Iq) -> Inbound {
    match iq {
        Iq::Get {
            from: Some(from),
            to: Some(to),
            id,
            payload,
        } => Inbound::Request {
            from,
            to,
            id,
            get: true,
            payload,
        },
        Iq::Set {
            from: Some(from),
            to: Some(to),
            id,
            payload,
        } => Inbound::Request {
            from,
            to,
            id,
            get: false,
            payload,
        },
        Iq::Result { id, .. } => Inbound::Answer {
            id,
            condition: None,
            text: String::new(),
        },
        Iq::Error { id, error, .. } => Inbound::Answer {
            id,
            condition: Some(condition_name(&error)),
            text: error_text(&error),
        },
        _ => Inbound::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(xml: &str) -> Stanza {
        let element: Element = xml.parse().expect("test XML");
        match element.name() {
            "message" => Stanza::Message(Message::try_from(element).expect("message")),
            "presence" => Stanza::Presence(Presence::try_from(element).expect("presence")),
            _ => Stanza::Iq(Iq::try_from(element).expect("iq")),
        }
    }

    const NS: &str = "jabber:component:accept";

    #[test]
    fn a_room_message_names_room_nick_and_whether_it_is_history() {
        let s = stanza(&format!(
            "<message xmlns='{NS}' type='groupchat' from='lobby@rooms.hub.lan/Alice' \
             to='bridge@mesh.hub.lan/archipel' id='m1'><body xml:lang='en'>hi</body>\
             <delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/></message>"
        ));
        let Inbound::Groupchat {
            room,
            nick,
            id,
            body,
            delayed,
            ..
        } = read(s, "rooms.hub.lan")
        else {
            panic!("not a groupchat")
        };
        assert_eq!((room.as_str(), nick.as_str()), ("lobby", "Alice"));
        assert_eq!((id.as_deref(), body.as_deref()), (Some("m1"), Some("hi")));
        assert!(delayed);
    }

    #[test]
    fn a_self_presence_and_a_kick_are_told_apart() {
        let joined = stanza(&format!(
            "<presence xmlns='{NS}' from='lobby@rooms.hub.lan/archipel' to='bridge@mesh.hub.lan/archipel'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator'/>\
             <status code='110'/><status code='201'/></x></presence>"
        ));
        assert!(matches!(
            read(joined, "rooms.hub.lan"),
            Inbound::Room {
                what: RoomPresence::SelfJoined { created: true },
                ..
            }
        ));
        let kicked = stanza(&format!(
            "<presence xmlns='{NS}' type='unavailable' from='lobby@rooms.hub.lan/archipel' \
             to='bridge@mesh.hub.lan/archipel'><x xmlns='http://jabber.org/protocol/muc#user'>\
             <item role='none'/><status code='307'/><status code='110'/></x></presence>"
        ));
        let Inbound::Room {
            what: RoomPresence::SelfLeft { codes },
            ..
        } = read(kicked, "rooms.hub.lan")
        else {
            panic!("not a departure")
        };
        assert!(codes.contains(&307));
    }

    #[test]
    fn an_occupant_presence_carries_the_real_jid() {
        let s = stanza(&format!(
            "<presence xmlns='{NS}' from='lobby@rooms.hub.lan/Alice' to='bridge@mesh.hub.lan/archipel'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item jid='alice@hub.lan/phone' role='participant'/></x></presence>"
        ));
        let Inbound::Room { what, .. } = read(s, "rooms.hub.lan") else {
            panic!("not a room presence")
        };
        assert_eq!(
            what,
            RoomPresence::Occupant {
                real_jid: Some("alice@hub.lan/phone".into())
            }
        );
    }

    #[test]
    fn errors_read_as_condition_names() {
        let s = stanza(&format!(
            "<presence xmlns='{NS}' type='error' from='lobby@rooms.hub.lan/Amira' to='!a1b2c3d4@mesh.hub.lan/archipel'>\
             <error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
        ));
        let Inbound::Room {
            what: RoomPresence::Error { condition, .. },
            ..
        } = read(s, "rooms.hub.lan")
        else {
            panic!("not an error")
        };
        assert_eq!(condition, "conflict");
        let iq = stanza(&format!(
            "<iq xmlns='{NS}' type='error' id='p1' from='lobby@rooms.hub.lan/archipel'>\
             <error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>not in room</text></error></iq>"
        ));
        let Inbound::Answer {
            condition, text, ..
        } = read(iq, "rooms.hub.lan")
        else {
            panic!("not an answer")
        };
        assert_eq!(
            (condition.as_deref(), text.as_str()),
            (Some("not-acceptable"), "not in room")
        );
    }

    #[test]
    fn a_chat_with_a_receipt_request_and_a_bare_message_without_body() {
        let s = stanza(&format!(
            "<message xmlns='{NS}' type='chat' from='alice@hub.lan/phone' to='!a1b2c3d4@mesh.hub.lan' id='c1'>\
             <body>hello</body><request xmlns='urn:xmpp:receipts'/></message>"
        ));
        let Inbound::Chat {
            body,
            wants_receipt,
            ..
        } = read(s, "rooms.hub.lan")
        else {
            panic!("not a chat")
        };
        assert_eq!(body, "hello");
        assert!(wants_receipt);
        let typing = stanza(&format!(
            "<message xmlns='{NS}' type='chat' from='alice@hub.lan/phone' to='!a1b2c3d4@mesh.hub.lan'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ));
        assert!(matches!(read(typing, "rooms.hub.lan"), Inbound::Ignored));
    }
}
