//! A real Prometheus server (Debian's `prometheus` package) for tests: a per-test config
//! scraping one target every second, its storage in the test's directory, started as a child
//! on a free loopback port and stopped when dropped (a panicking test included), and its HTTP
//! API: target health, instant queries, label values.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Watched, free_port};

/// How long the server may take to answer `/-/ready`, and a target to turn healthy: it
/// replays an empty write-ahead log first, quick, but the machine is shared.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Between two polls of the API while waiting for a state the server reaches by itself.
pub const POLL: Duration = Duration::from_millis(250);

/// One Prometheus process scraping one target.
pub struct Prometheus {
    /// The server; stopped (SIGTERM, then SIGKILL) when dropped.
    process: Watched,
    /// `http://127.0.0.1:PORT`, its API's base.
    url: String,
    /// What it scrapes (`127.0.0.1:PORT`): the `instance` label of every series.
    pub target: String,
}

impl Prometheus {
    /// Writes a config scraping `target` (`host:port`, path `/metrics`) every second into
    /// `dir/prometheus/`, starts the server and waits until it is ready.
    pub fn start(dir: &Path, target: &str) -> Prometheus {
        let home = dir.join("prometheus");
        std::fs::create_dir_all(home.join("data")).expect("prometheus directory");
        let config = home.join("prometheus.yml");
        // One-second scrapes so a rate over a few seconds has samples soon after start.
        let yaml = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: archipel\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(&config, yaml).expect("prometheus config written");
        let port = free_port();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                home.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let process = Watched::spawn(cmd, "prometheus", &dir.join("prometheus.log"));
        let p = Prometheus {
            process,
            url: format!("http://127.0.0.1:{port}"),
            target: target.to_owned(),
        };
        p.wait_for("ready", START_LIMIT, || {
            ureq::get(&format!("{}/-/ready", p.url)).call().is_ok()
        });
        p
    }

    /// Polls `done` every [`POLL`] until it holds; fails the test after `limit`, with the
    /// server's log.
    pub fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "prometheus: not {what} within {}s; log tail:\n{}",
                limit.as_secs(),
                self.process.log_tail(30)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the target was scraped successfully at least `scrapes` times (its
    /// `archipel_build_info` has that many samples in the last minute).
    pub fn wait_scraped(&self, scrapes: usize) {
        let health = || {
            let targets = self.api("/api/v1/targets", &[]);
            targets["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["health"] == "up")
        };
        self.wait_for("scraping its target", START_LIMIT, health);
        let expr = format!(
            "count_over_time(archipel_build_info{{instance=\"{}\"}}[1m])",
            self.target
        );
        self.wait_for(&format!("{scrapes} scrapes in"), START_LIMIT, || {
            self.query(&expr)
                .ok()
                .and_then(|r| r.first()?["value"][1].as_str()?.parse::<f64>().ok())
                .is_some_and(|n| n >= scrapes as f64)
        });
    }

    /// An instant query at the present moment: the result vector, or what the server said
    /// against it (a parse error, an unknown function).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let body = self.get("/api/v1/query", &[("query", expr)])?;
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The values of `label` over the series `selector` picks.
    pub fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>, String> {
        let body = self.get(
            &format!("/api/v1/label/{label}/values"),
            &[("match[]", selector)],
        )?;
        Ok(body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }

    /// `data` of a successful API call; the test fails on any error.
    fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        match self.get(path, query) {
            Ok(body) => body["data"].clone(),
            Err(e) => panic!("prometheus {path}: {e}"),
        }
    }

    /// The whole answer when `status` is `success`, else its `error` (Prometheus answers a
    /// bad query with 400 and a JSON body saying why).
    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let mut request = ureq::get(&format!("{}{path}", self.url))
            .config()
            .http_status_as_error(false)
            .build();
        for (k, v) in query {
            request = request.query(*k, *v);
        }
        let mut answer = request.call().map_err(|e| format!("GET {path}: {e}"))?;
        let text = answer
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("GET {path}: {e}"))?;
        let body: Value =
            serde_json::from_str(&text).map_err(|e| format!("GET {path}: {e}: {text}"))?;
        if body["status"] == "success" {
            Ok(body)
        } else {
            Err(format!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or(&text)
            ))
        }
    }
}
