//! Channel keys and their crypto, as the firmware does them (`Channels.cpp`, `CryptoEngine.cpp`).
//!
//! A channel is known on the air only by an 8-bit hash of its name and key; its payloads are
//! AES-CTR encrypted with a nonce built from the packet id and sender. There is no integrity
//! check: a wrong key yields garbage that usually fails to parse as `Data`.

use std::fmt;
use std::str::FromStr;

use aes::cipher::{KeyIvInit, StreamCipher};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::node::{NodeId, PacketId};

/// The firmware's `defaultpsk`, which the one-byte PSK `0x01` ("AQ==") stands for.
pub const DEFAULT_KEY: [u8; 16] = [
    0xd4, 0xf1, 0xbb, 0x3a, 0x20, 0x29, 0x07, 0x59, 0xf0, 0xbc, 0xff, 0xab, 0xcf, 0x4e, 0x69, 0x01,
];

/// A channel's pre-shared key as configured (before expansion): 0, 1, 16 or 32 bytes, or an
/// odd length that the firmware pads. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Psk(Vec<u8>);

impl Psk {
    /// The default channel key shortcut (`AQ==`).
    pub fn default_key() -> Psk {
        Psk(vec![1])
    }

    /// Wraps raw PSK bytes as they travel in `ChannelSettings.psk`.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Psk {
        Psk(bytes.into())
    }

    /// The raw bytes, for `ChannelSettings.psk`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key this PSK expands to.
    pub fn expand(&self) -> ChannelKey {
        ChannelKey::from_psk(&self.0)
    }

    /// Base64, the form the apps and the CLI show (`AQ==`).
    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.0)
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Psk({} bytes, redacted)", self.0.len())
    }
}

/// Why a configured PSK text is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a channel key: use `default`, `none`, `simple1`..`simple10`, or base64 of 1, 16 or 32 bytes (like `AQ==`)"
)]
pub struct PskError;

impl FromStr for Psk {
    type Err = PskError;

    /// Accepts the words the apps use (`default`, `none`, `simpleN`) or base64.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => return Ok(Psk(vec![1])),
            "none" => return Ok(Psk(vec![0])),
            _ => {}
        }
        if let Some(n) = s.strip_prefix("simple") {
            let n: u8 = n.parse().map_err(|_| PskError)?;
            if (1..=10).contains(&n) {
                return Ok(Psk(vec![n]));
            }
            return Err(PskError);
        }
        let bytes = BASE64.decode(s).map_err(|_| PskError)?;
        if bytes.len() > 32 {
            return Err(PskError);
        }
        Ok(Psk(bytes))
    }
}

impl<'de> serde::Deserialize<'de> for Psk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An expanded channel key. Its `Debug` never shows key bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelKey {
    /// No encryption: payloads travel in clear.
    None,
    /// AES-128-CTR.
    Aes128([u8; 16]),
    /// AES-256-CTR.
    Aes256([u8; 32]),
}

impl ChannelKey {
    /// Expands a PSK by the firmware's rules (`Channels::getKey`): empty or `0x00` means no
    /// crypto; a single byte `N` is the default key with its last byte increased by `N-1`;
    /// other short keys are zero-padded to 16 bytes, and 17..31 bytes to 32.
    pub fn from_psk(psk: &[u8]) -> ChannelKey {
        match psk.len() {
            0 => ChannelKey::None,
            1 if psk[0] == 0 => ChannelKey::None,
            1 => {
                let mut key = DEFAULT_KEY;
                key[15] = key[15].wrapping_add(psk[0] - 1);
                ChannelKey::Aes128(key)
            }
            2..=16 => {
                let mut key = [0u8; 16];
                key[..psk.len()].copy_from_slice(psk);
                ChannelKey::Aes128(key)
            }
            _ => {
                let mut key = [0u8; 32];
                let n = psk.len().min(32);
                key[..n].copy_from_slice(&psk[..n]);
                ChannelKey::Aes256(key)
            }
        }
    }

