//! PKI at the PhoneAPI: keys in the handshake, refusals of direct messages the firmware would
//! not send, PKI messages delivered and uplinked, and the PKI downlink rule.

use super::*;
use crate::sim::keys::node_key;
use mesh_core::{Envelope, PrivateKey};

/// `!0c4d2e61` (Amira) runs firmware with PKI, `!7a91b3c2` (Jonas) without.
const OLD: NodeId = NodeId::new(0x7a91_b3c2);
/// A node no radio knows yet: an XMPP user's virtual node.
const VIRTUAL: NodeId = NodeId::new(0x5eed_0001);
const GATEWAY: NodeId = NodeId::new(0x0a7c_0001);

fn pki_device() -> Device {
    let text = config_text().replace(
        "short_name = \"JNS\"",
        "short_name = \"JNS\"\n        pki = false",
    );
    let config = SimConfig::from_toml_str(&text).unwrap();
    Device::new(DeviceProfile::from_config(&config, ME, 1_700_000_000, 0).unwrap())
}

fn key_of(node: NodeId) -> PrivateKey {
    node_key(1, node)
}

fn client_dm(id: u32, to: NodeId) -> proto::ToRadio {
    text_from_client(id, to, true)
}

#[test]
fn the_handshake_carries_our_keys_and_the_peers_public_keys() {
    let mut d = pki_device();
    let out = d.handle_to_radio(want_config(7), Duration::ZERO, status(16));
    let mine = key_of(ME);
    let mut users = BTreeMap::new();
    let mut security = None;
    let mut has_pkc = None;
    for m in &out.to_client {
        match m.payload_variant.as_ref().unwrap() {
            Out::NodeInfo(n) => {
                users.insert(NodeId::new(n.num), n.user.clone().unwrap().public_key);
            }
            Out::Config(proto::Config {
                payload_variant: Some(config::PayloadVariant::Security(s)),
            }) => security = Some(s.clone()),
            Out::Metadata(md) => has_pkc = Some(md.has_pkc),
            _ => {}
        }
    }
    assert_eq!(users[&ME], mine.public_key().as_bytes().to_vec());
    assert_eq!(users[&PEER], key_of(PEER).public_key().as_bytes().to_vec());
    assert!(users[&OLD].is_empty(), "a node without PKI has no key");
    let security = security.unwrap();
    assert_eq!(security.public_key, mine.public_key().as_bytes().to_vec());
    assert_eq!(security.private_key, mine.to_bytes().to_vec());
    assert_eq!(has_pkc, Some(true));
    // The profile's Debug shows the public half only.
    let shown = format!("{:?}", d.profile);
    assert!(shown.contains(&mine.public_key().to_string()));
    assert!(!shown.contains(&format!("{:?}", mine.to_bytes())));
}

#[test]
fn a_dm_to_a_node_without_a_known_key_is_refused_with_pki_send_fail_public_key() {
    let mut d = pki_device();
    live(&mut d);
    let out = d.handle_to_radio(client_dm(0x41, OLD), Duration::ZERO, status(16));
    assert!(out.to_mesh.is_empty());
    let error = RoutingError::PkiSendFailPublicKey as i32;
    assert_eq!(queue_statuses(&out.to_client)[0].res, error);
    assert_eq!(queue_statuses(&out.to_client)[0].mesh_packet_id, 0x41);
    assert_eq!(routing_errors(&out.to_client), vec![(0x41, 0, error)]);
    // A node the radio never heard of is refused the same way.
    let out = d.handle_to_radio(client_dm(0x42, VIRTUAL), Duration::from_secs(5), status(16));
    assert_eq!(routing_errors(&out.to_client), vec![(0x42, 0, error)]);
    // With the key known, it goes to the mesh (the world encrypts it).
    let out = d.handle_to_radio(client_dm(0x43, PEER), Duration::from_secs(10), status(16));
    assert_eq!(out.to_mesh.len(), 1);
    assert_eq!(queue_statuses(&out.to_client)[0].res, 0);
}

#[test]
fn pki_asked_for_where_it_cannot_be_used_or_with_another_key_is_pki_failed() {
    let mut d = pki_device();
    live(&mut d);
    let failed = RoutingError::PkiFailed as i32;
    let mut to_all = text_from_client(0x51, NodeId::BROADCAST, false);
    let mut wrong_key = client_dm(0x52, PEER);
    for (msg, key) in [(&mut to_all, vec![]), (&mut wrong_key, vec![9; 32])] {
        if let Some(In::Packet(p)) = &mut msg.payload_variant {
            p.pki_encrypted = true;
            p.public_key = key;
        }
    }
    let out = d.handle_to_radio(to_all, Duration::ZERO, status(16));
    assert_eq!(routing_errors(&out.to_client), vec![(0x51, 0, failed)]);
    let out = d.handle_to_radio(wrong_key, Duration::from_secs(5), status(16));
    assert_eq!(routing_errors(&out.to_client), vec![(0x52, 0, failed)]);
}

