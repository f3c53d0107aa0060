use super::*;
use mesh_core::PacketId;

fn config(routes: &str) -> Config {
    Config::from_toml(&format!(
        r#"
[gateway]
name = "hub"
id = "!a7c40001"
[[radio]]
name = "north"
tcp = "127.0.0.1:1"
region = "US"
preset = "LongFast"
channels = [ {{ name = "LongFast", psk = "AQ==" }}, {{ name = "ops", psk = "simple2" }} ]
[[radio]]
name = "north2"
tcp = "127.0.0.1:2"
region = "US"
preset = "LongFast"
channels = [ {{ name = "LongFast", psk = "AQ==" }} ]
[[radio]]
name = "south"
tcp = "127.0.0.1:3"
region = "US"
preset = "MediumFast"
channels = [ {{ name = "MediumFast", psk = "AQ==" }}, {{ name = "ops", psk = "simple2" }} ]
{routes}
"#
    ))
    .unwrap()
}

fn text(from: u32, id: u32, to: u32) -> Packet {
    let mut p = Packet::text_message(NodeId::new(to), 0, "water at the school");
    let m = p.meta_mut();
    (m.from, m.id, m.hop_limit, m.hop_start) = (from, id, 2, 3);
    p
}

fn heard<'a>(source: &'a str, channel: &'a str, packet: &'a Packet) -> Heard<'a> {
    Heard {
        source,
        channel,
        packet,
        local: Some(NodeId::new(0x99)),
        federated: None,
    }
}

fn relay(d: Decision) -> Inbound {
    match d {
        Decision::Relay(i) => i,
        Decision::Ignore(why) => panic!("ignored: {why:?}"),
    }
}

fn ignored(d: Decision) -> Ignored {
    match d {
        Decision::Relay(i) => panic!("relayed to {:?}", i.deliveries),
        Decision::Ignore(why) => why,
    }
}

/// The delivery a worker would read back from the store for `inbound`'s `n`-th destination.
fn queued(inbound: &Inbound, n: usize) -> Delivery {
    let d = &inbound.deliveries[n];
    Delivery {
        key: crate::store::DeliveryKey::default(),
        destination: d.destination.clone(),
        from: inbound.from,
        id: inbound.id,
        class: inbound.class,
        source: Some(inbound.source.clone()),
        origin: inbound.origin,
        channel: inbound.channel.clone(),
        to_channel: d
            .to_channel
            .clone()
            .unwrap_or_else(|| inbound.channel.clone()),
        hops: d.hops,
        packet: inbound.packet.clone(),
        attempts: 0,
        enqueued_at: 0,
        expires_at: inbound.expires_at,
    }
}

const BRIDGE: &str = r#"
[[route]]
channel = "LongFast"
from = ["north", "north2"]
to = ["south"]
to_channel = "MediumFast"
"#;

#[test]
fn a_routed_text_is_stored_once_as_heard_and_rendered_for_the_far_channel() {
    let r = Router::new(&config(BRIDGE));
    let p = text(0x1111, 42, u32::MAX);
    let inbound = relay(r.route(heard("north", "LongFast", &p), 1000));
    assert_eq!(
        (inbound.from, inbound.id, inbound.class),
        (NodeId::new(0x1111), PacketId::new(42), Class::Channel)
    );
    assert_eq!(inbound.expires_at, 1000 + 24 * 3600 * 1000);
    let key = ChannelKey::from_psk(&[1]);
    let stored = Packet::decode(inbound.packet.clone().into()).unwrap();
    assert_eq!(
        stored,
        p.encrypt("LongFast", &key),
        "the sender's own ciphertext"
    );
    let d = &inbound.deliveries[0];
    assert_eq!(
        (d.destination.as_str(), d.to_channel.as_deref(), d.hops),
        ("south", Some("MediumFast"), 0)
    );
    let out = r.render(&queued(&inbound, 0)).unwrap();
    assert_eq!(out.channel, "MediumFast");
    assert_eq!((out.packet.from(), out.packet.id()), (p.from(), p.id()));
    assert_eq!(
        out.packet.channel(),
        u32::from(mesh_core::channel::channel_hash("MediumFast", &key))
    );
    assert_eq!(out.decoded().unwrap().data(), p.data());
}

#[test]
fn the_same_channel_on_both_sides_renders_the_stored_bytes_unchanged() {
    let r = Router::new(&config(
        "[[route]]\nchannel = \"ops\"\nfrom = [\"north\"]\nto = [\"south\"]\n",
    ));
    let p = text(0x1111, 43, u32::MAX);
    let inbound = relay(r.route(heard("north", "ops", &p), 0));
    assert_eq!(inbound.deliveries[0].to_channel, None);
    let out = r.render(&queued(&inbound, 0)).unwrap();
    assert_eq!(out.packet.encode(), inbound.packet);
}

