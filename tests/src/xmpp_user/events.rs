//! What an [`XmppUser`](super::XmppUser) receives and what its queries return, read from the
//! JSON its client prints (field names as in `tests/python/xmpp_user.py`). Missing fields read as
//! empty or `None`: the far side is what tests probe, so nothing here insists on a shape.

use std::collections::BTreeMap;

use serde_json::Value;

/// Something the user received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmppEvent {
    /// A message in a room (reflections of its own included), live or from history.
    Groupchat(RoomMessage),
    /// A message with a body from a contact (type chat, normal or headline).
    Chat(ChatMessage),
    /// A delivery receipt (XEP-0184) for message `id`.
    Receipt {
        /// Who acknowledged.
        from: String,
        /// The acknowledged message's id.
        id: String,
    },
    /// An error stanza: a message, presence or raw iq refused.
    Error(StanzaError),
    /// A presence outside rooms: availability, status, subscription requests and answers.
    Presence(PresenceUpdate),
    /// An occupant appeared in a room (itself included: code 110).
    OccupantJoined(Occupant),
    /// An occupant present already changed its presence (show, status, role).
    OccupantChanged(Occupant),
    /// An occupant left, was kicked (307) or the room dropped it.
    OccupantLeft(Occupant),
    /// A room's subject (every join ends with one).
    Subject {
        /// The room.
        room: String,
        /// The subject, empty when unset.
        subject: String,
    },
    /// The result of an iq sent with `raw`.
    IqResult {
        /// Who answered.
        from: Option<String>,
        /// The iq's id.
        id: String,
        /// The whole answer.
        xml: String,
    },
    /// The server closed the stream with an error.
    StreamError {
        /// The condition (`conflict`, `system-shutdown`, `policy-violation`...).
        condition: String,
        /// Its text, if any.
        text: Option<String>,
    },
    /// The stream ended (a server restart): `reconnect` brings the user back.
    Disconnected {
        /// What slixmpp said.
        reason: Option<String>,
    },
    /// An event kind this harness does not know (a newer client script).
    Other(String),
}

impl XmppEvent {
    pub(crate) fn from_json(v: &Value) -> XmppEvent {
        match text(v, "event").as_str() {
            "groupchat" => XmppEvent::Groupchat(RoomMessage::from_json(v)),
            "chat" => XmppEvent::Chat(ChatMessage::from_json(v)),
            "receipt" => XmppEvent::Receipt {
                from: text(v, "from"),
                id: text(v, "id"),
            },
            "error" => XmppEvent::Error(StanzaError::from_json(v)),
            "presence" => XmppEvent::Presence(PresenceUpdate::from_json(v)),
            "occupant_joined" => XmppEvent::OccupantJoined(Occupant::from_json(v)),
            "occupant_changed" => XmppEvent::OccupantChanged(Occupant::from_json(v)),
            "occupant_left" => XmppEvent::OccupantLeft(Occupant::from_json(v)),
            "subject" => XmppEvent::Subject {
                room: text(v, "room"),
                subject: text(v, "subject"),
            },
            "iq_result" => XmppEvent::IqResult {
                from: opt(v, "from"),
                id: text(v, "id"),
                xml: text(v, "xml"),
            },
            "stream_error" => XmppEvent::StreamError {
                condition: text(v, "condition"),
                text: opt(v, "text"),
            },
            "disconnected" => XmppEvent::Disconnected {
                reason: opt(v, "reason"),
            },
            _ => XmppEvent::Other(v.to_string()),
        }
    }

    /// The room message, if this is one.
    pub fn groupchat(&self) -> Option<&RoomMessage> {
        match self {
            XmppEvent::Groupchat(m) => Some(m),
            _ => None,
        }
    }

    /// The chat message, if this is one.
    pub fn chat(&self) -> Option<&ChatMessage> {
        match self {
            XmppEvent::Chat(m) => Some(m),
            _ => None,
        }
    }

