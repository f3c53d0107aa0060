//! A walker over the top-level fields of one protobuf message.
//!
//! prost decodes into structs and drops what it does not know. Relaying must not: a packet from
//! newer firmware may carry fields this build has never heard of, and an encrypted payload must
//! travel byte for byte. The walker hands back each field's exact bytes so [`crate::packet`] can
//! keep them. It uses prost's own varint and key decoding; it only adds the loop.

use bytes::{Buf, Bytes};
use prost::encoding::{WireType, decode_key, decode_varint};

/// One top-level field of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field number.
    pub tag: u32,
    /// How the value is encoded.
    pub wire_type: WireType,
    /// Key and value exactly as they were on the wire, to be re-emitted verbatim.
    pub encoded: Bytes,
    /// For length-delimited fields, the value without its length prefix; otherwise the raw
    /// value bytes.
    pub value: Bytes,
}

/// The bytes are not a well-formed protobuf message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf at byte {offset}: {what}")]
pub struct WireError {
    /// Where in the message the problem starts.
    pub offset: usize,
    /// What was wrong there.
    pub what: &'static str,
}

/// Splits `msg` into its top-level fields, in wire order.
pub fn fields(msg: &Bytes) -> Result<Vec<Field>, WireError> {
    let mut out = Vec::new();
    let mut rest = msg.clone();
    while rest.has_remaining() {
        let start = msg.len() - rest.len();
        let err = |what| WireError {
            offset: start,
            what,
        };
        let (tag, wire_type) = decode_key(&mut rest).map_err(|_| err("bad field key"))?;
        let value_start = msg.len() - rest.len();
        let value = match wire_type {
            WireType::Varint => {
                decode_varint(&mut rest).map_err(|_| err("bad varint"))?;
                msg.slice(value_start..msg.len() - rest.len())
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let n = if wire_type == WireType::SixtyFourBit {
                    8
                } else {
                    4
                };
                if rest.len() < n {
                    return Err(err("fixed-width value cut short"));
                }
                rest.advance(n);
                msg.slice(value_start..value_start + n)
            }
            WireType::LengthDelimited => {
                let len = decode_varint(&mut rest).map_err(|_| err("bad length"))?;
                let len = usize::try_from(len).map_err(|_| err("length too large"))?;
                if rest.len() < len {
                    return Err(err("length-delimited value cut short"));
                }
                let data_start = msg.len() - rest.len();
                rest.advance(len);
                msg.slice(data_start..data_start + len)
            }
            WireType::StartGroup | WireType::EndGroup => return Err(err("groups are not used")),
        };
        out.push(Field {
            tag,
            wire_type,
            encoded: msg.slice(start..msg.len() - rest.len()),
            value,
        });
    }
    Ok(out)
}

/// Appends a length-delimited field (`tag`, `value`) to `dst`.
pub fn put_bytes_field(tag: u32, value: &[u8], dst: &mut Vec<u8>) {
    prost::encoding::encode_key(tag, WireType::LengthDelimited, dst);
    prost::encoding::encode_varint(value.len() as u64, dst);
    dst.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_the_reference_text_packet() {
        // ToRadio{packet{to: broadcast, decoded{portnum 1, "hi"}, id 0x12345678, hop_limit 3}}
        let to_radio = Bytes::from_static(&[
            0x0a, 0x14, 0x15, 0xff, 0xff, 0xff, 0xff, 0x22, 0x06, 0x08, 0x01, 0x12, 0x02, 0x68,
            0x69, 0x35, 0x78, 0x56, 0x34, 0x12, 0x48, 0x03,
        ]);
        let top = fields(&to_radio).unwrap();
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].tag, 1);
        let packet = fields(&top[0].value).unwrap();
        let tags: Vec<u32> = packet.iter().map(|f| f.tag).collect();
        assert_eq!(tags, [2, 4, 6, 9]);
        assert_eq!(&packet[1].value[..], &[0x08, 0x01, 0x12, 0x02, 0x68, 0x69]);
        let rebuilt: Vec<u8> = packet.iter().flat_map(|f| f.encoded.to_vec()).collect();
        assert_eq!(&rebuilt[..], &top[0].value[..]);
    }

    #[test]
    fn truncated_and_garbage_messages_are_errors_not_panics() {
        for bad in [&[0x0a, 0x05, 1][..], &[0x15, 1, 2], &[0xff; 11], &[0x0b]] {
            assert!(fields(&Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
