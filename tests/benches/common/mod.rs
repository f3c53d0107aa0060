//! What the end-to-end benchmarks share: the release `archipel` binary as a child process whose
//! output lines are stamped on arrival, a real Mosquitto from the e2e harness, MQTT clients of
//! the bench's own (rumqttc, independent of the gateway's link code), the store read back
//! through the gateway library, and `/proc/PID/io`.
//!
//! Every benchmark prints its figures as plain lines and asserts only what makes a figure
//! meaningless when false (every message arrived, the store is empty). Everything it starts
//! listens on loopback, on free ports, in a temporary directory under `$TMPDIR` (`/tmp` by
//! default; it must be a real disk for the I/O figures, not a tmpfs), and is stopped and
//! removed at the end, also when the bench fails.

#![allow(dead_code)] // each bench uses a part of this module

pub mod backlog;
pub mod hubs;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use archipel_gateway::store::{Store, StoreConfig};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::watch;

/// The gateway id every bench config uses; the gateway's MQTT client id derives from it.
pub const GATEWAY_ID: &str = "!a7c40001";
/// The MQTT client id the gateway takes by default (`archipel-` and its id without `!`).
pub const GATEWAY_CLIENT_ID: &str = "archipel-a7c40001";
/// The topic root of every bench config (the firmware's default for EU_868).
pub const ROOT: &str = "msh/EU_868";
/// Text payload length, as in Mosquitto's bridge baseline (`deploy/bench/mosquitto-bridge.sh`).
pub const PAYLOAD: usize = 60;

