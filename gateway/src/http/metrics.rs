//! `/metrics`: the gateway itself in Prometheus's text format, read from the same counters and
//! snapshot as the page. Labels come only from bounded sets (endpoint and destination names
//! from the configuration, kinds, classes, reasons, frame outcomes); never a node or packet
//! id: per-node detail lives in the status API.
//!
//! The families are built at scrape time from atomics the gateway keeps anyway, and written
//! by the `prometheus` crate's text encoder (escaping, `# HELP`/`# TYPE`, histogram layout).

use std::time::Duration;

use mesh_core::Class;
use prometheus::TextEncoder;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use crate::stats::Stats;
use crate::status::{State, Status, View};

/// The commit latency histogram keeps four buckets per doubling; the metric every second one
/// (two per doubling, 44 buckets from 64 µs to about four minutes): fine enough for a p99,
/// light enough to scrape every few seconds on a Pi.
const LATENCY_STEP: usize = 2;

/// One family being filled.
struct Family(MetricFamily);

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Family {
        let mut f = MetricFamily::default();
        f.set_name(name.to_owned());
        f.set_help(help.to_owned());
        f.set_field_type(kind);
        Family(f)
    }

    fn labels(labels: &[(&str, &str)]) -> Metric {
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name((*k).to_owned());
                    l.set_value((*v).to_owned());
                    l
                })
                .collect(),
        );
        m
    }

    fn counter(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut c = Counter::default();
        c.set_value(value);
        let mut m = Self::labels(labels);
        m.set_counter(c);
        self.0.mut_metric().push(m);
    }

    fn gauge(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut g = Gauge::default();
        g.set_value(value);
        let mut m = Self::labels(labels);
        m.set_gauge(g);
        self.0.mut_metric().push(m);
    }
}

/// All families of one scrape, in the order they are listed.
#[derive(Default)]
struct Scrape(Vec<MetricFamily>);

