//! Federation end to end: two `archipel run` hubs, each with its own `archipel sim` mesh,
//! linked over loopback by the peer protocol on mutually authenticated TLS (keys made by
//! `archipel identity`). What is checked is what the people on each mesh see (the test's own
//! radios A2 and B2) and what the hubs print.

use archipel_adapters::peer::PeerKey;
use archipel_e2e::bridge::*;
use archipel_e2e::{MeshClient, free_port};

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
}

/// A hub's config written out: `sections` (radios, `[federation]`, `[[peer]]`s, channels) and
/// its routes, its store (and so its identity) in a directory of its own.
fn config(
    dir: &Scratch,
    name: &str,
    id: &str,
    sections: &[String],
    routes: &[String],
) -> std::path::PathBuf {
    let home = dir.path(name);
    std::fs::create_dir_all(&home).expect("hub directory");
    let text = gateway_toml_as(id, &home.join("store.sqlite"), "", sections, routes);
    let path = dir.path(&format!("{name}-gateway.toml"));
    std::fs::write(&path, text).expect("config written");
    path
}

/// Three hubs in a line, A – B – C, where A and C are not linked: B has no radio of its own
/// and routes Harbour from one neighbour on to the other. `c_federation` is C's
/// `[federation]` section (C only dials, so it needs none).
struct Line {
    a2: MeshClient,
    c2: MeshClient,
    b: Gateway,
    c: Gateway,
    _hubs: Gateway,
    _sims: (Sim, Sim),
    _dir: Scratch,
}

fn line(tag: &str, c_federation: &str) -> Line {
    let dir = Scratch::new(tag);
    let (pa, pa2, pc, pc2) = (free_port(), free_port(), free_port(), free_port());
    let listen = free_port();
    let sim_a = Sim::start(&dir, "north", &world((pa, pa2), A, A2, "north"), 2);
    let sim_c = Sim::start(&dir, "south", &world((pc, pc2), B, B2, "south"), 2);
    let harbour = "[[channel]]\nname = \"Harbour\"\npsk = \"AQ==\"\n".to_owned();
    // Keys first: each hub's identity beside its store.
    let a_key = identity(&config(
        &dir,
        "a",
        GATEWAY_ID,
        &[radio("north", pa, "ShortTurbo", &north_channels(), "")],
        &[],
    ));
    let b_key = identity(&config(
        &dir,
        "b",
        "!a7c40002",
        std::slice::from_ref(&harbour),
        &[],
    ));
    let c_key = identity(&config(
        &dir,
        "c",
        "!a7c40003",
        &[radio("south", pc, "ShortTurbo", &north_channels(), "")],
        &[],
    ));
    let dial_b = format!(
        "[[peer]]\nname = \"hub-b\"\naddress = \"127.0.0.1:{listen}\"\nkey = \"{b_key}\"\n"
    );
    let a_cfg = config(
        &dir,
        "a",
        GATEWAY_ID,
        &[
            radio("north", pa, "ShortTurbo", &north_channels(), ""),
            dial_b.clone(),
        ],
        &[route("Harbour", &["north"], &["hub-b"], "Harbour", "")],
    );
    let b_cfg = config(
        &dir,
        "b",
        "!a7c40002",
        &[
            harbour,
            format!("[federation]\nlisten = \"127.0.0.1:{listen}\"\n"),
            format!("[[peer]]\nname = \"hub-a\"\nkey = \"{a_key}\"\n"),
            format!("[[peer]]\nname = \"hub-c\"\nkey = \"{c_key}\"\n"),
        ],
        &[route("Harbour", &["hub-a"], &["hub-c"], "Harbour", "")],
    );
    let c_cfg = config(
        &dir,
        "c",
        "!a7c40003",
        &[
            radio("south", pc, "ShortTurbo", &north_channels(), ""),
            c_federation.to_owned(),
            dial_b,
        ],
        &[route("Harbour", &["south"], &["hub-b"], "Harbour", "")],
    );
    let mut b = Gateway::start_logged(&dir, &b_cfg, None, "b-gateway.log");
    let mut a = Gateway::start_logged(&dir, &a_cfg, None, "a-gateway.log");
    let mut c = Gateway::start_logged(&dir, &c_cfg, None, "c-gateway.log");
    a.wait_endpoint_up(0, "peer", "hub-b");
    c.wait_endpoint_up(0, "peer", "hub-b");
    b.wait_endpoint_up(0, "peer", "hub-a");
    b.wait_endpoint_up(0, "peer", "hub-c");
    let a2 = MeshClient::connect("A2", &sim_a.tcp(A2), LIMIT);
    let c2 = MeshClient::connect("C2", &sim_c.tcp(B2), LIMIT);
    Line {
        a2,
        c2,
        b,
        c,
        _hubs: a,
        _sims: (sim_a, sim_c),
        _dir: dir,
    }
}