    /// The stanza error, if this is one.
    pub fn error(&self) -> Option<&StanzaError> {
        match self {
            XmppEvent::Error(e) => Some(e),
            _ => None,
        }
    }
}

/// A message in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMessage {
    /// The room's bare JID.
    pub room: String,
    /// Who said it.
    pub nick: String,
    /// What was said.
    pub body: String,
    /// The sender's message id (the room keeps it on the reflection).
    pub id: Option<String>,
    /// The room's own id for it (XEP-0359 `stanza-id`, the archive id).
    pub stanza_id: Option<String>,
    /// From history or the archive, not live.
    pub delayed: bool,
    /// When the room received it (history and archive only).
    pub stamp: Option<String>,
}

impl RoomMessage {
    pub(crate) fn from_json(v: &Value) -> RoomMessage {
        RoomMessage {
            room: text(v, "room"),
            nick: text(v, "nick"),
            body: text(v, "body"),
            id: opt(v, "id"),
            stanza_id: opt(v, "stanza_id"),
            delayed: v["delayed"].as_bool().unwrap_or(false),
            stamp: opt(v, "stamp"),
        }
    }
}

/// A message from a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// The sender's full JID.
    pub from: String,
    /// What it says.
    pub body: String,
    /// Its id.
    pub id: Option<String>,
    /// Its type: `chat`, `normal` or `headline`.
    pub kind: String,
    /// It asks for a receipt (answered by itself unless `auto_receipts` is off).
    pub receipt_requested: bool,
    /// Delivered late (offline storage).
    pub delayed: bool,
}

impl ChatMessage {
    pub(crate) fn from_json(v: &Value) -> ChatMessage {
        ChatMessage {
            from: text(v, "from"),
            body: text(v, "body"),
            id: opt(v, "id"),
            kind: text(v, "type"),
            receipt_requested: v["receipt_requested"].as_bool().unwrap_or(false),
            delayed: v["delayed"].as_bool().unwrap_or(false),
        }
    }
}

/// Which kind of stanza an error came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StanzaKind {
    /// `<message type='error'>`.
    Message,
    /// `<presence type='error'>`.
    Presence,
    /// `<iq type='error'>`.
    Iq,
}

/// What the error tells the sender to do (RFC 6120 §8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Do not retry.
    Cancel,
    /// Proceed (a warning).
    Continue,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after providing credentials.
    Auth,
    /// Retry after waiting.
    Wait,
    /// No type, or one RFC 6120 does not define.
    Missing,
}

/// An error the far side answered (RFC 6120 §8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    /// The stanza it came on.
    pub kind: StanzaKind,
    /// Who answered.
    pub from: Option<String>,
    /// The id of the stanza it answers.
    pub id: Option<String>,
    /// What the sender should do about it.
    pub error_type: ErrorType,
    /// The defined condition (`item-not-found`, `not-acceptable`, `jid-malformed`...).
    pub condition: String,
    /// The human-readable text, if any.
    pub text: Option<String>,
}

impl StanzaError {
    pub(crate) fn from_json(v: &Value) -> StanzaError {
        StanzaError {
            kind: match text(v, "kind").as_str() {
                "message" => StanzaKind::Message,
                "presence" => StanzaKind::Presence,
                _ => StanzaKind::Iq,
            },
            from: opt(v, "from"),
            id: opt(v, "id"),
            error_type: match text(v, "type").as_str() {
                "cancel" => ErrorType::Cancel,
                "continue" => ErrorType::Continue,
                "modify" => ErrorType::Modify,
                "auth" => ErrorType::Auth,
                "wait" => ErrorType::Wait,
                _ => ErrorType::Missing,
            },
            condition: text(v, "condition"),
            text: opt(v, "text"),
        }
    }
}

