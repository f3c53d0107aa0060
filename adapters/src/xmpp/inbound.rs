//! What the link does with a stanza from the server and with a request from its owner, once
//! the stream is up. Decisions about rooms are the [`Rooms`](super::rooms::Rooms)'; contacts
//! are the [`Directory`](super::directory::Directory)'s; this file routes between them.

use mesh_core::DeliveryStatus;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::Jid;
use tracing::debug;

use super::directory::our_local;
use super::handle::{ChatMessage, Request, RoomMessage, XmppCounters, XmppEvent};
use super::link::Link;
use super::parse::{self, Inbound, RoomPresence};
use super::rooms::Who;
use super::stanza::{self, ErrorCondition};

impl Link {
    /// Which of our occupants `to` is, in rooms.
    fn who(&self, to: &Jid) -> Option<Who> {
        let local = our_local(to, &self.config.domain)?;
        if local.is_empty() {
            return None;
        }
        if to.to_string() == self.config.bridge_jid() {
            return Some(Who::Bridge);
        }
        Some(Who::Node(local))
    }

    /// One stanza from the server.
    pub(super) fn inbound(&mut self, s: Stanza, out: &mut Vec<Stanza>) {
        let now = std::time::Instant::now();
        match parse::read(s, &self.config.rooms) {
            Inbound::Room {
                room,
                nick,
                to,
                what,
            } => {
                let Some(who) = self.who(&to) else { return };
                if !self.rooms.is_kept(&room) {
                    return;
                }
                let actions = match what {
                    RoomPresence::SelfJoined { created } => {
                        self.rooms.joined(&room, &who, &nick, created, now)
                    }
                    RoomPresence::SelfLeft { codes } => {
                        self.rooms.left(&room, &who, &nick, &codes, now)
                    }
                    RoomPresence::Error { condition, text } => {
                        self.rooms.join_refused(&room, &who, &condition, &text, now)
                    }
                    RoomPresence::Occupant { real_jid } => {
                        if who == Who::Bridge {
                            self.rooms.speaker(&room, &nick, real_jid);
                        }
                        Vec::new()
                    }
                    RoomPresence::OccupantLeft => {
                        if who == Who::Bridge {
                            self.rooms.speaker_left(&room, &nick);
                        }
                        Vec::new()
                    }
                };
                self.apply(actions, out);
            }
            Inbound::Groupchat {
                room,
                nick,
                to,
                id,
                body,
                delayed,
            } => {
                if let Some(settled) = id.as_deref().and_then(|id| self.rooms.reflected(id)) {
                    self.apply(vec![settled], out);
                }
                if self.who(&to) != Some(Who::Bridge) || delayed || !self.rooms.is_kept(&room) {
                    return;
                }
                let Some(body) = body else { return };
                if self.rooms.is_ours(&room, &nick) {
                    return;
                }
                let real = self.rooms.real_jid(&room, &nick);
                let real = real.as_deref().and_then(|j| Jid::new(j).ok());
                if body.len() > self.config.max_body {
                    // To the speaker's own JID, not through the room: Prosody kicks an
                    // occupant that sends certain errors to another.
                    let bounce_to = real;
                    let why = self.too_long(&format!("{nick} in room `{room}`"), body.len());
                    if let (Some(to), Some(from)) = (bounce_to, self.node_jid("bridge")) {
                        out.push(stanza::message_error(
                            from,
                            to,
                            id.as_deref(),
                            ErrorCondition::NotAcceptable.to_error(&why),
                        ));
                    }
                    return;
                }
                self.emit(XmppEvent::Groupchat(RoomMessage {
                    room,
                    nick,
                    real_jid: real.map(|j| j.to_string()),
                    id,
                    body,
                }));
            }
            Inbound::MessageError {
                id,
                condition,
                text,
                ..
            } => {
                if let Some(settled) = id
                    .as_deref()
                    .and_then(|id| self.rooms.message_refused(id, &condition, &text))
                {
                    self.apply(vec![settled], out);
                }
            }
            Inbound::Chat {
                from,
                to,
                id,
                body,
                wants_receipt,
            } => {
                let Some(to_local) = our_local(&to, &self.config.domain) else {
                    return;
                };
                if body.len() > self.config.max_body {
                    let why = self.too_long(&from.to_string(), body.len());
                    let error = ErrorCondition::NotAcceptable.to_error(&why);
                    out.push(stanza::message_error(
                        to.to_bare().into(),
                        from,
                        id.as_deref(),
                        error,
                    ));
                    return;
                }
                self.emit(XmppEvent::Chat(ChatMessage {
                    from: from.to_string(),
                    to_local,
                    id,
                    body,
                    wants_receipt,
                }));
            }
            Inbound::Request {
                from,
                to,
                id,
                get,
                payload,
            } => {
                let Some(to_local) = our_local(&to, &self.config.domain) else {
                    return;
                };
                out.push(
                    self.directory
                        .request(from, to, &to_local, id, get, &payload),
                );
            }
            Inbound::Answer {
                id,
                condition,
                text,
            } => self.answer(&id, condition.as_deref(), &text, out),
            Inbound::Presence { from, to, kind } => {
                let Some(to_local) = our_local(&to, &self.config.domain) else {
                    return;
                };
                out.extend(self.directory.presence(&from, &to_local, &kind));
            }
            Inbound::Ignored => {}
        }
    }

