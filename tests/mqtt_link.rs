//! The MQTT link against a real Mosquitto (Debian's 2.0), each test with its own broker on
//! free loopback ports: delivery only on PUBACK, many publishes in flight, a broker that goes
//! away and comes back, redelivery through the persistent session, refused credentials, TLS
//! with a private CA, and a full event queue (which holds the broker back).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use archipel_adapters::mqtt::{self, MqttConfig, MqttCounters, MqttEvent, MqttHandle, TlsSettings};
use archipel_e2e::mosquitto::{BrokerOptions, Mosquitto, client_tool};
use archipel_e2e::{TempDir, Watched, temp_dir};
use bytes::Bytes;
use mesh_core::DeliveryStatus;
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(15);

/// A link to `port` with quick reconnects, so the tests do not wait long.
fn config(tag: &str, port: u16) -> MqttConfig {
    let mut c = MqttConfig::new(
        tag,
        "127.0.0.1",
        port,
        format!("archipel-{tag}-{}", std::process::id()),
    );
    c.keep_alive = Duration::from_secs(5);
    c.backoff_initial = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(400);
    c.connect_timeout = Duration::from_secs(3);
    c
}

fn start(config: MqttConfig) -> (MqttHandle, mpsc::Receiver<MqttEvent>) {
    mqtt::spawn(config).expect("a valid MQTT config")
}

/// The first event `pick` accepts within `limit`, skipping the others.
async fn wait_for<T>(
    events: &mut mpsc::Receiver<MqttEvent>,
    limit: Duration,
    mut pick: impl FnMut(MqttEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(t) = pick(event) {
                    return t;
                }
            }
            Ok(None) => panic!("the link's event channel closed"),
            Err(_) => panic!("the expected event did not come within {limit:?}"),
        }
    }
}

async fn subscribed(events: &mut mpsc::Receiver<MqttEvent>) {
    let refused = wait_for(events, LIMIT, |e| match e {
        MqttEvent::Subscribed { refused } => Some(refused),
        _ => None,
    })
    .await;
    assert!(refused.is_empty(), "refused subscriptions: {refused:?}");
}