#[test]
fn a_device_without_pki_sends_any_dm_with_the_channel_key() {
    let text = config_text().replace(
        "short_name = \"NHUB\"",
        "short_name = \"NHUB\"\n        pki = false",
    );
    let config = SimConfig::from_toml_str(&text).unwrap();
    let mut d = Device::new(DeviceProfile::from_config(&config, ME, 0, 0).unwrap());
    live(&mut d);
    let out = d.handle_to_radio(client_dm(0x61, VIRTUAL), Duration::ZERO, status(16));
    assert_eq!(out.to_mesh.len(), 1);
}

/// A PKI DM from `from` to `to`, as on the air.
fn pki_dm(from: NodeId, to: NodeId, id: u32, key: &PrivateKey) -> Packet {
    let mut p = Packet::text_message(to, 0, "secret");
    (p.meta_mut().from, p.meta_mut().id, p.meta_mut().want_ack) = (from.get(), id, true);
    let mut wire = p.encrypt_pki(key, &key_of(to).public_key(), 3).unwrap();
    // No LoRa header field says PKI.
    wire.meta_mut().pki_encrypted = false;
    wire
}

fn proxy_messages(out: &[proto::FromRadio]) -> Vec<(String, proto::ServiceEnvelope)> {
    out.iter()
        .filter_map(|m| match &m.payload_variant {
            Some(Out::MqttClientProxyMessage(p)) => {
                let Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(d)) =
                    &p.payload_variant
                else {
                    return None;
                };
                Some((
                    p.topic.clone(),
                    proto::ServiceEnvelope::decode(&d[..]).unwrap(),
                ))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_pki_dm_to_us_reaches_the_client_marked_and_goes_up_on_the_pki_topic_as_heard() {
    let mut d = pki_device();
    live(&mut d);
    let on_air = pki_dm(PEER, ME, 0x71, &key_of(PEER));
    let read = on_air
        .decrypt_pki(&key_of(ME), &key_of(PEER).public_key())
        .unwrap();
    let out = d.on_mesh_packet(&on_air, Some(&read), Duration::from_secs(3));
    let p = out.iter().find_map(client_packet).unwrap();
    assert_eq!(p.text().as_deref(), Some("secret"));
    assert!(p.meta().pki_encrypted);
    assert_eq!(
        p.meta().public_key,
        key_of(PEER).public_key().as_bytes().to_vec()
    );
    assert_eq!(p.channel(), 0);
    let up = proxy_messages(&out);
    assert_eq!(up[0].0, "msh/EU_868/2/e/PKI/!a1b2c3d4");
    assert_eq!(up[0].1.channel_id, "PKI");
    let packet = up[0].1.packet.clone().unwrap();
    assert!(matches!(
        packet.payload_variant,
        Some(proto::mesh_packet::PayloadVariant::Encrypted(_))
    ));
    assert_eq!(packet.channel, 0);
}

#[test]
fn a_pki_dm_between_two_others_goes_up_encrypted_and_marked() {
    let mut d = pki_device();
    live(&mut d);
    let on_air = pki_dm(PEER, VIRTUAL, 0x72, &key_of(PEER));
    let out = d.on_mesh_packet(&on_air, None, Duration::ZERO);
    assert!(out.iter().all(|m| client_packet(m).is_none()));
    let up = proxy_messages(&out);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].0, "msh/EU_868/2/e/PKI/!a1b2c3d4");
    let packet = up[0].1.packet.clone().unwrap();
    assert!(packet.pki_encrypted);
    assert_eq!(packet.id, 0x72);
    // An unreadable channel packet is not published.
    let mut noise = on_air.clone();
    noise.meta_mut().channel = 0x33;
    assert!(d.on_mesh_packet(&noise, None, Duration::ZERO).is_empty());
}

fn proxy(topic: &str, envelope: Vec<u8>) -> proto::ToRadio {
    proto::ToRadio {
        payload_variant: Some(In::MqttClientProxyMessage(proto::MqttClientProxyMessage {
            topic: topic.into(),
            retained: false,
            payload_variant: Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(
                envelope,
            )),
        })),
    }
}

const PKI_TOPIC: &str = "msh/EU_868/2/e/PKI/!0a7c0001";

