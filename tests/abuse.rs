//! Issue 10's abuse matrix, end to end: the real `archipel run` between `archipel sim` meshes
//! and a real Mosquitto. Each abuse comes in on an ingress anyone can write to (the MQTT
//! downlink, a mesh the gateway's radio hears), none reaches the other radio, and `/metrics`
//! counts each under its reason.
//!
//! Nothing waits on a clock: a well-behaved message sent after the abuse on the same path is
//! the barrier (the gateway takes each ingress in order and drains each destination in order
//! within a class), so once the far mesh heard it, the abuse has been through the pipeline and
//! its counters are final.
//!
//! What the simulated mesh cannot send is not tested from it: like a LoRa radio, it stamps its
//! own node as `from` and clamps hop fields to the 3 bits of the header, so a spoofed sender or
//! a hop field above 7 can only arrive forged (a broker, an API, a neighbour hub); the router's
//! unit tests cover those for every ingress.

#[allow(dead_code)] // shared with tests/mqtt_relay.rs, which uses the rest of it
#[path = "mqtt_relay/world.rs"]
mod world;

use std::time::Instant;

use archipel_e2e::bridge::*;
use archipel_e2e::mosquitto::BrokerOptions;
use mesh_core::{NodeId, Packet, PacketId, proto};
use world::*;

/// `/metrics` as the gateway serves it at `at`.
fn metrics(at: &str) -> String {
    let mut r = ureq::get(&format!("{at}/metrics"))
        .call()
        .unwrap_or_else(|e| panic!("GET {at}/metrics: {e}"));
    r.body_mut().read_to_string().expect("a text body")
}

/// The value of `archipel_dropped_total{reason="<reason>"}`, 0 when the series is absent.
fn dropped(metrics: &str, reason: &str) -> u64 {
    let series = format!("archipel_dropped_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| {
            v.trim()
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{series}{v}: {e}")) as u64
        })
}

/// A packet from `from` on Harbour whose payload is an admin message (a `get_owner_request`).
fn admin(from: u32, id: u32) -> Packet {
    Packet::from_data(
        proto::MeshPacket {
            from,
            to: NodeId::BROADCAST.get(),
            id,
            hop_limit: 3,
            hop_start: 3,
            ..Default::default()
        },
        proto::Data {
            portnum: proto::PortNum::AdminApp as i32,
            payload: vec![0x18, 0x01],
            ..Default::default()
        },
    )
}

#[test]
fn abusive_downlinks_never_reach_the_radio_and_metrics_count_each_by_reason() {
    const BURST: usize = 3;
    const PER_MINUTE: f64 = 6.0;
    let w = North::start("abuse-mqtt", BrokerOptions::default());
    let routes = [route(
        "Harbour",
        &["broker"],
        &["north"],
        "Harbour",
        "one_way = true\n",
    )];
    let extra = format!("rate_per_node = {PER_MINUTE:?}\nburst_per_node = {BURST}\n");
    let config = w.config(&extra, &routes);
    let mut gw = w.gateway(&config, None, "gateway.log");
    let at = gw.http();
    let key = harbour_key();
    let on = topic("e", "Harbour", OTHER_GW);

    let mut abuse: Vec<(Msg, Packet)> = Vec::new();
    // `from` is the gateway's own radio: a spoof, or our own relay coming back.
    abuse.push(far_text(A, 0x4a0f_0001, "claims to be the gateway's radio"));
    let (m, mut p) = far_text(FAR, 0x4a0f_0002, "hop limit 8");
    p.meta_mut().hop_limit = 8;
    abuse.push((m, p));
    let (m, mut p) = far_text(FAR, 0x4a0f_0003, "hop start 9");
    p.meta_mut().hop_start = 9;
    abuse.push((m, p));
    let admin_msg = Msg {
        from: NodeId::new(FAR),
        id: PacketId::new(0x4a0f_0004),
        text: String::new(),
    };
    abuse.push((admin_msg, admin(FAR, 0x4a0f_0004)));
    let mut messages: Vec<(String, Vec<u8>)> = abuse
        .iter()
        .map(|(_, p)| (on.clone(), envelope(p, &key, OTHER_GW)))
        .collect();
    // Then 1,000 texts from one node, as fast as the broker takes them.
    messages.extend((1..=1000u32).map(|i| {
        let (_, p) = far_text(FLOOD, 0x4b0f_0000 + i, &format!("flood #{i}"));
        (on.clone(), envelope(&p, &key, OTHER_GW))
    }));
    let started = Instant::now();
    w.broker.publish_in_order(messages);
    let (marker, p) = far_text(FAR2, 0x4a0f_0100, "a marker from a well-behaved node");
    w.broker
        .publish_file_with_client(&on, &envelope(&p, &key, OTHER_GW), 1);

    let heard = heard_until(w.a2(), &marker);
    let elapsed = started.elapsed().as_secs_f64();
    for (m, _) in &abuse {
        assert_eq!(
            heard
                .iter()
                .filter(|p| p.from() == m.from && p.id() == m.id)
                .count(),
            0,
            "{:?} ({}) reached the mesh",
            m.text,
            m.id
        );
    }
    let flood = heard
        .iter()
        .filter(|p| p.from() == NodeId::new(FLOOD))
        .count();
    // The burst, plus what the rate earned from the flood's start until the marker arrived.
    let allowed = BURST + (elapsed * PER_MINUTE / 60.0).ceil() as usize;
    eprintln!("flood: {flood} of 1000 reached the mesh in {elapsed:.2} s (at most {allowed})");
    assert!(
        (1..=allowed).contains(&flood),
        "{flood} flood texts reached the mesh; at most {allowed} may"
    );

    gw.wait("the marker relayed", |l| marker.relayed_to("north", l));
    let queued = gw.count(&|l| l.contains(&format!(" queued {} ", NodeId::new(FLOOD))));
    let m = metrics(&at);
    let counted: Vec<(&str, u64)> = ["spoofed", "hops", "admin", "rate-limited"]
        .into_iter()
        .map(|r| (r, dropped(&m, r)))
        .collect();
    assert_eq!(
        counted,
        [
            ("spoofed", 1),
            ("hops", 2),
            ("admin", 1),
            ("rate-limited", (1000 - queued) as u64)
        ],
        "archipel_dropped_total by reason"
    );
    assert!(gw.terminate().success(), "{}", gw.printed());
}

