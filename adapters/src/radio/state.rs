//! The radio session: every decision the link makes, with no I/O and no clock of its own.
//!
//! [`Session`] is fed what happens (a connection opened, a frame arrived, a packet to send, time
//! passed) together with `now`, and answers with [`Output`]s for the link loop to carry out:
//! bytes to write, events for the owner, delivery outcomes, or a reason to drop the connection.
//!
//! | phase         | entered by                        | leaves on                                          |
//! |---------------|-----------------------------------|----------------------------------------------------|
//! | `Idle`        | start, [`Session::disconnected`]  | [`Session::connected`] → `Handshaking`             |
//! | `Handshaking` | connect, `rebooted` from the radio| `config_complete_id == nonce` → `Ready`; timeout → close |
//! | `Ready`       | complete handshake                | disconnect; `rebooted` → `Handshaking`; silence → close |
//!
//! Sending follows the device's own rules: one packet at a time until its `QueueStatus` says it
//! was queued (the firmware silently drops an id it saw among the last 20, so an unanswered
//! packet times out into a retry), nothing while the radio reports no free slot, and the phone
//! API's pacing per port (one text per 2 s, one position or telemetry per 10 s). A packet sent
//! with `want_ack` is delivered only when the mesh's ACK (a `ROUTING_APP` packet whose
//! `request_id` is its id) arrives.
//!
//! Relayed packets take another door. The phone API rewrites `from` to the radio's own node, so
//! a packet relayed from another mesh enters the way MQTT downlink does: a
//! `mqttClientProxyMessage` carrying a `ServiceEnvelope` with the packet as its sender
//! encrypted it. The radio treats it as received (deduplicated on its (from, id), rebroadcast
//! with one hop less). The proxy message gets no answer of its own, so a heartbeat follows it:
//! the radio handles `ToRadio` messages in order, and its answer to that heartbeat confirms it
//! processed the relay. The radio drops a relay it already has (a re-send after a gateway
//! crash), which is right, and would drop one whose channel key differs, which is why the key
//! is checked against the radio's own before anything is written. Broadcasts come back to us
//! as received packets; those echoes are recognised and not reported again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_core::proto::{self, from_radio, routing, to_radio};
use mesh_core::{DeliveryStatus, NodeId, Packet, PacketId, wire};
use prost::Message;

use super::info::RadioInfo;

/// Nonces the firmware gives a special meaning (config only / node infos only).
const SPECIAL_NONCES: [u32; 2] = [69420, 69421];
/// `ToRadio.packet`.
const TO_RADIO_PACKET: u32 = 1;
/// `FromRadio.packet`.
const FROM_RADIO_PACKET: u32 = 2;

/// Timings of a session. The defaults follow the firmware and the Python client.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How long the handshake may take before the connection is dropped.
    pub handshake_timeout: Duration,
    /// Heartbeat period (clients use 300 s; the device closes idle links after 15 min).
    pub heartbeat_interval: Duration,
    /// Silence after a heartbeat (which the device answers) that means the link is dead.
    pub silence_timeout: Duration,
    /// How long the device has to answer a packet with its `QueueStatus`.
    pub queue_status_timeout: Duration,
    /// How long to wait for the mesh's ACK of a `want_ack` packet.
    pub ack_timeout: Duration,
    /// Most packets waiting to be written; beyond it `submit` answers `Retry` at once.
    pub max_pending: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            handshake_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(300),
            silence_timeout: Duration::from_secs(30),
            queue_status_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(180),
            max_pending: 256,
        }
    }
}

/// Identifies one submitted packet so its outcome can be routed back to whoever sent it.
pub type SendToken = u64;

/// Why the session wants its connection dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The radio did not finish the handshake in time.
    #[error("handshake not complete after {}s; missing: {}", after.as_secs(), missing.join(", "))]
    HandshakeTimeout {
        /// The limit that ran out.
        after: Duration,
        /// What had not arrived.
        missing: Vec<&'static str>,
    },
    /// The radio said the handshake was complete without the parts a gateway needs.
    #[error("radio finished its handshake without: {}", missing.join(", "))]
    HandshakeIncomplete {
        /// What had not arrived.
        missing: Vec<&'static str>,
    },
    /// Nothing came back after a heartbeat: the link is half-open.
    #[error("radio silent for {}s after a heartbeat", after.as_secs())]
    Silent {
        /// How long it stayed silent.
        after: Duration,
    },
}

/// What the link loop must do after an input.
// Outputs are produced and consumed at once; boxing the packet variant would only add an
// allocation per received packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Output {
    /// Write these bytes as they are (the wake-up preamble).
    WriteRaw(Bytes),
    /// Frame and write this encoded `ToRadio`.
    Write(Bytes),
    /// The handshake completed: the radio's identity, channels and node DB.
    Ready(Arc<RadioInfo>),
    /// A packet the radio received from the mesh (decoded, `channel` = local index).
    Packet(Packet),
    /// A packet the radio published on its MQTT uplink through us (its client proxy): every
    /// packet it heard and could decode, whoever it was for, still encrypted as heard.
    Uplink {
        /// The packet, encrypted, `channel` = the channel's hash.
        packet: Packet,
        /// The channel's name (the envelope's `channel_id`).
        channel: String,
    },
    /// The outcome of a submitted packet.
    Outcome {
        /// The token given to [`Session::submit`].
        token: SendToken,
        /// Delivered, retry or rejected, with the reason.
        status: DeliveryStatus,
    },
    /// A log line the radio sent as `log_record`.
    DeviceLog(String),
    /// A notice for the user from the radio (`clientNotification`), such as a duty-cycle limit.
    Notification(String),
    /// The radio rebooted; a fresh handshake has been started.
    Rebooted,
    /// A frame that is not a valid `FromRadio` was skipped.
    Undecodable(String),
    /// Drop the connection and reconnect after a backoff.
    Close(SessionError),
}

