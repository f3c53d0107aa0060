//! A real browser for the status page tests: Debian's headless Chromium driven by its
//! `chromedriver` over the W3C WebDriver protocol (JSON over loopback HTTP, through `ureq`).
//!
//! Each [`Browser`] has a chromedriver of its own on a free loopback port and a fresh Chromium
//! profile, so tests run in parallel without sharing anything. The driver is the leader of its
//! own process group and Chromium (with its helper processes) is started inside it, so dropping
//! the browser, also while a failed assertion unwinds, kills every one of them.
//!
//! Nothing here sleeps: a condition on the page is waited for inside the page, by a
//! `MutationObserver` that re-checks it whenever the DOM changes, under a bounded deadline.

use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{TempDir, free_port, temp_dir};

/// Debian's `chromium` and `chromium-driver` (tests/run installs them).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long the driver may take to listen, and a browser to start or to answer one command.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// The longest wait for a condition on the page (the driver's script timeout is set above it).
pub const WAIT_LIMIT: Duration = Duration::from_secs(45);

/// The screen the page is shown on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// A phone in portrait: 390 CSS pixels wide (an iPhone 12 to 15), at two device pixels
    /// per CSS pixel. Chromium's device emulation gives exactly that viewport, which a bare
    /// `--window-size` does not reliably do below the desktop window's minimum width.
    Phone,
    /// A laptop: a 1366 by 900 window.
    Desktop,
}

impl Screen {
    /// Its name in file names and messages.
    pub fn name(self) -> &'static str {
        match self {
            Screen::Phone => "phone",
            Screen::Desktop => "desktop",
        }
    }
}

/// A headless Chromium with one WebDriver session.
pub struct Browser {
    /// The driver's address, `http://127.0.0.1:PORT`.
    driver_url: String,
    /// The session, while it is open.
    session: Option<String>,
    /// Loopback HTTP to the driver, every call bounded.
    agent: ureq::Agent,
    /// The driver, leader of the process group Chromium runs in; `None` once reaped.
    driver: Option<Child>,
    /// The driver's log and Chromium's profile; removed on drop.
    dir: TempDir,
    /// The screen it emulates.
    screen: Screen,
}

