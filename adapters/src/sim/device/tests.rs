//! The PhoneAPI on plain values: handshake, queue status, pacing, the queues kept for an
//! absent client, downlink and uplink.

mod pki;
mod queues;

use super::*;
use mesh_core::proto::config;

const ME: NodeId = NodeId::new(0xa1b2_c3d4);
const PEER: NodeId = NodeId::new(0x0c4d_2e61);

/// The mesh of these tests: this radio, Amira and Jonas.
fn config_text() -> String {
    r#"
        [[mesh]]
        name = "north"
        preset = "LongFast"
        region = "EU_868"
        channels = [ { name = "", psk = "AQ==" }, { name = "ops", psk = "simple5" } ]
        [[mesh.node]]
        id = "!a1b2c3d4"
        long_name = "North hub radio"
        short_name = "NHUB"
        attached = { tcp_port = 0 }
        [[mesh.node]]
        id = "!0c4d2e61"
        long_name = "Amira (bakery)"
        short_name = "AMRA"
        [[mesh.node]]
        id = "!7a91b3c2"
        long_name = "Jonas Weber"
        short_name = "JNS"
    "#
    .to_owned()
}

fn config() -> SimConfig {
    SimConfig::from_toml_str(&config_text()).unwrap()
}

fn device() -> Device {
    Device::new(DeviceProfile::from_config(&config(), ME, 1_700_000_000, 0).unwrap())
}

fn status(free: usize) -> RadioStatus {
    RadioStatus {
        tx_queue_free: free,
        channel_utilization: 1.5,
        air_util_tx: 0.25,
    }
}

fn want_config(nonce: u32) -> proto::ToRadio {
    proto::ToRadio {
        payload_variant: Some(In::WantConfigId(nonce)),
    }
}

fn heartbeat() -> proto::ToRadio {
    proto::ToRadio {
        payload_variant: Some(In::Heartbeat(proto::Heartbeat { nonce: 0 })),
    }
}

