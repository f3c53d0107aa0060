//! XEP-0410 self-ping: the bridge pings its own occupant JID in every room it is in, every
//! `self_ping` period, to notice a room that dropped it without a word (a MUC restarted under a
//! live stream). Prosody 0.12 answers a self-ping itself (`muc.lib.lua`,
//! `handle_iq_to_occupant`): a result while joined, `not-acceptable` ("You are not currently
//! connected to this chat") when not. Other servers may route the ping to us instead, or
//! answer `service-unavailable`/`feature-not-implemented`: still joined. `remote-server-*`
//! cannot tell, so nothing changes. Any other error (`not-acceptable`, `item-not-found`), or
//! no answer within a period, means dropped: the bridge joins again.

use std::time::Instant;

use super::{Action, Rooms, Who};

impl<W> Rooms<W> {
    /// The answer to a self-ping: `condition` is `None` for a result.
    pub(crate) fn ping_answered(
        &mut self,
        id: &str,
        condition: Option<&str>,
        now: Instant,
    ) -> Vec<Action<W>> {
        let Some((local, room)) = self
            .rooms
            .iter_mut()
            .find(|(_, r)| r.ping.as_ref().is_some_and(|(p, _)| p == id))
        else {
            return Vec::new();
        };
        room.ping = None;
        let dropped = match condition {
            None | Some("service-unavailable" | "feature-not-implemented") => false,
            Some("remote-server-not-found" | "remote-server-timeout") => false,
            Some(_) => true,
        };
        if !dropped {
            return Vec::new();
        }
        let local = local.clone();
        let nick = room.bridge.start_join(now);
        room.ping_at = None;
        vec![
            Action::Problem(format!(
                "room `{local}` no longer has the bridge ({}); joining again",
                condition.unwrap_or_default()
            )),
            Action::Join {
                room: local,
                who: Who::Bridge,
                nick,
            },
        ]
    }

    /// Self-pings gone unanswered (the bridge joins again) and self-pings due.
    pub(super) fn self_pings(&mut self, now: Instant, out: &mut Vec<Action<W>>) {
        let period = self.timings.self_ping;
        let mut due = Vec::new();
        for (local, room) in &mut self.rooms {
            if let Some((_, deadline)) = &room.ping
                && *deadline <= now
            {
                room.ping = None;
                let nick = room.bridge.start_join(now);
                out.push(Action::Problem(format!(
                    "room `{local}` did not answer the bridge's self-ping; joining again"
                )));
                out.push(Action::Join {
                    room: local.clone(),
                    who: Who::Bridge,
                    nick,
                });
            }
            if let (Some(at), None, Some(nick)) =
                (room.ping_at, &room.ping, room.bridge.state.joined_nick())
                && at <= now
            {
                due.push((local.clone(), nick.to_owned()));
            }
        }
        for (local, nick) in due {
            let id = self.fresh_id();
            if let Some(room) = self.rooms.get_mut(&local) {
                room.ping = Some((id.clone(), now + period));
                room.ping_at = Some(now + period);
            }
            out.push(Action::SelfPing {
                room: local,
                nick,
                id,
            });
        }
    }
}
