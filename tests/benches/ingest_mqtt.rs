//! Durable ingest from the MQTT downlink on the real path: 100,000 ServiceEnvelopes (each from
//! its own sender, encrypted with the channel key) wait on a real Mosquitto for the gateway's
//! persistent session; `archipel run` (release) starts, takes them, routes them to a radio that
//! is down, commits each to the store and only then PUBACKs it. Figure: msg/s from the start
//! until all are accepted (the `queued` lines, one per commit; the store is read back after
//! the stop to check the count).
//!
//! ```text
//! cargo build --release -p archipel-gateway
//! cargo bench -p archipel-e2e --bench ingest_mqtt
//! ARCHIPEL_BENCH_BROKER_INFLIGHT=1000 cargo bench -p archipel-e2e --bench ingest_mqtt
//! ```
//!
//! How the backlog is made: the gateway runs once so the broker knows its session and its
//! QoS 1 subscription (seen in the broker's log), stops (SIGTERM: its session stays, clean
//! session is off), the bench publishes the envelopes with QoS 1 and waits for every PUBACK,
//! and the gateway starts again. The broker has `max_queued_messages 0`, or it would keep only
//! 1,000 of them for the offline session.
//!
//! Settings: `ARCHIPEL_BENCH_MESSAGES` (100,000), `ARCHIPEL_BENCH_BROKER_INFLIGHT` (unset:
//! Mosquitto's default `max_inflight_messages` of 20 toward the gateway; `0` lifts the limit),
//! `ARCHIPEL_BENCH_LIMIT_SECS` (300), `ARCHIPEL_BIN`.

mod common;

use std::time::{Duration, Instant};

use archipel_e2e::mosquitto::{BrokerOptions, Mosquitto};
use archipel_e2e::{TempDir, temp_dir};
use common::{Process, Publisher, Tally, rate, secs, setting};

fn main() {
    let messages: u64 = setting("ARCHIPEL_BENCH_MESSAGES", 100_000);
    let inflight: Option<u64> = std::env::var("ARCHIPEL_BENCH_BROKER_INFLIGHT")
        .ok()
        .and_then(|v| v.parse().ok());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(messages, inflight));
}

async fn bench(messages: u64, inflight: Option<u64>) {
    let dir = TempDir(temp_dir("bench-ingest"));
    let store_path = dir.0.join("store.sqlite");
    let mut extra = vec!["max_queued_messages 0".into(), "log_type subscribe".into()];
    if let Some(n) = inflight {
        extra.push(format!("max_inflight_messages {n}"));
    }
    let broker = Mosquitto::start(BrokerOptions {
        extra,
        ..BrokerOptions::default()
    });
    let config_path = dir.0.join("gateway.toml");
    let config = common::downlink_config(&store_path, broker.port(), messages * 2, "");
    std::fs::write(&config_path, config).expect("config written");
    let inflight_text = match inflight {
        None => "20 (Mosquitto's default)".to_owned(),
        Some(0) => "unlimited".to_owned(),
        Some(n) => n.to_string(),
    };

    // The session and its subscription, then the gateway away.
    let first = Process::gateway(&config_path, &dir.0.join("gateway-1.log"));
    broker.wait_log(Duration::from_secs(30), common::is_gateway_subscription);
    let (status, _) = first.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "first run stopped: {status:?}"
    );

    // The backlog, every message PUBACKed by the broker.
    let mut publisher = Publisher::start(broker.port(), "archipel-bench-pub").await;
    let topic = common::downlink_topic();
    let started = Instant::now();
    for i in 0..messages {
        publisher
            .publish(&topic, common::downlink_envelope(i))
            .await;
    }
    let acked = publisher
        .wait_acked(messages, Duration::from_secs(120))
        .await;
    assert_eq!(acked, messages, "the broker took every downlink message");
    println!(
        "ingest from MQTT: {messages} envelopes ({} bytes each, 60-byte texts) published with \
         QoS 1 for the gateway's offline session in {} ({})",
        common::downlink_envelope(0).len(),
        secs(started.elapsed()),
        rate(messages, started.elapsed())
    );

    // The gateway again: everything it is handed is committed, then PUBACKed.
    let log = dir.0.join("gateway-2.log");
    let start = Instant::now();
    let gateway = Process::gateway(&config_path, &log);
    let pid = gateway.pid();
    let limit = Duration::from_secs(setting("ARCHIPEL_BENCH_LIMIT_SECS", 300));
    let mut tally = Tally::default();
    let deadline = start + limit;
    while tally.queued + tally.not_shown < messages && Instant::now() < deadline {
        if let Some((at, line)) = gateway.next_line(Duration::from_millis(200)) {
            tally.add(at, &line);
        }
    }
    let cpu = common::cpu_time(pid);
    let (status, rest) = gateway.terminate(Duration::from_secs(30));
    for (at, line) in &rest {
        tally.add(*at, line);
    }
    let stored = common::queued_in_store(&store_path).await;
    let stored_count = stored.get("south").copied().unwrap_or(0);

    println!(
        "ingest from MQTT: broker max_inflight_messages {inflight_text}; {} `queued` lines, {} \
         events not shown, {stored_count} deliveries in the store after the stop; gateway \
         exit {status:?}",
        tally.queued, tally.not_shown
    );
    if let Some((first, last)) = tally.queued_span {
        println!(
            "ingest from MQTT: from the gateway's start to the last commit {}: {}",
            secs(last - start),
            rate(stored_count, last - start)
        );
        println!(
            "ingest from MQTT: from the first commit to the last {}: {} (first commit {} after \
             the start)",
            secs(last - first),
            rate(stored_count, last - first),
            secs(first - start)
        );
        println!(
            "ingest from MQTT: gateway CPU {} (user+system) over {} of wall clock",
            secs(cpu),
            secs(last - start)
        );
    }
    if let Some(summary) = &tally.summary {
        println!("ingest from MQTT: gateway's last summary: {summary}");
    }
    assert_eq!(
        stored_count,
        messages,
        "every downlink message is in the store; gateway log {}",
        log.display()
    );
    drop(broker);
}
