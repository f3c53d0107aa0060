//! The sending half of the session: what waits, what is written and what confirms it.
//!
//! One item is written at a time and stays *in flight* until the radio confirms it: a packet by
//! the `QueueStatus` carrying its id (and, with `want_ack`, later by the mesh's ACK), a relay by
//! the answer to the heartbeat written after it. Pacing follows [`mesh_core::pacing`]; the
//! radio's queue and the heartbeat answers are kept by [`QueueWatch`](super::queue::QueueWatch).

use std::time::Instant;

use bytes::Bytes;
use mesh_core::{DeliveryStatus, NodeId, PacingClass, Packet, PacketId, proto, wire};

use super::relay::{self, Relay};
use super::{Output, SendToken, Session, TO_RADIO_PACKET};

/// What a submitted item asks the radio to do.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// Send as this radio's own packet (phone API: `from` becomes the radio).
    Packet(Packet),
    /// Inject a packet relayed from elsewhere, keeping its sender and id.
    Relay(Relay),
}

impl Outgoing {
    fn packet(&self) -> &Packet {
        match self {
            Outgoing::Packet(p) => p,
            Outgoing::Relay(r) => &r.packet,
        }
    }
}

/// A packet waiting for its turn to be written.
#[derive(Debug)]
pub(super) struct Queued {
    /// Whose outcome this is.
    token: SendToken,
    /// What to send.
    item: Outgoing,
}

/// What the radio must say before a written item counts as taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Awaiting {
    /// A `QueueStatus` for this id; then, with `want_ack`, the mesh's ACK.
    QueueStatus {
        /// Matched against `QueueStatus.mesh_packet_id`.
        id: PacketId,
        /// Whether delivery waits for the mesh's ACK after the radio queued it.
        want_ack: bool,
    },
    /// The answer to the heartbeat written right after a relayed packet.
    Processed {
        /// The number of heartbeat answers that includes ours.
        reply: u64,
    },
}

/// The one item written and not yet confirmed by the radio.
#[derive(Debug)]
pub(super) struct InFlight {
    /// Whose outcome this is.
    token: SendToken,
    /// What confirms it.
    awaiting: Awaiting,
    /// When it was written, for the confirmation timeout.
    sent_at: Instant,
}

/// A packet the radio queued, waiting for the mesh's ACK.
#[derive(Debug)]
pub(super) struct AwaitingAck {
    /// Whose outcome this is.
    token: SendToken,
    /// When the radio queued it, for the ACK timeout.
    since: Instant,
}

impl Session {
    /// A packet to send as the radio's own. Its id must be set (the link assigns one when it
    /// is zero).
    pub fn submit(&mut self, token: SendToken, packet: Packet, now: Instant) -> Vec<Output> {
        self.enqueue(token, Outgoing::Packet(packet), now)
    }

    /// A packet relayed from another mesh, already encrypted for `channel` (its `channel`
    /// field the channel's hash), to arrive with hop limit `hops`. It keeps its sender and id.
    pub fn relay(
        &mut self,
        token: SendToken,
        packet: Packet,
        channel: &str,
        gateway: NodeId,
        hops: u8,
        now: Instant,
    ) -> Vec<Output> {
        let relay = Relay {
            packet,
            channel: channel.to_owned(),
            gateway,
            hops: hops.min(mesh_core::packet::HOP_MAX - 1),
        };
        self.enqueue(token, Outgoing::Relay(relay), now)
    }

    fn enqueue(&mut self, token: SendToken, item: Outgoing, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let packet = item.packet();
        let data_len = packet.data().map_or(0, |d| d.payload.len());
        if data_len > mesh_core::packet::MAX_DATA_PAYLOAD
            || packet.encode().len() + 8 > mesh_core::frame::MAX_PAYLOAD
        {
            out.push(Output::Outcome {
                token,
                status: DeliveryStatus::rejected(format!(
                    "packet too large for a radio ({data_len}-byte payload, at most {})",
                    mesh_core::packet::MAX_DATA_PAYLOAD
                )),
            });
        } else if self.pending.len() >= self.config.max_pending {
            out.push(Output::Outcome {
                token,
                status: DeliveryStatus::unreachable("radio link queue is full"),
            });
        } else {
            self.pending.push_back(Queued { token, item });
            self.pump(now, &mut out);
        }
        out
    }

