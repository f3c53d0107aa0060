//! Header compression for the packets an item carries (protocol version 2).
//!
//! A Meshtastic packet spends about a fifth of a 60-byte text on its header: five bytes each
//! for `from`, `to` and `id` (a key byte and a fixed 32-bit value), a key byte and a length
//! for the payload, a key and a value for each hop count, and eleven bytes for a negative
//! `rx_rssi` (protobuf writes a negative `int32` as a ten-byte varint). On a 9,600 bit/s link
//! that header is a fifth of the airtime. This module rewrites only those header fields into
//! a denser form and back, byte for byte; it never looks inside an encrypted payload, and of a
//! decoded payload it rewrites only the two keys in front of the port number and the text.
//!
//! The compact form is `FLAGS [FROM] [ID] [HOPS] [RSSI] [REST_LEN REST] BODY`:
//!
//! | flag bit | field                        | compact value                                   |
//! |----------|------------------------------|-------------------------------------------------|
//! | 0        | `from` (1, fixed32)          | index into the session's node table (varint)    |
//! | 1        | `to` (2) = broadcast         | nothing                                         |
//! | 2        | `id` (6, fixed32)            | four bytes, little-endian                       |
//! | 3        | `hop_limit` (9), `hop_start` (15), both at most 15 | one byte: limit, start << 4 |
//! | 4        | the body is `decoded` (4)    | (otherwise a non-empty body is `encrypted` (5)) |
//! | 5        | the decoded `Data` starts with `portnum` (1) and `payload` (2) | `BODY` is `PORTNUM PAYLOAD_LEN PAYLOAD DATA_REST` |
//! | 6        | the body comes after every other field (as [`crate::Packet::encode`] writes it) | (otherwise at its field number's place, as the firmware writes it) |
//! | 7        | other fields                 | `REST_LEN REST`: their bytes as they were       |
//! | 8        | `rx_rssi` (12, int32)        | zigzag varint                                   |
//!
//! `FLAGS` is a varint (one byte unless bit 7 or 8 is set), `BODY` runs to the end of the item,
//! so neither needs a length. Whatever is not in the table stays in `REST` verbatim, fields of
//! newer firmware included; rebuilding merges `REST` back by field number.
//!
//! The rewrite is lossless by construction and checked: [`pack`] rebuilds what it made and
//! gives up (the item travels as it was) unless that gives back the very same bytes. A packet
//! that is not the canonical encoding prost writes (fields out of order, an explicit zero, a
//! padded varint) therefore just crosses uncompressed.

use bytes::Bytes;
use prost::encoding::WireType;

use super::bytes::{Reader, put_varint};
use super::frame::{FrameError, MAX_PACKET};
use crate::node::NodeId;
use crate::wire;

const FROM: u64 = 1 << 0;
const TO_BROADCAST: u64 = 1 << 1;
const ID: u64 = 1 << 2;
const HOPS: u64 = 1 << 3;
const DECODED: u64 = 1 << 4;
const DATA: u64 = 1 << 5;
const BODY_LAST: u64 = 1 << 6;
const REST: u64 = 1 << 7;
const RSSI: u64 = 1 << 8;
const KNOWN: u64 = (1 << 9) - 1;

const TAG_FROM: u32 = 1;
const TAG_TO: u32 = 2;
const TAG_DECODED: u32 = 4;
const TAG_ENCRYPTED: u32 = 5;
const TAG_ID: u32 = 6;
const TAG_HOP_LIMIT: u32 = 9;
const TAG_RSSI: u32 = 12;
const TAG_HOP_START: u32 = 15;
const TAG_PORTNUM: u32 = 1;
const TAG_PAYLOAD: u32 = 2;

/// A packet taken apart for [`pack`]: which header fields it has and where its body is.
#[derive(Debug)]
pub struct Parsed {
    /// The packet's bytes, for the final check and for `REST`.
    packet: Bytes,
    /// Its top-level fields, in wire order.
    fields: Vec<wire::Field>,
}

impl Parsed {
    /// Splits `packet` into its fields; `None` when it is not a protobuf message (it then
    /// crosses as it is, and the receiver judges it like any packet).
    pub fn new(packet: &[u8]) -> Option<Parsed> {
        let packet = Bytes::copy_from_slice(packet);
        let fields = wire::fields(&packet).ok()?;
        Some(Parsed { packet, fields })
    }

    /// The packet's sender, which the caller turns into a node-table index.
    pub fn from(&self) -> Option<NodeId> {
        self.fields
            .iter()
            .find(|f| f.tag == TAG_FROM && f.wire_type == WireType::ThirtyTwoBit)
            .map(|f| NodeId::new(fixed32(&f.value)))
    }
}

