//! `Packet::decode`: a `MeshPacket` from a radio's `FromRadio`, an MQTT envelope or a peer.
//!
//! Checked beyond "no panic": a decoded packet encodes back to exactly the bytes it came from
//! (a relay never damages a packet); once its header is touched (so it is re-encoded from its
//! parts) it decodes to the same payload and encodes to the same bytes again, unknown fields
//! included; and the accessors keep their bounds (hop counts at most 7).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mesh_core::Packet;
use mesh_core::packet::{HOP_MAX, ON_AIR_HEADER};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert_eq!(
        packet.encode(),
        data,
        "a decoded packet re-encodes to other bytes"
    );

    // Touching the header drops the original bytes: the packet is encoded from its parts.
    let mut rebuilt = packet.clone();
    let _ = rebuilt.meta_mut();
    let bytes = rebuilt.encode();
    let mut again = Packet::decode(Bytes::from(bytes.clone())).expect("re-encoded packet decodes");
    assert_eq!(
        again.payload(),
        packet.payload(),
        "re-encoding changed the payload"
    );
    // Compared as bytes, not as structs: a NaN `rx_snr` is not equal to itself.
    let _ = again.meta_mut();
    assert_eq!(
        again.encode(),
        bytes,
        "re-encoding from the parts is not stable"
    );

    assert!(packet.hop_limit() <= HOP_MAX && packet.hop_start() <= HOP_MAX);
    assert!(packet.on_air_len() >= ON_AIR_HEADER);
    let _ = (
        packet.portnum(),
        packet.text(),
        packet.is_pki(),
        packet.want_ack(),
    );
    let _ = packet.to_proto().encode_to_vec();
});
