//! Relays in through the radio's MQTT client proxy, its uplink out, and the flow control that
//! keeps a backlog of relays moving.

use super::*;

fn with_proxy(items: &mut [from_radio::PayloadVariant]) {
    for item in items.iter_mut() {
        if let from_radio::PayloadVariant::Channel(c) = item {
            c.settings.as_mut().unwrap().downlink_enabled = true;
        }
    }
}

fn ready_for_relay(t0: Instant, proxy: bool) -> Session {
    let mut s = handshaken_for_relay(t0, proxy);
    // The status the firmware sends by itself once after boot.
    s.frame(queue_status(0, 16, 0), t0);
    s
}

/// Connected, handshake done and the first heartbeat answered, with the radio set up for relays
/// when `proxy`.
fn handshaken_for_relay(t0: Instant, proxy: bool) -> Session {
    let mut s = Session::new(SessionConfig::default());
    s.connected(42, t0);
    let mut items = handshake_items();
    if proxy {
        with_proxy(&mut items);
        items.push(from_radio::PayloadVariant::ModuleConfig(
            proto::ModuleConfig {
                payload_variant: Some(proto::module_config::PayloadVariant::Mqtt(
                    proto::module_config::MqttConfig {
                        enabled: true,
                        proxy_to_client_enabled: true,
                        ..Default::default()
                    },
                )),
            },
        ));
    }
    for item in items {
        s.frame(from_radio(item), t0);
    }
    s.frame(
        from_radio(from_radio::PayloadVariant::ConfigCompleteId(42)),
        t0,
    );
    s.tick(t0);
    s.frame(queue_status(0, 16, 0), t0);
    s
}

fn relayed(from: u32, id: u32) -> Packet {
    let mut p = text(id, false);
    p.meta_mut().from = from;
    p.encrypt("LongFast", &mesh_core::ChannelKey::from_psk(&[1]))
}

fn received(packet: &Packet) -> Bytes {
    let mut body = Vec::new();
    let key = mesh_core::ChannelKey::from_psk(&[1]);
    wire::put_bytes_field(
        FROM_RADIO_PACKET,
        &packet.decrypt(&key).unwrap().encode(),
        &mut body,
    );
    body.into()
}

#[test]
fn a_relayed_packet_enters_as_mqtt_downlink_and_keeps_its_sender_and_id() {
    let t0 = Instant::now();
    let mut s = ready_for_relay(t0, true);
    let p = relayed(0x1111, 500);
    let gw = NodeId::new(0xa7c4_0001);
    let out = s.relay(9, p.clone(), "LongFast", gw, 0, t0);
    let Some(to_radio::PayloadVariant::MqttClientProxyMessage(m)) =
        writes(&out)[0].payload_variant.clone()
    else {
        panic!("{out:?}")
    };
    assert_eq!(m.topic, "msh/2/e/LongFast/!a7c40001");
    let Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(env)) = m.payload_variant
    else {
        panic!()
    };
    let env = proto::ServiceEnvelope::decode(&env[..]).unwrap();
    assert_eq!(env.channel_id, "LongFast");
    assert_eq!(env.gateway_id, "!a7c40001");
    let inner = env.packet.unwrap();
    assert_eq!((inner.from, inner.id, inner.hop_limit), (0x1111, 500, 1));
    // The answer to the heartbeat after it confirms it; the radio handing the broadcast
    // back as received is recognised as our own relay.
    let out = s.frame(queue_status(0, 16, 0), t0);
    assert_eq!(outcomes(&out), vec![(9, DeliveryStatus::Delivered)]);
    let out = s.frame(received(&p), t0);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_pki_direct_message_enters_on_the_pki_topic_as_it_is() {
    let t0 = Instant::now();
    let mut s = ready_for_relay(t0, true);
    // Opaque to the gateway: ciphertext only its recipient reads, channel 0.
    let mut p = relayed(0x1111, 501);
    p.meta_mut().to = 0x4444;
    p.meta_mut().channel = 0;
    let out = s.relay(10, p.clone(), "PKI", NodeId::new(0xa7c4_0001), 0, t0);
    let Some(to_radio::PayloadVariant::MqttClientProxyMessage(m)) =
        writes(&out)[0].payload_variant.clone()
    else {
        panic!("{out:?}")
    };
    assert_eq!(m.topic, "msh/2/e/PKI/!a7c40001");
    let Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(env)) = m.payload_variant
    else {
        panic!()
    };
    let env = proto::ServiceEnvelope::decode(&env[..]).unwrap();
    assert_eq!(env.channel_id, "PKI");
    let inner = env.packet.unwrap();
    assert_eq!((inner.from, inner.to, inner.channel), (0x1111, 0x4444, 0));

    // Without downlink on any channel the radio takes no PKI either: the row waits.
    let mut s = ready_for_relay(t0, false);
    let out = s.relay(11, p, "PKI", NodeId::new(0xa7c4_0001), 0, t0);
    assert!(
        matches!(
            outcomes(&out).as_slice(),
            [(11, DeliveryStatus::Unreachable { .. })]
        ),
        "{out:?}"
    );
}

