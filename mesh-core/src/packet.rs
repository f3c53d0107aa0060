//! A mesh packet that can be relayed without being damaged.
//!
//! prost decodes a `MeshPacket` into a struct and silently drops fields it does not know, so a
//! packet from newer firmware, decoded and re-encoded, would lose them; and a `Data` payload
//! re-encoded by prost would no longer encrypt to the bytes its sender put on the air. A
//! [`Packet`] therefore keeps:
//! - the header fields this build knows, decoded (`meta`, a `MeshPacket` with no payload);
//! - the payload as its exact bytes: ciphertext, or the plaintext `Data` encoding;
//! - every other field verbatim, re-emitted after the known ones.
//!
//! Encrypting a decoded packet with the key it came with gives back the sender's ciphertext.

use bytes::Bytes;
use prost::Message;

use crate::channel::{ChannelKey, channel_hash};
use crate::node::{NodeId, PacketId};
use crate::pki::{PkiError, PrivateKey, PublicKey};
use crate::proto;
use crate::wire::{self, WireError};

/// `MeshPacket.decoded`.
const TAG_DECODED: u32 = 4;
/// `MeshPacket.encrypted`.
const TAG_ENCRYPTED: u32 = 5;
/// The `MeshPacket` fields the protobuf types of this build know (v2.7.21: 1..=21).
const KNOWN_TAGS: std::ops::RangeInclusive<u32> = 1..=21;
/// The largest hop limit the 3-bit header field can carry (`HOP_MAX`).
pub const HOP_MAX: u8 = 7;
/// Largest `Data.payload` the firmware accepts (`DATA_PAYLOAD_LEN`).
pub const MAX_DATA_PAYLOAD: usize = 233;
/// Bytes of LoRa header in front of every payload on the air.
pub const ON_AIR_HEADER: usize = 16;
/// Largest LoRa frame (`MAX_LORA_PAYLOAD_LEN`): the header plus the encrypted `Data`.
pub const MAX_LORA_FRAME: usize = 255;

/// A packet's payload, as bytes that round-trip exactly.
#[derive(Clone, PartialEq)]
pub enum Payload {
    /// Ciphertext as it was on the air (or in an MQTT envelope).
    Encrypted(Bytes),
    /// A plaintext `Data`, kept both as its original bytes and decoded.
    Decoded {
        /// The `Data` encoding as its sender made it; encrypting it reproduces the ciphertext.
        raw: Bytes,
        /// The same, decoded (fields unknown to this build are only in `raw`).
        data: proto::Data,
    },
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Encrypted(b) => write!(f, "Encrypted({} bytes)", b.len()),
            Payload::Decoded { data, raw } => write!(
                f,
                "Decoded(port {}, {} payload bytes, {} bytes)",
                data.portnum,
                data.payload.len(),
                raw.len()
            ),
        }
    }
}

/// One mesh packet. See the module doc for what it keeps and why. Two packets are equal when
/// their fields and payload bytes are, whatever order their encodings had.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The header fields this build knows; its `payload_variant` is always `None`.
    meta: proto::MeshPacket,
    /// The payload, byte-exact.
    payload: Payload,
    /// Fields unknown to this build, verbatim, so relaying newer packets does not strip them.
    unknown: Bytes,
    /// The whole encoding as received, while nothing has changed it: a packet relayed as it
    /// came goes out byte for byte, field order included.
    original: Option<Bytes>,
}

impl PartialEq for Packet {
    fn eq(&self, other: &Self) -> bool {
        self.meta == other.meta && self.payload == other.payload && self.unknown == other.unknown
    }
}

/// Why bytes are not a usable mesh packet.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PacketError {
    /// Not a well-formed protobuf.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Well-formed but not a `MeshPacket` prost can decode.
    #[error("not a MeshPacket: {0}")]
    Decode(String),
    /// The packet has neither `decoded` nor `encrypted`.
    #[error("packet {id} from {from} has no payload")]
    NoPayload {
        /// Sender.
        from: NodeId,
        /// Packet id.
        id: PacketId,
    },
}

