//! The Meshtastic MQTT `ServiceEnvelope` and the topics it travels on (`meshtastic/mqtt.proto`,
//! firmware `src/mqtt/MQTT.cpp`).
//!
//! An envelope wraps one mesh packet with the name of its channel and the id of the node that
//! published it:
//!
//! | field | tag | content                                                              |
//! |-------|-----|----------------------------------------------------------------------|
//! | `packet`     | 1 | the `MeshPacket`, as heard (encrypted when the broker gets ciphertext) |
//! | `channel_id` | 2 | the channel's *name* (`LongFast`), or `PKI` for a direct message with public keys |
//! | `gateway_id` | 3 | the publisher's node id, `!xxxxxxxx`                              |
//!
//! Every copy in Archipel (the radio's uplink and the relays written to it, the simulator's
//! device, the MQTT bridge) goes through [`Envelope`], so they agree byte for byte. The packet
//! field is carried by [`Packet`], which keeps the sender's exact bytes: an envelope decoded
//! and encoded again holds the very packet bytes it came with, unknown fields included.
//!
//! An envelope from a broker is untrusted input: decoding is bounded ([`MAX_ENVELOPE`]), never
//! panics, and says what was wrong. Fields other than 1-3 are ignored, as the firmware's
//! decoder does; a field that appears twice is refused rather than guessed at.
//!
//! Topics are [`Topic`]s: `<root>/2/e/<channel>/<gateway>` and its JSON twin.

mod topic;

pub use topic::{MAX_TOPIC, Root, Topic, TopicChannel, TopicError, TopicKind};

use std::fmt;

use bytes::Bytes;
use prost::encoding::WireType;

use crate::node::NodeId;
use crate::packet::{Packet, PacketError};
use crate::wire::{self, WireError};

/// Largest envelope accepted. A `MeshPacket` fits the stream API's 512-byte frames, so a real
/// envelope stays well under this; anything bigger is not from a Meshtastic node.
pub const MAX_ENVELOPE: usize = 1024;
/// The `channel_id` of direct messages encrypted with public keys (firmware 2.5+).
pub const PKI_CHANNEL: &str = "PKI";

/// `ServiceEnvelope.packet`.
const TAG_PACKET: u32 = 1;
/// `ServiceEnvelope.channel_id`.
const TAG_CHANNEL_ID: u32 = 2;
/// `ServiceEnvelope.gateway_id`.
const TAG_GATEWAY_ID: u32 = 3;

/// Who published an envelope: normally a node id written the firmware's way (`!%08x`), but an
/// envelope from elsewhere may carry any text, which is kept as it came so it can be logged,
/// compared and published again unchanged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum GatewayId {
    /// `!` and eight lower-case hex digits: a node.
    Node(NodeId),
    /// Anything else, verbatim.
    Other(String),
}

impl GatewayId {
    /// Reads a `gateway_id` (or a topic's last level). Only the firmware's exact spelling is a
    /// node, so that formatting it again gives back the same text.
    pub fn parse(text: &str) -> GatewayId {
        let canonical = text.len() == 9
            && text.starts_with('!')
            && text[1..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        match u32::from_str_radix(text.get(1..).unwrap_or(""), 16) {
            Ok(num) if canonical => GatewayId::Node(NodeId::new(num)),
            _ => GatewayId::Other(text.to_owned()),
        }
    }

    /// The node, when the id is one.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            GatewayId::Node(id) => Some(*id),
            GatewayId::Other(_) => None,
        }
    }
}

impl From<NodeId> for GatewayId {
    fn from(id: NodeId) -> Self {
        GatewayId::Node(id)
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Always the `!%08x` form, broadcast included (`NodeId` prints that one `^all`).
            GatewayId::Node(id) => write!(f, "!{:08x}", id.get()),
            GatewayId::Other(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Quoted and escaped: foreign text may hold control characters.
        write!(f, "{:?}", self.to_string())
    }
}

/// One `ServiceEnvelope`. See the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The mesh packet, byte-exact.
    pub packet: Packet,
    /// The channel's name, or [`PKI_CHANNEL`].
    pub channel_id: String,
    /// The publishing node.
    pub gateway_id: GatewayId,
}