#[test]
fn what_the_radio_publishes_on_its_uplink_comes_out_encrypted_with_its_channel() {
    let t0 = Instant::now();
    let mut s = ready_for_relay(t0, true);
    let mut dm = text(700, false);
    dm.meta_mut().from = 0x1111;
    dm.meta_mut().to = 0x4444;
    let dm = dm.encrypt("LongFast", &mesh_core::ChannelKey::from_psk(&[1]));
    let mut env = Vec::new();
    wire::put_bytes_field(1, &dm.encode(), &mut env);
    wire::put_bytes_field(2, b"LongFast", &mut env);
    wire::put_bytes_field(3, b"!0a0b0c0d", &mut env);
    let msg = |topic: &str, env: Vec<u8>| {
        from_radio(from_radio::PayloadVariant::MqttClientProxyMessage(
            proto::MqttClientProxyMessage {
                topic: topic.into(),
                retained: false,
                payload_variant: Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(env)),
            },
        ))
    };
    let out = s.frame(msg("msh/2/e/LongFast/!0a0b0c0d", env.clone()), t0);
    let [Output::Uplink { packet, channel }] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!((packet.from().get(), packet.id().get()), (0x1111, 700));
    assert_eq!(channel, "LongFast");
    assert!(
        s.frame(msg("msh/2/json/LongFast/!0a0b0c0d", env), t0)
            .is_empty()
    );
}

#[test]
fn a_relay_encrypted_with_another_key_than_the_radios_is_rejected() {
    let t0 = Instant::now();
    let mut s = ready_for_relay(t0, true);
    let mut p = text(600, false);
    p.meta_mut().from = 0x1111;
    let p = p.encrypt("LongFast", &mesh_core::ChannelKey::from_psk(&[5]));
    let out = s.relay(9, p, "LongFast", NodeId::new(1), 0, t0);
    assert!(
        matches!(&outcomes(&out)[0].1, DeliveryStatus::Rejected { reason } if reason.contains("key"))
    );
}

#[test]
fn a_relayed_direct_message_is_confirmed_by_the_heartbeat_after_it() {
    let t0 = Instant::now();
    let mut s = ready_for_relay(t0, true);
    let mut dm = text(501, false);
    dm.meta_mut().from = 0x1111;
    dm.meta_mut().to = 0x4444;
    let dm = dm.encrypt("LongFast", &mesh_core::ChannelKey::from_psk(&[1]));
    let out = s.relay(9, dm, "LongFast", NodeId::new(1), 0, t0);
    let w = writes(&out);
    assert!(matches!(
        w[0].payload_variant,
        Some(to_radio::PayloadVariant::MqttClientProxyMessage(_))
    ));
    assert!(matches!(
        w[1].payload_variant,
        Some(to_radio::PayloadVariant::Heartbeat(_))
    ));
    let out = s.frame(queue_status(0, 16, 0), t0);
    assert_eq!(outcomes(&out), vec![(9, DeliveryStatus::Delivered)]);
}

#[test]
fn a_radio_without_the_client_proxy_refuses_relays_with_the_fix() {
    let t0 = Instant::now();
    let mut s = ready_for_relay(t0, false);
    let out = s.relay(9, relayed(0x1111, 500), "LongFast", NodeId::new(1), 0, t0);
    let (_, status) = &outcomes(&out)[0];
    assert!(
        matches!(status, DeliveryStatus::Unreachable { reason } if reason.contains("mqtt.proxy_to_client_enabled")),
        "{status:?}"
    );
}