    pub(super) fn on_queue_status(
        &mut self,
        qs: proto::QueueStatus,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        self.queue.on_status(&qs, now);
        if qs.mesh_packet_id == 0 {
            if let Some(InFlight {
                awaiting: Awaiting::Processed { reply },
                token,
                ..
            }) = self.in_flight
                && self.queue.answered() >= reply
            {
                self.in_flight = None;
                out.push(Output::Outcome {
                    token,
                    status: DeliveryStatus::Delivered,
                });
            }
            return;
        }
        let Some(InFlight {
            awaiting: Awaiting::QueueStatus { id, want_ack },
            ..
        }) = self.in_flight
        else {
            return;
        };
        if qs.mesh_packet_id != id.get() {
            return;
        }
        let f = self.in_flight.take().expect("checked above");
        let status = if qs.res != 0 {
            DeliveryStatus::failed(format!("radio refused to queue it (code {})", qs.res))
        } else if want_ack {
            self.awaiting_ack.insert(
                id,
                AwaitingAck {
                    token: f.token,
                    since: now,
                },
            );
            return;
        } else {
            DeliveryStatus::Delivered
        };
        out.push(Output::Outcome {
            token: f.token,
            status,
        });
    }

    /// Matches a routing answer (ACK or NAK) to what waits for it; true when it was ours.
    pub(super) fn on_routing_answer(&mut self, packet: &Packet, out: &mut Vec<Output>) -> bool {
        let Some(data) = packet.data() else {
            return false;
        };
        if data.portnum != proto::PortNum::RoutingApp as i32 || data.request_id == 0 {
            return false;
        }
        let request = PacketId::new(data.request_id);
        if let Some(waiting) = self.awaiting_ack.remove(&request) {
            out.push(Output::Outcome {
                token: waiting.token,
                status: mesh_core::routing::delivery_status(&data.payload),
            });
            return true;
        }
        if self.in_flight.as_ref().is_some_and(
            |f| matches!(f.awaiting, Awaiting::QueueStatus { id, .. } if id == request),
        ) {
            // A refusal that came before (or instead of) the QueueStatus, such as the
            // phone API's rate limit.
            let status = mesh_core::routing::delivery_status(&data.payload);
            if !status.is_delivered() {
                let f = self.in_flight.take().expect("checked above");
                out.push(Output::Outcome {
                    token: f.token,
                    status,
                });
                return true;
            }
        }
        false
    }

