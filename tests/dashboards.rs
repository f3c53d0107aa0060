//! The Grafana dashboards under `dashboards/`, checked without Grafana (not installable here):
//! their structure (every panel placed, titled, on the `datasource` variable, with queries);
//! their types, against Grafana's `@grafana/schema` with `tsc` (`dashboards/check`) when node
//! is installed; and every query of every panel answered with data by a real Prometheus
//! scraping a live `archipel run` between two simulated meshes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use archipel_adapters::peer::PeerKey;
use archipel_e2e::bridge::*;
use archipel_e2e::prometheus::{POLL, Prometheus};
use archipel_e2e::{free_port, run_with_limit, workspace};
use serde_json::Value;

const FILES: [&str; 2] = ["overview.json", "radio.json"];

/// What every panel and query must name as its data source: the dashboard's variable, so one
/// import serves whichever Prometheus the viewer picks.
fn from_variable() -> Value {
    serde_json::json!({"type": "prometheus", "uid": "${datasource}"})
}

/// Variables Grafana itself defines, usable in a query without a template entry.
const BUILT_IN: &[&str] = &["__rate_interval", "__interval", "__range"];

/// The rate window the queries are run with: Grafana's `$__rate_interval` is four scrape
/// intervals at least; ten one-second scrapes leave room for a late one.
const RATE_INTERVAL: &str = "10s";

/// How long every query may take to have data once Prometheus scrapes: a few scrapes.
const DATA_LIMIT: Duration = Duration::from_secs(60);

fn dashboards_dir() -> PathBuf {
    workspace().join("dashboards")
}

fn load(file: &str) -> Value {
    let path = dashboards_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, those inside rows included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// One query of one panel.
struct Query {
    /// `file: panel title (refId)`, for failure messages.
    place: String,
    expr: String,
}

fn queries(file: &str, d: &Value) -> Vec<Query> {
    panels(d)
        .into_iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| Query {
                    place: format!("{file}: {} ({})", p["title"], t["refId"]),
                    expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                })
        })
        .collect()
}

/// The names of `d`'s template variables.
fn variables(d: &Value) -> Vec<&Value> {
    d["templating"]["list"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default()
}

/// `expr` with each `$name` or `${name}` replaced by what `value` makes of the name.
fn rewrite(expr: &str, mut value: impl FnMut(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let (name, after) = match rest.strip_prefix('{') {
            Some(r) => r.split_once('}').unwrap_or((r, "")),
            None => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                rest.split_at(end)
            }
        };
        out.push_str(&value(name));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The variables `expr` refers to.
fn references(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    rewrite(expr, |name| {
        names.push(name.to_owned());
        String::new()
    });
    names
}

/// `expr` with each variable replaced by its value in `values`; a variable `values` does not
/// name fails the test (a query Grafana could not run either).
fn substitute(expr: &str, values: &[(&str, &str)]) -> String {
    rewrite(expr, |name| {
        let value = values.iter().find(|(n, _)| *n == name);
        let (_, value) = value.unwrap_or_else(|| panic!("no value for ${name} in {expr}"));
        (*value).to_owned()
    })
}

#[test]
fn every_panel_is_placed_titled_on_the_datasource_variable_and_has_queries() {
    let mut uids = BTreeSet::new();
    for file in FILES {
        let d = load(file);
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 39),
            "{file}: schemaVersion {}",
            d["schemaVersion"]
        );
        for key in ["uid", "title"] {
            assert!(
                d[key].as_str().is_some_and(|s| !s.is_empty()),
                "{file}: no {key}"
            );
        }
        assert!(uids.insert(d["uid"].to_string()), "{file}: uid shared");

        let vars = variables(&d);
        let datasource = vars.iter().find(|v| v["name"] == "datasource");
        let datasource = datasource.unwrap_or_else(|| panic!("{file}: no datasource variable"));
        assert_eq!(datasource["type"], "datasource", "{file}");
        assert_eq!(datasource["query"], "prometheus", "{file}");
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(
                v["datasource"],
                from_variable(),
                "{file}: variable {}",
                v["name"]
            );
        }
        let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();

        let panels = panels(&d);
        assert!(!panels.is_empty(), "{file}: no panels");
        let mut ids = BTreeSet::new();
        let mut placed: Vec<(&str, [u64; 4])> = Vec::new();
        for p in &panels {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: a panel without a title: {p}");
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: {title}: no id"));
            assert!(ids.insert(id), "{file}: id {id} twice");
            assert!(
                p["type"].as_str().is_some_and(|t| !t.is_empty()),
                "{file}: {title}: no type"
            );
            if p["type"] == "row" {
                continue;
            }
            let g = &p["gridPos"];
            let pos = ["x", "y", "w", "h"].map(|k| {
                g[k].as_u64()
                    .unwrap_or_else(|| panic!("{file}: {title}: gridPos.{k} {g}"))
            });
            let [x, y, w, h] = pos;
            assert!(
                w > 0 && h > 0 && x + w <= 24,
                "{file}: {title}: gridPos {g}"
            );
            for (other, [ox, oy, ow, oh]) in &placed {
                let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
                assert!(apart, "{file}: {title} overlaps {other}");
            }
            placed.push((title, pos));
            assert_eq!(p["datasource"], from_variable(), "{file}: {title}");
            let targets = p["targets"].as_array();
            let targets = targets.unwrap_or_else(|| panic!("{file}: {title}: no targets"));
            assert!(!targets.is_empty(), "{file}: {title}: no targets");
            let mut refs = BTreeSet::new();
            for t in targets {
                let r = t["refId"].as_str().unwrap_or_default();
                assert!(
                    !r.is_empty() && refs.insert(r),
                    "{file}: {title}: refId {r:?}"
                );
                assert_eq!(t["datasource"], from_variable(), "{file}: {title} ({r})");
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(!expr.is_empty(), "{file}: {title} ({r}): no expr");
                for name in references(expr) {
                    assert!(
                        names.contains(&name.as_str()) || BUILT_IN.contains(&name.as_str()),
                        "{file}: {title} ({r}): ${name} is no variable of the dashboard"
                    );
                }
            }
        }
    }
}