/// The compact form of `parsed`, with its sender written as node-table index `from_index`
/// (`None`: the table is full, and `from` stays in `REST`). `None` when the compact form
/// would not rebuild the packet exactly or would not be shorter.
pub fn pack(parsed: &Parsed, from_index: Option<u32>) -> Option<Vec<u8>> {
    let mut flags = 0u64;
    let mut from = None;
    let mut id = None;
    let (mut hop_limit, mut hop_start) = (None, None);
    let mut rssi = None;
    let mut body: Option<(u32, &Bytes)> = None;
    let mut rest = Vec::new();
    for (i, f) in parsed.fields.iter().enumerate() {
        let taken = match (f.tag, f.wire_type) {
            (TAG_FROM, WireType::ThirtyTwoBit) if from_index.is_some() && from.is_none() => {
                from = from_index;
                flags |= FROM;
                true
            }
            (TAG_TO, WireType::ThirtyTwoBit) if fixed32(&f.value) == u32::MAX => {
                flags |= TO_BROADCAST;
                true
            }
            (TAG_ID, WireType::ThirtyTwoBit) if id.is_none() => {
                id = Some(fixed32(&f.value));
                flags |= ID;
                true
            }
            (TAG_HOP_LIMIT, WireType::Varint) if hop_limit.is_none() => {
                hop_limit = small(&f.value);
                hop_limit.is_some()
            }
            (TAG_HOP_START, WireType::Varint) if hop_start.is_none() => {
                hop_start = small(&f.value);
                hop_start.is_some()
            }
            (TAG_RSSI, WireType::Varint) if rssi.is_none() => {
                rssi = varint(&f.value).map(|v| v as i64 as i32);
                flags |= RSSI;
                rssi.is_some()
            }
            (TAG_DECODED | TAG_ENCRYPTED, WireType::LengthDelimited) if body.is_none() => {
                body = Some((f.tag, &f.value));
                if i + 1 == parsed.fields.len() {
                    flags |= BODY_LAST;
                }
                true
            }
            _ => false,
        };
        if !taken {
            rest.extend_from_slice(&f.encoded);
        }
    }
    if hop_limit.is_some() || hop_start.is_some() {
        flags |= HOPS;
    }
    let data = match body {
        Some((TAG_DECODED, value)) => {
            flags |= DECODED;
            let data = DataHead::of(value);
            if data.is_some() {
                flags |= DATA;
            }
            data
        }
        _ => None,
    };
    if !rest.is_empty() {
        flags |= REST;
    }

    let mut out = Vec::with_capacity(parsed.packet.len());
    put_varint(&mut out, flags);
    if let Some(index) = from {
        put_varint(&mut out, u64::from(index));
    }
    if let Some(id) = id {
        out.extend_from_slice(&id.to_le_bytes());
    }
    if flags & HOPS != 0 {
        out.push(hop_limit.unwrap_or(0) | hop_start.unwrap_or(0) << 4);
    }
    if let Some(rssi) = rssi {
        put_varint(&mut out, zigzag(rssi));
    }
    if !rest.is_empty() {
        put_varint(&mut out, rest.len() as u64);
        out.extend_from_slice(&rest);
    }
    match (data, body) {
        (Some(d), _) => {
            put_varint(&mut out, d.portnum);
            put_varint(&mut out, d.payload.len() as u64);
            out.extend_from_slice(d.payload);
            out.extend_from_slice(d.rest);
        }
        (None, Some((_, value))) => out.extend_from_slice(value),
        (None, None) => {}
    }
    if out.len() >= parsed.packet.len() {
        return None;
    }
    let from_id = parsed.from();
    let rebuilt = unpack(&out, |_| from_id).ok()?;
    (rebuilt == parsed.packet).then_some(out)
}

