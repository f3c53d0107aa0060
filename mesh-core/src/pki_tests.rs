//! Golden vectors from the firmware's own tests, and the error cases.
//!
//! Source: meshtastic/firmware `test/test_crypto/test_main.cpp` at tag v2.7.26.54e0d8d (the
//! file's last change there is commit 0665802823, 2025-04-03): `test_PKC` (a PKI packet as
//! received over the radio) and `test_DH25519` (Wycheproof x25519 vectors, the last one
//! hashed with SHA-256 as the shared key).
//!
//! The `test_PKC` vector was also checked independently with Python `cryptography`:
//! ```text
//! shared = sha256(X25519PrivateKey.from_private_bytes(PRIV).exchange(
//!     X25519PublicKey.from_public_bytes(PUB))).digest()        # 777b1545c9d6f9a2...
//! payload = RADIO[16:]; ct, tag, extra = payload[:-12], payload[-12:-4], payload[-4:]
//! nonce = (0x13b2d662).to_bytes(4, "little") + extra + (0x0929).to_bytes(4, "little") + b"\0"
//! AESCCM(shared, tag_length=8).decrypt(nonce, ct + tag, None)  # 08011204746573744800
//! ```

use super::*;
use crate::packet::{Packet, Payload};
use crate::proto;
use prost::Message;
use rand::SeedableRng;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn key32(s: &str) -> [u8; 32] {
    hex(s).try_into().unwrap()
}

/// `test_PKC`: the receiver's private key and the sender's public key.
const PKC_PRIVATE: &str = "a00330633e63522f8a4d81ec6d9d1e6617f6c8ffd3a4c698229537d44e522277";
const PKC_PUBLIC: &str = "db18fc50eea47f00251cb784819a3cf5fc361882597f589f0d7ff820e8064457";
/// The LoRa frame: 16-byte header (to 0x7a6d648c, from 0x0929, id 0x13b2d662, flags 0x6b =
/// hop limit 3, want_ack, hop start 3; channel hash 0), then the 22-byte PKI payload.
const PKC_RADIO: &str =
    "8c646d7a2909000062d6b2136b00000040df24abfcc30a17a3d9046726099e796a1c036a792b";
/// `Data{portnum: TEXT_MESSAGE_APP, payload: "test", bitfield: 0}`.
const PKC_PLAIN: &str = "08011204746573744800";

/// The packet of `test_PKC`, as a radio would hand it up, header fields decoded.
fn pkc_packet() -> Packet {
    let radio = hex(PKC_RADIO);
    let meta = proto::MeshPacket {
        to: u32::from_le_bytes(radio[0..4].try_into().unwrap()),
        from: u32::from_le_bytes(radio[4..8].try_into().unwrap()),
        id: u32::from_le_bytes(radio[8..12].try_into().unwrap()),
        hop_limit: u32::from(radio[12] & 7),
        want_ack: radio[12] & 8 != 0,
        hop_start: u32::from(radio[12] >> 5),
        channel: u32::from(radio[13]),
        ..Default::default()
    };
    Packet::new(meta, Payload::Encrypted(radio[16..].to_vec().into()))
}

fn pkc_keys() -> (PrivateKey, PublicKey) {
    (
        PrivateKey::from_bytes(key32(PKC_PRIVATE)),
        PublicKey::from_bytes(key32(PKC_PUBLIC)),
    )
}

#[test]
fn the_firmware_pkc_vector_decrypts_to_its_text() {
    let (mine, theirs) = pkc_keys();
    let packet = pkc_packet();
    assert_eq!(
        (packet.from().get(), packet.id().get()),
        (0x0929, 0x13b2_d662)
    );
    assert!(packet.is_pki(), "channel 0, one destination, encrypted");
    let shared = mine.shared_key(&theirs).unwrap();
    assert_eq!(shared.as_bytes()[..8], hex("777b1545c9d6f9a2")[..]);
    let extra = u32::from_le_bytes(hex("036a792b").try_into().unwrap());
    assert_eq!(
        nonce(packet.from(), packet.id(), extra).to_vec(),
        hex("62d6b213036a792b2909000000")
    );
    let plain = packet.decrypt_pki(&mine, &theirs).unwrap();
    let Payload::Decoded { raw, data } = plain.payload() else {
        panic!("not decoded")
    };
    assert_eq!(raw.to_vec(), hex(PKC_PLAIN));
    assert_eq!(data.portnum, proto::PortNum::TextMessageApp as i32);
    assert_eq!(plain.text().as_deref(), Some("test"));
    let m = plain.meta();
    assert!(m.pki_encrypted);
    assert_eq!(m.public_key, theirs.as_bytes().to_vec(), "the sender's key");
    assert_eq!(m.channel, 0);
    assert!(plain.is_pki());
}

