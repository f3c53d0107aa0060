//! The peer frame codec: what two gateways write to each other inside their TLS stream.
//!
//! Every frame is `TYPE LEN BODY`: one type byte, the body length as an unsigned LEB128
//! varint (at most three bytes, at most [`MAX_FRAME`]), then the body. The header means the
//! same in every protocol version, so a frame of a type this build does not know is skipped
//! by its length and handed up as [`Frame::Unknown`].
//!
//! | type | frame       | body                                                                  |
//! |------|-------------|-----------------------------------------------------------------------|
//! | 0x01 | `Hello`     | versions (count byte, varints), gateway id (u32 LE), window items, window bytes, dead-after ms (varints), channels (count varint, each a length byte + UTF-8); trailing bytes ignored so later versions may append fields |
//! | 0x02 | `Define`    | table byte (0 channel, 1 origin, 2 node: version 2), index varint, then a name (length byte + UTF-8) or a gateway or node id (u32 LE) |
//! | 0x03 | `Data`      | first sequence number varint, then items to the end of the body          |
//! | 0x04 | `Ack`       | highest sequence number committed, varint                              |
//! | 0x05 | `Keepalive` | empty                                                                 |
//! | 0x06 | `Close`     | code byte, reason (length byte + UTF-8)                                |
//!
//! A `Data` item is `HEAD [CHANNEL] [ORIGIN] LEN PACKET`. `HEAD` holds the hop count in its
//! low four bits; bit 4 says a channel index follows, bit 5 that an origin index follows
//! (otherwise the previous item's apply), bit 6 that `PACKET` is in the compact form of
//! [`super::compact`] (version 2), bit 7 is zero. Items carry consecutive sequence numbers
//! from the frame's first one: a session numbers its items densely, so the delta between two
//! items is always one and costs nothing on the wire. A 60-byte packet on the same channel
//! and from the same origin as the one before it costs 62 bytes; compacted, a 60-byte text
//! (an 87-byte packet) costs 71.
//!
//! Decoding never allocates more than the bytes already in the buffer: lengths and counts are
//! checked against their bounds and against the frame's end before anything is copied.

pub(crate) use super::bytes::truncate_utf8;
pub use super::bytes::varint_len;
use super::bytes::{Reader, put_text, put_varint};
use crate::node::NodeId;

/// Largest frame body either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest packet one item carries: Meshtastic packets are far smaller (a LoRa frame is at
/// most 256 bytes, a stored `MeshPacket` a little more), so anything above this is an error.
pub const MAX_PACKET: usize = 2048;
/// Largest hop count an item carries (the four bits of its head).
pub const MAX_HOPS: u8 = 15;
/// Longest channel name, in bytes.
pub const MAX_NAME: usize = 64;
/// Most channel names a session may define per direction.
pub const MAX_CHANNELS: usize = 256;
/// Most origin gateways a session may define per direction.
pub const MAX_ORIGINS: usize = 1024;
/// Most senders (mesh nodes) a session may define per direction for compact packets; past
/// that, a packet's `from` travels in full.
pub const MAX_NODES: usize = 4096;
/// Most protocol versions a `Hello` may list.
pub const MAX_VERSIONS: usize = 16;
/// Longest close reason text, in bytes.
pub const MAX_REASON: usize = 255;
/// Longest frame header: the type byte and a three-byte length.
pub const MAX_HEADER: usize = 4;

const HELLO: u8 = 0x01;
const DEFINE: u8 = 0x02;
const DATA: u8 = 0x03;
const ACK: u8 = 0x04;
const KEEPALIVE: u8 = 0x05;
const CLOSE: u8 = 0x06;

const HOPS_MASK: u8 = 0x0f;
const HAS_CHANNEL: u8 = 0x10;
const HAS_ORIGIN: u8 = 0x20;
const COMPACT: u8 = 0x40;
const RESERVED: u8 = 0x80;

/// One frame of the peer protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The first frame each side sends: who it is and what it speaks.
    Hello(Hello),
    /// Names a channel or an origin gateway by a small index for the rest of the session.
    Define(Definition),
    /// A batch of items with consecutive sequence numbers.
    Data(Data),
    /// Every item up to `up_to` (inclusive) is committed to the receiver's store.
    Ack {
        /// The highest committed sequence number.
        up_to: u64,
    },
    /// Nothing to say; proves the link is alive.
    Keepalive,
    /// The sender is ending the session.
    Close {
        /// Why, for machines.
        code: CloseCode,
        /// Why, for the operator's log.
        text: String,
    },
    /// A frame type this build does not know (from a newer version); skipped.
    Unknown {
        /// Its type byte.
        kind: u8,
    },
}

