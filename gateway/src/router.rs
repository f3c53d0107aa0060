//! The router: for one packet heard by one radio, which destinations get it, on which channel,
//! with which hop limit, and until when. Pure: no I/O, `now` is an argument.
//!
//! Its rules, in the order they apply:
//! 1. a packet with id 0 has no identity and is never relayed (the firmware does the same);
//! 2. what the attached radio itself originates (its own telemetry, its implicit ACKs), or
//!    what is addressed to it, is local state, not mesh traffic;
//! 3. a packet the radio could not decrypt is on a channel this hub does not hold; admin
//!    packets are never relayed;
//! 4. routes: traffic on a route's channel heard by one of its radios goes to the radios on the
//!    other side, on the mapped channel, never back to the radio it came from;
//! 5. the packet keeps its `from`, its `id`, and its payload bytes: it is re-encrypted with the
//!    far channel's key, which gives back the sender's ciphertext when the keys are the same.
//!
//! Deduplication is not here: the store's seen-set decides, durably, in the same transaction
//! that queues the deliveries, so "heard by two radios" and "heard again after a restart" are
//! the same case.

use std::collections::HashMap;

use mesh_core::{ChannelKey, Class, NodeId, Packet, proto};

use crate::config::{Config, TtlSection};
use crate::store::{Delivery, Inbound, Millis, NewDelivery};

/// One direction of a route: `channel` on radio `from` goes to `to_channel` on radio `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leg {
    /// Source radio.
    from: String,
    /// Channel name on the source radio.
    channel: String,
    /// Destination radio.
    to: String,
    /// Channel name on the destination radio.
    to_channel: String,
    /// Hop limit on arrival on the far mesh.
    hops: u8,
}

/// A packet as a radio handed it over.
#[derive(Debug, Clone, Copy)]
pub struct Heard<'a> {
    /// The radio's configured name.
    pub radio: &'a str,
    /// The radio's own node id (what it originates is not relayed).
    pub radio_node: NodeId,
    /// The name of the channel the radio heard it on (from the radio's channel table).
    pub channel: &'a str,
    /// The packet, decoded by the radio.
    pub packet: &'a Packet,
}

/// The router's answer.
#[derive(Debug)]
pub enum Verdict {
    /// Queue these deliveries (subject to the seen-set).
    Relay(Inbound),
    /// Nothing to do, and why.
    Ignore(&'static str),
}

/// The routing table, compiled from the configuration.
#[derive(Debug, Clone)]
pub struct Router {
    /// Every direction of every route.
    legs: Vec<Leg>,
    /// Keys of the destination channels, by (radio, channel name), to re-encrypt for them.
    keys: HashMap<(String, String), ChannelKey>,
    /// How long each class may wait.
    ttl: TtlSection,
}

impl Router {
    /// Compiles the routes of a validated configuration.
    pub fn new(config: &Config) -> Router {
        let mut legs = Vec::new();
        for route in &config.routes {
            let to_channel = route
                .to_channel
                .clone()
                .unwrap_or_else(|| route.channel.clone());
            for from in &route.from {
                for to in &route.to {
                    legs.push(Leg {
                        from: from.clone(),
                        channel: route.channel.clone(),
                        to: to.clone(),
                        to_channel: to_channel.clone(),
                        hops: route.hops,
                    });
                    if !route.one_way {
                        legs.push(Leg {
                            from: to.clone(),
                            channel: to_channel.clone(),
                            to: from.clone(),
                            to_channel: route.channel.clone(),
                            hops: route.hops,
                        });
                    }
                }
            }
        }
        legs.dedup();
        let keys = config
            .radios
            .iter()
            .flat_map(|r| {
                r.channels
                    .iter()
                    .map(move |c| ((r.name.clone(), c.name.clone()), c.psk.expand()))
            })
            .collect();
        Router {
            legs,
            keys,
            ttl: config.store.ttl.clone(),
        }
    }