/// Why bytes are not a usable envelope.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    /// Larger than any envelope a node publishes.
    #[error("envelope of {len} bytes is larger than {max} bytes (a mesh packet is under 512)")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Not a well-formed protobuf.
    #[error("envelope is not a protobuf message: {0}")]
    Malformed(#[from] WireError),
    /// A known field with the wrong wire type.
    #[error("envelope field {field} (tag {tag}) is not length-delimited")]
    WireType {
        /// The field's name.
        field: &'static str,
        /// Its tag.
        tag: u32,
    },
    /// A known field given twice.
    #[error("envelope field {field} appears more than once")]
    Repeated {
        /// The field's name.
        field: &'static str,
    },
    /// No packet (field 1).
    #[error("envelope has no packet (field 1)")]
    MissingPacket,
    /// No channel name (field 2), or an empty one.
    #[error("envelope has no channel_id (field 2)")]
    MissingChannel,
    /// No publisher (field 3), or an empty one.
    #[error("envelope has no gateway_id (field 3)")]
    MissingGateway,
    /// A text field that is not UTF-8.
    #[error("envelope {field} is not UTF-8 (bad byte at offset {at})")]
    NotUtf8 {
        /// The field's name.
        field: &'static str,
        /// Where in the field the bad byte is.
        at: usize,
    },
    /// The packet field is not a mesh packet.
    #[error("envelope packet does not decode: {0}")]
    Packet(#[source] PacketError),
}

impl Envelope {
    /// An envelope for `packet` on `channel_id`, published by `gateway_id`.
    pub fn new(
        packet: Packet,
        channel_id: impl Into<String>,
        gateway_id: impl Into<GatewayId>,
    ) -> Envelope {
        Envelope {
            packet,
            channel_id: channel_id.into(),
            gateway_id: gateway_id.into(),
        }
    }

    /// Whether this is a public-key direct message (`channel_id` = `PKI`).
    pub fn is_pki(&self) -> bool {
        self.channel_id == PKI_CHANNEL
    }

    /// Decodes an envelope, keeping the packet's bytes exactly. All three fields are required,
    /// as the firmware requires them.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE {
            return Err(EnvelopeError::TooLarge {
                len: bytes.len(),
                max: MAX_ENVELOPE,
            });
        }
        let bytes = Bytes::copy_from_slice(bytes);
        let mut found: [Option<Bytes>; 3] = [None, None, None];
        for field in wire::fields(&bytes)? {
            let (slot, name) = match field.tag {
                TAG_PACKET => (0, "packet"),
                TAG_CHANNEL_ID => (1, "channel_id"),
                TAG_GATEWAY_ID => (2, "gateway_id"),
                _ => continue,
            };
            if field.wire_type != WireType::LengthDelimited {
                return Err(EnvelopeError::WireType {
                    field: name,
                    tag: field.tag,
                });
            }
            if found[slot].replace(field.value).is_some() {
                return Err(EnvelopeError::Repeated { field: name });
            }
        }
        let [packet, channel, gateway] = found;
        let packet = packet.ok_or(EnvelopeError::MissingPacket)?;
        let channel_id = text(channel, "channel_id")?.ok_or(EnvelopeError::MissingChannel)?;
        let gateway = text(gateway, "gateway_id")?.ok_or(EnvelopeError::MissingGateway)?;
        let packet = Packet::decode(packet).map_err(EnvelopeError::Packet)?;
        Ok(Envelope {
            packet,
            channel_id,
            gateway_id: GatewayId::parse(&gateway),
        })
    }

    /// The envelope's encoding: the packet's own bytes in field 1, then the channel name and
    /// the gateway id.
    pub fn encode(&self) -> Vec<u8> {
        let packet = self.packet.encode();
        let gateway = self.gateway_id.to_string();
        let mut out = Vec::with_capacity(packet.len() + self.channel_id.len() + gateway.len() + 8);
        wire::put_bytes_field(TAG_PACKET, &packet, &mut out);
        wire::put_bytes_field(TAG_CHANNEL_ID, self.channel_id.as_bytes(), &mut out);
        wire::put_bytes_field(TAG_GATEWAY_ID, gateway.as_bytes(), &mut out);
        out
    }
}

