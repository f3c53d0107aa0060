//! `deploy/stack`, the newcomer's one command for the whole hub: it starts Debian's Mosquitto,
//! Prosody and Prometheus, the simulator and the gateway on loopback, says "stack up" once the
//! gateway reports every endpoint up, and stops everything on SIGTERM.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use archipel_e2e::{Running, TempDir, archipel_bin, temp_dir};
use serde_json::Value;

/// Building nothing, starting four servers: well within this on a loaded machine.
const LIMIT: Duration = Duration::from_secs(90);

fn json(url: &str) -> Value {
    ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_json()
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// The address printed after `label` on the "stack up" lines.
fn address(lines: &[String], label: &str) -> String {
    lines
        .iter()
        .find_map(|l| {
            let rest = l.split_once(label)?.1.trim_start();
            rest.split_whitespace().next().map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no {label} in {lines:#?}"))
        .trim_end_matches('/')
        .to_owned()
}

#[test]
fn deploy_stack_starts_every_service_with_the_gateway_up_on_all_and_stops_them_all() {
    let dir = TempDir(temp_dir("stack"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/stack");
    let mut cmd = Command::new("bash");
    cmd.arg(script).arg("--dir").arg(&dir.0);
    cmd.env("ARCHIPEL_BIN", archipel_bin());
    let stack = Running::spawn(cmd, "deploy/stack");
    stack.wait_line(LIMIT, |l| l.contains("stack up").then_some(()));
    let mut lines = Vec::new();
    while lines.len() < 5 {
        lines.push(stack.wait_line(LIMIT, |l| Some(l.to_owned())));
    }
    let page = address(&lines, "status page");
    let prometheus = address(&lines, "prometheus");

    let status = json(&format!("{page}/api/status"));
    assert_eq!(status["ok"], true, "{status}");
    let kinds: Vec<&str> = status["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "up")
        .filter_map(|l| l["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["mqtt", "xmpp"], "{status}");
    assert_eq!(status["radios"].as_array().unwrap().len(), 2);

    // Prometheus scrapes the gateway: its target is up.
    let deadline = Instant::now() + LIMIT;
    loop {
        let up = json(&format!(
            "{prometheus}/api/v1/query?query=up%7Bjob%3D%22archipel%22%7D"
        ));
        if up["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the gateway: {up}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    assert!(stack.stop(), "deploy/stack did not stop cleanly on SIGTERM");
    // Everything it started is gone with it.
    let port = |url: &str| url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    for url in [&page, &prometheus] {
        assert!(
            TcpStream::connect(("127.0.0.1", port(url))).is_err(),
            "{url} still answers after the stack stopped"
        );
    }
    // The generated configs are what a newcomer reads next: kept with --dir, valid.
    let gateway = dir.0.join("gateway.toml");
    let (ok, out) = {
        let out = Command::new(archipel_bin())
            .arg("check-config")
            .arg(&gateway)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(ok, "{out}");
}
