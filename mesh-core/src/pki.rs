//! Meshtastic 2.5+ PKI direct messages: x25519 key pairs, the shared key, and AES-256-CCM of a
//! `Data` payload, byte for byte as the firmware does them.
//!
//! The rules, from firmware v2.7.26 (`src/mesh/CryptoEngine.cpp`: `encryptCurve25519`,
//! `decryptCurve25519`, `initNonce`; `src/mesh/Router.cpp`: `perhapsEncode`, `perhapsDecode`):
//!
//! | what | rule |
//! |------|------|
//! | shared key | `SHA-256(X25519(my_private, their_public))`; an all-zero X25519 result (a low-order public key) is refused |
//! | cipher | AES-256-CCM, 8-byte tag (M = 8), 13-byte nonce (L = 2), no associated data |
//! | nonce | the first 13 bytes of `[id LE u32 \| extra_nonce LE u32 \| from LE u32 \| 0 …]` |
//! | on the wire | `ciphertext \| tag (8) \| extra_nonce (4)`: 12 bytes more than the `Data` |
//! | packet | `channel = 0` (no hash), `pki_encrypted = true`; the sender sets no `public_key` |
//! | received | decrypted only when `channel == 0`, addressed to us and longer than 12 bytes; the result carries `pki_encrypted` and the **sender's** key in `public_key` |
//!
//! `extra_nonce` is a fresh random value per packet in the firmware; callers pass it, so
//! encryption stays a pure function. Keys never appear in `Debug` output: a private key shows
//! only its public half, a shared key nothing.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U8, U13};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::node::{NodeId, PacketId};
use crate::packet::{MAX_LORA_FRAME, ON_AIR_HEADER};

/// Bytes a PKI payload adds to its `Data` (`MESHTASTIC_PKC_OVERHEAD`): tag and extra nonce.
pub const PKI_OVERHEAD: usize = TAG_LEN + EXTRA_NONCE_LEN;
/// The CCM tag length (M).
pub const TAG_LEN: usize = 8;
/// The length of the extra nonce that ends the payload.
pub const EXTRA_NONCE_LEN: usize = 4;
/// The CCM nonce length: 13 bytes, so a 2-byte length field (L = 2).
pub const NONCE_LEN: usize = 13;
/// The largest `Data` encoding that still fits a LoRa frame once PKI-encrypted.
pub const MAX_PKI_PLAINTEXT: usize = MAX_LORA_FRAME - ON_AIR_HEADER - PKI_OVERHEAD;

type Aes256Ccm = ccm::Ccm<aes::Aes256, U8, U13>;

/// Why a PKI key or payload could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    /// A public key that is not 32 bytes (`User.public_key` of another length).
    #[error("a public key is 32 bytes, this one has {len}")]
    KeyLength {
        /// Its length.
        len: usize,
    },
    /// A public key written in text that is not base64 of 32 bytes.
    #[error("public key {text:?} is not base64 of 32 bytes (as the apps show keys)")]
    KeyText {
        /// What was given.
        text: String,
    },
    /// The other side's key gives an all-zero X25519 result: a low-order point, never a
    /// real node's key (the firmware's `Curve25519::dh2` refuses it too).
    #[error("public key {key} is a weak (low-order) point: no shared key can come from it")]
    WeakKey {
        /// The refused key.
        key: PublicKey,
    },
    /// A payload too short to hold the 8-byte tag and 4-byte extra nonce plus any ciphertext.
    #[error(
        "a PKI payload of {len} bytes is too short: it needs more than {PKI_OVERHEAD} (tag and extra nonce)"
    )]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// A `Data` too large to go on the air once the 12 bytes of PKI overhead are added.
    #[error(
        "a Data of {len} bytes does not fit a LoRa frame once PKI-encrypted (at most {MAX_PKI_PLAINTEXT})"
    )]
    TooLarge {
        /// The plaintext length.
        len: usize,
    },
    /// The CCM tag does not match: another key pair, another sender or id, or altered bytes.
    #[error("PKI payload of packet {id} from {from} fails authentication (wrong keys or altered)")]
    TagMismatch {
        /// The packet's sender.
        from: NodeId,
        /// The packet's id.
        id: PacketId,
    },
    /// Authentic, but not a `Data` with a port (the firmware's "PKC Decrypted, but pb_decode
    /// failed").
    #[error("PKI payload of packet {id} from {from} decrypts to something that is not a Data")]
    NotData {
        /// The packet's sender.
        from: NodeId,
        /// The packet's id.
        id: PacketId,
    },
    /// Encrypting a packet that has no plaintext payload.
    #[error("packet {id} from {from} is already encrypted")]
    NotDecoded {
        /// The packet's sender.
        from: NodeId,
        /// The packet's id.
        id: PacketId,
    },
    /// Decrypting a packet that has a plaintext payload.
    #[error("packet {id} from {from} is not encrypted")]
    NotEncrypted {
        /// The packet's sender.
        from: NodeId,
        /// The packet's id.
        id: PacketId,
    },
}

/// A node's x25519 public key, as `User.public_key` carries it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    /// Its 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key in a `User.public_key` field: `None` when the field is empty (a node without
    /// PKI), an error for any other length than 32.
    pub fn from_user_field(bytes: &[u8]) -> Result<Option<PublicKey>, PkiError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        PublicKey::try_from(bytes).map(Some)
    }
}

