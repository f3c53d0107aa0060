//! Whole-config tests: loading, the defects of issue 6, endpoints and routes. MQTT sections,
//! secrets and the channel table have theirs in `tests/mqtt.rs`, XMPP sections in
//! `tests/xmpp.rs`, federation and peers in `tests/peer.rs`.

use std::ffi::OsString;

use super::testing::{GOOD, TempDir, problems};
use super::*;

mod mqtt;
mod peer;
mod xmpp;

#[test]
fn a_good_config_loads_with_defaults() {
    let c = Config::from_toml(GOOD).unwrap();
    assert_eq!(c.store.seen_window_hours, 96);
    assert_eq!(c.governor(&c.radios[0]).duty_cycle_percent, Some(10.0));
    assert!(c.summary().contains("north#LongFast <-> south#MediumFast"));
    assert!(!format!("{c:?}").contains("c2VjcmV0"), "keys never printed");
    assert!(!c.summary().contains("c2VjcmV0"));
}

#[test]
fn a_bad_preset_names_the_key_and_value() {
    let e = problems(&GOOD.replace("\"MediumFast\"\nchannels", "\"Fastest\"\nchannels"));
    assert!(e.contains("radio.1.preset") && e.contains("Fastest"), "{e}");
}

#[test]
fn an_unknown_key_is_refused_with_the_expected_ones() {
    let e = problems(&GOOD.replace(
        "region = \"EU_868\"\npreset = \"LongFast\"",
        "regoin = \"EU_868\"\npreset = \"LongFast\"",
    ));
    assert!(e.contains("regoin") && e.contains("region"), "{e}");
}

#[test]
fn routes_must_name_existing_endpoints_and_their_channels() {
    let e = problems(&GOOD.replace("to = [\"south\"]", "to = [\"sout\"]"));
    assert!(
        e.contains(
            "route[0].to: no endpoint named `sout`: the endpoints are north (radio), south (radio)"
        ),
        "{e}"
    );
    let e = problems(&GOOD.replace("to_channel = \"MediumFast\"", "to_channel = \"Chat\""));
    assert!(e.contains("radio `south` has no channel `Chat`"), "{e}");
}

#[test]
fn a_bad_psk_and_a_bad_gateway_id_are_named() {
    let e = problems(&GOOD.replace(
        "psk = \"AQ==\" } ]\n[[radio]]",
        "psk = \"!!\" } ]\n[[radio]]",
    ));
    assert!(e.contains("psk") && e.contains("base64"), "{e}");
    let e = problems(&GOOD.replace("!a7c40001", "a7c40001"));
    assert!(e.contains("gateway.id") && e.contains("a7c40001"), "{e}");
}

#[test]
fn an_empty_or_odd_length_psk_is_refused_where_it_is_written() {
    let e = problems(&GOOD.replace("psk = \"AQ==\" } ]\n[[radio]]", "psk = \"\" } ]\n[[radio]]"));
    assert!(
        e.contains("radio.0.channels.0.psk") && e.contains("`none`"),
        "{e}"
    );
    let e = problems(&GOOD.replace(
        "psk = \"AQ==\" } ]\n[[radio]]",
        "psk = \"AQIDBAU=\" } ]\n[[radio]]",
    ));
    assert!(
        e.contains("radio.0.channels.0.psk") && e.contains("5 bytes"),
        "{e}"
    );
}

#[test]
fn connection_and_region_problems_are_reported_together() {
    let e = problems(
        &GOOD
            .replace("tcp = \"127.0.0.1:4403\"", "tcp = \"radio.lan\"")
            .replace(
                "region = \"EU_868\"\npreset = \"MediumFast\"",
                "region = \"EU868\"\npreset = \"MediumFast\"",
            ),
    );
    assert!(e.contains("has no port: write `radio.lan:4403`"), "{e}");
    assert!(e.contains("radio[1] (south).region: `EU868`"), "{e}");
}

