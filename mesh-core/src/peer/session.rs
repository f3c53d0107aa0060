//! One connection's protocol engine: bytes and the owner's calls in, bytes to write and
//! events out. No I/O and no clock: every call that depends on time takes `now`.
//!
//! | state         | entered when                                  | leaves when                                         |
//! |---------------|-----------------------------------------------|-----------------------------------------------------|
//! | `Handshaking` | [`Session::new`] (our `Hello` is queued)      | the peer's `Hello` (→ `Open`), a common version missing, silence, `Close`, EOF |
//! | `Open`        | both `Hello`s exchanged                        | [`Session::close`] (→ `Closing`), a protocol error (→ `Closing`), silence, the peer's `Close` or EOF (→ `Closed`) |
//! | `Closing`     | we sent `Close`; late `Ack`s still count      | the peer's `Close`, EOF, or the close linger (→ `Closed`) |
//! | `Closed`      | the end: [`Event::Closed`] was emitted once   | never                                               |
//!
//! After every call the owner drains [`Session::poll_event`] (writing each `Transmit` in
//! order) and sleeps until [`Session::next_deadline`], when it calls [`Session::tick`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use super::close::{CloseReason, ProtocolError};
use super::frame::{self, CloseCode, EncodeError, Frame, FrameError, Hello};
use super::recv::Inbound;
use super::send::{OfferError, Outbound};
use crate::node::NodeId;

/// The newest protocol version this build speaks: 2 adds compact packets
/// ([`super::compact`]) to version 1.
pub const PROTOCOL_VERSION: u16 = 2;
/// The first version that carries compact packets.
pub const COMPACT_VERSION: u16 = 2;

/// How one session behaves; the defaults suit anything from a LAN to a 9,600 bit/s link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The versions we speak (the highest common one is used).
    pub versions: Vec<u16>,
    /// Unacknowledged items we accept from the peer: a slow store keeps this small.
    pub window_items: u32,
    /// Unacknowledged packet bytes we accept from the peer.
    pub window_bytes: u32,
    /// How long an offered item may wait for others to share its frame.
    pub linger: Duration,
    /// A batch is sent once its items take this many bytes (one TLS record holds 16 KiB).
    pub batch_bytes: usize,
    /// Acknowledge once this many committed items wait...
    pub ack_items: u32,
    /// ...or this long after the first of them was committed.
    pub ack_delay: Duration,
    /// Send a `Keepalive` after this long without writing anything.
    pub keepalive: Duration,
    /// Give the peer up after this long without a byte from it.
    pub dead_after: Duration,
    /// After our `Close`, how long to wait for the peer's last acknowledgements.
    pub close_linger: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            versions: vec![1, PROTOCOL_VERSION],
            window_items: 1024,
            window_bytes: 256 * 1024,
            linger: Duration::from_millis(2),
            batch_bytes: 16 * 1024 - 16,
            ack_items: 256,
            ack_delay: Duration::from_millis(10),
            keepalive: Duration::from_secs(15),
            dead_after: Duration::from_secs(45),
            close_linger: Duration::from_secs(2),
        }
    }
}

/// An item the owner wants carried to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The owner's store key, handed back in [`Event::Acknowledged`].
    pub key: u64,
    /// The channel's name (sent once per session, then as an index).
    pub channel: String,
    /// The gateway that first heard the packet.
    pub origin: NodeId,
    /// Gateways crossed so far.
    pub hops: u8,
    /// The packet as heard.
    pub packet: Vec<u8>,
}

/// An item received from the peer, to be committed before [`Session::committed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Its position on this connection, for [`Session::committed`].
    pub seq: u64,
    /// The channel's name.
    pub channel: Arc<str>,
    /// The gateway that first heard the packet.
    pub origin: NodeId,
    /// Gateways crossed so far (the sender's count; the owner adds its own hop).
    pub hops: u8,
    /// The packet as heard.
    pub packet: Vec<u8>,
}

/// What the owner must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bytes to write to the stream, in order.
    Transmit(Vec<u8>),
    /// The handshake is done: who the peer is and what it offers.
    Peer {
        /// The peer's gateway id.
        id: NodeId,
        /// The channels it offers.
        channels: Vec<String>,
        /// The version both sides now speak.
        version: u16,
    },
    /// Items to commit; then call [`Session::committed`] with the highest `seq` stored.
    Deliver(Vec<Incoming>),
    /// The peer committed the items with these store keys (in offer order): delete them.
    /// A list rather than one "up to" key because the outbox drains by priority, so store
    /// keys do not come in the order the items were offered.
    Acknowledged(Vec<u64>),
    /// The session ended; unacknowledged items stay the owner's, to offer on the next one.
    Closed(CloseReason),
}

