//! Harness for the end-to-end tests: builds and finds the real `archipel` binary, finds the
//! Python `meshtastic` client that `tests/run` installs, and runs `archipel sim` as a child
//! process on free loopback ports, stopped and reaped when the test ends.

pub mod bridge;
pub mod browser;
pub mod mosquitto;
pub mod netns;
pub mod prometheus;
pub mod prosody;
pub mod relay;
pub mod xmpp_user;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The `archipel` binary: `$ARCHIPEL_BIN`, or the workspace's debug build, built once per
/// test process so `cargo test -p archipel-e2e` works on its own.
pub fn archipel_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("ARCHIPEL_BIN") {
            return PathBuf::from(bin);
        }
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "-p",
                "archipel-gateway",
                "--bin",
                "archipel",
            ])
            .current_dir(workspace())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the archipel binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"));
        target.join("debug").join("archipel")
    })
    .clone()
}

/// The Python `meshtastic` CLI from the venv `tests/run` creates (`$ARCHIPEL_VENV` or
/// `.venv` in the workspace).
pub fn meshtastic_cli() -> PathBuf {
    let venv = std::env::var_os("ARCHIPEL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv"));
    let cli = venv.join("bin").join("meshtastic");
    assert!(
        cli.exists(),
        "{} is missing: run `tests/run`, which installs the Python meshtastic client",
        cli.display()
    );
    cli
}

/// Runs the Python client with a hard time limit and returns what it printed.
pub fn run_meshtastic(args: &[&str], limit: Duration) -> Output {
    let mut cmd = Command::new(meshtastic_cli());
    cmd.args(args);
    run_with_limit(cmd, limit, "meshtastic CLI")
}

