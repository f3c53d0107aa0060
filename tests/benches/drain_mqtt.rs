//! Drain to MQTT on the real path: a store prefilled with 100,000 queued 60-byte texts for an
//! MQTT destination, then `archipel run` (release) starts with a real Mosquitto up, and a QoS 1
//! subscriber of the bench's own receives them. Figures: msg/s from the gateway's start and
//! from the first message to the last, every one PUBACK-confirmed (the store is empty at the
//! end, read back after the gateway stopped).
//!
//! ```text
//! cargo build --release -p archipel-gateway
//! cargo bench -p archipel-e2e --bench drain_mqtt
//! ARCHIPEL_BENCH_MESSAGES=20000 cargo bench -p archipel-e2e --bench drain_mqtt
//! ```
//!
//! The backlog is made the way the gateway makes it: the config is loaded with the gateway's
//! own loader, each packet is routed by the same [`Router`] the binary builds from it (heard on
//! radio `north`, routed to the broker), and the deliveries are accepted into the store in
//! batches of 1,000. The radio is configured on a closed port: it stays down and sends nothing.
//!
//! Settings: `ARCHIPEL_BENCH_MESSAGES` (100,000), `ARCHIPEL_BENCH_LIMIT_SECS` (300: the bench
//! gives up past it), `ARCHIPEL_BIN` (target/release/archipel).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use archipel_e2e::mosquitto::{BrokerOptions, Mosquitto};
use common::{BenchDir, Process, Subscriber, Tally, closed_port, rate, secs, setting};
use mesh_core::envelope::Envelope;

fn main() {
    let messages: u64 = setting("ARCHIPEL_BENCH_MESSAGES", 100_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(messages));
}

fn config(store: &std::path::Path, broker: u16, messages: u64) -> String {
    format!(
        r#"[gateway]
name = "drain-bench"
id = "{id}"

[store]
path = "{store}"
max_queue_per_destination = {cap}

[[radio]]
name = "north"
tcp = "127.0.0.1:{radio}"
region = "EU_868"
preset = "LongFast"
channels = [ {{ name = "LongFast", psk = "default" }} ]

[[mqtt]]
name = "broker"
address = "127.0.0.1:{broker}"

[[route]]
channel = "LongFast"
from = ["north"]
to = ["broker"]
one_way = true
"#,
        id = common::GATEWAY_ID,
        store = store.display(),
        cap = messages.max(10_000) * 2,
        radio = closed_port(),
    )
}

async fn bench(messages: u64) {
    let dir = BenchDir::new("bench-drain");
    let store_path = dir.join("store.sqlite");
    let broker = Mosquitto::start(BrokerOptions {
        extra: vec!["max_queued_messages 0".into()],
        ..BrokerOptions::default()
    });
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, config(&store_path, broker.port(), messages))
        .expect("config written");

    let started = Instant::now();
    common::backlog::prefill(&config_path, &store_path, "north", "LongFast", messages).await;
    let prefill_time = started.elapsed();
    let queued = common::queued_in_store(&store_path).await;
    assert_eq!(
        queued.get("broker").copied(),
        Some(messages),
        "prefilled queue"
    );
    println!(
        "drain to MQTT: {messages} texts of {} bytes queued for the broker in {} ({} store bytes)",
        common::PAYLOAD,
        secs(prefill_time),
        common::store_bytes(&store_path)
    );

    let mut subscriber =
        Subscriber::start(broker.port(), &format!("{}/2/e/LongFast/#", common::ROOT)).await;
    let log = dir.join("gateway.log");
    let start = Instant::now();
    let gateway = Process::gateway(&config_path, &log);
    let pid = gateway.pid();
    let limit = Duration::from_secs(setting("ARCHIPEL_BENCH_LIMIT_SECS", 300));
    // The gateway's output is read on its own thread; tally it there so the pipe never fills.
    let (tally_tx, tally_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut tally = Tally::default();
        let deadline = Instant::now() + limit;
        while tally.relayed + tally.not_shown < messages && Instant::now() < deadline {
            if let Some((at, line)) = gateway.next_line(Duration::from_millis(200)) {
                tally.add(at, &line);
            }
        }
        let _ = tally_tx.send(());
        (gateway, tally)
    });
    let got = subscriber.wait_for(messages, limit).await;
    let cpu_at_last = common::cpu_time(pid);
    // Every delivery confirmed in the store: the gateway prints `relayed` after the confirm.
    let _ = tokio::task::spawn_blocking(move || tally_rx.recv_timeout(limit)).await;
    let (gateway, mut tally) = reader.join().expect("reader");
    let (status, rest) = gateway.terminate(Duration::from_secs(30));
    for (at, line) in &rest {
        tally.add(*at, line);
    }

    let received = subscriber.take();
    assert!(
        !received.is_empty(),
        "nothing reached the subscriber; gateway log in {}",
        log.display()
    );
    let mut seen = HashSet::new();
    for (_, payload) in &received {
        let envelope = Envelope::decode(payload).expect("an envelope");
        seen.insert((envelope.packet.from(), envelope.packet.id()));
    }
    let (first, last) = (received[0].0, received[received.len() - 1].0);
    let left = common::queued_in_store(&store_path).await;
    println!(
        "drain to MQTT: {got} received ({} distinct, {} repeats) by a QoS 1 subscriber on \
         Mosquitto",
        seen.len(),
        received.len() - seen.len()
    );
    println!(
        "drain to MQTT: from the gateway's start to the last message {}: {}",
        secs(last - start),
        rate(seen.len() as u64, last - start)
    );
    println!(
        "drain to MQTT: from the first message to the last {}: {} (first message {} after \
         the start)",
        secs(last - first),
        rate(seen.len() as u64, last - first),
        secs(first - start)
    );
    if let Some((_, last_relayed)) = tally.relayed_span {
        println!(
            "drain to MQTT: last delivery confirmed in the store (its `relayed` line) {} after \
             the start: {}; {} `relayed` lines, {} events not shown",
            secs(last_relayed - start),
            rate(messages, last_relayed - start),
            tally.relayed,
            tally.not_shown
        );
    }
    println!(
        "drain to MQTT: gateway CPU {} (user+system) until the last message, over {} of wall \
         clock",
        secs(cpu_at_last),
        secs(last - start)
    );
    println!(
        "drain to MQTT: store after stop: {} deliveries left ({:?}); gateway exit {status:?}",
        left.values().sum::<u64>(),
        left
    );
    if let Some(summary) = &tally.summary {
        println!("drain to MQTT: gateway's last summary: {summary}");
    }
    assert_eq!(seen.len() as u64, messages, "every message arrived");
    assert!(left.is_empty(), "the store is empty after the drain");
    drop(broker);
}