/// A session's lifecycle, with what each state needs.
#[derive(Debug)]
pub enum State {
    /// Our `Hello` is sent; the peer's has not arrived.
    Handshaking,
    /// Data flows both ways.
    Open(Box<Open>),
    /// We sent `Close` and wait (until the deadline) for the peer's last acknowledgements.
    Closing(Box<Closing>),
    /// Over.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// What an open session knows.
#[derive(Debug)]
pub struct Open {
    /// The version both sides speak.
    version: u16,
    /// The peer's gateway id.
    peer: NodeId,
    /// Our keepalive interval: ours, or shorter if the peer gives up on silence sooner.
    keepalive: Duration,
    /// Our items to the peer.
    send: Outbound,
    /// The peer's items to us.
    recv: Inbound,
}

/// What a closing session still needs.
#[derive(Debug)]
pub struct Closing {
    /// What the owner will be told.
    reason: CloseReason,
    /// The sending half, still taking acknowledgements so fewer items are sent again.
    send: Outbound,
    /// When we stop waiting.
    until: Instant,
}

impl Closing {
    /// Why the session is closing.
    pub fn reason(&self) -> &CloseReason {
        &self.reason
    }
}

impl Open {
    /// The version both sides speak.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The peer's gateway id.
    pub fn peer(&self) -> NodeId {
        self.peer
    }
}

/// One connection's protocol engine.
#[derive(Debug)]
pub struct Session {
    /// How it behaves.
    config: SessionConfig,
    /// Our `Hello`, for the tables it seeds and the versions to negotiate.
    hello: Hello,
    /// Where the session is in its lifecycle.
    state: State,
    /// Received bytes not yet a whole frame (at most one frame's worth plus a read).
    rx: Vec<u8>,
    /// Frames written since the owner last drained, handed out as one `Transmit`.
    tx: Vec<u8>,
    /// Events waiting for the owner, in order.
    events: VecDeque<Event>,
    /// When the peer last sent anything, for the dead-peer timeout.
    last_rx: Instant,
    /// When we last wrote anything, for the keepalive.
    last_tx: Instant,
}

impl Session {
    /// A session that has just queued its `Hello`. Fails when `channels` or the versions
    /// are beyond what a `Hello` can carry.
    pub fn new(
        gateway: NodeId,
        channels: Vec<String>,
        config: SessionConfig,
        now: Instant,
    ) -> Result<Session, EncodeError> {
        let hello = Hello {
            versions: config.versions.clone(),
            gateway,
            window_items: config.window_items,
            window_bytes: config.window_bytes,
            dead_after_ms: u32::try_from(config.dead_after.as_millis()).unwrap_or(u32::MAX),
            channels,
        };
        let mut tx = Vec::new();
        frame::encode(&Frame::Hello(hello.clone()), &mut tx)?;
        Ok(Session {
            config,
            hello,
            state: State::Handshaking,
            rx: Vec::new(),
            tx,
            events: VecDeque::new(),
            last_rx: now,
            last_tx: now,
        })
    }

    /// Where the session is.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// True while data may be offered.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// True once [`Event::Closed`] has been queued.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// The next event for the owner; bytes to write come first.
    pub fn poll_event(&mut self) -> Option<Event> {
        if !self.tx.is_empty() {
            return Some(Event::Transmit(std::mem::take(&mut self.tx)));
        }
        self.events.pop_front()
    }

    /// Every waiting event, bytes to write first.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.poll_event()).collect()
    }

    /// Bytes read from the stream.
    pub fn on_bytes(&mut self, bytes: &[u8], now: Instant) {
        if self.is_closed() || bytes.is_empty() {
            return;
        }
        self.last_rx = now;
        self.rx.extend_from_slice(bytes);
        let mut used = 0;
        while !self.is_closed() {
            match frame::decode(&self.rx[used..]) {
                Ok((frame, n)) => {
                    used += n;
                    self.on_frame(frame, now);
                }
                Err(FrameError::Incomplete) => break,
                Err(e) => {
                    self.fail(ProtocolError::Frame(e), now);
                    break;
                }
            }
        }
        self.rx.drain(..used.min(self.rx.len()));
    }