#[test]
fn admin_traffic_heard_on_a_mesh_never_reaches_the_other_radio_and_is_counted() {
    let bridge = Bridge::start("abuse-radio", &bridge_routes());
    let mut gw = bridge.gateway(None);
    let at = gw.http();
    let (a2, b2) = (&bridge.a2, &bridge.b2);

    let mut p = admin(0, 0x4c0f_0001);
    p.meta_mut().channel = NORTH_PRIMARY;
    let status = a2.send(p);
    assert_eq!(
        status,
        mesh_core::DeliveryStatus::Delivered,
        "the radio did not take the admin packet"
    );
    let marker = say(
        a2,
        NORTH_PRIMARY,
        0x4c0f_0002,
        "north after an admin packet",
    );
    let heard = heard_until(b2, &marker);
    let admin_heard = heard
        .iter()
        .filter(|p| p.portnum() == Some(proto::PortNum::AdminApp))
        .count();
    assert_eq!(admin_heard, 0, "an admin packet reached the south mesh");
    let admin_msg = Msg {
        from: a2.node(),
        id: PacketId::new(0x4c0f_0001),
        text: String::new(),
    };
    assert_eq!(gw.count(&|l| admin_msg.queued(l)), 0, "{}", gw.printed());
    gw.wait("the marker relayed", |l| marker.relayed_to("south", l));
    let m = metrics(&at);
    assert_eq!(
        dropped(&m, "admin"),
        1,
        "archipel_dropped_total{{reason=\"admin\"}}:\n{m}"
    );
    assert!(gw.terminate().success(), "{}", gw.printed());
}

/// A NodeInfo from A2 (the radio stamps its node) on the primary channel, announcing `key` as its public key.
fn node_info(id: u32, key: [u8; 32]) -> Packet {
    let user = proto::User {
        id: NodeId::new(A2).to_string(),
        long_name: "North person".into(),
        short_name: "Nort".into(),
        public_key: key.to_vec(),
        ..Default::default()
    };
    Packet::from_data(
        proto::MeshPacket {
            to: NodeId::BROADCAST.get(),
            channel: NORTH_PRIMARY,
            id,
            hop_limit: 3,
            ..Default::default()
        },
        proto::Data {
            portnum: proto::PortNum::NodeinfoApp as i32,
            payload: prost::Message::encode_to_vec(&user),
            ..Default::default()
        },
    )
}

#[test]
fn a_node_info_changing_a_known_public_key_is_kept_from_the_other_radio_counted_and_said() {
    let bridge = Bridge::start("abuse-key", &bridge_routes());
    let mut gw = bridge.gateway(None);
    let at = gw.http();
    let (a2, b2) = (&bridge.a2, &bridge.b2);

    let first = Msg {
        from: a2.node(),
        id: PacketId::new(0x4d0f_0001),
        text: String::new(),
    };
    let second = Msg {
        id: PacketId::new(0x4d0f_0002),
        ..first.clone()
    };
    for (m, key) in [(&first, [1; 32]), (&second, [2; 32])] {
        let status = a2.send(node_info(m.id.get(), key));
        assert_eq!(status, mesh_core::DeliveryStatus::Delivered);
    }
    let marker = say(a2, NORTH_PRIMARY, 0x4d0f_0003, "north after a new key");
    // Until both the marker and the first announcement came, in either order: the simulated
    // radio that rebroadcasts what the gateway injects gives each packet its own contention
    // delay, and a text is more urgent than a NodeInfo. The changed announcement never
    // reaches the store (no `queued` line), so nothing of it can come later.
    let (mut got_marker, mut got_first) = (false, false);
    let heard = b2.packets_until(LIMIT, |p| {
        got_marker |= marker.is(p);
        got_first |= first.is(p);
        got_marker && got_first
    });
    assert_eq!(times(&heard, &first), 1, "the first key crosses");
    assert_eq!(gw.count(&|l| second.queued(l)), 0, "{}", gw.printed());
    assert_eq!(
        times(&heard, &second),
        0,
        "the changed key reached the south mesh"
    );
    gw.wait("the key problem", |l| {
        l.contains("PROBLEM north") && l.contains("public key other than")
    });
    let m = metrics(&at);
    assert_eq!(dropped(&m, "key-changed"), 1, "{}", gw.printed());
    assert!(gw.terminate().success(), "{}", gw.printed());
}