/// Runs a command to completion, killing it if it outlives `limit` (then the test fails with
/// what it printed so far).
pub fn run_with_limit(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("child output"),
        Err(_) => {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
            let out = rx
                .recv()
                .expect("killed child reaped")
                .expect("child output");
            panic!(
                "{what} did not finish within {}s\nstdout:\n{}\nstderr:\n{}",
                limit.as_secs(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Runs `archipel ARGS` to completion (killed past `limit`): success, stdout, stderr.
pub fn run_archipel(args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut cmd = Command::new(archipel_bin());
    cmd.args(args);
    // A `run` started here must not take the default port another test's gateway may hold.
    cmd.env("ARCHIPEL_HTTP__LISTEN", "127.0.0.1:0");
    let out = run_with_limit(cmd, limit, "archipel");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kill(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Sends SIGTERM and waits up to `grace` for the child to exit (SIGKILL after that).
/// Returns the exit status if it stopped by itself.
pub fn terminate(child: Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let mut child = child;
    kill(pid, nix::sys::signal::Signal::SIGTERM);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(grace) {
        Ok(status) => status.ok(),
        Err(_) => {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.recv();
            None
        }
    }
}

/// One attached radio as `archipel sim` announced it.
#[derive(Debug, Clone)]
pub struct SimRadio {
    /// Node id text, `!xxxxxxxx`.
    pub node: String,
    /// Mesh name.
    pub mesh: String,
    /// TCP address.
    pub tcp: String,
    /// Pseudo-terminal path, when one was asked for.
    pub serial: Option<String>,
}

/// A long-running child whose standard output is read line by line; stopped with SIGTERM
/// (then SIGKILL) when dropped, so tests leave no process behind.
pub struct Running {
    /// The child; taken when it is stopped.
    child: Option<Child>,
    /// Lines of its standard output, from a reader thread.
    lines: mpsc::Receiver<String>,
    /// What it is, for failure messages.
    what: String,
}

impl Running {
    /// Starts `cmd` with its standard output piped to the line reader.
    pub fn spawn(mut cmd: Command, what: &str) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child: Some(child),
            lines,
            what: what.to_owned(),
        }
    }

    /// Waits for the next line that `pick` accepts, skipping others, for at most `limit`.
    pub fn wait_line<T>(&self, limit: Duration, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(t) = pick(&line) {
                        return t;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: expected line not printed within {}s",
                        self.what,
                        limit.as_secs()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("{}: exited before printing the expected line", self.what)
                }
            }
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits up to `limit` for the child to exit by itself (SIGKILL after that) and says
    /// whether it exited cleanly.
    pub fn wait_exit(mut self, limit: Duration) -> bool {
        let mut child = self.child.take().expect("running");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(limit) {
            Ok(status) => status.is_ok_and(|s| s.success()),
            Err(_) => {
                kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = rx.recv();
                false
            }
        }
    }

    /// Stops the child now (SIGTERM) and says whether it exited cleanly in time.
    pub fn stop(mut self) -> bool {
        self.child
            .take()
            .and_then(|c| terminate(c, Duration::from_secs(10)))
            .is_some_and(|s| s.success())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(10));
        }
    }
}

/// `archipel sim` running as a child process, with the radios it announced.
pub struct SimProcess {
    /// The process.
    process: Running,
    /// The radios it announced.
    pub radios: Vec<SimRadio>,
    /// Where its config was written; removed on drop.
    dir: TempDir,
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl SimProcess {
    /// Writes `config` (TOML) to a fresh directory, starts `archipel sim --config` on it, and
    /// waits until it has announced `expected_radios` attached radios.
    pub fn start(config: &str, expected_radios: usize) -> SimProcess {
        let dir = temp_dir("sim");
        let path = dir.join("sim.toml");
        std::fs::write(&path, config).expect("config written");
        let mut cmd = Command::new(archipel_bin());
        cmd.arg("sim").arg("--config").arg(&path);
        let process = Running::spawn(cmd, "archipel sim");
        let radios = (0..expected_radios)
            .map(|_| process.wait_line(Duration::from_secs(60), parse_radio_line))
            .collect();
        SimProcess {
            process,
            radios,
            dir: TempDir(dir),
        }
    }

    /// The radio with this node id.
    pub fn radio(&self, node: &str) -> &SimRadio {
        self.radios
            .iter()
            .find(|r| r.node == node)
            .unwrap_or_else(|| panic!("no attached radio {node} in {:?}", self.radios))
    }

    /// Stops the simulator and says whether it exited cleanly.
    pub fn stop(self) -> bool {
        self.process.stop()
    }

    /// The directory its config is in.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

/// Parses `radio !xxxxxxxx mesh=NAME tcp=ADDR [serial=PATH] name="..."`.
pub fn parse_radio_line(line: &str) -> Option<SimRadio> {
    let rest = line.strip_prefix("radio ")?;
    let mut words = rest.split_whitespace();
    let node = words.next()?.to_owned();
    let mut radio = SimRadio {
        node,
        mesh: String::new(),
        tcp: String::new(),
        serial: None,
    };
    for w in words {
        if let Some(v) = w.strip_prefix("mesh=") {
            radio.mesh = v.to_owned();
        } else if let Some(v) = w.strip_prefix("tcp=") {
            radio.tcp = v.to_owned();
        } else if let Some(v) = w.strip_prefix("serial=") {
            radio.serial = Some(v.to_owned());
        }
    }
    (!radio.tcp.is_empty()).then_some(radio)
}

/// A fresh directory under the system temp dir, unique per call.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("archipel-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A small world for the end-to-end tests: one mesh, two attached radios (A with a
/// pseudo-terminal), a router and two people.
pub const TEST_WORLD: &str = r#"
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
attached = { tcp_port = 0, pty = true }
[[mesh.node]]
id = "!0000b001"
long_name = "Harbour radio B"
short_name = "HRB"
attached = { tcp_port = 0 }
[[mesh.node]]
id = "!00000c01"
long_name = "Harbour master"
short_name = "HMST"
role = "router"
[[mesh.node]]
id = "!00000d01"
long_name = "Dana"
short_name = "DANA"
"#;

// ---- Helpers for the relay tests (tests/relay.rs): processes watched on both outputs, free
// ports, and Archipel's own radio link as an in-process observer and injector. ----

/// A free loopback TCP port for a server a test starts, released so that process can take it
/// (and take it again after a restart).
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), not from `bind(0)`: the
/// suite opens thousands of outgoing connections, each on an ephemeral port, and one of them
/// could take a port handed out here before its server binds it. Each test process starts at
/// its own place in the range (from its pid) and moves on, checking that the port binds.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&first| first > LOW + 1_000)
        .unwrap_or(32_768);
    let span = high - LOW;
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (start + n) % span;
        let port = u16::try_from(port).expect("below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A child process whose standard output is read line by line, each line stamped with the
/// moment it was read, and whose standard error is copied to a log file and also read line by
/// line. Stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Watched {
    /// The child; taken once it exited or was stopped.
    child: Option<Child>,
    /// Standard output lines, stamped on arrival by the reader thread.
    out: mpsc::Receiver<(std::time::Instant, String)>,
    /// Standard error lines.
    err: mpsc::Receiver<String>,
    /// The log file standard error is copied to.
    log: PathBuf,
    /// What it is, for failure messages.
    what: String,
}

impl Watched {
    /// Starts `cmd`, its standard error appended to `log`.
    pub fn spawn(mut cmd: Command, what: &str, log: &Path) -> Watched {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (out_tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if out_tx.send((std::time::Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let (err_tx, err) = mpsc::channel();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        std::thread::spawn(move || {
            use std::io::Write as _;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                // The receiver may be gone (the owner dropped it): keep copying to the file.
                let _ = err_tx.send(line);
            }
        });
        Watched {
            child: Some(child),
            out,
            err,
            log: log.to_path_buf(),
            what: what.to_owned(),
        }
    }

    /// What it is.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Its process id while it runs: for the signals a test sends at a moment of its choosing
    /// (SIGKILL mid-flow, SIGTERM to read what it prints on the way out).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The next standard output line within `limit`, with when it was read.
    pub fn next_line(
        &self,
        limit: Duration,
    ) -> Result<(std::time::Instant, String), mpsc::RecvTimeoutError> {
        self.out.recv_timeout(limit)
    }

    /// The next standard error line within `limit` (an error when none came, or the child
    /// closed its standard error).
    pub fn next_log_line(&self, limit: Duration) -> Result<String, mpsc::RecvTimeoutError> {
        self.err.recv_timeout(limit)
    }

    /// Waits at most `limit` for a standard error line that `pick` accepts, skipping others.
    pub fn wait_log_line(&self, limit: Duration, mut pick: impl FnMut(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.err.recv_timeout(left) {
                Ok(line) if pick(&line) => return line,
                Ok(_) => {}
                Err(e) => panic!(
                    "{}: expected log line not written within {}s ({e:?}); log tail:\n{}",
                    self.what,
                    limit.as_secs(),
                    self.log_tail(30)
                ),
            }
        }
    }

    /// The last `n` lines of its log file.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits at most `limit` for the child to exit by itself (its standard output closes, then
    /// it is reaped), and returns how it ended and the output lines it printed meanwhile.
    pub fn wait_exit(
        &mut self,
        limit: Duration,
    ) -> (std::process::ExitStatus, Vec<(std::time::Instant, String)>) {
        let deadline = std::time::Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.out.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{} did not exit within {}s; log tail:\n{}",
                    self.what,
                    limit.as_secs(),
                    self.log_tail(30)
                ),
            }
        }
        // Standard output closed: the process is gone or going; reaping it does not block long.
        let status = self
            .child
            .take()
            .expect("not reaped yet")
            .wait()
            .expect("child reaped");
        (status, lines)
    }

    /// Stops it now (SIGTERM, SIGKILL after 10 s) and returns its status if it exited by itself.
    pub fn stop(mut self) -> Option<std::process::ExitStatus> {
        self.child
            .take()
            .and_then(|c| terminate(c, Duration::from_secs(10)))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(10));
        }
    }
}