impl std::fmt::Display for StanzaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} error {} ({:?}) from {} on id {}",
            self.kind,
            self.condition,
            self.error_type,
            self.from.as_deref().unwrap_or("the server"),
            self.id.as_deref().unwrap_or("-")
        )?;
        if let Some(text) = &self.text {
            write!(f, ": {text}")?;
        }
        Ok(())
    }
}

/// A presence from outside rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceUpdate {
    /// Who sent it.
    pub from: String,
    /// `available`, `unavailable`, `subscribe`, `subscribed`, `unsubscribe`, `unsubscribed`.
    pub kind: String,
    /// `away`, `xa`, `dnd`, `chat`, or `None` (plain available).
    pub show: Option<String>,
    /// The status line.
    pub status: Option<String>,
}

impl PresenceUpdate {
    pub(crate) fn from_json(v: &Value) -> PresenceUpdate {
        PresenceUpdate {
            from: text(v, "from"),
            kind: text(v, "type"),
            show: opt(v, "show"),
            status: opt(v, "status"),
        }
    }
}

/// An occupant of a room, as one presence showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupant {
    /// The room's bare JID.
    pub room: String,
    /// Its nick.
    pub nick: String,
    /// Its real JID, when the room shows it to this user (moderators, non-anonymous rooms).
    pub jid: Option<String>,
    /// `moderator`, `participant`, `visitor`, `none`.
    pub role: Option<String>,
    /// `owner`, `admin`, `member`, `outcast`, `none`.
    pub affiliation: Option<String>,
    /// The new nick on a nick change (code 303).
    pub new_nick: Option<String>,
    /// MUC status codes: 110 itself, 201 room created, 307 kicked, 303 nick change, 332
    /// system shutdown.
    pub codes: Vec<u16>,
    /// `away`, `xa`, `dnd`, `chat`, or `None`.
    pub show: Option<String>,
    /// Its status line.
    pub status: Option<String>,
    /// The reason given for a kick or ban.
    pub reason: Option<String>,
}

impl Occupant {
    pub(crate) fn from_json(v: &Value) -> Occupant {
        Occupant {
            room: text(v, "room"),
            nick: text(v, "nick"),
            jid: opt(v, "jid"),
            role: opt(v, "role"),
            affiliation: opt(v, "affiliation"),
            new_nick: opt(v, "new_nick"),
            codes: v["codes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_u64().and_then(|c| u16::try_from(c).ok()))
                        .collect()
                })
                .unwrap_or_default(),
            show: opt(v, "show"),
            status: opt(v, "status"),
            reason: opt(v, "reason"),
        }
    }

    /// The presence is about the user itself (status code 110).
    pub fn is_self(&self) -> bool {
        self.codes.contains(&110)
    }

    /// It was kicked (status code 307).
    pub fn was_kicked(&self) -> bool {
        self.codes.contains(&307)
    }
}

/// What a join returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The nick the room gave (the one asked for, or the room's rewrite of it).
    pub nick: String,
    /// Status codes of its own presence (201: it created the room).
    pub codes: Vec<u16>,
    /// Who was there, itself included.
    pub occupants: Vec<Occupant>,
    /// The history asked for, oldest first.
    pub history: Vec<RoomMessage>,
    /// The room's subject.
    pub subject: Option<String>,
}

impl Joined {
    pub(crate) fn from_json(v: &Value) -> Joined {
        Joined {
            nick: text(v, "nick"),
            codes: Occupant::from_json(v).codes,
            occupants: list(v, "occupants", Occupant::from_json),
            history: list(v, "history", RoomMessage::from_json),
            subject: opt(v, "subject"),
        }
    }
}

/// A vCard (XEP-0054).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VCard {
    /// Each element with text by its path: `FN`, `NICKNAME`, `N/GIVEN`, `DESC`...
    pub fields: BTreeMap<String, String>,
    /// The whole `<vCard/>`.
    pub xml: String,
}

