//! What a mesh says is shown, never obeyed: a text with a newline and ANSI escapes, and a
//! node named with them, arrive through the real binary, and neither forges a line on
//! standard output nor reaches the terminal (no raw ESC on stdout, in the log, in `archipel
//! status` or in `radio-info`, whose node table stays one row per node).

use std::process::Command;
use std::time::Duration;

use archipel_e2e::bridge::*;
use archipel_e2e::{MeshClient, SimProcess, run_with_limit};

/// A2's long name in the sim's TOML: an ANSI colour, a screen clear and a newline that would
/// start a forged line, and a right-to-left override.
const EVIL_NAME_TOML: &str = r"Evil\u001b[31m\u001b[2J\nrelayed !deadbeef\u202e";

/// The north world with A2 named [`EVIL_NAME_TOML`].
fn north_world_evil(p: &Ports) -> String {
    mesh(
        "north",
        "ShortTurbo",
        &north_channels(),
        50.0,
        &[
            node(A, "North gateway radio", Some(p.a), None),
            node(A2, EVIL_NAME_TOML, Some(p.a2), None),
        ],
    )
}

/// Asserts `what` carries no raw terminal control: no ESC, no C1 CSI, no bidi override.
fn assert_no_controls(what: &str, text: &str) {
    for bad in ['\x1b', '\u{9b}', '\u{202e}'] {
        assert!(
            !text.contains(bad),
            "{what} carries a raw {:?}:\n{}",
            bad,
            text.escape_debug()
        );
    }
}

#[test]
fn a_text_and_a_node_name_with_newlines_and_escapes_forge_no_line_and_reach_no_terminal() {
    let dir = Scratch::new("untrusted-text");
    let ports = Ports::new();
    let north = Sim::start(&dir, "north", &north_world_evil(&ports), 2);
    let _south = Sim::start(&dir, "south", &south_world(&ports), 2);
    let a2 = MeshClient::connect("A2", &north.tcp(A2), LIMIT);
    let b2 = MeshClient::connect("B2", &_south.tcp(B2), LIMIT);
    let config = dir.path("gateway.toml");
    let toml = gateway_toml(
        &dir.path("store.sqlite"),
        "",
        &bridge_radios(&ports),
        &bridge_routes(),
    );
    std::fs::write(&config, toml).unwrap();
    let mut gw = Gateway::start(&dir, &config, None);
    gw.wait_ready(&["north", "south"]);

    let forged = "hi\n2026-12-03T10:00:00Z relayed !deadbeef 0x00000001 -> south#Valley \
                  (channel, waited 0 ms)\x1b[31m red \x1b[2J\u{202e}";
    let msg = say(&a2, NORTH_PRIMARY, 0x5afe_0001, forged);
    let got = b2.packets_until(LIMIT, |p| msg.is(p));
    assert_eq!(
        got.last().and_then(|p| p.text()).as_deref(),
        Some(forged),
        "the text itself crosses unchanged"
    );
    let line = gw.wait("the text relayed", |l| msg.relayed_to("south", l));
    assert!(
        line.contains(r"hi\n2026-12-03T10:00:00Z relayed !deadbeef") && line.contains(r"\x1b[31m"),
        "the text is shown escaped on its own line: {line}"
    );

    // What `archipel status` says of the node and its name.
    let at = gw.http();
    let mut cmd = Command::new(archipel_e2e::archipel_bin());
    cmd.args(["status", "--url", &at]);
    let out = run_with_limit(cmd, LIMIT, "archipel status");
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_no_controls("archipel status", &status);
    for l in status.lines() {
        assert!(
            !l.trim_start().starts_with("relayed"),
            "a node name forged a line of `archipel status`:\n{status}"
        );
    }

    gw.terminate();
    let printed = gw.printed();
    assert_no_controls("standard output", &printed);
    for l in gw.texts() {
        if l.contains("relayed !deadbeef") {
            assert!(
                l.contains(&format!("relayed {} {} -> south#", msg.from, msg.id)),
                "a forged line on standard output: {l}\nall of it:\n{printed}"
            );
        }
    }
    let log = std::fs::read_to_string(dir.path("gateway.log")).unwrap();
    assert_no_controls("the log", &log);
    for l in log.lines() {
        assert!(
            !l.starts_with("relayed") && !l.starts_with("2026-12-03T10:00:00Z relayed"),
            "a forged line in the log: {l}"
        );
    }
}

