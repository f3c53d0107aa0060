//! The rooms the link keeps and its occupants in them, as decisions without I/O: each method
//! takes what happened (and `now`) and returns [`Action`]s for the link to carry out.
//!
//! Per room: the bridge occupant (creates and configures the room, listens, self-pings),
//! our node occupants (joined on demand, nick conflicts resolved as `nick (2)`…), the
//! speakers the room showed the bridge (nick → real JID), and the room messages that wait
//! for their reflection.
//!
//! Self-ping (XEP-0410): every `self_ping_every` the bridge pings its own occupant JID. The
//! room answers an error `not-acceptable` or `item-not-found` when it no longer has us (a
//! MUC restarted under a live stream): the bridge joins again. `service-unavailable` and
//! `feature-not-implemented` still mean joined; no answer within the period is taken as
//! dropped too.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mesh_core::DeliveryStatus;

use super::config::RoomSpec;
use super::occupants::{JoinState, Occupant};
use super::pending::Pending;

/// Who of ours a room stanza is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Who {
    /// The bridge occupant.
    Bridge,
    /// A node speaking as `local@domain`.
    Node(String),
}

/// What the link must do.
#[derive(Debug, PartialEq)]
pub(crate) enum Action<W> {
    /// Send `who`'s join presence (history none) to `room/nick`.
    Join {
        /// Room local part.
        room: String,
        /// Whose join.
        who: Who,
        /// The nick asked for.
        nick: String,
    },
    /// Submit the room configuration (the bridge is its owner).
    Configure {
        /// Room local part.
        room: String,
    },
    /// Send `body` as `local` to `room` with stanza id `id`.
    Say {
        /// Room local part.
        room: String,
        /// Node local part.
        local: String,
        /// The id the reflection comes back with.
        id: String,
        /// Text.
        body: String,
    },
    /// Ping the bridge's own occupant JID `room/nick` with iq id `id`.
    SelfPing {
        /// Room local part.
        room: String,
        /// The bridge's nick there.
        nick: String,
        /// Iq id.
        id: String,
    },
    /// Tell a waiter how its message went.
    Settle(W, DeliveryStatus),
    /// Tell the operator.
    Problem(String),
    /// Every kept room has answered the bridge's join (the link is fully up).
    AllJoined,
}

/// Timings the rooms run on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timings {
    /// How long a room has to reflect a message.
    pub(crate) reflection: Duration,
    /// How long a room has to answer a join.
    pub(crate) join: Duration,
    /// Between self-pings (and how long one may stay unanswered).
    pub(crate) self_ping: Duration,
    /// Before joining again after the room dropped or refused us.
    pub(crate) rejoin: Duration,
}

/// One kept room.
#[derive(Debug)]
struct Room<W> {
    /// What it should be.
    spec: RoomSpec,
    /// The bridge occupant.
    bridge: Occupant<W>,
    /// Whether the bridge submitted the configuration in this process (done once, after the
    /// first join; a room recreated by the server is configured again: status 201).
    configured: bool,
    /// Our node occupants by local part; kept across reconnects so they are joined again.
    nodes: BTreeMap<String, Occupant<W>>,
    /// Speakers the room showed the bridge: nick → real full JID (when the room shows it).
    speakers: HashMap<String, Option<String>>,
    /// When the next self-ping is due, while the bridge is in.
    ping_at: Option<Instant>,
    /// The self-ping in flight: its id and when it counts as unanswered.
    ping: Option<(String, Instant)>,
}

/// Every kept room and our occupants in them.
#[derive(Debug)]
pub(crate) struct Rooms<W> {
    /// By local part.
    rooms: BTreeMap<String, Room<W>>,
    /// Room messages waiting for their reflection, by stanza id, tagged (room, node local).
    reflections: Pending<W, (String, String)>,
    /// The bridge's wanted nick.
    bridge_nick: String,
    /// Timings.
    timings: Timings,
    /// Whether the stream is up (joins only make sense then).
    online: bool,
    /// Whether `AllJoined` was said for this stream.
    announced: bool,
    /// Makes ids unique within the process: `prefix-n`.
    prefix: String,
    /// The next id's number.
    next_id: u64,
}

impl<W> Rooms<W> {
    /// No rooms; ids start with `prefix` (random per process, so a reflection of a previous
    /// run's message never matches).
    pub(crate) fn new(bridge_nick: &str, timings: Timings, prefix: String) -> Rooms<W> {
        Rooms {
            rooms: BTreeMap::new(),
            reflections: Pending::new(timings.reflection),
            bridge_nick: bridge_nick.to_owned(),
            timings,
            online: false,
            announced: false,
            prefix,
            next_id: 0,
        }
    }

