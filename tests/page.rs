//! The status page in a real browser: Debian's headless Chromium, at a phone's width and a
//! laptop's, reading the page that `archipel run` serves while it bridges two simulated meshes,
//! publishes to a real Mosquitto, and waits for a broker and a neighbour hub that are not there.
//!
//! What is asserted is the live DOM: the overall badge, each radio's card, the links with their
//! state and last error, the queues, the nodes heard (with the names the simulator gave them),
//! the last texts relayed, and a text relayed after the page loaded appearing without a
//! reload. On the phone nothing may scroll sideways: each table row is stacked as label/value
//! lines. No key or password of the configuration may appear on the page or in its API.
//! Each screen leaves a screenshot: `status-phone.png` and `status-desktop.png` in the test's
//! directory, and in `$ARCHIPEL_SCREENSHOTS` when that is set (deploy/screenshots holds the
//! ones the README shows).

use std::path::{Path, PathBuf};

use archipel_adapters::peer::PeerKey;
use archipel_e2e::MeshClient;
use archipel_e2e::bridge::*;
use archipel_e2e::browser::{Browser, Screen};
use archipel_e2e::free_port;
use archipel_e2e::mosquitto::{BrokerOptions, Mosquitto};
use serde_json::Value;

/// The ops channel's key on both meshes, and the south primary's: distinctive, so that any
/// trace of them on the page is found (base64 of `page-test-ops-channel-secret-001` and
/// `page-test-valley-channel-secret2`).
const OPS_PSK: &str = "cGFnZS10ZXN0LW9wcy1jaGFubmVsLXNlY3JldC0wMDE=";
const VALLEY_PSK: &str = "cGFnZS10ZXN0LXZhbGxleS1jaGFubmVsLXNlY3JldDI=";
/// The broker's password, and the one given for the broker that is not there.
const BROKER_PASSWORD: &str = "page-test-broker-password-5b1e";
const OFFSITE_PASSWORD: &str = "page-test-offsite-password-9c2d";

/// The weather station on the north mesh: heard by the gateway, never attached.
const STATION: u32 = 0x0000_f001;

/// Everything the test runs: two meshes, a broker, the gateway, the person on the north mesh.
struct World {
    a2: MeshClient,
    gw: Gateway,
    /// The page's address.
    at: String,
    /// Every secret of the configuration, as written and as the bytes it stands for.
    secrets: Vec<String>,
    _broker: Mosquitto,
    _north: Sim,
    _south: Sim,
    dir: Scratch,
}

