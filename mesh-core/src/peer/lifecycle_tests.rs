//! Sessions driven against each other over time and through failures: keepalive, silence,
//! close, and peers that break the protocol.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::frame::{self, CloseCode, Data, EncodeError, Frame, FrameError, Item};
use super::pair::{Pair, config, frames, item, ms};
use super::send::OfferError;
use super::session::{CloseReason, Event, ProtocolError, Session, SessionConfig, State};
use crate::node::NodeId;

#[test]
fn keepalives_keep_an_idle_link_open() {
    let mut p = Pair::new();
    p.run_for(Duration::from_secs(600));
    assert!(p.a.session.is_open() && p.b.session.is_open());
    let keepalives =
        p.a.transmits
            .iter()
            .flat_map(|t| frames(t))
            .filter(|f| *f == Frame::Keepalive)
            .count();
    assert_eq!(keepalives, 40, "one per 15 s");
}

#[test]
fn a_silent_peer_is_given_up_after_the_timeout() {
    let mut p = Pair::new();
    p.pump();
    p.blackhole_b = true;
    p.run_for(Duration::from_secs(44));
    assert!(p.a.closed.is_empty());
    p.run_for(Duration::from_secs(2));
    assert!(matches!(&p.a.closed[..], [CloseReason::Timeout(d)] if *d >= Duration::from_secs(45)));
    assert!(p.a.session.is_closed());
    assert!(matches!(
        &p.b.closed[..],
        [CloseReason::Remote {
            code: CloseCode::Timeout,
            ..
        }]
    ));
}

#[test]
fn a_peer_that_never_says_hello_times_out() {
    let now = std::time::Instant::now();
    let mut s = Session::new(NodeId::new(1), vec![], config(), now).unwrap();
    let _ = s.drain_events();
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(45)));
    s.tick(now + Duration::from_secs(45));
    let events = s.drain_events();
    assert!(matches!(
        events.last(),
        Some(Event::Closed(CloseReason::Timeout(_)))
    ));
}

#[test]
fn the_keepalive_adapts_to_a_peer_that_gives_up_sooner() {
    let b = SessionConfig {
        dead_after: Duration::from_secs(6),
        ..config()
    };
    let mut p = Pair::with(config(), b);
    p.run_for(Duration::from_secs(60));
    assert!(p.b.session.is_open(), "A keeps B's 6 s silence budget");
    let keepalives =
        p.a.transmits
            .iter()
            .flat_map(|t| frames(t))
            .filter(|f| *f == Frame::Keepalive)
            .count();
    assert_eq!(keepalives, 30);
}

#[test]
fn a_close_is_reported_once_on_both_sides_and_late_acks_still_count() {
    let mut p = Pair::new();
    p.b.auto_commit = false;
    p.a.queue(1..=5);
    p.run_for(ms(5));
    // B commits, then A closes before B's delayed Ack went out: B's Close handling acks first.
    p.b.commit_all(p.now);
    p.a.session.close(CloseCode::Normal, "shutting down", p.now);
    p.pump();
    assert_eq!(p.a.acknowledged, [1, 2, 3, 4, 5]);
    assert!(matches!(
        &p.b.closed[..],
        [CloseReason::Remote { code: CloseCode::Normal, text }] if text == "shutting down"
    ));
    assert!(p.a.closed.is_empty(), "A waits for the peer to hang up");
    p.a.session.on_eof();
    p.pump();
    assert!(matches!(
        &p.a.closed[..],
        [CloseReason::Local {
            code: CloseCode::Normal,
            ..
        }]
    ));
    p.a.session.on_eof();
    p.a.session.tick(p.now + Duration::from_secs(10));
    p.pump();
    assert_eq!(p.a.closed.len(), 1);
}

#[test]
fn a_closing_session_gives_up_waiting_after_the_linger() {
    let mut p = Pair::new();
    p.pump();
    p.blackhole_b = true;
    p.a.session
        .close(CloseCode::Replaced, "kept the other connection", p.now);
    p.run_for(ms(1999));
    assert!(p.a.closed.is_empty());
    p.run_for(ms(1));
    assert!(matches!(
        &p.a.closed[..],
        [CloseReason::Local {
            code: CloseCode::Replaced,
            ..
        }]
    ));
    assert_eq!(
        p.a.session.offer(item(1), p.now),
        Err(OfferError::NotOpen(item(1)))
    );
}