/// A setting from the environment, or its default.
pub fn setting<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The release binary: `$ARCHIPEL_BIN`, or the workspace's `target/release/archipel`. A bench
/// of a debug build would measure the wrong thing, so there is no fallback to one.
pub fn archipel_bin() -> PathBuf {
    let bin = std::env::var_os("ARCHIPEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| archipel_e2e::workspace().join("target/release/archipel"));
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --release -p archipel-gateway` or set \
         ARCHIPEL_BIN",
        bin.display()
    );
    bin
}

/// A loopback port nothing listens on (a radio that is down: connections are refused).
pub fn closed_port() -> u16 {
    archipel_e2e::free_port()
}

/// Seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Messages per second over `d`.
pub fn rate(n: u64, d: Duration) -> String {
    format!("{:.0} msg/s", n as f64 / d.as_secs_f64().max(1e-9))
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process (the gateway, the simulator): standard output read line by line, each line
/// stamped when it was read, standard error copied to a log file. Killed when dropped, so a
/// failing bench leaves nothing behind.
pub struct Process {
    /// The child, until it was reaped.
    child: Option<Child>,
    /// Its pid, for `/proc/PID/io` and strace.
    pid: u32,
    /// Standard output lines with their arrival times.
    lines: mpsc::Receiver<(Instant, String)>,
    /// Where standard error goes, for failure messages.
    log: PathBuf,
    /// What it is, for failure messages.
    what: String,
}

impl Process {
    /// Starts `cmd`, its standard error appended to `log`.
    pub fn spawn(mut cmd: Command, what: &str, log: &Path) -> Process {
        let err = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Process {
            pid: child.id(),
            child: Some(child),
            lines,
            log: log.to_path_buf(),
            what: what.to_owned(),
        }
    }

    /// `archipel run --config CONFIG`, standard error to `log`.
    pub fn gateway(config: &Path, log: &Path) -> Process {
        let mut cmd = Command::new(archipel_bin());
        cmd.arg("run").arg("--config").arg(config);
        // Several gateways may run at once: each serves its page on a port of its own.
        cmd.env("ARCHIPEL_HTTP__LISTEN", "127.0.0.1:0");
        Process::spawn(cmd, "archipel run", log)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next output line, if one comes within `limit`; `None` also once output closed.
    pub fn next_line(&self, limit: Duration) -> Option<(Instant, String)> {
        self.lines.recv_timeout(limit).ok()
    }

    /// Waits at most `limit` for a line that `pick` accepts (skipping others) and returns it
    /// with its arrival time; panics with the log's tail if none comes.
    pub fn wait_line(&self, limit: Duration, pick: impl Fn(&str) -> bool) -> (Instant, String) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if pick(&line) => return (at, line),
                Ok(_) => {}
                Err(e) => panic!(
                    "{}: expected line not printed within {limit:?} ({e:?}); log tail:\n{}",
                    self.what,
                    self.log_tail(20)
                ),
            }
        }
    }

    /// The last `n` lines of its standard error.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, then every line it still prints until its output closes (at most `grace`,
    /// SIGKILL after that), and how it ended.
    pub fn terminate(mut self, grace: Duration) -> (Option<ExitStatus>, Vec<(Instant, String)>) {
        signal(self.pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    signal(self.pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = self.child.take().map(|mut c| c.wait());
                    return (None, rest);
                }
            }
        }
        let status = self.child.take().and_then(|mut c| c.wait().ok());
        (status, rest)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// What the gateway printed, read as counts: `queued` and `relayed` lines, the events it said
/// it did not show (its activity feed lagged behind), and the last `summary:` line.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// `queued …` lines.
    pub queued: u64,
    /// `relayed …` lines.
    pub relayed: u64,
    /// Sum of `(N events not shown)`.
    pub not_shown: u64,
    /// When the first and the last `queued` line arrived.
    pub queued_span: Option<(Instant, Instant)>,
    /// When the first and the last `relayed` line arrived.
    pub relayed_span: Option<(Instant, Instant)>,
    /// The last summary line.
    pub summary: Option<String>,
}

impl Tally {
    /// Counts one line.
    pub fn add(&mut self, at: Instant, line: &str) {
        let body = line.split_once(' ').map(|(_, b)| b).unwrap_or(line);
        let stretch = |span: &mut Option<(Instant, Instant)>| {
            *span = Some(span.map_or((at, at), |(first, _)| (first, at)));
        };
        if body.starts_with("queued ") {
            self.queued += 1;
            stretch(&mut self.queued_span);
        } else if body.starts_with("relayed ") {
            self.relayed += 1;
            stretch(&mut self.relayed_span);
        } else if let Some(n) = body
            .strip_prefix('(')
            .and_then(|b| b.strip_suffix(" events not shown)"))
        {
            self.not_shown += n.parse::<u64>().unwrap_or(0);
        } else if body.starts_with("summary:") {
            self.summary = Some(line.to_owned());
        }
    }
}

/// `commit p50/p99 X/Y ms` of a summary line, in milliseconds.
pub fn commit_percentiles(summary: &str) -> Option<(f64, f64)> {
    let rest = summary.split("commit p50/p99 ").nth(1)?;
    let (pair, _) = rest.split_once(" ms")?;
    let (p50, p99) = pair.split_once('/')?;
    Some((p50.parse().ok()?, p99.parse().ok()?))
}

// ---------------------------------------------------------------------------------------------
// The store, read back through the gateway library (with the gateway stopped)

/// Deliveries queued per destination in the store at `path`.
pub async fn queued_in_store(path: &Path) -> HashMap<String, u64> {
    let store = Store::open(StoreConfig::new(path, u64::MAX))
        .await
        .unwrap_or_else(|e| panic!("store {}: {e}", path.display()));
    let queues = store.queues().await.expect("queues");
    store.close().await;
    queues
        .into_iter()
        .map(|q| (q.destination, q.count))
        .collect()
}

/// Size of the store's database file plus its WAL.
pub fn store_bytes(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            std::fs::metadata(PathBuf::from(name))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// MQTT clients of the bench's own

/// Options for a bench client of `port` with a clean session.
fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_inflight(100)
        .set_max_packet_size(64 * 1024, 64 * 1024);
    o
}

/// Polls `eventloop` until it fails, handing each event to `on` (a bench client has nothing
/// to recover: an error ends it, and the bench notices the missing messages).
async fn drive(mut eventloop: EventLoop, mut on: impl FnMut(Event) + Send + 'static) {
    loop {
        match eventloop.poll().await {
            Ok(event) => on(event),
            Err(rumqttc::ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted)) => {
                return;
            }
            Err(e) => {
                eprintln!("bench MQTT client stopped: {e}");
                return;
            }
        }
    }
}

/// A QoS 1 subscriber: every message it got, with when it got it.
pub struct Subscriber {
    /// Kept so the connection stays up.
    _client: AsyncClient,
    /// Messages received so far, with their arrival times; the count is the watch's value.
    received: std::sync::Arc<std::sync::Mutex<Vec<(Instant, Bytes)>>>,
    /// How many have arrived.
    count: watch::Receiver<u64>,
}

impl Subscriber {
    /// Connects, subscribes to `filter` with QoS 1 and waits for the SUBACK.
    pub async fn start(port: u16, filter: &str) -> Subscriber {
        let (client, eventloop) = AsyncClient::new(options("archipel-bench-sub", port), 1000);
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(200_000)));
        let (count_tx, count) = watch::channel(0u64);
        let (subscribed_tx, mut subscribed) = watch::channel(false);
        let sink = received.clone();
        tokio::spawn(drive(eventloop, move |event| match event {
            Event::Incoming(Packet::Publish(p)) => {
                let at = Instant::now();
                let mut all = sink.lock().expect("not poisoned");
                all.push((at, p.payload));
                count_tx.send_replace(all.len() as u64);
            }
            Event::Incoming(Packet::SubAck(_)) => {
                subscribed_tx.send_replace(true);
            }
            _ => {}
        }));
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe request");
        tokio::time::timeout(Duration::from_secs(10), subscribed.wait_for(|s| *s))
            .await
            .expect("SUBACK within 10 s")
            .expect("client running");
        Subscriber {
            _client: client,
            received,
            count,
        }
    }

    /// Waits until `n` messages arrived or `limit` passed; returns how many arrived.
    pub async fn wait_for(&mut self, n: u64, limit: Duration) -> u64 {
        let _ = tokio::time::timeout(limit, self.count.wait_for(|c| *c >= n)).await;
        *self.count.borrow()
    }

    /// Everything received so far.
    pub fn take(&self) -> Vec<(Instant, Bytes)> {
        std::mem::take(&mut *self.received.lock().expect("not poisoned"))
    }
}

/// A QoS 1 publisher that counts the broker's PUBACKs.
pub struct Publisher {
    /// Where publishes are queued.
    client: AsyncClient,
    /// PUBACKs received so far.
    acked: watch::Receiver<u64>,
}

impl Publisher {
    /// Connects to the broker on `port` as `id`.
    pub async fn start(port: u16, id: &str) -> Publisher {
        let (client, eventloop) = AsyncClient::new(options(id, port), 1000);
        let (acked_tx, acked) = watch::channel(0u64);
        let (connected_tx, mut connected) = watch::channel(false);
        tokio::spawn(drive(eventloop, move |event| match event {
            Event::Incoming(Packet::PubAck(_)) => {
                acked_tx.send_modify(|n| *n += 1);
            }
            Event::Incoming(Packet::ConnAck(_)) => {
                connected_tx.send_replace(true);
            }
            _ => {}
        }));
        tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|c| *c))
            .await
            .expect("CONNACK within 10 s")
            .expect("client running");
        Publisher { client, acked }
    }

    /// Queues one QoS 1 publish (waits only when the client's request queue is full).
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish request");
    }

    /// Says goodbye to the broker (a client left unpolled would be cut off by its keep-alive
    /// and say so).
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }

    /// Waits until `n` PUBACKs came back or `limit` passed; returns how many came.
    pub async fn wait_acked(&mut self, n: u64, limit: Duration) -> u64 {
        let _ = tokio::time::timeout(limit, self.acked.wait_for(|c| *c >= n)).await;
        *self.acked.borrow()
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

/// One process's I/O counters (`/proc/PID/io`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Io {
    /// Bytes passed to write calls.
    pub wchar: u64,
    /// Write calls.
    pub syscw: u64,
    /// Bytes the process caused to be sent to the block layer, less those cancelled (dirty
    /// pages truncated before writeback).
    pub write_bytes: u64,
}

impl Io {
    /// The counters of `pid` now.
    pub fn of(pid: u32) -> Io {
        let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Io {
            wchar: field("wchar:"),
            syscw: field("syscw:"),
            write_bytes: field("write_bytes:").saturating_sub(field("cancelled_write_bytes:")),
        }
    }
}

/// CPU time (user + system) of `pid` so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let total = ticks(11) + ticks(12);
    // Linux reports these in USER_HZ, which is 100 on every architecture it runs on.
    Duration::from_millis(total * 10)
}

// ---------------------------------------------------------------------------------------------
// Downlink: envelopes on the broker for a radio that is down

/// The gateway id of the (imaginary) other gateway that publishes the downlink envelopes.
pub const OTHER_GATEWAY: &str = "!b0b0b0b0";

/// A gateway taking `LongFast` from the broker on `broker` to radio `south`, which is
/// configured on a closed port and so stays down: every downlink message is committed to the
/// store and waits there. `extra` goes into the `[[mqtt]]` section.
pub fn downlink_config(store: &Path, broker: u16, cap: u64, extra: &str) -> String {
    format!(
        r#"[gateway]
name = "downlink-bench"
id = "{GATEWAY_ID}"

[store]
path = "{store}"
max_queue_per_destination = {cap}

[[radio]]
name = "south"
tcp = "127.0.0.1:{radio}"
region = "EU_868"
preset = "LongFast"
channels = [ {{ name = "LongFast", psk = "default" }} ]

[[mqtt]]
name = "broker"
address = "127.0.0.1:{broker}"
{extra}

[[route]]
channel = "LongFast"
from = ["broker"]
to = ["south"]
one_way = true
"#,
        store = store.display(),
        radio = closed_port(),
    )
}

/// The topic another gateway publishes LongFast envelopes on.
pub fn downlink_topic() -> String {
    format!("{ROOT}/2/e/LongFast/{OTHER_GATEWAY}")
}

/// The sender of downlink message `i`: each message its own, so the per-sender rate limit
/// never applies (a flood from one node is what it is for).
pub fn downlink_sender(i: u64) -> u32 {
    0x2000_0000 + i as u32
}

/// Downlink message `i`: a 60-byte text from [`downlink_sender`]`(i)`, encrypted with the
/// channel's (default) key, in a ServiceEnvelope from [`OTHER_GATEWAY`].
pub fn downlink_envelope(i: u64) -> Vec<u8> {
    use mesh_core::envelope::{Envelope, GatewayId};
    use mesh_core::{ChannelKey, NodeId, Packet};
    let mut packet = Packet::text_message(NodeId::BROADCAST, 0, &backlog::text(i));
    let meta = packet.meta_mut();
    meta.from = downlink_sender(i);
    meta.id = (i + 1) as u32;
    (meta.hop_limit, meta.hop_start) = (3, 3);
    let key = ChannelKey::from_psk(&[1]);
    Envelope::new(
        packet.encrypt("LongFast", &key),
        "LongFast",
        GatewayId::parse(OTHER_GATEWAY),
    )
    .encode()
}

/// Whether a Mosquitto log line is the gateway's subscription to the LongFast downlink (the
/// config must log `subscribe`).
pub fn is_gateway_subscription(line: &str) -> bool {
    line.contains(GATEWAY_CLIENT_ID) && line.contains("/2/e/LongFast/+")
}

/// The sender of a `queued` line (`HH:MM:SS queued !xxxxxxxx 0x… from …`).
pub fn queued_sender(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace();
    let _clock = words.next()?;
    if words.next()? != "queued" {
        return None;
    }
    u32::from_str_radix(words.next()?.strip_prefix('!')?, 16).ok()
}

/// The bench's directory (config, store, logs): removed at the end unless
/// `ARCHIPEL_BENCH_KEEP=1`, for looking at the logs after a failure.
pub struct BenchDir(pub PathBuf);

impl BenchDir {
    /// A fresh directory under `$TMPDIR`.
    pub fn new(tag: &str) -> BenchDir {
        BenchDir(archipel_e2e::temp_dir(tag))
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        if setting("ARCHIPEL_BENCH_KEEP", 0u8) == 1 {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// How many times a gateway log says its MQTT link went down.
pub fn mqtt_reconnects(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("MQTT link down"))
        .count()
}
