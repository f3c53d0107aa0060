use super::*;
use crate::packet::Packet;

const SENDER: NodeId = NodeId::new(0x1000_0042);

fn node(index: u32) -> Option<NodeId> {
    (index == 7).then_some(SENDER)
}

fn text(len: usize) -> Vec<u8> {
    let mut packet = Packet::text_message(NodeId::BROADCAST, 0, &"x".repeat(len));
    let meta = packet.meta_mut();
    meta.from = SENDER.get();
    meta.id = 0x8a3f_12c4;
    (meta.hop_limit, meta.hop_start) = (3, 3);
    packet.encode().to_vec()
}

fn roundtrip(packet: &[u8]) -> Option<Vec<u8>> {
    let parsed = Parsed::new(packet)?;
    let from = parsed.from().map(|_| 7);
    let compact = pack(&parsed, from)?;
    assert_eq!(
        unpack(&compact, node).unwrap(),
        packet,
        "rebuilds the same bytes"
    );
    Some(compact)
}

#[test]
fn a_60_byte_text_loses_its_header_and_nothing_else() {
    let packet = text(60);
    // As Packet::encode writes it: the header fields, then the payload.
    assert_eq!(packet.len(), 85);
    let compact = roundtrip(&packet).expect("compacts");
    // FLAGS, node index, id (4), hops, port number, payload length, then the 60 bytes.
    assert_eq!(compact.len(), 1 + 1 + 4 + 1 + 1 + 1 + 60);
    assert!(
        compact.ends_with("x".repeat(60).as_bytes()),
        "the text is untouched"
    );
}

#[test]
fn an_encrypted_packet_with_receive_metadata_keeps_its_ciphertext_verbatim() {
    let ciphertext: Vec<u8> = (0..40u8).map(|b| b.wrapping_mul(37)).collect();
    let mut packet = Vec::new();
    packet.extend_from_slice(&fixed32_field(1, SENDER.get()));
    packet.extend_from_slice(&fixed32_field(2, u32::MAX));
    packet.extend_from_slice(&varint_field(3, 8)); // channel hash
    wire::put_bytes_field(5, &ciphertext, &mut packet);
    packet.extend_from_slice(&fixed32_field(6, 0xdead_beef));
    packet.extend_from_slice(&fixed32_field(7, 1_764_000_000)); // rx_time
    packet.extend_from_slice(&fixed32_field(8, 6.25f32.to_bits())); // rx_snr
    packet.extend_from_slice(&varint_field(9, 2));
    packet.extend_from_slice(&varint_field(12, -97i64 as u64)); // rx_rssi: 11 bytes
    packet.extend_from_slice(&varint_field(15, 3));
    let compact = roundtrip(&packet).expect("compacts");
    assert!(
        compact.ends_with(&ciphertext),
        "the ciphertext is the body, untouched"
    );
    assert!(
        compact.len() + 20 <= packet.len(),
        "{} -> {} bytes",
        packet.len(),
        compact.len()
    );
}

#[test]
fn fields_of_newer_firmware_cross_in_place() {
    // In field order, as the firmware writes it, with a field 40 this build does not know.
    let mut packet = fixed32_field(1, SENDER.get());
    packet.extend_from_slice(&fixed32_field(2, u32::MAX));
    let mut data = varint_field(1, 1);
    wire::put_bytes_field(2, b"hello", &mut data);
    wire::put_bytes_field(4, &data, &mut packet);
    packet.extend_from_slice(&fixed32_field(6, 77));
    packet.extend_from_slice(&varint_field(9, 3));
    packet.extend_from_slice(&varint_field(15, 3));
    packet.extend_from_slice(&varint_field(40, 12345));
    roundtrip(&packet).expect("compacts, field 40 in REST");
    // As Packet::encode writes it (payload after the header fields), with the same field
    // after the payload: neither order of the two rules, so it crosses as it is.
    let mut packet = text(10);
    packet.extend_from_slice(&varint_field(40, 12345));
    assert_eq!(roundtrip(&packet), None);
}

