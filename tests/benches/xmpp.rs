//! XMPP on the real path: `archipel run` (release) between the simulator and a real Prosody,
//! slixmpp users in the room.
//!
//! 1. Mesh → room latency: Amira's radio sends texts one after the other; each is timed from
//!    her radio taking it to bob's client receiving it in the room (the mesh's airtime and the
//!    radio's uplink included), and inside the gateway from its `queued` line (committed) to its
//!    `relayed` line (the room reflected it back).
//! 2. Room → mesh: bob says texts in the room; each is timed from his send to the gateway's
//!    `queued` line for the radio (in the durable outbox).
//! 3. Backlog: 10,000 texts from 256 nodes queued for the room while the server is away (the
//!    store prefilled the way the binary fills it), then Prosody starts: the time from its start
//!    to the last `relayed` line (each one a reflection by the room), and the rate.
//!
//! ```text
//! cargo build --release -p archipel-gateway
//! cargo bench -p archipel-e2e --bench xmpp
//! ```
//!
//! Settings: `ARCHIPEL_BENCH_TEXTS` (40 per direction), `ARCHIPEL_BENCH_MESSAGES` (10,000),
//! `ARCHIPEL_BIN` (target/release/archipel), `ARCHIPEL_VENV` (the venv with slixmpp).

mod common;

use std::time::{Duration, Instant};

use archipel_e2e::bridge::{Gateway, Scratch, Sim, gateway_toml, mesh, radio, route};
use archipel_e2e::prosody::Prosody;
use archipel_e2e::xmpp_user::XmppUser;
use archipel_e2e::{MeshClient, free_port};
use common::{closed_port, rate, secs, setting};
use mesh_core::{NodeId, Packet, PacketId, proto};

const CHANNELS: &str = r#"[ { name = "Harbour", psk = "AQ==" } ]"#;
const A: u32 = 0x0000_a001;
const AMIRA: u32 = 0x0000_a0a1;
const LIMIT: Duration = Duration::from_secs(120);

fn main() {
    if std::env::var_os("ARCHIPEL_BIN").is_none() {
        // The harness's processes run the release binary, as the other benches do.
        // SAFETY: set before any thread starts.
        unsafe { std::env::set_var("ARCHIPEL_BIN", common::archipel_bin()) };
    }
    let texts: u64 = setting("ARCHIPEL_BENCH_TEXTS", 40);
    let messages: u64 = setting("ARCHIPEL_BENCH_MESSAGES", 10_000);
    latency(texts);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(backlog(messages));
}