/// A text on A's mesh reaches C's through B, once, and back.
#[test]
fn three_hubs_in_a_line_carry_a_mesh_to_the_far_one_through_the_middle() {
    let mut t = line("fed-line", "");
    let hello = say(
        &t.a2,
        NORTH_PRIMARY,
        0x7e2f_0001,
        "from A's mesh to C's, through B",
    );
    let got = t.c2.packets_until(LIMIT, |p| hello.is(p));
    assert_eq!(
        got.last().unwrap().text().as_deref(),
        Some(hello.text.as_str())
    );
    let marker = say(&t.a2, NORTH_PRIMARY, 0x7e2f_0002, "marker");
    let heard = heard_until(&t.c2, &marker);
    assert_eq!(times(&got, &hello) + times(&heard, &hello), 1, "once");
    t.b.wait("B relayed it on to C", |l| hello.relayed_to("hub-c", l));

    let back = say(
        &t.c2,
        NORTH_PRIMARY,
        0x7e2f_0003,
        "from C's mesh back to A's",
    );
    let got = t.a2.packets_until(LIMIT, |p| back.is(p));
    assert_eq!(got.last().unwrap().from(), t.c2.node());
}

/// C takes nothing that crossed more hubs than its `max_hops`: A's text comes to it through B
/// as its second hub and is dropped (counted, named on stdout, acknowledged so B does not offer
/// it again), while C's own text still goes out to A, one hop away from B.
#[test]
fn a_hub_drops_what_crossed_more_hubs_than_its_max_hops() {
    let mut t = line("fed-hops", "[federation]\nmax_hops = 1\n");
    let hello = say(&t.a2, NORTH_PRIMARY, 0x7e4f_0001, "two hubs away");
    t.b.wait("B relayed it on to C", |l| hello.relayed_to("hub-c", l));
    let dropped = t.c.wait("C dropped it", |l| {
        l.contains("dropped a packet") && l.contains("heard on hub-b: hops")
    });
    assert!(dropped.contains(&format!("{}", t.a2.node())), "{dropped}");
    // Acknowledged, not queued: B's queue for C empties, and C never relays it.
    assert_eq!(t.c.count(&|l| hello.queued(l)), 0, "C never queued it");
    // The other way the first hop is within C's limit, and B's own limit (4) lets it on.
    let back = say(&t.c2, NORTH_PRIMARY, 0x7e4f_0002, "from C to A");
    let got = t.a2.packets_until(LIMIT, |p| back.is(p));
    assert_eq!(got.last().unwrap().from(), t.c2.node());
    assert_eq!(times(&got, &hello), 0);
}

