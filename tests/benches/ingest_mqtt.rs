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
//! ARCHIPEL_BENCH_LIVE=1 cargo bench -p archipel-e2e --bench ingest_mqtt
//! ```
//!
//! How the backlog is made: the gateway runs once so the broker knows its session and its
//! QoS 1 subscription (seen in the broker's log), stops (SIGTERM: its session stays, clean
//! session is off), the bench publishes the envelopes with QoS 1 and waits for every PUBACK,
//! and the gateway starts again. The broker has `max_queued_messages 0`, or it would keep only
//! 1,000 of them for the offline session.
//!
//! With `ARCHIPEL_BENCH_LIVE=1` the gateway stays connected and the bench publishes the same
//! envelopes to it as fast as the broker takes them: the rate of ingest when the flow is live
//! rather than a backlog handed over at a reconnect.
//!
//! Settings: `ARCHIPEL_BENCH_MESSAGES` (100,000), `ARCHIPEL_BENCH_BROKER_INFLIGHT` (unset:
//! Mosquitto's default `max_inflight_messages` of 20 toward the gateway; `0` lifts the limit),
//! `ARCHIPEL_BENCH_BROKER_QUEUE` (Mosquitto's `max_queued_messages`: 0, no limit, unless
//! set; `default` leaves Mosquitto's 1,000), `ARCHIPEL_BENCH_LIMIT_SECS` (300),
//! `ARCHIPEL_BENCH_BROKER_LOG` (a file for the broker's
//! log of every packet), `ARCHIPEL_BIN`.

mod common;

use std::time::{Duration, Instant};

use archipel_e2e::mosquitto::{BrokerOptions, Mosquitto};
use common::{BenchDir, Process, Publisher, Tally, rate, secs, setting};

fn main() {
    let messages: u64 = setting("ARCHIPEL_BENCH_MESSAGES", 100_000);
    let inflight: Option<u64> = std::env::var("ARCHIPEL_BENCH_BROKER_INFLIGHT")
        .ok()
        .and_then(|v| v.parse().ok());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let live = setting("ARCHIPEL_BENCH_LIVE", 0u8) == 1;
    // Exit non-zero only once the bench returned: its broker and directory are gone by then.
    if !runtime.block_on(bench(messages, inflight, live)) {
        std::process::exit(1);
    }
}

