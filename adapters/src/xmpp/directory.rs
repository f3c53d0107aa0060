//! The contacts the component shows: one JID `local@domain` per mesh node, with presence,
//! a status line, a vCard and disco#info, plus disco on the bare domain. No I/O: each method
//! returns the stanzas to send.
//!
//! Subscriptions are approved at once. Who subscribed is remembered for this process only:
//! after a restart the users' servers probe their contacts when the users log in again, and
//! a probe puts the prober back on the list.

use std::collections::{BTreeSet, HashMap};

use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Type as PresenceType;

use super::config::Contact;
use super::stanza::{self, ErrorCondition};

/// What disco#info on the bare domain announces.
pub(crate) const DOMAIN_FEATURES: [&str; 4] = [ns::DISCO_INFO, ns::VCARD, ns::PING, ns::RECEIPTS];

/// The contacts and who follows them.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    /// The component's domain.
    domain: String,
    /// By local part.
    contacts: HashMap<String, Contact>,
    /// Local part → bare JIDs that subscribed to it (or probed it) in this process.
    followers: HashMap<String, BTreeSet<String>>,
}

impl Directory {
    /// An empty directory on `domain`.
    pub(crate) fn new(domain: &str) -> Directory {
        Directory {
            domain: domain.to_owned(),
            ..Directory::default()
        }
    }

    fn jid(&self, local: &str) -> Option<Jid> {
        if local.is_empty() {
            Jid::new(&self.domain).ok()
        } else {
            Jid::new(&format!("{local}@{}", self.domain)).ok()
        }
    }

    /// Sets or replaces a contact; its followers get its presence.
    pub(crate) fn set(&mut self, contact: Contact) -> Vec<Stanza> {
        let local = contact.local.clone();
        self.contacts.insert(local.clone(), contact);
        self.broadcast(&local)
    }

    /// Every contact's presence to every follower (after a reconnect).
    pub(crate) fn rebroadcast(&self) -> Vec<Stanza> {
        self.followers
            .keys()
            .flat_map(|local| self.broadcast(local))
            .collect()
    }

    /// Unavailable from every contact to its followers (shutting down).
    pub(crate) fn goodbye(&self) -> Vec<Stanza> {
        let mut out = Vec::new();
        for (local, followers) in &self.followers {
            let Some(from) = self.jid(local) else {
                continue;
            };
            for follower in followers {
                if let Ok(to) = Jid::new(follower) {
                    out.push(stanza::unavailable(from.clone(), to));
                }
            }
        }
        out
    }

    fn broadcast(&self, local: &str) -> Vec<Stanza> {
        let (Some(contact), Some(from)) = (self.contacts.get(local), self.jid(local)) else {
            return Vec::new();
        };
        self.followers
            .get(local)
            .into_iter()
            .flatten()
            .filter_map(|f| Jid::new(f).ok())
            .map(|to| stanza::contact_presence(from.clone(), to, contact))
            .collect()
    }

