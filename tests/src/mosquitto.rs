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
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use archipel_adapters::mqtt::{self, MqttConfig};
use bytes::Bytes;

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
            // `CLIENT QOS FILTER` for each subscription: a test waits for a gateway's
            // subscription before it publishes what the gateway should receive.
            "log_type subscribe".into(),
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

    /// Publishes `payload` (any bytes) with `mosquitto_pub -f` and waits for it to finish.
    pub fn publish_file_with_client(&self, topic: &str, payload: &[u8], qos: u8) {
        static FILES: AtomicU32 = AtomicU32::new(0);
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let file = self.dir.0.join(format!("payload-{n}.bin"));
        std::fs::write(&file, payload).expect("payload written");
        let mut cmd = Command::new(client_tool("mosquitto_pub"));
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-q", &qos.to_string(), "-t", topic, "-f"])
            .arg(&file);
        let out = run_with_limit(cmd, Duration::from_secs(10), "mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub -f failed: {}\nbroker log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(20)
        );
    }

    /// Publishes every message at QoS 1, one after the other, each once the broker acknowledged
    /// the one before (so the broker holds them in this order), as fast as the broker answers:
    /// a burst no command-line tool can make. The client is Archipel's MQTT link (rumqttc).
    pub fn publish_in_order(&self, messages: Vec<(String, Vec<u8>)>) {
        static CLIENTS: AtomicU32 = AtomicU32::new(0);
        let n = CLIENTS.fetch_add(1, Ordering::Relaxed);
        let id = format!("e2e-publisher-{}-{n}", std::process::id());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the publisher");
        runtime.block_on(async {
            let (handle, _events) = mqtt::spawn(MqttConfig::new(&id, "127.0.0.1", self.port, &id))
                .expect("a valid publisher config");
            let limit = Duration::from_secs(10);
            tokio::time::timeout(limit, handle.connected())
                .await
                .expect("the publisher connects within 10 s")
                .expect("the publisher runs");
            let deadline = Instant::now() + Duration::from_secs(60);
            for (i, (topic, payload)) in messages.into_iter().enumerate() {
                let left = deadline.saturating_duration_since(Instant::now());
                let status =
                    tokio::time::timeout(left, handle.publish(topic, Bytes::from(payload)))
                        .await
                        .unwrap_or_else(|_| panic!("message {i} not acknowledged in time"));
                assert!(status.is_delivered(), "message {i}: {status}");
            }
            handle.shutdown().await;
        });
    }

    /// Waits until each `(client, filter)` subscription was made at QoS 1 (as the broker logs
    /// it), in any order.
    pub fn wait_subscriptions(&self, wanted: &[(&str, &str)]) {
        let mut waiting: Vec<String> = wanted
            .iter()
            .map(|(client, filter)| format!(": {client} 1 {filter}"))
            .collect();
        while !waiting.is_empty() {
            let line = self.wait_log(Duration::from_secs(30), |l| {
                waiting.iter().any(|w| l.ends_with(w.as_str()))
            });
            waiting.retain(|w| !line.ends_with(w.as_str()));
        }
    }

    /// Everything the broker logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
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

/// One message as a subscriber received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The topic it came on.
    pub topic: String,
    /// Its bytes.
    pub payload: Vec<u8>,
}

/// `mosquitto_sub` (an independent client) on one topic filter at QoS 1, each message read
/// as it prints it (topic and payload in hex); stopped when dropped.
pub struct Subscriber {
    /// The client; its standard output carries the messages and its debug lines.
    process: Watched,
    /// Where its standard error is logged; removed on drop.
    _dir: TempDir,
}

impl Subscriber {
    /// Subscribes to `filter` on `broker` and waits for the broker's SUBACK. With `session`,
    /// the client id is that and its session persistent (clean session off): the broker keeps
    /// what arrives while the subscriber or the broker itself is away (with persistence on),
    /// and the client reconnects by itself.
    pub fn start(broker: &Mosquitto, filter: &str, session: Option<&str>) -> Subscriber {
        let dir = temp_dir("mosquitto-sub");
        // Line-buffered, or its output only shows when it exits.
        let mut cmd = Command::new("stdbuf");
        cmd.arg("-oL").arg(client_tool("mosquitto_sub"));
        cmd.args(["-d", "-h", "127.0.0.1", "-p", &broker.port().to_string()])
            .args(["-q", "1", "-t", filter, "-F", "msg %t %x"]);
        if let Some(id) = session {
            cmd.args(["-c", "-i", id]);
        }
        let process = Watched::spawn(cmd, "mosquitto_sub", &dir.join("sub.log"));
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match process.next_line(left) {
                Ok((_, line)) if line.contains("received SUBACK") => break,
                Ok(_) => {}
                Err(e) => panic!(
                    "mosquitto_sub got no SUBACK for {filter} ({e:?}): {}",
                    process.log_tail(10)
                ),
            }
        }
        Subscriber {
            process,
            _dir: TempDir(dir),
        }
    }

    /// The next message within `limit`, skipping the client's debug lines.
    pub fn next(&self, limit: Duration) -> Option<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, line) = self.process.next_line(left).ok()?;
            let Some(rest) = line.strip_prefix("msg ") else {
                continue;
            };
            let (topic, hex) = rest.rsplit_once(' ').unwrap_or((rest, ""));
            let payload = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .unwrap_or_else(|e| panic!("mosquitto_sub printed bad hex ({e}): {line}"));
            return Some(Received {
                topic: topic.to_owned(),
                payload,
            });
        }
    }

    /// Every message up to and including the first that `is_last` accepts, within `limit`
    /// in all.
    pub fn until(
        &self,
        limit: Duration,
        mut is_last: impl FnMut(&Received) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.next(left) else {
                let topics: Vec<&str> = got.iter().map(|m: &Received| m.topic.as_str()).collect();
                panic!(
                    "the subscriber's last expected message did not come within {}s; got {} before: {topics:?}",
                    limit.as_secs(),
                    got.len()
                );
            };
            let last = is_last(&m);
            got.push(m);
            if last {
                return got;
            }
        }
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
