//! `archipel status`: what the status page shows, as text for an operator on SSH, read from
//! the running gateway's JSON API. Exits 0 when every endpoint is up, 1 when something is
//! down (named), 2 when the gateway cannot be reached: a script or a phone call can act on it.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use archipel_gateway::config::DEFAULT_LISTEN;
use archipel_gateway::escape::escape;
use serde_json::Value;

/// How long the gateway may take to answer: it answers from memory and one store read.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the API is: `url`, else the config's `[http] listen`, else the default address.
pub fn address(url: Option<&str>, config: Option<&Path>) -> anyhow::Result<String> {
    if let Some(url) = url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let listen = match config {
        Some(path) => crate::run::load(path)?.http.listen,
        None => DEFAULT_LISTEN.to_owned(),
    };
    let mut addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| anyhow::anyhow!("http.listen `{listen}` is not IP:PORT"))?;
    // A gateway listening on every interface answers on loopback too.
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(format!("http://{addr}"))
}

/// Fetches and prints the status; the exit code says whether all is well.
pub fn run(url: Option<&str>, config: Option<&Path>) -> ExitCode {
    let base = match address(url, config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .build()
        .new_agent();
    let status: Value = match agent
        .get(format!("{base}/api/status"))
        .call()
        .and_then(|mut r| r.body_mut().read_json())
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "error: no answer from the gateway at {base} ({e}): is `archipel run` running, and is this its [http] listen address? (--url or --config tell another)"
            );
            return ExitCode::from(2);
        }
    };
    print!("{}", render(&status));
    if status["ok"].as_bool() == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        // Names, node names and errors quote meshes and servers: one escaping everywhere.
        Value::String(s) => escape(s).into_owned(),
        other => other.to_string(),
    }
}

fn age(v: &Value, now: i64) -> String {
    match v.as_i64() {
        Some(t) => span(((now - t).max(0) as f64) / 1000.0),
        None => "-".into(),
    }
}

fn span(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The status as lines of text.
pub fn render(s: &Value) -> String {
    let mut out = String::new();
    let now = s["gateway"]["now"].as_i64().unwrap_or(0);
    let started = s["gateway"]["started_at"].as_i64().unwrap_or(now);
    let _ = writeln!(
        out,
        "gateway {} ({}), archipel {}, up {}: {}",
        text(&s["gateway"]["name"]),
        text(&s["gateway"]["id"]),
        text(&s["gateway"]["version"]),
        span(((now - started).max(0) as f64) / 1000.0),
        if s["ok"].as_bool() == Some(true) {
            "all up"
        } else {
            "NEEDS ATTENTION"
        }
    );
    for p in list(&s["problems"]) {
        let _ = writeln!(out, "PROBLEM {}", text(p));
    }
    let state = |e: &Value| -> String {
        let st = e["state"].as_str().unwrap_or("?");
        let since = if e["since"].is_null() {
            String::new()
        } else {
            format!(" for {}", age(&e["since"], now))
        };
        match st {
            "down" => format!("DOWN{since} ({})", text(&e["last_error"])),
            "starting" => "not up yet".into(),
            other => format!("{other}{since}"),
        }
    };
    let _ = writeln!(out, "radios:");
    if list(&s["radios"]).is_empty() {
        let _ = writeln!(out, "  none");
    }
    for r in list(&s["radios"]) {
        let budget = match r["airtime_budget_s"].as_f64() {
            Some(b) => format!(
                "airtime {:.1} s of {b:.0} s in the window",
                r["airtime_window_s"].as_f64().unwrap_or(0.0)
            ),
            None => format!(
                "airtime {:.1} s in the window (no limit)",
                r["airtime_window_s"].as_f64().unwrap_or(0.0)
            ),
        };
        let util = r["channel_utilization"]
            .as_f64()
            .map(|u| format!(", channel {u:.1} % busy"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} {}: node {}, {} {}, {budget}{util}, held {} times, {} nodes in the last hour",
            text(&r["name"]),
            state(r),
            text(&r["node"]),
            text(&r["region"]),
            text(&r["preset"]),
            r["governor_holds"],
            r["nodes_last_hour"],
        );
    }
    let _ = writeln!(out, "links:");
    if list(&s["links"]).is_empty() {
        let _ = writeln!(out, "  none");
    }
    for l in list(&s["links"]) {
        let _ = writeln!(
            out,
            "  {} {} {}, reconnected {} times",
            text(&l["kind"]),
            text(&l["name"]),
            state(l),
            l["reconnects"]
        );
    }
    let _ = writeln!(out, "queues:");
    if list(&s["queues"]).is_empty() {
        let _ = writeln!(out, "  nothing waiting");
    }
    for q in list(&s["queues"]) {
        let _ = writeln!(
            out,
            "  {} {} waiting, oldest {}, most urgent {}",
            text(&q["destination"]),
            q["depth"],
            q["oldest_age_s"]
                .as_f64()
                .map(span)
                .unwrap_or_else(|| "-".into()),
            text(&q["most_urgent"])
        );
    }
    let t = &s["totals"];
    let _ = writeln!(
        out,
        "totals: relayed {}, deduplicated {}, dropped {}, expired {}, overflowed {}, undeliverable {}, waiting {}",
        t["relayed"],
        t["duplicates"],
        t["dropped"],
        t["expired"],
        t["overflowed"],
        t["undeliverable"],
        t["queued"]
    );
    let _ = writeln!(out, "nodes heard: {}", list(&s["nodes"]).len());
    for n in list(&s["nodes"]).iter().take(10) {
        let _ = writeln!(
            out,
            "  {} {} heard {} ago, {} hops, SNR {}, battery {}",
            text(&n["id"]),
            text(&n["name"]),
            age(&n["last_heard_at"], now),
            text(&n["hops"]),
            text(&n["snr"]),
            text(&n["battery"])
        );
    }
    out
}