    pub(super) fn pump(&mut self, now: Instant, out: &mut Vec<Output>) {
        if !self.is_ready() || self.in_flight.is_some() || self.queue.is_full() {
            return;
        }
        let relays = self.queue.may_relay(now, self.config.queue_status_grace);
        let eligible = self.pending.iter().position(|q| match &q.item {
            Outgoing::Relay(_) => relays,
            Outgoing::Packet(p) => PacingClass::of(p).is_none_or(|class| {
                self.last_sent[class.index()]
                    .is_none_or(|t| now.saturating_duration_since(t) >= class.client_spacing())
            }),
        });
        let Some(index) = eligible else { return };
        let q = self.pending.remove(index).expect("index from position");
        let (body, awaiting) = match q.item {
            Outgoing::Packet(packet) => {
                if let Some(class) = PacingClass::of(&packet) {
                    self.last_sent[class.index()] = Some(now);
                }
                let mut body = Vec::new();
                wire::put_bytes_field(TO_RADIO_PACKET, &packet.encode(), &mut body);
                let awaiting = Awaiting::QueueStatus {
                    id: packet.id(),
                    want_ack: packet.want_ack(),
                };
                (Bytes::from(body), awaiting)
            }
            Outgoing::Relay(relay) => {
                let info = self.info.clone().unwrap_or_default();
                let message = match relay::relay_message(&info, &relay) {
                    Ok(message) => message,
                    Err(status) => {
                        out.push(Output::Outcome {
                            token: q.token,
                            status,
                        });
                        return self.pump(now, out);
                    }
                };
                out.push(Output::Write(message));
                let reply = self.heartbeat(now, out);
                if self.relayed.len() >= 256 {
                    self.relayed.pop_front();
                }
                self.relayed
                    .push_back((relay.packet.from(), relay.packet.id()));
                self.in_flight = Some(InFlight {
                    token: q.token,
                    awaiting: Awaiting::Processed { reply },
                    sent_at: now,
                });
                return;
            }
        };
        out.push(Output::Write(body));
        self.in_flight = Some(InFlight {
            token: q.token,
            awaiting,
            sent_at: now,
        });
    }

    /// The connection (or the radio) went away under what was written: the radio may or may
    /// not have it, which is no fault of the message, so it waits for the next connection.
    pub(super) fn fail_unconfirmed(&mut self, reason: &str, out: &mut Vec<Output>) {
        if let Some(f) = self.in_flight.take() {
            out.push(Output::Outcome {
                token: f.token,
                status: DeliveryStatus::unreachable(reason),
            });
        }
        for (_, a) in self.awaiting_ack.drain() {
            out.push(Output::Outcome {
                token: a.token,
                status: DeliveryStatus::unreachable(reason),
            });
        }
    }
    /// Fails what the radio did not confirm in time: a written item without its answer, a
    /// queued packet without the mesh's ACK.
    pub(super) fn expire_unconfirmed(&mut self, now: Instant, out: &mut Vec<Output>) {
        if let Some(f) = &self.in_flight
            && now.saturating_duration_since(f.sent_at) >= self.config.queue_status_timeout
        {
            let f = self.in_flight.take().expect("checked above");
            let what = match f.awaiting {
                Awaiting::QueueStatus { .. } => "confirm queueing",
                Awaiting::Processed { .. } => "take the relayed packet",
            };
            out.push(Output::Outcome {
                token: f.token,
                status: DeliveryStatus::failed(format!(
                    "radio did not {what} within {}s",
                    self.config.queue_status_timeout.as_secs()
                )),
            });
        }
        let ack_timeout = self.config.ack_timeout;
        let expired: Vec<PacketId> = self
            .awaiting_ack
            .iter()
            .filter(|(_, a)| now.saturating_duration_since(a.since) >= ack_timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let a = self.awaiting_ack.remove(&id).expect("listed above");
            out.push(Output::Outcome {
                token: a.token,
                status: DeliveryStatus::failed(format!(
                    "no ACK from the mesh within {}s",
                    ack_timeout.as_secs()
                )),
            });
        }
    }

    /// When something sent or waiting to be sent next needs [`Session::tick`].
    pub(super) fn send_deadlines(&self, deadlines: &mut Vec<Instant>) {
        if let Some(f) = &self.in_flight {
            deadlines.push(f.sent_at + self.config.queue_status_timeout);
        }
        deadlines.extend(
            self.awaiting_ack
                .values()
                .map(|a| a.since + self.config.ack_timeout),
        );
        if self.in_flight.is_none() && !self.queue.is_full() {
            deadlines.extend(self.pending.iter().filter_map(|q| match &q.item {
                Outgoing::Packet(p) => {
                    let class = PacingClass::of(p)?;
                    self.last_sent[class.index()].map(|t| t + class.client_spacing())
                }
                Outgoing::Relay(_) => self.queue.grace_deadline(self.config.queue_status_grace),
            }));
        }
    }
}
