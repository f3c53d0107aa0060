//! The harness of the end-to-end relay tests: configs for `archipel sim` worlds and
//! `archipel run`, the processes with every line they print, and the people on each mesh (the
//! test's own radio links). Shared by `tests/relay.rs` and the MQTT end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use mesh_core::{NodeId, Packet, PacketId, proto};

use crate::{MeshClient, SimRadio, Watched, archipel_bin, free_port, parse_radio_line, temp_dir};
/// Bound on any single wait for a line or a packet.
pub const LIMIT: Duration = Duration::from_secs(45);

/// The "ops" key, the same on both meshes (a test key, published here).
pub const OPS_KEY: &str = "YXJjaGlwZWwtb3BzLWtleQ==";

/// The north mesh's channels: primary "Harbour" on the default key, "ops" at index 1.
pub fn north_channels() -> String {
    format!(r#"[ {{ name = "Harbour", psk = "AQ==" }}, {{ name = "ops", psk = "{OPS_KEY}" }} ]"#)
}

/// The south mesh's channels: primary "Valley" on another key, "ops" at index 2.
pub fn south_channels() -> String {
    format!(
        r#"[ {{ name = "Valley", psk = "simple5" }}, {{ name = "local", psk = "simple7" }}, {{ name = "ops", psk = "{OPS_KEY}" }} ]"#
    )
}

/// Channel indexes as each mesh's radios number them.
pub const NORTH_PRIMARY: u32 = 0;
pub const NORTH_OPS: u32 = 1;
pub const SOUTH_PRIMARY: u32 = 0;
pub const SOUTH_OPS: u32 = 2;

/// Node numbers: A (the gateway's), A1 (the gateway's second north radio, test 2 only), A2
/// (the test's, north), B (the gateway's), B2 (the test's, south).
pub const A: u32 = 0x0000_a001;
pub const A1: u32 = 0x0000_a011;
pub const A2: u32 = 0x0000_a002;
pub const B: u32 = 0x0000_b001;
pub const B2: u32 = 0x0000_b002;

// ---------------------------------------------------------------------------------------------
// Configs

/// One `[[mesh.node]]`: attached on `port` when given, with `traffic` (an inline table) when
/// given.
pub fn node(id: u32, name: &str, port: Option<u16>, traffic: Option<&str>) -> String {
    let mut s = format!(
        "[[mesh.node]]\nid = \"{}\"\nlong_name = \"{name}\"\nshort_name = \"{}\"\n",
        NodeId::new(id),
        &name[..name.len().min(4)]
    );
    if let Some(port) = port {
        s += &format!("attached = {{ tcp_port = {port} }}\n");
    }
    if let Some(traffic) = traffic {
        s += &format!("traffic = {traffic}\n");
    }
    // The test's own radios run firmware without PKI, so their direct messages to the other
    // mesh go with the channel key: a radio with PKI refuses to DM a node whose key it lacks,
    // and the gateway relays no PKI envelopes between meshes yet.
    if id == A2 || id == B2 {
        s += "pki = false\n";
    }
    s
}

/// A world of one mesh.
pub fn mesh(name: &str, preset: &str, channels: &str, time_scale: f64, nodes: &[String]) -> String {
    format!(
        "time_scale = {time_scale:?}\nseed = 11\n[[mesh]]\nname = \"{name}\"\npreset = \"{preset}\"\nchannels = {channels}\n{}",
        nodes.concat()
    )
}

/// One `[[radio]]` of the gateway.
pub fn radio(name: &str, port: u16, preset: &str, channels: &str, extra: &str) -> String {
    format!(
        "[[radio]]\nname = \"{name}\"\ntcp = \"127.0.0.1:{port}\"\nregion = \"US\"\npreset = \"{preset}\"\nchannels = {channels}\n{extra}"
    )
}

/// A route; `extra` adds keys such as `one_way = true`.
pub fn route(channel: &str, from: &[&str], to: &[&str], to_channel: &str, extra: &str) -> String {
    let list = |l: &[&str]| {
        l.iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[[route]]\nchannel = \"{channel}\"\nfrom = [{}]\nto = [{}]\nto_channel = \"{to_channel}\"\n{extra}",
        list(from),
        list(to)
    )
}

/// The gateway id of every config here, unless a test names another.
pub const GATEWAY_ID: &str = "!a7c40001";

/// A whole gateway config; `store_extra` goes right after `[store]`'s path (so it may open
/// `[store.ttl]` or `[airtime]`).
pub fn gateway_toml(
    store: &Path,
    store_extra: &str,
    radios: &[String],
    routes: &[String],
) -> String {
    gateway_toml_as(GATEWAY_ID, store, store_extra, radios, routes)
}

/// A whole gateway config for gateway `id`; `sections` are its `[[radio]]`, `[[mqtt]]` and
/// `[[channel]]` sections.
pub fn gateway_toml_as(
    id: &str,
    store: &Path,
    store_extra: &str,
    sections: &[String],
    routes: &[String],
) -> String {
    format!(
        "[gateway]\nname = \"e2e\"\nid = \"{id}\"\n[store]\npath = \"{}\"\n{store_extra}\n{}{}",
        store.display(),
        sections.concat(),
        routes.concat()
    )
}

/// The usual bridge: north#Harbour <-> south#Valley and ops <-> ops.
pub fn bridge_routes() -> Vec<String> {
    vec![
        route("Harbour", &["north"], &["south"], "Valley", ""),
        route("ops", &["north"], &["south"], "ops", ""),
    ]
}

// ---------------------------------------------------------------------------------------------
// Processes

/// The test's scratch directory, removed at the end (kept when the test fails, for its logs).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        Scratch(temp_dir(tag))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `archipel sim` on one mesh, with the radios it announced.
pub struct Sim {
    pub process: Watched,
    pub radios: Vec<SimRadio>,
}

impl Sim {
    /// Writes `config` as `<name>.toml` in `dir`, starts the simulator on it, and waits for its
    /// `attached` radios.
    pub fn start(dir: &Scratch, name: &str, config: &str, attached: usize) -> Sim {
        let path = dir.path(&format!("{name}.toml"));
        std::fs::write(&path, config).expect("sim config written");
        let mut cmd = Command::new(archipel_bin());
        cmd.arg("sim").arg("--config").arg(&path);
        let process = Watched::spawn(
            cmd,
            &format!("archipel sim ({name})"),
            &dir.path(&format!("{name}.log")),
        );
        let mut radios = Vec::new();
        let deadline = Instant::now() + LIMIT;
        while radios.len() < attached {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, line) = process.next_line(left).unwrap_or_else(|e| {
                panic!(
                    "{} announced {} radio(s) of {attached} ({e:?}); log:\n{}",
                    process.what(),
                    radios.len(),
                    process.log_tail(20)
                )
            });
            radios.extend(parse_radio_line(&line));
        }
        Sim { process, radios }
    }

    /// The TCP address of attached radio `id`.
    pub fn tcp(&self, id: u32) -> String {
        let node = NodeId::new(id).to_string();
        self.radios
            .iter()
            .find(|r| r.node == node)
            .unwrap_or_else(|| panic!("no attached radio {node} in {:?}", self.radios))
            .tcp
            .clone()
    }

    /// Stops it with SIGTERM and checks it exited cleanly.
    pub fn stop(self) {
        let status = self.process.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "the simulator did not exit cleanly on SIGTERM: {status:?}"
        );
    }
}

