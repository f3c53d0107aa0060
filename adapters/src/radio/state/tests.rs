//! The session's decisions on virtual time: handshake, flow control, ACKs, relays, uplink.

mod relays;

use super::*;
use mesh_core::proto::routing;

const ME: u32 = 0x0a0b0c0d;

fn from_radio(v: from_radio::PayloadVariant) -> Bytes {
    proto::FromRadio {
        id: 0,
        payload_variant: Some(v),
    }
    .encode_to_vec()
    .into()
}

fn to_radio(bytes: &Bytes) -> proto::ToRadio {
    proto::ToRadio::decode(bytes.clone()).unwrap()
}

fn writes(out: &[Output]) -> Vec<proto::ToRadio> {
    out.iter()
        .filter_map(|o| match o {
            Output::Write(b) => Some(to_radio(b)),
            _ => None,
        })
        .collect()
}

fn outcomes(out: &[Output]) -> Vec<(SendToken, DeliveryStatus)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Outcome { token, status } => Some((*token, status.clone())),
            _ => None,
        })
        .collect()
}

fn handshake_items() -> Vec<from_radio::PayloadVariant> {
    use from_radio::PayloadVariant as V;
    vec![
        V::MyInfo(proto::MyNodeInfo {
            my_node_num: ME,
            ..Default::default()
        }),
        V::NodeInfo(proto::NodeInfo {
            num: ME,
            user: Some(proto::User {
                id: "!0a0b0c0d".into(),
                long_name: "Hub".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        V::Channel(proto::Channel {
            index: 0,
            role: proto::channel::Role::Primary as i32,
            settings: Some(proto::ChannelSettings {
                psk: vec![1],
                ..Default::default()
            }),
        }),
        V::Config(proto::Config {
            payload_variant: Some(proto::config::PayloadVariant::Lora(
                proto::config::LoRaConfig {
                    use_preset: true,
                    ..Default::default()
                },
            )),
        }),
        V::NodeInfo(proto::NodeInfo {
            num: 0x11223344,
            ..Default::default()
        }),
    ]
}

/// A session that completed its handshake at `t0`, with the radio reporting free slots.
fn ready(t0: Instant) -> Session {
    let mut s = Session::new(SessionConfig::default());
    s.connected(42, t0);
    for item in handshake_items() {
        assert!(s.frame(from_radio(item), t0).is_empty());
    }
    let out = s.frame(
        from_radio(from_radio::PayloadVariant::ConfigCompleteId(42)),
        t0,
    );
    assert!(matches!(out[0], Output::Ready(_)));
    s.tick(t0);
    s.frame(queue_status(0, 16, 0), t0);
    s
}

fn queue_status(res: i32, free: u32, id: u32) -> Bytes {
    from_radio(from_radio::PayloadVariant::QueueStatus(
        proto::QueueStatus {
            res,
            free,
            maxlen: 16,
            mesh_packet_id: id,
        },
    ))
}

fn text(id: u32, want_ack: bool) -> Packet {
    let mut p = Packet::text_message(NodeId::BROADCAST, 0, "hello");
    p.meta_mut().id = id;
    p.meta_mut().want_ack = want_ack;
    p
}

fn routing_reply(request_id: u32, error: routing::Error) -> Bytes {
    let packet = Packet::from_data(
        proto::MeshPacket {
            from: ME,
            to: ME,
            id: 999,
            ..Default::default()
        },
        proto::Data {
            portnum: proto::PortNum::RoutingApp as i32,
            request_id,
            payload: proto::Routing {
                variant: Some(routing::Variant::ErrorReason(error as i32)),
            }
            .encode_to_vec(),
            ..Default::default()
        },
    );
    let mut body = Vec::new();
    wire::put_bytes_field(FROM_RADIO_PACKET, &packet.encode(), &mut body);
    body.into()
}

#[test]
fn connecting_wakes_the_radio_then_asks_for_its_config() {
    let mut s = Session::new(SessionConfig::default());
    let out = s.connected(42, Instant::now());
    assert!(
        matches!(&out[0], Output::WriteRaw(b) if b.len() == 32 && b.iter().all(|&x| x == 0xc3))
    );
    assert_eq!(
        writes(&out)[0].payload_variant,
        Some(to_radio::PayloadVariant::WantConfigId(42))
    );
}

#[test]
fn the_handshake_collects_identity_channels_and_node_db() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig::default());
    s.connected(42, t0);
    for item in handshake_items() {
        s.frame(from_radio(item), t0);
    }
    let mismatched = s.frame(
        from_radio(from_radio::PayloadVariant::ConfigCompleteId(41)),
        t0,
    );
    assert!(mismatched.is_empty() && !s.is_ready());
    let out = s.frame(
        from_radio(from_radio::PayloadVariant::ConfigCompleteId(42)),
        t0,
    );
    let Output::Ready(info) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(info.node_id(), Some(NodeId::new(ME)));
    assert_eq!(info.user().unwrap().long_name, "Hub");
    assert_eq!(info.nodes.len(), 1);
    assert_eq!(info.channel_name(&info.channels[0]), "LongFast");
    // A heartbeat goes with completion: its answer tells how many TX slots are free.
    assert!(matches!(
        writes(&out)[..],
        [proto::ToRadio {
            payload_variant: Some(to_radio::PayloadVariant::Heartbeat(_))
        }]
    ));
}

#[test]
fn a_handshake_that_stalls_names_what_is_missing() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig::default());
    s.connected(42, t0);
    s.frame(from_radio(handshake_items().remove(0)), t0);
    assert!(s.tick(t0 + Duration::from_secs(29)).is_empty());
    let out = s.tick(t0 + Duration::from_secs(30));
    let Output::Close(err) = &out[0] else {
        panic!("{out:?}")
    };
    let text = err.to_string();
    assert!(text.contains("node_info for the radio itself"), "{text}");
    assert!(text.contains("config_complete_id"), "{text}");
    assert!(!text.contains("my_info"), "{text}");
}

