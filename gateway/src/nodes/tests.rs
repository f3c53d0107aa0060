use std::sync::Arc;
use std::time::{Duration, Instant};

use archipel_adapters::radio::RadioInfo;
use mesh_core::{NodeId, Packet, proto};
use prost::Message;

use super::*;

const AMIRA: NodeId = NodeId::new(0xa1b2_c3d4);
const WALL: Millis = 1_800_000_000_000;
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn packet(from: NodeId, hop_start: u32, hop_limit: u32, data: proto::Data) -> Packet {
    Packet::from_data(
        proto::MeshPacket {
            from: from.get(),
            to: NodeId::BROADCAST.get(),
            id: 7,
            hop_start,
            hop_limit,
            rx_snr: 6.25,
            ..Default::default()
        },
        data,
    )
}

fn text(from: NodeId) -> Packet {
    packet(
        from,
        3,
        1,
        proto::Data {
            portnum: proto::PortNum::TextMessageApp as i32,
            payload: b"hi".to_vec(),
            ..Default::default()
        },
    )
}

fn user(long: &str, short: &str) -> proto::User {
    proto::User {
        id: AMIRA.to_string(),
        long_name: long.into(),
        short_name: short.into(),
        hw_model: proto::HardwareModel::HeltecV3 as i32,
        public_key: vec![9; 32],
        ..Default::default()
    }
}

fn node_info(from: NodeId, u: proto::User) -> Packet {
    packet(
        from,
        3,
        3,
        proto::Data {
            portnum: proto::PortNum::NodeinfoApp as i32,
            payload: u.encode_to_vec(),
            ..Default::default()
        },
    )
}

