//! What the gateway does when a radio is not what its configuration says, or cannot take
//! relayed traffic, or when the store holds more than the configuration expects: the real
//! binary between two `archipel sim` meshes, as an operator would meet each case.
//!
//! Every wait is for a line or a packet, bounded.

use std::time::{Duration, Instant};

use archipel_e2e::MeshClient;
use archipel_e2e::bridge::*;

/// The south mesh in the EU: LongFast, with its legal 10 % duty cycle.
fn south_eu(p: &Ports) -> String {
    mesh(
        "south",
        "LongFast",
        &south_channels(),
        50.0,
        &[
            node(B, "South gateway radio", Some(p.b), None),
            node(B2, "South person", Some(p.b2), None),
        ],
    )
    .replace(
        "preset = \"LongFast\"",
        "preset = \"LongFast\"\nregion = \"EU_868\"",
    )
}

#[test]
fn a_radio_that_is_not_what_the_config_says_is_named_loudly_and_its_own_preset_counts() {
    let dir = Scratch::new("setup-mismatch");
    let ports = Ports::new();
    let north = Sim::start(&dir, "north", &north_world(&ports), 2);
    let _south = Sim::start(&dir, "south", &south_eu(&ports), 2);
    // The config believes south is a US ShortFast radio.
    let radios = vec![
        radio("north", ports.a, "ShortTurbo", &north_channels(), ""),
        radio("south", ports.b, "ShortFast", &south_channels(), ""),
    ];
    let config = dir.path("gateway.toml");
    let toml = gateway_toml(&dir.path("store.sqlite"), "", &radios, &bridge_routes());
    std::fs::write(&config, toml).unwrap();
    let mut gw = Gateway::start(&dir, &config, None);
    let region = gw.wait("the region problem", |l| {
        l.contains("PROBLEM south") && l.contains("region")
    });
    assert!(
        region.contains("US") && region.contains("EU_868"),
        "names both regions: {region}"
    );
    let preset = gw.wait("the preset problem", |l| {
        l.contains("PROBLEM south") && l.contains("preset")
    });
    assert!(
        preset.contains("ShortFast") && preset.contains("LongFast"),
        "names both presets: {preset}"
    );

    // Airtime is counted for the preset the radio uses: a short text on LongFast takes
    // hundreds of milliseconds, on ShortFast a few tens.
    let a2 = MeshClient::connect("A2", &north.tcp(A2), LIMIT);
    let text = say(&a2, NORTH_PRIMARY, 0x3a0f_0001, "is the bakery open?");
    let line = gw.wait("the text relayed", |l| text.relayed_to("south", l));
    let relayed = parse_relayed(&line).expect("a relayed line");
    assert!(
        relayed.airtime > Duration::from_millis(200),
        "airtime counted for LongFast, not ShortFast: {line}"
    );
}

#[test]
fn a_radio_whose_client_proxy_is_off_is_told_once_with_the_fix_and_its_queue_waits() {
    let dir = Scratch::new("setup-proxy-off");
    let ports = Ports::new();
    let north = Sim::start(&dir, "north", &north_world(&ports), 2);
    let south_world = south_world(&ports).replace(
        &format!("attached = {{ tcp_port = {} }}", ports.b),
        &format!(
            "attached = {{ tcp_port = {}, mqtt_proxy = false }}",
            ports.b
        ),
    );
    let _south = Sim::start(&dir, "south", &south_world, 2);
    // One counted failure would set a message aside: waiting must not count.
    let config = dir.path("gateway.toml");
    let toml = gateway_toml(
        &dir.path("store.sqlite"),
        "max_attempts = 1",
        &bridge_radios(&ports),
        &bridge_routes(),
    );
    std::fs::write(&config, toml).unwrap();
    let mut gw = Gateway::start(&dir, &config, None);
    let problem = gw.wait("the set-up problem", |l| {
        l.contains("PROBLEM south") && l.contains("cannot take relayed traffic")
    });
    assert!(
        problem
            .contains("meshtastic --set mqtt.enabled true --set mqtt.proxy_to_client_enabled true"),
        "says the command that fixes it: {problem}"
    );

    let a2 = MeshClient::connect("A2", &north.tcp(A2), LIMIT);
    let text = say(
        &a2,
        NORTH_PRIMARY,
        0x3b0f_0001,
        "for a radio that cannot take it",
    );
    gw.wait("queued for south", |l| text.queued(l));
    let waiting = gw.wait("waiting", |l| l.contains("waiting for south:"));
    assert!(waiting.contains("client proxy is off"), "{waiting}");
    assert!(gw.terminate().success(), "stops cleanly");
    let printed = gw.printed();
    assert!(
        !printed.contains(" undeliverable !"),
        "nothing set aside:\n{printed}"
    );
    assert_eq!(
        printed
            .matches("PROBLEM south: cannot take relayed traffic")
            .count(),
        2,
        "said once per channel routed to it (Valley and ops), not per attempt:\n{printed}"
    );
    let summary = printed
        .lines()
        .rev()
        .find(|l| l.contains(" summary: "))
        .expect("a last summary");
    assert!(
        summary.contains("undeliverable 0") && summary.contains("south 1"),
        "the message still waits for south: {summary}"
    );
}

