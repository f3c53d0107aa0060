//! The sending half of an open session: numbering, batching, the window and acknowledgements.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::compact;
use super::frame::{
    self, Data, Definition, Frame, Item, MAX_CHANNELS, MAX_HOPS, MAX_NAME, MAX_NODES, MAX_ORIGINS,
    MAX_PACKET,
};
use super::session::{Outgoing, ProtocolError};
use crate::node::NodeId;

/// Most items a session keeps unacknowledged, whatever the far side advertises: the
/// in-flight list costs memory per item.
pub const MAX_WINDOW_ITEMS: u32 = 65_536;
/// Most packet bytes a session keeps unacknowledged, whatever the far side advertises.
pub const MAX_WINDOW_BYTES: u32 = 64 * 1024 * 1024;

/// Why an item was not accepted; the item comes back so nothing vanishes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The session is not open (handshaking, closing or closed): offer it on the next one.
    #[error("the session is not open")]
    NotOpen(Outgoing),
    /// The window is full: offer it again after an acknowledgement.
    #[error("the window is full")]
    Full(Outgoing),
    /// The item can never be sent; the text names the field.
    #[error("the item cannot be sent: {what}")]
    Invalid {
        /// The item.
        item: Outgoing,
        /// What is wrong with it.
        what: &'static str,
    },
}

/// One item sent and not yet acknowledged.
#[derive(Debug)]
struct InFlight {
    /// Its sequence number on this connection.
    seq: u64,
    /// The owner's store key, handed back once the far side committed the item.
    key: u64,
    /// Its packet's length, released from the byte window on acknowledgement.
    len: usize,
}

/// The sending half.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// The sequence number the next framed item gets: sequence numbers are per connection,
    /// dense and start at 1, so `Ack` positions are unambiguous and items need no delta.
    next_seq: u64,
    /// The highest position the far side acknowledged (0: none yet).
    acked: u64,
    /// Items framed and written, oldest first, until their acknowledgement.
    in_flight: VecDeque<InFlight>,
    /// Packet bytes of `in_flight`, for the byte window.
    in_flight_bytes: usize,
    /// Items offered but not yet framed, waiting for the batch to fill or the linger to end.
    pending: Vec<Item>,
    /// The store keys of `pending` and their packets' lengths as offered (what the window
    /// counts, on both sides, whatever form the packet crosses in), in the same order.
    pending_keys: Vec<(u64, usize)>,
    /// Bytes the items of `pending` take in a `Data` frame.
    pending_frame_bytes: usize,
    /// Packet bytes of `pending`, for the byte window.
    pending_bytes: usize,
    /// When the oldest pending item was offered: the batch goes out at this plus the linger.
    pending_since: Option<Instant>,
    /// Most items in flight plus pending: the far side's advertised window, capped.
    window_items: usize,
    /// Most packet bytes in flight plus pending.
    window_bytes: usize,
    /// Channel names this side has defined, so a name crosses once per session.
    channels: HashMap<String, u32>,
    /// Origin gateways this side has defined, so an id crosses once per session.
    origins: HashMap<NodeId, u32>,
    /// Definitions the pending batch needs, written just before its `Data` frame: written
    /// at once they would each take a TLS record and a TCP segment of their own.
    defines: Vec<u8>,
    /// Whether the far side reads compact packets (protocol version 2).
    compact: bool,
    /// Senders this side has defined for compact packets, so a `from` crosses once per
    /// session and then as a one- or two-byte index.
    nodes: HashMap<NodeId, u32>,
    /// The linger: how long an item may wait for company before its batch is sent.
    linger: Duration,
    /// A batch is sent once its items take this many bytes, so a frame fits one TLS record.
    batch_bytes: usize,
}

