//! Issue 6's end-to-end MQTT checks: the real `archipel run` between `archipel sim` meshes and a
//! real Mosquitto (Debian's 2.0), each test with its own broker on free loopback ports.
//!
//! What is checked is what the people on a mesh hear (Archipel's own radio link in the test,
//! beside the gateway's radio), what independent MQTT clients see (`mosquitto_sub`, whose
//! messages a Python script reads with the `meshtastic` package's own protobufs and decrypts
//! with the channel key through the `cryptography` package; `mosquitto_pub` for the downlink),
//! and what the gateway prints.
//!
//! Nothing waits on a clock: every wait is for a line, a packet or a message, bounded. That
//! something happened exactly once (or never) is asserted after a later marker on the same
//! path arrived, since the gateway drains each destination in order within a class.

#[path = "mqtt_relay/world.rs"]
mod world;

use std::time::Instant;

use archipel_e2e::bridge::*;
use archipel_e2e::mosquitto::{BrokerOptions, Subscriber};
use mesh_core::{ChannelKey, NodeId, Packet, PacketId, proto};
use nix::sys::signal::Signal;
use world::*;

// ---------------------------------------------------------------------------------------------
// 1. Sim text -> MQTT

#[test]
fn a_text_said_on_the_mesh_is_published_as_the_firmware_does_and_reads_with_the_meshtastic_protobufs()
 {
    let w = North::start("mqtt-uplink", BrokerOptions::default());
    let sub = Subscriber::start(&w.broker, &format!("{ROOT}/2/#"), None);
    let routes = [route("Harbour", &["north"], &["broker"], "Harbour", "")];
    let config = w.config("", &routes);
    let mut gw = w.gateway(&config, None, "gateway.log");

    let hello = say(
        w.a2(),
        NORTH_PRIMARY,
        0x1e0f_0001,
        "north to the broker: bridge open",
    );
    let marker = say(w.a2(), NORTH_PRIMARY, 0x1e0f_0002, "a marker after it");
    let got = sub.until(LIMIT, |m| carries(m, &marker));
    // Each once, as the firmware publishes them, and no JSON (it is opt-in).
    assert_eq!(
        read_with_python(&w.dir, &got, "AQ=="),
        [
            envelope_line(&hello, GATEWAY_ID),
            envelope_line(&marker, GATEWAY_ID)
        ]
    );
    gw.wait("the marker relayed to the broker", |l| {
        marker.relayed_to("broker", l) && l.contains("-> broker#Harbour")
    });
}

#[test]
fn with_json_on_the_same_text_is_also_published_in_the_firmwares_json() {
    let w = North::start("mqtt-json", BrokerOptions::default());
    let sub = Subscriber::start(&w.broker, &format!("{ROOT}/2/#"), None);
    let routes = [route("Harbour", &["north"], &["broker"], "Harbour", "")];
    let config = w.config("json = true\n", &routes);
    let _gw = w.gateway(&config, None, "gateway.log");

    let hello = say(w.a2(), NORTH_PRIMARY, 0x1f0f_0001, "north in json too");
    let marker = say(w.a2(), NORTH_PRIMARY, 0x1f0f_0002, "the json marker");
    // The envelope and the JSON of one packet are published together, in either order.
    let mut marker_parts = 0;
    let got = sub.until(LIMIT, |m| {
        marker_parts += usize::from(carries(m, &marker) || json_of(m, &marker));
        marker_parts == 2
    });
    let mut read = read_with_python(&w.dir, &got, "AQ==");
    read.sort();
    let mut expected = vec![
        envelope_line(&hello, GATEWAY_ID),
        json_line(&hello, GATEWAY_ID),
        envelope_line(&marker, GATEWAY_ID),
        json_line(&marker, GATEWAY_ID),
    ];
    expected.sort();
    assert_eq!(read, expected);
}

// ---------------------------------------------------------------------------------------------
// 2. MQTT downlink -> sim mesh

