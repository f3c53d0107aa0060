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

/// A channel's pre-shared key as configured (before expansion). Text parses only to the forms
/// a radio can hold (1, 16 or 32 bytes); raw bytes from a radio are kept as they come (the
/// firmware pads odd lengths). Its `Debug` never shows the key.
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

/// Why a configured PSK text is not usable. The messages never repeat the text, which may be
/// a real key with a typo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    /// `psk = ""`: the firmware reads an empty key as "no encryption" on a primary channel and
    /// as "the primary's key" on a secondary one, so neither is guessed.
    #[error(
        "an empty channel key: write `none` if the channel is meant to be unencrypted (on a radio, a secondary channel with an empty key uses the primary's key: write that key here)"
    )]
    Empty,
    /// `simpleN` with N not a number from 0 to 254.
    #[error(
        "`simpleN` takes N from 0 to 254 (`simple0`..`simple254`), as the Meshtastic CLI does: simple0 is the default key (AQ==), simple1 is key byte 2, and so on"
    )]
    Simple,
    /// `random` (a CLI word): the gateway must hold the radio's key, not a new one.
    #[error(
        "`random` makes a new key, but the gateway needs the radio's own: generate one (`openssl rand -base64 32`), set it on the radio and write it here"
    )]
    Random,
    /// Neither a word, nor hex, nor base64.
    #[error(
        "not a channel key: use `default`, `none`, `simple0`..`simple254`, or base64 of 1, 16 or 32 bytes (like `AQ==`; `base64:` and `0x` hex prefixes as the Meshtastic CLI writes them also work)"
    )]
    Unreadable,
    /// A key of a length the radios do not use.
    #[error(
        "a channel key of {0} bytes: a key is 16 bytes (AES-128) or 32 bytes (AES-256), or 1 byte for the shortcuts (`AQ==` is the default key)"
    )]
    Length(usize),
}

impl FromStr for Psk {
    type Err = PskError;

    /// Accepts what the Meshtastic CLI's `--ch-set psk` accepts (`meshtastic.util.fromPSK`)
    /// except `random`: `default`, `none`, `simpleN` (key byte N+1), `0x` hex, `base64:`
    /// and plain base64, of 1, 16 or 32 bytes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = match s {
            "" => return Err(PskError::Empty),
            "default" => return Ok(Psk(vec![1])),
            "none" => return Ok(Psk(vec![0])),
            "random" => return Err(PskError::Random),
            _ => {
                if let Some(n) = s.strip_prefix("simple") {
                    return simple(n).map(|b| Psk(vec![b]));
                }
                if let Some(hex) = s.strip_prefix("0x") {
                    from_hex(hex).ok_or(PskError::Unreadable)?
                } else {
                    let b64 = s.strip_prefix("base64:").unwrap_or(s);
                    BASE64.decode(b64).map_err(|_| PskError::Unreadable)?
                }
            }
        };
        match bytes.len() {
            1 | 16 | 32 => Ok(Psk(bytes)),
            n => Err(PskError::Length(n)),
        }
    }
}

/// The key byte of `simpleN`: N+1, for N from 0 to 254 (digits only, as the CLI requires).
fn simple(n: &str) -> Result<u8, PskError> {
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PskError::Simple);
    }
    n.parse::<u8>()
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or(PskError::Simple)
}

/// Hex digits, two per byte (the CLI also takes an odd count, with a leading zero implied).
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_owned()
    };
    if padded.is_empty() || !padded.is_ascii() {
        return None;
    }
    (0..padded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&padded[i..i + 2], 16).ok())
        .collect()
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
        assert_eq!("simple2".parse::<Psk>().unwrap().as_bytes(), &[3]);
        assert!("not base64!".parse::<Psk>().is_err());
        let secret: Psk = "1PG7OiApB1nwvP+rz05pAQ==".parse().unwrap();
        assert!(!format!("{secret:?}").contains("1PG7"));
        assert!(!format!("{:?}", secret.expand()).contains("212"));
    }

    #[test]
    fn simple_n_is_key_byte_n_plus_one_as_the_meshtastic_cli_reads_it() {
        // meshtastic/python `util.fromPSK`: `bytes([int(valstr[6:]) + 1])`, N in 0..=254.
        assert_eq!("simple0".parse::<Psk>().unwrap(), Psk::default_key());
        assert_eq!("simple1".parse::<Psk>().unwrap().as_bytes(), &[2]);
        assert_eq!("simple10".parse::<Psk>().unwrap().as_bytes(), &[11]);
        assert_eq!("simple11".parse::<Psk>().unwrap().as_bytes(), &[12]);
        assert_eq!("simple254".parse::<Psk>().unwrap().as_bytes(), &[255]);
        for bad in [
            "simple255",
            "simple-1",
            "simple",
            "simplex",
            "simple+1",
            "simple 1",
        ] {
            let e = bad.parse::<Psk>().unwrap_err().to_string();
            assert!(
                e.contains("simple0") && e.contains("simple254"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn an_empty_psk_is_refused_with_a_pointer_to_none() {
        let e = "".parse::<Psk>().unwrap_err().to_string();
        assert!(e.contains("`none`"), "{e}");
    }

    #[test]
    fn only_keys_of_1_16_or_32_bytes_parse_as_the_message_says() {
        for len in [1usize, 16, 32] {
            let text = BASE64.encode(vec![7u8; len]);
            assert_eq!(text.parse::<Psk>().unwrap().as_bytes().len(), len);
        }
        for len in [2usize, 5, 15, 17, 24, 31, 33] {
            let e = BASE64
                .encode(vec![7u8; len])
                .parse::<Psk>()
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("{len} bytes")) && e.contains("16") && e.contains("32"),
                "{len}: {e}"
            );
        }
    }

    #[test]
    fn the_cli_prefixed_forms_parse_and_errors_never_echo_the_key() {
        let key = [0x5au8; 16];
        let b64 = BASE64.encode(key);
        assert_eq!(
            format!("base64:{b64}").parse::<Psk>().unwrap().as_bytes(),
            &key
        );
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(format!("0x{hex}").parse::<Psk>().unwrap().as_bytes(), &key);
        assert!("0xzz".parse::<Psk>().is_err());
        assert!(
            "random"
                .parse::<Psk>()
                .unwrap_err()
                .to_string()
                .contains("openssl")
        );
        let almost = BASE64.encode([0x5au8; 17]);
        let e = almost.parse::<Psk>().unwrap_err().to_string();
        assert!(
            !e.contains(&almost[..8]),
            "the key is not in the message: {e}"
        );
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