/// Why an encrypted payload could not be read with a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// The packet is already decoded.
    #[error("packet is not encrypted")]
    NotEncrypted,
    /// The plaintext is not a `Data` with a port: wrong key (there is no integrity check).
    #[error("payload does not decrypt to a Data message with that key (wrong key?)")]
    WrongKey,
}

impl Packet {
    /// Builds a packet from header fields and a payload. Any payload in `meta` is ignored.
    pub fn new(mut meta: proto::MeshPacket, payload: Payload) -> Packet {
        meta.payload_variant = None;
        Packet {
            meta,
            payload,
            unknown: Bytes::new(),
            original: None,
        }
    }

    /// A packet with a decoded payload built from `data`.
    pub fn from_data(meta: proto::MeshPacket, data: proto::Data) -> Packet {
        let raw = Bytes::from(data.encode_to_vec());
        Packet::new(meta, Payload::Decoded { raw, data })
    }

    /// A text message to `to` on channel index `channel`, with the firmware's default hop
    /// limit (3) and no sender or id yet (the radio, or the caller, sets them).
    pub fn text_message(to: NodeId, channel: u32, body: &str) -> Packet {
        Packet::from_data(
            proto::MeshPacket {
                to: to.get(),
                channel,
                hop_limit: 3,
                ..Default::default()
            },
            proto::Data {
                portnum: proto::PortNum::TextMessageApp as i32,
                payload: body.as_bytes().to_vec(),
                ..Default::default()
            },
        )
    }

    /// Decodes a `MeshPacket` encoding, keeping its payload and unknown fields byte-exact.
    pub fn decode(bytes: Bytes) -> Result<Packet, PacketError> {
        let mut known = Vec::with_capacity(bytes.len());
        let mut unknown = Vec::new();
        let mut payload = None;
        for field in wire::fields(&bytes)? {
            match field.tag {
                TAG_DECODED => {
                    let data = proto::Data::decode(field.value.clone())
                        .map_err(|e| PacketError::Decode(e.to_string()))?;
                    payload = Some(Payload::Decoded {
                        raw: field.value,
                        data,
                    });
                }
                TAG_ENCRYPTED => payload = Some(Payload::Encrypted(field.value)),
                t if KNOWN_TAGS.contains(&t) => known.extend_from_slice(&field.encoded),
                _ => unknown.extend_from_slice(&field.encoded),
            }
        }
        let meta = proto::MeshPacket::decode(&known[..])
            .map_err(|e| PacketError::Decode(e.to_string()))?;
        let payload = payload.ok_or(PacketError::NoPayload {
            from: NodeId::new(meta.from),
            id: PacketId::new(meta.id),
        })?;
        Ok(Packet {
            meta,
            payload,
            unknown: unknown.into(),
            original: Some(bytes),
        })
    }

    /// The `MeshPacket` encoding: known header fields, then the payload's exact bytes, then the
    /// unknown fields as received.
    pub fn encode(&self) -> Vec<u8> {
        if let Some(original) = &self.original {
            return original.to_vec();
        }
        let mut out = self.meta.encode_to_vec();
        match &self.payload {
            Payload::Decoded { raw, .. } => wire::put_bytes_field(TAG_DECODED, raw, &mut out),
            Payload::Encrypted(c) => wire::put_bytes_field(TAG_ENCRYPTED, c, &mut out),
        }
        out.extend_from_slice(&self.unknown);
        out
    }

    /// A prost `MeshPacket` for code that needs the struct (drops unknown fields).
    pub fn to_proto(&self) -> proto::MeshPacket {
        let mut p = self.meta.clone();
        p.payload_variant = Some(match &self.payload {
            Payload::Decoded { data, .. } => {
                proto::mesh_packet::PayloadVariant::Decoded(data.clone())
            }
            Payload::Encrypted(c) => proto::mesh_packet::PayloadVariant::Encrypted(c.to_vec()),
        });
        p
    }

    /// The header fields (no payload).
    pub fn meta(&self) -> &proto::MeshPacket {
        &self.meta
    }

    /// Mutable header fields, for the few a relay may change (hop limit, channel index).
    pub fn meta_mut(&mut self) -> &mut proto::MeshPacket {
        self.original = None;
        &mut self.meta
    }