/// `archipel run` on a config, with every line it printed, stamped on arrival.
pub struct Gateway {
    pub process: Watched,
    pub lines: Vec<(Instant, String)>,
}

impl Gateway {
    /// Starts the gateway on `config`, armed with `ARCHIPEL_CRASH_AT=crash` when given.
    pub fn start(dir: &Scratch, config: &Path, crash: Option<&str>) -> Gateway {
        Gateway::start_logged(dir, config, crash, "gateway.log")
    }

    /// The same, its log in `log` (so two gateways may share a directory).
    pub fn start_logged(dir: &Scratch, config: &Path, crash: Option<&str>, log: &str) -> Gateway {
        let mut cmd = Command::new(archipel_bin());
        cmd.arg("run").arg("--config").arg(config);
        // Many gateways run at once here: each serves its page on a port of its own.
        cmd.env("ARCHIPEL_HTTP__LISTEN", "127.0.0.1:0");
        match crash {
            Some(point) => cmd.env("ARCHIPEL_CRASH_AT", point),
            None => cmd.env_remove("ARCHIPEL_CRASH_AT"),
        };
        Gateway::spawn(cmd, &dir.path(log))
    }

    /// `cmd`, an `archipel run` however it is started (inside a network namespace, say), its
    /// log in `log`.
    pub fn spawn(cmd: Command, log: &Path) -> Gateway {
        Gateway {
            process: Watched::spawn(cmd, "archipel run", log),
            lines: Vec::new(),
        }
    }

