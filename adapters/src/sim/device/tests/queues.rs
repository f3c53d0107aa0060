//! Queue statuses the device sends by itself, the bounded queues kept for an absent client,
//! per-port pacing from the shared table, and downlink under the device's own topic root.

use super::*;
use mesh_core::Envelope;

fn client_packet_on(port: proto::PortNum, id: u32) -> proto::ToRadio {
    proto::ToRadio {
        payload_variant: Some(In::Packet(proto::MeshPacket {
            to: NodeId::BROADCAST.get(),
            id,
            payload_variant: Some(proto::mesh_packet::PayloadVariant::Decoded(proto::Data {
                portnum: port as i32,
                payload: vec![1, 2, 3],
                ..Default::default()
            })),
            ..Default::default()
        })),
    }
}

#[test]
fn room_after_a_full_status_is_announced_once_and_a_heartbeat_answer_arms_nothing() {
    let mut d = device();
    live(&mut d);
    // The status from boot: the firmware's last status starts at free = 0.
    let boot = d.service_loop(status(16));
    assert_eq!(queue_statuses(&boot)[0].mesh_packet_id, 0);
    assert!(d.service_loop(status(16)).is_empty(), "once");
    // A packet takes the last slot: its status says free = 0.
    let out = d.handle_to_radio(
        text_from_client(7, NodeId::BROADCAST, false),
        Duration::ZERO,
        status(1),
    );
    assert_eq!(queue_statuses(&out.to_client)[0].free, 0);
    assert!(d.service_loop(status(0)).is_empty(), "still full");
    let room = d.service_loop(status(3));
    assert_eq!(
        queue_statuses(&room),
        vec![proto::QueueStatus {
            res: 0,
            free: 3,
            maxlen: 16,
            mesh_packet_id: 0
        }]
    );
    assert!(d.service_loop(status(4)).is_empty(), "said once");
    // A heartbeat's answer saying "full" is not a status the firmware remembers.
    d.handle_to_radio(heartbeat(), Duration::ZERO, status(0));
    assert!(d.service_loop(status(16)).is_empty());
}

#[test]
fn the_status_from_boot_waits_for_the_first_client_with_the_other_statuses() {
    let mut d = device();
    assert!(
        d.service_loop(status(16)).is_empty(),
        "kept: nobody is configured"
    );
    let out = d.handle_to_radio(want_config(5), Duration::ZERO, status(16));
    let k = kinds(&out.to_client);
    assert_eq!(k[k.len() - 2..], ["complete", "queue_status"]);
}

#[test]
fn an_absent_client_finds_bounded_queues_in_firmware_order_and_the_drops_counted() {
    let mut d = device();
    d.service_loop(status(16));
    // 40 texts heard while nobody reads: each is published on the uplink and kept for the client.
    for id in 0..40 {
        let heard = heard_text(1000 + id, &format!("text {id}"));
        let on_air = d.profile.channels.encrypt(&heard, 0).unwrap();
        assert!(hear(&mut d, &on_air, Duration::ZERO).is_empty());
    }
    // Three client packets before any handshake: three statuses for a queue of two.
    for id in 0..3 {
        d.handle_to_radio(
            client_packet_on(proto::PortNum::PrivateApp, 50 + id),
            Duration::ZERO,
            status(16),
        );
    }
    let drops = d.to_phone_drops();
    assert_eq!(
        drops,
        ToPhoneDrops {
            packets: 40 - 32,
            queue_status: 4 - 2,
            mqtt_proxy: 40 - 8,
            notifications: 0,
        }
    );
    let out = d.handle_to_radio(want_config(9), Duration::ZERO, status(16));
    let complete = kinds(&out.to_client)
        .iter()
        .position(|k| *k == "complete")
        .unwrap();
    let after = &out.to_client[complete + 1..];
    let k = kinds(after);
    assert_eq!(k.len(), 2 + 8 + 32);
    assert_eq!(k[..2], ["queue_status"; 2]);
    assert!(
        k[2..10].iter().all(|k| *k == "other"),
        "the MQTT proxy messages next"
    );
    assert!(k[10..].iter().all(|k| *k == "packet"));
    // Texts push out the oldest: the last 32 are the ones kept.
    assert_eq!(
        client_packet(&after[10]).unwrap().text().as_deref(),
        Some("text 8")
    );
    // Totals stay; the next absence is a new burst.
    assert_eq!(d.to_phone_drops(), drops);
}