/// Archipel's own radio link to one attached radio, run in the test process on a small runtime
/// of its own: a test sends packets through it as that radio's user, and reads what the radio
/// hears. It reconnects by itself (quickly) when the radio goes away and comes back.
pub struct MeshClient {
    /// Runs the link; dropped last.
    runtime: tokio::runtime::Runtime,
    /// The link.
    handle: archipel_adapters::radio::RadioHandle,
    /// Packets the radio handed over, in order.
    packets: mpsc::Receiver<mesh_core::Packet>,
    /// The radio's node.
    node: mesh_core::NodeId,
    /// For failure messages.
    what: String,
}

impl MeshClient {
    /// Connects to the radio at `tcp` and waits (at most `limit`) for the handshake.
    pub fn connect(what: &str, tcp: &str, limit: Duration) -> MeshClient {
        use archipel_adapters::radio::{self, Attachment, RadioConfig, RadioEvent};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the radio link");
        let (handle, mut events) = {
            let _in_runtime = runtime.enter();
            radio::spawn(RadioConfig {
                backoff_initial: Duration::from_millis(50),
                backoff_max: Duration::from_millis(300),
                ..RadioConfig::new(what, Attachment::Tcp(tcp.to_owned()))
            })
        };
        let (tx, packets) = mpsc::channel();
        runtime.spawn(async move {
            while let Some(event) = events.recv().await {
                if let RadioEvent::Packet(p) = event
                    && tx.send(p).is_err()
                {
                    break;
                }
            }
        });
        let info = runtime
            .block_on(async { tokio::time::timeout(limit, handle.connected()).await })
            .unwrap_or_else(|_| panic!("{what}: no handshake with {tcp} within {limit:?}"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let node = info.node_id().expect("the radio says who it is");
        MeshClient {
            runtime,
            handle,
            packets,
            node,
            what: what.to_owned(),
        }
    }

    /// The radio's node.
    pub fn node(&self) -> mesh_core::NodeId {
        self.node
    }

    /// Sends `packet` as this radio's user and waits (at most 60 s) for the outcome: for a
    /// packet without `want_ack`, the radio queued it. The link paces texts 2.4 s apart (the
    /// firmware's phone API demands 2 s, measured on its own clock), so consecutive texts take that long each.
    pub fn send(&self, packet: mesh_core::Packet) -> mesh_core::DeliveryStatus {
        let limit = Duration::from_secs(60);
        self.runtime
            .block_on(async { tokio::time::timeout(limit, self.handle.send(packet)).await })
            .unwrap_or_else(|_| panic!("{}: no outcome for a packet within 60s", self.what))
    }

    /// The next packet the radio handed over, within `limit`.
    pub fn next_packet(&self, limit: Duration) -> Option<mesh_core::Packet> {
        self.packets.recv_timeout(limit).ok()
    }

    /// Every packet up to and including the first that `is_last` accepts, waiting at most
    /// `limit` in all.
    pub fn packets_until(
        &self,
        limit: Duration,
        mut is_last: impl FnMut(&mesh_core::Packet) -> bool,
    ) -> Vec<mesh_core::Packet> {
        let deadline = std::time::Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.packets.recv_timeout(left) {
                Ok(p) => {
                    let last = is_last(&p);
                    got.push(p);
                    if last {
                        return got;
                    }
                }
                Err(e) => panic!(
                    "{}: the expected packet did not arrive within {}s ({e:?}); got {} packet(s): {:?}",
                    self.what,
                    limit.as_secs(),
                    got.len(),
                    got.iter()
                        .map(|p| format!("{} {} {:?}", p.from(), p.id(), p.text()))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }
}

impl Drop for MeshClient {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), self.handle.shutdown()).await
        });
    }
}