#[test]
fn a_packet_that_is_not_canonical_crosses_as_it_is() {
    // An explicit zero hop limit (prost would omit it).
    let mut packet = fixed32_field(1, SENDER.get());
    packet.extend_from_slice(&fixed32_field(6, 5));
    packet.extend_from_slice(&varint_field(9, 0));
    packet.extend_from_slice(&varint_field(15, 3));
    assert_eq!(roundtrip(&packet), None);
    // Fields out of order.
    let mut packet = fixed32_field(6, 5);
    packet.extend_from_slice(&fixed32_field(1, SENDER.get()));
    assert_eq!(roundtrip(&packet), None);
    // The same field twice.
    let mut packet = fixed32_field(1, SENDER.get());
    packet.extend_from_slice(&fixed32_field(6, 5));
    packet.extend_from_slice(&fixed32_field(6, 6));
    assert_eq!(roundtrip(&packet), None);
    // Not protobuf at all.
    assert!(Parsed::new(&[0xff, 0xff, 0xff]).is_none());
}

#[test]
fn a_full_node_table_leaves_from_in_rest() {
    let packet = text(20);
    let parsed = Parsed::new(&packet).unwrap();
    let compact = pack(&parsed, None).expect("still compacts the rest");
    assert_eq!(unpack(&compact, |_| None).unwrap(), packet);
}

#[test]
fn hop_counts_above_four_bits_stay_in_rest() {
    let mut packet = fixed32_field(1, SENDER.get());
    packet.extend_from_slice(&fixed32_field(2, u32::MAX));
    packet.extend_from_slice(&fixed32_field(6, 5));
    packet.extend_from_slice(&varint_field(9, 200));
    packet.extend_from_slice(&varint_field(15, 3));
    roundtrip(&packet).expect("compacts");
}

#[test]
fn rebuilding_refuses_what_a_sender_never_makes() {
    let bad: &[(&[u8], &str)] = &[
        (&[0x80, 0x04], "compact flags"),             // an unknown flag bit
        (&[0x20], "compact flags"),                   // DATA without DECODED
        (&[0x01, 0x05], "compact node index"),        // an undefined node
        (&[0x04, 0x01, 0x02], "compact packet id"),   // a cut id
        (&[0x80, 0x01, 0x00], "compact rest length"), // an empty REST
        (&[0x80, 0x01, 0x03, 0x0d], "compact rest length"), // REST longer than the item
        (&[0x80, 0x01, 0x01, 0xff], "compact rest"),  // REST that is not protobuf
        (&[0x00], "compact packet length"),           // nothing at all
        (&[0x30, 0x01, 0x7f], "compact payload length"), // payload longer than the item
    ];
    for (compact, what) in bad {
        match unpack(compact, node) {
            Err(FrameError::Invalid { what: got, .. }) => assert_eq!(got, *what, "{compact:02x?}"),
            other => panic!("{compact:02x?}: {other:?}"),
        }
    }
    // REST naming a field the header also carries: id (6) twice.
    let mut compact = vec![0x84, 0x01];
    compact.extend_from_slice(&5u32.to_le_bytes());
    let rest = fixed32_field(6, 9);
    compact.push(rest.len() as u8);
    compact.extend_from_slice(&rest);
    match unpack(&compact, node) {
        Err(FrameError::Invalid { what, .. }) => assert_eq!(what, "compact rest field order"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn random_packets_either_rebuild_exactly_or_cross_as_they_are() {
    // A small deterministic generator: fields of random numbers and types, mostly canonical
    // MeshPacket shapes, sometimes not.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut compacted = 0;
    for _ in 0..5_000 {
        let mut packet = Vec::new();
        let mut tag = 0;
        for _ in 0..(next() % 10) {
            tag += 1 + (next() % 4) as u32;
            match next() % 4 {
                0 => packet.extend_from_slice(&fixed32_field(tag, next() as u32)),
                1 => packet.extend_from_slice(&varint_field(tag, next() % 300)),
                2 => {
                    let inner = if next() % 2 == 0 {
                        let mut d = varint_field(1, next() % 80);
                        wire::put_bytes_field(2, &vec![b'a'; (next() % 50) as usize], &mut d);
                        d
                    } else {
                        vec![0x42; (next() % 70) as usize]
                    };
                    wire::put_bytes_field(tag, &inner, &mut packet);
                }
                _ => packet.extend_from_slice(&varint_field(tag, -((next() % 130) as i64) as u64)),
            }
        }
        if packet.is_empty() {
            continue;
        }
        let Some(parsed) = Parsed::new(&packet) else {
            continue;
        };
        if let Some(compact) = pack(&parsed, parsed.from().map(|_| 7)) {
            let from = parsed.from();
            assert_eq!(unpack(&compact, |_| from).unwrap(), packet, "{packet:02x?}");
            assert!(compact.len() < packet.len());
            compacted += 1;
        }
    }
    assert!(compacted > 500, "only {compacted} compacted");
}
