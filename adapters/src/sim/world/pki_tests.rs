//! PKI in the RF world on plain values: who encrypts with what, who reads what, and how each
//! kind of direct message is answered.

use std::time::Duration;

use mesh_core::proto::routing::Error as RoutingError;
use mesh_core::{NodeId, Packet, PacketId, PrivateKey, proto};
use prost::Message;
use rand::SeedableRng;

use super::super::tests::run;
use super::super::{TxKind, World, WorldError, WorldEvent};
use crate::sim::SimConfig;
use crate::sim::keys::node_key;

const A: NodeId = NodeId::new(0x0a01);
const B: NodeId = NodeId::new(0x0b02);
const C: NodeId = NodeId::new(0x0c03);
const D: NodeId = NodeId::new(0x0d04);
/// A node outside the world (an XMPP user's virtual node), heard only through MQTT.
const V: NodeId = NodeId::new(0xbeef);
const SEED: u64 = 1;
const HOUR: Duration = Duration::from_secs(3600);
/// The LongFast primary channel's hash with the default key.
const PRIMARY_HASH: u32 = 0x08;

/// A and B run firmware with PKI, C and D without; everyone hears everyone.
fn world() -> World {
    lossy_world(0.0)
}

fn lossy_world(loss: f64) -> World {
    let node = |id: NodeId, name: &str, pki: bool| {
        format!(
            "[[mesh.node]]\nid = \"{id}\"\nlong_name = \"{name}\"\nshort_name = \"{name}\"\npki = {pki}\n"
        )
    };
    let toml = format!(
        "seed = {SEED}\n[[mesh]]\nname = \"m\"\npreset = \"LongFast\"\nloss = {loss:?}\n{}{}{}{}",
        node(A, "A", true),
        node(B, "B", true),
        node(C, "C", false),
        node(D, "D", false)
    );
    World::new(&SimConfig::from_toml_str(&toml).unwrap())
}

fn packet(from: NodeId, to: NodeId, id: u32, port: proto::PortNum, payload: &[u8]) -> Packet {
    let meta = proto::MeshPacket {
        from: from.get(),
        to: to.get(),
        id,
        hop_limit: 3,
        hop_start: 3,
        want_ack: !to.is_broadcast(),
        ..Default::default()
    };
    Packet::from_data(
        meta,
        proto::Data {
            portnum: port as i32,
            payload: payload.to_vec(),
            bitfield: Some(0),
            ..Default::default()
        },
    )
}

fn dm(to: NodeId, body: &str) -> Packet {
    packet(
        NodeId::LOCAL,
        to,
        0,
        proto::PortNum::TextMessageApp,
        body.as_bytes(),
    )
}

/// What `node` decoded of the packets it received.
fn decoded_at(events: &[WorldEvent], node: NodeId) -> Vec<Packet> {
    events
        .iter()
        .filter_map(|e| match e {
            WorldEvent::Received {
                node: n,
                decoded: Some(d),
                ..
            } if *n == node => Some(d.clone()),
            _ => None,
        })
        .collect()
}

/// The routing answers `node` read about its packet `id`: (sender, error code).
fn answers(events: &[WorldEvent], node: NodeId, id: PacketId) -> Vec<(NodeId, i32)> {
    decoded_at(events, node)
        .into_iter()
        .filter(|p| p.portnum() == Some(proto::PortNum::RoutingApp))
        .filter(|p| p.data().unwrap().request_id == id.get())
        .map(|p| {
            let r = proto::Routing::decode(&p.data().unwrap().payload[..]).unwrap();
            let Some(proto::routing::Variant::ErrorReason(e)) = r.variant else {
                panic!("{r:?}")
            };
            (p.from(), e)
        })
        .collect()
}