fn channels(primary: &str, psk: &str) -> String {
    format!(r#"[ {{ name = "{primary}", psk = "{psk}" }}, {{ name = "ops", psk = "{OPS_PSK}" }} ]"#)
}

impl World {
    fn start(tag: &str) -> World {
        let dir = Scratch::new(tag);
        let ports = Ports::new();
        let north = Sim::start(
            &dir,
            "north",
            &mesh(
                "north",
                "ShortTurbo",
                &channels("Harbour", "AQ=="),
                50.0,
                &[
                    node(A, "North gateway radio", Some(ports.a), None),
                    node(A2, "North person", Some(ports.a2), None),
                    // Its names and battery come over the air, as from any node out there;
                    // every 12 s of real time, so that its packets do not push the texts
                    // out of the page's last 20 relays.
                    node(
                        STATION,
                        "Weather station",
                        None,
                        Some("{ nodeinfo_every_secs = 600.0, telemetry_every_secs = 600.0 }"),
                    ),
                ],
            ),
            2,
        );
        let south = Sim::start(
            &dir,
            "south",
            &mesh(
                "south",
                "ShortFast",
                &channels("Valley", VALLEY_PSK),
                50.0,
                &[
                    node(B, "South gateway radio", Some(ports.b), None),
                    node(B2, "South person", Some(ports.b2), None),
                ],
            ),
            2,
        );
        let a2 = MeshClient::connect("A2", &north.tcp(A2), LIMIT);

        let broker = Mosquitto::start(BrokerOptions {
            password: Some(("archipel".into(), BROKER_PASSWORD.into())),
            ..BrokerOptions::default()
        });
        let secret_file = |name: &str, secret: &str| {
            let path = dir.path(name);
            std::fs::write(&path, format!("{secret}\n")).expect("password file written");
            path.display().to_string()
        };
        let mqtt = |name: &str, port: u16, password_file: String| {
            format!(
                "[[mqtt]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\nusername = \"archipel\"\npassword_file = \"{password_file}\"\n"
            )
        };
        // Nothing listens where the offsite broker and the neighbour hub should be: both show
        // down, with why, and what is routed to the broker waits in its queue.
        let sections = vec![
            radio(
                "north",
                ports.a,
                "ShortTurbo",
                &channels("Harbour", "AQ=="),
                "",
            ),
            radio(
                "south",
                ports.b,
                "ShortFast",
                &channels("Valley", VALLEY_PSK),
                "duty_cycle_percent = 10.0\n",
            ),
            mqtt(
                "broker",
                broker.port(),
                secret_file("broker.password", BROKER_PASSWORD),
            ),
            mqtt(
                "offsite",
                free_port(),
                secret_file("offsite.password", OFFSITE_PASSWORD),
            ),
            format!(
                "[[peer]]\nname = \"valley-hub\"\naddress = \"127.0.0.1:{}\"\nkey = \"{}\"\n",
                free_port(),
                PeerKey::from_bytes([7; 32])
            ),
        ];
        let routes = [
            route("Harbour", &["north"], &["south"], "Valley", ""),
            route("Harbour", &["north"], &["broker", "offsite"], "Harbour", ""),
            route("ops", &["north"], &["south"], "ops", ""),
        ];
        let config = dir.path("gateway.toml");
        let store = dir.path("store.sqlite");
        std::fs::write(&config, gateway_toml(&store, "", &sections, &routes))
            .expect("gateway config written");
        let mut gw = Gateway::start(&dir, &config, None);
        gw.wait_ready(&["north", "south"]);
        gw.wait_endpoint_up(0, "mqtt", "broker");
        let at = gw.http();

        let mut secrets: Vec<String> = [OPS_PSK, VALLEY_PSK, BROKER_PASSWORD, OFFSITE_PASSWORD]
            .map(str::to_owned)
            .into();
        secrets.extend(
            [
                "page-test-ops-channel-secret-001",
                "page-test-valley-channel-secret2",
            ]
            .map(str::to_owned),
        );
        // The hub's private key (made at start, beside the store): each line of its PEM body.
        let identity = std::fs::read_to_string(dir.path("identity.key"))
            .expect("the gateway made its identity key beside the store");
        secrets.extend(
            identity
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_owned),
        );
        World {
            a2,
            gw,
            at,
            secrets,
            _broker: broker,
            _north: north,
            _south: south,
            dir,
        }
    }

    /// A2 says `text` on Harbour; waits until the gateway relayed it south and to the broker.
    fn relay(&mut self, id: u32, text: &str) -> Msg {
        let msg = say(&self.a2, NORTH_PRIMARY, id, text);
        for dest in ["south", "broker"] {
            self.gw.wait(&format!("{text:?} relayed to {dest}"), |l| {
                msg.relayed_to(dest, l)
            });
        }
        msg
    }

    /// `/api/status`, as text and parsed.
    fn api(&self) -> (String, Value) {
        let body = ureq::get(&format!("{}/api/status", self.at))
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_else(|e| panic!("GET /api/status: {e}"));
        let value = serde_json::from_str(&body).expect("/api/status is JSON");
        (body, value)
    }

    fn assert_no_secret(&self, what: &str, text: &str) {
        for secret in &self.secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} shows the secret {secret:?}"
            );
        }
    }
}

/// The page as a person reads it: the header, each radio card's label/value pairs, and each
/// table's rows as (column label, text, shown) cells.
const READ_PAGE: &str = r##"
const text = (e) => e ? e.textContent.trim() : null;
const shown = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== "hidden";
const table = (id) => Array.from(document.querySelectorAll("#" + id + " tbody tr"), (tr) =>
  Array.from(tr.cells, (td) => ({ label: td.dataset.label || null, text: text(td), shown: shown(td) })));
return {
  overall: text(document.getElementById("overall")),
  overall_class: document.getElementById("overall").className,
  title: document.title,
  name: text(document.getElementById("name")),
  problems: Array.from(document.querySelectorAll("#problems li"), text),
  radios: Array.from(document.querySelectorAll("#radios .card"), (card) => {
    const dl = {};
    const dts = card.querySelectorAll("dt");
    for (const dt of dts) dl[text(dt)] = text(dt.nextElementSibling);
    return { name: card.dataset.name, state: text(card.querySelector("h3 .badge")), dl };
  }),
  links: table("links"),
  queues: table("queues"),
  nodes: table("nodes"),
  recent: table("recent"),
};
"##;