    /// One decoded frame (for owners that decode themselves, and tests).
    pub fn on_frame(&mut self, frame: Frame, now: Instant) {
        self.last_rx = now;
        match (&mut self.state, frame) {
            (State::Closed { .. }, _) | (_, Frame::Unknown { .. } | Frame::Keepalive) => {}
            (_, Frame::Close { code, text }) => {
                if let State::Open(open) = &mut self.state {
                    // The peer still takes acknowledgements while it closes.
                    open.recv.ack(&mut self.tx);
                }
                let reason = match std::mem::replace(&mut self.state, State::Handshaking) {
                    State::Closing(closing) => closing.reason,
                    _ => CloseReason::Remote { code, text },
                };
                self.finish(reason);
            }
            (State::Handshaking, Frame::Hello(hello)) => self.on_hello(hello),
            (State::Handshaking, other) => self.fail(unexpected(&other, "before Hello"), now),
            (State::Open(_), Frame::Hello(_)) => self.fail(
                ProtocolError::Unexpected {
                    frame: "Hello",
                    state: "after the handshake",
                },
                now,
            ),
            (State::Open(open), Frame::Define(def)) => {
                if let Err(e) = open.recv.on_define(def) {
                    self.fail(e, now);
                }
            }
            (State::Open(open), Frame::Data(data)) => match open.recv.on_data(data) {
                Ok(items) if items.is_empty() => {}
                Ok(items) => self.events.push_back(Event::Deliver(items)),
                Err(e) => self.fail(e, now),
            },
            (State::Open(open), Frame::Ack { up_to }) => match open.send.on_ack(up_to) {
                Ok(keys) => self.acknowledged(keys),
                Err(e) => self.fail(e, now),
            },
            (State::Closing(closing), Frame::Ack { up_to }) => {
                if let Ok(keys) = closing.send.on_ack(up_to) {
                    self.acknowledged(keys);
                }
            }
            // Data after our Close is not delivered: we will not acknowledge it, so the peer
            // keeps it and sends it again on the next connection.
            (State::Closing(_), _) => {}
        }
    }

    fn acknowledged(&mut self, keys: Vec<u64>) {
        if !keys.is_empty() {
            self.events.push_back(Event::Acknowledged(keys));
        }
    }

    fn on_hello(&mut self, hello: Hello) {
        let common = self
            .hello
            .versions
            .iter()
            .filter(|v| hello.versions.contains(v))
            .max()
            .copied();
        let Some(version) = common else {
            let reason = CloseReason::Version {
                ours: self.hello.versions.clone(),
                theirs: hello.versions,
            };
            self.send_close(CloseCode::Version, &reason.to_string());
            self.finish(reason);
            return;
        };
        let theirs = Duration::from_millis(u64::from(hello.dead_after_ms));
        let keepalive = if theirs.is_zero() {
            self.config.keepalive
        } else {
            // Three keepalives per silence the peer tolerates, so one lost one is harmless.
            self.config
                .keepalive
                .min(theirs / 3)
                .max(Duration::from_millis(100))
        };
        let send = Outbound::new(
            &self.hello.channels,
            self.hello.gateway,
            hello.window_items,
            hello.window_bytes,
            self.config.linger,
            self.config.batch_bytes,
            version >= COMPACT_VERSION,
        );
        let recv = Inbound::new(
            &hello.channels,
            hello.gateway,
            self.config.window_items,
            self.config.window_bytes,
            self.config.ack_items,
            self.config.ack_delay,
        );
        self.state = State::Open(Box::new(Open {
            version,
            peer: hello.gateway,
            keepalive,
            send,
            recv,
        }));
        self.events.push_back(Event::Peer {
            id: hello.gateway,
            channels: hello.channels,
            version,
        });
    }

    /// How many more items [`Session::offer`] takes now (0 unless open).
    pub fn room(&self) -> usize {
        match &self.state {
            State::Open(open) => open.send.room(),
            _ => 0,
        }
    }

