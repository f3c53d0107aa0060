//! A real Prosody (Debian's `prosody` 0.12) for tests: a self-contained per-test config on free
//! loopback ports (one client port, one XEP-0114 component port), a MUC service with
//! `mod_muc_mam`, a component domain with its secret, and users registered with `prosodyctl`.
//! Started as a plain foreground child, stopped (SIGTERM), killed (SIGKILL), paused, or
//! restarted on the same ports with the same data (persistent rooms and their archives survive),
//! and killed when the test ends. Each instance has its own directory and ports, so tests run in
//! parallel.
//!
//! Two things differ from the obvious config, both checked against Prosody 0.12.3 here:
//! - `mod_posix` stays on, with `run_as_root = true` and `-F` (foreground). It is the module that
//!   handles SIGTERM: without it SIGTERM kills Prosody outright (exit by signal, no stream close
//!   to clients, nothing flushed), so `stop` would be no different from `kill`. `-F` keeps it
//!   from daemonizing; `run_as_root` stops it refusing to run as root.
//! - `run_as_root = true` also keeps `prosodyctl` from switching to the `prosody` user when run
//!   as root (it then cannot write the test's root-owned data directory: "Unable to write to
//!   accounts storage"), so the server and `prosodyctl` both run as whoever runs the tests.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{TempDir, Watched, free_port, run_with_limit, temp_dir};

mod config;
mod stream;

/// How long Prosody may take to start listening and answer a client stream (it takes about
/// 0.15 s here; the margin is for a loaded machine running tests in parallel).
const START_LIMIT: Duration = Duration::from_secs(20);

/// How long Prosody may take to shut down after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How many times `start` picks fresh ports when another process took one between choosing it
/// and Prosody binding it.
const PORT_ATTEMPTS: usize = 3;

/// The domains, secret and options of a test's Prosody, before it starts.
#[derive(Clone)]
pub struct ProsodyBuilder {
    /// Names the test directory, so a kept or leaked one says whose it was.
    tag: String,
    /// The VirtualHost users live on.
    vhost: String,
    /// The MUC component's domain.
    muc: String,
    /// The XEP-0114 component's domain (Archipel's).
    component: String,
    /// The component's shared secret.
    secret: String,
    /// Server admins: owners of every room (Prosody's `component_admins_as_room_owners`).
    admins: Vec<String>,
    /// Raw Lua lines for the global section, after the harness's own.
    global: Vec<String>,
    /// Raw Lua lines for the MUC component, after the harness's own.
    muc_options: Vec<String>,
    /// Log at debug level instead of info.
    debug: bool,
}

impl std::fmt::Debug for ProsodyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProsodyBuilder")
            .field("tag", &self.tag)
            .field("vhost", &self.vhost)
            .field("muc", &self.muc)
            .field("component", &self.component)
            .field("secret", &"<redacted>")
            .field("admins", &self.admins)
            .finish_non_exhaustive()
    }
}

impl ProsodyBuilder {
    /// Users' domain (default `hub.lan`).
    pub fn vhost(mut self, domain: &str) -> Self {
        self.vhost = domain.to_owned();
        self
    }

    /// The MUC service's domain (default `rooms.hub.lan`).
    pub fn muc_domain(mut self, domain: &str) -> Self {
        self.muc = domain.to_owned();
        self
    }

    /// The component's domain (default `mesh.hub.lan`).
    pub fn component_domain(mut self, domain: &str) -> Self {
        self.component = domain.to_owned();
        self
    }

    /// The component's secret (default: a fresh one per instance).
    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = secret.to_owned();
        self
    }

    /// Makes `jid` (a bare user JID) a server admin: owner of every room, so it can kick anyone.
    pub fn admin(mut self, jid: &str) -> Self {
        self.admins.push(jid.to_owned());
        self
    }

    /// Adds a raw Lua line to the global section (e.g. `c2s_stanza_size_limit = 4096`).
    pub fn global_option(mut self, line: &str) -> Self {
        self.global.push(line.to_owned());
        self
    }

    /// Adds a raw Lua line to the MUC component (e.g. `muc_room_default_history_length = 5`).
    pub fn muc_option(mut self, line: &str) -> Self {
        self.muc_options.push(line.to_owned());
        self
    }

    /// Logs at debug level (routing decisions, session lifecycles) for a failing test.
    pub fn debug_log(mut self, on: bool) -> Self {
        self.debug = on;
        self
    }

    /// Writes the config on free loopback ports and starts Prosody, waiting until it answers a
    /// client stream.
    pub fn start(self) -> Prosody {
        let dir = temp_dir(&format!("prosody-{}", self.tag));
        for sub in ["data", "certs"] {
            std::fs::create_dir_all(dir.join(sub)).expect("prosody directories");
        }
        let mut prosody = Prosody {
            process: None,
            paused: false,
            c2s_port: 0,
            component_port: 0,
            config: dir.join("prosody.cfg.lua"),
            settings: self,
            dir: TempDir(dir),
        };
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            prosody.c2s_port = free_port();
            prosody.component_port = free_port();
            prosody.write_config();
            match prosody.launch() {
                Ok(process) => {
                    prosody.process = Some(process);
                    return prosody;
                }
                Err(Launch::PortTaken(log)) => last = log,
                Err(Launch::Failed(why)) => panic!("{why}"),
            }
        }
        panic!("prosody could not bind its ports in {PORT_ATTEMPTS} attempts; last log:\n{last}")
    }
}