/// One table row: its cells by column label.
struct Row(Vec<(String, String, bool)>);

impl Row {
    fn get(&self, label: &str) -> &str {
        self.0
            .iter()
            .find(|(l, _, _)| l == label)
            .map(|(_, t, _)| t.as_str())
            .unwrap_or_else(|| panic!("no {label:?} cell in {:?}", self.0))
    }

    fn shown(&self, label: &str) -> bool {
        self.0.iter().any(|(l, _, s)| l == label && *s)
    }
}

fn rows(page: &Value, table: &str) -> Vec<Row> {
    page[table]
        .as_array()
        .unwrap_or_else(|| panic!("no table {table} in {page}"))
        .iter()
        .map(|tr| {
            Row(tr
                .as_array()
                .expect("cells")
                .iter()
                .map(|c| {
                    (
                        c["label"].as_str().unwrap_or("").to_owned(),
                        c["text"].as_str().unwrap_or("").to_owned(),
                        c["shown"] == true,
                    )
                })
                .collect())
        })
        .collect()
}

fn row<'a>(rows: &'a [Row], label: &str, starts: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.get(label).starts_with(starts))
        .unwrap_or_else(|| {
            panic!(
                "no row whose {label} starts with {starts:?}: {:?}",
                rows.iter().map(|r| &r.0).collect::<Vec<_>>()
            )
        })
}

/// The JavaScript test of "the table `id` has a row whose text contains `needle`".
fn has_row(id: &str, needle: &str) -> String {
    format!(
        "return Array.from(document.querySelectorAll('#{id} tbody tr'), (tr) => tr.textContent).find((t) => t.includes({})) || null;",
        serde_json::to_string(needle).expect("a JSON string")
    )
}

/// Everything on the page that sticks out to the right of the viewport, and how wide the
/// document and each table are against it.
const OVERFLOW: &str = r##"
const w = window.innerWidth;
const d = document.documentElement;
const out = [];
for (const e of document.querySelectorAll("body *")) {
  const r = e.getBoundingClientRect();
  if (r.width > 0 && r.right > w + 0.5) out.push(e.tagName + (e.id ? "#" + e.id : "") + "." + e.className + " right=" + r.right.toFixed(1) + " text=" + e.textContent.slice(0, 40));
}
const tables = Array.from(document.querySelectorAll("table"), (t) => ({
  id: t.id, width: t.getBoundingClientRect().width, scroll: t.scrollWidth, client: t.clientWidth,
  box: t.parentElement.scrollWidth <= t.parentElement.clientWidth,
  thead: getComputedStyle(t.tHead).display,
  before: t.tBodies[0].rows[0] && t.tBodies[0].rows[0].cells[0]
    ? getComputedStyle(t.tBodies[0].rows[0].cells[0], "::before").content : null,
}));
return { inner: w, scroll: d.scrollWidth, out, tables };
"##;

#[test]
fn the_status_page_shows_the_live_hub_on_a_phone_and_a_desktop_without_a_secret() {
    let mut w = World::start("page");
    let hello = w.relay(0x9a9e_0001, "water at the school from noon");
    let screenshots: Option<PathBuf> = std::env::var_os("ARCHIPEL_SCREENSHOTS").map(Into::into);
    for (screen, id) in [(Screen::Phone, 0x9a9e_0101), (Screen::Desktop, 0x9a9e_0201)] {
        let browser = Browser::start(screen);
        browser.goto(&format!("{}/", w.at));
        check_page(&w, &browser, &hello);

        // Live: a text relayed now shows up on the open page, without a reload.
        let marker = browser.eval("window.__loaded = true; return 1;");
        assert_eq!(marker, 1);
        let later = format!("road to the valley open ({})", screen.name());
        w.relay(id, &later);
        browser.wait_for(
            &format!("{later:?} among the last relays"),
            LIMIT,
            &has_row("recent", &later),
        );
        assert_eq!(
            browser.eval("return window.__loaded === true;"),
            true,
            "the page reloaded instead of refreshing"
        );

        if screen == Screen::Phone {
            check_phone_layout(&browser);
        } else {
            check_desktop_layout(&browser);
        }
        let html = browser
            .eval("return document.documentElement.outerHTML;")
            .as_str()
            .unwrap_or_default()
            .to_owned();
        w.assert_no_secret(&format!("the page on the {}", screen.name()), &html);

        let name = format!("status-{}.png", screen.name());
        browser.screenshot(&w.dir.path(&name));
        if let Some(dir) = &screenshots {
            std::fs::create_dir_all(dir).expect("screenshot directory");
            browser.screenshot(&dir.join(&name));
        }
        assert_png(&w.dir.path(&name), screen);
    }
    let (body, _) = w.api();
    w.assert_no_secret("/api/status", &body);
}