/// Rebuilds the packet `compact` stands for, looking node-table indexes up with `node`.
pub fn unpack(compact: &[u8], node: impl Fn(u32) -> Option<NodeId>) -> Result<Vec<u8>, FrameError> {
    let mut r = Reader {
        buf: compact,
        pos: 0,
        base: 0,
    };
    let flags = r.varint("compact flags")?;
    if flags & !KNOWN != 0 || (flags & DATA != 0 && flags & DECODED == 0) {
        return Err(r.invalid_at(0, "compact flags"));
    }
    // The header fields, each as (field number, its encoded bytes), in field order.
    let mut header: Vec<(u32, Vec<u8>)> = Vec::with_capacity(8);
    if flags & FROM != 0 {
        let index = r.varint_u32("compact node index")?;
        let from = node(index).ok_or_else(|| r.invalid_back(1, "compact node index"))?;
        header.push((TAG_FROM, fixed32_field(TAG_FROM, from.get())));
    }
    if flags & TO_BROADCAST != 0 {
        header.push((TAG_TO, fixed32_field(TAG_TO, u32::MAX)));
    }
    if flags & ID != 0 {
        let id = r.u32_le("compact packet id")?;
        header.push((TAG_ID, fixed32_field(TAG_ID, id)));
    }
    if flags & HOPS != 0 {
        let hops = r.byte("compact hops")?;
        for (tag, value) in [(TAG_HOP_LIMIT, hops & 0x0f), (TAG_HOP_START, hops >> 4)] {
            if value != 0 {
                header.push((tag, varint_field(tag, u64::from(value))));
            }
        }
    }
    if flags & RSSI != 0 {
        let at = r.pos;
        let z = r.varint("compact rssi")?;
        let rssi = i32::try_from(unzigzag(z)).map_err(|_| r.invalid_at(at, "compact rssi"))?;
        header.push((TAG_RSSI, varint_field(TAG_RSSI, rssi as i64 as u64)));
    }
    let rest = if flags & REST != 0 {
        let at = r.pos;
        let len = r.varint("compact rest length")?;
        if len == 0 || len > MAX_PACKET as u64 {
            return Err(r.invalid_at(at, "compact rest length"));
        }
        let bytes = Bytes::copy_from_slice(r.take(len as usize, "compact rest length")?);
        wire::fields(&bytes).map_err(|_| r.invalid_at(at, "compact rest"))?
    } else {
        Vec::new()
    };
    let body = &compact[r.pos..];
    let mut body_field = None;
    if flags & DECODED != 0 {
        let value = if flags & DATA != 0 {
            let at = r.pos;
            let portnum = r.varint("compact port number")?;
            let len = r.varint("compact payload length")?;
            if len > MAX_PACKET as u64 {
                return Err(r.invalid_at(at, "compact payload length"));
            }
            let payload = r.take(len as usize, "compact payload length")?;
            let mut data = Vec::with_capacity(body.len() + 4);
            if portnum != 0 {
                data.extend_from_slice(&varint_field(TAG_PORTNUM, portnum));
            }
            wire::put_bytes_field(TAG_PAYLOAD, payload, &mut data);
            data.extend_from_slice(&compact[r.pos..]);
            data
        } else {
            body.to_vec()
        };
        let mut field = Vec::with_capacity(value.len() + 4);
        wire::put_bytes_field(TAG_DECODED, &value, &mut field);
        body_field = Some((TAG_DECODED, field));
    } else if !body.is_empty() {
        let mut field = Vec::with_capacity(body.len() + 4);
        wire::put_bytes_field(TAG_ENCRYPTED, body, &mut field);
        body_field = Some((TAG_ENCRYPTED, field));
    }
    let last = if flags & BODY_LAST != 0 {
        body_field.take()
    } else {
        None
    };
    header.extend(body_field);
    header.sort_by_key(|(tag, _)| *tag);

    // Merge by field number; a number present in both, or `REST` out of order, is invalid:
    // the sender never makes either.
    let mut out = Vec::with_capacity(compact.len() + 24);
    let mut header = header.into_iter().peekable();
    let mut previous = 0u32;
    for f in &rest {
        while let Some((tag, bytes)) = header.next_if(|(tag, _)| *tag < f.tag) {
            out.extend_from_slice(&bytes);
            previous = tag;
        }
        if f.tag <= previous || header.peek().is_some_and(|(tag, _)| *tag == f.tag) {
            return Err(r.invalid_at(0, "compact rest field order"));
        }
        out.extend_from_slice(&f.encoded);
        previous = f.tag;
    }
    for (_, bytes) in header.chain(last) {
        out.extend_from_slice(&bytes);
    }
    if out.is_empty() || out.len() > MAX_PACKET {
        return Err(r.invalid_at(0, "compact packet length"));
    }
    Ok(out)
}

/// The front of a decoded `Data` that the compact form rewrites: its port number and
/// payload, when they are its first two fields, and the fields after them verbatim.
struct DataHead<'a> {
    portnum: u64,
    payload: &'a [u8],
    rest: &'a [u8],
}

impl<'a> DataHead<'a> {
    fn of(data: &'a Bytes) -> Option<DataHead<'a>> {
        let fields = wire::fields(data).ok()?;
        let (portnum, payload_at) = match fields.first() {
            Some(f) if f.tag == TAG_PORTNUM && f.wire_type == WireType::Varint => {
                (varint(&f.value)?, 1)
            }
            _ => (0, 0),
        };
        let payload = fields
            .get(payload_at)
            .filter(|f| f.tag == TAG_PAYLOAD && f.wire_type == WireType::LengthDelimited)?;
        let used: usize = fields[..=payload_at].iter().map(|f| f.encoded.len()).sum();
        Some(DataHead {
            portnum,
            payload: &data[used - payload.value.len()..used],
            rest: &data[used..],
        })
    }
}

fn fixed32(value: &[u8]) -> u32 {
    u32::from_le_bytes([value[0], value[1], value[2], value[3]])
}

fn varint(value: &[u8]) -> Option<u64> {
    prost::encoding::decode_varint(&mut &value[..]).ok()
}

/// A hop count that fits the compact form's four bits.
fn small(value: &[u8]) -> Option<u8> {
    varint(value).filter(|&v| v <= 0x0f).map(|v| v as u8)
}

fn zigzag(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

fn fixed32_field(tag: u32, value: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(5);
    prost::encoding::encode_key(tag, WireType::ThirtyTwoBit, &mut out);
    out.extend_from_slice(&value.to_le_bytes());
    out
}

fn varint_field(tag: u32, value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(11);
    prost::encoding::encode_key(tag, WireType::Varint, &mut out);
    prost::encoding::encode_varint(value, &mut out);
    out
}

#[cfg(test)]
#[path = "compact_codec_tests.rs"]
mod tests;