#[test]
fn encrypting_the_vector_plaintext_with_its_extra_nonce_gives_the_radio_bytes() {
    // The shared key is symmetric: the receiver's pair derives the key the sender used.
    let (mine, theirs) = pkc_keys();
    let received = pkc_packet();
    let mut meta = received.meta().clone();
    meta.pki_encrypted = false;
    let data = proto::Data::decode(&hex(PKC_PLAIN)[..]).unwrap();
    let plain = Packet::new(
        meta,
        Payload::Decoded {
            raw: hex(PKC_PLAIN).into(),
            data,
        },
    );
    let extra = u32::from_le_bytes(hex("036a792b").try_into().unwrap());
    let wire = plain.encrypt_pki(&mine, &theirs, extra).unwrap();
    assert_eq!(wire.payload(), received.payload());
    assert_eq!(wire.channel(), 0);
    assert!(wire.meta().pki_encrypted);
    assert!(wire.meta().public_key.is_empty(), "the sender sets no key");
    assert_eq!(wire.on_air_len(), hex(PKC_RADIO).len());
}

#[test]
fn the_shared_key_is_the_sha256_of_x25519_as_in_the_wycheproof_vector() {
    let mine = PrivateKey::from_bytes(key32(
        "10300724f3bea134eb1575245ef26ff9b8ccd59849cd98ce1a59002fe1d5986c",
    ));
    let theirs = PublicKey::from_bytes(key32(
        "f7e13a1a067d2f4e1061bf9936fde5be6b0c2494a8f809cbac7f290ef719e91c",
    ));
    let shared = mine.shared_key(&theirs).unwrap();
    assert_eq!(
        shared.as_bytes().to_vec(),
        hex("24becd5dfed9e9289ba2e15b82b0d54f8e9aacb72f5e4248c58d8d74b451ce76")
    );
    // That public key is the one of test_PKC's private key.
    assert_eq!(pkc_keys().0.public_key(), theirs);
}

#[test]
fn a_low_order_public_key_is_refused() {
    let mine = PrivateKey::from_bytes(key32(
        "18630f93598637c35da623a74559cf944374a559114c7937811041fc8605564a",
    ));
    let weak = PublicKey::from_bytes(key32(
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ));
    assert_eq!(
        mine.shared_key(&weak).unwrap_err(),
        PkiError::WeakKey { key: weak }
    );
}

fn text_from(from: u32, to: u32, id: u32, body: &str) -> Packet {
    let mut p = Packet::text_message(NodeId::new(to), 0, body);
    (p.meta_mut().from, p.meta_mut().id) = (from, id);
    p
}

#[test]
fn two_generated_pairs_talk_and_a_third_cannot_listen() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (alice, bob, eve) = (
        PrivateKey::generate(&mut rng),
        PrivateKey::generate(&mut rng),
        PrivateKey::generate(&mut rng),
    );
    let dm = text_from(0xa1, 0xb2, 77, "meet at the well");
    let wire = dm
        .encrypt_pki(&alice, &bob.public_key(), 0xdead_beef)
        .unwrap();
    let Payload::Encrypted(c) = wire.payload() else {
        panic!()
    };
    assert_eq!(c.len(), dm.on_air_len() - 16 + PKI_OVERHEAD);
    assert_eq!(c[c.len() - 4..], 0xdead_beef_u32.to_le_bytes());
    let read = wire.decrypt_pki(&bob, &alice.public_key()).unwrap();
    assert_eq!(read.text().as_deref(), Some("meet at the well"));
    let tag_mismatch = PkiError::TagMismatch {
        from: NodeId::new(0xa1),
        id: PacketId::new(77),
    };
    assert_eq!(
        wire.decrypt_pki(&eve, &alice.public_key()).unwrap_err(),
        tag_mismatch
    );
    // The nonce binds sender and id: the same bytes under another id do not authenticate.
    let mut replayed = wire.clone();
    replayed.meta_mut().id = 78;
    assert!(matches!(
        replayed.decrypt_pki(&bob, &alice.public_key()),
        Err(PkiError::TagMismatch { .. })
    ));
    let mut altered = c.to_vec();
    altered[0] ^= 1;
    let altered = Packet::new(wire.meta().clone(), Payload::Encrypted(altered.into()));
    assert_eq!(
        altered.decrypt_pki(&bob, &alice.public_key()).unwrap_err(),
        tag_mismatch
    );
    // An extra nonce of 0 is valid too (the firmware's initNonce then leaves the zeros).
    let zero = dm.encrypt_pki(&alice, &bob.public_key(), 0).unwrap();
    assert!(zero.decrypt_pki(&bob, &alice.public_key()).is_ok());
}