fn sent_by(events: &[WorldEvent], node: NodeId, kind: TxKind) -> Vec<Packet> {
    events
        .iter()
        .filter_map(|e| match e {
            WorldEvent::Transmitted {
                node: n,
                packet,
                kind: k,
                ..
            } if *n == node && *k == kind => Some(packet.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pki_dm_between_nodes_that_know_each_other_is_read_only_by_its_destination_and_acked() {
    let mut w = world();
    let id = w.transmit(A, dm(B, "psst"), Duration::ZERO).unwrap();
    let events = run(&mut w, HOUR);
    let on_air = &sent_by(&events, A, TxKind::Originated)[0];
    assert!(on_air.is_pki());
    assert_eq!(on_air.channel(), 0, "no channel hash");
    assert!(
        !on_air.meta().pki_encrypted,
        "not a field of the LoRa header"
    );
    assert_eq!(
        on_air.on_air_len(),
        dm(B, "psst").on_air_len() + 12,
        "tag and extra nonce"
    );
    assert!(w.meshes[0].channels.decrypt(on_air).is_none());
    let read = decoded_at(&events, B);
    let text = read.iter().find(|p| p.id() == id).expect("B reads it");
    assert_eq!(text.text().as_deref(), Some("psst"));
    assert!(text.meta().pki_encrypted);
    let a_key = node_key(SEED, A).public_key();
    assert_eq!(text.meta().public_key, a_key.as_bytes().to_vec());
    assert_eq!(text.channel(), 0);
    assert!(
        decoded_at(&events, C).iter().all(|p| p.id() != id),
        "a third node hears it but cannot read it"
    );
    assert_eq!(answers(&events, A, id), vec![(B, 0)]);
    let ack = &sent_by(&events, B, TxKind::Ack)[0];
    assert_eq!(
        ack.channel(),
        PRIMARY_HASH,
        "ROUTING_APP goes with the channel key"
    );
    assert!(!ack.is_pki());
    assert_eq!(sent_by(&events, A, TxKind::Retransmission).len(), 0);
}

#[test]
fn nodes_without_pki_send_and_take_channel_key_dms() {
    let mut w = world();
    let id = w.transmit(C, dm(D, "old radios"), Duration::ZERO).unwrap();
    let events = run(&mut w, HOUR);
    let on_air = &sent_by(&events, C, TxKind::Originated)[0];
    assert_eq!(on_air.channel(), PRIMARY_HASH);
    let read = decoded_at(&events, D);
    let text = read.iter().find(|p| p.id() == id).unwrap();
    assert_eq!(text.text().as_deref(), Some("old radios"));
    assert!(!text.meta().pki_encrypted);
    assert_eq!(answers(&events, C, id), vec![(D, 0)]);
}

#[test]
fn firmware_with_pki_refuses_to_dm_a_node_whose_key_it_lacks() {
    let mut w = world();
    let err = w.transmit(A, dm(C, "hello?"), Duration::ZERO).unwrap_err();
    assert!(
        matches!(
            err,
            WorldError::Refused {
                node: A,
                to: C,
                error: RoutingError::PkiSendFailPublicKey,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("PKI_SEND_FAIL_PUBLIC_KEY"),
        "{err}"
    );
    assert!(run(&mut w, HOUR).is_empty(), "nothing goes on the air");
    // Asking for PKI where none can be used is refused too.
    let mut asked = packet(
        NodeId::LOCAL,
        NodeId::BROADCAST,
        0,
        proto::PortNum::TextMessageApp,
        b"x",
    );
    asked.meta_mut().pki_encrypted = true;
    assert!(matches!(
        w.transmit(A, asked, Duration::ZERO),
        Err(WorldError::Refused {
            error: RoutingError::PkiFailed,
            ..
        })
    ));
}

#[test]
fn a_channel_key_text_to_a_node_with_pki_is_rejected_as_a_legacy_dm_and_nakd() {
    let mut w = world();
    let id = w.transmit(C, dm(A, "legacy"), Duration::ZERO).unwrap();
    let events = run(&mut w, HOUR);
    assert!(decoded_at(&events, A).iter().all(|p| p.id() != id));
    let naks = answers(&events, C, id);
    assert!(
        !naks.is_empty()
            && naks
                .iter()
                .all(|&n| n == (A, RoutingError::NoChannel as i32)),
        "{naks:?}"
    );
    // Only texts are refused: another port with the channel key is read and acknowledged.
    let other = packet(NodeId::LOCAL, A, 0, proto::PortNum::PrivateApp, b"\x01\x02");
    let id = w.transmit(C, other, HOUR).unwrap();
    let events = run(&mut w, HOUR * 2);
    assert!(decoded_at(&events, A).iter().any(|p| p.id() == id));
    assert_eq!(answers(&events, C, id), vec![(A, 0)]);
}

#[test]
fn position_and_nodeinfo_to_one_node_never_go_pki() {
    let mut w = world();
    for port in [proto::PortNum::PositionApp, proto::PortNum::NodeinfoApp] {
        let p = packet(NodeId::LOCAL, B, 0, port, b"");
        w.transmit(A, p, Duration::ZERO).unwrap();
    }
    let events = run(&mut w, HOUR);
    let sent = sent_by(&events, A, TxKind::Originated);
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .all(|p| p.channel() == PRIMARY_HASH && !p.is_pki())
    );
}

/// A packet as the virtual node V puts it on MQTT: encrypted for `to` with V's key.
fn from_v(v: &PrivateKey, to: NodeId, id: u32, body: &str) -> Packet {
    let p = packet(V, to, id, proto::PortNum::TextMessageApp, body.as_bytes());
    let mut wire = p
        .encrypt_pki(v, &node_key(SEED, to).public_key(), id ^ 0x5555)
        .unwrap();
    wire.meta_mut().via_mqtt = true;
    wire
}

/// V's NodeInfo broadcast with the channel key, as an MQTT envelope carries it.
fn v_node_info(w: &World, key: &PrivateKey, id: u32) -> Packet {
    let user = proto::User {
        id: V.to_string(),
        long_name: "Virtual".into(),
        short_name: "VIRT".into(),
        public_key: key.public_key().as_bytes().to_vec(),
        ..Default::default()
    };
    let p = packet(
        V,
        NodeId::BROADCAST,
        id,
        proto::PortNum::NodeinfoApp,
        &user.encode_to_vec(),
    );
    w.meshes[0].channels.encrypt(&p, 0).unwrap()
}

#[test]
fn a_pki_dm_from_an_unknown_key_gets_pki_unknown_pubkey_until_its_nodeinfo_arrives() {
    let mut w = world();
    let v = PrivateKey::generate(&mut rand::rngs::StdRng::seed_from_u64(77));
    assert!(
        w.receive_from_mqtt(B, from_v(&v, B, 100, "first"), Duration::ZERO)
            .unwrap()
    );
    let events = run(&mut w, HOUR);
    assert!(decoded_at(&events, B).is_empty(), "B cannot read it yet");
    let nak = &sent_by(&events, B, TxKind::Ack)[0];
    assert_eq!(nak.to(), V);
    assert_eq!(nak.channel(), PRIMARY_HASH, "on the primary channel");
    let (_, nak) = w.meshes[0].channels.decrypt(nak).unwrap();
    let routing = proto::Routing::decode(&nak.data().unwrap().payload[..]).unwrap();
    assert_eq!(
        routing.variant,
        Some(proto::routing::Variant::ErrorReason(
            RoutingError::PkiUnknownPubkey as i32
        ))
    );
    assert_eq!(nak.data().unwrap().request_id, 100);
    // V introduces itself through MQTT; B learns its key and reads the next one.
    assert!(
        w.receive_from_mqtt(B, v_node_info(&w, &v, 101), HOUR)
            .unwrap()
    );
    assert_eq!(w.known_key(B, V), Some(v.public_key()));
    assert!(
        w.receive_from_mqtt(B, from_v(&v, B, 102, "second"), HOUR)
            .unwrap()
    );
    let events = run(&mut w, HOUR * 2);
    let read = decoded_at(&events, B);
    let second = read.iter().find(|p| p.id().get() == 102).unwrap();
    assert_eq!(second.text().as_deref(), Some("second"));
    assert_eq!(second.meta().public_key, v.public_key().as_bytes().to_vec());
    let ack = &sent_by(&events, B, TxKind::Ack)[0];
    assert_eq!(ack.to(), V);
    // Someone else announcing V with another key does not replace the pinned one.
    let impostor = PrivateKey::generate(&mut rand::rngs::StdRng::seed_from_u64(78));
    w.receive_from_mqtt(B, v_node_info(&w, &impostor, 103), HOUR * 2)
        .unwrap();
    assert_eq!(w.known_key(B, V), Some(v.public_key()));
}

#[test]
fn told_its_key_is_unknown_a_node_with_pki_sends_its_nodeinfo_to_the_complainer() {
    let mut w = world();
    let routing = proto::Routing {
        variant: Some(proto::routing::Variant::ErrorReason(
            RoutingError::PkiUnknownPubkey as i32,
        )),
    };
    let mut nak = packet(
        V,
        A,
        200,
        proto::PortNum::RoutingApp,
        &routing.encode_to_vec(),
    );
    nak.meta_mut().want_ack = false;
    let nak = w.meshes[0].channels.encrypt(&nak, 0).unwrap();
    assert!(w.receive_from_mqtt(A, nak, Duration::ZERO).unwrap());
    let events = run(&mut w, HOUR);
    let sent = sent_by(&events, A, TxKind::Originated);
    let (_, info) = w.meshes[0].channels.decrypt(&sent[0]).unwrap();
    assert_eq!(info.to(), V);
    assert_eq!(info.portnum(), Some(proto::PortNum::NodeinfoApp));
    let user = proto::User::decode(&info.data().unwrap().payload[..]).unwrap();
    assert_eq!(
        user.public_key,
        node_key(SEED, A).public_key().as_bytes().to_vec()
    );
}

#[test]
fn each_retransmission_of_a_pki_dm_is_encrypted_again_with_a_fresh_extra_nonce() {
    let mut w = lossy_world(1.0);
    let id = w.transmit(A, dm(B, "anyone?"), Duration::ZERO).unwrap();
    let events = run(&mut w, HOUR);
    let mut sent = sent_by(&events, A, TxKind::Originated);
    sent.extend(sent_by(&events, A, TxKind::Retransmission));
    assert_eq!(sent.len(), 4, "the first try and three retries");
    assert!(sent.iter().all(|p| p.id() == id && p.is_pki()));
    let payloads: std::collections::BTreeSet<Vec<u8>> = sent
        .iter()
        .map(|p| match p.payload() {
            mesh_core::Payload::Encrypted(c) => c.to_vec(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(payloads.len(), 4, "four different ciphertexts");
    let b = node_key(SEED, B);
    for p in &sent {
        let read = p.decrypt_pki(&b, &node_key(SEED, A).public_key()).unwrap();
        assert_eq!(read.text().as_deref(), Some("anyone?"));
    }
}
