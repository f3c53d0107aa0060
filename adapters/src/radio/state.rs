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
//! API's pacing ([`mesh_core::pacing`]: one text per 2 s, one position or telemetry per 10 s).
//! A packet sent with `want_ack` is delivered only when the mesh's ACK (a `ROUTING_APP` packet
//! whose `request_id` is its id) arrives; its NAKs read as [`mesh_core::routing`] says.
//!
//! A full radio queue is asked about again: with work waiting and the radio saying `free = 0`,
//! a heartbeat goes out every [`SessionConfig::full_queue_poll`], and its answer tells how much
//! room there is. The firmware sends a `QueueStatus` of its own when room appears only after a
//! *packet's* status said "full", never after a heartbeat's answer did, so a backlog of relays
//! (which get no status of their own) would otherwise wait for the 300 s heartbeat. Telling
//! those self-sent statuses from heartbeat answers is the job of the `queue` module.
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
//! as received packets; those echoes are recognised and not reported again. The envelope and
//! its topic are built and read in the `relay` module.

mod queue;
mod relay;
mod send;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_core::proto::{self, from_radio, to_radio};
use mesh_core::{DeliveryStatus, NodeId, PacingClass, Packet, PacketId, wire};
use prost::Message;

use self::queue::QueueWatch;
use self::send::{AwaitingAck, InFlight, Queued};
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
    /// With work waiting and the radio's queue full, how often to ask it again (a heartbeat,
    /// answered with a `QueueStatus`) rather than wait for the next regular heartbeat.
    pub full_queue_poll: Duration,
    /// How long after the radio was seen with room a `QueueStatus` it may have sent by itself
    /// is still waited for before relays go on (see the `queue` module).
    pub queue_status_grace: Duration,
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
            full_queue_poll: Duration::from_secs(2),
            queue_status_grace: Duration::from_secs(1),
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
    /// The radio's TX queue and which `QueueStatus` answers which heartbeat, on this
    /// connection: flow control, and the confirmation of relays.
    queue: QueueWatch,
    /// When each pacing class last sent, so the radio's own rate limit never refuses us.
    last_sent: [Option<Instant>; PacingClass::COUNT],
    /// When the last heartbeat was written.
    last_heartbeat: Option<Instant>,
    /// What the radio told about itself on this connection (relays need its MQTT root and
    /// channel settings).
    info: Option<Arc<RadioInfo>>,
    /// Set when a heartbeat goes out, cleared by any frame: detects half-open links.
    silent_since: Option<Instant>,
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
            queue: QueueWatch::new(),
            last_sent: [None; PacingClass::COUNT],
            last_heartbeat: None,
            silent_since: None,
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
        self.queue = QueueWatch::new();
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
        self.queue = QueueWatch::new();
        self.silent_since = None;
        let mut out = Vec::new();
        self.fail_unconfirmed(
            &format!("link lost before confirmation ({reason})"),
            &mut out,
        );
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
            V::ConfigCompleteId(id) => self.on_config_complete(id, now, &mut out),
            V::Rebooted(true) => {
                out.push(Output::Rebooted);
                self.fail_unconfirmed("radio rebooted", &mut out);
                // A new radio as far as its queue and heartbeat answers go.
                self.queue = QueueWatch::new();
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
        self.queue
            .forget_unanswered(now, self.config.queue_status_timeout);
        if self.heartbeat_due().is_some_and(|t| now >= t) {
            self.heartbeat(now, &mut out);
        }
        self.expire_unconfirmed(now, &mut out);
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
        deadlines.extend(self.heartbeat_due());
        deadlines.extend(
            self.queue
                .unanswered_deadline(self.config.queue_status_timeout),
        );
        if let Some(t) = self.silent_since {
            deadlines.push(t + self.config.silence_timeout);
        }
        self.send_deadlines(&mut deadlines);
        deadlines.into_iter().min()
    }

    /// When the next heartbeat is due: the regular one, or sooner to ask a full radio again.
    /// Never while one is unanswered (the radio would answer two with one).
    fn heartbeat_due(&self) -> Option<Instant> {
        if self.queue.outstanding() {
            return None;
        }
        let regular = self.last_heartbeat? + self.config.heartbeat_interval;
        Some(
            self.full_queue_poll_at()
                .map_or(regular, |t| t.min(regular)),
        )
    }

    /// When to ask a full radio again: with work waiting, a short while after the last
    /// heartbeat (longer while the radio owes a status of its own, which will say when there
    /// is room: asking meanwhile would only blur which answer is which).
    fn full_queue_poll_at(&self) -> Option<Instant> {
        if !self.is_ready() || !self.queue.is_full() || self.pending.is_empty() {
            return None;
        }
        let delay = if self.queue.expects_stray() {
            self.config.queue_status_timeout
        } else {
            self.config.full_queue_poll
        };
        Some(self.last_heartbeat? + delay)
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

    fn on_config_complete(&mut self, id: u32, now: Instant, out: &mut Vec<Output>) {
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
        // TX slots are free before the first packet goes out. (Written here, not left to the
        // next tick: with nothing else due, that tick could be an hour away.)
        self.heartbeat(now, out);
    }

    /// Writes a heartbeat; returns its number on this connection.
    fn heartbeat(&mut self, now: Instant, out: &mut Vec<Output>) -> u64 {
        out.push(Output::Write(encode_to_radio(
            to_radio::PayloadVariant::Heartbeat(proto::Heartbeat::default()),
        )));
        self.last_heartbeat = Some(now);
        self.silent_since.get_or_insert(now);
        self.queue.heartbeat_written(now)
    }

    fn on_packet(&mut self, packet: Packet, _now: Instant, out: &mut Vec<Output>) {
        if self.relayed.contains(&(packet.from(), packet.id())) {
            // Our own relay, handed back by the radio as received.
            return;
        }
        if self.on_routing_answer(&packet, out) {
            return;
        }
        out.push(Output::Packet(packet));
    }

    /// A message the radio publishes through us (its MQTT uplink). Our own relays, handed
    /// back as received, and what came from MQTT are not reported again.
    fn on_uplink(&mut self, m: proto::MqttClientProxyMessage, out: &mut Vec<Output>) {
        let info = self.info.clone().unwrap_or_default();
        match relay::uplink(&info, m) {
            Ok(Some(env)) => {
                let p = &env.packet;
                if !self.relayed.contains(&(p.from(), p.id())) && !p.meta().via_mqtt {
                    out.push(Output::Uplink {
                        packet: env.packet,
                        channel: env.channel_id,
                    });
                }
            }
            Ok(None) => {}
            Err(e) => out.push(Output::Undecodable(e)),
        }
    }
}

fn encode_to_radio(variant: to_radio::PayloadVariant) -> Bytes {
    proto::ToRadio {
        payload_variant: Some(variant),
    }
    .encode_to_vec()
    .into()
}