/// Whether `dir/node_modules` holds exactly the versions `dir/package.json` pins.
fn installed(dir: &Path) -> bool {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("package.json")).unwrap()).unwrap();
    manifest["devDependencies"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(name, version)| {
            let path = dir.join("node_modules").join(name).join("package.json");
            std::fs::read_to_string(path)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|m| m["version"] == *version)
        })
}

#[test]
fn the_dashboards_type_check_against_grafana_schema_with_tsc() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!(
            "node is not installed: the dashboards are not type-checked (tests/run checks them where node is)"
        );
        return;
    }
    let check = dashboards_dir().join("check");
    if !installed(&check) {
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&check);
        let out = run_with_limit(npm, Duration::from_secs(300), "npm ci");
        assert!(
            out.status.success(),
            "npm ci in {}:\n{}",
            check.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut node = Command::new("node");
    node.arg("check.mjs").current_dir(&check);
    let out = run_with_limit(node, Duration::from_secs(120), "node check.mjs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tsc against @grafana/schema:\n{said}");
    assert!(
        said.contains("overview.json") && said.contains("radio.json"),
        "{said}"
    );
}

fn metrics(at: &str) -> String {
    let mut r = ureq::get(&format!("{at}/metrics"))
        .call()
        .unwrap_or_else(|e| panic!("GET {at}/metrics: {e}"));
    r.body_mut().read_to_string().expect("a text body")
}

/// The gateway of the test: both radios under a duty-cycle limit (so budgets are exported),
/// a federation listener and a neighbour that never calls (so the peer families are too).
fn write_config(bridge: &Bridge) {
    let limit = "duty_cycle_percent = 10.0\n";
    let sections = [
        radio(
            "north",
            bridge.ports.a,
            "ShortTurbo",
            &north_channels(),
            limit,
        ),
        radio(
            "south",
            bridge.ports.b,
            "ShortFast",
            &south_channels(),
            limit,
        ),
        format!("[federation]\nlisten = \"127.0.0.1:{}\"\n", free_port()),
        format!(
            "[[peer]]\nname = \"far-hub\"\nkey = \"{}\"\n",
            PeerKey::from_bytes([9; 32])
        ),
    ];
    let text = gateway_toml(
        &bridge.dir.path("store.sqlite"),
        "",
        &sections,
        &bridge_routes(),
    );
    std::fs::write(&bridge.config, text).expect("gateway config written");
}