    /// The bounce text for a body of `len` bytes from `who`; counted and told to the owner.
    fn too_long(&mut self, who: &str, len: usize) -> String {
        XmppCounters::add(&self.counters.bounced, 1);
        let text = format!("text above {} bytes", self.config.max_body);
        self.emit(XmppEvent::Problem(format!(
            "bounced a message of {len} bytes from {who}: {text}"
        )));
        text
    }

    /// The answer to one of our iqs.
    fn answer(&mut self, id: &str, condition: Option<&str>, text: &str, out: &mut Vec<Stanza>) {
        if self.keepalive.as_ref().is_some_and(|(k, _)| k == id) {
            self.keepalive = None;
            return;
        }
        if let Some(entry) = self.chats.take(id) {
            let status = match condition {
                Some(c @ ("remote-server-not-found" | "remote-server-timeout")) => {
                    DeliveryStatus::failed(format!("the server cannot reach {}: {c}", entry.tag))
                }
                _ => DeliveryStatus::Delivered,
            };
            self.settle(entry.waiter, status);
            return;
        }
        if let Some(room) = self.configuring.remove(id) {
            match condition {
                None => debug!(%room, "room configured"),
                Some(c) => self.emit(XmppEvent::Problem(
                    format!("room `{room}` could not be configured: {c} {text}")
                        .trim_end()
                        .to_owned(),
                )),
            }
            return;
        }
        let actions = self
            .rooms
            .ping_answered(id, condition, std::time::Instant::now());
        self.apply(actions, out);
    }

    /// One request from a handle while the stream is up (or, for the ones that only change
    /// state, while it is down: `out` is then dropped).
    pub(super) fn request(&mut self, request: Request, out: &mut Vec<Stanza>) {
        let now = std::time::Instant::now();
        match request {
            Request::KeepRoom(spec) => {
                let actions = self.rooms.keep(spec, now);
                self.apply(actions, out);
            }
            Request::Say {
                room,
                local,
                nick,
                body,
                generation,
                reply,
            } => {
                if let Some(why) = self.stale(generation) {
                    return self.settle(reply, DeliveryStatus::unreachable(why));
                }
                if self.who_jid(&Who::Node(local.clone())).is_none()
                    || self.room_jid(&room, Some(&nick)).is_none()
                {
                    let why =
                        format!("`{local}` as `{nick}` in `{room}` does not make a valid JID");
                    return self.settle(reply, DeliveryStatus::rejected(why));
                }
                let actions = self.rooms.say(&room, &local, &nick, body, reply, now);
                self.apply(actions, out);
            }
            Request::Chat {
                local,
                to,
                body,
                generation,
                reply,
            } => {
                if let Some(why) = self.stale(generation) {
                    return self.settle(reply, DeliveryStatus::unreachable(why));
                }
                let (Some(from), Ok(to_jid)) = (self.node_jid(&local), Jid::new(&to)) else {
                    return self.settle(
                        reply,
                        DeliveryStatus::rejected(format!(
                            "`{local}` → `{to}` is not a valid JID pair"
                        )),
                    );
                };
                let domain: Jid = match Jid::new(to_jid.domain().as_str()) {
                    Ok(d) => d,
                    Err(_) => {
                        return self.settle(
                            reply,
                            DeliveryStatus::rejected(format!("`{to}` has no domain")),
                        );
                    }
                };
                let message_id = self.rooms.fresh_id();
                out.push(stanza::chat(from, to_jid, message_id, body));
                let ping_id = self.rooms.fresh_id();
                if let Some(us) = self.node_jid("") {
                    out.push(stanza::ping(us, domain, ping_id.clone()));
                }
                self.chats.insert(ping_id, to, reply, now);
            }
            Request::Receipt { local, to, id } => {
                if let (Some(from), Ok(to)) = (self.node_jid(&local), Jid::new(&to)) {
                    out.push(stanza::receipt(from, to, &id));
                }
            }
            Request::Error {
                local,
                to,
                id,
                condition,
                text,
            } => {
                if let (Some(from), Ok(to)) = (self.node_jid(&local), Jid::new(&to)) {
                    out.push(stanza::message_error(
                        from,
                        to,
                        id.as_deref(),
                        condition.to_error(&text),
                    ));
                }
            }
            Request::SetContact(contact) => out.extend(self.directory.set(contact)),
            Request::Shutdown => {}
        }
    }

    /// Unavailable presences for every occupant of ours that is in a room.
    pub(super) fn leave_rooms(&self) -> Vec<Stanza> {
        self.rooms
            .joined_occupants()
            .into_iter()
            .filter_map(|(room, who, nick)| {
                Some(stanza::unavailable(
                    self.who_jid(&who)?,
                    self.room_jid(&room, Some(&nick))?,
                ))
            })
            .collect()
    }
}