/// Runs the bench; false when not every message was stored in time.
async fn bench(messages: u64, inflight: Option<u64>, live: bool) -> bool {
    let dir = BenchDir::new("bench-ingest");
    let store_path = dir.join("store.sqlite");
    let mut extra = vec!["log_type subscribe".to_owned()];
    // Unset: no limit (the default of 1,000 would drop most of an offline backlog).
    let queue = std::env::var("ARCHIPEL_BENCH_BROKER_QUEUE").unwrap_or_else(|_| "0".into());
    if queue != "default" {
        extra.push(format!("max_queued_messages {queue}"));
    }
    if let Some(n) = inflight {
        extra.push(format!("max_inflight_messages {n}"));
    }
    if let Ok(path) = std::env::var("ARCHIPEL_BENCH_BROKER_LOG") {
        // Every packet the broker sends and receives, for looking into the flow afterwards.
        extra.push(format!("log_dest file {path}"));
        extra.push("log_type all".into());
    }
    let broker = Mosquitto::start(BrokerOptions {
        extra,
        ..BrokerOptions::default()
    });
    let config_path = dir.join("gateway.toml");
    let config = common::downlink_config(&store_path, broker.port(), messages * 2, "");
    std::fs::write(&config_path, config).expect("config written");
    let inflight_text = match inflight {
        None => "20 (Mosquitto's default)".to_owned(),
        Some(0) => "unlimited".to_owned(),
        Some(n) => n.to_string(),
    };
    let mode = if live {
        "live (the gateway connected while the bench publishes)"
    } else {
        "backlog (queued on the broker for the gateway's offline session)"
    };
    println!(
        "ingest from MQTT: {mode}; broker max_inflight_messages {inflight_text}, \
         max_queued_messages {queue}"
    );

    // The session and its subscription.
    let first_log = dir.join("gateway-1.log");
    let first = Process::gateway(&config_path, &first_log);
    broker.wait_log(Duration::from_secs(30), common::is_gateway_subscription);
    // Its signal handler is in place once it prints what happens (SIGTERM earlier kills it).
    first.wait_line(Duration::from_secs(30), |l| l.contains("mqtt broker up"));
    let (gateway, log, start) = if live {
        (first, first_log, Instant::now())
    } else {
        // Away while the backlog builds; the broker keeps its session (clean session off).
        let (status, _) = first.terminate(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "first run stopped: {status:?}"
        );
        publish(&broker, messages, "for the gateway's offline session").await;
        let log = dir.join("gateway-2.log");
        let start = Instant::now();
        (Process::gateway(&config_path, &log), log, start)
    };
    let pid = gateway.pid();
    let limit = Duration::from_secs(setting("ARCHIPEL_BENCH_LIMIT_SECS", 300));
    // The gateway's output is tallied on its own thread, so the pipe never fills while the
    // bench publishes (live mode).
    let reader = std::thread::spawn(move || {
        let mut tally = Tally::default();
        let deadline = start + limit;
        while tally.queued + tally.not_shown < messages && Instant::now() < deadline {
            if let Some((at, line)) = gateway.next_line(Duration::from_millis(200)) {
                tally.add(at, &line);
            }
        }
        let cpu = common::cpu_time(pid);
        (gateway, tally, cpu)
    });
    if live {
        publish(&broker, messages, "to the gateway's live session").await;
    }
    let (gateway, mut tally, cpu) = tokio::task::spawn_blocking(move || reader.join())
        .await
        .expect("joined")
        .expect("reader");
    let (status, rest) = gateway.terminate(Duration::from_secs(30));
    for (at, line) in &rest {
        tally.add(*at, line);
    }
    let stored = common::queued_in_store(&store_path).await;
    let stored_count = stored.get("south").copied().unwrap_or(0);

    println!(
        "ingest from MQTT: {} `queued` lines, {} events not shown, {stored_count} deliveries \
         in the store after the stop; the gateway's MQTT link went down {} times; gateway \
         exit {status:?}",
        tally.queued,
        tally.not_shown,
        common::mqtt_reconnects(&log)
    );
    if let Some((first, last)) = tally.queued_span {
        let from = if live {
            "the first publish"
        } else {
            "the gateway's start"
        };
        println!(
            "ingest from MQTT: from {from} to the last commit {}: {}",
            secs(last - start),
            rate(stored_count, last - start)
        );
        println!(
            "ingest from MQTT: from the first commit to the last {}: {} (first commit {} after \
             {from})",
            secs(last - first),
            rate(stored_count, last - first),
            secs(first - start)
        );
        println!(
            "ingest from MQTT: gateway CPU {} (user+system) in all, over {} of wall clock",
            secs(cpu),
            secs(last - start)
        );
    }
    if let Some(summary) = &tally.summary {
        println!("ingest from MQTT: gateway's last summary: {summary}");
    }
    if stored_count != messages {
        println!(
            "ingest from MQTT: NOT DONE: {stored_count} of {messages} stored within {}; gateway \
             log tail:\n{}",
            secs(limit),
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
        return false;
    }
    drop(broker);
    true
}

/// Publishes the downlink envelopes with QoS 1 and waits for every PUBACK from the broker.
async fn publish(broker: &Mosquitto, messages: u64, whom: &str) {
    let mut publisher = Publisher::start(broker.port(), "archipel-bench-pub").await;
    let topic = common::downlink_topic();
    let started = Instant::now();
    for i in 0..messages {
        publisher
            .publish(&topic, common::downlink_envelope(i))
            .await;
    }
    let acked = publisher
        .wait_acked(messages, Duration::from_secs(300))
        .await;
    assert_eq!(acked, messages, "the broker took every downlink message");
    publisher.disconnect().await;
    println!(
        "ingest from MQTT: {messages} envelopes ({} bytes each, 60-byte texts) published with \
         QoS 1 {whom} in {} ({})",
        common::downlink_envelope(0).len(),
        secs(started.elapsed()),
        rate(messages, started.elapsed())
    );
}