#[test]
fn a_pki_downlink_is_taken_for_us_or_between_known_nodes_and_counted_otherwise() {
    let mut d = pki_device();
    live(&mut d);
    let virtual_key = PrivateKey::generate(&mut rand::rngs::StdRng::seed_from_u64(4));
    let to_peer = pki_dm(VIRTUAL, PEER, 0x81, &virtual_key);
    let envelope = |p: &Packet| Envelope::new(p.clone(), "PKI", GATEWAY).encode();
    let out = d.handle_to_radio(
        proxy(PKI_TOPIC, envelope(&to_peer)),
        Duration::ZERO,
        status(16),
    );
    assert!(out.downlink.is_empty());
    assert_eq!(out.downlink_refused, Some(DownlinkDrop::PkiUnknownNodes));
    assert_eq!(d.downlink_drops().pki_unknown_nodes, 1);
    // For us it is taken even from a stranger (the world then answers PKI_UNKNOWN_PUBKEY).
    let to_me = pki_dm(VIRTUAL, ME, 0x82, &virtual_key);
    let out = d.handle_to_radio(
        proxy(PKI_TOPIC, envelope(&to_me)),
        Duration::ZERO,
        status(16),
    );
    assert_eq!(out.downlink.len(), 1);
    assert!(out.downlink[0].meta().via_mqtt);
    // The virtual node's NodeInfo comes through the proxy on the channel: now it is known.
    let user = proto::User {
        id: VIRTUAL.to_string(),
        long_name: "Lea (xmpp)".into(),
        short_name: "LEA".into(),
        public_key: virtual_key.public_key().as_bytes().to_vec(),
        ..Default::default()
    };
    let mut info = Packet::from_data(
        proto::MeshPacket {
            from: VIRTUAL.get(),
            to: NodeId::BROADCAST.get(),
            id: 0x83,
            ..Default::default()
        },
        proto::Data {
            portnum: proto::PortNum::NodeinfoApp as i32,
            payload: user.encode_to_vec(),
            ..Default::default()
        },
    );
    info.meta_mut().via_mqtt = true;
    let on_air = d.profile.channels.encrypt(&info, 0).unwrap();
    hear(&mut d, &on_air, Duration::from_secs(1));
    let out = d.handle_to_radio(
        proxy(PKI_TOPIC, envelope(&to_peer)),
        Duration::from_secs(2),
        status(16),
    );
    assert_eq!(out.downlink.len(), 1, "{:?}", out.downlink_refused);
    let taken = &out.downlink[0];
    assert!(!taken.meta().pki_encrypted && taken.meta().public_key.is_empty());
    assert_eq!(d.downlink_drops().total(), 1);
    // A decoded packet on the PKI topic is refused: the radio's MQTT encryption is on.
    let plain = Packet::text_message(PEER, 0, "plain");
    let mut plain = plain;
    plain.meta_mut().from = VIRTUAL.get();
    let out = d.handle_to_radio(
        proxy(PKI_TOPIC, envelope(&plain)),
        Duration::from_secs(3),
        status(16),
    );
    assert_eq!(out.downlink_refused, Some(DownlinkDrop::Undecryptable));
}

#[test]
fn a_channel_key_text_for_a_radio_with_pki_is_refused_on_downlink_as_a_legacy_dm() {
    let mut d = pki_device();
    live(&mut d);
    let mut p = Packet::text_message(ME, 0, "old style");
    (p.meta_mut().from, p.meta_mut().id) = (VIRTUAL.get(), 0x91);
    let on_air = d.profile.channels.encrypt(&p, 0).unwrap();
    let env = Envelope::new(on_air.clone(), "LongFast", GATEWAY).encode();
    let out = d.handle_to_radio(
        proxy("msh/EU_868/2/e/LongFast/!0a7c0001", env),
        Duration::ZERO,
        status(16),
    );
    assert_eq!(out.downlink_refused, Some(DownlinkDrop::LegacyDm));
    // The same text for another node is relayed: only the addressee refuses it.
    let mut p = Packet::text_message(OLD, 0, "old style");
    (p.meta_mut().from, p.meta_mut().id) = (VIRTUAL.get(), 0x92);
    let env = Envelope::new(
        d.profile.channels.encrypt(&p, 0).unwrap(),
        "LongFast",
        GATEWAY,
    );
    let out = d.handle_to_radio(
        proxy("msh/EU_868/2/e/LongFast/!0a7c0001", env.encode()),
        Duration::ZERO,
        status(16),
    );
    assert_eq!(out.downlink.len(), 1);
}

#[test]
fn a_nodeinfo_with_another_key_for_a_known_node_is_dropped() {
    let mut d = pki_device();
    live(&mut d);
    let impostor = PrivateKey::generate(&mut rand::rngs::StdRng::seed_from_u64(8));
    let user = proto::User {
        long_name: "Not Amira".into(),
        public_key: impostor.public_key().as_bytes().to_vec(),
        ..Default::default()
    };
    let mut info = Packet::from_data(
        proto::MeshPacket {
            from: PEER.get(),
            to: NodeId::BROADCAST.get(),
            id: 0xa1,
            ..Default::default()
        },
        proto::Data {
            portnum: proto::PortNum::NodeinfoApp as i32,
            payload: user.encode_to_vec(),
            ..Default::default()
        },
    );
    info.meta_mut().hop_limit = 0;
    let on_air = d.profile.channels.encrypt(&info, 0).unwrap();
    hear(&mut d, &on_air, Duration::ZERO);
    let kept = d.nodes[&PEER].user.as_ref().unwrap();
    assert_eq!(kept.long_name, "Amira (bakery)");
    assert_eq!(
        kept.public_key,
        key_of(PEER).public_key().as_bytes().to_vec()
    );
}