#[test]
fn completing_without_identity_closes_the_link() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig::default());
    s.connected(42, t0);
    let out = s.frame(
        from_radio(from_radio::PayloadVariant::ConfigCompleteId(42)),
        t0,
    );
    assert!(matches!(
        &out[0],
        Output::Close(SessionError::HandshakeIncomplete { .. })
    ));
}

#[test]
fn a_packet_without_ack_is_delivered_when_the_radio_queues_it() {
    let t0 = Instant::now();
    let mut s = ready(t0);
    let out = s.submit(7, text(100, false), t0);
    assert!(matches!(
        writes(&out)[0].payload_variant,
        Some(to_radio::PayloadVariant::Packet(_))
    ));
    let out = s.frame(queue_status(0, 15, 100), t0);
    assert_eq!(outcomes(&out), vec![(7, DeliveryStatus::Delivered)]);
}

#[test]
fn a_want_ack_packet_waits_for_the_mesh_ack() {
    let t0 = Instant::now();
    let mut s = ready(t0);
    s.submit(7, text(100, true), t0);
    assert!(outcomes(&s.frame(queue_status(0, 15, 100), t0)).is_empty());
    let out = s.frame(routing_reply(100, routing::Error::None), t0);
    assert_eq!(outcomes(&out), vec![(7, DeliveryStatus::Delivered)]);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Packet(_))),
        "ACK consumed"
    );
}

#[test]
fn a_nak_is_reported_with_its_reason() {
    let t0 = Instant::now();
    let mut s = ready(t0);
    s.submit(7, text(100, true), t0);
    s.frame(queue_status(0, 15, 100), t0);
    let out = s.frame(routing_reply(100, routing::Error::MaxRetransmit), t0);
    let (_, status) = &outcomes(&out)[0];
    assert!(
        matches!(status, DeliveryStatus::Failed { reason } if reason.contains("MAX_RETRANSMIT"))
    );
    s.submit(8, text(101, true), t0 + Duration::from_secs(3));
    s.frame(queue_status(0, 15, 101), t0);
    let out = s.frame(routing_reply(101, routing::Error::TooLarge), t0);
    assert!(matches!(
        outcomes(&out)[0].1,
        DeliveryStatus::Rejected { .. }
    ));
}