    /// Items sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        match &self.state {
            State::Open(open) => open.send.in_flight(),
            State::Closing(closing) => closing.send.in_flight(),
            _ => 0,
        }
    }

    /// Queues an item for the peer. It is sent within the linger, or at once when its batch
    /// is full; its key comes back in [`Event::Acknowledged`] once the peer committed it.
    pub fn offer(&mut self, item: Outgoing, now: Instant) -> Result<(), OfferError> {
        let State::Open(open) = &mut self.state else {
            return Err(OfferError::NotOpen(item));
        };
        let before = self.tx.len();
        let result = open.send.offer(item, now, &mut self.tx);
        if self.tx.len() > before {
            self.last_tx = now;
        }
        result
    }

    /// Sends what is pending now, without waiting for the linger.
    pub fn flush(&mut self, now: Instant) {
        if let State::Open(open) = &mut self.state {
            let before = self.tx.len();
            open.send.flush(&mut self.tx);
            if self.tx.len() > before {
                self.last_tx = now;
            }
        }
    }

    /// The owner stored every delivered item up to `seq`: they may be acknowledged.
    pub fn committed(&mut self, seq: u64, now: Instant) {
        if let State::Open(open) = &mut self.state {
            let before = self.tx.len();
            open.recv.committed(seq, now, &mut self.tx);
            if self.tx.len() > before {
                self.last_tx = now;
            }
        }
    }

    /// Ends the session: what is committed is acknowledged, pending items are dropped (they
    /// stay the owner's), a `Close` is sent and late acknowledgements are still taken.
    pub fn close(&mut self, code: CloseCode, text: &str, now: Instant) {
        let reason = CloseReason::Local {
            code,
            text: frame::truncate_utf8(text, frame::MAX_REASON).to_owned(),
        };
        self.close_with(code, reason, now);
    }

    /// When [`Session::tick`] must be called next, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let dead = self.last_rx + self.config.dead_after;
        match &self.state {
            State::Handshaking => Some(dead),
            State::Open(open) => [
                Some(dead),
                Some(self.last_tx + open.keepalive),
                open.send.deadline(),
                open.recv.deadline(),
            ]
            .into_iter()
            .flatten()
            .min(),
            State::Closing(closing) => Some(closing.until),
            State::Closed { .. } => None,
        }
    }

    /// Time passed: sends lingering batches and due acknowledgements, keeps the link alive,
    /// and gives up on a silent peer.
    pub fn tick(&mut self, now: Instant) {
        let silent = now.saturating_duration_since(self.last_rx);
        match &mut self.state {
            State::Closed { .. } => {}
            State::Closing(closing) => {
                if closing.until <= now
                    && let State::Closing(closing) =
                        std::mem::replace(&mut self.state, State::Handshaking)
                {
                    self.finish(closing.reason);
                }
            }
            _ if silent >= self.config.dead_after => {
                let reason = CloseReason::Timeout(silent);
                self.send_close(CloseCode::Timeout, &reason.to_string());
                self.finish(reason);
            }
            State::Handshaking => {}
            State::Open(open) => {
                let before = self.tx.len();
                open.send.tick(now, &mut self.tx);
                open.recv.tick(now, &mut self.tx);
                if self.tx.len() == before && now >= self.last_tx + open.keepalive {
                    // A keepalive has no field that can exceed a bound.
                    let _ = frame::encode(&Frame::Keepalive, &mut self.tx);
                }
                if self.tx.len() > before {
                    self.last_tx = now;
                }
            }
        }
    }

    /// The stream ended.
    pub fn on_eof(&mut self) {
        if self.is_closed() {
            return;
        }
        let reason = match std::mem::replace(&mut self.state, State::Handshaking) {
            State::Closing(closing) => closing.reason,
            _ => CloseReason::Eof,
        };
        self.finish(reason);
    }

    /// The peer broke the protocol: say what was wrong and close.
    fn fail(&mut self, error: ProtocolError, now: Instant) {
        self.close_with(CloseCode::Protocol, CloseReason::Protocol(error), now);
    }

    fn close_with(&mut self, code: CloseCode, reason: CloseReason, now: Instant) {
        let text = match &reason {
            CloseReason::Local { text, .. } => text.clone(),
            other => other.to_string(),
        };
        match std::mem::replace(&mut self.state, State::Handshaking) {
            State::Open(open) => {
                let Open { send, mut recv, .. } = *open;
                recv.ack(&mut self.tx);
                self.send_close(code, &text);
                self.last_tx = now;
                self.state = State::Closing(Box::new(Closing {
                    reason,
                    send,
                    until: now + self.config.close_linger,
                }));
            }
            State::Handshaking => {
                self.send_close(code, &text);
                self.finish(reason);
            }
            // Already closing or closed: the first reason stands.
            previous => self.state = previous,
        }
    }

    fn send_close(&mut self, code: CloseCode, text: &str) {
        let close = Frame::Close {
            code,
            text: text.to_owned(),
        };
        // The reason is cut to its bound by the encoder; nothing else can fail.
        let _ = frame::encode(&close, &mut self.tx);
    }

    fn finish(&mut self, reason: CloseReason) {
        self.events.push_back(Event::Closed(reason.clone()));
        self.state = State::Closed { reason };
    }
}

fn unexpected(frame: &Frame, state: &'static str) -> ProtocolError {
    let frame = match frame {
        Frame::Hello(_) => "Hello",
        Frame::Define(_) => "Define",
        Frame::Data(_) => "Data",
        Frame::Ack { .. } => "Ack",
        Frame::Keepalive => "Keepalive",
        Frame::Close { .. } => "Close",
        Frame::Unknown { .. } => "unknown",
    };
    ProtocolError::Unexpected { frame, state }
}