impl Browser {
    /// Starts a chromedriver on a free port and a headless Chromium under it, showing `screen`.
    pub fn start(screen: Screen) -> Browser {
        let dir = TempDir(temp_dir(&format!("chromium-{}", screen.name())));
        let port = free_port();
        let log = dir.0.join("chromedriver.log");
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            // Its own process group: Chromium and its helpers join it, and one signal to the
            // group ends them all, whatever state the test left them in.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut driver = cmd.spawn().unwrap_or_else(|e| {
            panic!("{CHROMEDRIVER} does not start ({e}): tests/run installs chromium-driver")
        });
        let started = announced(&mut driver, &dir.0.join("chromedriver.out"));
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(COMMAND_LIMIT))
            // WebDriver errors come as JSON bodies with 4xx/5xx codes: read them, not drop them.
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut browser = Browser {
            driver_url: format!("http://127.0.0.1:{port}"),
            session: None,
            agent,
            driver: Some(driver),
            dir,
            screen,
        };
        if let Err(why) = started {
            panic!(
                "chromedriver did not start: {why}\n{}",
                browser.driver_log_tail(30)
            );
        }
        let session = browser.command("POST", "/session", Some(browser.capabilities()));
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"))
            .to_owned();
        browser.session = Some(id);
        browser
    }

    /// What the session asks for: Chromium headless, nothing it does on its own (updates,
    /// sync, QUIC probes), a fresh profile, and the screen.
    fn capabilities(&self) -> Value {
        let profile = self.dir.0.join("profile");
        let mut args = vec![
            "--headless=new".to_owned(),
            // As root in a container, Chromium's sandbox cannot start.
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            // /dev/shm is small in containers; Chromium then uses /tmp.
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut options = json!({ "binary": CHROMIUM });
        match self.screen {
            Screen::Phone => {
                options["mobileEmulation"] =
                    json!({ "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 2 } });
            }
            Screen::Desktop => args.push("--window-size=1366,900".into()),
        }
        options["args"] = json!(args);
        json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": options,
                    // A script's own deadline (WAIT_LIMIT) always comes first.
                    "timeouts": {
                        "script": (WAIT_LIMIT + Duration::from_secs(15)).as_millis() as u64,
                        "pageLoad": COMMAND_LIMIT.as_millis() as u64,
                    },
                }
            }
        })
    }

    /// Opens `url` and waits for the document to load.
    pub fn goto(&self, url: &str) {
        self.session_command("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `body` (a function body: `return ...;`) in the page and returns what it returned.
    pub fn eval(&self, body: &str) -> Value {
        self.session_command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": body, "args": [] })),
        )
    }

    /// Waits at most `limit` (clamped to [`WAIT_LIMIT`]) until `condition` (a function body,
    /// run in the page) returns something truthy, and returns it. The condition is checked at
    /// once and again after every change of the DOM; when time runs out, the test fails with
    /// `what` and the condition's last value (a thrown error counts as not yet).
    pub fn wait_for(&self, what: &str, limit: Duration, condition: &str) -> Value {
        let limit = limit.min(WAIT_LIMIT);
        // The condition goes in as source text, not through `new Function`: the page's
        // Content-Security-Policy forbids eval.
        let script = format!(
            r#"
const done = arguments[arguments.length - 1];
const check = () => {{ {condition}
}};
const attempt = () => {{
  try {{ return {{ value: check() }}; }} catch (e) {{ return {{ value: null, error: String(e) }}; }}
}};
let last = attempt();
if (last.value) {{ done({{ ok: true, value: last.value }}); return; }}
let timer = null;
const observer = new MutationObserver(() => {{
  last = attempt();
  if (last.value) {{ observer.disconnect(); clearTimeout(timer); done({{ ok: true, value: last.value }}); }}
}});
observer.observe(document, {{ subtree: true, childList: true, characterData: true, attributes: true }});
timer = setTimeout(() => {{ observer.disconnect(); done({{ ok: false, last }}); }}, {ms});
"#,
            ms = limit.as_millis()
        );
        let started = Instant::now();
        let out = self.session_command(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        );
        if out["ok"] != true {
            panic!(
                "{} browser: {what}: not within {:.1}s; the condition last gave {}",
                self.screen.name(),
                started.elapsed().as_secs_f64(),
                out["last"]
            );
        }
        out["value"].clone()
    }

    /// Saves a PNG of the whole page (beyond the viewport, as tall as the page is) to `path`.
    pub fn screenshot(&self, path: &Path) {
        let size = self.eval(
            "const d = document.documentElement; \
             return [Math.max(d.scrollWidth, window.innerWidth), d.scrollHeight];",
        );
        let (width, height) = (
            size[0].as_f64().unwrap_or(0.0),
            size[1].as_f64().unwrap_or(0.0),
        );
        // Through the DevTools protocol chromedriver relays: WebDriver's own screenshot is of
        // the viewport only, and a phone's viewport shows a third of the page.
        let shot = self.session_command(
            "POST",
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Page.captureScreenshot",
                "params": {
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 },
                }
            })),
        );
        let data = shot["data"]
            .as_str()
            .unwrap_or_else(|| panic!("no screenshot data in {shot}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap_or_else(|e| panic!("the screenshot is not base64: {e}"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
    }

    /// The screen it shows.
    pub fn screen(&self) -> Screen {
        self.screen
    }

    /// One command of the session (`path` after `/session/<id>`).
    fn session_command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let id = self.session.as_deref().expect("the session is open");
        self.command(method, &format!("/session/{id}{path}"), body)
    }

    /// One WebDriver command: its `value`, or the test fails with the driver's error.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_command(method, path, body) {
            Ok(v) => v,
            Err(why) => panic!(
                "{} browser: {method} {path}: {why}\n{}",
                self.screen.name(),
                self.driver_log_tail(20)
            ),
        }
    }

    fn try_command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.driver_url);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self.agent.post(&url).send_json(body.unwrap_or(json!({}))),
        };
        let mut response = response.map_err(|e| e.to_string())?;
        let code = response.status();
        let reply: Value = response
            .body_mut()
            .read_json()
            .map_err(|e| format!("HTTP {code}, not JSON: {e}"))?;
        let value = reply.get("value").cloned().unwrap_or(Value::Null);
        if code.is_success() {
            Ok(value)
        } else {
            Err(format!(
                "HTTP {code}: {} {}",
                value["error"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or("")
            ))
        }
    }

    /// The last `n` lines of the driver's log, for failure messages.
    fn driver_log_tail(&self, n: usize) -> String {
        let mut text = String::new();
        for name in ["chromedriver.out", "chromedriver.log"] {
            let body = std::fs::read_to_string(self.dir.0.join(name)).unwrap_or_default();
            let lines: Vec<&str> = body.lines().collect();
            text += &format!(
                "--- {name}:\n{}\n",
                lines[lines.len().saturating_sub(n)..].join("\n")
            );
        }
        text
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session lets Chromium exit by itself; whatever did not is killed below.
        if self.session.is_some() {
            let path = format!("/session/{}", self.session.take().unwrap_or_default());
            let _ = self.try_command("DELETE", &path, None);
        }
        if let Some(mut driver) = self.driver.take() {
            // The driver is not reaped yet, so its group id cannot have been reused: the
            // signal reaches only the driver and the browser processes it started.
            let group = nix::unistd::Pid::from_raw(driver.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = driver.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "{} browser's driver log:\n{}",
                self.screen.name(),
                self.driver_log_tail(15)
            );
        }
    }
}

/// Waits for the driver's "started successfully" line; copies everything it prints to `out`.
fn announced(driver: &mut Child, out: &PathBuf) -> Result<(), String> {
    let stdout = driver.stdout.take().expect("piped");
    let stderr = driver.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ] {
        let tx = tx.clone();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + COMMAND_LIMIT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("started successfully") => return Ok(()),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("no start line within {}s", COMMAND_LIMIT.as_secs()));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("it exited: {:?}", driver.wait()));
            }
        }
    }
}