impl VCard {
    pub(crate) fn from_json(v: &Value) -> VCard {
        VCard {
            fields: v["fields"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            xml: text(v, "xml"),
        }
    }

    /// The text at `path`, if present.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.fields.get(path).map(String::as_str)
    }
}

/// One identity in service discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `gateway`, `conference`, `client`, `server`...
    pub category: String,
    /// Its type within the category.
    pub kind: String,
    /// Its name, if given.
    pub name: Option<String>,
}

/// Service discovery information (XEP-0030 `disco#info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoInfo {
    /// What the entity is.
    pub identities: Vec<Identity>,
    /// The features it announces.
    pub features: Vec<String>,
}

impl DiscoInfo {
    pub(crate) fn from_json(v: &Value) -> DiscoInfo {
        DiscoInfo {
            identities: list(v, "identities", |i| Identity {
                category: text(i, "category"),
                kind: text(i, "type"),
                name: opt(i, "name"),
            }),
            features: v["features"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// It announces `feature`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// One service discovery item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoItem {
    /// Its JID.
    pub jid: String,
    /// Its name, if given.
    pub name: Option<String>,
    /// Its node, if any.
    pub node: Option<String>,
}

impl DiscoItem {
    pub(crate) fn from_json(v: &Value) -> DiscoItem {
        DiscoItem {
            jid: text(v, "jid"),
            name: opt(v, "name"),
            node: opt(v, "node"),
        }
    }
}

/// One roster entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    /// `none`, `to`, `from`, `both`.
    pub subscription: String,
    /// The name given to the contact, if any.
    pub name: Option<String>,
}

impl RosterItem {
    pub(crate) fn from_json(v: &Value) -> RosterItem {
        RosterItem {
            subscription: text(v, "subscription"),
            name: opt(v, "name").filter(|n| !n.is_empty()),
        }
    }
}

fn text(v: &Value, key: &str) -> String {
    opt(v, key).unwrap_or_default()
}

fn opt(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn list<T>(v: &Value, key: &str, each: impl Fn(&Value) -> T) -> Vec<T> {
    v[key]
        .as_array()
        .map(|a| a.iter().map(each).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_groupchat_line_reads_as_a_room_message() {
        let v = json!({"event": "groupchat", "room": "lobby@rooms.hub.lan", "nick": "Amira",
            "body": "hi", "id": "m1", "stanza_id": "s1", "delayed": false, "stamp": null});
        let XmppEvent::Groupchat(m) = XmppEvent::from_json(&v) else {
            panic!("not a groupchat")
        };
        assert_eq!((m.nick.as_str(), m.body.as_str()), ("Amira", "hi"));
        assert_eq!(m.id.as_deref(), Some("m1"));
        assert_eq!(m.stamp, None);
        assert!(!m.delayed);
    }

    #[test]
    fn missing_fields_and_unknown_kinds_do_not_panic() {
        assert!(matches!(
            XmppEvent::from_json(&json!({"event": "new-kind"})),
            XmppEvent::Other(_)
        ));
        let e = XmppEvent::from_json(&json!({"event": "error"}));
        let err = e.error().expect("an error");
        assert_eq!(err.condition, "");
        assert_eq!(err.kind, StanzaKind::Iq);
        let o = Occupant::from_json(&json!({"codes": [110, "x", 70000, 307]}));
        assert!(o.is_self() && o.was_kicked());
        assert_eq!(o.codes, vec![110, 307]);
    }

    #[test]
    fn a_stanza_error_says_what_where_and_why() {
        let e = StanzaError::from_json(
            &json!({"kind": "message", "from": "!a1b2c3d4@mesh.hub.lan",
            "id": "c1", "type": "modify", "condition": "not-acceptable", "text": "over 200 bytes"}),
        );
        assert_eq!(
            e.to_string(),
            "Message error not-acceptable (Modify) from !a1b2c3d4@mesh.hub.lan on id c1: over 200 bytes"
        );
    }
}