    /// A user's presence to `to_local@domain`.
    pub(crate) fn presence(
        &mut self,
        from: &Jid,
        to_local: &str,
        kind: &PresenceType,
    ) -> Vec<Stanza> {
        let Some(us) = self.jid(to_local) else {
            return Vec::new();
        };
        let follower = from.to_bare().to_string();
        let back: Jid = from.to_bare().into();
        let known = self.contacts.get(to_local);
        match kind {
            PresenceType::Subscribe if known.is_some() => {
                self.followers
                    .entry(to_local.to_owned())
                    .or_default()
                    .insert(follower);
                let mut out = vec![stanza::presence_of(
                    PresenceType::Subscribed,
                    us.clone(),
                    back.clone(),
                )];
                out.extend(known.map(|c| stanza::contact_presence(us, back, c)));
                out
            }
            PresenceType::Subscribe => {
                vec![stanza::presence_of(PresenceType::Unsubscribed, us, back)]
            }
            PresenceType::Probe => match known {
                Some(contact) => {
                    let out = vec![stanza::contact_presence(us, from.clone(), contact)];
                    self.followers
                        .entry(to_local.to_owned())
                        .or_default()
                        .insert(follower);
                    out
                }
                None => vec![stanza::presence_of(PresenceType::Unsubscribed, us, back)],
            },
            PresenceType::Unsubscribe | PresenceType::Unsubscribed => {
                if let Some(set) = self.followers.get_mut(to_local) {
                    set.remove(&follower);
                }
                if *kind == PresenceType::Unsubscribe {
                    vec![stanza::presence_of(PresenceType::Unsubscribed, us, back)]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    /// An iq get/set to `to_local@domain` (`""`: the bare domain): the answer.
    pub(crate) fn request(
        &self,
        from: Jid,
        to: Jid,
        to_local: &str,
        id: String,
        get: bool,
        payload: &Element,
    ) -> Stanza {
        let contact = self.contacts.get(to_local);
        let unknown = !to_local.is_empty() && contact.is_none();
        if get && payload.is("ping", ns::PING) {
            return stanza::iq_result(to, from, id, None);
        }
        if get && payload.is("query", ns::DISCO_INFO) {
            if to_local.is_empty() {
                let info = stanza::disco_info(
                    "gateway",
                    "meshtastic",
                    "Archipel mesh gateway",
                    &DOMAIN_FEATURES,
                );
                return stanza::iq_result(to, from, id, Some(info));
            }
            if let Some(c) = contact {
                let name = c.long_name.as_deref().unwrap_or(&c.local);
                let features = [ns::DISCO_INFO, ns::VCARD, ns::PING, ns::RECEIPTS];
                let info = stanza::disco_info("client", "handheld", name, &features);
                return stanza::iq_result(to, from, id, Some(info));
            }
        }
        if get && payload.is("query", ns::DISCO_ITEMS) && !unknown {
            return stanza::iq_result(to, from, id, Some(stanza::disco_items()));
        }
        if get
            && payload.is("vCard", ns::VCARD)
            && let Some(c) = contact
        {
            return stanza::iq_result(to, from, id, Some(stanza::vcard(c)));
        }
        if unknown {
            return stanza::iq_error(
                to,
                from,
                id,
                ErrorCondition::ItemNotFound,
                &format!("no node {to_local} here"),
            );
        }
        stanza::iq_error(
            to,
            from,
            id,
            ErrorCondition::ServiceUnavailable,
            "not offered here",
        )
    }
}

/// Our local part of `jid` when it is on `domain` (`""` for the bare domain).
pub(crate) fn our_local(jid: &Jid, domain: &str) -> Option<String> {
    let bare: BareJid = jid.to_bare();
    (bare.domain().as_str() == domain).then(|| {
        bare.node()
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_xmpp::parsers::iq::Iq;
    use tokio_xmpp::parsers::presence::Presence;

    fn node(local: &str) -> Contact {
        Contact {
            local: local.into(),
            available: false,
            status: "heard 4 min ago".into(),
            long_name: Some("Harbour Relay".into()),
            short_name: Some("HR".into()),
            hardware: Some("RAK4631".into()),
        }
    }

    fn jid(s: &str) -> Jid {
        Jid::new(s).expect("test JID")
    }

    #[test]
    fn a_subscription_is_approved_and_followed_by_presence_updates() {
        let mut d = Directory::new("mesh.hub.lan");
        d.set(node("!a1b2c3d4"));
        let out = d.presence(
            &jid("alice@hub.lan/phone"),
            "!a1b2c3d4",
            &PresenceType::Subscribe,
        );
        let kinds: Vec<PresenceType> = out
            .into_iter()
            .map(|s| match s {
                Stanza::Presence(p) => p.type_,
                _ => panic!("not a presence"),
            })
            .collect();
        assert_eq!(kinds, [PresenceType::Subscribed, PresenceType::None]);
        let mut changed = node("!a1b2c3d4");
        changed.available = true;
        let update = d.set(changed);
        let [Stanza::Presence(p)] = update.as_slice() else {
            panic!("one presence: {update:?}")
        };
        let p: &Presence = p;
        assert_eq!(
            p.to.as_ref().map(|j| j.to_string()).as_deref(),
            Some("alice@hub.lan")
        );
        assert_eq!(p.show, None);
    }

    #[test]
    fn unknown_nodes_refuse_subscriptions_and_answer_item_not_found() {
        let mut d = Directory::new("mesh.hub.lan");
        let out = d.presence(
            &jid("alice@hub.lan/phone"),
            "!ffffffff",
            &PresenceType::Subscribe,
        );
        assert!(matches!(&out[..], [Stanza::Presence(p)] if p.type_ == PresenceType::Unsubscribed));
        let vcard = Element::builder("vCard", ns::VCARD).build();
        let answer = d.request(
            jid("alice@hub.lan/phone"),
            jid("!ffffffff@mesh.hub.lan"),
            "!ffffffff",
            "q1".into(),
            true,
            &vcard,
        );
        assert!(matches!(answer, Stanza::Iq(Iq::Error { .. })));
    }

    #[test]
    fn the_vcard_and_the_domain_disco_answer_from_what_is_known() {
        let mut d = Directory::new("mesh.hub.lan");
        d.set(node("!a1b2c3d4"));
        let vcard = Element::builder("vCard", ns::VCARD).build();
        let Stanza::Iq(Iq::Result {
            payload: Some(card),
            ..
        }) = d.request(
            jid("alice@hub.lan/phone"),
            jid("!a1b2c3d4@mesh.hub.lan"),
            "!a1b2c3d4",
            "q1".into(),
            true,
            &vcard,
        )
        else {
            panic!("no vCard")
        };
        assert_eq!(
            card.get_child("FN", ns::VCARD).map(|e| e.text()).as_deref(),
            Some("Harbour Relay")
        );
        let disco = Element::builder("query", ns::DISCO_INFO).build();
        let Stanza::Iq(Iq::Result {
            payload: Some(info),
            ..
        }) = d.request(
            jid("alice@hub.lan/phone"),
            jid("mesh.hub.lan"),
            "",
            "q2".into(),
            true,
            &disco,
        )
        else {
            panic!("no disco")
        };
        let identity = info
            .get_child("identity", ns::DISCO_INFO)
            .expect("identity");
        assert_eq!(
            (identity.attr("category"), identity.attr("type")),
            (Some("gateway"), Some("meshtastic"))
        );
        assert_eq!(info.children().filter(|c| c.name() == "feature").count(), 4);
    }

    #[test]
    fn our_local_reads_only_our_domain() {
        assert_eq!(
            our_local(&jid("!a1b2c3d4@mesh.hub.lan/x"), "mesh.hub.lan").as_deref(),
            Some("!a1b2c3d4")
        );
        assert_eq!(
            our_local(&jid("mesh.hub.lan"), "mesh.hub.lan").as_deref(),
            Some("")
        );
        assert_eq!(our_local(&jid("alice@hub.lan"), "mesh.hub.lan"), None);
    }
}