#[test]
fn an_unconfirmed_relay_times_out_into_a_retry() {
    let t0 = Instant::now();
    let mut s = ready_for_relay(t0, true);
    s.relay(9, relayed(0x1111, 500), "LongFast", NodeId::new(1), 0, t0);
    let out = s.tick(t0 + Duration::from_secs(10));
    assert!(
        matches!(&outcomes(&out)[0].1, DeliveryStatus::Failed { reason } if reason.contains("relayed"))
    );
}

fn is_relay(w: &proto::ToRadio) -> bool {
    matches!(
        w.payload_variant,
        Some(to_radio::PayloadVariant::MqttClientProxyMessage(_))
    )
}

fn is_heartbeat(w: &proto::ToRadio) -> bool {
    matches!(
        w.payload_variant,
        Some(to_radio::PayloadVariant::Heartbeat(_))
    )
}

#[test]
fn a_full_radio_is_asked_again_after_the_poll_delay_not_the_heartbeat_interval() {
    let t0 = Instant::now();
    let mut s = ready_for_relay(t0, true);
    for i in 0..3 {
        s.relay(
            i,
            relayed(0x1111, 500 + i as u32),
            "LongFast",
            NodeId::new(1),
            0,
            t0,
        );
    }
    // The answer to the first relay's heartbeat says the queue is now full.
    let out = s.frame(queue_status(0, 0, 0), t0);
    assert_eq!(outcomes(&out), vec![(0, DeliveryStatus::Delivered)]);
    assert!(writes(&out).is_empty(), "nothing while the queue is full");
    let poll = t0 + SessionConfig::default().full_queue_poll;
    assert_eq!(s.next_deadline(), Some(poll));
    assert!(writes(&s.tick(poll - Duration::from_millis(1))).is_empty());
    let w = writes(&s.tick(poll));
    assert!(matches!(&w[..], [hb] if is_heartbeat(hb)), "{w:?}");
    assert_eq!(
        s.next_deadline(),
        Some(poll + SessionConfig::default().queue_status_timeout),
        "no second heartbeat while this one is unanswered; given up after the timeout"
    );
    // Its answer tells of room: the next relay goes at once.
    let w = writes(&s.frame(queue_status(0, 5, 0), poll));
    assert!(
        matches!(&w[..], [r, hb] if is_relay(r) && is_heartbeat(hb)),
        "{w:?}"
    );
}

#[test]
fn a_full_radio_with_nothing_waiting_is_left_alone() {
    let t0 = Instant::now();
    let mut s = ready_for_relay(t0, true);
    s.relay(1, relayed(0x1111, 500), "LongFast", NodeId::new(1), 0, t0);
    s.frame(queue_status(0, 0, 0), t0);
    let heartbeat_due = t0 + SessionConfig::default().heartbeat_interval;
    assert_eq!(s.next_deadline(), Some(heartbeat_due));
    assert!(writes(&s.tick(t0 + Duration::from_secs(60))).is_empty());
}

#[test]
fn after_a_packet_status_says_full_relays_wait_for_the_status_the_radio_sends_itself() {
    let t0 = Instant::now();
    let mut s = ready_for_relay(t0, true);
    s.submit(7, text(100, false), t0);
    let out = s.frame(queue_status(0, 0, 100), t0);
    assert_eq!(outcomes(&out), vec![(7, DeliveryStatus::Delivered)]);
    s.relay(8, relayed(0x1111, 500), "LongFast", NodeId::new(1), 0, t0);
    // The radio will say when it has room; it is not asked meanwhile, so its answer cannot
    // be mistaken for that status.
    let fallback = t0 + SessionConfig::default().queue_status_timeout;
    assert_eq!(s.next_deadline(), Some(fallback));
    assert!(writes(&s.tick(t0 + Duration::from_secs(5))).is_empty());
    let w = writes(&s.frame(queue_status(0, 1, 0), t0 + Duration::from_secs(6)));
    assert!(
        matches!(&w[..], [r, hb] if is_relay(r) && is_heartbeat(hb)),
        "{w:?}"
    );
    // A stray extra status confirms nothing; the answer to the relay's heartbeat does.
    let out = s.frame(queue_status(0, 1, 0), t0 + Duration::from_secs(6));
    assert_eq!(outcomes(&out), vec![(8, DeliveryStatus::Delivered)]);
    assert!(outcomes(&s.frame(queue_status(0, 1, 0), t0)).is_empty());
}