impl Outbound {
    /// The sending half of a session whose far side accepts `window_items`/`window_bytes`.
    /// Our `Hello` announced `channels` (indexes 0..) and `gateway` is origin 0.
    pub(crate) fn new(
        channels: &[String],
        gateway: NodeId,
        window_items: u32,
        window_bytes: u32,
        linger: Duration,
        batch_bytes: usize,
        compact: bool,
    ) -> Outbound {
        Outbound {
            next_seq: 1,
            acked: 0,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            pending: Vec::new(),
            pending_keys: Vec::new(),
            pending_frame_bytes: 0,
            pending_bytes: 0,
            pending_since: None,
            window_items: window_items.clamp(1, MAX_WINDOW_ITEMS) as usize,
            window_bytes: window_bytes.clamp(MAX_PACKET as u32, MAX_WINDOW_BYTES) as usize,
            channels: channels.iter().cloned().zip(0..).collect(),
            origins: HashMap::from([(gateway, 0)]),
            defines: Vec::new(),
            compact,
            nodes: HashMap::new(),
            linger,
            batch_bytes: batch_bytes.clamp(MAX_PACKET + 16, frame::MAX_FRAME - 16),
        }
    }

    /// Items unacknowledged or waiting, against the window.
    fn outstanding(&self) -> usize {
        self.in_flight.len() + self.pending.len()
    }

    fn outstanding_bytes(&self) -> usize {
        self.in_flight_bytes + self.pending_bytes
    }

    /// How many more items may be offered now (the byte window may refuse a large one).
    pub(crate) fn room(&self) -> usize {
        if self.outstanding_bytes() >= self.window_bytes {
            return 0;
        }
        self.window_items.saturating_sub(self.outstanding())
    }

    /// Items sent and not yet acknowledged.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Takes `item` into the current batch, with any definition it needs.
    pub(crate) fn offer(
        &mut self,
        item: Outgoing,
        now: Instant,
        tx: &mut Vec<u8>,
    ) -> Result<(), OfferError> {
        if let Some(what) = invalid(&item) {
            return Err(OfferError::Invalid { item, what });
        }
        let len = item.packet.len();
        let fits_bytes =
            self.outstanding() == 0 || self.outstanding_bytes() + len <= self.window_bytes;
        if self.outstanding() >= self.window_items || !fits_bytes {
            return Err(OfferError::Full(item));
        }
        let Some(channel) = self.channel_index(&item.channel) else {
            return Err(OfferError::Invalid {
                item,
                what: "more channels than a session can name",
            });
        };
        let Some(origin) = self.origin_index(item.origin) else {
            return Err(OfferError::Invalid {
                item,
                what: "more origin gateways than a session can name",
            });
        };
        let (packet, compact) = match self.compacted(&item.packet) {
            Some(compact) => (compact, true),
            None => (item.packet, false),
        };
        let previous = self.pending.last().map(|p| (p.channel, p.origin));
        let mut size = frame::item_size(channel, origin, packet.len(), previous);
        if self.pending_frame_bytes + size > self.batch_bytes {
            self.flush(tx);
            size = frame::item_size(channel, origin, packet.len(), None);
        }
        self.pending.push(Item {
            channel,
            origin,
            hops: item.hops,
            packet,
            compact,
        });
        self.pending_keys.push((item.key, len));
        self.pending_frame_bytes += size;
        self.pending_bytes += len;
        self.pending_since.get_or_insert(now);
        // Nothing more can join a full window, so waiting would only add latency.
        if self.pending_frame_bytes >= self.batch_bytes || self.room() == 0 {
            self.flush(tx);
        }
        Ok(())
    }

    fn channel_index(&mut self, name: &str) -> Option<u32> {
        if let Some(&index) = self.channels.get(name) {
            return Some(index);
        }
        let index = u32::try_from(self.channels.len())
            .ok()
            .filter(|&i| (i as usize) < MAX_CHANNELS)?;
        let def = Frame::Define(Definition::Channel {
            index,
            name: name.to_owned(),
        });
        frame::encode(&def, &mut self.defines).ok()?;
        self.channels.insert(name.to_owned(), index);
        Some(index)
    }

