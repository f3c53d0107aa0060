use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

fn bytes(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    encode(frame, &mut out).unwrap();
    out
}

fn hello() -> Frame {
    Frame::Hello(Hello {
        versions: vec![1, 2, 300],
        gateway: NodeId::new(0xa1b2_c3d4),
        window_items: 1024,
        window_bytes: 256 * 1024,
        dead_after_ms: 45_000,
        channels: vec!["LongFast".into(), "PKI".into(), "Café".into()],
    })
}

fn data() -> Frame {
    Frame::Data(Data {
        first: 1_000_000,
        items: vec![
            item(0, 0, 1, 60),
            item(0, 0, 2, 60),
            item(3, 0, 0, 200),
            item(3, 700, 15, 1),
            item(0, 700, 7, MAX_PACKET),
        ],
    })
}

fn item(channel: u32, origin: u32, hops: u8, len: usize) -> Item {
    Item {
        channel,
        origin,
        hops,
        packet: (0..len).map(|i| (i * 7 + channel as usize) as u8).collect(),
        compact: channel == 3,
    }
}

fn samples() -> Vec<Frame> {
    vec![
        hello(),
        Frame::Define(Definition::Channel {
            index: 255,
            name: "MediumSlow".into(),
        }),
        Frame::Define(Definition::Origin {
            index: 1023,
            gateway: NodeId::new(7),
        }),
        Frame::Define(Definition::Node {
            index: 4095,
            node: NodeId::new(0x1234_5678),
        }),
        data(),
        Frame::Ack { up_to: u64::MAX },
        Frame::Ack { up_to: 0 },
        Frame::Keepalive,
        Frame::Close {
            code: CloseCode::Protocol,
            text: "Ack beyond the last item sent".into(),
        },
        Frame::Close {
            code: CloseCode::Other(200),
            text: String::new(),
        },
    ]
}