    /// Reads a packet a radio published on its uplink (encrypted, as heard) with the key
    /// configured for that radio's channel.
    pub fn decrypt(&self, radio: &str, channel: &str, packet: &Packet) -> Option<Packet> {
        let key = self.keys.get(&(radio.to_owned(), channel.to_owned()))?;
        packet.decrypt(key).ok()
    }

    /// Decides what happens to one heard packet.
    pub fn route(&self, heard: Heard<'_>, now: Millis) -> Verdict {
        let p = heard.packet;
        if p.id().is_unset() {
            return Verdict::Ignore("packet has no id");
        }
        if p.from() == heard.radio_node || p.from() == NodeId::LOCAL {
            return Verdict::Ignore("originated by the attached radio itself");
        }
        if p.to() == heard.radio_node {
            return Verdict::Ignore("addressed to the attached radio itself");
        }
        let Some(data) = p.data() else {
            return Verdict::Ignore("the radio could not decrypt it");
        };
        if data.portnum == proto::PortNum::AdminApp as i32 {
            return Verdict::Ignore("admin packets are never relayed");
        }
        let class = Class::of(p);
        let expires_at = now.saturating_add(self.ttl.of(class).as_millis() as Millis);
        let mut deliveries: Vec<NewDelivery> = Vec::new();
        for leg in self
            .legs
            .iter()
            .filter(|l| l.from == heard.radio && l.channel == heard.channel && l.to != heard.radio)
        {
            if deliveries.iter().any(|d| d.destination == leg.to) {
                continue;
            }
            if !self
                .keys
                .contains_key(&(leg.to.clone(), leg.to_channel.clone()))
            {
                continue;
            }
            deliveries.push(NewDelivery {
                destination: leg.to.clone(),
                to_channel: (leg.to_channel != heard.channel).then(|| leg.to_channel.clone()),
                hops: leg.hops,
            });
        }
        if deliveries.is_empty() {
            return Verdict::Ignore("no route for this radio and channel");
        }
        // Stored once, as heard: encrypted with the source channel's key (which gives back
        // the sender's ciphertext); `render` re-encrypts for each destination at send time.
        let stored = match self
            .keys
            .get(&(heard.radio.to_owned(), heard.channel.to_owned()))
        {
            Some(key) => p.encrypt(heard.channel, key),
            None => p.clone(),
        };
        Verdict::Relay(Inbound {
            from: p.from(),
            id: p.id(),
            class,
            source: heard.radio.to_owned(),
            channel: heard.channel.to_owned(),
            packet: stored.encode(),
            expires_at,
            deliveries,
        })
    }

    /// The packet a queued delivery puts on its destination radio: the stored packet read
    /// with its source channel's key and encrypted for the destination channel's. `None` when
    /// the stored packet does not decode or a key is not configured (any more).
    pub fn render(&self, delivery: &Delivery) -> Option<Packet> {
        self.render_parts(
            &delivery.destination,
            &delivery.to_channel,
            delivery.source.as_deref(),
            &delivery.channel,
            &delivery.packet,
        )
    }

    /// [`Router::render`] from the delivery's parts.
    fn render_parts(
        &self,
        destination: &str,
        to_channel: &str,
        source: Option<&str>,
        channel: &str,
        packet: &[u8],
    ) -> Option<Packet> {
        let stored = Packet::decode(packet.to_vec().into()).ok()?;
        let to_key = self
            .keys
            .get(&(destination.to_owned(), to_channel.to_owned()))?;
        // Rows from schema 1 have no source: their packet is already for the destination.
        let source = source.unwrap_or(destination);
        let plain = match self.keys.get(&(source.to_owned(), channel.to_owned())) {
            Some(key) if channel == to_channel && key == to_key => return Some(stored),
            Some(key) => stored.decrypt(key).unwrap_or(stored),
            None => stored,
        };
        Some(plain.encrypt(to_channel, to_key))
    }
}

#[cfg(test)]
mod tests {
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

