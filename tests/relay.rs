//! The gateway end to end: `archipel run` between two `archipel sim` processes (two meshes on
//! different presets, channel names and keys), with Archipel's own radio link in the test as
//! the people on each mesh (radio A2 on the north mesh beside the gateway's radio A, B2 on the
//! south mesh beside B). What is checked is what those people see, and what the gateway prints.
//!
//! Nothing waits on a clock: every wait is for a line or a packet, bounded. That something
//! happened exactly once (or never) is asserted after a later marker message on the same path
//! arrived, since the gateway drains each destination in order within a class.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use archipel_e2e::bridge::*;
use archipel_e2e::{MeshClient, free_port, run_archipel};
use mesh_core::NodeId;

// ---------------------------------------------------------------------------------------------
// 1. Crossing

#[test]
fn a_text_crosses_to_the_other_mesh_once_on_the_mapped_channel_keeping_sender_and_id_and_comes_back()
 {
    let bridge = Bridge::start("relay-cross", &bridge_routes());
    let mut gw = bridge.gateway(None);
    let (a2, b2) = (&bridge.a2, &bridge.b2);

    let hello = say(
        a2,
        NORTH_PRIMARY,
        0x1c0f_0001,
        "north to south: water at the school",
    );
    let got = b2.packets_until(LIMIT, |p| hello.is(p));
    let p = got.last().expect("heard");
    assert_eq!(p.from(), a2.node(), "the sender is kept");
    assert_eq!(p.id(), hello.id, "the packet id is kept");
    assert_eq!(
        p.channel(),
        SOUTH_PRIMARY,
        "mapped onto south's primary, Valley"
    );
    // B2 decrypted it with south's Valley key (simple5, not north's default key): the gateway
    // re-encrypted it for the far channel.
    assert_eq!(p.text().as_deref(), Some(hello.text.as_str()));
    assert_eq!(p.hop_limit(), 0, "hop limit 0 on arrival by default");
    // The marker goes on ops (index 1 north, 2 south), the same class, so after it the first
    // text cannot still be on its way.
    let marker = say(a2, NORTH_OPS, 0x1c0f_0002, "north to south on ops");
    let heard = heard_until(b2, &marker);
    let m = heard.last().unwrap();
    assert_eq!(
        (m.channel(), m.hop_limit()),
        (SOUTH_OPS, 0),
        "ops maps onto ops"
    );
    assert_eq!(
        times(&got, &hello) + times(&heard, &hello),
        1,
        "relayed once"
    );
    gw.wait("hello relayed", |l| {
        hello.relayed_to("south", l) && l.contains("-> south#Valley")
    });
    gw.wait("marker relayed", |l| {
        marker.relayed_to("south", l) && l.contains("-> south#ops")
    });
    assert_eq!(gw.count(&|l| hello.relayed_to("south", l)), 1);

    // The other way.
    let back = say(b2, SOUTH_PRIMARY, 0x1c0f_0003, "south to north: road open");
    let got = a2.packets_until(LIMIT, |p| back.is(p));
    let p = got.last().unwrap();
    assert_eq!((p.from(), p.id()), (b2.node(), back.id));
    assert_eq!((p.channel(), p.hop_limit()), (NORTH_PRIMARY, 0));
    assert_eq!(p.text().as_deref(), Some(back.text.as_str()));
    let marker = say(b2, SOUTH_OPS, 0x1c0f_0004, "south to north on ops");
    let heard = heard_until(a2, &marker);
    assert_eq!(heard.last().unwrap().channel(), NORTH_OPS);
    assert_eq!(times(&got, &back) + times(&heard, &back), 1, "relayed once");
    gw.wait("back relayed", |l| {
        back.relayed_to("north", l) && l.contains("-> north#Harbour")
    });
}

// ---------------------------------------------------------------------------------------------
// 2. Heard twice