/// A text field's value: `None` when absent or empty.
fn text(value: Option<Bytes>, field: &'static str) -> Result<Option<String>, EnvelopeError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    String::from_utf8(value.to_vec())
        .map(Some)
        .map_err(|e| EnvelopeError::NotUtf8 {
            field,
            at: e.utf8_error().valid_up_to(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Payload;
    use crate::proto;
    use prost::Message;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The reference envelope (vector V1 on LongFast, published by `!fa8165a4`).
    fn reference() -> Vec<u8> {
        hex(
            "0a4b0da46581fa15ffffffff18082a329220d5dfd9c30ec8bc00e37e0b37a2eb3529cbe17fec4fa5c88a62731251e3429704598f92a154127a1b239be841a7616beb35da66f1694803580a780312084c6f6e67466173741a09216661383136356134",
        )
    }

    /// A small deterministic generator, so the property tests replay exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        fn bytes(&mut self, max: u64) -> Vec<u8> {
            let n = self.below(max + 1);
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn random_packet(rng: &mut Rng) -> Packet {
        let meta = proto::MeshPacket {
            from: rng.next() as u32,
            to: rng.next() as u32,
            id: rng.next() as u32,
            channel: rng.below(256) as u32,
            hop_limit: rng.below(8) as u32,
            hop_start: rng.below(8) as u32,
            want_ack: rng.below(2) == 1,
            rx_time: rng.next() as u32,
            via_mqtt: rng.below(4) == 0,
            ..Default::default()
        };
        let cipher = rng.bytes(200);
        let packet = Packet::new(meta, Payload::Encrypted(cipher.into()));
        if rng.below(3) == 0 {
            // Fields from newer firmware (tag 22 varint, tag 40 bytes) ride along.
            let mut bytes = packet.encode();
            bytes.extend_from_slice(&[0xb0, 0x01, 0x01, 0xc2, 0x02, 0x02, 0xab, 0xcd]);
            Packet::decode(Bytes::from(bytes)).unwrap()
        } else {
            packet
        }
    }

    #[test]
    fn the_reference_envelope_decodes_and_encodes_back_to_its_bytes() {
        let env = Envelope::decode(&reference()).unwrap();
        assert_eq!(env.channel_id, "LongFast");
        assert_eq!(env.gateway_id, GatewayId::Node(NodeId::new(0xfa81_65a4)));
        assert_eq!(env.packet.from(), NodeId::new(0xfa81_65a4));
        assert_eq!(env.packet.id().get(), 1777428186);
        assert!(!env.is_pki());
        assert_eq!(env.encode(), reference());
        // prost reads what we write as the firmware's ServiceEnvelope.
        let theirs = proto::ServiceEnvelope::decode(&env.encode()[..]).unwrap();
        assert_eq!(theirs.gateway_id, "!fa8165a4");
        assert_eq!(theirs.packet.unwrap().id, 1777428186);
    }

    #[test]
    fn round_trips_keep_every_packet_byte() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let packet = random_packet(&mut rng);
            let gateway = if rng.below(4) == 0 {
                GatewayId::parse(&format!("gw-{}", rng.next() % 1000))
            } else {
                GatewayId::Node(NodeId::new(rng.next() as u32))
            };
            let env = Envelope::new(packet.clone(), format!("ch{}", rng.below(99)), gateway);
            let bytes = env.encode();
            let back = Envelope::decode(&bytes).unwrap();
            assert_eq!(back, env);
            assert_eq!(back.packet.encode(), packet.encode(), "packet bytes kept");
            assert_eq!(back.encode(), bytes, "encode(decode(x)) == x");
        }
    }

    #[test]
    fn gateway_ids_keep_foreign_spellings() {
        assert_eq!(
            GatewayId::parse("!a1b2c3d4"),
            GatewayId::Node(NodeId::new(0xa1b2_c3d4))
        );
        assert_eq!(GatewayId::Node(NodeId::BROADCAST).to_string(), "!ffffffff");
        for odd in [
            "!A1B2C3D4",
            "!a1b2c3",
            "a1b2c3d4",
            "!a1b2c3d4e",
            "",
            "!+1b2c3d4",
            "é",
        ] {
            let id = GatewayId::parse(odd);
            assert_eq!(id.node(), None, "{odd}");
            assert_eq!(id.to_string(), odd);
        }
        assert_eq!(format!("{:?}", GatewayId::parse("a\nb")), r#""a\nb""#);
    }

    #[test]
    fn each_kind_of_bad_envelope_is_named() {
        let packet = Packet::decode(Bytes::from(reference()[2..77].to_vec())).unwrap();
        let mut only_packet = Vec::new();
        wire::put_bytes_field(1, &packet.encode(), &mut only_packet);
        let with = |extra: &[(u32, &[u8])]| {
            let mut b = only_packet.clone();
            for (tag, v) in extra {
                wire::put_bytes_field(*tag, v, &mut b);
            }
            b
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0u8; MAX_ENVELOPE + 1], "larger than 1024"),
            (vec![0x0a, 0x05, 0x01], "not a protobuf"),
            (
                vec![0x08, 0x01],
                "field packet (tag 1) is not length-delimited",
            ),
            (with(&[(1, b"\x0d")]), "packet appears more than once"),
            (with(&[]), "no channel_id"),
            (with(&[(2, b"")]), "no channel_id"),
            (with(&[(2, b"LongFast")]), "no gateway_id"),
            (
                with(&[(2, b"Long\xffFast"), (3, b"!1")]),
                "channel_id is not UTF-8 (bad byte at offset 4)",
            ),
            (with(&[(2, b"x"), (3, b"\xc3")]), "gateway_id is not UTF-8"),
        ];
        for (bytes, wanted) in cases {
            let err = Envelope::decode(&bytes).unwrap_err().to_string();
            assert!(err.contains(wanted), "{err:?} should say {wanted:?}");
        }
        let mut no_packet = Vec::new();
        wire::put_bytes_field(2, b"LongFast", &mut no_packet);
        assert_eq!(
            Envelope::decode(&no_packet),
            Err(EnvelopeError::MissingPacket)
        );
        let mut bad_packet = Vec::new();
        wire::put_bytes_field(1, b"\x15\x01", &mut bad_packet);
        wire::put_bytes_field(2, b"x", &mut bad_packet);
        wire::put_bytes_field(3, b"!1", &mut bad_packet);
        assert!(matches!(
            Envelope::decode(&bad_packet),
            Err(EnvelopeError::Packet(_))
        ));
        // Unknown fields are skipped, as the firmware's decoder does.
        let mut extra = with(&[(2, b"x"), (3, b"!00000001")]);
        extra.extend_from_slice(&[0x20, 0x05]);
        assert!(Envelope::decode(&extra).is_ok());
    }

    #[test]
    fn random_and_truncated_bytes_never_panic() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for _ in 0..5000 {
            let _ = Envelope::decode(&rng.bytes(96));
        }
        let good = reference();
        for cut in 0..good.len() {
            let _ = Envelope::decode(&good[..cut]);
            let mut flipped = good.clone();
            flipped[cut] ^= 0x5a;
            if let Ok(env) = Envelope::decode(&flipped) {
                let _ = env.encode();
            }
        }
    }
}