/// The handshake: each side sends one as soon as the stream is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol versions the sender speaks; the session uses the highest common one.
    pub versions: Vec<u16>,
    /// The sender's gateway id, so the receiver can name the origin of what it forwards.
    pub gateway: NodeId,
    /// How many unacknowledged items the sender is willing to hold: the far side's window.
    pub window_items: u32,
    /// How many unacknowledged packet bytes the sender is willing to hold.
    pub window_bytes: u32,
    /// After this long without a byte the sender gives the link up, so the far side sends
    /// keepalives often enough.
    pub dead_after_ms: u32,
    /// The channels the sender offers, which also seed its channel table (index = position).
    pub channels: Vec<String>,
}

/// An entry of one direction's per-session tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Definition {
    /// Channel index `index` means `name` from now on.
    Channel {
        /// The next free index of the sender's channel table.
        index: u32,
        /// The channel's name.
        name: String,
    },
    /// Origin index `index` means gateway `gateway` from now on.
    Origin {
        /// The next free index of the sender's origin table.
        index: u32,
        /// The gateway that first heard the packets.
        gateway: NodeId,
    },
    /// Node index `index` means mesh node `node` in compact packets from now on.
    Node {
        /// The next free index of the sender's node table.
        index: u32,
        /// The packets' sender.
        node: NodeId,
    },
}

/// A batch of items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// The first item's sequence number; the others follow one by one.
    pub first: u64,
    /// The items, in sequence order.
    pub items: Vec<Item>,
}

/// One packet as it crosses between gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Index into the sender's channel table.
    pub channel: u32,
    /// Index into the sender's origin table.
    pub origin: u32,
    /// Gateways the packet has crossed so far, so a loop ends at the configured maximum.
    pub hops: u8,
    /// The packet's bytes as heard, or (when `compact`) its compact form: only its header
    /// fields are ever rewritten, never its payload.
    pub packet: Vec<u8>,
    /// `packet` is in the compact form of [`super::compact`].
    pub compact: bool,
}

/// Why a session ends, as carried by `Close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// The sender is shutting down or was asked to close.
    Normal,
    /// The receiver broke the protocol; the text says how.
    Protocol,
    /// No common protocol version.
    Version,
    /// The receiver was silent for too long.
    Timeout,
    /// Another connection between the same two gateways is kept instead of this one.
    Replaced,
    /// A code from a newer version.
    Other(u8),
}

impl CloseCode {
    fn to_byte(self) -> u8 {
        match self {
            CloseCode::Normal => 0,
            CloseCode::Protocol => 1,
            CloseCode::Version => 2,
            CloseCode::Timeout => 3,
            CloseCode::Replaced => 4,
            CloseCode::Other(b) => b,
        }
    }

    fn from_byte(b: u8) -> CloseCode {
        match b {
            0 => CloseCode::Normal,
            1 => CloseCode::Protocol,
            2 => CloseCode::Version,
            3 => CloseCode::Timeout,
            4 => CloseCode::Replaced,
            other => CloseCode::Other(other),
        }
    }
}

/// Why bytes are not (yet) a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The buffer holds only the start of a frame: read more and try again.
    #[error("incomplete frame")]
    Incomplete,
    /// The bytes break the protocol; the session cannot continue.
    #[error("invalid {what} at byte {at}")]
    Invalid {
        /// The field that is wrong.
        what: &'static str,
        /// Its offset from the start of the frame.
        at: usize,
    },
}

/// Why a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode {what}: above its bound")]
pub struct EncodeError {
    /// The field above its bound.
    pub what: &'static str,
}

/// Decodes the frame at the front of `buf`, returning it and the bytes it took.
pub fn decode(buf: &[u8]) -> Result<(Frame, usize), FrameError> {
    let Some(&kind) = buf.first() else {
        return Err(FrameError::Incomplete);
    };
    let (len, len_bytes) = frame_length(&buf[1..])?;
    let start = 1 + len_bytes;
    let end = start + len;
    if buf.len() < end {
        return Err(FrameError::Incomplete);
    }
    let mut r = Reader {
        buf: &buf[start..end],
        pos: 0,
        base: start,
    };
    let frame = match kind {
        HELLO => Frame::Hello(hello(&mut r)?),
        DEFINE => Frame::Define(definition(&mut r)?),
        DATA => Frame::Data(data(&mut r)?),
        ACK => Frame::Ack {
            up_to: r.varint("ack position")?,
        },
        KEEPALIVE => Frame::Keepalive,
        CLOSE => Frame::Close {
            code: CloseCode::from_byte(r.byte("close code")?),
            text: r.text(MAX_REASON, "close reason")?,
        },
        kind => {
            r.pos = r.buf.len();
            Frame::Unknown { kind }
        }
    };
    // Hello may grow in later versions; every other body is exact for its negotiated version.
    if kind != HELLO && r.pos != r.buf.len() {
        return Err(r.invalid("trailing bytes"));
    }
    Ok((frame, end))
}