    /// The key bytes (empty for no crypto).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ChannelKey::None => &[],
            ChannelKey::Aes128(k) => k,
            ChannelKey::Aes256(k) => k,
        }
    }

    /// Encrypts or decrypts `data` in place (CTR mode: the same operation), with the
    /// firmware's nonce: packet id as little-endian u64, then sender as little-endian u32,
    /// then a 4-byte big-endian block counter starting at zero.
    pub fn apply(&self, from: NodeId, id: PacketId, data: &mut [u8]) {
        let iv = nonce(from, id);
        match self {
            ChannelKey::None => {}
            ChannelKey::Aes128(k) => {
                ctr::Ctr32BE::<aes::Aes128>::new(k.into(), &iv.into()).apply_keystream(data)
            }
            ChannelKey::Aes256(k) => {
                ctr::Ctr32BE::<aes::Aes256>::new(k.into(), &iv.into()).apply_keystream(data)
            }
        }
    }
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelKey::None => f.write_str("ChannelKey::None"),
            ChannelKey::Aes128(_) => f.write_str("ChannelKey::Aes128(redacted)"),
            ChannelKey::Aes256(_) => f.write_str("ChannelKey::Aes256(redacted)"),
        }
    }
}

fn nonce(from: NodeId, id: PacketId) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&u64::from(id.get()).to_le_bytes());
    iv[8..12].copy_from_slice(&from.get().to_le_bytes());
    iv
}

/// The 8-bit channel hash that stands for a channel on the air (`Channels::generateHash`):
/// the xor of the name's bytes, xor the xor of the expanded key's bytes.
pub fn channel_hash(name: &str, key: &ChannelKey) -> u8 {
    let x = |b: &[u8]| b.iter().fold(0u8, |acc, &v| acc ^ v);
    x(name.as_bytes()) ^ x(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_shortcuts_expand_from_the_default_key() {
        assert_eq!(
            ChannelKey::from_psk(&[1]).as_bytes(),
            BASE64.decode("1PG7OiApB1nwvP+rz05pAQ==").unwrap()
        );
        let mut simple3 = DEFAULT_KEY;
        simple3[15] = 0x03;
        assert_eq!(ChannelKey::from_psk(&[3]), ChannelKey::Aes128(simple3));
        assert_eq!(ChannelKey::from_psk(&[0]), ChannelKey::None);
        assert_eq!(ChannelKey::from_psk(&[]), ChannelKey::None);
        let mut wrap = DEFAULT_KEY;
        wrap[15] = 0x01u8.wrapping_add(254);
        assert_eq!(ChannelKey::from_psk(&[255]), ChannelKey::Aes128(wrap));
    }

    #[test]
    fn odd_length_keys_are_zero_padded() {
        let k = ChannelKey::from_psk(&[9, 9, 9]);
        assert_eq!(
            k.as_bytes(),
            &[9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let k = ChannelKey::from_psk(&[7; 20]);
        assert_eq!(k.as_bytes().len(), 32);
        assert_eq!(&k.as_bytes()[20..], &[0; 12]);
    }

    #[test]
    fn channel_hashes_match_the_reference_table() {
        let key = ChannelKey::from_psk(&[1]);
        for (name, hash) in [
            ("LongFast", 0x08),
            ("LongSlow", 0x0f),
            ("LongMod", 0x6e),
            ("LongTurbo", 0x76),
            ("MediumFast", 0x1f),
            ("MediumSlow", 0x18),
            ("MediumTurbo", 0x61),
            ("ShortFast", 0x70),
            ("ShortSlow", 0x77),
            ("ShortTurbo", 0x0e),
        ] {
            assert_eq!(channel_hash(name, &key), hash, "{name}");
        }
        assert_eq!(channel_hash("ab", &ChannelKey::None), b'a' ^ b'b');
    }

    #[test]
    fn psk_text_forms_parse_and_never_print_the_key() {
        assert_eq!("AQ==".parse::<Psk>().unwrap(), Psk::default_key());
        assert_eq!("default".parse::<Psk>().unwrap(), Psk::default_key());
        assert_eq!("none".parse::<Psk>().unwrap().expand(), ChannelKey::None);
        assert_eq!("simple2".parse::<Psk>().unwrap().as_bytes(), &[2]);
        assert!("simple11".parse::<Psk>().is_err());
        assert!("not base64!".parse::<Psk>().is_err());
        let secret: Psk = "1PG7OiApB1nwvP+rz05pAQ==".parse().unwrap();
        assert!(!format!("{secret:?}").contains("1PG7"));
        assert!(!format!("{:?}", secret.expand()).contains("212"));
    }

    #[test]
    fn applying_the_keystream_twice_restores_the_plaintext() {
        // The golden vector V1 is checked in `packet`, where a whole packet is decrypted.
        let key = ChannelKey::from_psk(&[1]);
        let mut data = *b"the quick brown fox jumps over the lazy dog, twice over!";
        let orig = data;
        key.apply(NodeId::new(1), PacketId::new(2), &mut data);
        assert_ne!(data, orig);
        key.apply(NodeId::new(1), PacketId::new(2), &mut data);
        assert_eq!(data, orig);
    }
}
