//! Disk writes per relayed message at mesh rates, on the real path: `archipel sim` with two
//! meshes and light traffic (a text every few seconds on each, some positions, telemetry and
//! node info), `archipel run` (release) bridging them, for a few minutes. Two setups side by
//! side, each with its own simulator and gateway, at the same time: two radios, and two radios
//! plus a real Mosquitto as a second destination of everything. Figures from the gateway's
//! `/proc/PID/io` (`write_bytes`: what reached the block layer; `wchar`: what went to write
//! calls, its standard output and log included) between two moments after every endpoint is
//! up, per `relayed` line (one per delivery) and per `queued` line (one per stored message),
//! and its fsync/fdatasync calls counted by `strace -f -c` over the same window.
//!
//! ```text
//! cargo build --release -p archipel-gateway
//! cargo bench -p archipel-e2e --bench mesh_io
//! ARCHIPEL_BENCH_SECS=60 cargo bench -p archipel-e2e --bench mesh_io      # shorter
//! ```
//!
//! Settings: `ARCHIPEL_BENCH_SECS` (180, the measured window), `ARCHIPEL_BENCH_TEXT_SECS` (12:
//! each of three people per mesh sends a text this often), `ARCHIPEL_BENCH_STRACE` (1; 0 does
//! without strace), `ARCHIPEL_BIN`. `$TMPDIR` must be on a real disk (not a tmpfs).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use archipel_e2e::mosquitto::{BrokerOptions, Mosquitto};
use archipel_e2e::{free_port, parse_radio_line};
use common::{BenchDir, Io, Process, Tally, archipel_bin, setting};

/// Node ids: the attached radios, then three people and a relay per mesh.
const NORTH_RADIO: &str = "!0000a001";
const SOUTH_RADIO: &str = "!0000b001";

fn main() {
    let window = Duration::from_secs(setting("ARCHIPEL_BENCH_SECS", 180));
    let text_every: f64 = setting("ARCHIPEL_BENCH_TEXT_SECS", 12.0);
    let strace = setting("ARCHIPEL_BENCH_STRACE", 1u8) == 1;
    let broker = Mosquitto::start(BrokerOptions::default());
    let port = broker.port();
    let setups = [("two radios", None), ("two radios + MQTT", Some(port))];
    let runs: Vec<_> = setups
        .into_iter()
        .map(|(name, mqtt)| std::thread::spawn(move || run(name, mqtt, window, text_every, strace)))
        .collect();
    let reports: Vec<String> = runs
        .into_iter()
        .map(|r| r.join().expect("setup ran"))
        .collect();
    for report in reports {
        println!("{report}");
    }
    drop(broker);
}

/// One mesh of the world: its radio attached on `port`, three people with traffic, a relay.
fn mesh(name: &str, channel: &str, radio: &str, port: u16, base: u32, text_every: f64) -> String {
    let mut s = format!(
        "[[mesh]]\nname = \"{name}\"\npreset = \"ShortFast\"\nregion = \"US\"\n\
         channels = [ {{ name = \"{channel}\", psk = \"AQ==\" }} ]\n\
         [[mesh.node]]\nid = \"{radio}\"\nlong_name = \"{name} gateway radio\"\n\
         short_name = \"GW\"\nattached = {{ tcp_port = {port} }}\n"
    );
    s += &format!(
        "[[mesh.node]]\nid = \"!{:08x}\"\nlong_name = \"{name} relay\"\nshort_name = \"RLY\"\n\
         role = \"router\"\ntraffic = {{ telemetry_every_secs = 300.0 }}\n",
        base
    );
    for person in 1..=3u32 {
        s += &format!(
            "[[mesh.node]]\nid = \"!{:08x}\"\nlong_name = \"{name} person {person}\"\n\
             short_name = \"P{person}\"\ntraffic = {{ text_every_secs = {text_every:?}, \
             position_every_secs = 90.0, telemetry_every_secs = 120.0, \
             nodeinfo_every_secs = 600.0 }}\n",
            base + person
        );
    }
    s
}

fn gateway_config(store: &Path, north: u16, south: u16, mqtt: Option<u16>) -> String {
    let mut s = format!(
        r#"[gateway]
name = "mesh-io-bench"
id = "{id}"

[store]
path = "{store}"

[[radio]]
name = "north"
tcp = "127.0.0.1:{north}"
region = "US"
preset = "ShortFast"
channels = [ {{ name = "LongFast", psk = "default" }} ]

[[radio]]
name = "south"
tcp = "127.0.0.1:{south}"
region = "US"
preset = "ShortFast"
channels = [ {{ name = "MediumFast", psk = "default" }} ]

[[route]]
channel = "LongFast"
from = ["north"]
to = ["south"]
to_channel = "MediumFast"
"#,
        id = common::GATEWAY_ID,
        store = store.display(),
    );
    if let Some(port) = mqtt {
        s += &format!(
            r#"
[[mqtt]]
name = "broker"
address = "127.0.0.1:{port}"
client_id = "archipel-mesh-io-bench"

[[route]]
channel = "LongFast"
from = ["north"]
to = ["broker"]
one_way = true

[[route]]
channel = "MediumFast"
from = ["south"]
to = ["broker"]
one_way = true
"#
        );
    }
    s
}

