//! A real Mosquitto broker (Debian's `mosquitto` 2.0) for tests: a per-test config on free
//! loopback ports, optional persistence, password file and TLS listener (a CA and server
//! certificate made with `openssl` in the test's directory), started as a child, stopped,
//! killed, paused or restarted on the same ports, and killed when the test ends.
//!
//! As root, Mosquitto drops to the `mosquitto` user unless told otherwise; the config says
//! `user root` then, so the broker can read the test's files and write its persistence file
//! in the test's private directory (it warns that it should not run as root: it only listens
//! on loopback here).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{TempDir, Watched, free_port, run_with_limit, temp_dir};

/// How long a broker may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(10);

/// What the test's broker should offer.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Keep sessions and queued messages on disk across a restart.
    pub persistence: bool,
    /// Require this user and password (anonymous clients refused).
    pub password: Option<(String, String)>,
    /// Also listen with TLS (certificate signed by a CA made for this broker).
    pub tls: bool,
    /// More config lines, written before the listeners.
    pub extra: Vec<String>,
}

/// One Mosquitto process and its files.
pub struct Mosquitto {
    /// The running broker, `None` while stopped.
    process: Option<Watched>,
    /// Plain listener.
    port: u16,
    /// TLS listener, when asked for.
    tls_port: Option<u16>,
    /// Its config, kept for restarts.
    config: PathBuf,
    /// Config, certificates, password file, log and persistence; removed on drop.
    dir: TempDir,
}

impl Mosquitto {
    /// Writes the config for `options` on free loopback ports and starts the broker.
    pub fn start(options: BrokerOptions) -> Mosquitto {
        let dir = temp_dir("mosquitto");
        let port = free_port();
        let tls_port = options.tls.then(free_port);
        if options.tls {
            make_certificates(&dir);
        }
        let mut lines = vec![
            format!("pid_file {}", dir.join("mosquitto.pid").display()),
            "log_dest stderr".into(),
            "log_type error".into(),
            "log_type warning".into(),
            "log_type notice".into(),
            "log_type information".into(),
            format!("persistence {}", options.persistence),
            format!("persistence_location {}/", dir.display()),
        ];
        if running_as_root() {
            lines.insert(0, "user root".into());
        }
        match &options.password {
            Some((user, password)) => {
                let file = dir.join("passwd");
                let mut cmd = Command::new(client_tool("mosquitto_passwd"));
                cmd.arg("-c").arg("-b").arg(&file).arg(user).arg(password);
                let out = run_with_limit(cmd, Duration::from_secs(10), "mosquitto_passwd");
                assert!(out.status.success(), "mosquitto_passwd failed: {out:?}");
                lines.push("allow_anonymous false".into());
                lines.push(format!("password_file {}", file.display()));
            }
            None => lines.push("allow_anonymous true".into()),
        }
        lines.extend(options.extra.iter().cloned());
        lines.push(format!("listener {port} 127.0.0.1"));
        if let Some(tls) = tls_port {
            lines.push(format!("listener {tls} 127.0.0.1"));
            lines.push(format!("cafile {}", dir.join("ca.crt").display()));
            lines.push(format!("certfile {}", dir.join("server.crt").display()));
            lines.push(format!("keyfile {}", dir.join("server.key").display()));
        }
        let config = dir.join("mosquitto.conf");
        std::fs::write(&config, lines.join("\n") + "\n").expect("mosquitto config written");
        let mut broker = Mosquitto {
            process: None,
            port,
            tls_port,
            config,
            dir: TempDir(dir),
        };
        broker.launch();
        broker
    }

    /// The plain listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS listener's port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
            .expect("the broker was started with tls: true")
    }

    /// The CA that signed the broker's certificate (for `localhost` and `127.0.0.1`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.0.join("ca.crt")
    }

    /// Another CA, one that signed nothing the broker has.
    pub fn unrelated_ca_file(&self) -> PathBuf {
        let path = self.dir.0.join("other-ca.crt");
        if !path.exists() {
            make_ca(&self.dir.0, "other-ca", "Unrelated test CA");
        }
        path
    }

    /// Stops the broker (SIGTERM) and waits for it; a persistent broker saves its state.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop();
        }
    }

    /// Kills the broker (SIGKILL): no goodbye to clients, nothing saved.
    pub fn kill(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.stop();
    }

    /// Starts the broker again on the same ports with the same files.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Freezes the broker (SIGSTOP): connections stay open and nothing is answered.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// Waits at most `limit` for a broker log line that `pick` accepts.
    pub fn wait_log(&self, limit: Duration, pick: impl FnMut(&str) -> bool) -> String {
        self.process
            .as_ref()
            .expect("the broker is running")
            .wait_log_line(limit, pick)
    }

    /// The last `n` lines of the broker's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Publishes with `mosquitto_pub` (an independent client) and waits for it to finish.
    pub fn publish_with_client(&self, topic: &str, message: &str, qos: u8) {
        let mut cmd = Command::new(client_tool("mosquitto_pub"));
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-q", &qos.to_string(), "-t", topic, "-m", message]);
        let out = run_with_limit(cmd, Duration::from_secs(10), "mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub failed: {}\nbroker log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(20)
        );
    }

    fn log(&self) -> PathBuf {
        self.dir.0.join("mosquitto.log")
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(mosquitto_bin());
        cmd.arg("-c").arg(&self.config);
        let process = Watched::spawn(cmd, "mosquitto", &self.log());
        process.wait_log_line(START_LIMIT, |l| l.contains(" running"));
        // Listening: the log says so once every listener is bound; check the plain one.
        std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap_or_else(|e| {
            panic!("mosquitto said it runs but port {} refuses: {e}", self.port)
        });
        self.process = Some(process);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if self.process.is_none() {
            return;
        }
        let text = std::fs::read_to_string(self.dir.0.join("mosquitto.pid"))
            .expect("mosquitto wrote its pid file");
        let pid: i32 = text.trim().parse().expect("a pid in mosquitto's pid file");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // A paused broker would sit out SIGTERM's grace period.
        self.resume();
        self.stop();
    }
}

/// `$ARCHIPEL_MOSQUITTO`, or `mosquitto` on the PATH or in /usr/sbin (Debian puts it there).
pub fn mosquitto_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ARCHIPEL_MOSQUITTO") {
        return PathBuf::from(bin);
    }
    find_tool("mosquitto").unwrap_or_else(|| {
        panic!("mosquitto is missing: run `tests/run`, which installs Debian's mosquitto package")
    })
}

/// One of `mosquitto-clients`' tools.
pub fn client_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!("{name} is missing: run `tests/run`, which installs mosquitto-clients")
    })
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    let out = run_with_limit(cmd, Duration::from_secs(30), "openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA (`NAME.crt`, `NAME.key`) with P-256 keys.
fn make_ca(dir: &Path, name: &str, common_name: &str) {
    let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &format!("/CN={common_name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// `ca.crt` and a server certificate for `localhost` and `127.0.0.1` signed by it.
fn make_certificates(dir: &Path) {
    make_ca(dir, "ca", "Archipel test CA");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("extensions written");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}
