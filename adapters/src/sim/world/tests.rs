//! The RF world on plain values: flooding, dedup, airtime, ACKs, retries, seeded replay.

use super::*;

/// A mesh whose nodes are `!00000101`.. (`node(1)`..) with the given roles, on LongFast, linked by
/// `edges` (1-based node numbers) or fully when `edges` is empty.
fn world(roles: &[&str], edges: &[(u32, u32)], loss: f64, seed: u64) -> World {
    let mut toml =
        format!("seed = {seed}\n[[mesh]]\nname = \"m\"\npreset = \"LongFast\"\nloss = {loss:?}\n");
    for (i, role) in roles.iter().enumerate() {
        let n = 0x100 + i as u32 + 1;
        toml += &format!(
            "[[mesh.node]]\nid = \"!{n:08x}\"\nlong_name = \"Node {n}\"\nshort_name = \"N{n}\"\nrole = \"{role}\"\n"
        );
        if !edges.is_empty() {
            let list: Vec<String> = edges
                .iter()
                .filter(|(a, _)| 0x100 + *a == n)
                .map(|(_, b)| format!("\"!{:08x}\"", 0x100 + b))
                .collect();
            toml += &format!("neighbours = [{}]\n", list.join(", "));
        }
    }
    World::new(&SimConfig::from_toml_str(&toml).unwrap())
}

fn node(n: u32) -> NodeId {
    NodeId::new(0x100 + n)
}

/// Runs every timer until nothing is left (or a bound is hit), returning the events.
pub(super) fn run(world: &mut World, until: Duration) -> Vec<WorldEvent> {
    let mut events = Vec::new();
    for _ in 0..100_000 {
        while let Some(e) = world.poll_event() {
            events.push(e);
        }
        match world.poll_timeout() {
            Some(t) if t <= until => world.handle_timeout(t),
            _ => break,
        }
    }
    while let Some(e) = world.poll_event() {
        events.push(e);
    }
    events
}

fn text(to: NodeId, hop_limit: u32, want_ack: bool) -> Packet {
    let meta = proto::MeshPacket {
        to: to.get(),
        hop_limit,
        want_ack,
        ..Default::default()
    };
    Packet::from_data(
        meta,
        proto::Data {
            portnum: proto::PortNum::TextMessageApp as i32,
            payload: b"hello mesh".to_vec(),
            ..Default::default()
        },
    )
}

