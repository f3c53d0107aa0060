//! The compactness goal, measured: bytes on the wire per 60-byte packet at steady
//! state, TLS, TCP/IP and acknowledgements included, must be at most 80.

use std::time::Duration;

use super::pair::{Pair, config};
use super::session::Outgoing;
use super::session::SessionConfig;
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
    let make = |key: u64| {
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
        (channel, origin, packet)
    };
    stream(count, Pair::new(), make)
}

/// Streams `count` packets made by `make` (channel, origin, packet) from A to B over `p`;
/// checks B stored each packet exactly as offered; returns the wire bytes per packet.
fn stream(count: u64, mut p: Pair, make: impl Fn(u64) -> (&'static str, u32, Vec<u8>)) -> f64 {
    let mut sent = Vec::new();
    for key in 1..=count {
        let (channel, origin, packet) = make(key);
        sent.push(packet.clone());
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
    let mut stored: Vec<Vec<u8>> = p.b.store.iter().map(|i| i.packet.clone()).collect();
    stored.sort();
    sent.sort();
    assert!(stored == sent, "B holds every packet byte for byte");
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

/// A 60-byte text from one of 256 senders, as [`crate::Packet::encode`] writes it (85 bytes):
/// what the thin-link benchmark queues.
fn text(key: u64) -> (&'static str, u32, Vec<u8>) {
    let mut packet = crate::Packet::text_message(NodeId::BROADCAST, 0, &format!("{key:060}"));
    let meta = packet.meta_mut();
    meta.from = 0x1000_0000 + (key % 256) as u32;
    meta.id = 0x5a00_0000 | (key / 256) as u32;
    (meta.hop_limit, meta.hop_start) = (3, 3);
    ("LongFast", 0x1000, packet.encode())
}

#[test]
fn a_steady_stream_of_60_byte_texts_costs_at_most_80_bytes_each_with_compact_packets() {
    let compact = stream(20_000, Pair::new(), text);
    let v1 = SessionConfig {
        versions: vec![1],
        ..config()
    };
    let raw = stream(20_000, Pair::with(v1, config()), text);
    println!("bytes on the wire per 60-byte text: {compact:.1} compact, {raw:.1} as heard");
    assert!(compact <= 80.0, "{compact}");
    // 85-byte packets as heard; 70 compacted (plus the 256 senders' definitions).
    assert!(raw - compact > 14.0, "{raw} -> {compact}");
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