/// Reads the header's length varint from the bytes after the type byte.
fn frame_length(buf: &[u8]) -> Result<(usize, usize), FrameError> {
    let mut value = 0usize;
    for i in 0..MAX_HEADER - 1 {
        let Some(&b) = buf.get(i) else {
            return Err(FrameError::Incomplete);
        };
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if value > MAX_FRAME {
                return Err(FrameError::Invalid {
                    what: "frame length",
                    at: 1,
                });
            }
            return Ok((value, i + 1));
        }
    }
    Err(FrameError::Invalid {
        what: "frame length",
        at: 1,
    })
}

fn hello(r: &mut Reader<'_>) -> Result<Hello, FrameError> {
    let count = usize::from(r.byte("version count")?);
    if count == 0 || count > MAX_VERSIONS {
        return Err(r.invalid_back(1, "version count"));
    }
    let mut versions = Vec::with_capacity(count);
    for _ in 0..count {
        let v = r.varint("version")?;
        versions.push(u16::try_from(v).map_err(|_| r.invalid("version"))?);
    }
    let gateway = NodeId::new(r.u32_le("gateway id")?);
    let window_items = r.varint_u32("window items")?;
    let window_bytes = r.varint_u32("window bytes")?;
    let dead_after_ms = r.varint_u32("dead-after")?;
    let count = r.varint("channel count")?;
    if count > MAX_CHANNELS as u64 {
        return Err(r.invalid("channel count"));
    }
    let mut channels = Vec::new();
    for _ in 0..count {
        channels.push(r.text(MAX_NAME, "channel name")?);
    }
    Ok(Hello {
        versions,
        gateway,
        window_items,
        window_bytes,
        dead_after_ms,
        channels,
    })
}

fn definition(r: &mut Reader<'_>) -> Result<Definition, FrameError> {
    let table = r.byte("definition table")?;
    if table > 2 {
        return Err(r.invalid_back(1, "definition table"));
    }
    let index = r.varint_u32("definition index")?;
    match table {
        0 if (index as usize) < MAX_CHANNELS => Ok(Definition::Channel {
            index,
            name: r.text(MAX_NAME, "channel name")?,
        }),
        1 if (index as usize) < MAX_ORIGINS => Ok(Definition::Origin {
            index,
            gateway: NodeId::new(r.u32_le("origin gateway id")?),
        }),
        2 if (index as usize) < MAX_NODES => Ok(Definition::Node {
            index,
            node: NodeId::new(r.u32_le("node id")?),
        }),
        _ => Err(r.invalid_back(1, "definition index")),
    }
}

fn data(r: &mut Reader<'_>) -> Result<Data, FrameError> {
    let first = r.varint("first sequence number")?;
    let mut items = Vec::new();
    let mut channel = None;
    let mut origin = None;
    while r.pos < r.buf.len() {
        let head = r.byte("item head")?;
        if head & RESERVED != 0 {
            return Err(r.invalid_back(1, "item head"));
        }
        if head & HAS_CHANNEL != 0 {
            channel = Some(r.index(MAX_CHANNELS, "item channel")?);
        }
        if head & HAS_ORIGIN != 0 {
            origin = Some(r.index(MAX_ORIGINS, "item origin")?);
        }
        let (Some(channel), Some(origin)) = (channel, origin) else {
            return Err(r.invalid("first item without channel and origin"));
        };
        let at = r.pos;
        let len = r.varint("packet length")?;
        if len == 0 || len > MAX_PACKET as u64 {
            return Err(r.invalid_at(at, "packet length"));
        }
        let packet = r.take(len as usize, "packet length")?.to_vec();
        items.push(Item {
            channel,
            origin,
            hops: head & HOPS_MASK,
            packet,
            compact: head & COMPACT != 0,
        });
    }
    if first.checked_add(items.len() as u64).is_none() {
        return Err(FrameError::Invalid {
            what: "first sequence number",
            at: r.base,
        });
    }
    Ok(Data { first, items })
}