#[test]
fn texts_are_paced_with_a_margin_over_the_radios_two_seconds_and_one_at_a_time() {
    let t0 = Instant::now();
    let mut s = ready(t0);
    assert_eq!(writes(&s.submit(1, text(1, false), t0)).len(), 1);
    assert!(
        writes(&s.submit(2, text(2, false), t0)).is_empty(),
        "one in flight"
    );
    assert!(
        writes(&s.frame(queue_status(0, 15, 1), t0)).is_empty(),
        "paced"
    );
    assert!(s.next_deadline().unwrap() <= t0 + Duration::from_millis(2400));
    assert!(
        writes(&s.tick(t0 + Duration::from_secs(2))).is_empty(),
        "exactly the radio's limit is too soon: it measures after the link's delays"
    );
    assert_eq!(writes(&s.tick(t0 + Duration::from_millis(2400))).len(), 1);
}

#[test]
fn nothing_is_sent_while_the_radio_queue_is_full() {
    let t0 = Instant::now();
    let mut s = ready(t0);
    s.frame(queue_status(0, 0, 0), t0);
    assert!(writes(&s.submit(1, text(1, false), t0)).is_empty());
    assert_eq!(writes(&s.frame(queue_status(0, 3, 0), t0)).len(), 1);
}

#[test]
fn an_unanswered_packet_times_out_into_a_retry() {
    let t0 = Instant::now();
    let mut s = ready(t0);
    s.submit(1, text(1, false), t0);
    let out = s.tick(t0 + Duration::from_secs(10));
    assert!(matches!(outcomes(&out)[0].1, DeliveryStatus::Failed { .. }));
}

#[test]
fn losing_the_link_turns_unconfirmed_packets_into_retries_and_keeps_unsent_ones() {
    let t0 = Instant::now();
    let mut s = ready(t0);
    s.submit(1, text(1, false), t0);
    s.submit(2, text(2, false), t0);
    let out = s.disconnected("socket closed");
    assert_eq!(outcomes(&out).len(), 1);
    assert_eq!(s.pending(), 1);
}

#[test]
fn a_reboot_restarts_the_handshake() {
    let t0 = Instant::now();
    let mut s = ready(t0);
    let out = s.frame(from_radio(from_radio::PayloadVariant::Rebooted(true)), t0);
    assert!(matches!(out[0], Output::Rebooted));
    assert_eq!(
        writes(&out)[0].payload_variant,
        Some(to_radio::PayloadVariant::WantConfigId(43))
    );
    assert!(!s.is_ready());
}

#[test]
fn silence_after_a_heartbeat_closes_the_link() {
    let t0 = Instant::now();
    let mut s = ready(t0);
    let t1 = t0 + Duration::from_secs(300);
    assert_eq!(writes(&s.tick(t1)).len(), 1);
    let out = s.tick(t1 + Duration::from_secs(30));
    assert!(matches!(
        &out[0],
        Output::Close(SessionError::Silent { .. })
    ));
}

#[test]
fn garbage_frames_are_reported_not_fatal() {
    let t0 = Instant::now();
    let mut s = ready(t0);
    for junk in [&b"\xff\xff\xff"[..], b"\x12\x05\x01", b"\x12\x02\x22\x00"] {
        let out = s.frame(Bytes::copy_from_slice(junk), t0);
        assert!(
            matches!(&out[..], [Output::Undecodable(_)]),
            "{junk:?}: {out:?}"
        );
    }
    assert!(s.is_ready());
}

#[test]
fn special_nonces_are_never_used() {
    let mut s = Session::new(SessionConfig::default());
    let out = s.connected(69420, Instant::now());
    assert_ne!(
        writes(&out)[0].payload_variant,
        Some(to_radio::PayloadVariant::WantConfigId(69420))
    );
}