    fn heard<'a>(radio: &'a str, channel: &'a str, packet: &'a Packet) -> Heard<'a> {
        Heard {
            radio,
            radio_node: NodeId::new(0x99),
            channel,
            packet,
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
    fn a_routed_text_keeps_from_id_and_payload_and_is_mapped_to_the_far_channel() {
        let r = Router::new(&config(BRIDGE));
        let p = text(0x1111, 42, u32::MAX);
        let Verdict::Relay(inbound) = r.route(heard("north", "LongFast", &p), 1000) else {
            panic!()
        };
        assert_eq!(
            (inbound.from, inbound.id),
            (NodeId::new(0x1111), PacketId::new(42))
        );
        let d = &inbound.deliveries[0];
        assert_eq!(
            (d.destination.as_str(), d.to_channel.as_deref(), d.hops),
            ("south", Some("MediumFast"), 0)
        );
        assert_eq!(inbound.class, Class::Channel);
        assert_eq!(inbound.expires_at, 1000 + 24 * 3600 * 1000);
        let relayed = r
            .render_parts(
                "south",
                "MediumFast",
                Some("north"),
                &inbound.channel,
                &inbound.packet,
            )
            .unwrap();
        assert_eq!((relayed.from(), relayed.id()), (p.from(), p.id()));
        let key = ChannelKey::from_psk(&[1]);
        assert_eq!(
            relayed.channel(),
            u32::from(mesh_core::channel::channel_hash("MediumFast", &key))
        );
        assert_eq!(relayed.decrypt(&key).unwrap().data(), p.data());
    }

    #[test]
    fn routes_work_both_ways_unless_one_way() {
        let r = Router::new(&config(BRIDGE));
        let p = text(0x2222, 7, u32::MAX);
        let Verdict::Relay(back) = r.route(heard("south", "MediumFast", &p), 0) else {
            panic!()
        };
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
        assert!(matches!(
            one_way.route(heard("south", "MediumFast", &p), 0),
            Verdict::Ignore(_)
        ));
    }

    #[test]
    fn nothing_goes_back_to_the_radio_it_came_from() {
        let r = Router::new(&config(BRIDGE));
        let p = text(0x2222, 7, u32::MAX);
        let Verdict::Relay(back) = r.route(heard("south", "MediumFast", &p), 0) else {
            panic!()
        };
        let Verdict::Relay(fwd) = r.route(heard("north", "LongFast", &p), 0) else {
            panic!()
        };
        assert!(back.deliveries.iter().all(|d| d.destination != "south"));
        assert!(fwd.deliveries.iter().all(|d| d.destination != "north"));
    }

    #[test]
    fn unrouted_channels_own_packets_admin_and_id_zero_are_ignored() {
        let r = Router::new(&config(BRIDGE));
        let ops = text(0x1111, 1, u32::MAX);
        assert!(matches!(
            r.route(heard("north", "ops", &ops), 0),
            Verdict::Ignore(_)
        ));
        let own = text(0x99, 1, u32::MAX);
        assert!(matches!(
            r.route(heard("north", "LongFast", &own), 0),
            Verdict::Ignore(_)
        ));
        let to_radio = text(0x1111, 2, 0x99);
        assert!(matches!(
            r.route(heard("north", "LongFast", &to_radio), 0),
            Verdict::Ignore(_)
        ));
        let no_id = text(0x1111, 0, u32::MAX);
        assert!(matches!(
            r.route(heard("north", "LongFast", &no_id), 0),
            Verdict::Ignore(_)
        ));
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
        assert!(matches!(
            r.route(heard("north", "LongFast", &admin), 0),
            Verdict::Ignore(_)
        ));
    }

    #[test]
    fn a_route_can_set_the_hop_limit_on_arrival_and_classes_set_ttls() {
        let r = Router::new(&config(
            &BRIDGE.replace("to_channel", "hops = 2\nto_channel"),
        ));
        let dm = text(0x1111, 3, 0x4444);
        let Verdict::Relay(i) = r.route(heard("north", "LongFast", &dm), 0) else {
            panic!()
        };
        assert_eq!(i.deliveries[0].hops, 2);
        assert_eq!(i.class, Class::Direct);
        assert_eq!(i.expires_at, 72 * 3600 * 1000);
    }
}