    /// A fresh stanza id.
    pub(crate) fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.prefix, self.next_id)
    }

    /// Keeps `spec` (idempotent; a changed name or description is configured again).
    pub(crate) fn keep(&mut self, spec: RoomSpec, now: Instant) -> Vec<Action<W>> {
        let local = spec.local.clone();
        if let Some(room) = self.rooms.get_mut(&local) {
            if room.spec != spec {
                room.spec = spec;
                if room.bridge.state.joined_nick().is_some() {
                    return vec![Action::Configure { room: local }];
                }
                room.configured = false;
            }
            return Vec::new();
        }
        let room = self.rooms.entry(local.clone()).or_insert(Room {
            spec,
            bridge: Occupant::new(&self.bridge_nick),
            configured: false,
            nodes: BTreeMap::new(),
            speakers: HashMap::new(),
            ping_at: None,
            ping: None,
        });
        if !self.online {
            return Vec::new();
        }
        // Connected was already said for this stream; this room simply joins now.
        let nick = room.bridge.start_join(now);
        vec![Action::Join {
            room: local,
            who: Who::Bridge,
            nick,
        }]
    }

    /// The stream is up: the bridge joins every room, and every node occupant that was in
    /// one joins it again.
    pub(crate) fn online(&mut self, now: Instant) -> Vec<Action<W>> {
        self.online = true;
        self.announced = false;
        let mut out = Vec::new();
        for (local, room) in &mut self.rooms {
            let nick = room.bridge.start_join(now);
            out.push(Action::Join {
                room: local.clone(),
                who: Who::Bridge,
                nick,
            });
            for (node, occupant) in &mut room.nodes {
                let nick = occupant.start_join(now);
                out.push(Action::Join {
                    room: local.clone(),
                    who: Who::Node(node.clone()),
                    nick,
                });
            }
        }
        self.check_all_joined(&mut out);
        out
    }

    /// The stream is gone: nothing is joined, and whoever waits learns it now.
    pub(crate) fn offline(&mut self, reason: &str) -> Vec<Action<W>> {
        self.online = false;
        self.announced = false;
        let mut out: Vec<Action<W>> = self
            .reflections
            .drain()
            .into_iter()
            .map(|e| Action::Settle(e.waiter, DeliveryStatus::unreachable(reason)))
            .collect();
        for room in self.rooms.values_mut() {
            room.bridge.state = JoinState::Absent;
            room.ping_at = None;
            room.ping = None;
            room.speakers.clear();
            for occupant in room.nodes.values_mut() {
                occupant.state = JoinState::Absent;
                for (_, waiter) in occupant.waiting.drain(..) {
                    out.push(Action::Settle(waiter, DeliveryStatus::unreachable(reason)));
                }
            }
        }
        out
    }

    /// The room's self-presence (status 110) for `who` as `nick`; `created` when the room was
    /// just made by this join (status 201).
    pub(crate) fn joined(
        &mut self,
        room: &str,
        who: &Who,
        nick: &str,
        created: bool,
        now: Instant,
    ) -> Vec<Action<W>> {
        let mut out = Vec::new();
        let Some(r) = self.rooms.get_mut(room) else {
            return out;
        };
        match who {
            Who::Bridge => {
                r.bridge.state = JoinState::Joined { nick: nick.into() };
                r.ping_at = Some(now + self.timings.self_ping);
                r.ping = None;
                if created || !r.configured {
                    r.configured = true;
                    out.push(Action::Configure { room: room.into() });
                }
            }
            Who::Node(local) => {
                let Some(occupant) = r.nodes.get_mut(local) else {
                    return out;
                };
                occupant.state = JoinState::Joined { nick: nick.into() };
                let waiting = std::mem::take(&mut occupant.waiting);
                for (body, waiter) in waiting {
                    let id = self.fresh_id();
                    self.reflections
                        .insert(id.clone(), (room.into(), local.clone()), waiter, now);
                    out.push(Action::Say {
                        room: room.into(),
                        local: local.clone(),
                        id,
                        body,
                    });
                }
            }
        }
        self.check_all_joined(&mut out);
        out
    }

    /// The room says `who` is out (kicked, banned, room closed): join again shortly. A nick
    /// change (status 303) is not a departure.
    pub(crate) fn left(
        &mut self,
        room: &str,
        who: &Who,
        nick: &str,
        codes: &[u16],
        now: Instant,
    ) -> Vec<Action<W>> {
        if codes.contains(&303) {
            return Vec::new();
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        let rejoin = JoinState::Retry {
            at: now + self.timings.rejoin,
        };
        let occupant = match who {
            Who::Bridge => {
                r.ping_at = None;
                r.ping = None;
                &mut r.bridge
            }
            Who::Node(local) => match r.nodes.get_mut(local) {
                Some(o) => o,
                None => return Vec::new(),
            },
        };
        // Only the nick it is in the room with counts (an old nick's goodbye after a rename
        // does not).
        if occupant.state.joined_nick() != Some(nick) {
            return Vec::new();
        }
        occupant.state = rejoin;
        let why = if codes.contains(&307) {
            "kicked"
        } else if codes.contains(&301) {
            "banned"
        } else if codes.contains(&332) {
            "removed by a service shutdown"
        } else {
            "dropped"
        };
        vec![Action::Problem(format!(
            "room `{room}`: {} was {why}; joining again",
            match who {
                Who::Bridge => "the bridge".to_owned(),
                Who::Node(local) => format!("occupant {local}"),
            }
        ))]
    }

    /// The room refused `who`'s join with `condition`.
    pub(crate) fn join_refused(
        &mut self,
        room: &str,
        who: &Who,
        condition: &str,
        text: &str,
        now: Instant,
    ) -> Vec<Action<W>> {
        let mut out = Vec::new();
        let Some(r) = self.rooms.get_mut(room) else {
            return out;
        };
        let occupant = match who {
            Who::Bridge => &mut r.bridge,
            Who::Node(local) => match r.nodes.get_mut(local) {
                Some(o) => o,
                None => return out,
            },
        };
        if !matches!(occupant.state, JoinState::Joining { .. }) {
            return out;
        }
        if condition == "conflict"
            && let Some(nick) = occupant.conflict(now)
        {
            out.push(Action::Join {
                room: room.into(),
                who: who.clone(),
                nick,
            });
            return out;
        }
        let why = format!("room `{room}` refused the join: {condition} {text}");
        let why = why.trim_end().to_owned();
        match who {
            Who::Bridge => {
                occupant.state = JoinState::Retry {
                    at: now + self.timings.join,
                };
                out.push(Action::Problem(why));
            }
            Who::Node(_) => {
                occupant.state = JoinState::Absent;
                for (_, waiter) in occupant.waiting.drain(..) {
                    out.push(Action::Settle(
                        waiter,
                        DeliveryStatus::rejected(why.clone()),
                    ));
                }
            }
        }
        self.check_all_joined(&mut out);
        out
    }

    /// The spec of `room`.
    pub(crate) fn spec(&self, room: &str) -> Option<RoomSpec> {
        self.rooms.get(room).map(|r| r.spec.clone())
    }

    /// Every occupant of ours that is in a room: (room, who, nick).
    pub(crate) fn joined_occupants(&self) -> Vec<(String, Who, String)> {
        let mut out = Vec::new();
        for (local, room) in &self.rooms {
            for (node, occupant) in &room.nodes {
                if let Some(nick) = occupant.state.joined_nick() {
                    out.push((local.clone(), Who::Node(node.clone()), nick.to_owned()));
                }
            }
            if let Some(nick) = room.bridge.state.joined_nick() {
                out.push((local.clone(), Who::Bridge, nick.to_owned()));
            }
        }
        out
    }

    /// Whether `room` is kept.
    pub(crate) fn is_kept(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Whatever is due at `now`: lost reflections, unanswered joins and self-pings, re-joins,
    /// and self-pings to send.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Action<W>> {
        let mut out: Vec<Action<W>> = self
            .reflections
            .expired(now)
            .into_iter()
            .map(|e| {
                let why = format!("room `{}` did not reflect the message in time", e.tag.0);
                Action::Settle(e.waiter, DeliveryStatus::failed(why))
            })
            .collect();
        if !self.online {
            return out;
        }
        let timings = self.timings;
        for (local, room) in &mut self.rooms {
            for (who, occupant) in std::iter::once((Who::Bridge, &mut room.bridge)).chain(
                room.nodes
                    .iter_mut()
                    .map(|(n, o)| (Who::Node(n.clone()), o)),
            ) {
                let due = match &occupant.state {
                    JoinState::Retry { at } => *at <= now,
                    JoinState::Joining { since, .. } => {
                        let late = *since + timings.join <= now;
                        if late {
                            for (_, waiter) in occupant.waiting.drain(..) {
                                out.push(Action::Settle(
                                    waiter,
                                    DeliveryStatus::failed(format!(
                                        "room `{local}` did not answer the join"
                                    )),
                                ));
                            }
                        }
                        late
                    }
                    _ => false,
                };
                if due {
                    let nick = occupant.start_join(now);
                    out.push(Action::Join {
                        room: local.clone(),
                        who,
                        nick,
                    });
                }
            }
        }
        self.self_pings(now, &mut out);
        self.check_all_joined(&mut out);
        out
    }

    /// The next time [`tick`](Self::tick) has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.reflections.next_deadline();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        if self.online {
            for room in self.rooms.values() {
                consider(room.ping_at);
                consider(room.ping.as_ref().map(|(_, d)| *d));
                for occupant in std::iter::once(&room.bridge).chain(room.nodes.values()) {
                    consider(match &occupant.state {
                        JoinState::Retry { at } => Some(*at),
                        JoinState::Joining { since, .. } => Some(*since + self.timings.join),
                        _ => None,
                    });
                }
            }
        }
        next
    }

    /// Says `AllJoined` once per stream, when no bridge join is still unanswered.
    fn check_all_joined(&mut self, out: &mut Vec<Action<W>>) {
        if self.online
            && !self.announced
            && self
                .rooms
                .values()
                .all(|r| !matches!(r.bridge.state, JoinState::Joining { .. }))
        {
            self.announced = true;
            out.push(Action::AllJoined);
        }
    }
}

mod selfping;
mod speech;
#[cfg(test)]
mod tests;