#[test]
fn a_message_heard_by_two_gateway_radios_of_one_mesh_is_relayed_once() {
    let dir = Scratch::new("relay-twice");
    let ports = Ports::new();
    let a1_port = free_port();
    let north = Sim::start(
        &dir,
        "north",
        &mesh(
            "north",
            "ShortTurbo",
            &north_channels(),
            50.0,
            &[
                node(A, "North gateway radio", Some(ports.a), None),
                node(A1, "North gateway radio 2", Some(a1_port), None),
                node(A2, "North person", Some(ports.a2), None),
            ],
        ),
        3,
    );
    let south = Sim::start(&dir, "south", &south_world(&ports), 2);
    let a2 = MeshClient::connect("A2", &north.tcp(A2), LIMIT);
    let b2 = MeshClient::connect("B2", &south.tcp(B2), LIMIT);
    let config = dir.path("gateway.toml");
    let mut radios = bridge_radios(&ports);
    radios.push(radio(
        "north-b",
        a1_port,
        "ShortTurbo",
        &north_channels(),
        "",
    ));
    let routes = [route(
        "Harbour",
        &["north", "north-b"],
        &["south"],
        "Valley",
        "",
    )];
    std::fs::write(
        &config,
        gateway_toml(&dir.path("store.sqlite"), "", &radios, &routes),
    )
    .unwrap();
    let mut gw = Gateway::start(&dir, &config, None);
    gw.wait_ready(&["north", "north-b", "south"]);

    let once = say(&a2, NORTH_PRIMARY, 0x2c0f_0001, "heard by both hub radios");
    let marker = say(&a2, NORTH_PRIMARY, 0x2c0f_0002, "marker");
    let heard = heard_until(&b2, &marker);
    assert_eq!(times(&heard, &once), 1, "B2 hears it once");
    gw.wait("marker relayed", |l| marker.relayed_to("south", l));
    assert_eq!(
        gw.count(&|l| once.queued(l)),
        1,
        "queued once:\n{}",
        gw.printed()
    );
    assert_eq!(
        gw.count(&|l| once.relayed_to("south", l)),
        1,
        "relayed once:\n{}",
        gw.printed()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Routes

#[test]
fn one_way_routes_are_honoured_and_a_route_sets_the_hop_limit_on_arrival() {
    let routes = vec![
        route(
            "Harbour",
            &["north"],
            &["south"],
            "Valley",
            "one_way = true\nhops = 2\n",
        ),
        route("ops", &["north"], &["south"], "ops", ""),
    ];
    let bridge = Bridge::start("relay-routes", &routes);
    let mut gw = bridge.gateway(None);
    let (a2, b2) = (&bridge.a2, &bridge.b2);

    let down = say(a2, NORTH_PRIMARY, 0x3c0f_0001, "down the one-way route");
    let got = b2.packets_until(LIMIT, |p| down.is(p));
    let p = got.last().unwrap();
    assert_eq!(
        (p.channel(), p.hop_limit()),
        (SOUTH_PRIMARY, 2),
        "hops = 2 on this route"
    );

    // Against the one-way route: never relayed. The ops message after it (same class, same
    // destination queue) is the marker.
    let against = say(b2, SOUTH_PRIMARY, 0x3c0f_0002, "up the one-way route");
    let marker = say(b2, SOUTH_OPS, 0x3c0f_0003, "up on ops");
    let heard = heard_until(a2, &marker);
    let m = heard.last().unwrap();
    assert_eq!((m.channel(), m.hop_limit()), (NORTH_OPS, 0));
    assert_eq!(
        times(&heard, &against),
        0,
        "the one-way route was crossed backwards"
    );
    gw.wait("ops relayed north", |l| marker.relayed_to("north", l));
    assert_eq!(gw.count(&|l| against.queued(l)), 0, "{}", gw.printed());

    let ops = say(a2, NORTH_OPS, 0x3c0f_0004, "down on ops");
    let got = b2.packets_until(LIMIT, |p| ops.is(p));
    let p = got.last().unwrap();
    assert_eq!((p.channel(), p.hop_limit()), (SOUTH_OPS, 0));
}

// ---------------------------------------------------------------------------------------------
// 4. Store and forward

#[test]
fn texts_for_a_radio_that_is_away_wait_and_arrive_once_in_order_when_it_returns() {
    let mut bridge = Bridge::start("relay-saf", &bridge_routes());
    let mut gw = bridge.gateway(None);
    let mark = gw.mark();
    bridge.stop_south();
    gw.wait_after(mark, "south down", |l| l.contains("radio south down"));

    let texts: Vec<Msg> = (1..=4)
        .map(|i| {
            say(
                &bridge.a2,
                NORTH_PRIMARY,
                0x4c0f_0000 + i,
                &format!("while south was away #{i}"),
            )
        })
        .collect();
    for m in &texts {
        gw.wait(&m.text, |l| m.queued(l) && l.contains("for south"));
    }
    let mark = gw.mark();
    bridge.start_south();
    gw.wait_up(mark, &["south"]);
    let last = texts.last().unwrap();
    let heard = heard_until(&bridge.b2, last);
    // And a marker sent after they were all delivered: nothing comes a second time before it.
    let marker = say(&bridge.a2, NORTH_PRIMARY, 0x4c0f_0100, "after the return");
    let heard = [heard, heard_until(&bridge.b2, &marker)].concat();
    let all = [texts, vec![marker.clone()]].concat();
    assert_once(&heard, &all, &[]);
    gw.wait("the marker relayed", |l| marker.relayed_to("south", l));
    assert_relayed_in_order(&gw.texts(), "south", &all);
    for m in &all {
        assert_eq!(
            gw.count(&|l| m.relayed_to("south", l)),
            1,
            "{}",
            gw.printed()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. kill -9 at deterministic points

/// Runs the gateway armed with `point` while texts flow from A2, with south away so that a
/// backlog exists; sees it die by SIGKILL (after printing `queued_before` texts as queued and
/// `relayed_before` as relayed: the crash point fired where it should); restarts it on the same
/// store without the crash point, and checks what B2 receives: every text the gateway printed
/// as queued before the crash, and every text sent after it, exactly once, relayed in order.
/// A text sent before the crash but never printed as queued (the one in hand at
/// `accept.before-commit`) may be missing, but never comes twice.
fn recovers_from_a_kill_at(
    point: &str,
    tag: &str,
    id_base: u32,
    queued_before: usize,
    relayed_before: usize,
) {
    let mut bridge = Bridge::start(tag, &bridge_routes());
    let mut gw = bridge.gateway(Some(point));
    let mark = gw.mark();
    bridge.stop_south();
    gw.wait_after(mark, "south down", |l| l.contains("radio south down"));

    // A backlog for south, while the gateway may die at any message.
    let mut before = Vec::new();
    for i in 1..=3 {
        let m = say(
            &bridge.a2,
            NORTH_PRIMARY,
            id_base + i,
            &format!("{point} backlog #{i}"),
        );
        before.push(m.clone());
        if gw.wait_or_exit(|l| m.queued(l)).is_none() {
            break;
        }
    }
    // South returns; a drain point fires while the worker drains the backlog.
    bridge.start_south();
    let status = gw.exit();
    assert_eq!(
        status.signal(),
        Some(nix::sys::signal::Signal::SIGKILL as i32),
        "the gateway should die by SIGKILL at {point}: {status:?}\n{}",
        gw.printed()
    );
    let queued: Vec<Msg> = before
        .iter()
        .filter(|m| gw.count(&|l| m.queued(l)) > 0)
        .cloned()
        .collect();
    let unsure: Vec<Msg> = before
        .iter()
        .filter(|m| !queued.contains(m))
        .cloned()
        .collect();
    let relayed = before
        .iter()
        .filter(|m| gw.count(&|l| m.relayed_to("south", l)) > 0)
        .count();
    assert_eq!(
        (queued.len(), relayed),
        (queued_before, relayed_before),
        "queued and relayed before the crash:\n{}",
        gw.printed()
    );
    let printed_before = gw.texts();

    // While the gateway is down, radio A keeps what it hears for its next client; wait until
    // the simulator saw the client go, so this text is not written to the dead connection.
    let a = NodeId::new(A).to_string();
    bridge.north.process.wait_log_line(LIMIT, |l| {
        l.contains("client disconnected") && l.contains(&a)
    });
    let during = say(
        &bridge.a2,
        NORTH_PRIMARY,
        id_base + 10,
        &format!("{point} while the gateway was down"),
    );

    let mut gw = bridge.gateway(None);
    let after = say(
        &bridge.a2,
        NORTH_PRIMARY,
        id_base + 11,
        &format!("{point} after the restart"),
    );
    let heard = heard_until(&bridge.b2, &after);
    let once = [queued, vec![during, after.clone()]].concat();
    assert_once(&heard, &once, &unsure);
    gw.wait("the last text relayed", |l| after.relayed_to("south", l));
    // The gateway's order over both runs: what it queued first went out first. (A text the
    // killed run had handed to the radio but not confirmed is relayed again by the new run and
    // dropped by the radio as a duplicate, so only first lines count.)
    let both_runs = [printed_before.clone(), gw.texts()].concat();
    eprintln!(
        "{point}: killed run printed:\n{}\nrestarted run printed:\n{}",
        printed_before.join("\n"),
        gw.printed()
    );
    assert_relayed_in_order(&both_runs, "south", &once);
}

#[test]
fn a_gateway_killed_before_relaying_a_queued_text_delivers_everything_once_after_restart() {
    // The first text goes out, the gateway dies before handing the second to the radio.
    recovers_from_a_kill_at("drain.before-send:2", "relay-kill-relay", 0x5a0f_0000, 3, 1);
}

#[test]
fn a_gateway_killed_before_confirming_a_relayed_text_delivers_everything_once_after_restart() {
    // The second text reaches radio B, the gateway dies before deleting its row: the new run
    // sends it again, and radio B drops the copy as one it already has.
    recovers_from_a_kill_at(
        "drain.before-confirm:2",
        "relay-kill-confirm",
        0x5b0f_0000,
        3,
        1,
    );
}

#[test]
fn a_gateway_killed_while_accepting_a_text_loses_at_most_that_one_and_duplicates_none() {
    // Two texts queued, the gateway dies with the third in hand: that one is lost (radio A
    // already handed it over), and south being away, nothing was relayed yet.
    recovers_from_a_kill_at(
        "accept.before-commit:3",
        "relay-kill-accept",
        0x5c0f_0000,
        2,
        0,
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Bad configs

#[test]
fn each_bad_config_key_is_refused_by_check_config_and_run_naming_the_key() {
    let dir = Scratch::new("relay-badcfg");
    let ports = Ports::new();
    let good = gateway_toml(
        &dir.path("store.sqlite"),
        "",
        &bridge_radios(&ports),
        &bridge_routes(),
    );
    let path = dir.path("good.toml");
    std::fs::write(&path, &good).unwrap();
    let (ok, out, err) = run_archipel(&["check-config", path.to_str().unwrap()], LIMIT);
    assert!(
        ok && out.contains("configuration OK"),
        "the base config is good:\n{out}{err}"
    );

    let cases: [(&str, String, &[&str]); 5] = [
        (
            "unknown preset",
            good.replacen("preset = \"ShortFast\"", "preset = \"Fastest\"", 1),
            &["radio.1.preset", "Fastest"],
        ),
        (
            "route to an unknown radio",
            good.replacen("to = [\"south\"]", "to = [\"west\"]", 1),
            &["route[0].to", "west"],
        ),
        (
            "unknown key",
            good.replacen("name = \"e2e\"", "name = \"e2e\"\ncolour = \"blue\"", 1),
            &["gateway.colour", "colour"],
        ),
        (
            "bad psk",
            good.replacen("psk = \"AQ==\"", "psk = \"not base64!\"", 1),
            &["radio.0.channels.0.psk"],
        ),
        (
            "missing gateway.id",
            good.replacen("id = \"!a7c40001\"\n", "", 1),
            &["gateway", "`id`"],
        ),
    ];
    for (what, text, names) in cases {
        assert_ne!(text, good, "{what}: the edit applies");
        let path = dir.path(&format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(&path, &text).unwrap();
        let file = path.to_str().unwrap();
        for args in [vec!["check-config", file], vec!["run", "--config", file]] {
            let (ok, _, err) = run_archipel(&args, LIMIT);
            assert!(!ok, "{what}: `archipel {}` accepted it", args.join(" "));
            for name in names {
                assert!(
                    err.contains(name),
                    "{what}: `archipel {}` does not name {name}:\n{err}",
                    args.join(" ")
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Airtime governor

#[test]
fn under_a_flood_the_governor_keeps_the_duty_cycle_lets_direct_texts_overtake_telemetry_and_expires_stale_telemetry()
 {
    // South may use 3 % of any 10 s: 300 ms of airtime, a handful of ShortFast packets. Queued
    // telemetry lives 15 s, longer than a window, so telemetry queued before the text is still
    // waiting when the text goes.
    const WINDOW: Duration = Duration::from_secs(10);
    const DUTY_PERCENT: f64 = 3.0;
    let budget = WINDOW.mul_f64(DUTY_PERCENT / 100.0);
    let Flood {
        dir,
        north,
        south,
        config,
    } = Flood::start("relay-governor", WINDOW, DUTY_PERCENT);
    // The gateway starts right away, so that little telemetry waits in radio A for it: what
    // waits is handed over at once and relayed back to back (see the slack below).
    let mut gw = Gateway::start(&dir, &config, None);
    let a2 = MeshClient::connect("A2", &north.tcp(A2), LIMIT);
    let b2 = MeshClient::connect("B2", &south.tcp(B2), LIMIT);
    gw.wait_ready(&["north", "south"]);

    // In the middle of the flood (a backlog of telemetry for south), a direct message to B2.
    let is_telemetry_for_south =
        |l: &str| l.contains(" queued ") && l.contains("(telemetry) for south");
    gw.wait_count("queued telemetry", 20, is_telemetry_for_south);
    // B2 has been heard: a direct message for a node not heard for a while waits for it.
    let here = say(&b2, SOUTH_PRIMARY, 0x6c0f_0000, "B2 is here");
    gw.wait("B2 heard", |l| here.queued(l));
    let text = say_to(
        &a2,
        b2.node(),
        NORTH_PRIMARY,
        0x6c0f_0001,
        "direct message in the middle of the flood",
    );
    gw.wait("the text relayed", |l| text.relayed_to("south", l));
    b2.packets_until(LIMIT, |p| text.is(p));
    gw.wait("telemetry expired", |l| {
        l.contains(" expired ") && l.contains("telemetry message(s) for south")
    });
    // Watch the relays to south over at least one and a half windows.
    let first = gw
        .lines
        .iter()
        .find(|(_, l)| parse_relayed(l).is_some_and(|r| r.destination == "south"))
        .map(|(at, _)| *at)
        .expect("something was relayed to south");
    gw.read_until(first + WINDOW.mul_f64(1.6));
    let lines = gw.texts();

    // The direct message overtook telemetry queued before it.
    let position = |pick: &dyn Fn(&str) -> bool| lines.iter().position(|l| pick(l)).unwrap();
    let text_queued = position(&|l| text.queued(l));
    let text_relayed = position(&|l| text.relayed_to("south", l));
    let earlier: Vec<String> = lines[..text_queued]
        .iter()
        .filter(|l| is_telemetry_for_south(l))
        .filter_map(|l| message_key(l))
        .collect();
    let overtaken = lines[text_relayed..]
        .iter()
        .filter(|l| {
            parse_relayed(l).is_some_and(|r| r.destination == "south" && r.class == "telemetry")
        })
        .filter_map(|l| message_key(l))
        .find(|k| earlier.contains(k));
    assert!(
        overtaken.is_some(),
        "no telemetry queued before the text was relayed after it:\n{}",
        lines.join("\n")
    );

    // Airtime to south over every rolling window, as the test saw the lines arrive.
    let relays: Vec<(Instant, Duration)> = gw
        .lines
        .iter()
        .filter_map(|(at, l)| {
            parse_relayed(l)
                .filter(|r| r.destination == "south")
                .map(|r| (*at, r.airtime))
        })
        .collect();
    let largest = relays.iter().map(|(_, a)| *a).max().unwrap();
    // Slack of one packet: the governor stamps a packet when the radio took it, the test when
    // its line arrives a little later (after the store's confirm, the activity feed and the
    // pipe). Those delays vary by milliseconds, and once the budget is spent the governor sends
    // each packet just after an older one left its window, so the older one can still look,
    // to the test, as if both were inside one window.
    let fullest = fullest_window(&relays, WINDOW);
    let total: Duration = relays.iter().map(|(_, a)| *a).sum();
    let queued_telemetry = lines.iter().filter(|l| is_telemetry_for_south(l)).count();
    eprintln!(
        "governor: {} relays to south, {total:?} of airtime, fullest window {fullest:?} (budget {budget:?}, largest packet {largest:?}), {queued_telemetry} telemetry queued",
        relays.len()
    );
    assert!(
        fullest <= budget + largest,
        "{fullest:?} of airtime within one {WINDOW:?} window, budget {budget:?}"
    );
    // And the budget was used, not merely respected: more than a window's worth went out, and
    // most of the flood did not.
    assert!(total > budget, "only {total:?} relayed");
    assert!(
        fullest + largest > budget,
        "no window came near the budget: {fullest:?}"
    );
    assert!(
        relays.len() * 2 < queued_telemetry,
        "the flood was not held back"
    );
}

// ---------------------------------------------------------------------------------------------
// Direct messages

/// A radio hands its client only packets for itself or for everyone; a direct message between
/// two other nodes reaches the gateway through the radio's MQTT client-proxy uplink.
#[test]
fn a_direct_message_to_a_node_of_the_other_mesh_crosses() {
    let bridge = Bridge::start("relay-dm", &bridge_routes());
    let mut gw = bridge.gateway(None);
    // B2 has been heard: a direct message for a node not heard for a while waits for it (see
    // the next test).
    let here = say(&bridge.b2, SOUTH_PRIMARY, 0x7d0f_0000, "B2 is here");
    gw.wait("B2 heard", |l| here.queued(l));
    let dm = say_to(
        &bridge.a2,
        bridge.b2.node(),
        NORTH_PRIMARY,
        0x7d0f_0001,
        "for B2 only",
    );
    let marker = say(
        &bridge.a2,
        NORTH_PRIMARY,
        0x7d0f_0002,
        "marker after the direct message",
    );
    let heard = heard_until(&bridge.b2, &marker);
    gw.wait("the marker relayed", |l| marker.relayed_to("south", l));
    assert_eq!(
        times(&heard, &dm),
        1,
        "the direct message did not cross; the gateway printed:\n{}",
        gw.printed()
    );
}

/// A direct message for a node the gateway has not heard (B2 is in radio B's node database, by
/// name, but never heard) is not sent into the mesh to be retransmitted unanswered: it waits in
/// the outbox, the gateway says for whom, the rest of south's queue flows, and it goes as soon
/// as B2 sends anything.
#[test]
fn a_direct_message_for_a_node_not_heard_waits_and_goes_once_that_node_is_heard() {
    let bridge = Bridge::start("relay-dm-wait", &bridge_routes());
    let mut gw = bridge.gateway(None);
    let (a2, b2) = (&bridge.a2, &bridge.b2);
    let dm = say_to(
        a2,
        b2.node(),
        NORTH_PRIMARY,
        0x7d1f_0001,
        "for B2 when it is back",
    );
    let held_line = format!("held {} {} for south: ", dm.from, dm.id);
    let held = gw.wait("the direct message held", |l| l.contains(&held_line));
    assert!(
        held.ends_with("waiting for South person's radio (!0000b002 never heard)"),
        "{held}"
    );
    // The rest of south's queue goes meanwhile.
    let marker = say(a2, NORTH_PRIMARY, 0x7d1f_0002, "marker while B2 is away");
    let heard = heard_until(b2, &marker);
    assert_eq!(times(&heard, &dm), 0, "sent while B2 was never heard");
    gw.wait("the marker relayed", |l| marker.relayed_to("south", l));
    assert_eq!(gw.count(&|l| dm.relayed_to("south", l)), 0);

    // B2 says anything on its mesh: the gateway's radio B hears it, and the message goes.
    let back = say(b2, SOUTH_PRIMARY, 0x7d1f_0003, "B2 is back");
    let got = b2.packets_until(LIMIT, |p| dm.is(p));
    let p = got.last().expect("the direct message arrived");
    assert_eq!((p.from(), p.to()), (a2.node(), b2.node()));
    assert_eq!(p.text().as_deref(), Some(dm.text.as_str()));
    gw.wait("the direct message relayed", |l| dm.relayed_to("south", l));
    gw.wait("B2's text relayed north", |l| back.relayed_to("north", l));
    // Once: a later marker on the same path finds no second copy.
    let after = say(a2, NORTH_PRIMARY, 0x7d1f_0004, "marker after B2 came back");
    let heard = heard_until(b2, &after);
    assert_eq!(times(&got, &dm) + times(&heard, &dm), 1, "delivered once");
}

/// Two gateways draining one store would send each message twice: the second refuses to
/// start, naming the first, and the first goes on.
#[test]
fn a_second_gateway_on_the_same_store_refuses_to_start_naming_the_first() {
    let bridge = Bridge::start("relay-lock", &bridge_routes());
    let mut first = bridge.gateway(None);
    let config = bridge.config.display().to_string();
    let (ok, _, err) = run_archipel(&["run", "--config", &config], LIMIT);
    assert!(!ok, "a second gateway started on the same store");
    assert!(
        err.contains("in use by another archipel") && err.contains("pid "),
        "{err}"
    );
    let hello = say(&bridge.a2, NORTH_PRIMARY, 0x1c0f_7001, "still relaying");
    bridge.b2.packets_until(LIMIT, |p| hello.is(p));
    first.wait("relayed", |l| hello.relayed_to("south", l));
}
