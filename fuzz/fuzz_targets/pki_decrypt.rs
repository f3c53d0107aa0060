//! PKI direct messages (`mesh_core::pki`): the ciphertext of a packet from any node on the
//! air or the broker, decrypted with known keys; public keys as a `User` field and as text.
//!
//! The first byte picks what the rest is:
//! - 0: a `MeshPacket`, opened with `Packet::decrypt_pki` (ours: key A, theirs: key B);
//! - 1: `from`, `id` (4 bytes each, little-endian) and a PKI payload for `SharedKey::decrypt`;
//! - 2: `from`, `id`, an extra nonce, a byte position and a plaintext, sealed and opened again;
//! - anything else: a public key (32 bytes) to agree a key with, and text to read as a key.
//!
//! Checked: a payload no longer than the tag and extra nonce is refused as too short; a
//! payload that opens re-seals to the same bytes; a sealed plaintext opens to itself, and with
//! any byte changed it does not; a decrypted packet is marked PKI with the sender's key.
#![no_main]

use std::sync::LazyLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mesh_core::pki::{MAX_PKI_PLAINTEXT, PKI_OVERHEAD, PkiError, SharedKey};
use mesh_core::{NodeId, Packet, PacketId, PrivateKey, PublicKey};

static OURS: LazyLock<PrivateKey> = LazyLock::new(|| PrivateKey::from_bytes([0x11; 32]));
static THEIRS: LazyLock<PublicKey> =
    LazyLock::new(|| PrivateKey::from_bytes([0x22; 32]).public_key());
/// X25519 costs more than everything else here: agreed once.
static SHARED: LazyLock<SharedKey> =
    LazyLock::new(|| OURS.shared_key(&THEIRS).expect("two real keys agree"));

fn header(bytes: &[u8]) -> Option<(NodeId, PacketId, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    let from = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let id = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    Some((NodeId::new(from), PacketId::new(id), rest))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            let Ok(packet) = Packet::decode(Bytes::copy_from_slice(rest)) else {
                return;
            };
            if let Ok(plain) = packet.decrypt_pki(&OURS, &THEIRS) {
                assert!(plain.is_pki() && plain.channel() == 0);
                assert_eq!(plain.meta().public_key, THEIRS.as_bytes());
                assert!(plain.data().is_some_and(|d| d.portnum != 0));
            }
        }
        1 => {
            let Some((from, id, wire)) = header(rest) else {
                return;
            };
            match SHARED.decrypt(from, id, wire) {
                Ok(plain) => {
                    assert_eq!(plain.len(), wire.len() - PKI_OVERHEAD);
                    let extra = u32::from_le_bytes(wire[wire.len() - 4..].try_into().unwrap());
                    let again = SHARED.encrypt(from, id, extra, &plain);
                    assert_eq!(again.as_deref(), Ok(wire), "re-sealing gave other bytes");
                }
                Err(PkiError::TooShort { len }) => assert!(len <= PKI_OVERHEAD),
                Err(e) => assert!(wire.len() > PKI_OVERHEAD, "{e}"),
            }
        }
        2 => {
            let Some((from, id, rest)) = header(rest) else {
                return;
            };
            let Some((extra, rest)) = rest.split_first_chunk::<4>() else {
                return;
            };
            let Some((&flip, plain)) = rest.split_first() else {
                return;
            };
            let extra = u32::from_le_bytes(*extra);
            let sealed = match SHARED.encrypt(from, id, extra, plain) {
                Ok(sealed) => sealed,
                Err(PkiError::TooLarge { len }) => {
                    assert!(len > MAX_PKI_PLAINTEXT);
                    return;
                }
                Err(e) => panic!("sealing failed: {e}"),
            };
            assert_eq!(sealed.len(), plain.len() + PKI_OVERHEAD);
            if plain.is_empty() {
                // An empty plaintext seals to exactly the overhead, which decrypt refuses.
                assert!(SHARED.decrypt(from, id, &sealed).is_err());
                return;
            }
            assert_eq!(SHARED.decrypt(from, id, &sealed).as_deref(), Ok(plain));
            let mut altered = sealed.clone();
            let at = usize::from(flip) % altered.len();
            altered[at] ^= 0x01;
            assert!(
                SHARED.decrypt(from, id, &altered).is_err(),
                "altered byte {at} opened"
            );
        }
        _ => {
            if let Ok(Some(key)) = PublicKey::from_user_field(rest.get(..32).unwrap_or(rest)) {
                match OURS.shared_key(&key) {
                    Ok(_) | Err(PkiError::WeakKey { .. }) => {}
                    Err(e) => panic!("key agreement failed otherwise: {e}"),
                }
                assert_eq!(key.to_string().parse::<PublicKey>(), Ok(key));
            }
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = text.parse::<PublicKey>();
            }
        }
    }
});