/// Every thread of `pid`, for strace to attach to all of them.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// (fsync calls, fdatasync calls) from an `strace -c` summary.
fn sync_calls(summary: &str) -> (u64, u64) {
    let calls = |name: &str| {
        summary
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .and_then(|l| {
                // % time, seconds, usecs/call, calls, [errors], syscall
                l.split_whitespace().nth(3).and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    };
    (calls("fsync"), calls("fdatasync"))
}

fn run(name: &str, mqtt: Option<u16>, window: Duration, text_every: f64, strace: bool) -> String {
    let tag = name.replace([' ', '+'], "");
    let dir = BenchDir::new(&format!("bench-mesh-{tag}"));
    let (north_port, south_port) = (free_port(), free_port());
    let world = format!(
        "time_scale = 1.0\nseed = 5\n{}{}",
        mesh(
            "north",
            "LongFast",
            NORTH_RADIO,
            north_port,
            0x0000_a100,
            text_every
        ),
        mesh(
            "south",
            "MediumFast",
            SOUTH_RADIO,
            south_port,
            0x0000_b100,
            text_every
        ),
    );
    let sim_config = dir.join("sim.toml");
    std::fs::write(&sim_config, world).expect("sim config written");
    let mut cmd = Command::new(archipel_bin());
    cmd.arg("sim").arg("--config").arg(&sim_config);
    let sim = Process::spawn(cmd, "archipel sim", &dir.join("sim.log"));
    for _ in 0..2 {
        sim.wait_line(Duration::from_secs(30), |l| parse_radio_line(l).is_some());
    }

    let store = dir.join("store.sqlite");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        gateway_config(&store, north_port, south_port, mqtt),
    )
    .expect("gateway config written");
    let gateway = Process::gateway(&config, &dir.join("gateway.log"));
    let pid = gateway.pid();
    let mut up = vec!["radio north up", "radio south up"];
    if mqtt.is_some() {
        up.push("mqtt broker up");
    }
    let mut before = Tally::default();
    for what in up {
        let (at, line) = gateway.wait_line(Duration::from_secs(60), |l| {
            l.contains(what) || l.contains(" queued ") || l.contains(" relayed ")
        });
        before.add(at, &line);
    }
    // A moment for the handshakes' own writes (node databases, airtime history) to settle.
    let settle = Instant::now() + Duration::from_secs(5);
    while let Some(left) = settle.checked_duration_since(Instant::now()) {
        if let Some((at, line)) = gateway.next_line(left) {
            before.add(at, &line);
        }
    }

    let strace_out = dir.join("strace.txt");
    let tracer = strace.then(|| {
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-c", "-e", "trace=fsync,fdatasync", "-o"])
            .arg(&strace_out);
        for tid in threads(pid) {
            cmd.arg("-p").arg(tid);
        }
        Process::spawn(cmd, "strace", &dir.join("strace.log"))
    });
    // strace says nothing on standard output once attached; give it a moment to be.
    std::thread::sleep(Duration::from_millis(500));
    let io0 = Io::of(pid);
    let db0 = common::store_bytes(&store);
    let t0 = Instant::now();
    let mut tally = Tally::default();
    while let Some(left) = (t0 + window).checked_duration_since(Instant::now()) {
        if let Some((at, line)) = gateway.next_line(left) {
            tally.add(at, &line);
        }
    }
    let io1 = Io::of(pid);
    let elapsed = t0.elapsed();
    let cpu = common::cpu_time(pid);
    let syncs = tracer.map(|t| {
        // SIGINT: strace detaches and writes its summary.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(t.pid() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = t.terminate(Duration::from_secs(10));
        sync_calls(&std::fs::read_to_string(&strace_out).unwrap_or_default())
    });
    let db1 = common::store_bytes(&store);
    let (status, rest) = gateway.terminate(Duration::from_secs(30));
    // Only the final summary: the window's counts are complete.
    for (at, line) in rest.iter().filter(|(_, l)| l.contains(" summary: ")) {
        tally.add(*at, line);
    }
    let _ = sim.terminate(Duration::from_secs(10));

    let relayed = tally.relayed.max(1) as f64;
    let queued = tally.queued.max(1) as f64;
    let written = io1.write_bytes.saturating_sub(io0.write_bytes) as f64;
    let wchar = io1.wchar.saturating_sub(io0.wchar) as f64;
    let calls = io1.syscw.saturating_sub(io0.syscw) as f64;
    let mut report = format!(
        "mesh io, {name}: {} relayed ({} queued messages) in {:.0} s ({:.2} relayed/s); per \
         relayed: {:.0} bytes reached the disk (write_bytes), {:.0} bytes written \
         (wchar), {:.1} write calls; per queued message: {:.0} bytes (write_bytes); store \
         files {db0} -> {db1} bytes; gateway CPU {:.2} s in all; exit {status:?}",
        tally.relayed,
        tally.queued,
        elapsed.as_secs_f64(),
        tally.relayed as f64 / elapsed.as_secs_f64(),
        written / relayed,
        wchar / relayed,
        calls / relayed,
        written / queued,
        cpu.as_secs_f64(),
    );
    if let Some((fsync, fdatasync)) = syncs {
        report += &format!(
            "\nmesh io, {name}: {fsync} fsync + {fdatasync} fdatasync calls (strace -f -c): \
             {:.2} per relayed, {:.2} per queued message",
            (fsync + fdatasync) as f64 / relayed,
            (fsync + fdatasync) as f64 / queued
        );
    }
    if let Some(summary) = &tally.summary {
        report += &format!("\nmesh io, {name}: gateway's last summary: {summary}");
    }
    if tally.not_shown > 0 {
        report += &format!(
            "\nmesh io, {name}: {} events not shown (lines undercounted)",
            tally.not_shown
        );
    }
    report
}