#[test]
fn tcp_addresses_that_can_never_connect_are_refused_with_the_key() {
    for (bad, says) in [
        ("127.0.0.1:99999", "port `99999` is not a TCP port"),
        ("127.0.0.1:-1", "port `-1` is not a TCP port"),
        ("127.0.0.1:abc", "port `abc` is not a TCP port"),
        (
            "tcp://127.0.0.1:4403",
            "write only HOST:PORT, `127.0.0.1:4403`",
        ),
        ("::1", "`[::1]:4403`"),
        (":4403", "has no host"),
        ("", "is empty"),
    ] {
        let e = problems(&GOOD.replace("tcp = \"127.0.0.1:4403\"", &format!("tcp = \"{bad}\"")));
        assert!(
            e.contains("radio[0] (north).tcp: ") && e.contains(says),
            "{bad}: {e}"
        );
    }
}

#[test]
fn two_radios_on_one_attachment_are_refused() {
    let e = problems(&GOOD.replace("serial = \"/dev/ttyUSB0\"", "tcp = \"127.0.0.1:4403\""));
    assert!(
        e.contains("radio[1] (south).tcp: `127.0.0.1:4403` is also radio[0] (north)'s address"),
        "{e}"
    );
    // Spelled differently, the same host and port.
    let e = problems(
        &GOOD
            .replace("tcp = \"127.0.0.1:4403\"", "tcp = \"Radio.lan:4403\"")
            .replace("serial = \"/dev/ttyUSB0\"", "tcp = \"radio.LAN:4403\""),
    );
    assert!(e.contains("kicking each other off"), "{e}");
    let e = problems(&GOOD.replace("tcp = \"127.0.0.1:4403\"", "serial = \"/dev/ttyUSB0\""));
    assert!(
        e.contains("radio[1] (south).serial: `/dev/ttyUSB0` is also radio[0] (north)'s device"),
        "{e}"
    );
}

#[test]
fn reserved_gateway_ids_are_refused() {
    for (id, says) in [
        ("!ffffffff", "broadcast"),
        ("!00000000", "this node"),
        ("!00000001", "never goes on air"),
    ] {
        let e = problems(&GOOD.replace("!a7c40001", id));
        assert!(
            e.contains(&format!("gateway.id: `{id}` is reserved")) && e.contains(says),
            "{e}"
        );
    }
}

#[test]
fn gateway_names_that_break_a_log_line_are_refused() {
    for (name, says) in [
        ("\"\"", "is empty"),
        ("\"  \"", "is empty"),
        (
            "\"\"\"\nhub\nrelayed !a1b2c3d4 forged\"\"\"",
            "several lines",
        ),
        ("\"hub\\u001b[31m\"", "control characters"),
    ] {
        let e = problems(&GOOD.replace("name = \"hub\"", &format!("name = {name}")));
        assert!(
            e.contains("gateway.name: ") && e.contains(says),
            "{name}: {e}"
        );
    }
}

#[test]
fn endpoint_names_must_be_one_word() {
    for (name, says) in [
        ("", "radio[0].name: is empty"),
        ("north shore", "contains whitespace"),
        ("north\\u0007", "control characters"),
    ] {
        let text = GOOD
            .replace("name = \"north\"", &format!("name = \"{name}\""))
            .replace("from = [\"north\"]", &format!("from = [\"{name}\"]"));
        let e = problems(&text);
        assert!(e.contains(says), "{name}: {e}");
    }
}

#[test]
fn hops_stop_at_six_and_say_why() {
    let ok = GOOD.replace(
        "to_channel = \"MediumFast\"",
        "to_channel = \"MediumFast\"\nhops = 6",
    );
    assert!(Config::from_toml(&ok).is_ok());
    let e = problems(&ok.replace("hops = 6", "hops = 7"));
    assert!(
        e.contains("route[0].hops: 7: at most 6")
            && e.contains("hops + 1")
            && e.contains("at most 7"),
        "{e}"
    );
}