fn receivers(events: &[WorldEvent]) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = events
        .iter()
        .filter_map(|e| match e {
            WorldEvent::Received { node, .. } => Some(*node),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn transmissions(events: &[WorldEvent]) -> Vec<(NodeId, TxKind)> {
    events
        .iter()
        .filter_map(|e| match e {
            WorldEvent::Transmitted { node, kind, .. } => Some((*node, *kind)),
            _ => None,
        })
        .collect()
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn flooding_respects_hop_limit_on_a_line_topology() {
    let line = [(1, 2), (2, 3), (3, 4), (4, 5)];
    let mut w = world(&["client"; 5], &line, 0.0, 1);
    w.transmit(node(1), text(NodeId::BROADCAST, 2, false), Duration::ZERO)
        .unwrap();
    let events = run(&mut w, HOUR);
    // Node 2 hears it with 2 hops left, node 3 with 1, node 4 with 0: node 5 never.
    assert_eq!(receivers(&events), vec![node(2), node(3), node(4)]);
    let relays: Vec<_> = transmissions(&events)
        .into_iter()
        .filter(|(_, k)| *k == TxKind::Relay)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(relays, vec![node(2), node(3)]);
    for e in &events {
        if let WorldEvent::Received {
            node: n, packet, ..
        } = e
        {
            let expected = if *n == node(4) {
                0
            } else {
                4 - (n.get() - 0x100) as u8
            };
            assert_eq!(packet.hop_limit(), expected, "at {n}");
            assert_eq!(packet.hop_start(), 2);
        }
    }
}

#[test]
fn dedup_stops_re_relays() {
    let mut w = world(&["router"; 4], &[], 0.0, 1);
    w.transmit(node(1), text(NodeId::BROADCAST, 3, false), Duration::ZERO)
        .unwrap();
    let events = run(&mut w, HOUR);
    // Everyone hears everyone: each router relays once, then only duplicates are heard.
    assert_eq!(receivers(&events), vec![node(2), node(3), node(4)]);
    let tx = transmissions(&events);
    assert_eq!(tx.len(), 4, "{tx:?}");
    assert_eq!(tx.iter().filter(|(_, k)| *k == TxKind::Relay).count(), 3);
}

#[test]
fn a_client_cancels_its_relay_when_a_router_relays_first() {
    let mut w = world(&["client", "router", "client"], &[], 0.0, 3);
    w.transmit(node(1), text(NodeId::BROADCAST, 3, false), Duration::ZERO)
        .unwrap();
    let tx = transmissions(&run(&mut w, HOUR));
    assert_eq!(
        tx,
        vec![(node(1), TxKind::Originated), (node(2), TxKind::Relay)]
    );
}

#[test]
fn client_mute_never_relays() {
    let line = [(1, 2), (2, 3)];
    let mut w = world(&["client", "client_mute", "client"], &line, 0.0, 1);
    w.transmit(node(1), text(NodeId::BROADCAST, 3, false), Duration::ZERO)
        .unwrap();
    let events = run(&mut w, HOUR);
    assert_eq!(receivers(&events), vec![node(2)]);
    assert_eq!(transmissions(&events), vec![(node(1), TxKind::Originated)]);
}

#[test]
fn loss_of_one_delivers_nothing() {
    let mut w = world(&["client"; 3], &[], 1.0, 1);
    w.transmit(node(1), text(NodeId::BROADCAST, 3, false), Duration::ZERO)
        .unwrap();
    let events = run(&mut w, HOUR);
    assert!(receivers(&events).is_empty());
    assert_eq!(transmissions(&events).len(), 1);
}

#[test]
fn a_reception_completes_exactly_one_airtime_after_the_transmission_starts() {
    let mut w = world(&["client_mute"; 2], &[], 0.0, 1);
    w.transmit(node(1), text(node(2), 3, false), Duration::from_secs(5))
        .unwrap();
    let events = run(&mut w, HOUR);
    let (start, airtime, len) = events
        .iter()
        .find_map(|e| match e {
            WorldEvent::Transmitted {
                at,
                airtime,
                packet,
                ..
            } => Some((*at, *airtime, packet.on_air_len())),
            _ => None,
        })
        .unwrap();
    assert!(start >= Duration::from_secs(5));
    assert_eq!(airtime, ModemPreset::LongFast.time_on_air(len));
    let received = events
        .iter()
        .find_map(|e| match e {
            WorldEvent::Received { at, .. } => Some(*at),
            _ => None,
        })
        .unwrap();
    assert_eq!(received - start, airtime);
}

#[test]
fn a_direct_message_gets_a_real_ack_from_its_destination() {
    let line = [(1, 2), (2, 3)];
    // A router in the middle relays fast enough for the ACK to beat the retry timer.
    let mut w = world(&["client", "router", "client"], &line, 0.0, 1);
    let id = w
        .transmit(node(1), text(node(3), 3, true), Duration::ZERO)
        .unwrap();
    let events = run(&mut w, HOUR);
    let ack = events
        .iter()
        .find_map(|e| match e {
            WorldEvent::Received {
                node: n, decoded, ..
            } if *n == node(1) => decoded.clone(),
            _ => None,
        })
        .expect("an ACK reaches the sender");
    assert_eq!(ack.from(), node(3));
    assert_eq!(ack.portnum(), Some(proto::PortNum::RoutingApp));
    let data = ack.data().unwrap();
    assert_eq!(data.request_id, id.get());
    let routing = proto::Routing::decode(&data.payload[..]).unwrap();
    assert_eq!(
        routing.variant,
        Some(proto::routing::Variant::ErrorReason(0))
    );
    assert!(!events.iter().any(|e| matches!(e, WorldEvent::Nak { .. })));
    let sender_tx = transmissions(&events)
        .into_iter()
        .filter(|(n, _)| *n == node(1))
        .count();
    assert_eq!(sender_tx, 1, "acknowledged on the first try");
}

#[test]
fn an_overheard_rebroadcast_is_an_implicit_ack() {
    let mut w = world(&["client", "client"], &[], 0.0, 1);
    let id = w
        .transmit(node(1), text(NodeId::BROADCAST, 3, true), Duration::ZERO)
        .unwrap();
    let events = run(&mut w, HOUR);
    let acks: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            WorldEvent::ImplicitAck { node: n, id, .. } => Some((*n, *id)),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![(node(1), id)]);
    // want_ack is not carried on the air for broadcasts.
    let on_air = events
        .iter()
        .find_map(|e| match e {
            WorldEvent::Transmitted { packet, .. } => Some(packet.clone()),
            _ => None,
        })
        .unwrap();
    assert!(!on_air.want_ack());
}

#[test]
fn a_reliable_broadcast_nobody_relays_ends_in_a_nak_after_the_retries() {
    let mut w = world(&["client", "client_mute"], &[], 0.0, 1);
    let id = w
        .transmit(node(1), text(NodeId::BROADCAST, 3, true), Duration::ZERO)
        .unwrap();
    let events = run(&mut w, HOUR);
    let naks: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            WorldEvent::Nak {
                node: n, id, error, ..
            } => Some((*n, *id, *error)),
            _ => None,
        })
        .collect();
    assert_eq!(naks, vec![(node(1), id, RoutingError::MaxRetransmit)]);
    let tx = transmissions(&events);
    assert_eq!(tx.len(), 1 + usize::from(RELIABLE_RETRIES), "{tx:?}");
    assert_eq!(receivers(&events), vec![node(2)], "repeats are duplicates");
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let config = |seed: u64| {
        let mut c = SimConfig::demo();
        c.seed = seed;
        c
    };
    let trace = |seed: u64| {
        let mut w = World::new(&config(seed));
        run(&mut w, HOUR)
            .iter()
            .map(|e| match e {
                WorldEvent::Transmitted {
                    at, node, packet, ..
                } => {
                    format!("tx {at:?} {node} {}", packet.id())
                }
                WorldEvent::Received {
                    at, node, packet, ..
                } => {
                    format!("rx {at:?} {node} {}", packet.id())
                }
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    let a = trace(11);
    assert!(
        a.len() > 100,
        "an hour of the demo world is busy: {}",
        a.len()
    );
    assert_eq!(a, trace(11));
    assert_ne!(a, trace(12));
}

#[test]
fn generated_traffic_decodes_on_the_mesh_channels() {
    let mut w = World::new(&SimConfig::demo());
    let events = run(&mut w, HOUR);
    let ports: BTreeSet<i32> = events
        .iter()
        .filter_map(|e| match e {
            WorldEvent::Received {
                decoded: Some(d), ..
            } => Some(d.data().unwrap().portnum),
            _ => None,
        })
        .collect();
    for port in [
        proto::PortNum::TextMessageApp,
        proto::PortNum::PositionApp,
        proto::PortNum::TelemetryApp,
        proto::PortNum::NodeinfoApp,
    ] {
        assert!(ports.contains(&(port as i32)), "{port:?} in {ports:?}");
    }
}

#[test]
fn channel_utilization_is_the_busy_share_of_the_last_minute() {
    let mut w = world(&["client_mute"; 2], &[], 0.0, 1);
    w.transmit(node(1), text(NodeId::BROADCAST, 0, false), Duration::ZERO)
        .unwrap();
    let events = run(&mut w, HOUR);
    let airtime = events
        .iter()
        .find_map(|e| match e {
            WorldEvent::Transmitted { airtime, .. } => Some(*airtime),
            _ => None,
        })
        .unwrap();
    let util = w.channel_utilization("m", Duration::from_secs(30)).unwrap();
    let expected = (airtime.as_secs_f64() / 60.0 * 100.0) as f32;
    assert!((util - expected).abs() < 0.01, "{util} vs {expected}");
    let own = w.air_util_tx(node(1), Duration::from_secs(30)).unwrap();
    assert!(
        (own - expected / 60.0).abs() < 0.001,
        "{own}: a minute's share of an hour"
    );
    assert_eq!(
        w.channel_utilization("m", Duration::from_secs(200)),
        Some(0.0)
    );
    assert_eq!(w.channel_utilization("nowhere", Duration::ZERO), None);
}

#[test]
fn packets_on_a_missing_channel_or_too_large_are_refused() {
    let mut w = world(&["client"; 2], &[], 0.0, 1);
    let mut p = text(NodeId::BROADCAST, 3, false);
    p.meta_mut().channel = 3;
    assert!(matches!(
        w.transmit(node(1), p, Duration::ZERO),
        Err(WorldError::NoChannel { index: 3, .. })
    ));
    let big = Packet::from_data(
        proto::MeshPacket::default(),
        proto::Data {
            portnum: 1,
            payload: vec![b'x'; 240],
            ..Default::default()
        },
    );
    assert!(matches!(
        w.transmit(node(1), big, Duration::ZERO),
        Err(WorldError::TooLarge { .. })
    ));
    assert_eq!(
        w.transmit(node(9), text(NodeId::BROADCAST, 3, false), Duration::ZERO),
        Err(WorldError::UnknownNode(node(9)))
    );
}

#[test]
fn the_transmit_queue_holds_sixteen_packets() {
    let mut w = world(&["client"; 2], &[], 0.0, 1);
    let mut accepted = 0;
    while w
        .transmit(node(1), text(NodeId::BROADCAST, 3, false), Duration::ZERO)
        .is_ok()
    {
        accepted += 1;
        assert!(accepted <= TX_QUEUE_LEN + 1, "the queue never fills");
    }
    // Sixteen wait; one more fits when the first is already on the air.
    assert!(accepted >= TX_QUEUE_LEN, "{accepted}");
    assert_eq!(w.tx_queue_free(node(1)), 0);
    run(&mut w, HOUR);
    assert_eq!(w.tx_queue_free(node(1)), TX_QUEUE_LEN);
}

#[test]
fn hop_limit_for_a_response_covers_the_hops_taken() {
    assert_eq!(hop_limit_for_response(0, 0), 3);
    assert_eq!(hop_limit_for_response(3, 3), 2);
    assert_eq!(hop_limit_for_response(3, 2), 3);
    assert_eq!(hop_limit_for_response(7, 2), 5);
}
