//! What is said in rooms: messages waiting for a join or a reflection, the room's answers
//! to them, and who speaks (ours or not, and the real JIDs the room shows the bridge).

use std::time::Instant;

use mesh_core::DeliveryStatus;

use super::{Action, JoinState, Occupant, Rooms, Who};

impl<W> Rooms<W> {
    /// The owner wants `body` said in `room` as `local` with `nick`.
    pub(crate) fn say(
        &mut self,
        room: &str,
        local: &str,
        nick: &str,
        body: String,
        waiter: W,
        now: Instant,
    ) -> Vec<Action<W>> {
        let refused = if !self.online {
            Some("the XMPP stream is down".to_owned())
        } else {
            match self.rooms.get(room) {
                None => Some(format!("room `{room}` is not kept by this link")),
                Some(r) if r.bridge.state.joined_nick().is_none() => {
                    Some(format!("room `{room}` is not joined"))
                }
                Some(_) => None,
            }
        };
        if let Some(why) = refused {
            return vec![Action::Settle(waiter, DeliveryStatus::unreachable(why))];
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        let occupant = r
            .nodes
            .entry(local.to_owned())
            .or_insert_with(|| Occupant::new(nick));
        let renamed = occupant.base != nick;
        if renamed {
            occupant.rename(nick);
        }
        match &occupant.state {
            JoinState::Joined { .. } if !renamed => {
                let id = self.fresh_id();
                self.reflections.insert(
                    id.clone(),
                    (room.to_owned(), local.to_owned()),
                    waiter,
                    now,
                );
                vec![Action::Say {
                    room: room.to_owned(),
                    local: local.to_owned(),
                    id,
                    body,
                }]
            }
            JoinState::Joining { .. } if !renamed => {
                occupant.waiting.push((body, waiter));
                Vec::new()
            }
            _ => {
                occupant.waiting.push((body, waiter));
                let nick = occupant.start_join(now);
                vec![Action::Join {
                    room: room.to_owned(),
                    who: Who::Node(local.to_owned()),
                    nick,
                }]
            }
        }
    }

    /// A room message came back with id `id`: its waiter, told `Delivered`.
    pub(crate) fn reflected(&mut self, id: &str) -> Option<Action<W>> {
        self.reflections
            .take(id)
            .map(|e| Action::Settle(e.waiter, DeliveryStatus::Delivered))
    }

    /// The room answered our message `id` with an error. `not-acceptable` means the room no
    /// longer counts the sender as an occupant (it dropped it without a word): the occupant
    /// joins again on its next message, and this one is `Failed` so it is tried again.
    /// Anything else (`forbidden` for a visitor without voice…) is `Rejected`.
    pub(crate) fn message_refused(
        &mut self,
        id: &str,
        condition: &str,
        text: &str,
    ) -> Option<Action<W>> {
        let entry = self.reflections.take(id)?;
        let (room, local) = &entry.tag;
        let why = format!("room `{room}` refused the message: {condition} {text}");
        let why = why.trim_end();
        if condition == "not-acceptable" {
            if let Some(occupant) = self
                .rooms
                .get_mut(room)
                .and_then(|r| r.nodes.get_mut(local))
            {
                occupant.state = JoinState::Absent;
            }
            return Some(Action::Settle(entry.waiter, DeliveryStatus::failed(why)));
        }
        Some(Action::Settle(entry.waiter, DeliveryStatus::rejected(why)))
    }

    /// The room showed the bridge an occupant `nick` (with its real full JID when it shows it).
    pub(crate) fn speaker(&mut self, room: &str, nick: &str, real_jid: Option<String>) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.speakers.insert(nick.to_owned(), real_jid);
        }
    }

    /// `nick` left `room` (as the bridge sees it).
    pub(crate) fn speaker_left(&mut self, room: &str, nick: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.speakers.remove(nick);
        }
    }

    /// The real full JID the room showed for `nick`.
    pub(crate) fn real_jid(&self, room: &str, nick: &str) -> Option<String> {
        self.rooms.get(room)?.speakers.get(nick)?.clone()
    }

    /// Whether `nick` in `room` is one of ours (the bridge or a node occupant).
    pub(crate) fn is_ours(&self, room: &str, nick: &str) -> bool {
        let Some(r) = self.rooms.get(room) else {
            return false;
        };
        r.bridge.state.nick() == Some(nick)
            || r.nodes.values().any(|o| o.state.nick() == Some(nick))
    }
}