/// The next received message: topic, payload, and the message itself for its ack.
async fn message(events: &mut mpsc::Receiver<MqttEvent>) -> mqtt::Incoming {
    wait_for(events, LIMIT, |e| match e {
        MqttEvent::Message(m) => Some(m),
        _ => None,
    })
    .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_is_delivered_and_subscribers_get_exactly_its_bytes() {
    let broker = Mosquitto::start(BrokerOptions::default());
    let topic = "archipel/test/bytes";
    // An independent subscriber: mosquitto_sub, printing the payload in hex.
    let dir = TempDir(temp_dir("mosquitto-sub"));
    // Line-buffered, or its output only shows when it exits.
    let mut cmd = Command::new("stdbuf");
    cmd.arg("-oL").arg(client_tool("mosquitto_sub"));
    cmd.args(["-d", "-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-q", "1", "-t", topic, "-C", "1", "-F", "%x"]);
    let mut sub = Watched::spawn(cmd, "mosquitto_sub", &dir.0.join("sub.log"));
    loop {
        let (_, line) = sub.next_line(LIMIT).expect("mosquitto_sub subscribes");
        if line.contains("received SUBACK") {
            break;
        }
    }
    let mut receiver_config = config("receiver", broker.port());
    receiver_config.subscriptions = vec!["archipel/test/#".into()];
    let (receiver, mut received) = start(receiver_config);
    subscribed(&mut received).await;

    let (sender, _events) = start(config("sender", broker.port()));
    sender.connected().await.unwrap();
    let payload: Vec<u8> = (0..=255u8).chain([0, 0xff, b'\n']).collect();
    let status = sender
        .publish(topic.into(), Bytes::from(payload.clone()))
        .await;
    assert_eq!(status, DeliveryStatus::Delivered);

    let got = message(&mut received).await;
    assert_eq!(got.topic, topic);
    assert_eq!(&got.payload[..], &payload[..]);
    assert!(!got.duplicate && !got.retained);
    receiver.ack(got.ack);

    let expected = hex(&payload);
    let (status, lines) = sub.wait_exit(LIMIT);
    assert!(
        status.success(),
        "mosquitto_sub failed: {}",
        sub.log_tail(20)
    );
    assert!(
        lines.iter().any(|(_, l)| *l == expected),
        "mosquitto_sub did not print the payload: {lines:?}"
    );
    let counters = sender.counters();
    assert_eq!(MqttCounters::get(&counters.published), 1);
    assert_eq!(MqttCounters::get(&counters.acked), 1);
    sender.shutdown().await;
    receiver.shutdown().await;
    assert_eq!(MqttCounters::get(&receiver.counters().acked_in), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_publishes_are_each_confirmed_by_their_own_puback() {
    let broker = Mosquitto::start(BrokerOptions::default());
    let mut receiver_config = config("many-rx", broker.port());
    receiver_config.subscriptions = vec!["archipel/many/#".into()];
    let (receiver, mut received) = start(receiver_config);
    subscribed(&mut received).await;
    let mut sender_config = config("many-tx", broker.port());
    sender_config.max_inflight = 64;
    let (sender, _events) = start(sender_config);
    sender.connected().await.unwrap();

    // A window of 64, as the gateway's drain keeps.
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500u32 {
        let permit = window.clone().acquire_owned().await.unwrap();
        let sender = sender.clone();
        tasks.spawn(async move {
            let status = sender
                .publish(
                    format!("archipel/many/{}", i % 7),
                    Bytes::from(format!("message {i:03}")),
                )
                .await;
            drop(permit);
            (i, status)
        });
    }
    let mut delivered = 0;
    while let Some(done) = tasks.join_next().await {
        let (i, status) = done.unwrap();
        assert_eq!(status, DeliveryStatus::Delivered, "publish {i}");
        delivered += 1;
    }
    assert_eq!(delivered, 500);
    let counters = sender.counters();
    assert_eq!(MqttCounters::get(&counters.published), 500);
    assert_eq!(
        MqttCounters::get(&counters.acked),
        500,
        "one PUBACK per publish"
    );
    assert_eq!(MqttCounters::get(&counters.unreachable), 0);

    let mut seen = BTreeSet::new();
    while seen.len() < 500 {
        let m = message(&mut received).await;
        seen.insert(String::from_utf8(m.payload.to_vec()).unwrap());
        receiver.ack(m.ack);
    }
    let expected: BTreeSet<String> = (0..500).map(|i| format!("message {i:03}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_answers_unreachable_at_once_and_a_restarted_one_is_used_again() {
    let mut broker = Mosquitto::start(BrokerOptions::default());
    let (link, mut events) = start(config("restart", broker.port()));
    link.connected().await.unwrap();
    let topic = || "archipel/restart".to_string();
    assert!(
        link.publish(topic(), Bytes::from_static(b"before"))
            .await
            .is_delivered()
    );

    broker.stop();
    let reason = wait_for(&mut events, LIMIT, |e| match e {
        MqttEvent::Disconnected { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert!(
        reason.contains("closed") || reason.contains("broke"),
        "{reason}"
    );
    let asked = Instant::now();
    let status = link
        .publish(topic(), Bytes::from_static(b"while away"))
        .await;
    assert!(
        matches!(status, DeliveryStatus::Unreachable { .. }),
        "{status:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        asked.elapsed()
    );

    broker.restart();
    wait_for(&mut events, LIMIT, |e| {
        matches!(e, MqttEvent::Connected { .. }).then_some(())
    })
    .await;
    assert!(
        link.publish(topic(), Bytes::from_static(b"after"))
            .await
            .is_delivered()
    );
    assert!(MqttCounters::get(&link.counters().connects) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_is_never_delivered_before_its_puback_and_is_unreachable_if_the_link_dies() {
    let mut broker = Mosquitto::start(BrokerOptions::default());
    let (link, _events) = start(config("paused", broker.port()));
    link.connected().await.unwrap();

    broker.pause();
    let held = link.clone();
    let mut pending = tokio::spawn(async move {
        held.publish("archipel/paused".into(), Bytes::from_static(b"one"))
            .await
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut pending)
            .await
            .is_err(),
        "a frozen broker sent no PUBACK, so nothing may be delivered yet"
    );
    broker.resume();
    let status = tokio::time::timeout(LIMIT, pending).await.unwrap().unwrap();
    assert_eq!(status, DeliveryStatus::Delivered);

    broker.pause();
    let held = link.clone();
    let mut pending = tokio::spawn(async move {
        held.publish("archipel/paused".into(), Bytes::from_static(b"two"))
            .await
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut pending)
            .await
            .is_err()
    );
    broker.kill();
    let status = tokio::time::timeout(LIMIT, pending).await.unwrap().unwrap();
    assert!(
        matches!(status, DeliveryStatus::Unreachable { .. }),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacked_message_is_redelivered_after_a_restart_and_an_acked_one_is_not() {
    let broker = Mosquitto::start(BrokerOptions::default());
    let mut c = config("session", broker.port());
    c.subscriptions = vec!["archipel/session/#".into()];
    let (first, mut events) = start(c.clone());
    subscribed(&mut events).await;
    broker.publish_with_client("archipel/session/a", "one", 1);
    broker.publish_with_client("archipel/session/a", "two", 1);
    let one = message(&mut events).await;
    let two = message(&mut events).await;
    assert_eq!(
        (&one.payload[..], &two.payload[..]),
        (&b"one"[..], &b"two"[..])
    );
    first.ack(one.ack);
    drop(two); // stored nowhere: the gateway "crashed" before its commit
    first.shutdown().await;
    assert_eq!(MqttCounters::get(&first.counters().acked_in), 1);

    // The same client id again, as a restarted gateway.
    let (second, mut events) = start(c);
    let present = wait_for(&mut events, LIMIT, |e| match e {
        MqttEvent::Connected { session_present } => Some(session_present),
        _ => None,
    })
    .await;
    assert!(present, "the broker kept the session");
    let again = message(&mut events).await;
    assert_eq!(
        &again.payload[..],
        b"two",
        "only the unacked message comes back"
    );
    assert!(again.duplicate, "redelivered with the DUP flag");
    second.ack(again.ack);
    broker.publish_with_client("archipel/session/a", "three", 1);
    let next = message(&mut events).await;
    assert_eq!(
        &next.payload[..],
        b"three",
        "`one` was acked and is not redelivered"
    );
    second.ack(next.ack);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_with_the_reason_and_retried_with_growing_delays() {
    let broker = Mosquitto::start(BrokerOptions {
        password: Some(("gateway".into(), "right horse battery".into())),
        ..Default::default()
    });
    let mut c = config("password", broker.port());
    c.username = Some("gateway".into());
    c.password = Some("wrong staple".into());
    let (link, mut events) = start(c.clone());
    let mut attempts = Vec::new();
    while attempts.len() < 6 {
        let (reason, retry_in) = wait_for(&mut events, LIMIT, |e| match e {
            MqttEvent::Disconnected { reason, retry_in } => Some((reason, retry_in)),
            _ => None,
        })
        .await;
        attempts.push((Instant::now(), reason, retry_in));
    }
    for (_, reason, _) in &attempts {
        assert!(
            reason.starts_with("the broker refused the connection: not authorised")
                || reason.contains("bad user name or password"),
            "{reason}"
        );
        assert!(
            !reason.contains("wrong staple"),
            "the password leaked: {reason}"
        );
    }
    let delays: Vec<Duration> = attempts.iter().map(|(_, _, d)| *d).collect();
    let ms = |d: Duration| d.as_millis();
    // 50, 100, 200, then the 400 ms cap, each within its jitter (the upper fifth).
    assert!((40..=50).contains(&ms(delays[0])), "{delays:?}");
    assert!((80..=100).contains(&ms(delays[1])), "{delays:?}");
    assert!((160..=200).contains(&ms(delays[2])), "{delays:?}");
    assert!(
        delays[3..].iter().all(|d| (320..=400).contains(&ms(*d))),
        "{delays:?}"
    );
    for pair in attempts.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap + Duration::from_millis(5) >= pair[0].2,
            "retried after {gap:?}: {delays:?}"
        );
    }
    let counters = link.counters();
    assert!(MqttCounters::get(&counters.refused) >= 6);
    assert_eq!(MqttCounters::get(&counters.connects), 0);
    link.shutdown().await;

    c.password = Some("right horse battery".into());
    let (good, _events) = start(c);
    good.connected().await.unwrap();
    good.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_private_ca_connects_and_a_wrong_ca_is_refused_with_the_reason() {
    let broker = Mosquitto::start(BrokerOptions {
        tls: true,
        ..Default::default()
    });
    let mut c = config("tls", broker.tls_port());
    c.tls = Some(TlsSettings {
        ca_file: broker.ca_file(),
    });
    let (link, _events) = start(c.clone());
    tokio::time::timeout(LIMIT, link.connected())
        .await
        .expect("connected over TLS")
        .unwrap();
    assert!(
        link.publish("archipel/tls".into(), Bytes::from_static(b"sealed"))
            .await
            .is_delivered()
    );
    link.shutdown().await;

    c.client_id.push_str("-wrong-ca");
    c.tls = Some(TlsSettings {
        ca_file: broker.unrelated_ca_file(),
    });
    let (wrong, mut events) = start(c);
    let reason = wait_for(&mut events, LIMIT, |e| match e {
        MqttEvent::Disconnected { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert!(
        reason.starts_with("TLS handshake with 127.0.0.1:") && reason.contains("UnknownIssuer"),
        "{reason}"
    );
    assert_eq!(MqttCounters::get(&wrong.counters().connects), 0);
    wrong.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_mqtt_cannot_carry_are_rejected_and_the_link_goes_on() {
    let broker = Mosquitto::start(BrokerOptions::default());
    let mut c = config("reject", broker.port());
    c.max_packet_size = 1024;
    let (link, _events) = start(c);
    link.connected().await.unwrap();
    let wildcard = link
        .publish("archipel/+/x".into(), Bytes::from_static(b"x"))
        .await;
    assert!(
        matches!(wildcard, DeliveryStatus::Rejected { .. }),
        "{wildcard:?}"
    );
    let big = link
        .publish("archipel/big".into(), Bytes::from(vec![0u8; 2000]))
        .await;
    assert!(
        big.reason().is_some_and(|r| r.contains("max_packet_size")),
        "{big:?}"
    );
    assert!(
        link.publish("archipel/ok".into(), Bytes::from_static(b"fine"))
            .await
            .is_delivered()
    );
    assert!(link.lifecycle().is_connected());
    assert_eq!(MqttCounters::get(&link.counters().connects), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_queue_holds_the_broker_back_and_loses_nothing() {
    let broker = Mosquitto::start(BrokerOptions::default());
    let mut c = config("full", broker.port());
    c.subscriptions = vec!["archipel/full/#".into()];
    // Two in the channel and one kept aside: then the link stops reading the socket.
    c.event_capacity = 2;
    let (link, mut events) = start(c);
    subscribed(&mut events).await;
    // Nobody reads the events while these arrive.
    for i in 1..=6 {
        broker.publish_with_client("archipel/full/q0", &format!("q0-{i}"), 0);
    }
    broker.publish_with_client("archipel/full/q1", "sentinel", 1);

    // Reading again: everything, in order, on the same connection.
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("sentinel") {
        let m = message(&mut events).await;
        got.push(String::from_utf8(m.payload.to_vec()).unwrap());
        link.ack(m.ack);
    }
    assert_eq!(
        got,
        ["q0-1", "q0-2", "q0-3", "q0-4", "q0-5", "q0-6", "sentinel"]
    );
    let counters = link.counters();
    assert_eq!(MqttCounters::get(&counters.dropped_qos0), 0);
    assert_eq!(MqttCounters::get(&counters.overflows), 0);
    assert_eq!(MqttCounters::get(&counters.connects), 1, "no reconnect");
    link.shutdown().await;
}