    /// How many lines were read so far: `wait_after` looks only at lines from there on.
    pub fn mark(&self) -> usize {
        self.lines.len()
    }

    /// Takes in every line printed until `until` (an observation period, not a synchronisation:
    /// what happens in it is asserted afterwards).
    pub fn read_until(&mut self, until: Instant) {
        while let Ok(line) = self
            .process
            .next_line(until.saturating_duration_since(Instant::now()))
        {
            self.lines.push(line);
        }
    }

    /// Waits until `n` lines that `pick` accepts were printed.
    pub fn wait_count(&mut self, what: &str, n: usize, pick: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + LIMIT;
        while self.count(&pick) < n {
            match self
                .process
                .next_line(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.lines.push(line),
                Err(e) => panic!(
                    "gateway: fewer than {n} lines for {what} within {}s ({e:?})\nprinted:\n{}",
                    LIMIT.as_secs(),
                    self.printed()
                ),
            }
        }
    }

    /// The first line from `mark` on that `pick` accepts, reading more for at most `LIMIT`;
    /// the error says why none came (time ran out, or the process ended).
    pub fn find_from(
        &mut self,
        mark: usize,
        pick: impl Fn(&str) -> bool,
    ) -> Result<String, std::sync::mpsc::RecvTimeoutError> {
        if let Some((_, line)) = self.lines[mark..].iter().find(|(_, l)| pick(l)) {
            return Ok(line.clone());
        }
        let deadline = Instant::now() + LIMIT;
        loop {
            let (at, line) = self
                .process
                .next_line(deadline.saturating_duration_since(Instant::now()))?;
            self.lines.push((at, line.clone()));
            if pick(&line) {
                return Ok(line);
            }
        }
    }

    /// The first line from `mark` on that `pick` accepts, waiting for more at most `LIMIT`.
    pub fn wait_after(&mut self, mark: usize, what: &str, pick: impl Fn(&str) -> bool) -> String {
        self.find_from(mark, pick).unwrap_or_else(|e| {
            panic!(
                "gateway: no line for {what} within {}s ({e:?})\nprinted:\n{}\nlog tail:\n{}",
                LIMIT.as_secs(),
                self.printed(),
                self.process.log_tail(30)
            )
        })
    }

    /// The first line ever printed that `pick` accepts, waiting for it if need be.
    pub fn wait(&mut self, what: &str, pick: impl Fn(&str) -> bool) -> String {
        self.wait_after(0, what, pick)
    }

    /// Waits until each of `radios` finished its handshake, as the radio link logs it.
    pub fn wait_ready(&self, radios: &[&str]) {
        let mut waiting: Vec<String> = radios.iter().map(|r| format!("name={r} ")).collect();
        while !waiting.is_empty() {
            let line = self.process.wait_log_line(LIMIT, |l| {
                l.contains("radio ready") && waiting.iter().any(|w| l.contains(w.as_str()))
            });
            waiting.retain(|w| !line.contains(w.as_str()));
        }
    }

    /// Waits until each of `radios` came up (after `mark`), as printed.
    pub fn wait_up(&mut self, mark: usize, radios: &[&str]) {
        for r in radios {
            let up = format!("radio {r} up");
            self.wait_after(mark, &up, |l| l.contains(&up));
        }
    }

    /// Waits for a line that `pick` accepts, or for the process to exit: `None` then.
    pub fn wait_or_exit(&mut self, pick: impl Fn(&str) -> bool) -> Option<String> {
        match self.find_from(0, pick) {
            Ok(line) => Some(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(e) => panic!(
                "gateway: neither the line nor an exit within {}s ({e:?})\nprinted:\n{}",
                LIMIT.as_secs(),
                self.printed()
            ),
        }
    }

    /// Stops it with SIGTERM, reads what it prints on the way out (the last summary), and
    /// says how it ended.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal_and_wait(nix::sys::signal::Signal::SIGTERM)
    }

    /// Waits for the process to end by itself and says how.
    pub fn exit(&mut self) -> ExitStatus {
        let (status, lines) = self.process.wait_exit(LIMIT);
        self.lines.extend(lines);
        status
    }