    /// The payload.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// Original sender.
    pub fn from(&self) -> NodeId {
        NodeId::new(self.meta.from)
    }

    /// Destination (broadcast or a node).
    pub fn to(&self) -> NodeId {
        NodeId::new(self.meta.to)
    }

    /// Per-sender packet id.
    pub fn id(&self) -> PacketId {
        PacketId::new(self.meta.id)
    }

    /// Hops left, clamped to what the header can carry.
    pub fn hop_limit(&self) -> u8 {
        self.meta.hop_limit.min(u32::from(HOP_MAX)) as u8
    }

    /// The hop limit the sender started with; 0 means unknown (firmware before 2.3).
    pub fn hop_start(&self) -> u8 {
        self.meta.hop_start.min(u32::from(HOP_MAX)) as u8
    }

    /// Whether the sender asked for an acknowledgement.
    pub fn want_ack(&self) -> bool {
        self.meta.want_ack
    }

    /// Channel: index 0..7 between a device and its client, the 8-bit hash on the air.
    pub fn channel(&self) -> u32 {
        self.meta.channel
    }

    /// The decoded `Data`, if the payload is plaintext.
    pub fn data(&self) -> Option<&proto::Data> {
        match &self.payload {
            Payload::Decoded { data, .. } => Some(data),
            Payload::Encrypted(_) => None,
        }
    }

    /// The application port, if decoded.
    pub fn portnum(&self) -> Option<proto::PortNum> {
        self.data()
            .map(|d| proto::PortNum::try_from(d.portnum).unwrap_or(proto::PortNum::UnknownApp))
    }

    /// The text of a `TEXT_MESSAGE_APP` packet (lossy UTF-8).
    pub fn text(&self) -> Option<String> {
        let d = self.data()?;
        (d.portnum == proto::PortNum::TextMessageApp as i32)
            .then(|| String::from_utf8_lossy(&d.payload).into_owned())
    }

    /// Bytes this packet occupies in a LoRa frame: the 16-byte header plus the payload.
    pub fn on_air_len(&self) -> usize {
        ON_AIR_HEADER
            + match &self.payload {
                Payload::Encrypted(c) => c.len(),
                Payload::Decoded { raw, .. } => raw.len(),
            }
    }

    /// Reads an encrypted payload with `key`. The result keeps the plaintext bytes exactly;
    /// its `channel` is left as it was (the hash) for the caller to map to an index.
    pub fn decrypt(&self, key: &ChannelKey) -> Result<Packet, DecryptError> {
        let Payload::Encrypted(cipher) = &self.payload else {
            return Err(DecryptError::NotEncrypted);
        };
        let mut plain = cipher.to_vec();
        key.apply(self.from(), self.id(), &mut plain);
        let data = proto::Data::decode(&plain[..]).map_err(|_| DecryptError::WrongKey)?;
        if data.portnum == proto::PortNum::UnknownApp as i32 {
            return Err(DecryptError::WrongKey);
        }
        Ok(Packet {
            meta: self.meta.clone(),
            payload: Payload::Decoded {
                raw: plain.into(),
                data,
            },
            unknown: self.unknown.clone(),
            original: None,
        })
    }

    /// Encrypts a decoded payload for the channel (`name`, `key`) and sets `channel` to its
    /// hash, as it goes on the air. An already encrypted packet is returned unchanged.
    pub fn encrypt(&self, name: &str, key: &ChannelKey) -> Packet {
        let Payload::Decoded { raw, .. } = &self.payload else {
            return self.clone();
        };
        let mut cipher = raw.to_vec();
        key.apply(self.from(), self.id(), &mut cipher);
        let mut meta = self.meta.clone();
        meta.channel = u32::from(channel_hash(name, key));
        Packet {
            meta,
            payload: Payload::Encrypted(cipher.into()),
            unknown: self.unknown.clone(),
            original: None,
        }
    }
}

