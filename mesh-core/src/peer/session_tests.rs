//! Sessions driven against each other: handshake, data, batching, acknowledgements, windows
//! and resuming after a dropped connection.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::frame::{self, CloseCode, Data, Frame, Item};
use super::pair::{Pair, acks, config, data_frames, frames, item, key_of, ms};
use super::send::OfferError;
use super::session::{CloseReason, ProtocolError, SessionConfig, State};
use crate::node::NodeId;

#[test]
fn the_handshake_tells_each_side_who_the_other_is() {
    let mut p = Pair::new();
    p.pump();
    assert_eq!(
        p.a.peer,
        Some((NodeId::new(0xbbbb_0002), vec!["LongFast".into()], 2))
    );
    assert_eq!(
        p.b.peer,
        Some((
            NodeId::new(0xaaaa_0001),
            vec!["LongFast".into(), "PKI".into()],
            2
        ))
    );
    assert!(p.a.session.is_open() && p.b.session.is_open());
    // The whole handshake is one small frame each way.
    assert_eq!(p.a.transmits.len(), 1);
    assert!(p.a.transmits[0].len() < 64, "{}", p.a.transmits[0].len());
}

#[test]
fn the_highest_common_version_is_chosen() {
    let a = SessionConfig {
        versions: vec![1, 2, 5],
        ..config()
    };
    let b = SessionConfig {
        versions: vec![7, 2, 1],
        ..config()
    };
    let mut p = Pair::with(a, b);
    p.pump();
    assert_eq!(p.a.peer.as_ref().map(|p| p.2), Some(2));
    assert_eq!(p.b.peer.as_ref().map(|p| p.2), Some(2));
}

#[test]
fn no_common_version_closes_both_sides_with_a_clear_reason() {
    let b = SessionConfig {
        versions: vec![3, 4],
        ..config()
    };
    let mut p = Pair::with(config(), b);
    p.pump();
    assert_eq!(
        p.a.closed,
        [CloseReason::Version {
            ours: vec![1, 2],
            theirs: vec![3, 4]
        }]
    );
    assert_eq!(
        p.b.closed,
        [CloseReason::Version {
            ours: vec![3, 4],
            theirs: vec![1, 2]
        }]
    );
    assert!(
        p.a.closed[0]
            .to_string()
            .contains("no common protocol version")
    );
    let close = frames(p.a.transmits.last().unwrap());
    assert!(
        matches!(&close[..], [Frame::Close { code: CloseCode::Version, text }] if text.contains("[3, 4]")),
        "{close:?}"
    );
    assert!(p.a.peer.is_none());
}

#[test]
fn items_cross_both_ways_with_channel_origin_and_hops() {
    let mut p = Pair::new();
    p.a.queue(1..=20);
    p.b.queue(101..=110);
    p.run_for(ms(50));
    let got: Vec<_> = p.b.store.iter().map(|i| key_of(&i.packet)).collect();
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    for i in &p.b.store {
        let want = item(key_of(&i.packet));
        assert_eq!(&*i.channel, want.channel);
        assert_eq!(i.origin, want.origin);
        assert_eq!(i.hops, want.hops);
        assert_eq!(i.packet, want.packet);
    }
    assert_eq!(p.a.store.len(), 10);
    assert_eq!(p.a.acknowledged, (1..=20).collect::<Vec<_>>());
    assert_eq!(p.b.acknowledged, (101..=110).collect::<Vec<_>>());
    assert!(p.a.outbox.is_empty() && p.b.outbox.is_empty());
}

#[test]
fn names_cross_once_per_session() {
    let mut p = Pair::new();
    p.a.queue(1..=300);
    p.run_for(ms(50));
    let defines =
        p.a.transmits
            .iter()
            .flat_map(|t| frames(t))
            .filter(|f| matches!(f, Frame::Define(_)))
            .count();
    // "MediumFast" (LongFast was in the Hello) and three origins.
    assert_eq!(defines, 4);
    assert_eq!(p.b.store.len(), 300);
}

#[test]
fn items_offered_within_the_linger_share_one_frame() {
    let mut p = Pair::new();
    p.pump();
    p.a.auto_offer = false;
    p.a.queue(1..=50);
    for k in 1..=50 {
        p.a.session.offer(item(k), p.now).unwrap();
    }
    p.pump();
    assert!(
        p.b.store.is_empty(),
        "nothing goes out before the linger ends"
    );
    p.run_for(ms(2));
    let data = data_frames(&p.a.transmits);
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].items.len(), 50);
    assert_eq!(p.b.store.len(), 50);
}