#[test]
fn an_envelope_published_with_mosquitto_pub_is_heard_on_the_mesh_once_zero_hop_even_from_two_gateways()
 {
    let w = North::start("mqtt-downlink", BrokerOptions::default());
    let routes = [route("Harbour", &["north"], &["broker"], "Harbour", "")];
    let config = w.config("", &routes);
    let mut gw = w.gateway(&config, None, "gateway.log");
    let uplink = Subscriber::start(&w.broker, &topic("e", "Harbour", GATEWAY_ID), None);
    let a2 = w.a2();

    let (down, packet) = far_text(FAR, 0x2e0f_0001, "from the broker to north");
    let publish = |p: &Packet, gateway: &str| {
        let bytes = envelope(p, &harbour_key(), gateway);
        w.broker
            .publish_file_with_client(&topic("e", "Harbour", gateway), &bytes, 1);
    };
    publish(&packet, OTHER_GW);
    let got = heard_until(a2, &down);
    let p = got.last().expect("heard");
    assert_eq!(
        (p.from(), p.id()),
        (down.from, down.id),
        "sender and id kept"
    );
    assert_eq!(p.text().as_deref(), Some(down.text.as_str()));
    assert_eq!(p.channel(), NORTH_PRIMARY, "on Harbour");
    assert_eq!(
        p.hop_limit(),
        0,
        "zero-hop on arrival (route hops default 0)"
    );

    // A second gateway relays the same packet; then a marker from the first.
    publish(&packet, THIRD_GW);
    let (marker, marker_packet) = far_text(FAR, 0x2e0f_0002, "marker from the broker");
    publish(&marker_packet, OTHER_GW);
    let heard = heard_until(a2, &marker);
    assert_eq!(times(&got, &down) + times(&heard, &down), 1, "heard once");
    gw.wait("the marker relayed", |l| marker.relayed_to("north", l));
    assert_eq!(gw.count(&|l| down.queued(l)), 1, "{}", gw.printed());

    // Nothing from the broker went back to it: the gateway's next publish is A2's next text.
    let back = say(a2, NORTH_PRIMARY, 0x2e0f_0003, "north after the downlink");
    let published = uplink.until(LIMIT, |m| carries(m, &back));
    assert_eq!(
        published.len(),
        1,
        "the gateway published something else first: {published:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Abuse

#[test]
fn every_abusive_downlink_is_dropped_and_counted_and_a_flood_from_one_node_is_cut_to_its_rate() {
    const BURST: usize = 3;
    const PER_MINUTE: f64 = 6.0;
    let w = North::start("mqtt-abuse", BrokerOptions::default());
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
    let key = harbour_key();
    let on = |gateway: &str| topic("e", "Harbour", gateway);

    let mut abuse: Vec<(Msg, String, Vec<u8>)> = Vec::new();
    let (own, p) = far_text(FAR, 0x3e0f_0001, "our own publish coming back");
    abuse.push((own, on(GATEWAY_ID), envelope(&p, &key, GATEWAY_ID)));
    let (spoof, p) = far_text(A, 0x3e0f_0002, "claims to be our radio");
    abuse.push((spoof, on(OTHER_GW), envelope(&p, &key, OTHER_GW)));
    let (hops, mut p) = far_text(FAR, 0x3e0f_0003, "hop limit 8");
    p.meta_mut().hop_limit = 8;
    abuse.push((hops, on(OTHER_GW), envelope(&p, &key, OTHER_GW)));
    let (start, mut p) = far_text(FAR, 0x3e0f_0004, "hop start 8");
    p.meta_mut().hop_start = 8;
    abuse.push((start, on(OTHER_GW), envelope(&p, &key, OTHER_GW)));
    let (admin, mut p) = far_text(FAR, 0x3e0f_0005, "");
    p = Packet::from_data(
        p.meta().clone(),
        proto::Data {
            portnum: proto::PortNum::AdminApp as i32,
            payload: vec![0x08, 0x01],
            ..Default::default()
        },
    );
    abuse.push((admin, on(OTHER_GW), envelope(&p, &key, OTHER_GW)));
    let (wrong, p) = far_text(FAR, 0x3e0f_0006, "encrypted with another key");
    let other_key = ChannelKey::from_psk(&[9]);
    abuse.push((wrong, on(OTHER_GW), envelope(&p, &other_key, OTHER_GW)));
    for (_, t, bytes) in &abuse {
        w.broker.publish_file_with_client(t, bytes, 1);
    }

    // 1,000 texts from one node, as fast as the broker takes them.
    let flood_started = Instant::now();
    let flood: Vec<(String, Vec<u8>)> = (1..=1000u32)
        .map(|i| {
            let (_, p) = far_text(FLOOD, 0x3f0f_0000 + i, &format!("flood #{i}"));
            (on(OTHER_GW), envelope(&p, &key, OTHER_GW))
        })
        .collect();
    w.broker.publish_in_order(flood);
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let (marker, p) = far_text(FAR2, 0x3e0f_0100, "a marker from a well-behaved node");
    w.broker
        .publish_file_with_client(&on(OTHER_GW), &envelope(&p, &key, OTHER_GW), 1);

    let heard = heard_until(w.a2(), &marker);
    let elapsed = flood_started.elapsed().as_secs_f64();
    for (m, _, _) in &abuse {
        assert_eq!(times(&heard, m), 0, "{:?} reached the mesh", m.text);
    }
    let flood_heard: Vec<PacketId> = heard
        .iter()
        .filter(|p| p.from() == NodeId::new(FLOOD))
        .map(Packet::id)
        .collect();
    // The burst, plus what the rate earned over the whole time (generous: from the flood's
    // start until the marker arrived).
    let allowed = BURST + (elapsed * PER_MINUTE / 60.0).ceil() as usize;
    eprintln!(
        "flood: published in {flood_secs:.2} s, {} of 1000 reached the mesh (at most {allowed})",
        flood_heard.len()
    );
    assert!(
        !flood_heard.is_empty() && flood_heard.len() <= allowed,
        "{} flood texts reached the mesh; at most {allowed} may",
        flood_heard.len()
    );
    let mut distinct = flood_heard.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), flood_heard.len(), "a flood text came twice");

    gw.wait("the marker relayed", |l| marker.relayed_to("north", l));
    let flood_queued = gw.count(&|l| l.contains(&format!(" queued {} ", NodeId::new(FLOOD))));
    assert_eq!(flood_queued, flood_heard.len(), "{}", gw.printed());
    let status = gw.signal_and_wait(Signal::SIGTERM);
    assert!(
        status.success(),
        "the gateway did not stop cleanly: {status:?}"
    );
    assert!(
        gw.texts().last().is_some_and(|l| l.ends_with(" stopped")),
        "{}",
        gw.printed()
    );
    let dropped = abuse.len() + 1000 - flood_queued;
    assert_eq!(
        gw.summary_count("dropped"),
        Some(dropped as u64),
        "the summary counts every drop:\n{}",
        gw.printed()
    );
}
