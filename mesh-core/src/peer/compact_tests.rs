//! The compactness goal, measured: bytes on the wire per 60-byte packet at steady
//! state, TLS, TCP/IP and acknowledgements included, must be at most 80.

use std::time::Duration;

use super::pair::Pair;
use super::session::Outgoing;
use crate::node::NodeId;

/// TLS 1.3 per record: 5 bytes of header, 16 of AEAD tag, 1 of content type.
const TLS_RECORD: usize = 22;
/// Plaintext per TLS record.
const TLS_MAX: usize = 16 * 1024;
/// IPv4 and TCP headers with timestamps.
const TCP_IP: usize = 52;
/// Payload per TCP segment on a 1,500-byte MTU with timestamps.
const MSS: usize = 1448;

/// Bytes one write of `len` bytes puts on the wire, and the segments it takes.
fn wire(len: usize) -> (usize, usize) {
    let tls = len + TLS_RECORD * len.div_ceil(TLS_MAX);
    let segments = tls.div_ceil(MSS);
    (tls + TCP_IP * segments, segments)
}

/// Streams `count` packets from A to B and returns the bytes on the wire per packet, both
/// directions: our frames, TLS records, TCP/IP headers, and TCP's own ACK for every second
/// segment (a pure ACK each time: nothing is counted as piggybacked).
fn bytes_per_packet(count: u64, mixed: bool) -> f64 {
    let mut p = Pair::new();
    for key in 1..=count {
        let (channel, origin) = if mixed {
            (
                ["LongFast", "MediumFast"][key as usize % 2],
                0x1000 + (key % 3) as u32,
            )
        } else {
            ("LongFast", 0x1000)
        };
        let mut packet = key.to_le_bytes().to_vec();
        packet.resize(60, 0xa5);
        p.a.outbox.insert(
            key,
            Outgoing {
                key,
                channel: channel.into(),
                origin: NodeId::new(origin),
                hops: 1,
                packet,
            },
        );
    }
    while !p.a.outbox.is_empty() {
        p.run_for(Duration::from_millis(1));
    }
    assert_eq!(p.b.store.len() as u64, count);
    let mut total = 0;
    let mut segments = [0, 0];
    for (i, side) in [&p.a, &p.b].into_iter().enumerate() {
        for t in &side.transmits {
            let (bytes, segs) = wire(t.len());
            total += bytes;
            segments[i] += segs;
        }
    }
    // Each side acknowledges every second segment of the other's.
    total += TCP_IP * (segments[0].div_ceil(2) + segments[1].div_ceil(2));
    total as f64 / count as f64
}

#[test]
fn a_steady_stream_of_60_byte_packets_costs_at_most_80_bytes_each_on_the_wire() {
    let same = bytes_per_packet(20_000, false);
    let mixed = bytes_per_packet(20_000, true);
    println!(
        "bytes on the wire per 60-byte packet: {same:.1} (one channel and origin), {mixed:.1} (channels and origins alternating)"
    );
    assert!(same <= 80.0, "{same}");
    assert!(mixed <= 80.0, "{mixed}");
    // The arithmetic in the module doc: 62 + 0.05 + 0.08 + 2.23 + 1.12 + 0.30.
    assert!((same - 65.8).abs() < 1.0, "{same}");
}
