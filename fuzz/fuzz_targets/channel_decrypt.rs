//! Channel decryption with a known key (AES-CTR, `Packet::decrypt`): what a radio or a broker
//! hands over encrypted. The first byte is a one-byte PSK (`AQ==` is 1, the LongFast default;
//! 0 is no crypto), the rest a `MeshPacket`.
//!
//! Checked: decrypting and encrypting again gives back the sender's ciphertext, byte for byte;
//! a plaintext packet encrypted and decrypted comes back with the same payload bytes (unless
//! its port is 0, which decryption refuses as the sign of a wrong key).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mesh_core::channel::channel_hash;
use mesh_core::{Packet, Payload, Psk};

const CHANNEL: &str = "LongFast";

fuzz_target!(|data: &[u8]| {
    let Some((&psk, bytes)) = data.split_first() else {
        return;
    };
    let key = Psk::from_bytes([psk]).expand();
    let Ok(packet) = Packet::decode(Bytes::copy_from_slice(bytes)) else {
        return;
    };
    match packet.payload() {
        Payload::Encrypted(cipher) => {
            if let Ok(plain) = packet.decrypt(&key) {
                let Payload::Encrypted(back) = plain.encrypt(CHANNEL, &key).payload().clone()
                else {
                    panic!("encrypt left the payload in clear");
                };
                assert_eq!(&back, cipher, "decrypt then encrypt changed the ciphertext");
                assert!(plain.data().is_some());
            }
        }
        Payload::Decoded { raw, data } => {
            let sealed = packet.encrypt(CHANNEL, &key);
            assert_eq!(sealed.channel(), u32::from(channel_hash(CHANNEL, &key)));
            match sealed.decrypt(&key) {
                Ok(opened) => {
                    let Payload::Decoded { raw: r, data: d } = opened.payload() else {
                        panic!("decrypt gave no plaintext");
                    };
                    assert_eq!(
                        (r, d),
                        (raw, data),
                        "the payload did not survive the round trip"
                    );
                }
                Err(e) => assert_eq!(data.portnum, 0, "round trip refused: {e}"),
            }
        }
    }
});
