//! The `archipel` binary end to end: `radio-info` against `archipel sim` over TCP and a
//! pseudo-terminal, clear failures for a missing radio and a bad config, and `demo` starting
//! and stopping cleanly.

use std::process::Command;
use std::time::Duration;

use archipel_e2e::{Running, SimProcess, TEST_WORLD, archipel_bin, run_archipel, temp_dir};

const LIMIT: Duration = Duration::from_secs(60);

fn archipel(args: &[&str]) -> (bool, String, String) {
    run_archipel(args, LIMIT)
}

#[test]
fn radio_info_over_tcp_prints_identity_channels_and_node_db() {
    let sim = SimProcess::start(TEST_WORLD, 2);
    let (ok, out, err) = archipel(&["radio-info", "--tcp", &sim.radio("!0000a001").tcp]);
    println!("{out}");
    assert!(ok, "radio-info failed:\n{err}");
    assert!(
        out.contains("Radio !0000a001  \"Harbour radio A\" (HRA)"),
        "{out}"
    );
    assert!(out.contains("preset   ShortFast"), "{out}");
    assert!(out.contains("PRIMARY    LongFast"), "{out}");
    assert!(out.contains("Nodes (3)"), "{out}");
    for name in ["Harbour radio B", "Harbour master", "Dana"] {
        assert!(out.contains(name), "{name} missing:\n{out}");
    }
}

#[test]
fn radio_info_over_a_serial_port_gives_the_same_report() {
    let sim = SimProcess::start(TEST_WORLD, 2);
    let pty = sim.radio("!0000a001").serial.clone().expect("pty");
    let (ok, out, err) = archipel(&["radio-info", "--serial", &pty]);
    assert!(ok, "radio-info --serial failed:\n{err}");
    assert!(out.contains("Radio !0000a001"), "{out}");
    assert!(out.contains("Harbour master"), "{out}");
}

#[test]
fn radio_info_without_a_radio_fails_and_says_where_it_looked() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (ok, _, err) = archipel(&["radio-info", "--tcp", &addr, "--timeout", "3"]);
    assert!(!ok);
    assert!(err.contains(&addr) && err.contains("error:"), "{err}");
}

/// A hostile TCP "radio" that sends nothing but frame headers announcing 32 KiB frames (the
/// stream API allows 512 bytes): each one is skipped and counted, and the log gets a few
/// lines a second with a count of what was held back, not a line per header.
#[test]
fn a_flood_of_oversize_frame_headers_costs_a_few_log_lines_not_millions() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let flood = std::sync::Arc::new([0x94u8, 0xc3, 0x7f, 0xff].repeat(256 * 1024));
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let flood = flood.clone();
            std::thread::spawn(move || while stream.write_all(&flood).is_ok() {});
        }
    });
    let (ok, _, err) = archipel(&["radio-info", "--tcp", &addr, "--timeout", "3"]);
    assert!(!ok, "no handshake, so no report");
    let warnings = err
        .lines()
        .filter(|l| l.contains("more than 512 bytes"))
        .count();
    assert!(
        (1..=20).contains(&warnings),
        "{warnings} oversize warnings in 3 s:\n{}",
        err.lines().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(
        err.contains("suppressed="),
        "held-back lines are counted: {err}"
    );
}