fn text_from_client(id: u32, to: NodeId, want_ack: bool) -> proto::ToRadio {
    proto::ToRadio {
        payload_variant: Some(In::Packet(proto::MeshPacket {
            to: to.get(),
            id,
            want_ack,
            payload_variant: Some(proto::mesh_packet::PayloadVariant::Decoded(proto::Data {
                portnum: proto::PortNum::TextMessageApp as i32,
                payload: b"hi".to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        })),
    }
}

/// A broadcast text from `PEER` on the primary channel, decoded.
fn heard_text(id: u32, body: &str) -> Packet {
    let mut p = Packet::text_message(NodeId::BROADCAST, 0, body);
    let m = p.meta_mut();
    (m.from, m.id, m.hop_limit) = (PEER.get(), id, 0);
    p
}

/// The device hears `on_air`, read with its mesh's channel keys as the RF world reads it.
fn hear(d: &mut Device, on_air: &Packet, now: Duration) -> Vec<proto::FromRadio> {
    let decoded = d.profile.channels.decrypt(on_air).map(|(_, p)| p);
    d.on_mesh_packet(on_air, decoded.as_ref(), now)
}

fn live(d: &mut Device) {
    d.handle_to_radio(want_config(1), Duration::ZERO, status(16));
}

fn kinds(msgs: &[proto::FromRadio]) -> Vec<&'static str> {
    msgs.iter()
        .map(|m| match m.payload_variant.as_ref().unwrap() {
            Out::MyInfo(_) => "my_info",
            Out::DeviceuiConfig(_) => "deviceui",
            Out::NodeInfo(_) => "node_info",
            Out::Metadata(_) => "metadata",
            Out::Channel(_) => "channel",
            Out::Config(_) => "config",
            Out::ModuleConfig(_) => "module_config",
            Out::ConfigCompleteId(_) => "complete",
            Out::QueueStatus(_) => "queue_status",
            Out::Packet(_) => "packet",
            _ => "other",
        })
        .collect()
}

fn queue_statuses(msgs: &[proto::FromRadio]) -> Vec<proto::QueueStatus> {
    msgs.iter()
        .filter_map(|m| match &m.payload_variant {
            Some(Out::QueueStatus(q)) => Some(*q),
            _ => None,
        })
        .collect()
}

fn routing_errors(msgs: &[proto::FromRadio]) -> Vec<(u32, u32, i32)> {
    msgs.iter()
        .filter_map(client_packet)
        .filter(|p| p.portnum() == Some(proto::PortNum::RoutingApp))
        .map(|p| {
            let data = p.data().unwrap();
            let r = proto::Routing::decode(&data.payload[..]).unwrap();
            let Some(proto::routing::Variant::ErrorReason(e)) = r.variant else {
                panic!("no error reason")
            };
            assert_eq!(p.from(), ME);
            assert_eq!(p.to(), ME);
            (data.request_id, p.channel(), e)
        })
        .collect()
}

#[test]
fn the_handshake_follows_the_firmware_order_and_is_complete() {
    let mut d = device();
    let out = d.handle_to_radio(want_config(0xdead_beef), Duration::from_secs(5), status(16));
    let mut expected = vec!["my_info", "deviceui", "node_info", "metadata"];
    expected.extend(["channel"; 8]);
    expected.extend(["config"; 10]);
    expected.extend(["module_config"; 13]);
    expected.extend(["node_info"; 2]);
    expected.push("complete");
    assert_eq!(kinds(&out.to_client), expected);
    assert!(out.to_mesh.is_empty());
    let msgs: Vec<_> = out
        .to_client
        .iter()
        .map(|m| m.payload_variant.clone().unwrap())
        .collect();
    let Out::MyInfo(my) = &msgs[0] else { panic!() };
    assert_eq!(my.my_node_num, ME.get());
    assert_eq!(my.min_app_version, 30200);
    assert_eq!(my.nodedb_count, 3);
    let Out::NodeInfo(own) = &msgs[2] else {
        panic!()
    };
    let user = own.user.as_ref().unwrap();
    assert!(own.is_favorite && own.hops_away.is_none());
    assert_eq!(user.id, "!a1b2c3d4");
    assert_eq!(
        (user.long_name.as_str(), user.short_name.as_str()),
        ("North hub radio", "NHUB")
    );
    let Out::Metadata(meta) = &msgs[3] else {
        panic!()
    };
    assert_eq!(meta.firmware_version, "2.7.26.sim");
    let channels: Vec<_> = msgs[4..12]
        .iter()
        .map(|m| match m {
            Out::Channel(c) => (c.index, c.role),
            _ => panic!(),
        })
        .collect();
    assert_eq!(channels[0], (0, proto::channel::Role::Primary as i32));
    assert_eq!(channels[1], (1, proto::channel::Role::Secondary as i32));
    for (i, (index, role)) in channels.iter().enumerate().skip(2) {
        assert_eq!(
            (*index, *role),
            (i as i32, proto::channel::Role::Disabled as i32)
        );
    }
    let Out::Channel(primary) = &msgs[4] else {
        panic!()
    };
    assert_eq!(primary.settings.as_ref().unwrap().psk, vec![1]);
    let Out::Config(lora) = &msgs[17] else {
        panic!()
    };
    let Some(config::PayloadVariant::Lora(lora)) = &lora.payload_variant else {
        panic!("6th config is lora: {lora:?}")
    };
    assert!(lora.use_preset && lora.tx_enabled);
    assert_eq!(lora.hop_limit, 3);
    assert_eq!(lora.region, RegionCode::Eu868 as i32);
    assert_eq!(
        lora.override_frequency, 0.0,
        "no override unless the mesh pins a frequency"
    );
    let Out::NodeInfo(peer) = &msgs[msgs.len() - 3] else {
        panic!()
    };
    assert_eq!(peer.user.as_ref().unwrap().id, PEER.to_string());
    assert!(!peer.is_favorite);
    assert_eq!(msgs.last(), Some(&Out::ConfigCompleteId(0xdead_beef)));
    assert!(d.is_live());
}

#[test]
fn special_nonces_send_config_only_or_nodes_only() {
    let out = device().handle_to_radio(
        want_config(SPECIAL_NONCE_ONLY_CONFIG),
        Duration::ZERO,
        status(16),
    );
    let k = kinds(&out.to_client);
    assert_eq!(
        k.iter().filter(|k| **k == "node_info").count(),
        1,
        "own node only"
    );
    assert_eq!(k.last(), Some(&"complete"));
    let out = device().handle_to_radio(
        want_config(SPECIAL_NONCE_ONLY_NODES),
        Duration::ZERO,
        status(16),
    );
    assert_eq!(
        kinds(&out.to_client),
        vec!["node_info", "node_info", "node_info", "complete"]
    );
}

#[test]
fn nothing_is_sent_before_want_config_but_a_heartbeats_queue_status() {
    let mut d = device();
    let heard = heard_text(77, "early");
    let on_air = d.profile.channels.encrypt(&heard, 0).unwrap();
    assert!(hear(&mut d, &on_air, Duration::ZERO).is_empty());
    assert!(
        d.handle_timeout(Duration::from_secs(3600), status(16))
            .is_empty()
    );
    let out = d.handle_to_radio(heartbeat(), Duration::ZERO, status(16));
    assert_eq!(kinds(&out.to_client), vec!["queue_status"]);
    let out = d.handle_to_radio(
        text_from_client(3, NodeId::BROADCAST, false),
        Duration::ZERO,
        status(16),
    );
    assert_eq!(out.to_mesh.len(), 1, "transmitted");
    assert!(
        out.to_client.is_empty(),
        "but not answered before the handshake"
    );
    // The packet heard while idle follows the handshake.
    let out = d.handle_to_radio(want_config(9), Duration::ZERO, status(16));
    let last = out.to_client.last().unwrap();
    assert_eq!(
        client_packet(last).unwrap().text().as_deref(),
        Some("early")
    );
}

#[test]
fn a_second_want_config_restarts_and_disconnect_goes_idle() {
    let mut d = device();
    live(&mut d);
    let again = d.handle_to_radio(want_config(2), Duration::ZERO, status(16));
    assert_eq!(kinds(&again.to_client)[0], "my_info");
    d.handle_to_radio(
        proto::ToRadio {
            payload_variant: Some(In::Disconnect(true)),
        },
        Duration::ZERO,
        status(16),
    );
    assert!(!d.is_live());
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn a_heartbeat_gets_exactly_one_queue_status() {
    let mut d = device();
    live(&mut d);
    let out = d.handle_to_radio(heartbeat(), Duration::ZERO, status(12));
    assert_eq!(
        queue_statuses(&out.to_client),
        vec![proto::QueueStatus {
            res: 0,
            free: 12,
            maxlen: 16,
            mesh_packet_id: 0
        }]
    );
    assert_eq!(out.to_client.len(), 1);
}

#[test]
fn a_client_packet_is_fixed_up_queued_and_answered_with_queue_status() {
    let mut d = device();
    live(&mut d);
    let out = d.handle_to_radio(
        text_from_client(0x1234, NodeId::BROADCAST, true),
        Duration::from_secs(1),
        status(16),
    );
    assert_eq!(
        queue_statuses(&out.to_client),
        vec![proto::QueueStatus {
            res: 0,
            free: 15,
            maxlen: 16,
            mesh_packet_id: 0x1234
        }]
    );
    assert_eq!(out.to_client.len(), 1, "the packet is not echoed back");
    let sent = &out.to_mesh[0];
    assert_eq!(sent.from(), ME);
    assert_eq!(sent.id(), PacketId::new(0x1234));
    assert_eq!((sent.hop_limit(), sent.hop_start()), (3, 3));
    assert_eq!(sent.channel(), 0);
    // An unset id is generated.
    let out = d.handle_to_radio(
        text_from_client(0, NodeId::BROADCAST, false),
        Duration::from_secs(5),
        status(16),
    );
    let id = out.to_mesh[0].id();
    assert!(!id.is_unset());
    assert_eq!(queue_statuses(&out.to_client)[0].mesh_packet_id, id.get());
}

#[test]
fn a_repeated_packet_id_is_dropped_silently() {
    let mut d = device();
    live(&mut d);
    d.handle_to_radio(
        text_from_client(42, NodeId::BROADCAST, false),
        Duration::ZERO,
        status(16),
    );
    let again = d.handle_to_radio(
        text_from_client(42, NodeId::BROADCAST, false),
        Duration::from_secs(60),
        status(16),
    );
    assert!(again.to_client.is_empty() && again.to_mesh.is_empty());
}

#[test]
fn texts_are_paced_to_one_every_two_seconds() {
    let mut d = device();
    live(&mut d);
    let first = d.handle_to_radio(
        text_from_client(1, NodeId::BROADCAST, false),
        Duration::from_secs(10),
        status(16),
    );
    assert_eq!(first.to_mesh.len(), 1);
    let second = d.handle_to_radio(
        text_from_client(2, NodeId::BROADCAST, false),
        Duration::from_millis(11_500),
        status(16),
    );
    assert!(second.to_mesh.is_empty());
    assert_eq!(queue_statuses(&second.to_client)[0].res, 0);
    assert_eq!(
        routing_errors(&second.to_client),
        vec![(2, 0, RoutingError::RateLimitExceeded as i32)]
    );
    let third = d.handle_to_radio(
        text_from_client(3, NodeId::BROADCAST, false),
        Duration::from_secs(12),
        status(16),
    );
    assert_eq!(third.to_mesh.len(), 1);
}

#[test]
fn a_full_transmit_queue_refuses_the_packet() {
    let mut d = device();
    live(&mut d);
    let out = d.handle_to_radio(
        text_from_client(5, NodeId::BROADCAST, false),
        Duration::ZERO,
        status(0),
    );
    assert!(out.to_mesh.is_empty());
    let q = queue_statuses(&out.to_client);
    assert_eq!(q.len(), 1);
    assert_ne!(q[0].res, 0);
    assert_eq!((q[0].free, q[0].mesh_packet_id), (0, 5));
}

#[test]
fn a_missing_channel_or_an_oversize_payload_is_refused_with_a_routing_error() {
    let mut d = device();
    live(&mut d);
    let mut msg = text_from_client(7, NodeId::BROADCAST, true);
    if let Some(In::Packet(p)) = &mut msg.payload_variant {
        p.channel = 5;
    }
    let out = d.handle_to_radio(msg, Duration::ZERO, status(16));
    assert!(out.to_mesh.is_empty());
    assert_eq!(
        routing_errors(&out.to_client),
        vec![(7, 0, RoutingError::NoChannel as i32)]
    );
    let mut msg = text_from_client(8, NodeId::BROADCAST, true);
    if let Some(In::Packet(p)) = &mut msg.payload_variant
        && let Some(proto::mesh_packet::PayloadVariant::Decoded(data)) = &mut p.payload_variant
    {
        data.payload = vec![b'x'; 300];
    }
    let out = d.handle_to_radio(msg, Duration::from_secs(10), status(16));
    assert!(out.to_mesh.is_empty());
    assert_eq!(
        routing_errors(&out.to_client),
        vec![(8, 0, RoutingError::TooLarge as i32)]
    );
}

#[test]
fn mesh_packets_are_delivered_decoded_on_the_local_channel_index() {
    let mut d = device();
    live(&mut d);
    let mut heard = heard_text(500, "on ops");
    let m = heard.meta_mut();
    (m.hop_limit, m.hop_start, m.rx_snr, m.rx_rssi, m.rx_time) = (2, 3, 4.5, -100, 1_700_000_100);
    let on_air = d.profile.channels.encrypt(&heard, 1).unwrap();
    let out = hear(&mut d, &on_air, Duration::from_secs(100));
    let p = out.iter().find_map(client_packet).unwrap();
    assert_eq!(p.channel(), 1);
    assert_eq!(p.text().as_deref(), Some("on ops"));
    assert_eq!((p.meta().rx_snr, p.meta().rx_rssi), (4.5, -100));
    assert_eq!((p.hop_limit(), p.hop_start()), (2, 3));
    assert_eq!(d.nodes[&PEER].hops_away, Some(1));
    assert_eq!(d.nodes[&PEER].last_heard, 1_700_000_100);
    // A direct message to someone else is not for our client, but it is published on
    // the uplink (the client proxy), encrypted as heard; a foreign key is unreadable.
    let mut other = heard.clone();
    other.meta_mut().to = 0x7a91_b3c2;
    other.meta_mut().id = 501;
    let on_air = d.profile.channels.encrypt(&other, 0).unwrap();
    let out = hear(&mut d, &on_air, Duration::ZERO);
    assert!(out.iter().all(|m| client_packet(m).is_none()));
    let Some(Out::MqttClientProxyMessage(m)) = out[0].payload_variant.clone() else {
        panic!("{out:?}")
    };
    // Under the root the firmware sets with the region.
    assert_eq!(m.topic, "msh/EU_868/2/e/LongFast/!a1b2c3d4");
    let Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(env)) = m.payload_variant
    else {
        panic!()
    };
    let env = proto::ServiceEnvelope::decode(&env[..]).unwrap();
    assert_eq!(env.gateway_id, d.profile.node.to_string());
    assert_eq!(env.packet.unwrap().id, 501);
    // What came from MQTT is never published back to it.
    let mut from_mqtt = on_air.clone();
    from_mqtt.meta_mut().via_mqtt = true;
    from_mqtt.meta_mut().id = 502;
    assert!(hear(&mut d, &from_mqtt, Duration::ZERO).is_empty());
    let foreign = ChannelTable::new(
        &[super::super::config::ChannelConfig {
            name: "x".into(),
            psk: mesh_core::Psk::from_bytes(vec![3; 32]),
        }],
        ModemPreset::LongFast,
    );
    assert!(hear(&mut d, &foreign.encrypt(&heard, 0).unwrap(), Duration::ZERO).is_empty());
}

#[test]
fn acks_and_naks_reach_the_client_that_sent_the_packet() {
    let mut d = device();
    live(&mut d);
    let out = d.handle_to_radio(
        text_from_client(0x99, NodeId::BROADCAST, true),
        Duration::ZERO,
        status(16),
    );
    assert_eq!(out.to_mesh.len(), 1);
    let ack = d.on_implicit_ack(PacketId::new(0x99), 0, Duration::from_secs(3));
    assert_eq!(routing_errors(&ack), vec![(0x99, 0, 0)]);
    assert!(
        d.on_implicit_ack(PacketId::new(0x99), 0, Duration::from_secs(3))
            .is_empty(),
        "once"
    );
    assert!(
        d.on_implicit_ack(PacketId::new(0x55), 0, Duration::from_secs(3))
            .is_empty(),
        "not ours"
    );
    d.handle_to_radio(
        text_from_client(0x98, PEER, true),
        Duration::from_secs(10),
        status(16),
    );
    let nak = d.on_nak(
        PacketId::new(0x98),
        0,
        RoutingError::MaxRetransmit,
        Duration::from_secs(50),
    );
    assert_eq!(
        routing_errors(&nak),
        vec![(0x98, 0, RoutingError::MaxRetransmit as i32)]
    );
}

#[test]
fn the_device_reports_its_telemetry_once_a_minute() {
    let mut d = device();
    live(&mut d);
    assert_eq!(d.poll_timeout(), Some(Duration::from_secs(60)));
    assert!(
        d.handle_timeout(Duration::from_secs(59), status(16))
            .is_empty()
    );
    let out = d.handle_timeout(Duration::from_secs(60), status(16));
    let p = client_packet(&out[0]).unwrap();
    assert_eq!(p.portnum(), Some(proto::PortNum::TelemetryApp));
    assert_eq!(p.from(), ME);
    let t = proto::Telemetry::decode(&p.data().unwrap().payload[..]).unwrap();
    let Some(proto::telemetry::Variant::DeviceMetrics(m)) = t.variant else {
        panic!()
    };
    assert_eq!(m.channel_utilization, Some(1.5));
    assert_eq!(m.air_util_tx, Some(0.25));
    assert_eq!(m.uptime_seconds, Some(60));
    assert_eq!(d.poll_timeout(), Some(Duration::from_secs(120)));
}