/// The page shows what the gateway knows, as the API says it at the same time.
fn check_page(w: &World, browser: &Browser, hello: &Msg) {
    // The first refresh filled the page, and the down links are shown down (not starting).
    browser.wait_for(
        "the page filled in",
        LIMIT,
        "return document.querySelectorAll('#radios .card').length === 2 || null;",
    );
    browser.wait_for(
        "the offsite broker down",
        LIMIT,
        &has_row("links", "offsitemqttdown"),
    );
    // A neighbour never reached is down too, with why its first dial failed.
    browser.wait_for(
        "the neighbour hub down",
        LIMIT,
        &has_row("links", "valley-hubpeerdown"),
    );
    browser.wait_for(
        "the first text relayed",
        LIMIT,
        &has_row("recent", &hello.text),
    );
    // Its names come over the air, from the simulator's NodeInfo broadcasts.
    browser.wait_for(
        "the weather station heard, by name, with its battery",
        LIMIT,
        "const tr = Array.from(document.querySelectorAll('#nodes tbody tr')) \
           .find((tr) => tr.cells[0].textContent.startsWith('Weather station (')); \
         const battery = tr && tr.querySelector('td[data-label=Battery]'); \
         return battery && battery.textContent !== '—' ? battery.textContent : null;",
    );
    let page = browser.eval(READ_PAGE);
    let (_, api) = w.api();
    let what = browser.screen().name();

    // The overall badge: not all up, since two links are down, and each problem said.
    assert_eq!(page["overall"], "needs attention", "{what}: {page}");
    assert!(
        page["overall_class"]
            .as_str()
            .unwrap_or("")
            .contains("down")
    );
    assert_eq!(page["name"], format!("e2e ({GATEWAY_ID})"));
    let problems = page["problems"].to_string();
    assert!(problems.contains("offsite is down"), "{problems}");
    assert!(problems.contains("valley-hub is down"), "{problems}");

    // Each radio's card: up, its node, its preset, its airtime.
    for (name, node, preset) in [("north", A, "US ShortTurbo"), ("south", B, "US ShortFast")] {
        let card = page["radios"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("{what}: no card for radio {name}: {page}"));
        assert_eq!(card["state"], "up", "{card}");
        assert_eq!(
            card["dl"]["Node"],
            format!("{}", mesh_core::NodeId::new(node))
        );
        assert_eq!(card["dl"]["Preset"], preset, "{card}");
        let airtime = card["dl"]["Airtime"].as_str().unwrap_or_default();
        let api_radio = api["radios"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == name))
            .expect("the radio in the API");
        match api_radio["airtime_budget_s"].as_f64() {
            Some(budget) => {
                assert!(
                    airtime.contains(&format!(" s of {budget:.0} s ("))
                        && airtime.ends_with(" s left)"),
                    "{name}: {airtime:?} against a budget of {budget} s"
                );
            }
            None => assert!(airtime.ends_with(" s (no duty-cycle limit)"), "{airtime:?}"),
        }
    }
    let south_budget = api["radios"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "south"))
        .and_then(|r| r["airtime_budget_s"].as_f64());
    assert!(
        south_budget.is_some(),
        "south's duty cycle gives it a budget: {api}"
    );

    // The links: the broker up without an error, the offsite one and the neighbour hub
    // never reached down with why.
    let links = rows(&page, "links");
    let broker = row(&links, "Link", "broker");
    assert_eq!((broker.get("Kind"), broker.get("State")), ("mqtt", "up"));
    assert_eq!(broker.get("Last error"), "—");
    let offsite = row(&links, "Link", "offsite");
    assert_eq!(
        (offsite.get("Kind"), offsite.get("State")),
        ("mqtt", "down")
    );
    let error = offsite.get("Last error");
    let api_error = api["links"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "offsite"))
        .and_then(|l| l["last_error"].as_str())
        .unwrap_or_else(|| panic!("no last error for offsite in the API: {api}"));
    // The same words as the API's: nothing listens there, whichever refresh it was.
    assert_eq!(error, api_error);
    assert!(error.contains("connection refused"), "{error:?}");
    let hub = row(&links, "Link", "valley-hub");
    assert_eq!((hub.get("Kind"), hub.get("State")), ("peer", "down"));
    assert!(
        hub.get("Last error").contains("refused"),
        "{:?}",
        hub.get("Last error")
    );

    // The queues: what waits for the offsite broker, oldest and most urgent.
    let queues = rows(&page, "queues");
    let offsite = row(&queues, "Destination", "offsite");
    let depth: u64 = offsite.get("Waiting").parse().expect("a depth");
    assert!(depth >= 1, "the text waits for the offsite broker");
    assert_ne!(offsite.get("Oldest"), "—");
    assert_eq!(offsite.get("Most urgent"), "channel");
    // (South and the broker may show a packet of the weather station's in flight: only the
    // queue that cannot drain is asserted on.)

    // The nodes heard, with their names from the simulator and what their packets said.
    let nodes = rows(&page, "nodes");
    let station = row(&nodes, "Node", "Weather station (!0000f001)");
    assert!(
        station.get("Last heard").ends_with(" ago"),
        "{:?}",
        station.0
    );
    assert!(station.get("SNR").ends_with(" dB"), "{:?}", station.0);
    let battery = station.get("Battery");
    assert!(
        battery.ends_with(" %") || battery == "powered",
        "{battery:?}"
    );
    let hops = station.get("Hops");
    assert!(hops.parse::<u8>().is_ok(), "{hops:?}");
    row(&nodes, "Node", "North person (!0000a002)");

    // The last relays: the first text, to each destination that took it.
    let recent = rows(&page, "recent");
    for to in ["south #Valley", "broker #Harbour"] {
        let relayed = recent
            .iter()
            .find(|r| r.get("Text") == hello.text && r.get("To") == to)
            .unwrap_or_else(|| panic!("{what}: {:?} to {to} not listed", hello.text));
        assert_eq!(relayed.get("From"), format!("{}", hello.from));
        assert!(relayed.get("When").ends_with(" ago"));
    }
}