#[test]
fn a_full_batch_goes_out_at_once_and_fits_a_tls_record() {
    let mut p = Pair::new();
    p.pump();
    p.a.auto_offer = false;
    p.a.queue(1..=600);
    for k in 1..=600 {
        p.a.session.offer(item(k), p.now).unwrap();
    }
    p.pump();
    let data = data_frames(&p.a.transmits);
    assert!(data.len() >= 2, "{}", data.len());
    for t in &p.a.transmits[1..] {
        for f in frames(t) {
            let mut b = Vec::new();
            frame::encode(&f, &mut b).unwrap();
            assert!(b.len() <= 16 * 1024, "{} bytes", b.len());
        }
    }
    // The full batches were sent without waiting; only the remainder lingers.
    assert_eq!(
        p.b.store.len(),
        data.iter().map(|d| d.items.len()).sum::<usize>()
    );
    p.run_for(ms(2));
    assert_eq!(p.b.store.len(), 600);
}

#[test]
fn nothing_is_acknowledged_before_the_receiver_commits() {
    let mut p = Pair::new();
    p.b.auto_commit = false;
    p.a.queue(1..=10);
    p.run_for(ms(100));
    assert_eq!(p.b.uncommitted.len(), 10);
    assert!(acks(&p.b.transmits).is_empty());
    assert!(p.a.acknowledged.is_empty());
    assert_eq!(p.a.session.in_flight(), 10);

    // Commit the first four: a single cumulative Ack after the ack delay.
    p.b.commit_first(4, p.now);
    p.pump();
    assert!(p.a.acknowledged.is_empty(), "acks are batched");
    p.run_for(ms(10));
    assert_eq!(acks(&p.b.transmits), [4]);
    assert_eq!(p.a.acknowledged, [1, 2, 3, 4]);
    p.b.commit_all(p.now);
    p.run_for(ms(10));
    assert_eq!(acks(&p.b.transmits), [4, 10]);
    assert_eq!(p.a.acknowledged, (1..=10).collect::<Vec<_>>());
}

#[test]
fn a_commit_beyond_what_was_delivered_acknowledges_only_what_was() {
    let mut p = Pair::new();
    p.b.auto_commit = false;
    p.a.queue(1..=3);
    p.run_for(ms(5));
    p.b.session.committed(1_000, p.now);
    p.run_for(ms(20));
    assert_eq!(acks(&p.b.transmits), [3]);
}

#[test]
fn many_committed_items_are_acknowledged_without_waiting() {
    let b = SessionConfig {
        ack_items: 8,
        ack_delay: Duration::from_secs(1),
        ..config()
    };
    let mut p = Pair::with(config(), b);
    p.a.queue(1..=7);
    p.run_for(ms(2));
    assert!(p.a.acknowledged.is_empty(), "seven wait for the ack delay");
    p.a.queue(8..=8);
    p.run_for(ms(2));
    assert_eq!(
        p.a.acknowledged.len(),
        8,
        "the eighth makes the Ack go at once"
    );
    p.a.queue(9..=9);
    p.run_for(ms(999));
    assert_eq!(p.a.acknowledged.len(), 8);
    p.run_for(ms(10));
    assert_eq!(p.a.acknowledged.len(), 9);
}

#[test]
fn the_window_limits_items_in_flight_until_the_receiver_commits() {
    let b = SessionConfig {
        window_items: 16,
        ..config()
    };
    let mut p = Pair::with(config(), b);
    p.b.auto_commit = false;
    p.a.queue(1..=100);
    p.run_for(ms(50));
    assert_eq!(p.a.session.in_flight(), 16);
    assert_eq!(p.a.session.room(), 0);
    assert_eq!(p.b.uncommitted.len(), 16);
    let refused = p.a.session.offer(item(1000), p.now);
    assert!(matches!(refused, Err(OfferError::Full(i)) if i.key == 1000));

    // A slow store commits a little at a time; the sender follows its pace.
    for round in 0..20 {
        p.b.commit_all(p.now);
        p.run_for(ms(20));
        assert!(p.a.session.in_flight() <= 16, "round {round}");
    }
    assert_eq!(p.b.store.len(), 100);
    assert!(p.a.outbox.is_empty());
}