fn telemetry(from: NodeId, level: Option<u32>, voltage: Option<f32>) -> Packet {
    let t = proto::Telemetry {
        variant: Some(proto::telemetry::Variant::DeviceMetrics(
            proto::DeviceMetrics {
                battery_level: level,
                voltage,
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    packet(
        from,
        3,
        1,
        proto::Data {
            portnum: proto::PortNum::TelemetryApp as i32,
            payload: t.encode_to_vec(),
            ..Default::default()
        },
    )
}

fn heard(node: &mut Node, p: &Packet, at: Instant) {
    assert!(!node.observe("north", p, at, WALL), "no key change");
}

#[test]
fn a_display_name_is_the_long_name_else_the_short_name_else_the_number() {
    let mut n = Node::new(AMIRA);
    assert_eq!(n.display_name(), "!a1b2c3d4");
    n.user = Some(NodeUser::from_proto(&user("", "AMI")));
    assert_eq!(n.display_name(), "AMI");
    n.user = Some(NodeUser::from_proto(&user("Amira", "AMI")));
    assert_eq!(n.display_name(), "Amira");
    n.user = Some(NodeUser::from_proto(&user("  \u{7}  ", "")));
    assert_eq!(
        n.display_name(),
        "!a1b2c3d4",
        "control characters are no name"
    );
}

#[test]
fn the_status_line_says_what_is_known_in_sensible_units() {
    let t = Instant::now();
    let mut n = Node::new(AMIRA);
    assert_eq!(n.status_line(t), "not heard yet");
    heard(&mut n, &text(AMIRA), t);
    heard(&mut n, &telemetry(AMIRA, Some(81), Some(3.9)), t);
    assert_eq!(n.status_line(t), "heard just now, 2 hops, battery 81 %");
    assert_eq!(
        n.status_line(t + 4 * MIN + Duration::from_secs(59)),
        "heard 4 min ago, 2 hops, battery 81 %"
    );
    n.hops_away = Some(0);
    n.battery_level = Some(101);
    assert_eq!(
        n.status_line(t + Duration::from_secs(12)),
        "heard 12 s ago, direct, on external power"
    );
    n.hops_away = None;
    n.battery_level = None;
    assert_eq!(n.status_line(t + 3 * HOUR), "heard 3 h ago, battery 3.90 V");
    n.voltage = None;
    assert_eq!(n.status_line(t + 50 * HOUR), "heard 2 d ago");
}

#[test]
fn durations_round_down_to_their_unit() {
    assert_eq!(ago(Duration::from_millis(59_999)), "59 s");
    assert_eq!(ago(MIN), "1 min");
    assert_eq!(ago(HOUR - Duration::from_secs(1)), "59 min");
    assert_eq!(ago(HOUR), "1 h");
    assert_eq!(ago(47 * HOUR + 59 * MIN), "47 h");
    assert_eq!(ago(48 * HOUR), "2 d");
}

#[test]
fn a_node_is_available_for_two_hours_after_it_was_heard_and_away_before_and_after() {
    let t = Instant::now();
    let mut n = Node::new(AMIRA);
    assert_eq!(
        n.presence(t, DEFAULT_AWAY_AFTER),
        Presence::Away,
        "never heard"
    );
    assert_eq!(n.away_at(DEFAULT_AWAY_AFTER), None);
    heard(&mut n, &text(AMIRA), t);
    assert_eq!(n.presence(t, DEFAULT_AWAY_AFTER), Presence::Available);
    assert_eq!(
        n.presence(t + 2 * HOUR, DEFAULT_AWAY_AFTER),
        Presence::Available
    );
    assert_eq!(
        n.presence(t + 2 * HOUR + Duration::from_millis(1), DEFAULT_AWAY_AFTER),
        Presence::Away
    );
    assert_eq!(n.away_at(DEFAULT_AWAY_AFTER), Some(t + 2 * HOUR));
}

#[test]
fn the_waiting_line_names_the_radio_and_when_it_was_heard() {
    let t = Instant::now();
    let mut n = Node::new(AMIRA);
    assert_eq!(
        n.waiting_line(t),
        "waiting for radio !a1b2c3d4 (never heard)"
    );
    n.user = Some(NodeUser::from_proto(&user("Amira", "AMI")));
    assert_eq!(
        n.waiting_line(t),
        "waiting for Amira's radio (!a1b2c3d4 never heard)"
    );
    heard(&mut n, &text(AMIRA), t);
    assert_eq!(
        n.waiting_line(t + 3 * HOUR + 20 * MIN),
        "waiting for Amira's radio (!a1b2c3d4 last heard 3 h ago)"
    );
}

#[test]
fn a_packet_tells_hops_snr_names_and_battery_and_an_unknown_hop_start_is_no_hop_count() {
    let t = Instant::now();
    let mut n = Node::new(AMIRA);
    heard(&mut n, &text(AMIRA), t);
    assert_eq!(
        (n.hops_away, n.snr, n.heard_by.as_deref(), n.last_heard_at),
        (Some(2), Some(6.25), Some("north"), Some(WALL))
    );
    let old_firmware = packet(AMIRA, 0, 3, proto::Data::default());
    heard(&mut n, &old_firmware, t);
    assert_eq!(n.hops_away, Some(2), "hop_start 0 is unknown, not a count");
    heard(&mut n, &node_info(AMIRA, user("Amira", "AMI")), t);
    let u = n.user.clone().unwrap();
    assert_eq!(
        (
            u.long_name.as_str(),
            u.short_name.as_str(),
            u.hw_model.as_str()
        ),
        ("Amira", "AMI", "HELTEC_V3")
    );
    assert_eq!(u.public_key, vec![9; 32]);
    assert_eq!(
        n.hops_away,
        Some(0),
        "hop_start 3, hop_limit 3: heard directly"
    );
    heard(&mut n, &telemetry(AMIRA, Some(55), Some(3.7)), t);
    assert_eq!((n.battery_level, n.voltage), (Some(55), Some(3.7)));
}

#[test]
fn the_first_public_key_seen_is_kept_and_a_node_info_changing_or_emptying_it_is_refused() {
    let t = Instant::now();
    let mut n = Node::new(AMIRA);
    let mut keyless = user("Amira", "AMI");
    keyless.public_key.clear();
    heard(&mut n, &node_info(AMIRA, keyless.clone()), t);
    // A node first seen without a key learns one: that is its first key.
    heard(&mut n, &node_info(AMIRA, user("Amira", "AMI")), t);
    heard(&mut n, &node_info(AMIRA, user("Amira K", "AMK")), t);
    assert_eq!(
        n.user.as_ref().unwrap().long_name,
        "Amira K",
        "names may change"
    );
    let mut other = user("Amira", "AMI");
    other.public_key = vec![7; 32];
    for forged in [other, keyless] {
        assert!(n.observe("north", &node_info(AMIRA, forged), t, WALL));
        let u = n.user.clone().unwrap();
        assert_eq!(u.public_key, vec![9; 32], "the first key stays");
    }
    // The directory says so to the ingest that heard it.
    let dir = NodeDirectory::new(16, HOUR);
    assert!(!dir.heard("north", &node_info(AMIRA, user("Amira", "AMI")), t, WALL));
    let mut other = user("Amira", "AMI");
    other.public_key = vec![7; 32];
    assert!(dir.heard("north", &node_info(AMIRA, other), t, WALL));
    assert!(!dir.heard("north", &text(AMIRA), t, WALL));
    assert_eq!(
        dir.get(AMIRA).unwrap().user.unwrap().public_key,
        vec![9; 32]
    );
}

#[test]
fn what_a_forged_node_info_says_is_cleaned_and_bounded() {
    let long = "A\u{0}m\u{1b}[31mira".to_owned() + &"é".repeat(100);
    let mut bad = user(&long, "🙂🙂🙂");
    bad.public_key = vec![1; 31];
    bad.hw_model = 9999;
    let u = NodeUser::from_proto(&bad);
    assert!(u.long_name.starts_with("Am[31mira"), "{:?}", u.long_name);
    assert!(u.long_name.len() <= LONG_NAME_MAX);
    assert!(!u.long_name.chars().any(char::is_control));
    assert_eq!(u.short_name, "🙂", "5 bytes at most, cut at a character");
    assert!(u.public_key.is_empty(), "31 bytes is no x25519 key");
    assert_eq!(u.hw_model, "9999");
    // Undecodable payloads teach nothing but do not fail.
    let mut n = Node::new(AMIRA);
    let garbage = packet(
        AMIRA,
        3,
        3,
        proto::Data {
            portnum: proto::PortNum::NodeinfoApp as i32,
            payload: vec![0xff; 20],
            ..Default::default()
        },
    );
    heard(&mut n, &garbage, Instant::now());
    assert_eq!(n.user, None);
    assert!(n.last_heard.is_some(), "but the node was heard");
}

#[test]
fn a_node_database_entry_fills_in_what_is_missing_and_never_rolls_back_what_was_heard_live() {
    let now = Instant::now();
    let mut n = Node::new(AMIRA);
    let entry = proto::NodeInfo {
        num: AMIRA.get(),
        user: Some(user("Amira", "AMI")),
        last_heard: ((WALL - 10 * 60_000) / 1000) as u32,
        hops_away: Some(1),
        snr: 4.5,
        device_metrics: Some(proto::DeviceMetrics {
            battery_level: Some(64),
            ..Default::default()
        }),
        ..Default::default()
    };
    n.observe_db("south", &entry, now, WALL);
    assert_eq!(n.last_heard, now.checked_sub(10 * MIN));
    assert_eq!(n.last_heard_at, Some(WALL - 10 * 60_000));
    assert_eq!(
        (n.hops_away, n.snr, n.battery_level, n.heard_by.as_deref()),
        (Some(1), Some(4.5), Some(64), Some("south"))
    );
    // Heard live since: a later handshake with the same old entry changes none of that.
    let later = now + MIN;
    heard(&mut n, &text(AMIRA), later);
    n.observe_db("south", &entry, later, WALL + 60_000);
    assert_eq!(n.last_heard, Some(later));
    assert_eq!(n.hops_away, Some(2));
    assert_eq!(n.heard_by.as_deref(), Some("north"));
    // A radio without a clock says "1970": no time at all.
    let mut m = Node::new(AMIRA);
    let no_clock = proto::NodeInfo {
        last_heard: 3600,
        ..entry.clone()
    };
    m.observe_db("south", &no_clock, now, WALL);
    assert_eq!((m.last_heard, m.last_heard_at), (None, None));
    assert_eq!(m.user, n.user, "its names are still good");
    // Heard years ago: away, and said so.
    let long_ago = proto::NodeInfo {
        last_heard: ((WALL - 400 * 86_400_000) / 1000) as u32,
        ..entry
    };
    let mut old = Node::new(AMIRA);
    old.observe_db("south", &long_ago, now, WALL);
    assert_eq!(old.presence(now, DEFAULT_AWAY_AFTER), Presence::Away);
    assert_eq!(
        old.waiting_line(now),
        "waiting for Amira's radio (!a1b2c3d4 last heard 400 d ago)"
    );
    // A time this host's monotonic clock cannot hold (on platforms where it starts at boot)
    // leaves no `Instant`: not heard as far as decisions go, the wall time still said.
    old.last_heard = None;
    assert_eq!(old.presence(now, DEFAULT_AWAY_AFTER), Presence::Away);
    assert_eq!(
        old.waiting_line(now),
        "waiting for Amira's radio (!a1b2c3d4 last heard before the gateway started)"
    );
    assert!(
        old.status_line(now)
            .starts_with("last heard before the gateway started, 1 hop")
    );
}

#[test]
fn the_book_evicts_the_least_recently_heard_never_heard_first() {
    let t = Instant::now();
    let mut book = Book::new(3, DEFAULT_AWAY_AFTER);
    let id = NodeId::new;
    book.update(id(10), t, |n| n.user = Some(NodeUser::default()));
    for (k, node) in [11, 12].into_iter().enumerate() {
        let at = t + Duration::from_secs(k as u64);
        book.update(id(node), at, |n| heard(n, &text(id(node)), at));
    }
    // Full; a fourth node pushes out the never-heard one.
    let at = t + Duration::from_secs(5);
    book.update(id(13), at, |n| heard(n, &text(id(13)), at));
    assert_eq!(book.len(), 3);
    assert!(book.get(id(10)).is_none());
    // 11 is heard again, so 12 is now the least recently heard.
    let at = t + Duration::from_secs(6);
    book.update(id(11), at, |n| heard(n, &text(id(11)), at));
    let at = t + Duration::from_secs(7);
    book.update(id(14), at, |n| heard(n, &text(id(14)), at));
    let mut left: Vec<u32> = book.iter().map(|n| n.id.get()).collect();
    left.sort();
    assert_eq!(left, [11, 13, 14]);
    // A never-heard entry arriving in a full book is the one that goes, unannounced.
    let change = book.update(id(15), at, |n| n.user = Some(NodeUser::default()));
    assert_eq!(change, None);
    assert!(book.get(id(15)).is_none() && book.len() == 3);
}

#[test]
fn only_relevant_changes_are_announced_and_a_return_from_away_is_one() {
    let t = Instant::now();
    let mut book = Book::new(10, DEFAULT_AWAY_AFTER);
    let c = book
        .update(AMIRA, t, |n| heard(n, &text(AMIRA), t))
        .unwrap();
    assert!(c.new && c.back && !c.user && !c.status);
    assert_eq!(
        book.update(AMIRA, t + MIN, |n| heard(n, &text(AMIRA), t + MIN)),
        None,
        "another text changes nothing shown"
    );
    let c = book
        .update(AMIRA, t + MIN, |n| {
            heard(n, &node_info(AMIRA, user("Amira", "AMI")), t + MIN)
        })
        .unwrap();
    assert!(c.user && c.status && !c.new && !c.back, "{c:?}");
    assert_eq!(c.node.display_name(), "Amira");
    book.update(AMIRA, t + MIN, |n| {
        heard(n, &telemetry(AMIRA, Some(80), Some(3.91)), t + MIN)
    });
    assert_eq!(
        book.update(AMIRA, t + MIN, |n| {
            heard(n, &telemetry(AMIRA, Some(80), Some(3.87)), t + MIN)
        }),
        None,
        "a voltage that wobbles is no change"
    );
    let back = t + 5 * HOUR;
    let c = book
        .update(AMIRA, back, |n| heard(n, &text(AMIRA), back))
        .unwrap();
    assert!(
        c.back && !c.status && !c.user,
        "back after hours away: {c:?}"
    );
}

#[tokio::test]
async fn the_directory_announces_changes_and_wakes_a_watch_when_its_node_is_heard() {
    let dir = NodeDirectory::new(100, DEFAULT_AWAY_AFTER);
    let mut changes = dir.subscribe();
    let t = Instant::now();
    let watch = Arc::new(NodeWatch::default());
    dir.watch(AMIRA, dir.last_heard(AMIRA), &watch);
    assert!(watch.take().is_empty());
    assert!(!dir.heard("north", &text(AMIRA), t, WALL));
    watch.heard().await;
    assert_eq!(watch.take().into_iter().collect::<Vec<_>>(), [AMIRA]);
    let c = changes.try_recv().unwrap();
    assert!(c.new && c.node.id == AMIRA);
    // A watch is used once.
    assert!(!dir.heard("north", &text(AMIRA), t + MIN, WALL));
    assert!(watch.take().is_empty());
    // Heard between looking and watching: woken at once.
    let seen = dir.last_heard(AMIRA);
    assert!(!dir.heard("north", &text(AMIRA), t + 2 * MIN, WALL));
    dir.watch(AMIRA, seen, &watch);
    assert_eq!(watch.take().len(), 1);
    // Unwatched: nothing.
    dir.watch(AMIRA, dir.last_heard(AMIRA), &watch);
    dir.unwatch(AMIRA, &watch);
    assert!(!dir.heard("north", &text(AMIRA), t + 3 * MIN, WALL));
    assert!(watch.take().is_empty());
    // Packets from no node are not nodes.
    assert!(!dir.heard("north", &text(NodeId::BROADCAST), t, WALL));
    assert!(!dir.heard("north", &text(NodeId::new(2)), t, WALL));
    assert_eq!(dir.len(), 1);
    assert_eq!(dir.display_name(NodeId::new(0x1234)), "!00001234");
    assert_eq!(dir.presence(NodeId::new(0x1234), t), Presence::Away);
    assert_eq!(dir.presence(AMIRA, t + 3 * MIN), Presence::Available);
}

#[test]
fn a_handshake_names_the_nodes_a_radio_knows_and_the_radio_itself_is_here() {
    let dir = NodeDirectory::new(100, DEFAULT_AWAY_AFTER);
    let own = NodeId::new(0xb001);
    let info = RadioInfo {
        my_info: Some(proto::MyNodeInfo {
            my_node_num: own.get(),
            ..Default::default()
        }),
        own: Some(proto::NodeInfo {
            num: own.get(),
            user: Some(user("South gateway radio", "SGR")),
            ..Default::default()
        }),
        nodes: vec![
            proto::NodeInfo {
                num: AMIRA.get(),
                user: Some(user("Amira", "AMI")),
                ..Default::default()
            },
            proto::NodeInfo {
                num: NodeId::BROADCAST.get(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let now = Instant::now();
    dir.learn("south", &info, now, WALL);
    assert_eq!(dir.len(), 2);
    assert_eq!(dir.display_name(AMIRA), "Amira");
    assert_eq!(
        dir.presence(AMIRA, now),
        Presence::Away,
        "named, never heard"
    );
    assert_eq!(
        dir.waiting_line(AMIRA, now),
        "waiting for Amira's radio (!a1b2c3d4 never heard)"
    );
    let radio = dir.get(own).unwrap();
    assert_eq!(radio.display_name(), "South gateway radio");
    assert_eq!(radio.presence(now, DEFAULT_AWAY_AFTER), Presence::Available);
    assert_eq!(radio.hops_away, Some(0));
}