impl TryFrom<&[u8]> for PublicKey {
    type Error = PkiError;

    fn try_from(bytes: &[u8]) -> Result<PublicKey, PkiError> {
        <[u8; 32]>::try_from(bytes)
            .map(PublicKey)
            .map_err(|_| PkiError::KeyLength { len: bytes.len() })
    }
}

impl fmt::Display for PublicKey {
    /// Standard base64 with padding, as the apps and the Python CLI show keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = PkiError;

    fn from_str(text: &str) -> Result<PublicKey, PkiError> {
        let bad = || PkiError::KeyText {
            text: text.to_owned(),
        };
        let bytes = BASE64.decode(text.trim()).map_err(|_| bad())?;
        PublicKey::try_from(&bytes[..]).map_err(|_| bad())
    }
}

/// A node's x25519 private key. Its `Debug` shows the public half only.
#[derive(Clone)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    /// A new key from `rng`, clamped as RFC 7748 and the firmware's `Curve25519::dh1` store
    /// it (the scalar multiplication clamps anyway; this only makes `to_bytes` look alike).
    pub fn generate<R: rand_core::RngCore + ?Sized>(rng: &mut R) -> PrivateKey {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        bytes[0] &= 0xf8;
        bytes[31] = (bytes[31] & 0x7f) | 0x40;
        let key = PrivateKey::from_bytes(bytes);
        bytes.zeroize();
        key
    }

    /// The key from its 32 bytes (as `SecurityConfig.private_key` holds it), unchanged.
    pub fn from_bytes(bytes: [u8; 32]) -> PrivateKey {
        PrivateKey(x25519_dalek::StaticSecret::from(bytes))
    }

    /// Its 32 bytes, for storing it; never log them.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key that goes with it.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*x25519_dalek::PublicKey::from(&self.0).as_bytes())
    }

    /// The key both ends of a conversation derive: `SHA-256(X25519(self, theirs))`.
    pub fn shared_key(&self, theirs: &PublicKey) -> Result<SharedKey, PkiError> {
        let dh = self
            .0
            .diffie_hellman(&x25519_dalek::PublicKey::from(theirs.0));
        if !dh.was_contributory() {
            return Err(PkiError::WeakKey { key: *theirs });
        }
        Ok(SharedKey(Sha256::digest(dh.as_bytes()).into()))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public {})", self.public_key())
    }
}

/// The AES-256 key two nodes share; wiped when dropped, never shown.
pub struct SharedKey([u8; 32]);

impl SharedKey {
    /// Its bytes (for tests and cross-checks; never log them).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Encrypts a `Data` encoding sent by `from` as packet `id`: `ciphertext | tag | extra`.
    pub fn encrypt(
        &self,
        from: NodeId,
        id: PacketId,
        extra_nonce: u32,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, PkiError> {
        if plaintext.len() > MAX_PKI_PLAINTEXT {
            return Err(PkiError::TooLarge {
                len: plaintext.len(),
            });
        }
        let mut out = Vec::with_capacity(plaintext.len() + PKI_OVERHEAD);
        out.extend_from_slice(plaintext);
        let nonce = nonce(from, id, extra_nonce);
        let tag = self
            .cipher()
            .encrypt_in_place_detached(&nonce.into(), b"", &mut out)
            // CCM with L = 2 refuses only messages over 65535 bytes, excluded above.
            .map_err(|_| PkiError::TooLarge {
                len: plaintext.len(),
            })?;
        out.extend_from_slice(&tag);
        out.extend_from_slice(&extra_nonce.to_le_bytes());
        Ok(out)
    }

    /// Decrypts a PKI payload of packet `id` from `from` back to the `Data` encoding.
    pub fn decrypt(&self, from: NodeId, id: PacketId, wire: &[u8]) -> Result<Vec<u8>, PkiError> {
        if wire.len() <= PKI_OVERHEAD {
            return Err(PkiError::TooShort { len: wire.len() });
        }
        let (body, trailer) = wire.split_at(wire.len() - PKI_OVERHEAD);
        let (tag, extra) = trailer.split_at(TAG_LEN);
        let extra_nonce = u32::from_le_bytes([extra[0], extra[1], extra[2], extra[3]]);
        let nonce = nonce(from, id, extra_nonce);
        let mut plain = body.to_vec();
        self.cipher()
            .decrypt_in_place_detached(&nonce.into(), b"", &mut plain, tag.into())
            .map_err(|_| PkiError::TagMismatch { from, id })?;
        Ok(plain)
    }

    fn cipher(&self) -> Aes256Ccm {
        Aes256Ccm::new(&self.0.into())
    }
}

impl Drop for SharedKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedKey(..)")
    }
}

/// The CCM nonce of a packet (`CryptoEngine::initNonce` with an extra nonce): the id as a
/// little-endian u64 whose high half is then replaced by the extra nonce, the sender, zeros,
/// cut to 13 bytes. An extra nonce of 0 leaves the high half 0, which is the same thing.
pub fn nonce(from: NodeId, id: PacketId, extra_nonce: u32) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&id.get().to_le_bytes());
    n[4..8].copy_from_slice(&extra_nonce.to_le_bytes());
    n[8..12].copy_from_slice(&from.get().to_le_bytes());
    n
}

#[cfg(test)]
#[path = "pki_tests.rs"]
mod tests;