#[test]
fn region_and_preset_may_come_from_the_radio() {
    let text = GOOD
        .replace("region = \"EU_868\"\npreset = \"LongFast\"\n", "")
        .replace("preset = \"MediumFast\"\n", "");
    let c = Config::from_toml(&text).unwrap();
    let north = c.radio("north").unwrap();
    assert_eq!((north.region.as_deref(), north.preset), (None, None));
    assert_eq!(c.governor(north).duty_cycle_percent, None);
    assert_eq!(
        c.governor_in(north, Some("EU_868")).duty_cycle_percent,
        Some(10.0)
    );
    let south = c.radio("south").unwrap();
    assert_eq!(
        c.governor(south).duty_cycle_percent,
        Some(10.0),
        "configured region"
    );
    assert_eq!(
        c.governor_in(south, Some("UA_868")).duty_cycle_percent,
        Some(1.0),
        "the reported region wins"
    );
    let s = c.summary();
    assert!(s.contains("radio north at 127.0.0.1:4403: region and preset from the radio, duty cycle of the radio's region"), "{s}");
    assert!(
        s.contains("radio south at /dev/ttyUSB0: EU_868, preset from the radio, 10% duty cycle"),
        "{s}"
    );
    let e = problems(&GOOD.replace(
        "region = \"EU_868\"\npreset = \"LongFast\"",
        "region = \"UNSET\"\npreset = \"LongFast\"",
    ));
    assert!(e.contains("radio[0] (north).region: `UNSET`"), "{e}");
}

#[test]
fn channel_names_are_checked_like_the_radio_holds_them() {
    let e = problems(&GOOD.replace(
        "{ name = \"LongFast\", psk = \"AQ==\" }",
        "{ name = \"\", psk = \"AQ==\" }",
    ));
    assert!(
        e.contains("radio[0] (north).channels[0].name: is empty"),
        "{e}"
    );
    let e = problems(&GOOD.replace("name = \"ops\"", "name = \"operations-1\""));
    assert!(
        e.contains("radio[1] (south).channels[1].name") && e.contains("at most 11"),
        "{e}"
    );
}

#[test]
fn a_frequency_is_checked_in_mhz_and_the_gaulix_profile_pins_one() {
    // A value in kHz, the likely slip.
    let e = problems(&GOOD.replace(
        "preset = \"MediumFast\"",
        "preset = \"MediumFast\"\nfrequency_mhz = 869525",
    ));
    assert!(
        e.contains("radio[1] (south).frequency_mhz: 869525: ") && e.contains("137 to 2500"),
        "{e}"
    );
    let gaulix =
        Config::from_toml(include_str!("../../../deploy/profiles/gaulix/gateway.toml")).unwrap();
    let pinned: Vec<_> = gaulix.radios.iter().map(|r| r.frequency_mhz).collect();
    assert_eq!(pinned, [Some(869.4625), None]);
    assert!(gaulix.summary().contains("EU_868 LongMod at 869.4625 MHz"));
}

/// Writes `text` as a config file and loads it with `env` as the whole environment.
fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = TempDir::new("env");
    let path = dir.write("gateway.toml", text);
    let env: Vec<(OsString, OsString)> = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
    Config::load_with_env(&path, env)
}

