//! Enqueue latency in `archipel run` itself: 1,000 downlink messages a second for 30 s (each
//! from its own sender) through a real Mosquitto to a radio that is down, then SIGTERM. Two
//! figures: the gateway's own `commit p50/p99` from its final summary (arrival at ingest to
//! commit on disk, its histogram), and, from outside, the time from the bench's publish to the
//! gateway's `queued` line for that message (broker, MQTT, routing, commit, and the activity
//! feed to standard output included).
//!
//! ```text
//! cargo build --release -p archipel-gateway
//! cargo bench -p archipel-e2e --bench enqueue_latency
//! ```
//!
//! Settings: `ARCHIPEL_BENCH_RATE` (1000 msg/s), `ARCHIPEL_BENCH_SECS` (30), `ARCHIPEL_BIN`.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use archipel_e2e::mosquitto::{BrokerOptions, Mosquitto};
use common::{BenchDir, Process, Publisher, Tally, secs, setting};

fn main() {
    let rate: u64 = setting("ARCHIPEL_BENCH_RATE", 1000);
    let duration: u64 = setting("ARCHIPEL_BENCH_SECS", 30);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(rate, duration));
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

async fn bench(rate: u64, duration: u64) {
    let dir = BenchDir::new("bench-latency");
    let store_path = dir.join("store.sqlite");
    let broker = Mosquitto::start(BrokerOptions {
        extra: vec!["max_queued_messages 0".into(), "log_type subscribe".into()],
        ..BrokerOptions::default()
    });
    let config_path = dir.join("gateway.toml");
    let total = rate * duration;
    let config = common::downlink_config(&store_path, broker.port(), total * 2, "");
    std::fs::write(&config_path, config).expect("config written");

    let log = dir.join("gateway.log");
    let gateway = Process::gateway(&config_path, &log);
    broker.wait_log(Duration::from_secs(30), common::is_gateway_subscription);
    // Gateway output on its own thread, so the pipe never fills while the bench publishes.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut tally = Tally::default();
        let mut queued_at: HashMap<u32, Instant> = HashMap::with_capacity(total as usize);
        let deadline = Instant::now() + Duration::from_secs(duration + 120);
        while tally.queued + tally.not_shown < total && Instant::now() < deadline {
            if let Some((at, line)) = gateway.next_line(Duration::from_millis(200)) {
                tally.add(at, &line);
                if let Some(from) = common::queued_sender(&line) {
                    queued_at.insert(from, at);
                }
            }
        }
        let _ = done_rx.recv_timeout(Duration::from_secs(10));
        (gateway, tally, queued_at)
    });

    let mut publisher = Publisher::start(broker.port(), "archipel-bench-pub").await;
    let topic = common::downlink_topic();
    let mut published: Vec<Instant> = Vec::with_capacity(total as usize);
    let payloads: Vec<Vec<u8>> = (0..total).map(common::downlink_envelope).collect();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for payload in payloads {
        ticker.tick().await;
        published.push(Instant::now());
        publisher.publish(&topic, payload).await;
    }
    let offered = started.elapsed();
    let acked = publisher.wait_acked(total, Duration::from_secs(60)).await;
    let _ = done_tx.send(());
    let (gateway, mut tally, queued_at) = tokio::task::spawn_blocking(move || reader.join())
        .await
        .expect("joined")
        .expect("reader");
    let (status, rest) = gateway.terminate(Duration::from_secs(30));
    for (at, line) in &rest {
        tally.add(*at, line);
    }

    let mut latencies: Vec<Duration> = published
        .iter()
        .enumerate()
        .filter_map(|(i, at)| {
            let from = common::downlink_sender(i as u64);
            queued_at
                .get(&from)
                .map(|q| q.saturating_duration_since(*at))
        })
        .collect();
    latencies.sort();
    println!(
        "enqueue latency: {total} downlink messages offered at {rate}/s over {} ({acked} \
         PUBACKed by the broker), {} `queued` lines, {} events not shown; gateway exit \
         {status:?}",
        secs(offered),
        tally.queued,
        tally.not_shown
    );
    match tally
        .summary
        .as_deref()
        .and_then(common::commit_percentiles)
    {
        Some((p50, p99)) => println!(
            "enqueue latency: the gateway's own histogram (arrival at ingest to commit on \
             disk): p50 {p50:.2} ms, p99 {p99:.2} ms"
        ),
        None => println!(
            "enqueue latency: no commit percentiles in the final summary: {:?}",
            tally.summary
        ),
    }
    if !latencies.is_empty() {
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        println!(
            "enqueue latency: from outside (bench publish to the gateway's `queued` line), {} \
             messages: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            latencies.len(),
            ms(at(0.5)),
            ms(at(0.9)),
            ms(at(0.99)),
            ms(at(1.0))
        );
    }
    if let Some(summary) = &tally.summary {
        println!("enqueue latency: gateway's last summary: {summary}");
    }
    let stored = common::queued_in_store(&store_path).await;
    println!(
        "enqueue latency: {} deliveries in the store after the stop",
        stored.values().sum::<u64>()
    );
    drop(broker);
}