#[test]
fn every_panel_query_has_data_in_a_real_prometheus_scraping_a_live_gateway() {
    let bridge = Bridge::start("dashboards", &bridge_routes());
    write_config(&bridge);
    let mut gw = bridge.gateway(None);
    let at = gw.http();

    // Traffic both ways, so every throughput and latency series moves.
    let north = say(&bridge.a2, NORTH_PRIMARY, 0x4e7f_0101, "dashboards north");
    gw.wait("relayed south", |l| north.relayed_to("south", l));
    let south = say(&bridge.b2, SOUTH_PRIMARY, 0x4e7f_0102, "dashboards south");
    gw.wait("relayed north", |l| south.relayed_to("north", l));
    // A radio's channel utilisation reaches the metrics when the gateway next sends through
    // it after the radio reported one (its telemetry, every simulated minute): texts go on
    // south, each waited for, until south's shows.
    let mut sent = 0;
    while !metrics(&at).contains("archipel_channel_utilization_ratio{endpoint=\"south\"}") {
        sent += 1;
        assert!(
            sent <= 30,
            "no channel utilisation after {sent} texts:\n{}",
            metrics(&at)
        );
        let m = say(
            &bridge.a2,
            NORTH_PRIMARY,
            0x4e7f_0200 + sent,
            &format!("dashboards {sent}"),
        );
        gw.wait("relayed south", |l| m.relayed_to("south", l));
    }

    let target = at.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&bridge.dir.0, &target);
    prometheus.wait_scraped(3);

    let dashboards: Vec<(&str, Value)> = FILES.iter().map(|f| (*f, load(f))).collect();
    variables_have_values(&prometheus, &dashboards);

    // Each query under the values a viewer would pick: this gateway or All, one radio, two,
    // or All (Grafana writes a multi-value pick as a regex alternation).
    let mut runs: Vec<Query> = Vec::new();
    for (file, d) in &dashboards {
        for q in queries(file, d) {
            for instance in [target.as_str(), ".*"] {
                for radio in ["south", "(north|south)", ".*"] {
                    let values = [
                        ("__rate_interval", RATE_INTERVAL),
                        ("instance", instance),
                        ("radio", radio),
                    ];
                    runs.push(Query {
                        place: format!("{} [instance {instance}, radio {radio}]", q.place),
                        expr: substitute(&q.expr, &values),
                    });
                }
            }
        }
    }
    runs.sort_by(|a, b| a.expr.cmp(&b.expr));
    runs.dedup_by(|a, b| a.expr == b.expr);

    // Polled until all have data: a rate needs two samples in its window, and a scrape may
    // come late on a busy machine. A query Prometheus refuses fails at once.
    let deadline = Instant::now() + DATA_LIMIT;
    loop {
        let mut empty = Vec::new();
        for q in &runs {
            match prometheus.query(&q.expr) {
                Ok(result) if result.is_empty() => empty.push(q),
                Ok(_) => {}
                Err(e) => panic!("{}: Prometheus refuses `{}`: {e}", q.place, q.expr),
            }
        }
        if empty.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let list: Vec<String> = empty
                .iter()
                .map(|q| format!("{}: {}", q.place, q.expr))
                .collect();
            panic!(
                "no data within {}s for:\n{}\n/metrics:\n{}",
                DATA_LIMIT.as_secs(),
                list.join("\n"),
                metrics(&at)
            );
        }
        std::thread::sleep(POLL);
    }
    eprintln!("{} queries answered with data", runs.len());

    // And nothing the gateway exports is left off both dashboards.
    let exprs: Vec<&str> = runs.iter().map(|q| q.expr.as_str()).collect();
    let exported = metrics(&at);
    for family in exported.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = family.split_once(' ').unwrap_or((family, ""));
        let shown = exprs.iter().any(|e| {
            if kind == "histogram" {
                ["_bucket", "_count", "_sum"]
                    .iter()
                    .any(|s| e.contains(&format!("{name}{s}")))
            } else {
                e.contains(name)
            }
        });
        assert!(shown, "{name} ({kind}) is on no dashboard");
    }
}

/// Each query variable (`label_values(SELECTOR, LABEL)`) lists what it should: this gateway
/// for `instance`, both radios for `radio`.
fn variables_have_values(prometheus: &Prometheus, dashboards: &[(&str, Value)]) {
    for (file, d) in dashboards {
        for v in variables(d).into_iter().filter(|v| v["type"] == "query") {
            let name = v["name"].as_str().unwrap_or_default();
            let query = v["query"].as_str().unwrap_or_default();
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{file}: ${name}: not label_values(...): {query}"));
            let (selector, label) = inner
                .rsplit_once(',')
                .unwrap_or_else(|| panic!("{file}: ${name}: {query}"));
            let selector = substitute(selector.trim(), &[("instance", ".*")]);
            let values = prometheus
                .label_values(label.trim(), &selector)
                .unwrap_or_else(|e| panic!("{file}: ${name}: {query}: {e}"));
            let expected: &[&str] = match name {
                "instance" => &[prometheus.target.as_str()],
                "radio" => &["north", "south"],
                _ => &[],
            };
            assert!(!values.is_empty(), "{file}: ${name} has no values: {query}");
            for e in expected {
                assert!(
                    values.iter().any(|v| v == e),
                    "{file}: ${name} lacks {e}: {values:?}"
                );
            }
        }
    }
}