/// Where the session is in its lifecycle; each phase carries what only it needs.
#[derive(Debug)]
enum Phase {
    /// No connection.
    Idle,
    /// `want_config_id` sent; collecting the radio's answers.
    Handshaking {
        /// The nonce the radio must echo in `config_complete_id`.
        nonce: u32,
        /// When the handshake started, for its timeout.
        started: Instant,
        /// What has arrived so far.
        info: Box<RadioInfo>,
    },
    /// Live: packets flow both ways.
    Ready,
}

/// What a submitted item asks the radio to do.
#[derive(Debug)]
enum Outgoing {
    /// Send as this radio's own packet (phone API: `from` becomes the radio).
    Packet(Packet),
    /// Inject a packet relayed from elsewhere, keeping its sender and id.
    Relay(Relay),
}

/// A relayed packet and where it goes.
#[derive(Debug)]
struct Relay {
    /// Encrypted for the channel, `channel` set to its hash.
    packet: Packet,
    /// Channel name on this radio.
    channel: String,
    /// Our gateway id, the envelope's `gateway_id`.
    gateway: NodeId,
    /// Hop limit once it is on this radio's mesh.
    hops: u8,
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
struct Queued {
    /// Whose outcome this is.
    token: SendToken,
    /// What to send.
    item: Outgoing,
}

/// What the radio must say before a written item counts as taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
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
struct InFlight {
    /// Whose outcome this is.
    token: SendToken,
    /// What confirms it.
    awaiting: Awaiting,
    /// When it was written, for the confirmation timeout.
    sent_at: Instant,
}

/// A packet the radio queued, waiting for the mesh's ACK.
#[derive(Debug)]
struct AwaitingAck {
    /// Whose outcome this is.
    token: SendToken,
    /// When the radio queued it, for the ACK timeout.
    since: Instant,
}

/// The pacing class of a port, as the firmware's phone API limits them.
fn min_spacing(packet: &Packet) -> Option<(u8, Duration)> {
    use proto::PortNum as P;
    match packet.portnum()? {
        P::TextMessageApp | P::TextMessageCompressedApp => Some((0, Duration::from_secs(2))),
        P::PositionApp | P::WaypointApp | P::AlertApp | P::TelemetryApp => {
            Some((1, Duration::from_secs(10)))
        }
        P::TracerouteApp => Some((2, Duration::from_secs(30))),
        _ => None,
    }
}

/// The state of one radio link across connections.
#[derive(Debug)]
pub struct Session {
    /// Timings.
    config: SessionConfig,
    /// Lifecycle phase and its data.
    phase: Phase,
    /// The nonce of the latest `want_config_id` on this connection.
    nonce: u32,
    /// Packets not yet written. Kept across reconnects: nothing was handed to the radio yet.
    pending: VecDeque<Queued>,
    /// The packet written and awaiting its `QueueStatus` (the device answers them in order,
    /// and one at a time keeps a dropped duplicate from confusing the matching).
    in_flight: Option<InFlight>,
    /// Queued `want_ack` packets awaiting the mesh's ACK, by packet id.
    awaiting_ack: HashMap<PacketId, AwaitingAck>,
    /// Free slots in the radio's TX queue from its last `QueueStatus`; `None` until known.
    free: Option<u32>,
    /// When each pacing class last sent, so the radio's own rate limit never refuses us.
    last_sent: [Option<Instant>; 3],
    /// When the last heartbeat was written.
    last_heartbeat: Option<Instant>,
    /// What the radio told about itself on this connection (relays need its MQTT root and
    /// channel settings).
    info: Option<Arc<RadioInfo>>,
    /// Set when a heartbeat goes out, cleared by any frame: detects half-open links.
    silent_since: Option<Instant>,
    /// Heartbeats written on this connection, and answers (`QueueStatus` without a packet
    /// id) received: a relay is confirmed by the answer to its heartbeat.
    heartbeats: (u64, u64),
    /// Recently relayed (from, id), to recognise the radio handing a broadcast back.
    relayed: VecDeque<(NodeId, PacketId)>,
}

impl Session {
    /// A session with no connection yet.
    pub fn new(config: SessionConfig) -> Session {
        Session {
            config,
            phase: Phase::Idle,
            nonce: 0,
            pending: VecDeque::new(),
            in_flight: None,
            awaiting_ack: HashMap::new(),
            free: None,
            last_sent: [None; 3],
            last_heartbeat: None,
            silent_since: None,
            heartbeats: (0, 0),
            relayed: VecDeque::new(),
            info: None,
        }
    }