    /// Sends `signal` now and waits for the end, taking in what it printed on the way out
    /// (after SIGTERM: the summary, then `stopped`).
    pub fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        let pid = self.process.pid().expect("the gateway is running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid fits an i32"));
        nix::sys::signal::kill(pid, signal).expect("the gateway can be signalled");
        self.exit()
    }

    /// Waits until endpoint `name` of `kind` (`radio`, `mqtt`) came up after `mark`.
    /// The address its status page and metrics are served at (`http://127.0.0.1:PORT`), as
    /// it printed it at start.
    pub fn http(&mut self) -> String {
        let line = self.wait_after(0, "the status page address", |l| {
            l.contains(" status page at http://")
        });
        let at = line
            .split(" status page at ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        at.trim_end_matches('/').to_owned()
    }

    pub fn wait_endpoint_up(&mut self, mark: usize, kind: &str, name: &str) {
        let up = format!(" {kind} {name} up");
        self.wait_after(mark, &up, |l| l.contains(&up));
    }

    /// A counter of the last summary line (`dropped` in `..., dropped 7, ...`).
    pub fn summary_count(&self, counter: &str) -> Option<u64> {
        let (_, line) = self
            .lines
            .iter()
            .rev()
            .find(|(_, l)| l.contains(" summary: "))?;
        let rest = line.split_once(&format!(" {counter} "))?.1;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }

    /// Lines printed so far that `pick` accepts.
    pub fn count(&self, pick: &impl Fn(&str) -> bool) -> usize {
        self.lines.iter().filter(|(_, l)| pick(l)).count()
    }

    /// Every line printed so far.
    pub fn texts(&self) -> Vec<String> {
        self.lines.iter().map(|(_, l)| l.clone()).collect()
    }

    /// Everything printed so far, for failure messages.
    pub fn printed(&self) -> String {
        self.lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The sender and id (`!from 0xid`) a `queued` or `relayed` line is about.
pub fn message_key(line: &str) -> Option<String> {
    let rest = line
        .split_once(" queued ")
        .or_else(|| line.split_once(" relayed "))?
        .1;
    let mut words = rest.split_whitespace();
    Some(format!("{} {}", words.next()?, words.next()?))
}

/// A `relayed` line: destination, class and airtime.
pub struct Relayed {
    pub destination: String,
    pub class: String,
    pub airtime: Duration,
}

/// Parses `HH:MM:SS relayed !from 0xid -> DEST#CHANNEL (class, waited N ms, N ms airtime)...`.
pub fn parse_relayed(line: &str) -> Option<Relayed> {
    let rest = line.split_once(" relayed ")?.1;
    let destination = rest.split_once(" -> ")?.1.split_once('#')?.0.to_owned();
    let inside = rest.split_once(" (")?.1;
    let class = inside.split_once(',')?.0.to_owned();
    let airtime_ms: u64 = inside
        .split_once(" ms airtime")?
        .0
        .rsplit(' ')
        .next()?
        .parse()
        .ok()?;
    Some(Relayed {
        destination,
        class,
        airtime: Duration::from_millis(airtime_ms),
    })
}

// ---------------------------------------------------------------------------------------------
// Messages

/// A text from a test radio: who sent it, its id, its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub from: NodeId,
    pub id: PacketId,
    pub text: String,
}

impl Msg {
    /// Whether `p` is this message (same sender and id).
    pub fn is(&self, p: &Packet) -> bool {
        p.from() == self.from && p.id() == self.id
    }

    /// Whether a gateway line is this message's `queued` line.
    pub fn queued(&self, line: &str) -> bool {
        line.contains(&format!("queued {} {} ", self.from, self.id))
    }

    /// Whether a gateway line is this message's `relayed` line (to `dest`).
    pub fn relayed_to(&self, dest: &str, line: &str) -> bool {
        line.contains(&format!("relayed {} {} -> {dest}#", self.from, self.id))
    }
}

/// Sends a broadcast text with id `id` on channel index `channel` through `client`, and
/// checks the radio took it.
pub fn say(client: &MeshClient, channel: u32, id: u32, text: &str) -> Msg {
    say_to(client, NodeId::BROADCAST, channel, id, text)
}

/// Sends a text to `to` (a node or broadcast) without asking for an ACK.
pub fn say_to(client: &MeshClient, to: NodeId, channel: u32, id: u32, text: &str) -> Msg {
    let packet = Packet::from_data(
        proto::MeshPacket {
            to: to.get(),
            channel,
            id,
            hop_limit: 3,
            ..Default::default()
        },
        proto::Data {
            portnum: proto::PortNum::TextMessageApp as i32,
            payload: text.as_bytes().to_vec(),
            ..Default::default()
        },
    );
    let status = client.send(packet);
    assert_eq!(
        status,
        mesh_core::DeliveryStatus::Delivered,
        "the radio did not take {text:?}"
    );
    Msg {
        from: client.node(),
        id: PacketId::new(id),
        text: text.to_owned(),
    }
}

/// Every packet `client` hears up to and including `marker`.
pub fn heard_until(client: &MeshClient, marker: &Msg) -> Vec<Packet> {
    client.packets_until(LIMIT, |p| marker.is(p))
}

/// How many times `m` is among `heard`.
pub fn times(heard: &[Packet], m: &Msg) -> usize {
    heard.iter().filter(|p| m.is(p)).count()
}

/// Asserts that of `heard`, the messages in `once` came exactly once each, and those in
/// `at_most_once` never twice.
///
/// Not their order: the simulated radio that rebroadcasts what the gateway injects gives every
/// queued packet its own random contention delay, so two relays injected a few milliseconds
/// apart may go on the air in either order (a simulator simplification; a firmware radio sends
/// packets of equal priority in the order it queued them). The gateway's own order is checked
/// on its `relayed` lines instead, with `assert_relayed_in_order`.
pub fn assert_once(heard: &[Packet], once: &[Msg], at_most_once: &[Msg]) {
    let seen: Vec<String> = heard
        .iter()
        .filter(|p| once.iter().chain(at_most_once).any(|m| m.is(p)))
        .map(|p| p.text().unwrap_or_default())
        .collect();
    for m in once {
        assert_eq!(
            times(heard, m),
            1,
            "{:?} should arrive once; arrived: {seen:?}",
            m.text
        );
    }
    for m in at_most_once {
        assert!(times(heard, m) <= 1, "{:?} arrived twice: {seen:?}", m.text);
    }
}

/// Asserts that the gateway's `relayed` lines (to `dest`) name every message of `msgs`, in
/// that order, counting each message's first such line.
pub fn assert_relayed_in_order(lines: &[String], dest: &str, msgs: &[Msg]) {
    let mut order: Vec<usize> = Vec::new();
    for line in lines {
        if let Some(i) = msgs.iter().position(|m| m.relayed_to(dest, line))
            && !order.contains(&i)
        {
            order.push(i);
        }
    }
    assert!(
        order.is_sorted() && order.len() == msgs.len(),
        "relayed out of order, or not all of them:\n{}",
        lines.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The usual world: north sim (A, A2), south sim (B, B2), gateway between A and B.

/// Fixed ports, so a simulator restarted on them is the same radio to its clients.
pub struct Ports {
    pub a: u16,
    pub a2: u16,
    pub b: u16,
    pub b2: u16,
}

impl Ports {
    #[allow(clippy::new_without_default)] // fresh ports each call: not a default value
    pub fn new() -> Ports {
        Ports {
            a: free_port(),
            a2: free_port(),
            b: free_port(),
            b2: free_port(),
        }
    }
}

/// The north world: ShortTurbo, radios A and A2 attached.
pub fn north_world(p: &Ports) -> String {
    mesh(
        "north",
        "ShortTurbo",
        &north_channels(),
        50.0,
        &[
            node(A, "North gateway radio", Some(p.a), None),
            node(A2, "North person", Some(p.a2), None),
        ],
    )
}

/// The south world: ShortFast, radios B and B2 attached.
pub fn south_world(p: &Ports) -> String {
    mesh(
        "south",
        "ShortFast",
        &south_channels(),
        50.0,
        &[
            node(B, "South gateway radio", Some(p.b), None),
            node(B2, "South person", Some(p.b2), None),
        ],
    )
}

/// The gateway's two radios, A and B.
pub fn bridge_radios(p: &Ports) -> Vec<String> {
    vec![
        radio("north", p.a, "ShortTurbo", &north_channels(), ""),
        radio("south", p.b, "ShortFast", &south_channels(), ""),
    ]
}

/// Two simulators, the test's radios on them, and a directory for configs, store and logs.
pub struct Bridge {
    pub a2: MeshClient,
    pub b2: MeshClient,
    pub north: Sim,
    pub south: Option<Sim>,
    pub ports: Ports,
    pub config: PathBuf,
    pub dir: Scratch,
}

impl Bridge {
    /// Starts both simulators and connects A2 and B2; the gateway config (with `routes`) is
    /// written but the gateway not started.
    pub fn start(tag: &str, routes: &[String]) -> Bridge {
        let dir = Scratch::new(tag);
        let ports = Ports::new();
        let north = Sim::start(&dir, "north", &north_world(&ports), 2);
        let south = Sim::start(&dir, "south", &south_world(&ports), 2);
        let a2 = MeshClient::connect("A2", &north.tcp(A2), LIMIT);
        let b2 = MeshClient::connect("B2", &south.tcp(B2), LIMIT);
        let config = dir.path("gateway.toml");
        let text = gateway_toml(
            &dir.path("store.sqlite"),
            "",
            &bridge_radios(&ports),
            routes,
        );
        std::fs::write(&config, text).expect("gateway config written");
        Bridge {
            ports,
            north,
            south: Some(south),
            a2,
            b2,
            config,
            dir,
        }
    }

    /// Starts the gateway (armed with a crash point when given) and waits for both radios.
    pub fn gateway(&self, crash: Option<&str>) -> Gateway {
        let gw = Gateway::start(&self.dir, &self.config, crash);
        gw.wait_ready(&["north", "south"]);
        gw
    }

    /// Stops the south simulator (SIGTERM).
    pub fn stop_south(&mut self) {
        self.south.take().expect("south is running").stop();
    }

    /// Starts the south simulator again, on the same ports.
    pub fn start_south(&mut self) {
        assert!(self.south.is_none(), "south is already running");
        self.south = Some(Sim::start(&self.dir, "south", &south_world(&self.ports), 2));
    }
}

/// Two meshes where two sensors on the north one flood telemetry (at 100 simulated seconds a
/// second, over three packets a second) and the gateway's radio south may use only
/// `duty_percent` of any `window` (`[airtime] window_secs`), with telemetry living 15 s: the
/// airtime governor's proving ground. The gateway config is written, not started.
pub struct Flood {
    /// Configs, store and logs.
    pub dir: Scratch,
    /// The north simulator (A, A2 and the sensors).
    pub north: Sim,
    /// The south simulator (B and B2).
    pub south: Sim,
    /// The gateway config.
    pub config: PathBuf,
}

impl Flood {
    /// Starts both simulators and writes the gateway config.
    pub fn start(tag: &str, window: Duration, duty_percent: f64) -> Flood {
        let dir = Scratch::new(tag);
        let ports = Ports::new();
        let sensor = Some("{ telemetry_every_secs = 60.0 }");
        let north = Sim::start(
            &dir,
            "north",
            &mesh(
                "north",
                "ShortTurbo",
                &north_channels(),
                100.0,
                &[
                    node(A, "North gateway radio", Some(ports.a), None),
                    node(A2, "North person", Some(ports.a2), None),
                    node(0x0000_f001, "Weather station", None, sensor),
                    node(0x0000_f002, "River gauge", None, sensor),
                ],
            ),
            2,
        );
        let south = Sim::start(&dir, "south", &south_world(&ports), 2);
        let radios = vec![
            radio("north", ports.a, "ShortTurbo", &north_channels(), ""),
            radio(
                "south",
                ports.b,
                "ShortFast",
                &south_channels(),
                &format!("duty_cycle_percent = {duty_percent:?}\n"),
            ),
        ];
        let extra = format!(
            "[store.ttl]\ntelemetry_minutes = 0.25\n[airtime]\nwindow_secs = {}\n",
            window.as_secs()
        );
        let config = dir.path("gateway.toml");
        let toml = gateway_toml(&dir.path("store.sqlite"), &extra, &radios, &bridge_routes());
        std::fs::write(&config, toml).expect("gateway config written");
        Flood {
            dir,
            north,
            south,
            config,
        }
    }
}

/// The most airtime within any `window` ending at one of `relays` (when each was seen, and
/// what it cost).
pub fn fullest_window(relays: &[(Instant, Duration)], window: Duration) -> Duration {
    relays
        .iter()
        .map(|(end, _)| {
            relays
                .iter()
                .filter(|(at, _)| at <= end && end.duration_since(*at) < window)
                .map(|(_, a)| *a)
                .sum()
        })
        .max()
        .unwrap_or_default()
}

/// The key `archipel identity` prints for the hub whose config is `config` (making its key
/// pair on first use): what a neighbour's `[[peer]]` names.
pub fn identity(config: &Path) -> archipel_adapters::peer::PeerKey {
    let (ok, out, err) = crate::run_archipel(
        &["identity", "--config", &config.display().to_string()],
        LIMIT,
    );
    assert!(ok, "archipel identity failed: {err}");
    out.lines()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no key printed: {out}"))
}