#[test]
fn routes_work_both_ways_unless_one_way() {
    let r = Router::new(&config(BRIDGE));
    let p = text(0x2222, 7, u32::MAX);
    let back = relay(r.route(heard("south", "MediumFast", &p), 0));
    let dests: Vec<&str> = back
        .deliveries
        .iter()
        .map(|d| d.destination.as_str())
        .collect();
    assert_eq!(dests, ["north", "north2"]);
    assert!(
        back.deliveries
            .iter()
            .all(|d| d.to_channel.as_deref() == Some("LongFast"))
    );
    let one_way = Router::new(&config(&format!("{BRIDGE}one_way = true\n")));
    assert_eq!(
        ignored(one_way.route(heard("south", "MediumFast", &p), 0)),
        Ignored::NoRoute
    );
}

#[test]
fn nothing_goes_back_to_the_endpoint_it_came_from() {
    let r = Router::new(&config(BRIDGE));
    let p = text(0x2222, 7, u32::MAX);
    let back = relay(r.route(heard("south", "MediumFast", &p), 0));
    let fwd = relay(r.route(heard("north", "LongFast", &p), 0));
    assert!(back.deliveries.iter().all(|d| d.destination != "south"));
    assert!(fwd.deliveries.iter().all(|d| d.destination != "north"));
}

#[test]
fn unrouted_channels_own_packets_admin_and_id_zero_are_ignored() {
    let r = Router::new(&config(BRIDGE));
    let ops = text(0x1111, 1, u32::MAX);
    assert_eq!(
        ignored(r.route(heard("north", "ops", &ops), 0)),
        Ignored::NoRoute
    );
    let own = text(0x99, 1, u32::MAX);
    assert_eq!(
        ignored(r.route(heard("north", "LongFast", &own), 0)),
        Ignored::OwnRadio
    );
    let to_radio = text(0x1111, 2, 0x99);
    assert_eq!(
        ignored(r.route(heard("north", "LongFast", &to_radio), 0)),
        Ignored::ToOwnRadio
    );
    let no_id = text(0x1111, 0, u32::MAX);
    assert_eq!(
        ignored(r.route(heard("north", "LongFast", &no_id), 0)),
        Ignored::NoId
    );
    let admin = Packet::from_data(
        proto::MeshPacket {
            from: 0x1111,
            id: 5,
            ..Default::default()
        },
        proto::Data {
            portnum: proto::PortNum::AdminApp as i32,
            ..Default::default()
        },
    );
    assert_eq!(
        ignored(r.route(heard("north", "LongFast", &admin), 0)),
        Ignored::Admin
    );
    let encrypted = text(0x1111, 9, u32::MAX).encrypt("LongFast", &ChannelKey::from_psk(&[1]));
    assert_eq!(
        ignored(r.route(heard("north", "LongFast", &encrypted), 0)),
        Ignored::Undecryptable
    );
}

#[test]
fn forged_hop_fields_are_dropped_and_counted_as_abuse_unlike_a_mesh_s_normal_life() {
    let r = Router::new(&config(BRIDGE));
    for (limit, start) in [(8, 3), (2, 8), (u32::MAX, u32::MAX)] {
        let mut p = text(0x1111, 7, u32::MAX);
        (p.meta_mut().hop_limit, p.meta_mut().hop_start) = (limit, start);
        let why = ignored(r.route(heard("north", "LongFast", &p), 0));
        assert_eq!((why, why.as_str()), (Ignored::HopFields, "hops"));
        assert!(why.is_abuse());
    }
    let mut seven = text(0x1111, 8, u32::MAX);
    (seven.meta_mut().hop_limit, seven.meta_mut().hop_start) = (7, 7);
    assert_eq!(
        relay(r.route(heard("north", "LongFast", &seven), 0))
            .deliveries
            .len(),
        1
    );
    assert!(Ignored::Admin.is_abuse() && Ignored::TooManyHops.is_abuse());
    for normal in [
        Ignored::NoId,
        Ignored::OwnRadio,
        Ignored::ToOwnRadio,
        Ignored::NoRoute,
        Ignored::UnknownChannel,
        Ignored::Undecryptable,
    ] {
        assert!(!normal.is_abuse(), "{normal:?}");
    }
}

#[test]
fn the_own_radio_rule_applies_only_to_radios() {
    let r = Router::new(&config(BRIDGE));
    let p = text(0x99, 1, u32::MAX);
    let h = Heard {
        local: None,
        ..heard("north", "LongFast", &p)
    };
    assert_eq!(relay(r.route(h, 0)).deliveries.len(), 1);
}

