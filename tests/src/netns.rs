//! Two network namespaces joined by a veth pair: a private link between two processes of a
//! test, which a test may shape (`tc tbf`) and make lossy (`nft`), and whose interface counters
//! say how many bytes crossed it, everything included (Ethernet, IP, TCP and its acks, TLS).
//!
//! The namespaces' names carry the test process's pid and a counter, so tests running at once
//! (and a run killed before it cleaned up) never meet; both are deleted when the [`Veth`] is
//! dropped, also when the test panics. Every step runs `ip`, `tc`, `sysctl` or `nft`, and a
//! step that fails fails the test naming its command line: a machine without the tools or the
//! rights does not pass silently. It needs root (CAP_NET_ADMIN).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

/// One end of the link: its namespace, its device there, and its address on the /30.
#[derive(Debug, Clone)]
pub struct End {
    /// The namespace's name (as `ip netns list` shows it).
    pub namespace: String,
    /// The veth device inside it.
    pub device: String,
    /// Its IPv4 address.
    pub address: Ipv4Addr,
}

impl End {
    /// `program` to be run inside this end's namespace (`ip netns exec`, which execs it: the
    /// child's pid is the program's, so signals reach it).
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace]).arg(program);
        cmd
    }

    /// The device's counters and the namespace's TCP retransmissions now, read inside it
    /// (`ip netns exec` mounts that namespace's /sys for the command, and /proc/net is the
    /// namespace's own).
    pub fn counters(&self) -> Counters {
        let stats = format!("/sys/class/net/{}/statistics", self.device);
        let files = ["tx_bytes", "rx_bytes", "tx_packets", "rx_packets"];
        let out = run(Command::new("ip")
            .args(["netns", "exec", &self.namespace, "cat"])
            .args(files.map(|f| format!("{stats}/{f}")))
            .arg("/proc/net/snmp"));
        let mut lines = out.lines();
        let mut next = || -> u64 {
            let line = lines.next().unwrap_or_default();
            line.trim()
                .parse()
                .unwrap_or_else(|e| panic!("a counter of {} in {line:?}: {e}", self.device))
        };
        let (tx, rx, tx_packets, rx_packets) = (next(), next(), next(), next());
        Counters {
            tx,
            rx,
            tx_packets,
            rx_packets,
            retransmits: snmp(&out, "Tcp:", "RetransSegs"),
        }
    }

    /// Drops `percent` of the packets this end sends, at random (nftables' output hook, before
    /// the qdisc: a dropped packet is never counted by the device).
    pub fn drop_sent(&self, percent: u8) {
        let nft = |args: &[&str]| {
            run(Command::new("ip")
                .args(["netns", "exec", &self.namespace, "nft"])
                .args(args));
        };
        nft(&["add", "table", "inet", "loss"]);
        nft(&[
            "add",
            "chain",
            "inet",
            "loss",
            "out",
            "{ type filter hook output priority 0 ; }",
        ]);
        let below = percent.to_string();
        nft(&[
            "add", "rule", "inet", "loss", "out", "numgen", "random", "mod", "100", "<", &below,
            "drop",
        ]);
    }
}

/// Bytes a device counted since it was made, each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes it sent (`tx_bytes`).
    pub tx: u64,
    /// Bytes it received (`rx_bytes`).
    pub rx: u64,
    /// Packets it sent.
    pub tx_packets: u64,
    /// Packets it received.
    pub rx_packets: u64,
    /// TCP segments the namespace sent again (`RetransSegs`): on a thin link, what TCP's
    /// recovery adds to the bytes.
    pub retransmits: u64,
}

impl Counters {
    /// Both directions.
    pub fn total(self) -> u64 {
        self.tx + self.rx
    }

    /// What was counted since `before`.
    pub fn since(self, before: Counters) -> Counters {
        Counters {
            tx: self.tx - before.tx,
            rx: self.rx - before.rx,
            tx_packets: self.tx_packets - before.tx_packets,
            rx_packets: self.rx_packets - before.rx_packets,
            retransmits: self.retransmits - before.retransmits,
        }
    }
}