/// Appends `frame` to `out`. Fails, leaving `out` as it was, when a field is above its bound
/// (the session checks items before it accepts them, so this only guards against misuse).
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let result = encode_inner(frame, out, start);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_inner(frame: &Frame, out: &mut Vec<u8>, start: usize) -> Result<(), EncodeError> {
    // Reserve the longest header and close the gap once the body's length is known.
    out.extend_from_slice(&[0; MAX_HEADER]);
    let kind = match frame {
        Frame::Hello(h) => {
            if h.versions.is_empty() || h.versions.len() > MAX_VERSIONS {
                return Err(EncodeError { what: "versions" });
            }
            out.push(h.versions.len() as u8);
            for &v in &h.versions {
                put_varint(out, u64::from(v));
            }
            out.extend_from_slice(&h.gateway.get().to_le_bytes());
            put_varint(out, u64::from(h.window_items));
            put_varint(out, u64::from(h.window_bytes));
            put_varint(out, u64::from(h.dead_after_ms));
            if h.channels.len() > MAX_CHANNELS {
                return Err(EncodeError { what: "channels" });
            }
            put_varint(out, h.channels.len() as u64);
            for name in &h.channels {
                put_text(out, name, MAX_NAME, "channel name")?;
            }
            HELLO
        }
        Frame::Define(Definition::Channel { index, name }) => {
            if *index as usize >= MAX_CHANNELS {
                return Err(EncodeError {
                    what: "channel index",
                });
            }
            out.push(0);
            put_varint(out, u64::from(*index));
            put_text(out, name, MAX_NAME, "channel name")?;
            DEFINE
        }
        Frame::Define(Definition::Origin { index, gateway }) => {
            if *index as usize >= MAX_ORIGINS {
                return Err(EncodeError {
                    what: "origin index",
                });
            }
            out.push(1);
            put_varint(out, u64::from(*index));
            out.extend_from_slice(&gateway.get().to_le_bytes());
            DEFINE
        }
        Frame::Define(Definition::Node { index, node }) => {
            if *index as usize >= MAX_NODES {
                return Err(EncodeError { what: "node index" });
            }
            out.push(2);
            put_varint(out, u64::from(*index));
            out.extend_from_slice(&node.get().to_le_bytes());
            DEFINE
        }
        Frame::Data(d) => {
            put_varint(out, d.first);
            let mut previous: Option<(u32, u32)> = None;
            for item in &d.items {
                put_item(out, item, previous)?;
                previous = Some((item.channel, item.origin));
            }
            DATA
        }
        Frame::Ack { up_to } => {
            put_varint(out, *up_to);
            ACK
        }
        Frame::Keepalive => KEEPALIVE,
        Frame::Close { code, text } => {
            out.push(code.to_byte());
            put_text(out, truncate_utf8(text, MAX_REASON), MAX_REASON, "reason")?;
            CLOSE
        }
        Frame::Unknown { .. } => {
            return Err(EncodeError {
                what: "unknown frame",
            });
        }
    };
    let body = out.len() - start - MAX_HEADER;
    if body > MAX_FRAME {
        return Err(EncodeError { what: "frame size" });
    }
    let mut header = vec![kind];
    put_varint(&mut header, body as u64);
    let gap = MAX_HEADER - header.len();
    out[start + gap..start + MAX_HEADER].copy_from_slice(&header);
    out.drain(start..start + gap);
    Ok(())
}

/// Appends one `Data` item; `previous` is the channel and origin of the item before it.
fn put_item(
    out: &mut Vec<u8>,
    item: &Item,
    previous: Option<(u32, u32)>,
) -> Result<(), EncodeError> {
    if item.hops > MAX_HOPS {
        return Err(EncodeError { what: "hop count" });
    }
    if item.packet.is_empty() || item.packet.len() > MAX_PACKET {
        return Err(EncodeError {
            what: "packet length",
        });
    }
    if item.channel as usize >= MAX_CHANNELS || item.origin as usize >= MAX_ORIGINS {
        return Err(EncodeError { what: "item index" });
    }
    let new_channel = previous.is_none_or(|(c, _)| c != item.channel);
    let new_origin = previous.is_none_or(|(_, o)| o != item.origin);
    let mut head = item.hops;
    if item.compact {
        head |= COMPACT;
    }
    if new_channel {
        head |= HAS_CHANNEL;
    }
    if new_origin {
        head |= HAS_ORIGIN;
    }
    out.push(head);
    if new_channel {
        put_varint(out, u64::from(item.channel));
    }
    if new_origin {
        put_varint(out, u64::from(item.origin));
    }
    put_varint(out, item.packet.len() as u64);
    out.extend_from_slice(&item.packet);
    Ok(())
}

/// Bytes `item` takes in a `Data` frame after an item with `previous` channel and origin.
pub fn item_size(
    channel: u32,
    origin: u32,
    packet_len: usize,
    previous: Option<(u32, u32)>,
) -> usize {
    let mut size = 1 + varint_len(packet_len as u64) + packet_len;
    if previous.is_none_or(|(c, _)| c != channel) {
        size += varint_len(u64::from(channel));
    }
    if previous.is_none_or(|(_, o)| o != origin) {
        size += varint_len(u64::from(origin));
    }
    size
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
