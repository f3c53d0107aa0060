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

use std::os::unix::process::ExitStatusExt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use archipel_e2e::MeshClient;
use archipel_e2e::bridge::*;
use archipel_e2e::mosquitto::{BrokerOptions, Mosquitto, Subscriber};
use mesh_core::{ChannelKey, Envelope, GatewayId, NodeId, Packet, PacketId, proto};
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

    // Another gateway on this mesh publishes what it heard of that text: the same (from, id)
    // our radio heard, so it is dropped as seen and never sent to the mesh a second time.
    let theirs = Envelope::decode(&published[0].payload).expect("an envelope");
    let theirs = Envelope::new(theirs.packet, theirs.channel_id, GatewayId::parse(OTHER_GW));
    w.broker
        .publish_file_with_client(&topic("e", "Harbour", OTHER_GW), &theirs.encode(), 1);
    let (last, last_packet) = far_text(FAR, 0x2e0f_0004, "the last marker");
    publish(&last_packet, OTHER_GW);
    heard_until(a2, &last);
    gw.wait("the last marker relayed", |l| last.relayed_to("north", l));
    assert_eq!(gw.count(&|l| back.queued(l)), 1, "{}", gw.printed());
    assert_eq!(gw.count(&|l| back.relayed_to("north", l)), 0);
}

// ---------------------------------------------------------------------------------------------
// 3. Abuse

#[test]
fn a_tools_json_sendtext_goes_out_as_the_named_radio_and_other_nodes_are_refused() {
    let w = North::start("mqtt-sendtext", BrokerOptions::default());
    let routes = [route("Harbour", &["north"], &["broker"], "Harbour", "")];
    let config = w.config("downlink_json = true\n", &routes);
    let mut gw = w.gateway(&config, None, "gateway.log");
    let a2 = w.a2();
    let downlink = format!("{ROOT}/2/json/mqtt/");
    let send = |from: u32, text: &str| {
        let json =
            format!(r#"{{"from": {from}, "type": "sendtext", "payload": "{text}", "channel": 0}}"#);
        w.broker.publish_with_client(&downlink, &json, 1);
    };
    // A node that is none of our radios is refused; the gateway's radio A sends as itself.
    send(0x0bad_0bad, "from a stranger");
    send(A, "water at the school from 3 pm");
    let heard = a2.packets_until(LIMIT, |p| {
        p.text().as_deref() == Some("water at the school from 3 pm")
    });
    let p = heard.last().expect("heard");
    assert_eq!(p.from(), NodeId::new(A), "sent as the gateway's radio");
    assert_eq!(p.channel(), NORTH_PRIMARY);
    assert!(
        heard
            .iter()
            .all(|p| p.text().as_deref() != Some("from a stranger")),
        "nothing from a node that is not ours"
    );
    gw.wait("relayed to north", |l| {
        l.contains(" relayed !00000000 ") && l.contains("-> north#Harbour")
    });
    assert!(gw.terminate().success());
    let summary = gw
        .texts()
        .into_iter()
        .rev()
        .find(|l| l.contains(" summary: "))
        .unwrap_or_default();
    assert!(summary.contains("not-our-radio 1"), "{summary}");
}

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
    // Our own gateway id coming back is the echo of what we publish, not abuse: ignored and
    // not counted as a drop.
    let dropped = abuse.len() - 1 + 1000 - flood_queued;
    assert_eq!(
        gw.summary_count("dropped"),
        Some(dropped as u64),
        "the summary counts every drop:\n{}",
        gw.printed()
    );
    let summary = gw
        .texts()
        .into_iter()
        .rev()
        .find(|l| l.contains(" summary: "))
        .unwrap_or_default();
    for reason in [
        "spoofed 1",
        "hops 2",
        "admin 1",
        "undecryptable 1",
        &format!("rate-limited {}", 1000 - flood_queued),
    ] {
        assert!(
            summary.contains(reason),
            "counted by reason ({reason}): {summary}"
        );
    }
    // A loss is said on stdout as it happens, once per kind: the flood gives one line, and
    // the rest of it is told with the summary.
    let texts = gw.texts();
    for reason in ["spoofed", "hops", "admin", "undecryptable", "rate-limited"] {
        let shown = texts
            .iter()
            .filter(|l| {
                l.contains("dropped a packet")
                    && l.ends_with(&format!(
                        "broker: {reason} (more like it are counted in the summary)"
                    ))
            })
            .count();
        assert_eq!(shown, 1, "one line for {reason}:\n{}", gw.printed());
    }
    let more = format!(
        "dropped {} more heard on broker: rate-limited",
        1000 - flood_queued - 1
    );
    assert!(
        texts.iter().any(|l| l.ends_with(&more)),
        "the flood's other drops are told once, with the summary ({more}):\n{}",
        gw.printed()
    );
    // The configuration in force is printed before anything else, and stdout and the log
    // share one time format.
    assert!(
        texts
            .iter()
            .any(|l| l.ends_with("starting with this configuration:")),
        "{}",
        gw.printed()
    );
    let stamped = |l: &str| {
        let b = l.as_bytes();
        b.len() > 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z' && b[20] == b' '
    };
    let first = &texts[0];
    assert!(stamped(first), "stdout line not stamped RFC 3339: {first}");
}