/// `radio-info`'s node table: a node named with a newline and escapes is one row, escaped.
#[test]
fn radio_info_shows_a_node_named_with_escapes_as_one_escaped_row() {
    let world = r#"
time_scale = 20.0
seed = 3
[[mesh]]
name = "harbour"
preset = "ShortFast"
channels = [ { name = "LongFast", psk = "AQ==" } ]
[[mesh.node]]
id = "!0000a001"
long_name = "Harbour radio A"
short_name = "HRA"
attached = { tcp_port = 0 }
[[mesh.node]]
id = "!00000e01"
long_name = "Evil\u001b[31m\nrelayed\u202e"
short_name = "\u001b[2J"
[[mesh.node]]
id = "!00000d01"
long_name = "Dana"
short_name = "DANA"
"#;
    let sim = SimProcess::start(world, 1);
    let mut cmd = Command::new(archipel_e2e::archipel_bin());
    cmd.args(["radio-info", "--tcp", &sim.radio("!0000a001").tcp]);
    let out = run_with_limit(cmd, Duration::from_secs(60), "archipel radio-info");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_controls("radio-info", &text);
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Nodes ("))
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(table.len(), 2, "one row per node:\n{text}");
    assert!(
        table.iter().all(|row| row.trim_start().starts_with('!')),
        "every row starts with a node id:\n{text}"
    );
    let evil = table
        .iter()
        .find(|row| row.contains("!00000e01"))
        .unwrap_or_else(|| panic!("no row for the node:\n{text}"));
    assert!(evil.contains(r"Evil\x1b[31m\nrelayed"), "{evil}");
    assert!(table.iter().any(|row| row.contains("Dana")), "{text}");
}

/// A2 sends B2 a direct message (B2 heard first, so it is not held) and a channel text after
/// it; returns the gateway's stdout, its log and `/api/status` once both crossed.
fn direct_message_run(tag: &str, log_section: &str, secret: &str) -> (Msg, String, String, String) {
    let bridge = Bridge::start(tag, &bridge_routes());
    if !log_section.is_empty() {
        let mut config = std::fs::read_to_string(&bridge.config).unwrap();
        config.push_str(log_section);
        std::fs::write(&bridge.config, config).unwrap();
    }
    let mut gw = bridge.gateway(None);
    let here = say(&bridge.b2, SOUTH_PRIMARY, 0x0d3e_0000, "B2 is here");
    gw.wait("B2 heard", |l| here.queued(l));
    let dm = say_to(
        &bridge.a2,
        bridge.b2.node(),
        NORTH_PRIMARY,
        0x0d3e_0001,
        secret,
    );
    let marker = say(
        &bridge.a2,
        NORTH_PRIMARY,
        0x0d3e_0002,
        "a channel text after it",
    );
    let heard = heard_until(&bridge.b2, &marker);
    assert_eq!(times(&heard, &dm), 1, "the direct message crossed");
    gw.wait("the direct message relayed", |l| dm.relayed_to("south", l));
    gw.wait("the marker relayed", |l| marker.relayed_to("south", l));
    let at = gw.http();
    let api = ureq::get(format!("{at}/api/status"))
        .call()
        .expect("GET /api/status")
        .body_mut()
        .read_to_string()
        .expect("a text body");
    assert!(
        api.contains("a channel text after it"),
        "channel texts are listed: {api}"
    );
    gw.terminate();
    let log = std::fs::read_to_string(bridge.dir.path("gateway.log")).unwrap();
    (dm, gw.printed(), log, api)
}

#[test]
fn a_direct_message_is_shown_by_its_size_only_unless_the_operator_opts_in() {
    let secret = "the spare key is under the blue pot";
    let (dm, out, log, api) = direct_message_run("dm-hidden", "", secret);
    let line = out
        .lines()
        .find(|l| dm.relayed_to("south", l))
        .expect("a relayed line");
    assert!(
        line.ends_with(&format!(
            ": direct message ({} bytes, content hidden)",
            secret.len()
        )),
        "{line}"
    );
    for (what, text) in [("stdout", &out), ("the log", &log), ("/api/status", &api)] {
        assert!(
            !text.contains("blue pot"),
            "{what} shows the direct message:\n{text}"
        );
    }
    assert!(api.contains("content hidden"), "{api}");

    let (dm, out, _, api) =
        direct_message_run("dm-shown", "\n[log]\nshow_direct_messages = true\n", secret);
    let line = out
        .lines()
        .find(|l| dm.relayed_to("south", l))
        .expect("a relayed line");
    assert!(line.ends_with(&format!(": \"{secret}\"")), "{line}");
    assert!(api.contains(secret), "{api}");
}