#[test]
fn the_byte_window_counts_packet_bytes() {
    let b = SessionConfig {
        window_bytes: 4096,
        ..config()
    };
    let mut p = Pair::with(config(), b);
    p.b.auto_commit = false;
    p.a.queue(1..=1000);
    p.run_for(ms(50));
    // 60-byte packets: 68 fit 4,096 bytes.
    assert_eq!(p.a.session.in_flight(), 68);
    p.b.commit_all(p.now);
    p.run_for(ms(50));
    assert_eq!(p.b.uncommitted.len(), 68);
}

#[test]
fn a_sender_that_ignores_the_window_is_closed_naming_it() {
    let b = SessionConfig {
        window_items: 2,
        ..config()
    };
    let mut p = Pair::with(config(), b);
    p.pump();
    let mut bytes = Vec::new();
    let items = (0..3)
        .map(|k| Item {
            channel: 0,
            origin: 0,
            hops: 0,
            packet: item(k).packet,
            compact: false,
        })
        .collect();
    frame::encode(&Frame::Data(Data { first: 1, items }), &mut bytes).unwrap();
    p.b.session.on_bytes(&bytes, p.now);
    p.pump();
    assert!(matches!(
        p.b.session.state(),
        State::Closing(c) if matches!(c.reason(), CloseReason::Protocol(ProtocolError::WindowExceeded { items: 3, .. }))
    ));
    assert!(
        p.b.uncommitted.is_empty(),
        "nothing from a bad frame is delivered"
    );
    assert!(matches!(
        &p.a.closed[..],
        [CloseReason::Remote { code: CloseCode::Protocol, text }] if text.contains("window exceeded")
    ));
}

#[test]
fn a_reconnect_resends_only_what_was_not_acknowledged() {
    let mut p = Pair::new();
    p.b.auto_commit = false;
    p.a.queue(1..=40);
    p.run_for(ms(20));
    assert_eq!(p.b.uncommitted.len(), 40);
    // B commits 25 and acknowledges them...
    p.b.commit_first(25, p.now);
    p.run_for(ms(20));
    assert_eq!(p.a.acknowledged, (1..=25).collect::<Vec<_>>());
    // ...then commits 5 more, and their Ack dies with the link.
    p.blackhole_b = true;
    p.b.commit_first(5, p.now);
    p.run_for(ms(20));
    assert_eq!(p.a.acknowledged.len(), 25);
    p.blackhole_b = false;
    p.b.auto_commit = true;
    p.reconnect();
    p.run_for(ms(50));

    assert_eq!(
        p.a.offered_after(40),
        (26..=40).collect::<Vec<_>>(),
        "acknowledged items are not offered again"
    );
    let stored: Vec<u64> = p.b.store.iter().map(|i| key_of(&i.packet)).collect();
    assert_eq!(stored, (1..=40).collect::<Vec<_>>());
    assert_eq!(
        p.b.repeats, 5,
        "the five whose Ack was lost come again and are dropped"
    );
    assert!(p.a.outbox.is_empty());
    p.a.assert_nothing_acknowledged_was_offered_again();
}

#[test]
fn random_drops_and_random_splits_lose_nothing_and_resend_nothing_acknowledged() {
    for seed in 0..40 {
        let mut p = Pair::new();
        p.split_randomly(seed);
        let mut rng = SmallRng::seed_from_u64(seed);
        p.a.queue(1..=2000);
        p.b.queue(5001..=5300);
        for _ in 0..6 {
            for _ in 0..rng.random_range(0..6) {
                p.run_for(ms(1));
            }
            p.reconnect();
        }
        p.run_for(ms(500));
        for (side, range) in [(&p.b, 1..=2000u64), (&p.a, 5001..=5300)] {
            // Every item once, in the order offered, whatever the drops did.
            let stored: Vec<u64> = side.store.iter().map(|i| key_of(&i.packet)).collect();
            assert_eq!(stored, range.collect::<Vec<_>>(), "seed {seed}");
        }
        for side in [&p.a, &p.b] {
            assert!(side.outbox.is_empty(), "seed {seed}");
            side.assert_nothing_acknowledged_was_offered_again();
            assert_eq!(
                side.closed.len(),
                6,
                "seed {seed}: one Closed per dropped session"
            );
        }
    }
}