/// Why a launch did not give a running server.
enum Launch {
    /// A port was taken by someone else: worth another try on other ports.
    PortTaken(String),
    /// Anything else, with the log.
    Failed(String),
}

/// One Prosody process and its files.
pub struct Prosody {
    /// The running server, `None` while stopped.
    process: Option<Watched>,
    /// Stopped with SIGSTOP: it must get SIGCONT before SIGTERM can reach it.
    paused: bool,
    /// Client-to-server port (plaintext; no TLS without certificates).
    c2s_port: u16,
    /// XEP-0114 component port.
    component_port: u16,
    /// The config file, kept for restarts and `prosodyctl`.
    config: PathBuf,
    /// Domains, secret and options it was built with.
    settings: ProsodyBuilder,
    /// Config, data (accounts, rooms, archives), log; removed on drop. Last, so it goes after
    /// the process.
    dir: TempDir,
}

impl std::fmt::Debug for Prosody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prosody")
            .field("c2s_port", &self.c2s_port)
            .field("component_port", &self.component_port)
            .field("running", &self.process.is_some())
            .field("settings", &self.settings)
            .field("dir", &self.dir.0)
            .finish_non_exhaustive()
    }
}

impl Prosody {
    /// Prosody with the default domains (`hub.lan`, `rooms.hub.lan`, `mesh.hub.lan`) and a fresh
    /// secret, started.
    pub fn start(tag: &str) -> Prosody {
        Prosody::builder(tag).start()
    }

    /// The defaults, to change before `start`.
    pub fn builder(tag: &str) -> ProsodyBuilder {
        static SECRETS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SECRETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        ProsodyBuilder {
            tag: tag.to_owned(),
            vhost: "hub.lan".into(),
            muc: "rooms.hub.lan".into(),
            component: "mesh.hub.lan".into(),
            secret: format!("test-secret-{}-{n}-{nanos:08x}", std::process::id()),
            admins: Vec::new(),
            global: Vec::new(),
            muc_options: Vec::new(),
            debug: false,
        }
    }

    /// The client port on 127.0.0.1.
    pub fn c2s_port(&self) -> u16 {
        self.c2s_port
    }

    /// The component port on 127.0.0.1.
    pub fn component_port(&self) -> u16 {
        self.component_port
    }

    /// `127.0.0.1:PORT` of the component port, as Archipel's `server` setting wants it.
    pub fn component_addr(&self) -> String {
        format!("127.0.0.1:{}", self.component_port)
    }

    /// The users' domain.
    pub fn vhost(&self) -> &str {
        &self.settings.vhost
    }

    /// The component's domain.
    pub fn component_domain(&self) -> &str {
        &self.settings.component
    }

    /// The MUC service's domain.
    pub fn muc_domain(&self) -> &str {
        &self.settings.muc
    }

    /// The component's secret.
    pub fn secret(&self) -> &str {
        &self.settings.secret
    }

    /// A file holding the secret (no newline), for Archipel's `secret_file` setting.
    pub fn secret_file(&self) -> PathBuf {
        let path = self.dir.0.join("component.secret");
        if !path.exists() {
            std::fs::write(&path, &self.settings.secret).expect("secret file written");
        }
        path
    }

    /// `user@VHOST`.
    pub fn jid(&self, user: &str) -> String {
        format!("{user}@{}", self.settings.vhost)
    }

    /// `room@MUC`.
    pub fn room_jid(&self, room: &str) -> String {
        format!("{room}@{}", self.settings.muc)
    }