impl Packet {
    /// Whether this is a PKI direct message: decoded from one (`pki_encrypted`), or still
    /// encrypted with no channel hash (`channel == 0`) and one destination, which is how the
    /// firmware tells one on the air (`RoutingModule`'s `maybePKI`, `Router::handleReceived`).
    /// A channel whose hash happens to be 0 looks the same; the firmware shares that blind spot.
    pub fn is_pki(&self) -> bool {
        self.meta.pki_encrypted
            || (matches!(self.payload, Payload::Encrypted(_))
                && self.meta.channel == 0
                && !self.to().is_broadcast())
    }

    /// The PKI form of a decoded packet (`perhapsEncode`): its `Data` bytes encrypted for `to`
    /// with the sender's `from_key`, `channel = 0`, `pki_encrypted = true`. `public_key` is
    /// left as it was: the firmware sets none when it encrypts (a client may have put the
    /// destination's key there to ask for PKI), and receivers fill in the sender's.
    pub fn encrypt_pki(
        &self,
        from_key: &PrivateKey,
        to: &PublicKey,
        extra_nonce: u32,
    ) -> Result<Packet, PkiError> {
        let Payload::Decoded { raw, .. } = &self.payload else {
            return Err(PkiError::NotDecoded {
                from: self.from(),
                id: self.id(),
            });
        };
        let cipher = from_key
            .shared_key(to)?
            .encrypt(self.from(), self.id(), extra_nonce, raw)?;
        let mut meta = self.meta.clone();
        meta.channel = 0;
        meta.pki_encrypted = true;
        Ok(Packet {
            meta,
            payload: Payload::Encrypted(cipher.into()),
            unknown: self.unknown.clone(),
            original: None,
        })
    }