#[test]
fn a_huge_radio_info_timeout_is_refused_not_a_panic() {
    let (ok, _, err) = archipel(&[
        "radio-info",
        "--tcp",
        "127.0.0.1:1",
        "--timeout",
        "9223372036854775807",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--timeout") && err.contains("1..=86400") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn a_bad_sim_config_is_refused_naming_the_key_and_value() {
    let dir = temp_dir("badcfg");
    let bad_preset = dir.join("preset.toml");
    std::fs::write(&bad_preset, TEST_WORLD.replace("ShortFast", "Fastest")).unwrap();
    let (ok, _, err) = archipel(&["sim", "--config", bad_preset.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("preset") && err.contains("Fastest"), "{err}");

    let dup = dir.join("dup.toml");
    std::fs::write(&dup, TEST_WORLD.replace("!0000b001", "!0000a001")).unwrap();
    let (ok, _, err) = archipel(&["sim", "--config", dup.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("!0000a001"), "{err}");

    let (ok, _, err) = archipel(&["sim", "--config", "/nonexistent/sim.toml"]);
    assert!(!ok);
    assert!(
        err.contains("/nonexistent/sim.toml") && err.contains("not found"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn demo_bridges_its_two_meshes_and_stops_cleanly() {
    let mut cmd = Command::new(archipel_bin());
    cmd.arg("demo").args(["--http", "127.0.0.1:0"]);
    let demo = Running::spawn(cmd, "archipel demo");
    // The README's first command shows the status page: the demo says where, and serves it.
    let page = demo.wait_line(LIMIT, |l| {
        let rest = l.split_once(" status page at ")?.1;
        rest.split_whitespace().next().map(str::to_owned)
    });
    let html = ureq::get(&page)
        .call()
        .expect("the demo serves its page")
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(html.contains("<title>Archipel</title>"), "{html}");
    let mut up = Vec::new();
    while up.len() < 2 {
        let radio = demo.wait_line(LIMIT, |l| {
            let rest = l.split_once(" radio ")?.1;
            rest.split_once(" up (").map(|(name, _)| name.to_owned())
        });
        if !up.contains(&radio) {
            up.push(radio);
        }
    }
    up.sort();
    assert_eq!(up, ["north", "south"]);
    assert!(demo.stop(), "demo did not exit cleanly on SIGTERM");
}

#[test]
fn demo_with_a_custom_world_shows_relayed_messages() {
    // The built-in world, a hundred times faster: chat every few hundred milliseconds.
    let dir = temp_dir("demo-world");
    let world = dir.join("world.toml");
    let text = include_str!("../adapters/src/sim/demo.toml")
        .replace("time_scale = 1.0", "time_scale = 100.0");
    std::fs::write(&world, text).unwrap();
    let mut cmd = Command::new(archipel_bin());
    cmd.arg("demo")
        .arg("--config")
        .arg(&world)
        .args(["--http", "127.0.0.1:0"]);
    let demo = Running::spawn(cmd, "archipel demo --config");
    let line = demo.wait_line(LIMIT, |l| l.contains(" relayed !").then(|| l.to_owned()));
    assert!(
        line.contains(" -> north#") || line.contains(" -> south#"),
        "{line}"
    );
    assert!(
        line.contains("waited") && line.contains("airtime"),
        "{line}"
    );
    assert!(demo.stop(), "demo did not exit cleanly on SIGTERM");
    let _ = std::fs::remove_dir_all(dir);
}

/// `run` on a store it cannot write (its directory immutable: root ignores permission bits,
/// not `chattr +i`) stops before anything starts, exits non-zero and names the directory and
/// the fix, rather than starting and refusing every message.
#[test]
fn run_refuses_a_store_it_cannot_write_naming_the_path() {
    let dir = temp_dir("ro-store");
    let store = dir.join("store");
    std::fs::create_dir(&store).unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nname = \"ro\"\nid = \"!a7c40001\"\n[store]\npath = \"{}\"\n[[radio]]\n\
             name = \"north\"\ntcp = \"127.0.0.1:1\"\nregion = \"US\"\npreset = \"ShortFast\"\n\
             channels = [ {{ name = \"LongFast\", psk = \"AQ==\" }} ]\n",
            store.join("outbox.sqlite").display()
        ),
    )
    .unwrap();
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(&store)
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        chattr("+i"),
        "chattr +i needs root and a file system with attributes"
    );
    let (ok, _, err) = archipel(&["run", "--config", &config.display().to_string()]);
    chattr("-i");
    assert!(!ok, "started on a store it cannot write");
    assert!(
        err.contains("cannot be written")
            && err.contains(&format!("directory {}", store.display()))
            && err.contains("[store] path"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