#[test]
fn environment_overrides_apply_and_their_errors_name_the_variable() {
    let c = load(
        GOOD,
        &[
            ("ARCHIPEL_STORE__PATH", "/data/queue.sqlite"),
            ("ARCHIPEL_GATEWAY__NAME", "2024"),
            ("ARCHIPEL_LOG", "debug"),
        ],
    )
    .unwrap();
    assert_eq!(c.store.path, std::path::Path::new("/data/queue.sqlite"));
    assert_eq!(
        c.gateway.name, "2024",
        "a number where text is wanted is text"
    );

    let e = load(GOOD, &[("ARCHIPEL_STORE__SEEN_WINDOW_HOURS", "abc")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ARCHIPEL_STORE__SEEN_WINDOW_HOURS (environment): store.seen_window_hours"),
        "{e}"
    );
    assert!(!e.contains("gateway.toml"), "the file is not blamed: {e}");

    let e = load(
        GOOD,
        &[("ARCHIPEL_STORE__SEEN_WINDOW_HOURS", "10000000000000")],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("ARCHIPEL_STORE__SEEN_WINDOW_HOURS (environment): store.seen_window_hours: 10000000000000 hours"),
        "{e}"
    );
    let e = load(GOOD, &[("ARCHIPEL_STORE__PATH", "")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ARCHIPEL_STORE__PATH (environment): store.path: is empty"),
        "{e}"
    );
    let e = load(GOOD, &[("ARCHIPEL_STORE__COLOUR", "blue")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ARCHIPEL_STORE__COLOUR (environment): store.colour: unknown key"),
        "{e}"
    );
}

#[test]
fn problems_in_the_file_still_name_the_file() {
    let dir = TempDir::new("file");
    let path = dir.write(
        "hub.toml",
        &GOOD.replace(
            "[gateway]",
            "[store]\nseen_window_hours = \"abc\"\n[gateway]",
        ),
    );
    let e = Config::load_with_env(&path, Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("hub.toml: store.seen_window_hours: invalid type"),
        "{e}"
    );
    let e = Config::load_with_env(&dir.path().join("absent.toml"), Vec::new()).unwrap_err();
    assert!(matches!(e, ConfigError::NotFound { .. }) && e.to_string().contains("absent.toml"));
}

#[test]
fn endpoints_of_every_kind_are_listed_with_their_kind() {
    let text = format!("{GOOD}\n[[mqtt]]\nname = \"broker\"\naddress = \"127.0.0.1:1883\"\n");
    let c = Config::from_toml(&text).unwrap();
    let all: Vec<(&str, EndpointKind)> = c.endpoints().map(|e| (e.name(), e.kind())).collect();
    assert_eq!(
        all,
        [
            ("north", EndpointKind::Radio),
            ("south", EndpointKind::Radio),
            ("broker", EndpointKind::Mqtt)
        ]
    );
    assert_eq!(c.endpoint_kind("broker"), Some(EndpointKind::Mqtt));
    assert_eq!(c.endpoint_kind("north"), Some(EndpointKind::Radio));
    assert_eq!(c.endpoint_kind("west"), None);
    let e = problems(&format!(
        "{GOOD}\n[[mqtt]]\nname = \"north\"\naddress = \"127.0.0.1:1883\"\n"
    ));
    assert!(
        e.contains("mqtt[0] (north).name: `north` is also the name of radio[0] (north)"),
        "{e}"
    );
}

/// The example config, with the commented blocks that start with one of `starts` switched on.
fn example(starts: &[&str]) -> String {
    let mut out = String::new();
    let mut on = false;
    for line in include_str!("../../../deploy/gateway.toml").lines() {
        on = (on || starts.contains(&line)) && !line.trim().is_empty();
        out += if on {
            line.strip_prefix("# ").unwrap_or(line)
        } else {
            line
        };
        out.push('\n');
    }
    out
}

#[test]
fn the_example_config_is_valid_as_shipped_and_with_its_broker() {
    let c = Config::from_toml(&example(&[])).unwrap();
    assert!(c.mqtt.is_empty() && c.channels.is_empty());
    let dir = TempDir::new("example");
    let pass = dir.write("mqtt.pass", "example\n");
    let ca = dir.write(
        "ca.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    );
    let text = example(&["# [[mqtt]]", "# [[channel]]", "# [[route]]"])
        .replace("/etc/archipel/mqtt.pass", &pass.display().to_string())
        .replace("/etc/archipel/broker-ca.pem", &ca.display().to_string());
    let c = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let m = c.mqtt_section("broker").expect("the broker block is on");
    assert!(m.password.is_some() && m.tls.is_some());
    assert_eq!(
        (m.rate_per_node, m.burst_per_node),
        (DEFAULT_RATE_PER_NODE, DEFAULT_BURST_PER_NODE)
    );
    assert!(c.channel_table().contains("Fr_BlaBla"));
    assert_eq!(c.routes.len(), 3);
}

#[test]
fn a_ca_file_that_never_ends_is_refused_without_being_read() {
    // Read whole, /dev/zero took all memory (found by fuzz/fuzz_targets/config_load.rs).
    let text = example(&["# [[mqtt]]", "# [[channel]]", "# [[route]]"])
        .replace("/etc/archipel/broker-ca.pem", "/dev/zero");
    let e = problems(&text);
    assert!(
        e.contains("tls.ca_file: /dev/zero is not a regular file: give the PEM file"),
        "{e}"
    );
}

#[test]
fn the_example_config_is_valid_with_its_xmpp_server() {
    let dir = TempDir::new("example-xmpp");
    let secret = dir.write("xmpp.secret", "example\n");
    let text = example(&["# [[xmpp]]", "# [[route]]   # to the XMPP server"])
        .replace("/etc/archipel/xmpp.secret", &secret.display().to_string());
    let c = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let x = c.xmpp_section("hub-xmpp").expect("the xmpp block is on");
    assert_eq!(x.secret.as_ref().map(Secret::expose), Some("example"));
    assert_eq!(
        (x.rate_per_user, x.burst_per_user, x.bridge_nick.as_str()),
        (
            DEFAULT_RATE_PER_USER,
            DEFAULT_BURST_PER_USER,
            DEFAULT_BRIDGE_NICK
        )
    );
    assert_eq!(
        x.bridged().collect::<Vec<_>>(),
        [("LongFast", "longfast".to_owned())]
    );
    assert_eq!(x.send_as("LongFast"), SendAs::Node);
    assert_eq!(c.routes.len(), 3);
    // The server sides in deploy/xmpp/ name the same component, port and MUC service.
    let prosody = include_str!("../../../deploy/xmpp/prosody.cfg.lua");
    let port = x.server_addr().unwrap().port();
    for line in [
        format!("component_ports = {{ {port} }}"),
        format!("Component \"{}\"", x.domain),
        format!("Component \"{}\" \"muc\"", x.rooms),
        "    modules_enabled = { \"muc_mam\" }".into(),
        "    muc_room_locking = false".into(),
    ] {
        assert!(
            prosody.lines().any(|l| l == line),
            "prosody.cfg.lua has no {line:?}"
        );
    }
    let ejabberd = include_str!("../../../deploy/xmpp/ejabberd.yml");
    for line in [
        format!("    port: {port}"),
        format!("      {}:", x.domain),
        format!("      - {}", x.rooms),
        "      mam: true".into(),
    ] {
        assert!(
            ejabberd.lines().any(|l| l == line),
            "ejabberd.yml has no {line:?}"
        );
    }
}

#[test]
fn direct_messages_are_hidden_unless_log_show_direct_messages_says_otherwise() {
    let c = Config::from_toml(GOOD).unwrap();
    assert!(!c.log.show_direct_messages, "hidden by default");
    assert!(
        c.summary()
            .contains("direct messages shown without their text")
    );
    let c = Config::from_toml(&format!("{GOOD}\n[log]\nshow_direct_messages = true\n")).unwrap();
    assert!(c.log.show_direct_messages);
    assert!(
        c.summary()
            .contains("direct messages shown with their text")
    );
    // A misspelt key is refused, naming it and the one expected.
    let e = problems(&format!("{GOOD}\n[log]\nshow_direct = true\n"));
    assert!(
        e.contains("show_direct") && e.contains("show_direct_messages"),
        "{e}"
    );
}
