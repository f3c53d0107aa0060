//! The HTTP listener end to end: `archipel run` between two `archipel sim` meshes serves its
//! status page, its JSON API and `/metrics`; Debian's `promtool` lints a live scrape;
//! `archipel status` reads the API and exits non-zero naming a radio that is down; an address
//! in use stops the start naming `http.listen`. Nothing shown anywhere carries a key.

use std::net::TcpListener;
use std::process::Command;

use archipel_e2e::bridge::*;
use archipel_e2e::{archipel_bin, run_with_limit};
use serde_json::Value;

/// Every channel key the bridge's configuration holds: none may appear on the page, in the
/// API or in the metrics.
const KEYS: &[&str] = &[OPS_KEY, "simple5", "simple7", "AQ=="];

fn get(url: &str) -> (String, String, String) {
    let mut r = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (kind, policy) = (header("content-type"), header("content-security-policy"));
    let body = r.body_mut().read_to_string().expect("a text body");
    (kind, policy, body)
}

fn no_keys(what: &str, text: &str) {
    for key in KEYS {
        assert!(!text.contains(key), "{what} shows the key {key}:\n{text}");
    }
}

/// `archipel status ARGS`: (exit code, stdout, stderr).
fn status(args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(archipel_bin());
    cmd.arg("status").args(args);
    let out = run_with_limit(cmd, LIMIT, "archipel status");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_running_hub_serves_its_page_its_status_and_metrics_that_promtool_accepts() {
    let bridge = Bridge::start("http-live", &bridge_routes());
    let mut gw = bridge.gateway(None);
    let at = gw.http();
    let hello = say(
        &bridge.a2,
        NORTH_PRIMARY,
        0x4e7f_0001,
        "water at the school",
    );
    bridge.b2.packets_until(LIMIT, |p| hello.is(p));
    gw.wait("relayed", |l| hello.relayed_to("south", l));

    // The page: one self-contained file that may load nothing from elsewhere.
    let (kind, policy, page) = get(&format!("{at}/"));
    assert!(kind.starts_with("text/html"), "{kind}");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "outside asset"
    );
    no_keys("the page", &page);

    // The JSON API: both radios up with what they said, the text among the last relays.
    let (kind, _, body) = get(&format!("{at}/api/status"));
    assert!(kind.starts_with("application/json"), "{kind}");
    no_keys("/api/status", &body);
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["ok"], true, "{body}");
    let radios = s["radios"].as_array().unwrap();
    let north = radios.iter().find(|r| r["name"] == "north").unwrap();
    assert_eq!(north["state"], "up");
    assert_eq!(north["node"], format!("{}", NodeIdText(A)));
    assert_eq!(north["preset"], "ShortTurbo");
    let south = radios.iter().find(|r| r["name"] == "south").unwrap();
    assert!(south["airtime_window_s"].as_f64().unwrap() > 0.0, "{south}");
    let recent = s["recent"].as_array().unwrap();
    assert!(
        recent
            .iter()
            .any(|m| m["text"] == hello.text.as_str() && m["destination"] == "south"),
        "{body}"
    );
    assert!(
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == format!("{}", NodeIdText(A2))),
        "A2 was heard: {body}"
    );

    // The metrics: linted by Prometheus's own tool, bounded labels only.
    let (kind, _, metrics) = get(&format!("{at}/metrics"));
    assert!(kind.starts_with("text/plain"), "{kind}");
    no_keys("/metrics", &metrics);
    let lint = promtool_check(&metrics);
    assert!(lint.0, "promtool check metrics:\n{}\n{metrics}", lint.1);
    for line in [
        "archipel_endpoint_up{endpoint=\"north\",kind=\"radio\"} 1",
        "archipel_relayed_total{endpoint=\"south\",kind=\"radio\"} 1",
        "archipel_heard_total{endpoint=\"north\",kind=\"radio\",class=\"channel\"} 1",
        "archipel_store_commit_latency_seconds_count 1",
        "archipel_store_commit_latency_seconds_bucket{le=\"+Inf\"} 1",
        "archipel_radio_frames_total{endpoint=\"south\",outcome=\"sent\"}",
        "archipel_airtime_window_seconds{endpoint=\"south\"}",
        "archipel_build_info{version=",
        "archipel_dropped_total{reason=\"expired\"} 0",
        "archipel_queue_depth{destination=\"south\",kind=\"radio\"} 0",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
    // No node or packet id in any label: per-node detail is the API's, not Prometheus's.
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("=\"!"), "a node id as a label: {line}");
    }
}

/// The node id as the gateway prints it (`!0000a001`).
struct NodeIdText(u32);

impl std::fmt::Display for NodeIdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "!{:08x}", self.0)
    }
}

/// `promtool check metrics` on `text`: (passed, what it said).
fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tests/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn archipel_status_says_all_is_up_then_exits_non_zero_naming_the_radio_that_went_down() {
    let mut bridge = Bridge::start("http-status", &bridge_routes());
    let mut gw = bridge.gateway(None);
    let at = gw.http();
    let (code, out, err) = status(&["--url", &at]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("all up"), "{out}");
    assert!(out.contains("north up for"), "{out}");

    let mark = gw.mark();
    bridge.stop_south();
    gw.wait_after(mark, "south down", |l| l.contains("radio south down"));
    let (code, out, err) = status(&["--url", &at]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("PROBLEM radio south is down"), "{out}");
    assert!(out.contains("south DOWN"), "{out}");
    no_keys("archipel status", &out);

    // Nobody there: exit 2, saying where it looked.
    drop(gw);
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let (code, _, err) = status(&["--url", &nobody]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&nobody), "{err}");
}

#[test]
fn an_http_address_in_use_stops_the_start_naming_http_listen() {
    let bridge = Bridge::start("http-in-use", &bridge_routes());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = Command::new(archipel_bin());
    cmd.arg("run").arg("--config").arg(&bridge.config);
    cmd.env("ARCHIPEL_HTTP__LISTEN", &addr);
    let out = run_with_limit(cmd, LIMIT, "archipel run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on an address in use");
    assert!(
        err.contains("http.listen") && err.contains(&addr) && err.contains("in use"),
        "{err}"
    );
    // And a host name is refused at check time, naming the key.
    let mut cmd = Command::new(archipel_bin());
    cmd.arg("check-config").arg(&bridge.config);
    cmd.env("ARCHIPEL_HTTP__LISTEN", "localhost:9464");
    let out = run_with_limit(cmd, LIMIT, "archipel check-config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("http.listen") && err.contains("localhost:9464"),
        "{err}"
    );
}