impl Scrape {
    fn add(&mut self, f: Family) {
        // An empty family (no radio yet, no queue) says nothing; Prometheus wants none.
        if !f.0.get_metric().is_empty() {
            self.0.push(f.0);
        }
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The exposition for `view`, with `status` taken at the same moment.
pub fn render(view: &View, status: &Status) -> String {
    let s = &view.stats;
    let mut out = Scrape::default();
    use MetricType::{COUNTER, GAUGE};

    let mut f = Family::new("archipel_build_info", "The running build.", GAUGE);
    f.gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    out.add(f);

    let endpoints = view.observer.endpoints();
    let mut up = Family::new(
        "archipel_endpoint_up",
        "1 when the endpoint's link is up, 0 when it is down or not up yet.",
        GAUGE,
    );
    let mut reconnects = Family::new(
        "archipel_endpoint_reconnects_total",
        "Times the endpoint came up again after being down.",
        COUNTER,
    );
    let mut heard = Family::new(
        "archipel_heard_total",
        "Packets heard on the endpoint and accepted into the store, by class.",
        COUNTER,
    );
    let mut relayed = Family::new(
        "archipel_relayed_total",
        "Deliveries the destination confirmed.",
        COUNTER,
    );
    let mut ingress_drops = Family::new(
        "archipel_endpoint_dropped_total",
        "Packets the endpoint's ingress dropped (every reason).",
        COUNTER,
    );
    for e in endpoints.all() {
        let labels = [("endpoint", e.name.as_str()), ("kind", e.kind)];
        up.gauge(&labels, f64::from(u8::from(e.state == State::Up)));
        reconnects.counter(&labels, e.reconnects as f64);
        if let Some(c) = s.endpoint(&e.name) {
            for class in Class::ALL {
                heard.counter(
                    &[
                        ("endpoint", e.name.as_str()),
                        ("kind", e.kind),
                        ("class", class.name()),
                    ],
                    Stats::get(&c.heard_by_class[usize::from(class.rank())]) as f64,
                );
            }
            relayed.counter(&labels, Stats::get(&c.relayed) as f64);
            ingress_drops.counter(&labels, Stats::get(&c.dropped) as f64);
        }
    }
    out.add(up);
    out.add(reconnects);
    out.add(heard);
    out.add(relayed);
    out.add(ingress_drops);

    let mut f = Family::new(
        "archipel_duplicates_total",
        "Copies dropped as already seen (the seen-set on (from, id)).",
        COUNTER,
    );
    f.counter(&[], Stats::get(&s.duplicates) as f64);
    out.add(f);

    let mut f = Family::new(
        "archipel_dropped_total",
        "Messages dropped, by reason: ingress reasons (spoofed, rate-limited, undecryptable, hops, admin, key-changed, ...) and the store's (expired, overflow, undeliverable).",
        COUNTER,
    );
    for (reason, n) in s.drop_reasons() {
        f.counter(&[("reason", reason)], n as f64);
    }
    f.counter(&[("reason", "expired")], Stats::get(&s.expired) as f64);
    f.counter(&[("reason", "overflow")], Stats::get(&s.overflowed) as f64);
    f.counter(
        &[("reason", "undeliverable")],
        Stats::get(&s.undeliverable) as f64,
    );
    f.counter(
        &[("reason", "store-error")],
        Stats::get(&s.store_errors) as f64,
    );
    out.add(f);

    let mut depth = Family::new(
        "archipel_queue_depth",
        "Deliveries waiting for the destination.",
        GAUGE,
    );
    let mut oldest = Family::new(
        "archipel_queue_oldest_age_seconds",
        "How long the oldest delivery waiting for the destination has waited.",
        GAUGE,
    );
    for e in endpoints.all() {
        let q = status.queues.iter().find(|q| q.destination == e.name);
        let labels = [("destination", e.name.as_str()), ("kind", e.kind)];
        depth.gauge(&labels, q.map_or(0.0, |q| q.depth as f64));
        oldest.gauge(&labels, q.and_then(|q| q.oldest_age_s).unwrap_or(0.0));
    }
    out.add(depth);
    out.add(oldest);

    out.0.push(commit_latency(s));
    let mut f = Family::new(
        "archipel_store_commits_total",
        "Write transactions committed to the store (a group commit carries many messages).",
        COUNTER,
    );
    f.counter(&[], view.store.commits() as f64);
    out.add(f);

    radios(view, status, &mut out);
    peers(view, &mut out);

    let mut buf = String::new();
    // The encoder fails only on a family without a metric type or on a histogram without
    // buckets, neither of which is built here.
    let _ = TextEncoder::new().encode_utf8(&out.0, &mut buf);
    buf
}

/// `archipel_store_commit_latency_seconds`: from a packet's arrival at ingest to its commit.
fn commit_latency(s: &Stats) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name("archipel_store_commit_latency_seconds".into());
    f.set_help("From a packet's arrival at ingest to its commit on disk (fsync included).".into());
    f.set_field_type(MetricType::HISTOGRAM);
    let mut h = Histogram::default();
    h.set_sample_count(s.commit_latency.count());
    h.set_sample_sum(seconds(s.commit_latency.sum()));
    h.set_bucket(
        s.commit_latency
            .cumulative(LATENCY_STEP)
            .into_iter()
            .map(|(bound, n)| {
                let mut b = Bucket::default();
                b.set_upper_bound(seconds(bound));
                b.set_cumulative_count(n);
                b
            })
            .collect(),
    );
    let mut m = Metric::default();
    m.set_histogram(h);
    f.set_metric(vec![m]);
    f
}

/// The radios: frames by outcome, airtime against the duty-cycle budget, the channel, the
/// governor, the nodes heard.
fn radios(view: &View, status: &Status, out: &mut Scrape) {
    use MetricType::{COUNTER, GAUGE};
    let mut frames = Family::new(
        "archipel_radio_frames_total",
        "Stream API frames on the radio's link, by outcome (received, sent, oversize, truncated, undecodable).",
        COUNTER,
    );
    let mut noise = Family::new(
        "archipel_radio_noise_bytes_total",
        "Bytes from the radio outside frames (its serial log text, line noise).",
        COUNTER,
    );
    let mut handshakes = Family::new(
        "archipel_radio_handshakes_total",
        "Handshakes completed with the radio.",
        COUNTER,
    );
    let mut airtime = Family::new(
        "archipel_airtime_seconds_total",
        "Airtime the gateway put on the radio's channel.",
        COUNTER,
    );
    let mut window = Family::new(
        "archipel_airtime_window_seconds",
        "Airtime spent in the current duty-cycle window.",
        GAUGE,
    );
    let mut budget = Family::new(
        "archipel_airtime_budget_seconds",
        "Airtime the duty-cycle window allows (absent without a legal limit).",
        GAUGE,
    );
    let mut utilization = Family::new(
        "archipel_channel_utilization_ratio",
        "Channel utilisation the radio last reported, 0 to 1.",
        GAUGE,
    );
    let mut holds = Family::new(
        "archipel_governor_holds_total",
        "Times the airtime governor held the radio's queue back.",
        COUNTER,
    );
    let mut nodes = Family::new(
        "archipel_nodes_heard",
        "Nodes the radio heard in the last hour.",
        GAUGE,
    );
    for (name, handle) in &view.radios {
        let r = [("endpoint", name.as_str())];
        let c = handle.counters();
        for (outcome, n) in [
            ("received", &c.frames_in),
            ("sent", &c.frames_out),
            ("oversize", &c.oversize_frames),
            ("truncated", &c.truncated_frames),
            ("undecodable", &c.undecodable_frames),
        ] {
            frames.counter(
                &[("endpoint", name.as_str()), ("outcome", outcome)],
                Stats::get(n) as f64,
            );
        }
        noise.counter(&r, Stats::get(&c.noise_bytes) as f64);
        handshakes.counter(&r, Stats::get(&c.handshakes) as f64);
        if let Some(e) = view.stats.endpoint(name) {
            airtime.counter(&r, Stats::get(&e.airtime_us) as f64 / 1e6);
            window.gauge(&r, seconds(e.governor.window()));
            if let Some(b) = e.governor.budget() {
                budget.gauge(&r, seconds(b));
            }
            if let Some(u) = e.governor.utilization() {
                utilization.gauge(&r, u / 100.0);
            }
            holds.counter(&r, Stats::get(&e.governor.holds) as f64);
        }
        if let Some(radio) = status.radios.iter().find(|s| s.endpoint.name == *name) {
            nodes.gauge(&r, radio.nodes_last_hour as f64);
        }
    }
    for f in [
        frames,
        noise,
        handshakes,
        airtime,
        window,
        budget,
        utilization,
        holds,
        nodes,
    ] {
        out.add(f);
    }
}

/// Neighbour hubs: refusals (a wrong key either way, an unknown key at the listener).
fn peers(view: &View, out: &mut Scrape) {
    let mut refused = Family::new(
        "archipel_peer_refusals_total",
        "Connections to or from the neighbour refused for a key (it presented the wrong one, or refused ours).",
        MetricType::COUNTER,
    );
    for (name, handle) in &view.peers {
        refused.counter(
            &[("endpoint", name.as_str())],
            Stats::get(&handle.counters().refusals) as f64,
        );
    }
    out.add(refused);
    if let Some(a) = &view.acceptor {
        let mut f = Family::new(
            "archipel_peer_unknown_keys_total",
            "Connections to the federation listener that proved a key no [[peer]] lists.",
            MetricType::COUNTER,
        );
        f.counter(&[], Stats::get(&a.unknown_keys) as f64);
        out.add(f);
        let mut f = Family::new(
            "archipel_peer_handshake_failures_total",
            "Connections to the federation listener whose handshake failed: timeout (silent or slow-loris clients, cut at the handshake timeout) or other (broken TLS, lost connections).",
            MetricType::COUNTER,
        );
        f.counter(&[("reason", "timeout")], Stats::get(&a.timeouts) as f64);
        f.counter(&[("reason", "other")], Stats::get(&a.failed) as f64);
        out.add(f);
    }
}
