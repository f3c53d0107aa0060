//! The ready profiles under `deploy/profiles/`, end to end: each shipped sim world and gateway
//! config is loaded as an operator would run it, with only its ports and file paths changed
//! (so tests run side by side on free ports), and what the people on each mesh see is checked
//! with the test's own radio links.

use std::path::PathBuf;

use archipel_adapters::peer::PeerKey;
use archipel_e2e::bridge::*;
use archipel_e2e::{MeshClient, free_port, run_archipel, workspace};

/// A shipped profile file.
fn profile(path: &str) -> String {
    let file = workspace().join("deploy/profiles").join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// `text` with `from` replaced by `to`, checking `from` is there exactly once: a profile that
/// changed shape fails here, by name, rather than running with a value the test did not set.
fn set(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` should appear once in the profile"
    );
    text.replacen(from, to, 1)
}

/// Writes `text` as `name` in the scratch directory.
fn write(dir: &Scratch, name: &str, text: &str) -> PathBuf {
    let path = dir.path(name);
    std::fs::write(&path, text).expect("config written");
    path
}

/// `config` with its one `key = "archipel:..."` line naming `key` instead.
fn with_peer_key(config: &str, key: &PeerKey) -> String {
    let line = config
        .lines()
        .find(|l| l.starts_with("key = \"archipel:"))
        .expect("the profile names its peer's key");
    set(config, line, &format!("key = \"{key}\""))
}

/// Node numbers of the Gaulix profile's attached radios (deploy/profiles/gaulix/sim.toml).
const GAULIX_PERSON: u32 = 0x6a0f_0005;
const LONGFAST_PERSON: u32 = 0x6a0f_1005;
/// Fr_EMCOM's index on both meshes of the profile.
const FR_EMCOM: u32 = 1;

/// The Gaulix profile's sim world running on free ports, and its gateway config pointed at
/// them (store in `dir`), not written yet.
fn gaulix(dir: &Scratch) -> (Sim, String) {
    let (hub_g, hub_l, person_g, person_l) = (free_port(), free_port(), free_port(), free_port());
    let mut world = profile("gaulix/sim.toml");
    for (shipped, port) in [
        (4403, hub_g),
        (4404, hub_l),
        (4405, person_g),
        (4406, person_l),
    ] {
        world = set(
            &world,
            &format!("tcp_port = {shipped} }}"),
            &format!("tcp_port = {port} }}"),
        );
    }
    let sim = Sim::start(dir, "gaulix-sim", &world, 4);
    let mut gateway = profile("gaulix/gateway.toml");
    gateway = set(
        &gateway,
        "127.0.0.1:4403\"",
        &format!("127.0.0.1:{hub_g}\""),
    );
    gateway = set(
        &gateway,
        "127.0.0.1:4404\"",
        &format!("127.0.0.1:{hub_l}\""),
    );
    gateway = set(
        &gateway,
        "path = \"archipel.sqlite\"",
        &format!("path = \"{}\"", dir.path("store.sqlite").display()),
    );
    (sim, gateway)
}

#[test]
fn the_gaulix_profile_carries_fr_emcom_from_the_gaulix_mesh_to_the_longfast_mesh_and_back() {
    let dir = Scratch::new("profile-gaulix");
    let (sim, gateway) = gaulix(&dir);
    let config = write(&dir, "gateway.toml", &gateway);
    let (ok, out, err) = run_archipel(&["check-config", &config.display().to_string()], LIMIT);
    assert!(ok, "check-config refused the profile: {out}{err}");
    assert!(
        out.contains("EU_868 LongMod at 869.4625 MHz")
            && out.contains("channels Fr_Balise, Fr_EMCOM, Fr_BlaBla"),
        "{out}"
    );

    let mut gw = Gateway::start(&dir, &config, None);
    gw.wait_endpoint_up(0, "radio", "gaulix");
    gw.wait_endpoint_up(0, "radio", "longfast");
    let on_gaulix = MeshClient::connect("person on gaulix", &sim.tcp(GAULIX_PERSON), LIMIT);
    let on_longfast = MeshClient::connect("person on longfast", &sim.tcp(LONGFAST_PERSON), LIMIT);

    let call = say(
        &on_gaulix,
        FR_EMCOM,
        0x6a0e_0001,
        "Fr_EMCOM: arbre sur la route, D12 coupee",
    );
    let got = on_longfast.packets_until(LIMIT, |p| call.is(p));
    let p = got.last().unwrap();
    assert_eq!(p.text().as_deref(), Some(call.text.as_str()));
    assert_eq!(p.channel(), FR_EMCOM, "on the LongFast mesh's Fr_EMCOM");
    gw.wait("relayed to the LongFast radio", |l| {
        call.relayed_to("longfast", l)
    });

    let answer = say(
        &on_longfast,
        FR_EMCOM,
        0x6a0e_0002,
        "Fr_EMCOM: bien recu, on previent la mairie",
    );
    let got = on_gaulix.packets_until(LIMIT, |p| answer.is(p));
    let p = got.last().unwrap();
    assert_eq!(
        (p.from(), p.text().as_deref()),
        (on_longfast.node(), Some(answer.text.as_str()))
    );
    assert_eq!(p.channel(), FR_EMCOM, "on the Gaulix mesh's Fr_EMCOM");
    gw.wait("relayed to the Gaulix radio", |l| {
        answer.relayed_to("gaulix", l)
    });
    // Region, preset and frequency as the profile says, radios set up: nothing to complain of.
    assert_eq!(
        gw.count(&|l: &str| l.contains("PROBLEM")),
        0,
        "{}",
        gw.printed()
    );
}

/// A Gaulix radio pinned to another frequency than the config says (here the config is
/// wrong: 869.5875 MHz, the other 125 kHz slot of EU_868) is said loudly, naming both
/// values and the fix; `radio-info` shows what the radio is pinned to.
#[test]
fn a_gaulix_radio_on_another_frequency_than_configured_is_a_problem_naming_both() {
    let dir = Scratch::new("profile-gaulix-frequency");
    let (sim, gateway) = gaulix(&dir);
    let gateway = set(
        &gateway,
        "frequency_mhz = 869.4625",
        "frequency_mhz = 869.5875",
    );
    let hub = sim.tcp(0x6a0f_0001);
    let (ok, out, err) = run_archipel(&["radio-info", "--tcp", &hub], LIMIT);
    assert!(ok, "radio-info failed: {err}");
    assert!(out.contains("frequency 869.4625 MHz (override)"), "{out}");
    let config = write(&dir, "gateway.toml", &gateway);
    let mut gw = Gateway::start(&dir, &config, None);
    let line = gw.wait("the frequency problem", |l| {
        l.contains("PROBLEM gaulix") && l.contains("frequency")
    });
    assert!(
        line.contains("869.5875 MHz")
            && line.contains("869.4625 MHz")
            && line.contains("meshtastic --set lora.override_frequency 869.5875"),
        "{line}"
    );
    // The LongFast radio has no frequency configured: nothing said about it.
    gw.wait_endpoint_up(0, "radio", "longfast");
    assert_eq!(
        gw.count(&|l: &str| l.contains("PROBLEM longfast")),
        0,
        "{}",
        gw.printed()
    );
}

/// Node numbers of the federation profile's people (deploy/profiles/federation/sim-*.toml).
const PERSON_A: u32 = 0x5a0a_0004;
const PERSON_B: u32 = 0x5a0b_0004;
/// Entraide's index on both towns' meshes.
const ENTRAIDE: u32 = 1;

#[test]
fn the_federation_profile_carries_a_text_from_one_hubs_mesh_to_the_others_and_back() {
    let dir = Scratch::new("profile-federation");
    let (radio_a, person_a, radio_b, person_b) =
        (free_port(), free_port(), free_port(), free_port());
    let listen = free_port();
    let world_a = set(
        &set(
            &profile("federation/sim-a.toml"),
            "tcp_port = 4403 }",
            &format!("tcp_port = {radio_a} }}"),
        ),
        "tcp_port = 4405 }",
        &format!("tcp_port = {person_a} }}"),
    );
    let world_b = set(
        &set(
            &profile("federation/sim-b.toml"),
            "tcp_port = 4413 }",
            &format!("tcp_port = {radio_b} }}"),
        ),
        "tcp_port = 4415 }",
        &format!("tcp_port = {person_b} }}"),
    );
    let sim_a = Sim::start(&dir, "sim-a", &world_a, 2);
    let sim_b = Sim::start(&dir, "sim-b", &world_b, 2);

    // Ports and files as the test chose them; the peers' keys still the shipped examples.
    let mut hub_a = profile("federation/hub-a.toml");
    hub_a = set(
        &hub_a,
        "\"127.0.0.1:4403\"",
        &format!("\"127.0.0.1:{radio_a}\""),
    );
    hub_a = set(
        &hub_a,
        "\"127.0.0.1:4404\"",
        &format!("\"127.0.0.1:{listen}\""),
    );
    let mut hub_b = profile("federation/hub-b.toml");
    hub_b = set(
        &hub_b,
        "\"127.0.0.1:4413\"",
        &format!("\"127.0.0.1:{radio_b}\""),
    );
    hub_b = set(
        &hub_b,
        "\"127.0.0.1:4404\"",
        &format!("\"127.0.0.1:{listen}\""),
    );
    for (text, hub) in [(&mut hub_a, "hub-a"), (&mut hub_b, "hub-b")] {
        *text = set(
            text,
            &format!("path = \"{hub}.sqlite\""),
            &format!(
                "path = \"{}\"",
                dir.path(&format!("{hub}.sqlite")).display()
            ),
        );
        *text = set(
            text,
            &format!("identity_file = \"{hub}-identity.key\""),
            &format!(
                "identity_file = \"{}\"",
                dir.path(&format!("{hub}-identity.key")).display()
            ),
        );
    }
    // The README's step: each hub's `archipel identity`, given to the other.
    let key_a = identity(&write(&dir, "hub-a.toml", &hub_a));
    let key_b = identity(&write(&dir, "hub-b.toml", &hub_b));
    let config_a = write(&dir, "hub-a.toml", &with_peer_key(&hub_a, &key_b));
    let config_b = write(&dir, "hub-b.toml", &with_peer_key(&hub_b, &key_a));

    let mut b = Gateway::start_logged(&dir, &config_b, None, "hub-b.log");
    let mut a = Gateway::start_logged(&dir, &config_a, None, "hub-a.log");
    a.wait_endpoint_up(0, "peer", "hub-b");
    b.wait_endpoint_up(0, "peer", "hub-a");
    a.wait_endpoint_up(0, "radio", "town-a");
    b.wait_endpoint_up(0, "radio", "town-b");
    let in_a = MeshClient::connect("person in town A", &sim_a.tcp(PERSON_A), LIMIT);
    let in_b = MeshClient::connect("person in town B", &sim_b.tcp(PERSON_B), LIMIT);

    let ask = say(
        &in_a,
        ENTRAIDE,
        0x5a0e_0001,
        "Entraide: who has a generator to lend?",
    );
    let got = in_b.packets_until(LIMIT, |p| ask.is(p));
    let p = got.last().unwrap();
    assert_eq!(
        (p.from(), p.text().as_deref()),
        (in_a.node(), Some(ask.text.as_str())),
        "sender and words kept across the hubs"
    );
    assert_eq!(p.channel(), ENTRAIDE);
    a.wait("relayed to hub B", |l| ask.relayed_to("hub-b", l));

    let offer = say(
        &in_b,
        ENTRAIDE,
        0x5a0e_0002,
        "Entraide: the school has one, ask Yann",
    );
    let got = in_a.packets_until(LIMIT, |p| offer.is(p));
    assert_eq!(got.last().unwrap().from(), in_b.node());
    b.wait("relayed to hub A", |l| offer.relayed_to("hub-a", l));
}