    /// True once the handshake completed on the current connection.
    pub fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Ready)
    }

    /// Packets submitted and not yet written.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A connection was opened: wake the radio and start the handshake with `nonce`.
    pub fn connected(&mut self, nonce: u32, now: Instant) -> Vec<Output> {
        self.free = None;
        self.heartbeats = (0, 0);
        self.silent_since = None;
        self.last_heartbeat = Some(now);
        let mut out = vec![Output::WriteRaw(Bytes::from_static(
            &mesh_core::frame::WAKE_UP,
        ))];
        self.start_handshake(nonce, now, &mut out);
        out
    }

    /// The connection is gone. What was written but not confirmed becomes a retry: the radio
    /// may or may not have it, and a resend with the same id is deduplicated by the mesh.
    pub fn disconnected(&mut self, reason: &str) -> Vec<Output> {
        self.phase = Phase::Idle;
        self.info = None;
        self.free = None;
        self.silent_since = None;
        let mut out = Vec::new();
        self.fail_unconfirmed(
            &format!("link lost before confirmation ({reason})"),
            &mut out,
        );
        out
    }

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

    /// One frame's payload from the radio.
    pub fn frame(&mut self, frame: Bytes, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        self.silent_since = None;
        let fields = match wire::fields(&frame) {
            Ok(f) => f,
            Err(e) => {
                out.push(Output::Undecodable(e.to_string()));
                return out;
            }
        };
        if let Some(f) = fields.iter().find(|f| f.tag == FROM_RADIO_PACKET) {
            match Packet::decode(f.value.clone()) {
                Ok(p) if p.data().is_some_and(|d| d.portnum == 0) => out.push(Output::Undecodable(
                    "FromRadio.packet: decoded payload without a port".into(),
                )),
                Ok(p) => self.on_packet(p, now, &mut out),
                Err(e) => out.push(Output::Undecodable(format!("FromRadio.packet: {e}"))),
            }
            self.pump(now, &mut out);
            return out;
        }
        let msg = match proto::FromRadio::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                out.push(Output::Undecodable(format!("FromRadio: {e}")));
                return out;
            }
        };
        let Some(item) = msg.payload_variant else {
            // A variant newer than this build: ignored, as clients must.
            return out;
        };
        use from_radio::PayloadVariant as V;
        if let Phase::Handshaking { info, .. } = &mut self.phase
            && info.absorb(&item)
        {
            return out;
        }
        match item {
            V::ConfigCompleteId(id) => self.on_config_complete(id, &mut out),
            V::Rebooted(true) => {
                out.push(Output::Rebooted);
                self.fail_unconfirmed("radio rebooted", &mut out);
                // A nonce the previous handshake did not use, so a late answer to it is ignored.
                self.start_handshake(self.nonce.wrapping_add(1), now, &mut out);
            }
            V::QueueStatus(qs) => self.on_queue_status(qs, now, &mut out),
            V::MqttClientProxyMessage(m) => self.on_uplink(m, &mut out),
            V::LogRecord(r) => out.push(Output::DeviceLog(r.message)),
            V::ClientNotification(n) => out.push(Output::Notification(n.message)),
            _ => {}
        }
        self.pump(now, &mut out);
        out
    }

    /// Time passed: timeouts, heartbeats, and paced packets whose turn has come.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        match &self.phase {
            Phase::Idle => return out,
            Phase::Handshaking { started, info, .. } => {
                if now.saturating_duration_since(*started) >= self.config.handshake_timeout {
                    let mut missing = info.missing();
                    missing.push("config_complete_id");
                    out.push(Output::Close(SessionError::HandshakeTimeout {
                        after: self.config.handshake_timeout,
                        missing,
                    }));
                }
                return out;
            }
            Phase::Ready => {}
        }
        if let Some(since) = self.silent_since
            && now.saturating_duration_since(since) >= self.config.silence_timeout
        {
            out.push(Output::Close(SessionError::Silent {
                after: self.config.silence_timeout,
            }));
            return out;
        }
        if self
            .last_heartbeat
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.heartbeat_interval)
        {
            self.heartbeat(now, &mut out);
        }
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
        self.pump(now, &mut out);
        out
    }

    /// The next moment [`Session::tick`] has something to do, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut deadlines: Vec<Instant> = Vec::new();
        match &self.phase {
            Phase::Idle => return None,
            Phase::Handshaking { started, .. } => {
                return Some(*started + self.config.handshake_timeout);
            }
            Phase::Ready => {}
        }
        if let Some(t) = self.last_heartbeat {
            deadlines.push(t + self.config.heartbeat_interval);
        }
        if let Some(t) = self.silent_since {
            deadlines.push(t + self.config.silence_timeout);
        }
        if let Some(f) = &self.in_flight {
            deadlines.push(f.sent_at + self.config.queue_status_timeout);
        }
        deadlines.extend(
            self.awaiting_ack
                .values()
                .map(|a| a.since + self.config.ack_timeout),
        );
        if self.in_flight.is_none() && self.free != Some(0) {
            deadlines.extend(self.pending.iter().filter_map(|q| {
                let (class, spacing) = min_spacing(q.item.packet())?;
                self.last_sent[usize::from(class)].map(|t| t + spacing)
            }));
        }
        deadlines.into_iter().min()
    }

    /// An encoded `ToRadio{disconnect: true}`, sent when closing a serial link cleanly.
    pub fn goodbye() -> Bytes {
        encode_to_radio(to_radio::PayloadVariant::Disconnect(true))
    }

    fn start_handshake(&mut self, nonce: u32, now: Instant, out: &mut Vec<Output>) {
        let nonce = if SPECIAL_NONCES.contains(&nonce) || nonce == 0 {
            nonce.wrapping_add(7)
        } else {
            nonce
        };
        self.nonce = nonce;
        self.phase = Phase::Handshaking {
            nonce,
            started: now,
            info: Box::default(),
        };
        out.push(Output::Write(encode_to_radio(
            to_radio::PayloadVariant::WantConfigId(nonce),
        )));
    }

    fn on_config_complete(&mut self, id: u32, out: &mut Vec<Output>) {
        let Phase::Handshaking { nonce, info, .. } = &mut self.phase else {
            return;
        };
        if id != *nonce {
            // An answer to an earlier want_config_id: the current one is still coming.
            return;
        }
        let missing: Vec<&'static str> = info
            .missing()
            .into_iter()
            .filter(|m| m.starts_with("my_info") || m.starts_with("node_info"))
            .collect();
        if !missing.is_empty() {
            out.push(Output::Close(SessionError::HandshakeIncomplete { missing }));
            return;
        }
        let info = Arc::new(std::mem::take(info.as_mut()));
        self.phase = Phase::Ready;
        self.info = Some(info.clone());
        out.push(Output::Ready(info));
        // As the Python client does: a heartbeat right away, whose QueueStatus tells how many
        // TX slots are free before the first packet goes out.
        self.last_heartbeat = None;
    }

    fn heartbeat(&mut self, now: Instant, out: &mut Vec<Output>) {
        out.push(Output::Write(encode_to_radio(
            to_radio::PayloadVariant::Heartbeat(proto::Heartbeat::default()),
        )));
        self.last_heartbeat = Some(now);
        self.silent_since.get_or_insert(now);
        self.heartbeats.0 += 1;
    }

    fn on_queue_status(&mut self, qs: proto::QueueStatus, now: Instant, out: &mut Vec<Output>) {
        self.free = Some(qs.free);
        if qs.mesh_packet_id == 0 {
            self.heartbeats.1 += 1;
            if let Some(InFlight {
                awaiting: Awaiting::Processed { reply },
                token,
                ..
            }) = self.in_flight
                && self.heartbeats.1 >= reply
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

    fn on_packet(&mut self, packet: Packet, _now: Instant, out: &mut Vec<Output>) {
        if self.relayed.contains(&(packet.from(), packet.id())) {
            // Our own relay, handed back by the radio as received.
            return;
        }
        if let Some(data) = packet.data()
            && data.portnum == proto::PortNum::RoutingApp as i32
            && data.request_id != 0
        {
            let request = PacketId::new(data.request_id);
            if let Some(waiting) = self.awaiting_ack.remove(&request) {
                out.push(Output::Outcome {
                    token: waiting.token,
                    status: ack_status(&data.payload),
                });
                return;
            }
            if self.in_flight.as_ref().is_some_and(
                |f| matches!(f.awaiting, Awaiting::QueueStatus { id, .. } if id == request),
            ) {
                // A refusal that came before (or instead of) the QueueStatus, such as the
                // phone API's rate limit.
                let f = self.in_flight.take().expect("checked above");
                let status = ack_status(&data.payload);
                if !status.is_delivered() {
                    out.push(Output::Outcome {
                        token: f.token,
                        status,
                    });
                    return;
                }
                self.in_flight = Some(f);
            }
        }
        out.push(Output::Packet(packet));
    }

    /// A message the radio publishes through us. Only encrypted envelopes on `/2/e/` topics
    /// carry mesh packets; our own relays (handed back as received) are recognised.
    fn on_uplink(&mut self, m: proto::MqttClientProxyMessage, out: &mut Vec<Output>) {
        let Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(data)) = m.payload_variant
        else {
            return;
        };
        if !m.topic.contains("/2/e/") {
            return;
        }
        let envelope = Bytes::from(data);
        let fields = match wire::fields(&envelope) {
            Ok(f) => f,
            Err(e) => {
                out.push(Output::Undecodable(format!("uplink envelope: {e}")));
                return;
            }
        };
        let Some(raw) = fields.iter().find(|f| f.tag == 1).map(|f| f.value.clone()) else {
            return;
        };
        let channel = fields
            .iter()
            .find(|f| f.tag == 2)
            .map(|f| String::from_utf8_lossy(&f.value).into_owned())
            .unwrap_or_default();
        match Packet::decode(raw) {
            Ok(p) if self.relayed.contains(&(p.from(), p.id())) || p.meta().via_mqtt => {}
            Ok(packet) => out.push(Output::Uplink { packet, channel }),
            Err(e) => out.push(Output::Undecodable(format!("uplink packet: {e}"))),
        }
    }

    fn pump(&mut self, now: Instant, out: &mut Vec<Output>) {
        if !self.is_ready() || self.in_flight.is_some() || self.free == Some(0) {
            return;
        }
        let eligible = self.pending.iter().position(|q| match &q.item {
            Outgoing::Relay(_) => true,
            Outgoing::Packet(p) => match min_spacing(p) {
                None => true,
                Some((class, spacing)) => self.last_sent[usize::from(class)]
                    .is_none_or(|t| now.saturating_duration_since(t) >= spacing),
            },
        });
        let Some(index) = eligible else { return };
        let q = self.pending.remove(index).expect("index from position");
        let (body, awaiting) = match q.item {
            Outgoing::Packet(packet) => {
                if let Some((class, _)) = min_spacing(&packet) {
                    self.last_sent[usize::from(class)] = Some(now);
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
                if let Some(status) = relay_refusal(&info, &relay) {
                    out.push(Output::Outcome {
                        token: q.token,
                        status,
                    });
                    return self.pump(now, out);
                }
                out.push(Output::Write(relay_message(&relay, &info.mqtt_root())));
                self.heartbeat(now, out);
                if self.relayed.len() >= 256 {
                    self.relayed.pop_front();
                }
                self.relayed
                    .push_back((relay.packet.from(), relay.packet.id()));
                self.in_flight = Some(InFlight {
                    token: q.token,
                    awaiting: Awaiting::Processed {
                        reply: self.heartbeats.0,
                    },
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
    fn fail_unconfirmed(&mut self, reason: &str, out: &mut Vec<Output>) {
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
}

/// Reads a `Routing` payload as a delivery outcome: `NONE` is an ACK, other reasons are
/// NAKs, split into the ones worth retrying and the ones that will fail again.
fn ack_status(payload: &[u8]) -> DeliveryStatus {
    let Ok(routing) = proto::Routing::decode(payload) else {
        return DeliveryStatus::failed("undecodable routing answer");
    };
    let Some(routing::Variant::ErrorReason(code)) = routing.variant else {
        return DeliveryStatus::failed("routing answer without an error reason");
    };
    use routing::Error as E;
    let error = E::try_from(code).unwrap_or(E::None);
    let name = E::try_from(code)
        .map(|e| e.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("routing error {code}"));
    match error {
        E::None if code == 0 => DeliveryStatus::Delivered,
        E::TooLarge | E::NoChannel | E::BadRequest | E::NotAuthorized | E::PkiUnknownPubkey => {
            DeliveryStatus::rejected(format!("mesh refused it: {name}"))
        }
        _ => DeliveryStatus::failed(format!("mesh did not deliver it: {name}")),
    }
}

/// Why the radio cannot take this relay now, if it cannot: its set-up (retry: an operator
/// can fix it while the message waits), or a channel key that differs from the one the packet
/// was encrypted with (rejected: the radio would drop it silently).
fn relay_refusal(info: &RadioInfo, relay: &Relay) -> Option<DeliveryStatus> {
    if let Err(why) = info.accepts_relay_on(&relay.channel) {
        return Some(DeliveryStatus::unreachable(format!(
            "radio cannot take relayed traffic: {why}"
        )));
    }
    let radio_hash = info
        .active_channels()
        .find(|c| info.channel_name(c) == relay.channel)
        .map(|c| mesh_core::channel::channel_hash(&relay.channel, &info.channel_psk(c).expand()))?;
    (u32::from(radio_hash) != relay.packet.channel()).then(|| {
        DeliveryStatus::rejected(format!(
            "the radio's key for channel `{}` differs from the configured one",
            relay.channel
        ))
    })
}

/// The `ToRadio` that injects a relayed packet: a client-proxy MQTT message on the channel's
/// downlink topic, carrying a `ServiceEnvelope` whose packet bytes are the sender's own
/// (encoded field by field so nothing prost does not know is lost).
fn relay_message(relay: &Relay, root: &str) -> Bytes {
    let mut packet = relay.packet.clone();
    // The radio handles it as heard from MQTT and rebroadcasts it with one hop less.
    packet.meta_mut().hop_limit = u32::from(relay.hops) + 1;
    let gateway = relay.gateway.to_string();
    let mut envelope = Vec::new();
    wire::put_bytes_field(1, &packet.encode(), &mut envelope);
    wire::put_bytes_field(2, relay.channel.as_bytes(), &mut envelope);
    wire::put_bytes_field(3, gateway.as_bytes(), &mut envelope);
    encode_to_radio(to_radio::PayloadVariant::MqttClientProxyMessage(
        proto::MqttClientProxyMessage {
            topic: format!("{root}/2/e/{}/{gateway}", relay.channel),
            retained: false,
            payload_variant: Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(
                envelope,
            )),
        },
    ))
}

fn encode_to_radio(variant: to_radio::PayloadVariant) -> Bytes {
    proto::ToRadio {
        payload_variant: Some(variant),
    }
    .encode_to_vec()
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 0x0a0b0c0d;

    fn from_radio(v: from_radio::PayloadVariant) -> Bytes {
        proto::FromRadio {
            id: 0,
            payload_variant: Some(v),
        }
        .encode_to_vec()
        .into()
    }

    fn to_radio(bytes: &Bytes) -> proto::ToRadio {
        proto::ToRadio::decode(bytes.clone()).unwrap()
    }

    fn writes(out: &[Output]) -> Vec<proto::ToRadio> {
        out.iter()
            .filter_map(|o| match o {
                Output::Write(b) => Some(to_radio(b)),
                _ => None,
            })
            .collect()
    }

    fn outcomes(out: &[Output]) -> Vec<(SendToken, DeliveryStatus)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Outcome { token, status } => Some((*token, status.clone())),
                _ => None,
            })
            .collect()
    }

    fn handshake_items() -> Vec<from_radio::PayloadVariant> {
        use from_radio::PayloadVariant as V;
        vec![
            V::MyInfo(proto::MyNodeInfo {
                my_node_num: ME,
                ..Default::default()
            }),
            V::NodeInfo(proto::NodeInfo {
                num: ME,
                user: Some(proto::User {
                    id: "!0a0b0c0d".into(),
                    long_name: "Hub".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            V::Channel(proto::Channel {
                index: 0,
                role: proto::channel::Role::Primary as i32,
                settings: Some(proto::ChannelSettings {
                    psk: vec![1],
                    ..Default::default()
                }),
            }),
            V::Config(proto::Config {
                payload_variant: Some(proto::config::PayloadVariant::Lora(
                    proto::config::LoRaConfig {
                        use_preset: true,
                        ..Default::default()
                    },
                )),
            }),
            V::NodeInfo(proto::NodeInfo {
                num: 0x11223344,
                ..Default::default()
            }),
        ]
    }

    /// A session that completed its handshake at `t0`, with the radio reporting free slots.
    fn ready(t0: Instant) -> Session {
        let mut s = Session::new(SessionConfig::default());
        s.connected(42, t0);
        for item in handshake_items() {
            assert!(s.frame(from_radio(item), t0).is_empty());
        }
        let out = s.frame(
            from_radio(from_radio::PayloadVariant::ConfigCompleteId(42)),
            t0,
        );
        assert!(matches!(out[0], Output::Ready(_)));
        s.tick(t0);
        s.frame(queue_status(0, 16, 0), t0);
        s
    }

    fn queue_status(res: i32, free: u32, id: u32) -> Bytes {
        from_radio(from_radio::PayloadVariant::QueueStatus(
            proto::QueueStatus {
                res,
                free,
                maxlen: 16,
                mesh_packet_id: id,
            },
        ))
    }

    fn text(id: u32, want_ack: bool) -> Packet {
        let mut p = Packet::text_message(NodeId::BROADCAST, 0, "hello");
        p.meta_mut().id = id;
        p.meta_mut().want_ack = want_ack;
        p
    }

    fn routing_reply(request_id: u32, error: routing::Error) -> Bytes {
        let packet = Packet::from_data(
            proto::MeshPacket {
                from: ME,
                to: ME,
                id: 999,
                ..Default::default()
            },
            proto::Data {
                portnum: proto::PortNum::RoutingApp as i32,
                request_id,
                payload: proto::Routing {
                    variant: Some(routing::Variant::ErrorReason(error as i32)),
                }
                .encode_to_vec(),
                ..Default::default()
            },
        );
        let mut body = Vec::new();
        wire::put_bytes_field(FROM_RADIO_PACKET, &packet.encode(), &mut body);
        body.into()
    }

    #[test]
    fn connecting_wakes_the_radio_then_asks_for_its_config() {
        let mut s = Session::new(SessionConfig::default());
        let out = s.connected(42, Instant::now());
        assert!(
            matches!(&out[0], Output::WriteRaw(b) if b.len() == 32 && b.iter().all(|&x| x == 0xc3))
        );
        assert_eq!(
            writes(&out)[0].payload_variant,
            Some(to_radio::PayloadVariant::WantConfigId(42))
        );
    }

    #[test]
    fn the_handshake_collects_identity_channels_and_node_db() {
        let t0 = Instant::now();
        let mut s = Session::new(SessionConfig::default());
        s.connected(42, t0);
        for item in handshake_items() {
            s.frame(from_radio(item), t0);
        }
        let mismatched = s.frame(
            from_radio(from_radio::PayloadVariant::ConfigCompleteId(41)),
            t0,
        );
        assert!(mismatched.is_empty() && !s.is_ready());
        let out = s.frame(
            from_radio(from_radio::PayloadVariant::ConfigCompleteId(42)),
            t0,
        );
        let Output::Ready(info) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(info.node_id(), Some(NodeId::new(ME)));
        assert_eq!(info.user().unwrap().long_name, "Hub");
        assert_eq!(info.nodes.len(), 1);
        assert_eq!(info.channel_name(&info.channels[0]), "LongFast");
        // The first tick after completion sends a heartbeat.
        let hb = writes(&s.tick(t0));
        assert!(matches!(
            hb[0].payload_variant,
            Some(to_radio::PayloadVariant::Heartbeat(_))
        ));
    }

    #[test]
    fn a_handshake_that_stalls_names_what_is_missing() {
        let t0 = Instant::now();
        let mut s = Session::new(SessionConfig::default());
        s.connected(42, t0);
        s.frame(from_radio(handshake_items().remove(0)), t0);
        assert!(s.tick(t0 + Duration::from_secs(29)).is_empty());
        let out = s.tick(t0 + Duration::from_secs(30));
        let Output::Close(err) = &out[0] else {
            panic!("{out:?}")
        };
        let text = err.to_string();
        assert!(text.contains("node_info for the radio itself"), "{text}");
        assert!(text.contains("config_complete_id"), "{text}");
        assert!(!text.contains("my_info"), "{text}");
    }

    #[test]
    fn completing_without_identity_closes_the_link() {
        let t0 = Instant::now();
        let mut s = Session::new(SessionConfig::default());
        s.connected(42, t0);
        let out = s.frame(
            from_radio(from_radio::PayloadVariant::ConfigCompleteId(42)),
            t0,
        );
        assert!(matches!(
            &out[0],
            Output::Close(SessionError::HandshakeIncomplete { .. })
        ));
    }

    #[test]
    fn a_packet_without_ack_is_delivered_when_the_radio_queues_it() {
        let t0 = Instant::now();
        let mut s = ready(t0);
        let out = s.submit(7, text(100, false), t0);
        assert!(matches!(
            writes(&out)[0].payload_variant,
            Some(to_radio::PayloadVariant::Packet(_))
        ));
        let out = s.frame(queue_status(0, 15, 100), t0);
        assert_eq!(outcomes(&out), vec![(7, DeliveryStatus::Delivered)]);
    }

    #[test]
    fn a_want_ack_packet_waits_for_the_mesh_ack() {
        let t0 = Instant::now();
        let mut s = ready(t0);
        s.submit(7, text(100, true), t0);
        assert!(outcomes(&s.frame(queue_status(0, 15, 100), t0)).is_empty());
        let out = s.frame(routing_reply(100, routing::Error::None), t0);
        assert_eq!(outcomes(&out), vec![(7, DeliveryStatus::Delivered)]);
        assert!(
            !out.iter().any(|o| matches!(o, Output::Packet(_))),
            "ACK consumed"
        );
    }

    #[test]
    fn a_nak_is_reported_with_its_reason() {
        let t0 = Instant::now();
        let mut s = ready(t0);
        s.submit(7, text(100, true), t0);
        s.frame(queue_status(0, 15, 100), t0);
        let out = s.frame(routing_reply(100, routing::Error::MaxRetransmit), t0);
        let (_, status) = &outcomes(&out)[0];
        assert!(
            matches!(status, DeliveryStatus::Failed { reason } if reason.contains("MAX_RETRANSMIT"))
        );
        s.submit(8, text(101, true), t0 + Duration::from_secs(3));
        s.frame(queue_status(0, 15, 101), t0);
        let out = s.frame(routing_reply(101, routing::Error::TooLarge), t0);
        assert!(matches!(
            outcomes(&out)[0].1,
            DeliveryStatus::Rejected { .. }
        ));
    }

    #[test]
    fn texts_are_paced_two_seconds_apart_and_one_at_a_time() {
        let t0 = Instant::now();
        let mut s = ready(t0);
        assert_eq!(writes(&s.submit(1, text(1, false), t0)).len(), 1);
        assert!(
            writes(&s.submit(2, text(2, false), t0)).is_empty(),
            "one in flight"
        );
        assert!(
            writes(&s.frame(queue_status(0, 15, 1), t0)).is_empty(),
            "paced"
        );
        assert!(s.next_deadline().unwrap() <= t0 + Duration::from_secs(2));
        assert!(writes(&s.tick(t0 + Duration::from_millis(1999))).is_empty());
        assert_eq!(writes(&s.tick(t0 + Duration::from_secs(2))).len(), 1);
    }

    #[test]
    fn nothing_is_sent_while_the_radio_queue_is_full() {
        let t0 = Instant::now();
        let mut s = ready(t0);
        s.frame(queue_status(0, 0, 0), t0);
        assert!(writes(&s.submit(1, text(1, false), t0)).is_empty());
        assert_eq!(writes(&s.frame(queue_status(0, 3, 0), t0)).len(), 1);
    }

    #[test]
    fn an_unanswered_packet_times_out_into_a_retry() {
        let t0 = Instant::now();
        let mut s = ready(t0);
        s.submit(1, text(1, false), t0);
        let out = s.tick(t0 + Duration::from_secs(10));
        assert!(matches!(outcomes(&out)[0].1, DeliveryStatus::Failed { .. }));
    }

    #[test]
    fn losing_the_link_turns_unconfirmed_packets_into_retries_and_keeps_unsent_ones() {
        let t0 = Instant::now();
        let mut s = ready(t0);
        s.submit(1, text(1, false), t0);
        s.submit(2, text(2, false), t0);
        let out = s.disconnected("socket closed");
        assert_eq!(outcomes(&out).len(), 1);
        assert_eq!(s.pending(), 1);
    }

    #[test]
    fn a_reboot_restarts_the_handshake() {
        let t0 = Instant::now();
        let mut s = ready(t0);
        let out = s.frame(from_radio(from_radio::PayloadVariant::Rebooted(true)), t0);
        assert!(matches!(out[0], Output::Rebooted));
        assert_eq!(
            writes(&out)[0].payload_variant,
            Some(to_radio::PayloadVariant::WantConfigId(43))
        );
        assert!(!s.is_ready());
    }

    #[test]
    fn silence_after_a_heartbeat_closes_the_link() {
        let t0 = Instant::now();
        let mut s = ready(t0);
        let t1 = t0 + Duration::from_secs(300);
        assert_eq!(writes(&s.tick(t1)).len(), 1);
        let out = s.tick(t1 + Duration::from_secs(30));
        assert!(matches!(
            &out[0],
            Output::Close(SessionError::Silent { .. })
        ));
    }

    #[test]
    fn garbage_frames_are_reported_not_fatal() {
        let t0 = Instant::now();
        let mut s = ready(t0);
        for junk in [&b"\xff\xff\xff"[..], b"\x12\x05\x01", b"\x12\x02\x22\x00"] {
            let out = s.frame(Bytes::copy_from_slice(junk), t0);
            assert!(
                matches!(&out[..], [Output::Undecodable(_)]),
                "{junk:?}: {out:?}"
            );
        }
        assert!(s.is_ready());
    }

    fn with_proxy(items: &mut [from_radio::PayloadVariant]) {
        for item in items.iter_mut() {
            if let from_radio::PayloadVariant::Channel(c) = item {
                c.settings.as_mut().unwrap().downlink_enabled = true;
            }
        }
    }

    fn ready_for_relay(t0: Instant, proxy: bool) -> Session {
        let mut s = Session::new(SessionConfig::default());
        s.connected(42, t0);
        let mut items = handshake_items();
        if proxy {
            with_proxy(&mut items);
            items.push(from_radio::PayloadVariant::ModuleConfig(
                proto::ModuleConfig {
                    payload_variant: Some(proto::module_config::PayloadVariant::Mqtt(
                        proto::module_config::MqttConfig {
                            enabled: true,
                            proxy_to_client_enabled: true,
                            ..Default::default()
                        },
                    )),
                },
            ));
        }
        for item in items {
            s.frame(from_radio(item), t0);
        }
        s.frame(
            from_radio(from_radio::PayloadVariant::ConfigCompleteId(42)),
            t0,
        );
        s.tick(t0);
        s.frame(queue_status(0, 16, 0), t0);
        s
    }

    fn relayed(from: u32, id: u32) -> Packet {
        let mut p = text(id, false);
        p.meta_mut().from = from;
        p.encrypt("LongFast", &mesh_core::ChannelKey::from_psk(&[1]))
    }

    fn received(packet: &Packet) -> Bytes {
        let mut body = Vec::new();
        let key = mesh_core::ChannelKey::from_psk(&[1]);
        wire::put_bytes_field(
            FROM_RADIO_PACKET,
            &packet.decrypt(&key).unwrap().encode(),
            &mut body,
        );
        body.into()
    }

    #[test]
    fn a_relayed_packet_enters_as_mqtt_downlink_and_keeps_its_sender_and_id() {
        let t0 = Instant::now();
        let mut s = ready_for_relay(t0, true);
        let p = relayed(0x1111, 500);
        let gw = NodeId::new(0xa7c4_0001);
        let out = s.relay(9, p.clone(), "LongFast", gw, 0, t0);
        let Some(to_radio::PayloadVariant::MqttClientProxyMessage(m)) =
            writes(&out)[0].payload_variant.clone()
        else {
            panic!("{out:?}")
        };
        assert_eq!(m.topic, "msh/2/e/LongFast/!a7c40001");
        let Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(env)) = m.payload_variant
        else {
            panic!()
        };
        let env = proto::ServiceEnvelope::decode(&env[..]).unwrap();
        assert_eq!(env.channel_id, "LongFast");
        assert_eq!(env.gateway_id, "!a7c40001");
        let inner = env.packet.unwrap();
        assert_eq!((inner.from, inner.id, inner.hop_limit), (0x1111, 500, 1));
        // The answer to the heartbeat after it confirms it; the radio handing the broadcast
        // back as received is recognised as our own relay.
        let out = s.frame(queue_status(0, 16, 0), t0);
        assert_eq!(outcomes(&out), vec![(9, DeliveryStatus::Delivered)]);
        let out = s.frame(received(&p), t0);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn what_the_radio_publishes_on_its_uplink_comes_out_encrypted_with_its_channel() {
        let t0 = Instant::now();
        let mut s = ready_for_relay(t0, true);
        let mut dm = text(700, false);
        dm.meta_mut().from = 0x1111;
        dm.meta_mut().to = 0x4444;
        let dm = dm.encrypt("LongFast", &mesh_core::ChannelKey::from_psk(&[1]));
        let mut env = Vec::new();
        wire::put_bytes_field(1, &dm.encode(), &mut env);
        wire::put_bytes_field(2, b"LongFast", &mut env);
        let msg = |topic: &str, env: Vec<u8>| {
            from_radio(from_radio::PayloadVariant::MqttClientProxyMessage(
                proto::MqttClientProxyMessage {
                    topic: topic.into(),
                    retained: false,
                    payload_variant: Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(
                        env,
                    )),
                },
            ))
        };
        let out = s.frame(msg("msh/2/e/LongFast/!0a0b0c0d", env.clone()), t0);
        let [Output::Uplink { packet, channel }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!((packet.from().get(), packet.id().get()), (0x1111, 700));
        assert_eq!(channel, "LongFast");
        assert!(
            s.frame(msg("msh/2/json/LongFast/!0a0b0c0d", env), t0)
                .is_empty()
        );
    }

    #[test]
    fn a_relay_encrypted_with_another_key_than_the_radios_is_rejected() {
        let t0 = Instant::now();
        let mut s = ready_for_relay(t0, true);
        let mut p = text(600, false);
        p.meta_mut().from = 0x1111;
        let p = p.encrypt("LongFast", &mesh_core::ChannelKey::from_psk(&[5]));
        let out = s.relay(9, p, "LongFast", NodeId::new(1), 0, t0);
        assert!(
            matches!(&outcomes(&out)[0].1, DeliveryStatus::Rejected { reason } if reason.contains("key"))
        );
    }

    #[test]
    fn a_relayed_direct_message_is_confirmed_by_the_heartbeat_after_it() {
        let t0 = Instant::now();
        let mut s = ready_for_relay(t0, true);
        let mut dm = text(501, false);
        dm.meta_mut().from = 0x1111;
        dm.meta_mut().to = 0x4444;
        let dm = dm.encrypt("LongFast", &mesh_core::ChannelKey::from_psk(&[1]));
        let out = s.relay(9, dm, "LongFast", NodeId::new(1), 0, t0);
        let w = writes(&out);
        assert!(matches!(
            w[0].payload_variant,
            Some(to_radio::PayloadVariant::MqttClientProxyMessage(_))
        ));
        assert!(matches!(
            w[1].payload_variant,
            Some(to_radio::PayloadVariant::Heartbeat(_))
        ));
        let out = s.frame(queue_status(0, 16, 0), t0);
        assert_eq!(outcomes(&out), vec![(9, DeliveryStatus::Delivered)]);
    }

    #[test]
    fn a_radio_without_the_client_proxy_refuses_relays_with_the_fix() {
        let t0 = Instant::now();
        let mut s = ready_for_relay(t0, false);
        let out = s.relay(9, relayed(0x1111, 500), "LongFast", NodeId::new(1), 0, t0);
        let (_, status) = &outcomes(&out)[0];
        assert!(
            matches!(status, DeliveryStatus::Unreachable { reason } if reason.contains("mqtt.proxy_to_client_enabled")),
            "{status:?}"
        );
    }

    #[test]
    fn an_unconfirmed_relay_times_out_into_a_retry() {
        let t0 = Instant::now();
        let mut s = ready_for_relay(t0, true);
        s.relay(9, relayed(0x1111, 500), "LongFast", NodeId::new(1), 0, t0);
        let out = s.tick(t0 + Duration::from_secs(10));
        assert!(
            matches!(&outcomes(&out)[0].1, DeliveryStatus::Failed { reason } if reason.contains("relayed"))
        );
    }

    #[test]
    fn special_nonces_are_never_used() {
        let mut s = Session::new(SessionConfig::default());
        let out = s.connected(69420, Instant::now());
        assert_ne!(
            writes(&out)[0].payload_variant,
            Some(to_radio::PayloadVariant::WantConfigId(69420))
        );
    }
}