    /// Reads a PKI payload addressed to the holder of `my_key`, sent by the holder of
    /// `their_key` (`perhapsDecode`): the `Data` bytes kept exactly, `channel = 0` (the index
    /// the firmware gives PKI packets), `pki_encrypted = true` and `public_key` = the sender's.
    pub fn decrypt_pki(
        &self,
        my_key: &PrivateKey,
        their_key: &PublicKey,
    ) -> Result<Packet, PkiError> {
        let (from, id) = (self.from(), self.id());
        let Payload::Encrypted(cipher) = &self.payload else {
            return Err(PkiError::NotEncrypted { from, id });
        };
        let plain = my_key.shared_key(their_key)?.decrypt(from, id, cipher)?;
        let data = proto::Data::decode(&plain[..])
            .ok()
            .filter(|d| d.portnum != proto::PortNum::UnknownApp as i32)
            .ok_or(PkiError::NotData { from, id })?;
        let mut meta = self.meta.clone();
        meta.channel = 0;
        meta.pki_encrypted = true;
        meta.public_key = their_key.as_bytes().to_vec();
        Ok(Packet {
            meta,
            payload: Payload::Decoded {
                raw: plain.into(),
                data,
            },
            unknown: self.unknown.clone(),
            original: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Vector V1 of the reference: a NodeInfo broadcast on LongFast with the default key.
    fn v1() -> Packet {
        let mut meta = proto::MeshPacket {
            from: 4202784164,
            to: 0xffff_ffff,
            channel: 8,
            id: 1777428186,
            hop_limit: 3,
            hop_start: 3,
            ..Default::default()
        };
        meta.set_priority(proto::mesh_packet::Priority::Background);
        let cipher = BASE64
            .decode("kiDV39nDDsi8AON+Czei6zUpy+F/7E+lyIpicxJR40KXBFmPkqFUEnobI5voQadha+s=")
            .unwrap();
        Packet::new(meta, Payload::Encrypted(cipher.into()))
    }

    #[test]
    fn golden_vector_v1_decrypts_to_the_reference_plaintext() {
        let key = ChannelKey::from_psk(&BASE64.decode("AQ==").unwrap());
        assert_eq!(crate::channel::channel_hash("LongFast", &key), 8);
        let plain = v1().decrypt(&key).unwrap();
        let Payload::Decoded { raw, data } = plain.payload() else {
            panic!("not decoded")
        };
        assert_eq!(
            raw.to_vec(),
            hex(
                "0804122c0a09216661383136356134120f4d65736874617374696320363561341a04363561342206f412fa8165a4282b1801"
            )
        );
        assert_eq!(data.portnum, proto::PortNum::NodeinfoApp as i32);
        assert!(data.want_response);
        let user = proto::User::decode(&data.payload[..]).unwrap();
        assert_eq!(user.id, "!fa8165a4");
        assert_eq!(user.long_name, "Meshtastic 65a4");
        assert_eq!(user.short_name, "65a4");
        assert_eq!(user.hw_model, 43);
    }

    #[test]
    fn re_encrypting_a_decrypted_packet_gives_back_the_original_ciphertext() {
        let key = ChannelKey::from_psk(&[1]);
        let original = v1();
        let again = original.decrypt(&key).unwrap().encrypt("LongFast", &key);
        assert_eq!(again, original);
    }

    #[test]
    fn a_wrong_key_is_reported_not_decoded_into_garbage() {
        let key = ChannelKey::from_psk(&[2]);
        assert_eq!(v1().decrypt(&key), Err(DecryptError::WrongKey));
    }

    #[test]
    fn the_reference_envelope_packet_decodes_with_v1_fields() {
        let env = hex(
            "0a4b0da46581fa15ffffffff18082a329220d5dfd9c30ec8bc00e37e0b37a2eb3529cbe17fec4fa5c88a62731251e3429704598f92a154127a1b239be841a7616beb35da66f1694803580a780312084c6f6e67466173741a09216661383136356134",
        );
        let top = wire::fields(&Bytes::from(env)).unwrap();
        let packet = Packet::decode(top[0].value.clone()).unwrap();
        assert_eq!(packet.from(), NodeId::new(0xfa8165a4));
        assert_eq!(packet.id(), PacketId::new(1777428186));
        assert_eq!(packet.payload(), v1().payload());
        assert_eq!(packet.hop_start(), 3);
        assert_eq!(packet.encode(), top[0].value.to_vec());
    }

    #[test]
    fn fields_from_newer_firmware_survive_a_round_trip() {
        let mut bytes = v1().encode();
        // xeddsa_signed (tag 22, varint 1), unknown to this build.
        bytes.extend_from_slice(&[0xb0, 0x01, 0x01]);
        let packet = Packet::decode(Bytes::from(bytes.clone())).unwrap();
        assert_eq!(packet.encode(), bytes);
        let mut relayed = packet.clone();
        relayed.meta_mut().hop_limit = 0;
        assert!(relayed.encode().ends_with(&[0xb0, 0x01, 0x01]));
    }

    #[test]
    fn unknown_data_fields_survive_decrypt_and_re_encrypt() {
        let key = ChannelKey::from_psk(&[1]);
        let mut raw = proto::Data {
            portnum: 1,
            payload: b"hi".to_vec(),
            ..Default::default()
        }
        .encode_to_vec();
        raw.extend_from_slice(&[0xf8, 0x01, 0x05]); // tag 31 varint: unknown
        let meta = proto::MeshPacket {
            from: 7,
            id: 9,
            ..Default::default()
        };
        let data = proto::Data::decode(&raw[..]).unwrap();
        let plain = Packet::new(
            meta,
            Payload::Decoded {
                raw: raw.clone().into(),
                data,
            },
        );
        let back = plain.encrypt("x", &key).decrypt(&key).unwrap();
        let Payload::Decoded { raw: again, .. } = back.payload() else {
            panic!()
        };
        assert_eq!(again.to_vec(), raw);
        assert_eq!(back.text().as_deref(), Some("hi"));
    }

    #[test]
    fn random_bytes_never_panic_the_packet_decoder() {
        let mut x: u32 = 0x2545_f491;
        for _ in 0..5000 {
            let bytes: Vec<u8> = (0..(x % 64))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if let Ok(p) = Packet::decode(Bytes::from(bytes.clone())) {
                assert_eq!(
                    p.encode(),
                    bytes,
                    "a decodable packet re-encodes to its bytes"
                );
                let _ = p.decrypt(&ChannelKey::from_psk(&[1]));
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"\x0a", b"\xff\xff\xff", b"\x22\x02\xff\xff"] {
            assert!(
                Packet::decode(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
