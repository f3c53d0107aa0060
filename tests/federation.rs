//! Federation end to end: two `archipel run` hubs, each with its own `archipel sim` mesh,
//! linked over loopback by the peer protocol on mutually authenticated TLS (keys made by
//! `archipel identity`). What is checked is what the people on each mesh see (the test's own
//! radios A2 and B2) and what the hubs print.

use std::path::Path;

use archipel_adapters::peer::PeerKey;
use archipel_e2e::bridge::*;
use archipel_e2e::{MeshClient, free_port, run_archipel};

/// Both meshes use north's channels (Harbour on the default key, ops), so a text crosses on
/// its own channel name.
fn world(ports: (u16, u16), gw: u32, person: u32, name: &str) -> String {
    mesh(
        name,
        "ShortTurbo",
        &north_channels(),
        1.0,
        &[
            node(gw, &format!("{name} hub radio"), Some(ports.0), None),
            node(person, &format!("{name} person"), Some(ports.1), None),
        ],
    )
}

/// `archipel identity` for the hub whose config is `config`: its key.
fn identity(config: &Path) -> PeerKey {
    let (ok, out, err) = run_archipel(
        &["identity", "--config", &config.display().to_string()],
        LIMIT,
    );
    assert!(ok, "archipel identity failed: {err}");
    out.lines()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no key printed: {out}"))
}

/// One hub's config: radio `radio` on `port`, and its `[[peer]]`/`[federation]` text.
fn hub(
    dir: &Scratch,
    name: &str,
    id: &str,
    port: u16,
    radio_name: &str,
    federation: &str,
    peer: &str,
) -> std::path::PathBuf {
    let sections = [
        radio(radio_name, port, "ShortTurbo", &north_channels(), ""),
        federation.to_owned(),
        peer.to_owned(),
    ];
    let peer_name = if name == "north" {
        "south-hub"
    } else {
        "north-hub"
    };
    let routes = [route("Harbour", &[radio_name], &[peer_name], "Harbour", "")];
    // Each hub in its own directory: its identity key is kept beside its store.
    let home = dir.path(name);
    std::fs::create_dir_all(&home).expect("hub directory");
    let text = gateway_toml_as(id, &home.join("store.sqlite"), "", &sections, &routes);
    let path = dir.path(&format!("{name}-gateway.toml"));
    std::fs::write(&path, text).expect("config written");
    path
}

/// Two hubs: south listens, north dials it.
struct Two {
    /// South's real key.
    south_key: PeerKey,
    a2: MeshClient,
    b2: MeshClient,
    north: Gateway,
    south: Gateway,
    _sims: (Sim, Sim),
    _dir: Scratch,
}

fn two(tag: &str, wrong_key: bool) -> Two {
    let dir = Scratch::new(tag);
    let (pa, pa2, pb, pb2) = (free_port(), free_port(), free_port(), free_port());
    let listen = free_port();
    let sim_n = Sim::start(&dir, "north", &world((pa, pa2), A, A2, "north"), 2);
    let sim_s = Sim::start(&dir, "south", &world((pb, pb2), B, B2, "south"), 2);
    // First pass: configs without peers, to make each hub's key.
    let n_cfg = hub(&dir, "north", GATEWAY_ID, pa, "north", "", "");
    let s_cfg = hub(&dir, "south", "!a7c40002", pb, "south", "", "");
    let n_key = identity(&n_cfg);
    let s_key = identity(&s_cfg);
    let s_key_given = if wrong_key { n_key } else { s_key };
    let n_peer = format!(
        "[[peer]]\nname = \"south-hub\"\naddress = \"127.0.0.1:{listen}\"\nkey = \"{}\"\n",
        if wrong_key {
            PeerKey::from_bytes([9; 32])
        } else {
            s_key_given
        }
    );
    let s_peer = format!("[[peer]]\nname = \"north-hub\"\nkey = \"{n_key}\"\n");
    let s_fed = format!("[federation]\nlisten = \"127.0.0.1:{listen}\"\n");
    let n_cfg = hub(&dir, "north", GATEWAY_ID, pa, "north", "", &n_peer);
    let s_cfg = hub(&dir, "south", "!a7c40002", pb, "south", &s_fed, &s_peer);
    let mut south = Gateway::start_logged(&dir, &s_cfg, None, "south-gateway.log");
    south.wait_endpoint_up(0, "radio", "south");
    let mut north = Gateway::start_logged(&dir, &n_cfg, None, "north-gateway.log");
    north.wait_endpoint_up(0, "radio", "north");
    if !wrong_key {
        north.wait_endpoint_up(0, "peer", "south-hub");
        south.wait_endpoint_up(0, "peer", "north-hub");
    }
    let a2 = MeshClient::connect("A2", &sim_n.tcp(A2), LIMIT);
    let b2 = MeshClient::connect("B2", &sim_s.tcp(B2), LIMIT);
    Two {
        south_key: s_key,
        a2,
        b2,
        north,
        south,
        _sims: (sim_n, sim_s),
        _dir: dir,
    }
}

#[test]
fn a_text_on_one_mesh_reaches_the_other_hubs_mesh_once_keeping_sender_and_id_and_back() {
    let mut t = two("fed-two", false);
    let hello = say(
        &t.a2,
        NORTH_PRIMARY,
        0x7e0f_0001,
        "north to south over the peer link",
    );
    let got = t.b2.packets_until(LIMIT, |p| hello.is(p));
    let p = got.last().unwrap();
    assert_eq!(
        (p.from(), p.id()),
        (t.a2.node(), hello.id),
        "sender and id kept"
    );
    assert_eq!(p.text().as_deref(), Some(hello.text.as_str()));
    let marker = say(&t.a2, NORTH_PRIMARY, 0x7e0f_0002, "marker");
    let heard = heard_until(&t.b2, &marker);
    assert_eq!(times(&got, &hello) + times(&heard, &hello), 1, "once");
    t.north
        .wait("relayed to the peer", |l| hello.relayed_to("south-hub", l));

    let back = say(&t.b2, NORTH_PRIMARY, 0x7e0f_0003, "south to north");
    let got = t.a2.packets_until(LIMIT, |p| back.is(p));
    assert_eq!(got.last().unwrap().from(), t.b2.node());
    t.south
        .wait("relayed back", |l| back.relayed_to("north-hub", l));
}

#[test]
fn a_hub_that_presents_another_key_is_refused_and_the_refusal_names_its_fingerprint() {
    let mut t = two("fed-wrong-key", true);
    let line = t.north.wait("the wrong key said", |l| {
        l.contains("south-hub") && l.contains("key")
    });
    let fingerprint = t.south_key.fingerprint().to_string();
    assert!(
        line.contains(&fingerprint),
        "the fingerprint south presented ({fingerprint}) is shown: {line}"
    );
    // Nothing crosses.
    let m = say(&t.a2, NORTH_PRIMARY, 0x7e1f_0001, "must wait");
    let held = t.north.wait("queued for the peer", |l| m.queued(l));
    assert!(held.contains("south-hub"), "{held}");
    let _ = &t.south;
    let _ = &t.b2;
}