#[test]
fn data_before_hello_is_a_protocol_error_naming_it() {
    let now = std::time::Instant::now();
    let mut s = Session::new(NodeId::new(1), vec![], config(), now).unwrap();
    let mut bytes = Vec::new();
    frame::encode(&Frame::Ack { up_to: 3 }, &mut bytes).unwrap();
    s.on_bytes(&bytes, now);
    let events = s.drain_events();
    let reason = match events.last() {
        Some(Event::Closed(r)) => r.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(reason, "protocol error: Ack frame before Hello");
}

#[test]
fn garbage_closes_the_session_naming_the_field() {
    let mut p = Pair::new();
    p.pump();
    p.b.session.on_bytes(&[0x03, 0x03, 0x01, 0x80, 0x00], p.now);
    p.pump();
    let State::Closing(c) = p.b.session.state() else {
        panic!("{:?}", p.b.session.state())
    };
    assert_eq!(
        c.reason(),
        &CloseReason::Protocol(ProtocolError::Frame(FrameError::Invalid {
            what: "item head",
            at: 3
        }))
    );
    assert!(matches!(
        &p.a.closed[..],
        [CloseReason::Remote { code: CloseCode::Protocol, text }] if text == "protocol error: invalid item head at byte 3"
    ));
}

#[test]
fn acks_for_unsent_items_and_undefined_indexes_close_the_session() {
    let cases: [(Frame, &str); 4] = [
        (Frame::Ack { up_to: 1 }, "ack up to 1 but only 0 sent"),
        (
            Frame::Data(Data {
                first: 1,
                items: vec![Item {
                    channel: 9,
                    origin: 0,
                    hops: 0,
                    packet: vec![1],
                    compact: false,
                }],
            }),
            "item with undefined channel index 9",
        ),
        (
            Frame::Data(Data {
                first: 2,
                items: vec![Item {
                    channel: 0,
                    origin: 0,
                    hops: 0,
                    packet: vec![1],
                    compact: false,
                }],
            }),
            "data starting at 2, expected 1",
        ),
        (
            Frame::Define(frame::Definition::Origin {
                index: 3,
                gateway: NodeId::new(5),
            }),
            "origin definition 3 out of order (expected 1)",
        ),
    ];
    for (frame, text) in cases {
        let mut p = Pair::new();
        p.pump();
        p.b.session.on_frame(frame, p.now);
        p.pump();
        assert!(
            matches!(&p.a.closed[..], [CloseReason::Remote { text: t, .. }] if t.ends_with(text)),
            "{:?} vs {text}",
            p.a.closed
        );
    }
}

#[test]
fn unknown_frames_from_a_newer_version_are_skipped() {
    let mut p = Pair::new();
    p.pump();
    p.b.session.on_bytes(&[0x7e, 3, 1, 2, 3, 0x05, 0], p.now);
    p.a.queue(1..=3);
    p.run_for(ms(20));
    assert!(p.b.session.is_open());
    assert_eq!(p.b.store.len(), 3);
}

#[test]
fn a_hello_that_cannot_be_encoded_is_refused_up_front() {
    let now = std::time::Instant::now();
    let make = |channels: Vec<String>, versions: Vec<u16>| {
        let config = SessionConfig {
            versions,
            ..config()
        };
        Session::new(NodeId::new(1), channels, config, now).map(|_| ())
    };
    let many = (0..257).map(|i| format!("c{i}")).collect();
    assert_eq!(make(many, vec![1]), Err(EncodeError { what: "channels" }));
    assert_eq!(
        make(vec!["x".repeat(65)], vec![1]),
        Err(EncodeError {
            what: "channel name"
        })
    );
    assert_eq!(make(vec![], vec![]), Err(EncodeError { what: "versions" }));
}

#[test]
fn arbitrary_bytes_after_the_handshake_never_panic_a_session() {
    // A real stream from A to B (definitions, data, acks), to mutate.
    let mut p = Pair::new();
    p.a.queue(1..=60);
    p.b.queue(101..=110);
    p.run_for(ms(50));
    let valid: Vec<u8> = p.a.transmits[1..].concat();
    assert!(valid.len() > 1000);

    let mut rng = SmallRng::seed_from_u64(11);
    for round in 0..1500 {
        let mut p = Pair::new();
        p.pump();
        let mut bytes = if round % 5 == 0 {
            (0..rng.random_range(1..200))
                .map(|_| rng.random())
                .collect()
        } else {
            valid.clone()
        };
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len().min(64));
            p.b.session.on_bytes(&rest[..n], p.now);
            rest = &rest[n..];
        }
        p.run_for(ms(5));
        assert!(p.b.closed.len() <= 1, "round {round}");
        // Each item takes at least three bytes (head, length, one byte of packet).
        assert!(p.b.store.len() <= bytes.len() / 3, "round {round}");
    }
}
