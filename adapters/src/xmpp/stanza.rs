//! Building the stanzas the link sends. Payloads the parsers have no handy type for (MUC join,
//! the room configuration form, vCard, disco) are built as plain elements.

use tokio_xmpp::Stanza;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::{Element, rxml::xml_ncname};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Id, Lang, Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Show, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use super::config::{Contact, RoomSpec};

/// `muc#owner`: the room configuration namespace.
pub(crate) const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

/// Errors the gateway may bounce (the RFC 6120 conditions it needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCondition {
    /// No such node or JID.
    ItemNotFound,
    /// The content cannot be taken (too long, not text).
    NotAcceptable,
    /// A local rule forbids it (rate, size).
    PolicyViolation,
    /// Out of room (queue full): try later.
    ResourceConstraint,
    /// The node exists but cannot be reached now.
    RecipientUnavailable,
    /// Malformed.
    BadRequest,
    /// The service does not offer this.
    ServiceUnavailable,
}

impl ErrorCondition {
    fn parts(self) -> (ErrorType, DefinedCondition) {
        match self {
            ErrorCondition::ItemNotFound => (ErrorType::Cancel, DefinedCondition::ItemNotFound),
            ErrorCondition::NotAcceptable => (ErrorType::Modify, DefinedCondition::NotAcceptable),
            ErrorCondition::PolicyViolation => {
                (ErrorType::Modify, DefinedCondition::PolicyViolation)
            }
            ErrorCondition::ResourceConstraint => {
                (ErrorType::Wait, DefinedCondition::ResourceConstraint)
            }
            ErrorCondition::RecipientUnavailable => {
                (ErrorType::Wait, DefinedCondition::RecipientUnavailable)
            }
            ErrorCondition::BadRequest => (ErrorType::Modify, DefinedCondition::BadRequest),
            ErrorCondition::ServiceUnavailable => {
                (ErrorType::Cancel, DefinedCondition::ServiceUnavailable)
            }
        }
    }

    /// The stanza error for this condition with `text`.
    pub(crate) fn to_error(self, text: &str) -> StanzaError {
        let (kind, condition) = self.parts();
        StanzaError::new(kind, condition, "en", text)
    }
}

/// A child `name` in `ns` with `text`.
fn text_el(name: &str, ns: &str, text: &str) -> Element {
    Element::builder(name, ns).append(text.to_owned()).build()
}

/// Join presence for `from` to `room_jid/nick`, asking for no history.
pub(crate) fn join(from: Jid, to: Jid) -> Stanza {
    let history = Element::builder("history", ns::MUC)
        .attr(xml_ncname!("maxstanzas").into(), "0")
        .build();
    let x = Element::builder("x", ns::MUC).append(history).build();
    let mut presence = Presence::available().with_from(from).with_to(to);
    presence.payloads.push(x);
    presence.into()
}

/// Unavailable presence from `from` to `to` (leaving a room, going offline).
pub(crate) fn unavailable(from: Jid, to: Jid) -> Stanza {
    Presence::unavailable().with_from(from).with_to(to).into()
}

/// The room configuration submitted by its owner: persistent, public, archived, named.
pub(crate) fn configure(from: Jid, room: Jid, spec: &RoomSpec, id: String) -> Stanza {
    let field = |var: &str, value: &str| {
        Element::builder("field", ns::DATA_FORMS)
            .attr(xml_ncname!("var").into(), var)
            .append(text_el("value", ns::DATA_FORMS, value))
            .build()
    };
    let form = Element::builder("x", ns::DATA_FORMS)
        .attr(xml_ncname!("type").into(), "submit")
        .append(field(
            "FORM_TYPE",
            "http://jabber.org/protocol/muc#roomconfig",
        ))
        .append(field("muc#roomconfig_roomname", &spec.name))
        .append(field("muc#roomconfig_roomdesc", &spec.description))
        .append(field("muc#roomconfig_persistentroom", "1"))
        .append(field("muc#roomconfig_publicroom", "1"))
        .append(field("muc#roomconfig_enablearchiving", "1"))
        .build();
    let query = Element::builder("query", MUC_OWNER).append(form).build();
    Iq::Set {
        from: Some(from),
        to: Some(room),
        id,
        payload: query,
    }
    .into()
}