#[test]
fn pacing_keeps_one_window_per_port_and_a_traceroute_too_soon_gets_a_notification() {
    let mut d = device();
    live(&mut d);
    let at = Duration::from_secs;
    let pos = d.handle_to_radio(
        client_packet_on(proto::PortNum::PositionApp, 1),
        at(0),
        status(16),
    );
    assert_eq!(pos.to_mesh.len(), 1);
    // Telemetry shares the 10 s figure with positions, but not their window.
    let tel = d.handle_to_radio(
        client_packet_on(proto::PortNum::TelemetryApp, 2),
        at(1),
        status(16),
    );
    assert_eq!(tel.to_mesh.len(), 1);
    let again = d.handle_to_radio(
        client_packet_on(proto::PortNum::PositionApp, 3),
        at(5),
        status(16),
    );
    assert!(again.to_mesh.is_empty());
    assert_eq!(
        kinds(&again.to_client),
        ["queue_status"],
        "refused silently but for its status"
    );
    let mut trace = client_packet_on(proto::PortNum::TracerouteApp, 4);
    if let Some(In::Packet(p)) = &mut trace.payload_variant {
        p.to = PEER.get();
    }
    let first = d.handle_to_radio(trace.clone(), at(20), status(16));
    assert_eq!(first.to_mesh.len(), 1);
    if let Some(In::Packet(p)) = &mut trace.payload_variant {
        p.id = 5;
    }
    let soon = d.handle_to_radio(trace, at(40), status(16));
    assert!(soon.to_mesh.is_empty());
    let Some(Out::ClientNotification(n)) = &soon.to_client[0].payload_variant else {
        panic!("{:?}", soon.to_client)
    };
    assert_eq!(n.reply_id, Some(5));
    assert!(n.message.contains("30 seconds"), "{}", n.message);
    assert_eq!(queue_statuses(&soon.to_client)[0].mesh_packet_id, 5);
}

#[test]
fn downlink_is_taken_only_under_the_devices_own_root() {
    let mut d = device();
    live(&mut d);
    let key = mesh_core::ChannelKey::from_psk(&[1]);
    let mut p = Packet::text_message(NodeId::BROADCAST, 0, "from afar");
    (p.meta_mut().from, p.meta_mut().id, p.meta_mut().hop_limit) = (0x0dd0_0001, 77, 1);
    let p = p.encrypt("LongFast", &key);
    let env = Envelope::new(p, "LongFast", NodeId::new(0x0a7c_0001)).encode();
    let proxy = |topic: &str| proto::ToRadio {
        payload_variant: Some(In::MqttClientProxyMessage(proto::MqttClientProxyMessage {
            topic: topic.into(),
            retained: false,
            payload_variant: Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(
                env.clone(),
            )),
        })),
    };
    for wrong in [
        "msh/2/e/LongFast/!0a7c0001",
        "msh/EU_868/2/json/LongFast/!0a7c0001",
        "elsewhere/2/e/LongFast/!0a7c0001",
    ] {
        let out = d.handle_to_radio(proxy(wrong), Duration::ZERO, status(16));
        assert!(out.downlink.is_empty(), "{wrong}");
    }
    let out = d.handle_to_radio(
        proxy("msh/EU_868/2/e/LongFast/!0a7c0001"),
        Duration::ZERO,
        status(16),
    );
    assert_eq!(out.downlink.len(), 1);
    assert!(out.downlink[0].meta().via_mqtt);
    // Our own gateway id echoed back is dropped, as the firmware does.
    let echo = Envelope::new(out.downlink[0].clone(), "LongFast", ME).encode();
    let mut msg = proxy("msh/EU_868/2/e/LongFast/!a1b2c3d4");
    if let Some(In::MqttClientProxyMessage(m)) = &mut msg.payload_variant {
        m.payload_variant = Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(echo));
    }
    assert!(
        d.handle_to_radio(msg, Duration::ZERO, status(16))
            .downlink
            .is_empty()
    );
}