// ---------------------------------------------------------------------------------------------
// 4. The broker away with 500 queued

#[test]
fn with_the_broker_away_500_messages_wait_and_arrive_once_in_order_when_it_returns() {
    let dir = Scratch::new("mqtt-away");
    let mut out = Mosquitto::start(BrokerOptions {
        persistence: true,
        ..Default::default()
    });
    let inbox = Mosquitto::start(BrokerOptions::default());
    // A persistent session on the broker that goes away: it keeps what arrives while either
    // side is down, and the client reconnects by itself.
    let sub = Subscriber::start(&out, &filter("Harbour"), Some("e2e-away-subscriber"));
    let root = format!("root = \"{ROOT}\"\n");
    let sections = [
        mqtt_section(
            "inbox",
            inbox.port(),
            &format!("{root}rate_per_node = 600.0\nburst_per_node = 1000\n"),
        ),
        mqtt_section("broker", out.port(), &root),
        "[[channel]]\nname = \"Harbour\"\npsk = \"AQ==\"\n".to_owned(),
    ];
    let routes = [route(
        "Harbour",
        &["inbox"],
        &["broker"],
        "Harbour",
        "one_way = true\n",
    )];
    let config = dir.path("gateway.toml");
    let text = gateway_toml(&dir.path("store.sqlite"), "", &sections, &routes);
    std::fs::write(&config, text).expect("gateway config written");
    let mut gw = Gateway::start(&dir, &config, None);
    gw.wait_endpoint_up(0, "mqtt", "inbox");
    gw.wait_endpoint_up(0, "mqtt", "broker");
    inbox.wait_subscriptions(&[(&client_id(GATEWAY_ID), &filter("Harbour"))]);

    let mark = gw.mark();
    out.stop();
    gw.wait_after(mark, "broker down", |l| l.contains(" mqtt broker down"));
    let key = harbour_key();
    let mut msgs = Vec::new();
    let mut envelopes = Vec::new();
    for i in 1..=500u32 {
        let (m, p) = far_text(
            FAR,
            0x4e0f_0000 + i,
            &format!("while the broker was away #{i}"),
        );
        envelopes.push((
            topic("e", "Harbour", OTHER_GW),
            envelope(&p, &key, OTHER_GW),
        ));
        msgs.push(m);
    }
    inbox.publish_in_order(envelopes);
    gw.wait_count("500 queued for the broker", 500, |l| {
        l.contains(" queued ") && l.ends_with(" for broker")
    });

    let mark = gw.mark();
    out.restart();
    gw.wait_endpoint_up(mark, "mqtt", "broker");
    let (marker, p) = far_text(FAR, 0x4e0f_1000, "after the broker came back");
    let marker_envelope = (
        topic("e", "Harbour", OTHER_GW),
        envelope(&p, &key, OTHER_GW),
    );
    inbox.publish_in_order(vec![marker_envelope]);
    msgs.push(marker.clone());
    let got = sub.until(LIMIT, |m| carries(m, &marker));
    let arrived: Vec<(NodeId, PacketId, String)> = got
        .iter()
        .map(|m| {
            let e = Envelope::decode(&m.payload).expect("an envelope");
            assert_eq!(m.topic, topic("e", "Harbour", GATEWAY_ID));
            let p = e.packet.decrypt(&key).expect("decrypts with Harbour's key");
            (p.from(), p.id(), p.text().unwrap_or_default())
        })
        .collect();
    let expected: Vec<(NodeId, PacketId, String)> = msgs
        .iter()
        .map(|m| (m.from, m.id, m.text.clone()))
        .collect();
    if arrived != expected {
        let ids: Vec<String> = arrived.iter().map(|(_, id, _)| id.to_string()).collect();
        let relayed: Vec<String> = gw
            .texts()
            .iter()
            .filter(|l| l.contains(" relayed ") && l.contains("-> broker#"))
            .filter_map(|l| {
                l.split(" relayed ")
                    .nth(1)?
                    .split_whitespace()
                    .nth(1)
                    .map(str::to_owned)
            })
            .collect();
        panic!(
            "{} arrived, {} expected, once each and in order; arrived: {}\nrelayed by the gateway: {}",
            arrived.len(),
            expected.len(),
            ids.join(" "),
            relayed.join(" ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. kill -9 with downlink unacknowledged

/// How the first run of the gateway dies.
enum Kill {
    /// At a crash point (`ARCHIPEL_CRASH_AT`).
    At(&'static str),
    /// By SIGKILL from the test, once this many messages were printed as queued.
    AfterQueued(usize),
}

/// Downlink texts flow from the broker into the store for a radio that is away; the gateway
/// dies by SIGKILL; a new run on the same store and client id gets the broker's redeliveries;
/// once the radio is back, the mesh hears every text once.
fn downlink_survives_a_kill(tag: &str, base: u32, kill: Kill) {
    const COUNT: u32 = 30;
    let mut w = North::away(
        tag,
        BrokerOptions {
            // `Sending PUBLISH to CLIENT (d1, ...`: the broker's redeliveries.
            extra: vec!["log_type debug".into()],
            ..Default::default()
        },
    );
    let routes = [route(
        "Harbour",
        &["broker"],
        &["north"],
        "Harbour",
        "one_way = true\n",
    )];
    let config = w.config("rate_per_node = 600.0\nburst_per_node = 1000\n", &routes);
    let crash = match kill {
        Kill::At(point) => Some(point),
        Kill::AfterQueued(_) => None,
    };
    let mut gw = w.gateway(&config, crash, "gateway-1.log");

    let key = harbour_key();
    let mut msgs = Vec::new();
    let mut envelopes = Vec::new();
    for i in 1..=COUNT {
        let (m, p) = far_text(FAR, base + i, &format!("{tag} downlink #{i}"));
        envelopes.push((
            topic("e", "Harbour", OTHER_GW),
            envelope(&p, &key, OTHER_GW),
        ));
        msgs.push(m);
    }
    w.broker.publish_in_order(envelopes);
    let status = match kill {
        Kill::At(_) => gw.exit(),
        Kill::AfterQueued(n) => {
            gw.wait_count("queued before the kill", n, |l| l.contains(" queued "));
            gw.signal_and_wait(Signal::SIGKILL)
        }
    };
    assert_eq!(
        status.signal(),
        Some(Signal::SIGKILL as i32),
        "the first run should die by SIGKILL: {status:?}\n{}",
        gw.printed()
    );
    let first_run = gw.texts();

    let mut gw = w.gateway(&config, None, "gateway-2.log");
    let (marker, p) = far_text(FAR, base + 0x100, &format!("{tag} marker"));
    let marker_envelope = (
        topic("e", "Harbour", OTHER_GW),
        envelope(&p, &key, OTHER_GW),
    );
    w.broker.publish_in_order(vec![marker_envelope]);
    gw.wait("the marker queued", |l| marker.queued(l));
    w.start_sim();
    gw.wait_endpoint_up(0, "radio", "north");
    let heard = heard_until(w.a2(), &marker);
    msgs.push(marker.clone());
    assert_once(&heard, &msgs, &[]);

    // Stored once: no text was queued by both runs.
    let both_runs = [first_run.clone(), gw.texts()].concat();
    for m in &msgs {
        let queued = both_runs.iter().filter(|l| m.queued(l)).count();
        assert!(queued <= 1, "{:?} queued {queued} times", m.text);
    }
    let resent = format!("Sending PUBLISH to {} (d1,", client_id(GATEWAY_ID));
    let redelivered = w.broker.log_text().matches(&resent).count();
    eprintln!(
        "{tag}: the first run printed {} queued line(s); the broker redelivered {redelivered} message(s)",
        first_run.iter().filter(|l| l.contains(" queued ")).count()
    );
    if let Kill::At(_) = kill {
        assert!(
            redelivered >= 1,
            "the message committed but not acknowledged was not redelivered"
        );
    }
}

#[test]
fn a_gateway_killed_before_acking_a_committed_downlink_loses_and_duplicates_nothing() {
    downlink_survives_a_kill("mqtt-kill-ack", 0x5e0f_0000, Kill::At("mqtt.before-ack:10"));
}

#[test]
fn a_gateway_killed_at_a_random_moment_during_downlink_loses_and_duplicates_nothing() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    let after = 1 + (seed % 20) as usize;
    eprintln!("random kill: seed {seed}, SIGKILL once {after} texts were queued");
    downlink_survives_a_kill("mqtt-kill-random", 0x5f0f_0000, Kill::AfterQueued(after));
}

// ---------------------------------------------------------------------------------------------
// 6. Two gateways through one broker

#[test]
fn two_gateways_on_one_broker_carry_a_text_across_once_and_never_back() {
    let dir = Scratch::new("mqtt-two");
    let ports = Ports::new();
    let broker = Mosquitto::start(BrokerOptions::default());
    let north = Sim::start(&dir, "north", &north_world(&ports), 2);
    let south = Sim::start(&dir, "south", &south_world(&ports), 2);
    let a2 = MeshClient::connect("A2", &north.tcp(A2), LIMIT);
    let b2 = MeshClient::connect("B2", &south.tcp(B2), LIMIT);
    let sub = Subscriber::start(&broker, &filter("ops"), None);
    let write = |name: &str, id: &str, radio: String, mesh: &str| {
        let sections = [radio, mqtt_section("broker", broker.port(), "")];
        let routes = [route("ops", &[mesh], &["broker"], "ops", "")];
        let store = dir.path(&format!("{name}.sqlite"));
        let path = dir.path(&format!("{name}.toml"));
        std::fs::write(&path, gateway_toml_as(id, &store, "", &sections, &routes)).unwrap();
        path
    };
    let config_a = write(
        "gateway-a",
        GATEWAY_ID,
        radio("north", ports.a, "ShortTurbo", &north_channels(), ""),
        "north",
    );
    let config_b = write(
        "gateway-b",
        GATEWAY_B,
        radio("south", ports.b, "ShortFast", &south_channels(), ""),
        "south",
    );
    let mut gw_a = Gateway::start_logged(&dir, &config_a, None, "gateway-a.log");
    let mut gw_b = Gateway::start_logged(&dir, &config_b, None, "gateway-b.log");
    for (gw, radio) in [(&mut gw_a, "north"), (&mut gw_b, "south")] {
        gw.wait_endpoint_up(0, "radio", radio);
        gw.wait_endpoint_up(0, "mqtt", "broker");
    }
    broker.wait_subscriptions(&[
        (&client_id(GATEWAY_ID), &filter("ops")),
        (&client_id(GATEWAY_B), &filter("ops")),
    ]);

    let hello = say(
        &a2,
        NORTH_OPS,
        0x6e0f_0001,
        "north to south through the broker",
    );
    let got = b2.packets_until(LIMIT, |p| hello.is(p));
    let p = got.last().expect("heard");
    assert_eq!((p.from(), p.id()), (hello.from, hello.id));
    assert_eq!((p.channel(), p.hop_limit()), (SOUTH_OPS, 0));
    assert_eq!(p.text().as_deref(), Some(hello.text.as_str()));
    let marker = say(&a2, NORTH_OPS, 0x6e0f_0002, "a north marker");
    let heard = heard_until(&b2, &marker);
    assert_eq!(times(&got, &hello) + times(&heard, &hello), 1, "heard once");

    // The other way, through the same gateways: what north hears before it never includes
    // north's own texts coming back.
    let back = say(
        &b2,
        SOUTH_OPS,
        0x6e0f_0003,
        "south to north through the broker",
    );
    let at_north = heard_until(&a2, &back);
    assert_eq!(at_north.last().unwrap().channel(), NORTH_OPS);
    assert_eq!(
        times(&at_north, &hello) + times(&at_north, &marker),
        0,
        "north's texts came back"
    );
    // On the broker: each text once, from the gateway of the mesh it was said on.
    let published: Vec<(String, PacketId)> = sub
        .until(LIMIT, |m| carries(m, &back))
        .iter()
        .map(|m| {
            let e = Envelope::decode(&m.payload).expect("an envelope");
            (e.gateway_id.to_string(), e.packet.id())
        })
        .collect();
    assert_eq!(
        published,
        [
            (GATEWAY_ID.to_owned(), hello.id),
            (GATEWAY_ID.to_owned(), marker.id),
            (GATEWAY_B.to_owned(), back.id),
        ]
    );
    gw_b.wait("hello relayed south", |l| hello.relayed_to("south", l));
    assert_eq!(gw_b.count(&|l| hello.relayed_to("south", l)), 1);
    assert_eq!(gw_a.count(&|l| back.relayed_to("broker", l)), 0);
}