#[test]
fn a_route_can_set_the_hop_limit_on_arrival_and_classes_set_ttls() {
    let r = Router::new(&config(
        &BRIDGE.replace("to_channel", "hops = 2\nto_channel"),
    ));
    let dm = text(0x1111, 3, 0x4444);
    let i = relay(r.route(heard("north", "LongFast", &dm), 0));
    assert_eq!(i.deliveries[0].hops, 2);
    assert_eq!(i.class, Class::Direct);
    assert_eq!(i.expires_at, 72 * 3600 * 1000);
    assert_eq!(r.render(&queued(&i, 0)).unwrap().hops, 2);
}

#[test]
fn a_delivery_whose_channel_left_the_configuration_cannot_be_rendered() {
    let r = Router::new(&config(BRIDGE));
    let p = text(0x1111, 42, u32::MAX);
    let inbound = relay(r.route(heard("north", "LongFast", &p), 0));
    let mut d = queued(&inbound, 0);
    d.to_channel = "Gone".into();
    assert_eq!(
        r.render(&d).unwrap_err(),
        RenderError::UnknownChannel("Gone".into())
    );
    d.packet = vec![0xff; 3];
    assert!(matches!(r.render(&d), Err(RenderError::Unreadable(_))));
}

/// North's LongFast to two neighbour hubs and between them, both ways, with `max_hops`.
fn federated(max_hops: u8) -> (crate::config::testing::TempDir, Router) {
    use archipel_adapters::peer::PeerKey;
    let dir = crate::config::testing::TempDir::new("router-hops");
    let routes = format!(
        "[federation]\nidentity_file = \"{}\"\nmax_hops = {max_hops}\n\
         [[peer]]\nname = \"hub-b\"\naddress = \"192.168.1.20:4404\"\nkey = \"{}\"\n\
         [[peer]]\nname = \"hub-c\"\nkey = \"{}\"\n\
         [[route]]\nchannel = \"LongFast\"\nfrom = [\"north\"]\nto = [\"hub-b\", \"hub-c\"]\n\
         [[route]]\nchannel = \"LongFast\"\nfrom = [\"hub-b\"]\nto = [\"hub-c\"]\n",
        dir.path().join("identity.key").display(),
        PeerKey::from_bytes([1; 32]),
        PeerKey::from_bytes([2; 32]),
    );
    let router = Router::new(&config(&routes));
    (dir, router)
}

/// Destinations with the hop count each is queued with.
fn hops_by_destination(i: &Inbound) -> Vec<(&str, u8)> {
    let mut out: Vec<_> = i
        .deliveries
        .iter()
        .map(|d| (d.destination.as_str(), d.hops))
        .collect();
    out.sort();
    out
}

#[test]
fn a_message_heard_here_goes_to_each_hub_as_its_first_hop_with_no_origin_yet() {
    let (_dir, r) = federated(4);
    let p = text(0x1111, 1, u32::MAX);
    let i = relay(r.route(heard("north", "LongFast", &p), 0));
    assert_eq!(hops_by_destination(&i), [("hub-b", 1), ("hub-c", 1)]);
    assert_eq!(i.origin, None, "the sink names this gateway");
}

#[test]
fn a_hub_passes_a_message_on_counting_the_hop_and_keeping_its_origin() {
    let (_dir, r) = federated(2);
    let p = text(0x1111, 1, u32::MAX);
    let via = Federated {
        origin: NodeId::new(0xb0b),
        hops: 1,
    };
    let h = Heard {
        local: None,
        federated: Some(via),
        ..heard("hub-b", "LongFast", &p)
    };
    let i = relay(r.route(h, 0));
    assert_eq!(hops_by_destination(&i), [("hub-c", 2), ("north", 0)]);
    assert_eq!(i.origin, Some(NodeId::new(0xb0b)));
}

#[test]
fn no_message_goes_beyond_max_hops_and_one_that_came_further_is_dropped() {
    let (_dir, r) = federated(1);
    let p = text(0x1111, 1, u32::MAX);
    let from_b = |hops| Heard {
        local: None,
        federated: Some(Federated {
            origin: NodeId::new(0xb0b),
            hops,
        }),
        ..heard("hub-b", "LongFast", &p)
    };
    // At the limit: still heard on this hub's mesh, never passed to another hub.
    let i = relay(r.route(from_b(1), 0));
    assert_eq!(hops_by_destination(&i), [("north", 0)]);
    assert_eq!(ignored(r.route(from_b(2), 0)), Ignored::TooManyHops);
    assert_eq!(Ignored::TooManyHops.as_str(), "hops");
}