/// On a phone: 390 CSS pixels, nothing wider than that, each table row stacked as label/value
/// lines (no header row, the label before each value).
fn check_phone_layout(browser: &Browser) {
    let layout = browser.eval(OVERFLOW);
    assert_eq!(layout["inner"], 390, "the phone's viewport: {layout}");
    let (inner, scroll) = (
        layout["inner"].as_f64().unwrap(),
        layout["scroll"].as_f64().unwrap(),
    );
    assert!(
        scroll <= inner,
        "the page scrolls sideways on a phone: {layout}"
    );
    assert_eq!(
        layout["out"],
        serde_json::json!([]),
        "wider than the phone: {layout}"
    );
    for t in layout["tables"].as_array().expect("tables") {
        assert!(t["width"].as_f64().unwrap() <= inner, "{t}");
        assert!(
            t["scroll"].as_f64().unwrap() <= t["client"].as_f64().unwrap(),
            "{t}"
        );
        assert_eq!(t["box"], true, "the table's box scrolls: {t}");
        assert_eq!(t["thead"], "none", "a phone shows rows, not columns: {t}");
    }
    // Each value beside its label: the links' first cell is preceded by "Link".
    let before = &layout["tables"][0]["before"];
    assert_eq!(before, "\"Link\"", "{layout}");
    let page = browser.eval(READ_PAGE);
    let links = rows(&page, "links");
    let offsite = row(&links, "Link", "offsite");
    assert!(offsite.shown("Last error") && !offsite.shown("Reconnects"));
}

/// On a desktop: the tables are tables, every column shown.
fn check_desktop_layout(browser: &Browser) {
    let layout = browser.eval(OVERFLOW);
    assert_eq!(layout["inner"], 1366, "{layout}");
    for t in layout["tables"].as_array().expect("tables") {
        assert_eq!(t["thead"], "table-header-group", "{t}");
    }
    let page = browser.eval(READ_PAGE);
    let links = rows(&page, "links");
    assert!(row(&links, "Link", "offsite").shown("Reconnects"));
}

/// The screenshot is a PNG as wide as the screen in device pixels.
fn assert_png(path: &Path, screen: Screen) {
    let png = std::fs::read(path).expect("the screenshot");
    // IHDR: the width is the big-endian u32 at byte 16.
    let width = u32::from_be_bytes(png[16..20].try_into().expect("an IHDR"));
    let expected = match screen {
        Screen::Phone => 390 * 2,
        Screen::Desktop => 1366,
    };
    assert_eq!(width, expected, "{}", path.display());
}