    /// The compact form of `packet`, when the far side reads it and it is shorter; defines
    /// the packet's sender first if it is new to the session.
    fn compacted(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        if !self.compact {
            return None;
        }
        let parsed = compact::Parsed::new(packet)?;
        let from = parsed.from().and_then(|node| self.node_index(node));
        compact::pack(&parsed, from)
    }

    fn node_index(&mut self, node: NodeId) -> Option<u32> {
        if let Some(&index) = self.nodes.get(&node) {
            return Some(index);
        }
        let index = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&i| (i as usize) < MAX_NODES)?;
        frame::encode(
            &Frame::Define(Definition::Node { index, node }),
            &mut self.defines,
        )
        .ok()?;
        self.nodes.insert(node, index);
        Some(index)
    }

    fn origin_index(&mut self, gateway: NodeId) -> Option<u32> {
        if let Some(&index) = self.origins.get(&gateway) {
            return Some(index);
        }
        let index = u32::try_from(self.origins.len())
            .ok()
            .filter(|&i| (i as usize) < MAX_ORIGINS)?;
        frame::encode(
            &Frame::Define(Definition::Origin { index, gateway }),
            &mut self.defines,
        )
        .ok()?;
        self.origins.insert(gateway, index);
        Some(index)
    }

    /// When the pending batch must go out, if there is one.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.pending_since.map(|t| t + self.linger)
    }

    /// Sends the pending batch if its linger is over.
    pub(crate) fn tick(&mut self, now: Instant, tx: &mut Vec<u8>) {
        if self.deadline().is_some_and(|d| d <= now) {
            self.flush(tx);
        }
    }

    /// Frames the pending items as one `Data` frame into `tx`.
    pub(crate) fn flush(&mut self, tx: &mut Vec<u8>) {
        if self.pending.is_empty() {
            return;
        }
        tx.append(&mut self.defines);
        let first = self.next_seq;
        for (key, len) in self.pending_keys.drain(..) {
            self.in_flight.push_back(InFlight {
                seq: self.next_seq,
                key,
                len,
            });
            self.in_flight_bytes += len;
            self.next_seq += 1;
        }
        let data = Frame::Data(Data {
            first,
            items: std::mem::take(&mut self.pending),
        });
        // Every item was checked against the codec's bounds in `offer` and the batch is
        // capped below the frame limit, so encoding cannot fail here.
        let encoded = frame::encode(&data, tx);
        debug_assert!(encoded.is_ok(), "{encoded:?}");
        self.pending_frame_bytes = 0;
        self.pending_bytes = 0;
        self.pending_since = None;
    }

    /// The far side committed everything up to `up_to`: the keys it releases, oldest first.
    pub(crate) fn on_ack(&mut self, up_to: u64) -> Result<Vec<u64>, ProtocolError> {
        let sent = self.next_seq - 1;
        if up_to > sent {
            return Err(ProtocolError::AckBeyondSent { up_to, sent });
        }
        if up_to < self.acked {
            return Err(ProtocolError::AckBackwards {
                up_to,
                acked: self.acked,
            });
        }
        self.acked = up_to;
        let mut keys = Vec::new();
        while self.in_flight.front().is_some_and(|f| f.seq <= up_to) {
            if let Some(f) = self.in_flight.pop_front() {
                self.in_flight_bytes -= f.len;
                keys.push(f.key);
            }
        }
        Ok(keys)
    }
}

/// What makes `item` unsendable, if anything.
fn invalid(item: &Outgoing) -> Option<&'static str> {
    if item.packet.is_empty() {
        Some("empty packet")
    } else if item.packet.len() > MAX_PACKET {
        Some("packet above 2048 bytes")
    } else if item.hops > MAX_HOPS {
        Some("hop count above 15")
    } else if item.channel.len() > MAX_NAME {
        Some("channel name above 64 bytes")
    } else {
        None
    }
}