/// A groupchat message to `room` with our `id`.
pub(crate) fn groupchat(from: Jid, room: Jid, id: String, body: String) -> Stanza {
    let mut message = Message::groupchat(Some(room)).with_body(Lang::new(), body);
    message.from = Some(from);
    message.id = Some(Id(id));
    message.into()
}

/// A chat message.
pub(crate) fn chat(from: Jid, to: Jid, id: String, body: String) -> Stanza {
    let mut message = Message::chat(Some(to)).with_body(Lang::new(), body);
    message.from = Some(from);
    message.id = Some(Id(id));
    message.into()
}

/// A XEP-0184 receipt for message `id`.
pub(crate) fn receipt(from: Jid, to: Jid, id: &str) -> Stanza {
    let received = Element::builder("received", ns::RECEIPTS)
        .attr(xml_ncname!("id").into(), id)
        .build();
    let mut message = Message::new(Some(to));
    message.type_ = MessageType::Normal;
    message.from = Some(from);
    message.payloads.push(received);
    message.into()
}

/// A message error about message `id`.
pub(crate) fn message_error(from: Jid, to: Jid, id: Option<&str>, error: StanzaError) -> Stanza {
    let mut message = Message::error(Some(to));
    message.from = Some(from);
    message.id = id.map(|i| Id(i.to_owned()));
    message.payloads.push(error.into());
    message.into()
}

/// A XEP-0199 ping.
pub(crate) fn ping(from: Jid, to: Jid, id: String) -> Stanza {
    Iq::Get {
        from: Some(from),
        to: Some(to),
        id,
        payload: Element::builder("ping", ns::PING).build(),
    }
    .into()
}

/// An empty iq result.
pub(crate) fn iq_result(from: Jid, to: Jid, id: String, payload: Option<Element>) -> Stanza {
    Iq::Result {
        from: Some(from),
        to: Some(to),
        id,
        payload,
    }
    .into()
}

/// An iq error.
pub(crate) fn iq_error(
    from: Jid,
    to: Jid,
    id: String,
    condition: ErrorCondition,
    text: &str,
) -> Stanza {
    Iq::Error {
        from: Some(from),
        to: Some(to),
        id,
        error: condition.to_error(text),
        payload: None,
    }
    .into()
}

/// A presence of type `kind` (subscribed, unsubscribed) from `from` to `to`.
pub(crate) fn presence_of(kind: PresenceType, from: Jid, to: Jid) -> Stanza {
    Presence::new(kind).with_from(from).with_to(to).into()
}

/// A contact's presence: available, or away, with its status line.
pub(crate) fn contact_presence(from: Jid, to: Jid, contact: &Contact) -> Stanza {
    let mut presence = Presence::available().with_from(from).with_to(to);
    if !contact.available {
        presence.show = Some(Show::Away);
    }
    if !contact.status.is_empty() {
        presence.set_status("", contact.status.as_str());
    }
    presence.into()
}

/// A contact's vCard (vcard-temp).
pub(crate) fn vcard(contact: &Contact) -> Element {
    let mut card = Element::builder("vCard", ns::VCARD).append(text_el(
        "FN",
        ns::VCARD,
        contact.long_name.as_deref().unwrap_or(&contact.local),
    ));
    if let Some(short) = &contact.short_name {
        card = card.append(text_el("NICKNAME", ns::VCARD, short));
    }
    if let Some(hardware) = &contact.hardware {
        card = card.append(text_el("DESC", ns::VCARD, hardware));
    }
    card.build()
}

/// A disco#info answer with one identity and `features`.
pub(crate) fn disco_info(category: &str, kind: &str, name: &str, features: &[&str]) -> Element {
    let identity = Element::builder("identity", ns::DISCO_INFO)
        .attr(xml_ncname!("category").into(), category)
        .attr(xml_ncname!("type").into(), kind)
        .attr(xml_ncname!("name").into(), name)
        .build();
    let mut query = Element::builder("query", ns::DISCO_INFO).append(identity);
    for feature in features {
        query = query.append(
            Element::builder("feature", ns::DISCO_INFO)
                .attr(xml_ncname!("var").into(), *feature)
                .build(),
        );
    }
    query.build()
}

/// An empty disco#items answer.
pub(crate) fn disco_items() -> Element {
    Element::builder("query", ns::DISCO_ITEMS).build()
}