#[test]
fn generated_keys_are_clamped_and_round_trip_through_bytes() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let key = PrivateKey::generate(&mut rng);
    let bytes = key.to_bytes();
    assert_eq!(bytes[0] & 7, 0);
    assert_eq!(bytes[31] & 0xc0, 0x40);
    assert_eq!(PrivateKey::from_bytes(bytes).public_key(), key.public_key());
}

#[test]
fn short_oversize_and_wrong_kind_payloads_are_errors() {
    let (mine, theirs) = pkc_keys();
    let mut p = pkc_packet();
    let short = Packet::new(p.meta().clone(), Payload::Encrypted(vec![0; 12].into()));
    assert_eq!(
        short.decrypt_pki(&mine, &theirs).unwrap_err(),
        PkiError::TooShort { len: 12 }
    );
    assert!(matches!(
        p.encrypt_pki(&mine, &theirs, 1),
        Err(PkiError::NotDecoded { .. })
    ));
    p = text_from(1, 2, 3, "x");
    assert!(matches!(
        p.decrypt_pki(&mine, &theirs),
        Err(PkiError::NotEncrypted { .. })
    ));
    let big = text_from(1, 2, 3, &"y".repeat(MAX_PKI_PLAINTEXT));
    assert!(matches!(
        big.encrypt_pki(&mine, &theirs, 1),
        Err(PkiError::TooLarge { .. })
    ));
    // Authentic bytes that are not a Data: an empty message has no port.
    let shared = mine.shared_key(&theirs).unwrap();
    let not_data = shared
        .encrypt(NodeId::new(1), PacketId::new(3), 4, &[0x08, 0x00])
        .unwrap();
    let packet = Packet::new(
        text_from(1, 2, 3, "").meta().clone(),
        Payload::Encrypted(not_data.into()),
    );
    assert_eq!(
        packet.decrypt_pki(&mine, &theirs).unwrap_err(),
        PkiError::NotData {
            from: NodeId::new(1),
            id: PacketId::new(3)
        }
    );
}

#[test]
fn random_payloads_never_panic_and_never_authenticate() {
    let (mine, theirs) = pkc_keys();
    let mut x: u32 = 0x9e37_79b9;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let p = Packet::new(
            pkc_packet().meta().clone(),
            Payload::Encrypted(bytes.into()),
        );
        assert!(p.decrypt_pki(&mine, &theirs).is_err());
    }
}

#[test]
fn public_keys_read_and_print_as_the_apps_show_them() {
    let key = PublicKey::from_bytes(key32(PKC_PUBLIC));
    let text = key.to_string();
    assert_eq!(text, "2xj8UO6kfwAlHLeEgZo89fw2GIJZf1ifDX/4IOgGRFc=");
    assert_eq!(text.parse::<PublicKey>().unwrap(), key);
    assert_eq!(format!("{key:?}"), format!("PublicKey({text})"));
    for bad in ["", "not base64!", "AQ=="] {
        let e = bad.parse::<PublicKey>().unwrap_err();
        assert!(e.to_string().contains("base64 of 32 bytes"), "{e}");
    }
    assert_eq!(PublicKey::from_user_field(&[]), Ok(None));
    assert_eq!(
        PublicKey::from_user_field(&[1; 31]),
        Err(PkiError::KeyLength { len: 31 })
    );
    assert_eq!(PublicKey::from_user_field(key.as_bytes()), Ok(Some(key)));
}

#[test]
fn debug_output_never_shows_private_or_shared_bytes() {
    let (mine, theirs) = pkc_keys();
    let shown = format!("{mine:?} {:?}", mine.shared_key(&theirs).unwrap());
    let private = hex(PKC_PRIVATE);
    assert!(!shown.contains(PKC_PRIVATE), "{shown}");
    assert!(!shown.contains(&BASE64.encode(&private)), "{shown}");
    assert!(!shown.contains("777b1545"), "{shown}");
    assert!(shown.contains(&mine.public_key().to_string()), "{shown}");
}

#[test]
fn a_broadcast_a_hashed_channel_or_plaintext_is_not_pki() {
    let broadcast = Packet::new(
        proto::MeshPacket {
            to: u32::MAX,
            channel: 0,
            ..Default::default()
        },
        Payload::Encrypted(vec![1; 20].into()),
    );
    assert!(!broadcast.is_pki());
    let hashed = Packet::new(
        proto::MeshPacket {
            to: 5,
            channel: 8,
            ..Default::default()
        },
        Payload::Encrypted(vec![1; 20].into()),
    );
    assert!(!hashed.is_pki());
    assert!(!text_from(1, 2, 3, "x").is_pki());
}