/// Three hubs in a triangle, each with its own mesh, each routing Harbour between its radio
/// and both neighbours: a text goes round both ways and comes back to each hub a second time,
/// and the seen-set keeps it to one copy on every mesh and stops it going round for ever.
#[test]
fn three_hubs_in_a_triangle_deliver_a_text_once_on_every_mesh_and_never_loop() {
    let dir = Scratch::new("fed-triangle");
    let names = ["a", "b", "c"];
    let ids = [GATEWAY_ID, "!a7c40002", "!a7c40003"];
    let radios = [(A, A2), (B, B2), (0x0000_c001, 0x0000_c002)];
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let sims: Vec<Sim> = (0..3)
        .map(|i| {
            let (gw, person) = radios[i];
            let w = world(
                (ports[i].0, ports[i].1),
                gw,
                person,
                &format!("mesh-{}", names[i]),
            );
            Sim::start(&dir, &format!("mesh-{}", names[i]), &w, 2)
        })
        .collect();
    let radio_of = |i: usize| {
        radio(
            &format!("radio-{}", names[i]),
            ports[i].0,
            "ShortTurbo",
            &north_channels(),
            "",
        )
    };
    let keys: Vec<PeerKey> = (0..3)
        .map(|i| identity(&config(&dir, names[i], ids[i], &[radio_of(i)], &[])))
        .collect();
    let mut hubs: Vec<Gateway> = Vec::new();
    for i in 0..3 {
        let mut sections = vec![
            radio_of(i),
            format!("[federation]\nlisten = \"127.0.0.1:{}\"\n", ports[i].2),
        ];
        let mut ends = vec![format!("radio-{}", names[i])];
        for j in (0..3).filter(|&j| j != i) {
            // The hub with the lower index dials; the other waits for it.
            let address = if i < j {
                format!("address = \"127.0.0.1:{}\"\n", ports[j].2)
            } else {
                String::new()
            };
            sections.push(format!(
                "[[peer]]\nname = \"hub-{}\"\n{address}key = \"{}\"\n",
                names[j], keys[j]
            ));
            ends.push(format!("hub-{}", names[j]));
        }
        // Every pair of its ends, both ways: radio and each neighbour, and neighbour to neighbour.
        let routes = [
            route("Harbour", &[&ends[0]], &[&ends[1]], "Harbour", ""),
            route("Harbour", &[&ends[0]], &[&ends[2]], "Harbour", ""),
            route("Harbour", &[&ends[1]], &[&ends[2]], "Harbour", ""),
        ];
        let cfg = config(&dir, names[i], ids[i], &sections, &routes);
        hubs.push(Gateway::start_logged(
            &dir,
            &cfg,
            None,
            &format!("{}-gateway.log", names[i]),
        ));
    }
    for (i, hub) in hubs.iter_mut().enumerate() {
        for j in (0..3).filter(|&j| j != i) {
            hub.wait_endpoint_up(0, "peer", &format!("hub-{}", names[j]));
        }
    }
    let people: Vec<MeshClient> = (0..3)
        .map(|i| MeshClient::connect(names[i], &sims[i].tcp(radios[i].1), LIMIT))
        .collect();

    let hello = say(&people[0], NORTH_PRIMARY, 0x7e3f_0001, "round the triangle");
    for (i, person) in people.iter().enumerate().skip(1) {
        let got = person.packets_until(LIMIT, |p| hello.is(p));
        let marker = say(&people[0], NORTH_PRIMARY, 0x7e3f_0010 + i as u32, "marker");
        let heard = heard_until(person, &marker);
        assert_eq!(
            times(&got, &hello) + times(&heard, &hello),
            1,
            "once on mesh {}",
            names[i]
        );
    }
    // Each hub stored it once; the copies coming round were dropped as already seen.
    for (i, hub) in hubs.iter_mut().enumerate().skip(1) {
        hub.wait("queued once", |l| hello.queued(l));
        assert_eq!(
            hub.count(&|l| hello.queued(l)),
            1,
            "hub {} queued it once",
            names[i]
        );
    }
    // A's own text never comes back onto A's mesh from its neighbours.
    let after = say(&people[1], NORTH_PRIMARY, 0x7e3f_0100, "from B, later");
    let back = people[0].packets_until(LIMIT, |p| after.is(p));
    assert_eq!(
        times(&back, &hello),
        0,
        "A's mesh never hears its own text again"
    );
    drop(sims);
}