fn xmpp_section(prosody: &Prosody, extra: &str) -> String {
    format!(
        "[[xmpp]]\nname = \"xmpp\"\nserver = \"{}\"\ndomain = \"{}\"\nsecret_file = \"{}\"\nrooms = \"{}\"\n{extra}\n",
        prosody.component_addr(),
        prosody.component_domain(),
        prosody.secret_file().display(),
        prosody.muc_domain(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p99 of `samples`, in ms.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        ms(samples[i.min(samples.len() - 1)])
    };
    (at(0.5), at(0.99))
}

fn latency(texts: u64) {
    let dir = Scratch::new("bench-xmpp-latency");
    let prosody = Prosody::start("bench-xmpp");
    prosody.register("bob", "pw");
    let ports = [free_port(), free_port()];
    let node = |id: u32, name: &str, port: u16| {
        format!(
            "[[mesh.node]]\nid = \"{}\"\nlong_name = \"{name}\"\nshort_name = \"{}\"\nattached = {{ tcp_port = {port} }}\n",
            NodeId::new(id),
            &name[..4]
        )
    };
    let world = mesh(
        "north",
        "ShortTurbo",
        CHANNELS,
        1.0,
        &[node(A, "Hubb", ports[0]), node(AMIRA, "Amira", ports[1])],
    );
    let sim = Sim::start(&dir, "north", &world, 2);
    let sections = [
        radio("north", ports[0], "ShortTurbo", CHANNELS, ""),
        xmpp_section(&prosody, "rate_per_user = 600\nburst_per_user = 1000\n"),
    ];
    let routes = [route("Harbour", &["north"], &["xmpp"], "Harbour", "")];
    let config = dir.path("gateway.toml");
    std::fs::write(
        &config,
        gateway_toml(&dir.path("store.sqlite"), "", &sections, &routes),
    )
    .expect("config written");
    let mut gw = Gateway::start(&dir, &config, None);
    gw.wait_endpoint_up(0, "radio", "north");
    gw.wait_endpoint_up(0, "xmpp", "xmpp");
    let amira = MeshClient::connect("Amira", &sim.tcp(AMIRA), LIMIT);
    let bob = XmppUser::connect(&prosody, "bob", "pw");
    bob.join("harbour", "bob");

    let mut end_to_end = Vec::new();
    let mut inside = Vec::new();
    for i in 0..texts {
        let id = 0x6e00_0000 + i as u32;
        let body = format!("latency probe {i}");
        let packet = Packet::from_data(
            proto::MeshPacket {
                to: NodeId::BROADCAST.get(),
                id,
                hop_limit: 3,
                ..Default::default()
            },
            proto::Data {
                portnum: proto::PortNum::TextMessageApp as i32,
                payload: body.clone().into_bytes(),
                ..Default::default()
            },
        );
        let mark = gw.mark();
        amira.send(packet);
        let sent = Instant::now();
        bob.wait_for(LIMIT, |e| e.groupchat().is_some_and(|m| m.body == body));
        end_to_end.push(sent.elapsed());
        let key = format!("{} {}", NodeId::new(AMIRA), PacketId::new(id));
        gw.wait_after(mark, "queued", |l| l.contains(&format!("queued {key}")));
        gw.wait_after(mark, "relayed", |l| {
            l.contains(&format!("relayed {key} -> xmpp"))
        });
        let at = |word: &str| {
            gw.lines[mark..]
                .iter()
                .find(|(_, l)| l.contains(&format!("{word} {key}")))
                .map(|(at, _)| *at)
        };
        if let (Some(q), Some(r)) = (at("queued"), at("relayed")) {
            inside.push(r.saturating_duration_since(q));
        }
    }
    let (p50, p99) = percentiles(&mut end_to_end);
    println!(
        "mesh -> room: {texts} texts, Amira's radio took it -> bob's client has it: p50 {p50:.1} ms, p99 {p99:.1} ms (mesh airtime and uplink included)"
    );
    let (p50, p99) = percentiles(&mut inside);
    println!(
        "mesh -> room: inside the gateway, committed (`queued`) -> reflected by the room (`relayed`): p50 {p50:.1} ms, p99 {p99:.1} ms"
    );

    let mut up = Vec::new();
    for i in 0..texts {
        let body = format!("room probe {i}");
        let mark = gw.mark();
        let sent = Instant::now();
        bob.say("harbour", &body);
        let (at, _) = {
            gw.wait_after(mark, "queued from xmpp", |l| {
                l.contains(" queued ") && l.contains("from xmpp#Harbour") && l.contains("(channel)")
            });
            gw.lines[mark..]
                .iter()
                .find(|(_, l)| {
                    l.contains(" queued ")
                        && l.contains("from xmpp#Harbour")
                        && l.contains("(channel)")
                })
                .cloned()
                .expect("the queued line")
        };
        up.push(at.saturating_duration_since(sent));
    }
    let (p50, p99) = percentiles(&mut up);
    println!(
        "room -> mesh: {texts} texts, bob's send -> in the radio's durable outbox (`queued`): p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    gw.terminate();
    drop(bob);
    drop(amira);
    sim.stop();
}

fn backlog_config(dir: &Scratch, prosody: &Prosody, messages: u64) -> String {
    let sections = [
        radio("north", closed_port(), "ShortTurbo", CHANNELS, ""),
        xmpp_section(prosody, ""),
    ];
    let routes = [route(
        "Harbour",
        &["north"],
        &["xmpp"],
        "Harbour",
        "one_way = true\n",
    )];
    gateway_toml(
        &dir.path("store.sqlite"),
        &format!("max_queue_per_destination = {}", messages * 2),
        &sections,
        &routes,
    )
}

async fn backlog(messages: u64) {
    let dir = Scratch::new("bench-xmpp-backlog");
    let mut prosody = Prosody::start("bench-xmpp-backlog");
    prosody.stop();
    let config_path = dir.path("gateway.toml");
    std::fs::write(&config_path, backlog_config(&dir, &prosody, messages)).expect("config");
    let store_path = dir.path("store.sqlite");
    common::backlog::prefill(&config_path, &store_path, "north", "Harbour", messages).await;

    let mut gw = Gateway::start(&dir, &config_path, None);
    let mark = gw.mark();
    let started = Instant::now();
    prosody.start_again();
    gw.wait_endpoint_up(mark, "xmpp", "xmpp");
    let up = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(setting("ARCHIPEL_BENCH_LIMIT_SECS", 600));
    let mut relayed = 0u64;
    let mut first = None;
    let mut last = started;
    while relayed < messages && Instant::now() < deadline {
        let Ok((at, line)) = gw.process.next_line(Duration::from_secs(30)) else {
            break;
        };
        if line.contains(" relayed ") && line.contains("-> xmpp#") {
            relayed += 1;
            first.get_or_insert(at);
            last = at;
        }
    }
    let left = common::queued_in_store(&store_path).await;
    println!(
        "backlog -> room: {relayed} of {messages} texts from 256 nodes reflected by the room; the link was up {} after Prosody started",
        secs(up)
    );
    println!(
        "backlog -> room: from Prosody's start to the last reflection {}: {}; from the first to the last {}",
        secs(last - started),
        rate(relayed, last - started),
        rate(relayed, last - first.unwrap_or(started)),
    );
    gw.terminate();
    println!("backlog -> room: left in the store after stop (read while running): {left:?}");
    assert_eq!(relayed, messages, "every text reflected");
}