/// A token bucket for each end's sending side: `rate` bit/s, at most `burst` bytes sent at
/// line speed, a packet waiting at most `latency_ms` in the queue (then dropped).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub rate_bits: u32,
    pub burst_bytes: u32,
    pub latency_ms: u32,
}

impl Shape {
    /// A 9,600 bit/s link, as a packet radio modem or a thin radio backhaul gives. The bucket
    /// holds one full Ethernet frame, so nothing goes faster than the line even for an
    /// instant (a smaller bucket would never pass a full frame at all); a packet may wait two
    /// seconds, about two full frames, so TCP finds the limit by delay and a few drops, as
    /// it would on such a link, rather than by a bottomless buffer.
    pub const THIN_9600: Shape = Shape {
        rate_bits: 9_600,
        burst_bytes: 1_600,
        latency_ms: 2_000,
    };
}

/// The two namespaces and the veth pair between them, deleted on drop.
pub struct Veth {
    /// The end that dials (its address ends in .1).
    pub a: End,
    /// The end that listens (.2).
    pub b: End,
    /// Namespaces made so far, deleted on drop (so a setup failing halfway leaves none).
    made: Vec<String>,
}

impl Veth {
    /// Two fresh namespaces named after `tag`, loopback up in each, IPv6 off (so its router
    /// and neighbour discovery add nothing to the counters), joined by a veth pair on
    /// 10.77.0.0/30, and each end shaped by `shape` when given.
    pub fn new(tag: &str, shape: Option<Shape>) -> Veth {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = |side: &str| format!("archipel-{tag}-{}-{n}-{side}", std::process::id());
        let end = |side: &str, host: u8| End {
            namespace: name(side),
            device: format!("veth-{side}"),
            address: Ipv4Addr::new(10, 77, 0, host),
        };
        let mut veth = Veth {
            a: end("a", 1),
            b: end("b", 2),
            made: Vec::new(),
        };
        for ns in [veth.a.namespace.clone(), veth.b.namespace.clone()] {
            run(Command::new("ip").args(["netns", "add", &ns]));
            veth.made.push(ns.clone());
            run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
            run(Command::new("ip").args(["netns", "exec", &ns]).args([
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]));
        }
        let (a, b) = (&veth.a, &veth.b);
        run(Command::new("ip")
            .args(["-n", &a.namespace, "link", "add", &a.device])
            .args([
                "type",
                "veth",
                "peer",
                "name",
                &b.device,
                "netns",
                &b.namespace,
            ]));
        for e in [a, b] {
            let cidr = format!("{}/30", e.address);
            run(Command::new("ip").args([
                "-n",
                &e.namespace,
                "addr",
                "add",
                &cidr,
                "dev",
                &e.device,
            ]));
            if let Some(s) = shape {
                run(Command::new("tc")
                    .args(["-n", &e.namespace, "qdisc", "add", "dev", &e.device])
                    .args([
                        "root".to_owned(),
                        "tbf".to_owned(),
                        "rate".to_owned(),
                        format!("{}bit", s.rate_bits),
                        "burst".to_owned(),
                        s.burst_bytes.to_string(),
                        "latency".to_owned(),
                        format!("{}ms", s.latency_ms),
                    ]));
            }
            run(Command::new("ip").args(["-n", &e.namespace, "link", "set", &e.device, "up"]));
        }
        veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth pair with it. A process still inside keeps the
        // namespace alive until it ends, nameless; the test's own processes are stopped first.
        for ns in &self.made {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The value of `field` in the `prefix` table of `/proc/net/snmp` text (a line of names, then
/// a line of values).
fn snmp(text: &str, prefix: &str, field: &str) -> u64 {
    let mut rows = text.lines().filter(|l| l.starts_with(prefix));
    let (names, values) = (
        rows.next().unwrap_or_default(),
        rows.next().unwrap_or_default(),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} {field} in /proc/net/snmp"))
}

/// Runs `cmd` to completion; its standard output, or a panic naming the command line and
/// what it printed.
fn run(cmd: &mut Command) -> String {
    let line = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("namespace setup: `{line}` does not start: {e}"));
    assert!(
        out.status.success(),
        "namespace setup: `{line}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