#[test]
fn a_gateway_id_equal_to_a_radios_node_is_named_at_its_handshake() {
    let bridge = Bridge::start("setup-gateway-id", &bridge_routes());
    let config = std::fs::read_to_string(&bridge.config).unwrap().replace(
        "id = \"!a7c40001\"",
        &format!("id = \"{}\"", mesh_core::NodeId::new(B)),
    );
    std::fs::write(&bridge.config, config).unwrap();
    let mut gw = bridge.gateway(None);
    let line = gw.wait("the gateway id problem", |l| {
        l.contains("PROBLEM south") && l.contains("gateway id")
    });
    assert!(
        line.contains("gateway.id"),
        "says which key to change: {line}"
    );
}

#[test]
fn a_queue_for_a_radio_no_longer_configured_is_reported_at_start_and_kept() {
    let mut bridge = Bridge::start("setup-orphan", &bridge_routes());
    let mut gw = bridge.gateway(None);
    let mark = gw.mark();
    bridge.stop_south();
    gw.wait_after(mark, "south down", |l| l.contains("radio south down"));
    let text = say(
        &bridge.a2,
        NORTH_PRIMARY,
        0x3c0f_0001,
        "for the renamed radio",
    );
    gw.wait("queued for south", |l| text.queued(l));
    assert!(gw.terminate().success());

    // The operator renames the radio `south` to `valley`.
    let renamed = std::fs::read_to_string(&bridge.config)
        .unwrap()
        .replace("name = \"south\"", "name = \"valley\"")
        .replace("\"south\"", "\"valley\"");
    std::fs::write(&bridge.config, renamed).unwrap();
    let gw = Gateway::start(&bridge.dir, &bridge.config, None);
    let line = gw
        .process
        .wait_log_line(LIMIT, |l| l.contains("no longer has"));
    assert!(
        line.contains("destination=south") && line.contains("queued=1"),
        "names the queue and its size: {line}"
    );
}

#[test]
fn the_duty_cycle_budget_holds_across_quick_restarts() {
    // South may use 3 % of any 10 s: 300 ms of airtime, a handful of ShortFast packets; a
    // telemetry flood from the north mesh keeps it at its budget.
    const WINDOW: Duration = Duration::from_secs(10);
    const DUTY_PERCENT: f64 = 3.0;
    let budget = WINDOW.mul_f64(DUTY_PERCENT / 100.0);
    let flood = Flood::start("setup-governor-restarts", WINDOW, DUTY_PERCENT);
    // Three runs on one store, each stopped as soon as it relayed five packets to south, about
    // its whole budget (a crash loop, or an operator restarting): a governor that forgot what
    // was sent would grant each run a fresh budget at once.
    let to_south = |l: &str| parse_relayed(l).is_some_and(|r| r.destination == "south");
    let mut relays: Vec<(Instant, Duration)> = Vec::new();
    let started = Instant::now();
    for _ in 0..3 {
        let mut gw = Gateway::start(&flood.dir, &flood.config, None);
        gw.wait_count("relays to south", 5, to_south);
        assert!(gw.terminate().success());
        relays.extend(gw.lines.iter().filter_map(|(at, l)| {
            parse_relayed(l)
                .filter(|r| r.destination == "south")
                .map(|r| (*at, r.airtime))
        }));
    }
    let largest = relays.iter().map(|(_, a)| *a).max().unwrap();
    let fullest = fullest_window(&relays, WINDOW);
    eprintln!(
        "governor across restarts: {} relays to south in {:?}, fullest window {fullest:?} (budget {budget:?}, largest packet {largest:?})",
        relays.len(),
        started.elapsed()
    );
    assert!(relays.len() >= 15, "three runs of five relays");
    // One packet of slack, as in the single-run governor test (a relay is stamped by the
    // governor when the radio took it, by the test when its line arrived).
    assert!(
        fullest <= budget + largest,
        "{fullest:?} of airtime within one {WINDOW:?} window across restarts, budget {budget:?}"
    );
}