#[test]
fn after_connecting_relays_wait_a_grace_for_a_status_left_from_boot() {
    let t0 = Instant::now();
    let mut s = handshaken_for_relay(t0, true);
    let out = s.relay(9, relayed(0x1111, 500), "LongFast", NodeId::new(1), 0, t0);
    assert!(
        writes(&out).is_empty(),
        "a status from boot may still be on its way"
    );
    let grace = t0 + SessionConfig::default().queue_status_grace;
    assert_eq!(s.next_deadline(), Some(grace));
    let w = writes(&s.tick(grace));
    assert!(
        matches!(&w[..], [r, hb] if is_relay(r) && is_heartbeat(hb)),
        "{w:?}"
    );
}

#[test]
fn a_relay_is_built_under_the_radios_own_root() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig::default());
    s.connected(42, t0);
    let mut items = handshake_items();
    with_proxy(&mut items);
    items.push(from_radio::PayloadVariant::ModuleConfig(
        proto::ModuleConfig {
            payload_variant: Some(proto::module_config::PayloadVariant::Mqtt(
                proto::module_config::MqttConfig {
                    enabled: true,
                    proxy_to_client_enabled: true,
                    root: "msh/EU_868/FR".into(),
                    ..Default::default()
                },
            )),
        },
    ));
    for item in items {
        s.frame(from_radio(item), t0);
    }
    s.frame(
        from_radio(from_radio::PayloadVariant::ConfigCompleteId(42)),
        t0,
    );
    // The answer to the heartbeat sent at completion, then the one left from boot.
    s.frame(queue_status(0, 16, 0), t0);
    s.frame(queue_status(0, 16, 0), t0);
    let out = s.relay(
        9,
        relayed(0x1111, 500),
        "LongFast",
        NodeId::new(0xa7c4_0001),
        2,
        t0,
    );
    let Some(to_radio::PayloadVariant::MqttClientProxyMessage(m)) =
        writes(&out)[0].payload_variant.clone()
    else {
        panic!("{out:?}")
    };
    assert_eq!(m.topic, "msh/EU_868/FR/2/e/LongFast/!a7c40001");
    // Its uplink under that root is read; the same under another root is not a packet.
    let p = relayed(0x2222, 600);
    let env = mesh_core::Envelope::new(p, "LongFast", NodeId::new(ME)).encode();
    let uplink = |topic: &str| {
        from_radio(from_radio::PayloadVariant::MqttClientProxyMessage(
            proto::MqttClientProxyMessage {
                topic: topic.into(),
                retained: false,
                payload_variant: Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(
                    env.clone(),
                )),
            },
        ))
    };
    let out = s.frame(uplink("msh/EU_868/FR/2/e/LongFast/!0a0b0c0d"), t0);
    assert!(
        matches!(&out[..], [Output::Uplink { channel, .. }] if channel == "LongFast"),
        "{out:?}"
    );
    let out = s.frame(uplink("msh/2/e/LongFast/!0a0b0c0d"), t0);
    assert!(
        matches!(&out[..], [Output::Undecodable(e)] if e.contains("not \"msh/EU_868/FR\"")),
        "{out:?}"
    );
}

#[test]
fn no_second_heartbeat_goes_out_while_one_is_unanswered_and_a_lost_answer_is_given_up() {
    // The firmware keeps one "heartbeat received" flag: two heartbeats read together get one
    // answer, which would leave every later relay waiting for an answer that never comes.
    let t0 = Instant::now();
    let mut s = ready_for_relay(t0, true);
    let t1 = t0 + SessionConfig::default().heartbeat_interval;
    assert!(writes(&s.tick(t1)).iter().all(is_heartbeat));
    let out = s.relay(9, relayed(0x1111, 500), "LongFast", NodeId::new(1), 0, t1);
    assert!(
        writes(&out).is_empty(),
        "its heartbeat would be a second one"
    );
    // The radio talks (so the link is alive) but that answer never comes: given up.
    let timeout = SessionConfig::default().queue_status_timeout;
    s.frame(
        from_radio(from_radio::PayloadVariant::LogRecord(Default::default())),
        t1,
    );
    assert_eq!(s.next_deadline(), Some(t1 + timeout));
    let w = writes(&s.tick(t1 + timeout));
    assert!(
        matches!(&w[..], [r, hb] if is_relay(r) && is_heartbeat(hb)),
        "{w:?}"
    );
    let out = s.frame(queue_status(0, 15, 0), t1 + timeout);
    assert_eq!(outcomes(&out), vec![(9, DeliveryStatus::Delivered)]);
}