    /// The test's directory (config, `data/`, `prosody.log`).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Whether the server process is running (started and not stopped or killed).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Creates the account `user@VHOST` with `password` through `prosodyctl` (works while the
    /// server runs: the internal storage is read at each login).
    pub fn register(&self, user: &str, password: &str) {
        let mut cmd = Command::new(prosodyctl_bin());
        cmd.arg("--config").arg(&self.config).args([
            "register",
            user,
            &self.settings.vhost,
            password,
        ]);
        let out = run_with_limit(cmd, Duration::from_secs(30), "prosodyctl register");
        // Not the command line in the message: it has the password.
        assert!(
            out.status.success(),
            "prosodyctl register {user}@{} failed ({}): {}{}",
            self.settings.vhost,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (SIGTERM: streams closed, data flushed) and waits for it.
    ///
    /// # Panics
    /// When it does not exit cleanly within 10 s (then it was killed).
    pub fn stop(&mut self) {
        self.resume();
        if let Some(process) = self.process.take() {
            let status = process.stop();
            assert!(
                status.is_some_and(|s| s.success()),
                "prosody did not stop cleanly within {}s ({status:?}); log tail:\n{}",
                STOP_GRACE.as_secs(),
                self.log_tail(30)
            );
        }
    }

    /// Kills the server (SIGKILL): no goodbye to anyone, nothing flushed that was not already.
    pub fn kill(&mut self) {
        self.resume();
        if let Some(process) = self.process.take() {
            if let Some(pid) = process.pid() {
                signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
            process.stop();
        }
    }

    /// Starts the server again on the same ports with the same data, stopping it first if it
    /// runs; waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts a stopped or killed server again on the same ports with the same data.
    pub fn start_again(&mut self) {
        assert!(self.process.is_none(), "prosody is already running");
        match self.launch() {
            Ok(process) => self.process = Some(process),
            Err(Launch::PortTaken(log)) => panic!(
                "prosody's ports ({} and {}) were taken while it was stopped; log:\n{log}",
                self.c2s_port, self.component_port
            ),
            Err(Launch::Failed(why)) => panic!("{why}"),
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered.
    pub fn pause(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, nix::sys::signal::Signal::SIGSTOP);
            self.paused = true;
        }
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&mut self) {
        if self.paused
            && let Some(pid) = self.pid()
        {
            signal(pid, nix::sys::signal::Signal::SIGCONT);
        }
        self.paused = false;
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Watched::pid)
    }

    /// Waits at most `limit` for a log line that `pick` accepts, skipping others.
    pub fn wait_log(&self, limit: Duration, pick: impl FnMut(&str) -> bool) -> String {
        self.process
            .as_ref()
            .expect("prosody is running")
            .wait_log_line(limit, pick)
    }

    /// Everything the server logged so far (all runs).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Connects to the component port as `component_domain` would (XEP-0114 handshake with
    /// `secret`) and returns the authenticated stream, or what the server answered instead. A
    /// test holds it to occupy the domain (Prosody refuses a second connection for it).
    pub fn connect_component(&self, secret: &str) -> Result<TcpStream, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        stream::component_handshake(
            self.component_port,
            &self.settings.component,
            secret,
            deadline,
        )
    }

    fn log(&self) -> PathBuf {
        self.dir.0.join("prosody.log")
    }

    fn write_config(&self) {
        let text = config::render(
            &self.settings,
            &self.dir.0,
            self.c2s_port,
            self.component_port,
        );
        std::fs::write(&self.config, text).expect("prosody config written");
    }

    /// Starts the process and waits until both ports are bound and a client stream gets its
    /// features (the event loop runs only once every host is loaded).
    fn launch(&self) -> Result<Watched, Launch> {
        let mut cmd = Command::new(prosody_bin());
        cmd.arg("--config").arg(&self.config).arg("-F");
        let process = Watched::spawn(cmd, "prosody", &self.log());
        let c2s = format!("Activated service 'c2s' on [127.0.0.1]:{}", self.c2s_port);
        let component = format!(
            "Activated service 'component' on [127.0.0.1]:{}",
            self.component_port
        );
        let (mut have_c2s, mut have_component) = (false, false);
        let deadline = Instant::now() + START_LIMIT;
        while !(have_c2s && have_component) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match process.next_log_line(left) {
                Ok(line) => line,
                Err(e) => {
                    process.stop();
                    return Err(Launch::Failed(format!(
                        "prosody did not bind its ports within {}s ({e:?}); log tail:\n{}",
                        START_LIMIT.as_secs(),
                        self.log_tail(30)
                    )));
                }
            };
            have_c2s |= line.contains(&c2s);
            have_component |= line.contains(&component);
            // portmanager: "Failed to open server port PORT on IP, Address already in use"
            if line.contains("Failed to open server port") {
                process.stop();
                return Err(if line.contains("in use") {
                    Launch::PortTaken(self.log_tail(30))
                } else {
                    Launch::Failed(format!("prosody: {line}\nlog tail:\n{}", self.log_tail(30)))
                });
            }
        }
        if let Err(e) = stream::probe_c2s(self.c2s_port, &self.settings.vhost, deadline) {
            process.stop();
            return Err(Launch::Failed(format!(
                "prosody bound port {} but its client stream {e}; log tail:\n{}",
                self.c2s_port,
                self.log_tail(30)
            )));
        }
        Ok(process)
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        // A paused server would sit out SIGTERM's grace period.
        self.resume();
        if let Some(process) = self.process.take() {
            process.stop();
        }
    }
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// `$ARCHIPEL_PROSODY`, or Debian's `/usr/bin/prosody`.
pub fn prosody_bin() -> PathBuf {
    tool("ARCHIPEL_PROSODY", "/usr/bin/prosody")
}

/// `prosodyctl` beside the server binary.
pub fn prosodyctl_bin() -> PathBuf {
    let bin = prosody_bin();
    bin.with_file_name("prosodyctl")
}

fn tool(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing: run `tests/run`, which installs Debian's prosody package",
        path.display()
    );
    path
}