fn invalid_what(buf: &[u8]) -> &'static str {
    match decode(buf) {
        Err(FrameError::Invalid { what, .. }) => what,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn every_frame_round_trips() {
    for frame in samples() {
        let b = bytes(&frame);
        assert_eq!(decode(&b), Ok((frame.clone(), b.len())), "{frame:?}");
    }
}

#[test]
fn frames_decode_one_after_another_from_one_buffer() {
    let mut stream = Vec::new();
    for frame in samples() {
        encode(&frame, &mut stream).unwrap();
    }
    let mut at = 0;
    let mut got = Vec::new();
    while at < stream.len() {
        let (frame, used) = decode(&stream[at..]).unwrap();
        got.push(frame);
        at += used;
    }
    assert_eq!(got, samples());
}

#[test]
fn every_prefix_of_a_valid_frame_is_incomplete() {
    for frame in samples() {
        let b = bytes(&frame);
        for cut in 0..b.len() {
            assert_eq!(
                decode(&b[..cut]),
                Err(FrameError::Incomplete),
                "{frame:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn a_keepalive_is_two_bytes_and_an_ack_a_handful() {
    assert_eq!(bytes(&Frame::Keepalive), [KEEPALIVE, 0]);
    assert_eq!(bytes(&Frame::Ack { up_to: 1_000_000 }).len(), 5);
}

#[test]
fn items_repeat_channel_and_origin_only_when_they_change() {
    let Frame::Data(d) = data() else {
        unreachable!()
    };
    let mut previous = None;
    let mut expected = 4 + varint_len(d.first);
    for it in &d.items {
        expected += item_size(it.channel, it.origin, it.packet.len(), previous);
        previous = Some((it.channel, it.origin));
    }
    let b = bytes(&Frame::Data(d));
    // The header is one byte shorter than the reserved four when the body is under 16 KiB.
    assert_eq!(b.len(), expected - 1);
    // A 60-byte packet on the channel and origin of the one before costs 62 bytes.
    assert_eq!(item_size(0, 0, 60, Some((0, 0))), 62);
}

#[test]
fn an_oversized_length_is_invalid_before_the_body_arrives() {
    let mut b = vec![DATA];
    put_varint(&mut b, MAX_FRAME as u64 + 1);
    assert_eq!(invalid_what(&b), "frame length");
    // A length varint longer than three bytes is refused too, whatever follows.
    assert_eq!(
        invalid_what(&[DATA, 0x80, 0x80, 0x80, 0x00]),
        "frame length"
    );
    let mut b = vec![DATA];
    put_varint(&mut b, MAX_FRAME as u64);
    assert_eq!(decode(&b), Err(FrameError::Incomplete));
}

#[test]
fn unknown_frame_types_are_skipped_by_their_length() {
    let mut b = vec![0x7e, 3, 1, 2, 3];
    encode(&Frame::Keepalive, &mut b).unwrap();
    assert_eq!(decode(&b), Ok((Frame::Unknown { kind: 0x7e }, 5)));
    assert_eq!(decode(&b[5..]), Ok((Frame::Keepalive, 2)));
}

#[test]
fn a_longer_hello_from_a_later_version_still_decodes() {
    let mut b = bytes(&hello());
    b[1] += 3;
    b.extend([9, 9, 9]);
    assert_eq!(decode(&b), Ok((hello(), b.len())));
}

#[test]
fn trailing_bytes_after_a_known_body_are_invalid() {
    let mut b = bytes(&Frame::Ack { up_to: 5 });
    b[1] += 1;
    b.push(0);
    assert_eq!(invalid_what(&b), "trailing bytes");
    assert_eq!(invalid_what(&[KEEPALIVE, 1, 0]), "trailing bytes");
}

#[test]
fn invalid_fields_are_named() {
    let body = |kind: u8, body: &[u8]| {
        let mut b = vec![kind, body.len() as u8];
        b.extend_from_slice(body);
        b
    };
    assert_eq!(invalid_what(&body(HELLO, &[0])), "version count");
    assert_eq!(invalid_what(&body(HELLO, &[17])), "version count");
    assert_eq!(
        invalid_what(&body(HELLO, &[1, 0xff, 0xff, 0x04])),
        "version"
    );
    assert_eq!(invalid_what(&body(HELLO, &[1, 1, 0, 0])), "gateway id");
    let mut h = vec![1, 1, 1, 2, 3, 4, 8, 8, 8, 0x81, 0x04];
    assert_eq!(invalid_what(&body(HELLO, &h)), "channel count");
    h.truncate(9);
    h.extend([1, 2, 0xff, 0xfe]);
    assert_eq!(invalid_what(&body(HELLO, &h)), "channel name");
    h.truncate(9);
    h.extend([1, 65]);
    h.extend([b'a'; 65]);
    assert_eq!(invalid_what(&body(HELLO, &h)), "channel name");
    assert_eq!(invalid_what(&body(DEFINE, &[3, 0])), "definition table");
    assert_eq!(invalid_what(&body(DEFINE, &[2, 0, 1, 2])), "node id");
    assert_eq!(
        invalid_what(&body(DEFINE, &[0, 0x80, 0x02, 1, b'a'])),
        "definition index"
    );
    assert_eq!(
        invalid_what(&body(DEFINE, &[1, 0x80, 0x08, 1, 2, 3, 4])),
        "definition index"
    );
    assert_eq!(
        invalid_what(&body(DEFINE, &[1, 0, 1, 2])),
        "origin gateway id"
    );
    assert_eq!(
        invalid_what(&body(DATA, &[1, 0x00, 1, 9])),
        "first item without channel and origin"
    );
    assert_eq!(
        invalid_what(&body(DATA, &[1, 0x80, 0, 0, 1, 9])),
        "item head"
    );
    assert_eq!(
        invalid_what(&body(DATA, &[1, 0x31, 0, 0, 0])),
        "packet length"
    );
    assert_eq!(
        invalid_what(&body(DATA, &[1, 0x31, 0, 0, 5, 1, 2])),
        "packet length"
    );
    assert_eq!(
        invalid_what(&body(DATA, &[1, 0x31, 0x80, 0x02, 0, 1, 9])),
        "item channel"
    );
    assert_eq!(
        invalid_what(&body(DATA, &[1, 0x31, 0, 0x80, 0x08, 1, 9])),
        "item origin"
    );
    let huge = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x31, 0, 0, 1, 9,
    ];
    assert_eq!(invalid_what(&body(DATA, &huge)), "first sequence number");
    let overlong = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
    assert_eq!(invalid_what(&body(ACK, &overlong)), "ack position");
    assert_eq!(invalid_what(&body(CLOSE, &[])), "close code");
    assert_eq!(invalid_what(&body(CLOSE, &[0, 3, b'a'])), "close reason");
}

#[test]
fn invalid_offsets_point_at_the_field() {
    // [DATA, len, first=1, head 0x31, channel 0, origin 0, packet length 0]
    let b = [DATA, 5, 1, 0x31, 0, 0, 0];
    assert_eq!(
        decode(&b),
        Err(FrameError::Invalid {
            what: "packet length",
            at: 6
        })
    );
    assert_eq!(
        decode(&[DATA, 0x80, 0x80, 0x80]),
        Err(FrameError::Invalid {
            what: "frame length",
            at: 1
        })
    );
}

#[test]
fn encoding_refuses_fields_above_their_bounds_and_leaves_the_buffer_alone() {
    let mut out = vec![42];
    let too_many_hops = Frame::Data(Data {
        first: 1,
        items: vec![item(0, 0, MAX_HOPS + 1, 10)],
    });
    assert_eq!(
        encode(&too_many_hops, &mut out),
        Err(EncodeError { what: "hop count" })
    );
    let too_big = Frame::Data(Data {
        first: 1,
        items: vec![item(0, 0, 0, MAX_PACKET + 1)],
    });
    assert!(encode(&too_big, &mut out).is_err());
    let frame_too_big = Frame::Data(Data {
        first: 1,
        items: (0..40).map(|_| item(0, 0, 0, MAX_PACKET)).collect(),
    });
    assert_eq!(
        encode(&frame_too_big, &mut out),
        Err(EncodeError { what: "frame size" })
    );
    let long_name = Frame::Define(Definition::Channel {
        index: 0,
        name: "x".repeat(MAX_NAME + 1),
    });
    assert!(encode(&long_name, &mut out).is_err());
    assert_eq!(out, [42]);
}

#[test]
fn a_long_close_reason_is_cut_on_a_character_boundary() {
    let text = "é".repeat(200);
    let b = bytes(&Frame::Close {
        code: CloseCode::Normal,
        text,
    });
    let Ok((Frame::Close { text, .. }, _)) = decode(&b) else {
        panic!("close did not decode")
    };
    assert_eq!(text, "é".repeat(127));
}

#[test]
fn arbitrary_bytes_never_panic_and_never_claim_more_than_they_have() {
    let mut rng = SmallRng::seed_from_u64(8);
    for _ in 0..20_000 {
        let len = rng.random_range(0..96);
        let mut b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if let Some(first) = b.first_mut() {
            *first = rng.random_range(0..8);
        }
        if b.len() > 1 && rng.random_bool(0.7) {
            b[1] = rng.random_range(0..len as u8);
        }
        if let Ok((_, used)) = decode(&b) {
            assert!(used <= b.len());
        }
    }
}

#[test]
fn mutated_valid_frames_never_panic() {
    let mut rng = SmallRng::seed_from_u64(9);
    let valid: Vec<Vec<u8>> = samples().iter().map(bytes).collect();
    for _ in 0..20_000 {
        let mut b = valid[rng.random_range(0..valid.len())].clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..b.len());
            b[at] = rng.random();
        }
        if let Ok((_, used)) = decode(&b) {
            assert!(used <= b.len());
        }
    }
}

#[test]
fn varint_lengths_match_the_encoding() {
    for v in [
        0,
        1,
        127,
        128,
        16_383,
        16_384,
        u64::from(u32::MAX),
        u64::MAX,
    ] {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        assert_eq!(out.len(), varint_len(v), "{v}");
    }
}

#[test]
fn a_stream_split_at_random_points_decodes_to_the_same_frames() {
    let mut stream = Vec::new();
    for frame in samples() {
        encode(&frame, &mut stream).unwrap();
    }
    let mut rng = SmallRng::seed_from_u64(10);
    for round in 0..500 {
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len().min(300));
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                match decode(&buf) {
                    Ok((frame, used)) => {
                        got.push(frame);
                        buf.drain(..used);
                    }
                    Err(FrameError::Incomplete) => break,
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
        }
        assert_eq!(got, samples(), "round {round}");
        assert!(buf.is_empty());
    }
}
