//! The router: for one packet heard on one endpoint, which endpoints get it, on which channel,
//! and until when; and, at send time, what each destination is handed. Pure: no I/O, `now` is
//! an argument.
//!
//! Its rules, in the order they apply:
//! 1. a packet with id 0 has no identity and is never relayed (the firmware does the same);
//! 2. what an attached radio itself originates (its own telemetry, its implicit ACKs), or what
//!    is addressed to it, is local state, not mesh traffic (radios only: [`Heard::local`]);
//! 3. a packet that was not decrypted is on a channel this hub does not hold; admin packets are
//!    never relayed, nor one whose hop fields exceed the mesh's 7 (no LoRa header carries
//!    that: it was forged on an API, a broker or a neighbour hub);
//! 4. routes: traffic on a route's channel heard on one of its endpoints goes to the endpoints
//!    on the other side, on the mapped channel, never back to the endpoint it came from;
//! 5. hubs: a packet a neighbour hub delivered after crossing more than `federation.max_hops`
//!    hubs is dropped, and one goes on to another hub only while the hubs it will have crossed
//!    stay within that limit (with the seen-set, this is what ends a triangle's loop);
//! 6. the packet is stored once, as heard: encrypted with its channel's key (which gives back
//!    the sender's own ciphertext, AES-CTR being deterministic for one (from, id)), keeping its
//!    `from`, `id` and payload bytes. [`Router::render`] re-encrypts it for the destination's
//!    channel when it goes out, which is the identity when the keys are the same.
//!
//! Deduplication is not here: the store's seen-set decides, durably, in the same transaction
//! that queues the deliveries, so "heard by two radios", "heard on a radio and on MQTT" and
//! "heard again after a restart" are the same case.

use std::collections::{HashMap, HashSet};

use mesh_core::{ChannelKey, Class, NodeId, Packet, proto};

use crate::config::{Config, EndpointKind, TtlSection};

/// The channel name PKI direct messages are kept under: they are encrypted for one node, not
/// with a channel key, so they are stored (and relayed to a radio) as they are, and a radio
/// publishes and takes them on the firmware's `PKI` topic.
pub const PKI: &str = "PKI";
use crate::store::{Delivery, Inbound, Millis, NewDelivery};

/// One direction of a route: `channel` heard on endpoint `from` goes to `to_channel` on
/// endpoint `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leg {
    /// Source endpoint.
    from: String,
    /// Channel name there.
    channel: String,
    /// Destination endpoint.
    to: String,
    /// Channel name there.
    to_channel: String,
    /// Hop limit on arrival when the destination is a radio.
    hops: u8,
}

/// A packet as an endpoint handed it over, decoded.
#[derive(Debug, Clone, Copy)]
pub struct Heard<'a> {
    /// The endpoint's configured name.
    pub source: &'a str,
    /// The name of the channel it was heard on.
    pub channel: &'a str,
    /// The packet, decoded (its payload readable).
    pub packet: &'a Packet,
    /// For a radio, its own node: what it originates or is addressed is not relayed.
    pub local: Option<NodeId>,
    /// For a neighbour hub's delivery, where it started and how far it came.
    pub federated: Option<Federated>,
}

/// How a packet a neighbour hub delivered travelled before it came here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Federated {
    /// The gateway that first put it on the federation: named again to the next hub.
    pub origin: NodeId,
    /// Hubs it has crossed to reach this one (1 when it was heard on the neighbour's own
    /// mesh): what the hop limit counts.
    pub hops: u8,
}

/// Why a heard packet is not relayed. Bounded, so it can label a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ignored {
    /// Packet id 0: no identity.
    NoId,
    /// Originated by the attached radio itself.
    OwnRadio,
    /// Addressed to the attached radio itself.
    ToOwnRadio,
    /// Not decrypted (a channel this hub does not hold).
    Undecryptable,
    /// Admin traffic is never relayed.
    Admin,
    /// No route takes this channel from this endpoint.
    NoRoute,
    /// The channel's key is not configured.
    UnknownChannel,
    /// A neighbour hub delivered it after more hubs than `federation.max_hops`.
    TooManyHops,
    /// Its `hop_limit` or `hop_start` is above the mesh's 7: forged, not heard on the air.
    HopFields,
}

impl Ignored {
    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::NoId => "no-id",
            Ignored::OwnRadio => "own-radio",
            Ignored::ToOwnRadio => "to-own-radio",
            Ignored::Undecryptable => "undecryptable",
            Ignored::Admin => "admin",
            Ignored::NoRoute => "no-route",
            Ignored::UnknownChannel => "unknown-channel",
            Ignored::TooManyHops => "hops",
            Ignored::HopFields => "hops",
        }
    }

    /// Whether this is abuse or damage an operator should see counted (`/metrics`
    /// `archipel_dropped_total` by reason), as opposed to the normal life of a mesh: its own
    /// radio's telemetry, traffic on a channel no route takes, a packet without an id.
    pub fn is_abuse(self) -> bool {
        matches!(
            self,
            Ignored::Admin | Ignored::TooManyHops | Ignored::HopFields
        )
    }
}

/// The router's answer for one heard packet.
#[derive(Debug)]
pub enum Decision {
    /// Queue these deliveries (subject to the seen-set).
    Relay(Inbound),
    /// Nothing to do, and why.
    Ignore(Ignored),
}

/// What a destination is handed for one delivery.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The packet encrypted for the destination channel (`channel` field = its hash).
    pub packet: Packet,
    /// The destination channel's name.
    pub channel: String,
    /// That channel's key, for a destination that shows the content (JSON, XMPP).
    pub key: ChannelKey,
    /// Hop limit on arrival, for radios.
    pub hops: u8,
}

impl Rendered {
    /// The packet decoded, for destinations that show what it says.
    pub fn decoded(&self) -> Option<Packet> {
        if self.packet.data().is_some() {
            return Some(self.packet.clone());
        }
        self.packet.decrypt(&self.key).ok()
    }
}

/// Why a queued delivery cannot be rendered (it is set aside, never retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The stored packet does not decode.
    #[error("stored packet is unreadable: {0}")]
    Unreadable(String),
    /// A channel of the delivery has no key in the configuration any more.
    #[error("channel `{0}` is no longer configured")]
    UnknownChannel(String),
    /// The stored packet does not decrypt with its channel's key.
    #[error("stored packet does not decrypt with the key of channel `{0}`")]
    WrongKey(String),
}

/// The routing table and channel keys, compiled from the configuration.
#[derive(Debug, Clone)]
pub struct Router {
    /// Every direction of every route.
    legs: Vec<Leg>,
    /// Channel keys by name, one table for every endpoint kind.
    keys: HashMap<String, ChannelKey>,
    /// How long each class may wait.
    ttl: TtlSection,
    /// Endpoints that show what people say (XMPP): they take a channel's broadcast texts and
    /// nothing else from route legs; direct messages reach them only addressed
    /// ([`Router::addressed`]) to one of their people.
    text_only: HashSet<String>,
    /// Neighbour hubs: a delivery to one counts a hop, and none goes beyond `max_hops`.
    peers: HashSet<String>,
    /// `federation.max_hops`: the most hubs a message may cross.
    max_hops: u8,
}

/// A packet for named destinations, outside the route legs: a direct message between a mesh
/// node and an XMPP user, the NodeInfo that introduces a virtual node, an acknowledgement.
#[derive(Debug, Clone, Copy)]
pub struct Addressed<'a> {
    /// The endpoint it came from.
    pub source: &'a str,
    /// Where it goes.
    pub destinations: &'a [String],
    /// The channel it is encrypted for at rest: a configured channel, or [`PKI`] for a packet
    /// kept as it is (PKI ciphertext, or a PKI message already read for an XMPP user).
    pub channel: &'a str,
    /// Its drain class (a virtual node's introduction goes with what it introduces).
    pub class: Class,
    /// Hop limit on arrival, for radios.
    pub hops: u8,
}

impl Router {
    /// Compiles the routes and channels of a validated configuration.
    pub fn new(config: &Config) -> Router {
        let mut legs = Vec::new();
        for route in &config.routes {
            let to_channel = route
                .to_channel
                .clone()
                .unwrap_or_else(|| route.channel.clone());
            for from in &route.from {
                for to in &route.to {
                    let leg =
                        |from: &String, channel: &String, to: &String, to_channel: &String| Leg {
                            from: from.clone(),
                            channel: channel.clone(),
                            to: to.clone(),
                            to_channel: to_channel.clone(),
                            hops: route.hops,
                        };
                    legs.push(leg(from, &route.channel, to, &to_channel));
                    if !route.one_way {
                        legs.push(leg(to, &to_channel, from, &route.channel));
                    }
                }
            }
        }
        let mut unique = Vec::with_capacity(legs.len());
        for leg in legs {
            if !unique.contains(&leg) {
                unique.push(leg);
            }
        }
        let keys = config
            .channel_table()
            .iter()
            .map(|(name, entry)| (name.to_owned(), entry.key.clone()))
            .collect();
        let text_only = config
            .endpoints()
            .filter(|e| e.kind() == EndpointKind::Xmpp)
            .map(|e| e.name().to_owned())
            .collect();
        let peers = config
            .endpoints()
            .filter(|e| e.kind() == EndpointKind::Peer)
            .map(|e| e.name().to_owned())
            .collect();
        Router {
            legs: unique,
            keys,
            ttl: config.store.ttl.clone(),
            text_only,
            peers,
            max_hops: config.federation.max_hops,
        }
    }

    /// The destinations a route takes `channel` to from `source`, with the channel there and
    /// the hop limit on arrival.
    pub fn destinations(&self, source: &str, channel: &str) -> Vec<(String, String, u8)> {
        let mut out: Vec<(String, String, u8)> = Vec::new();
        for leg in self
            .legs
            .iter()
            .filter(|l| l.from == source && l.channel == channel && l.to != source)
        {
            if !out.iter().any(|(to, _, _)| *to == leg.to) {
                out.push((leg.to.clone(), leg.to_channel.clone(), leg.hops));
            }
        }
        out
    }

    /// Every channel a route takes to or from `endpoint`, each once (an XMPP endpoint's
    /// rooms).
    pub fn channels_of(&self, endpoint: &str) -> Vec<String> {
        let mut channels: Vec<String> = Vec::new();
        for leg in &self.legs {
            let channel = if leg.from == endpoint {
                &leg.channel
            } else if leg.to == endpoint {
                &leg.to_channel
            } else {
                continue;
            };
            if !channels.contains(channel) {
                channels.push(channel.clone());
            }
        }
        channels
    }

    /// The key of a configured channel.
    pub fn key(&self, channel: &str) -> Option<&ChannelKey> {
        self.keys.get(channel)
    }

    /// Queues `packet` (decoded, or PKI ciphertext under [`PKI`]) for the named destinations
    /// alone, keeping its `from` and `id`, stored encrypted with its channel's key (a [`PKI`]
    /// packet as it is).
    #[must_use]
    pub fn addressed(&self, a: Addressed<'_>, packet: &Packet, now: Millis) -> Decision {
        if packet.id().is_unset() {
            return Decision::Ignore(Ignored::NoId);
        }
        let stored = if a.channel == PKI {
            packet.clone()
        } else {
            let Some(key) = self.keys.get(a.channel) else {
                return Decision::Ignore(Ignored::UnknownChannel);
            };
            packet.encrypt(a.channel, key)
        };
        let expires_at =
            now.saturating_add(i64::try_from(self.ttl.of(a.class).as_millis()).unwrap_or(i64::MAX));
        Decision::Relay(Inbound {
            from: packet.from(),
            id: packet.id(),
            class: a.class,
            source: a.source.to_owned(),
            channel: a.channel.to_owned(),
            packet: stored.encode(),
            origin: None,
            expires_at,
            deliveries: a
                .destinations
                .iter()
                .map(|d| NewDelivery {
                    destination: d.clone(),
                    to_channel: None,
                    hops: a.hops,
                })
                .collect(),
        })
    }

    /// Reads a packet heard encrypted (a radio's uplink, an MQTT envelope) with the key of
    /// the named channel.
    pub fn decrypt(&self, channel: &str, packet: &Packet) -> Option<Packet> {
        packet.decrypt(self.keys.get(channel)?).ok()
    }

    /// True when some route takes `channel` from endpoint `source`.
    pub fn routes_from(&self, source: &str, channel: &str) -> bool {
        self.legs
            .iter()
            .any(|l| l.from == source && l.channel == channel)
    }

    /// True when some route delivers `channel` to endpoint `destination`.
    pub fn routes_to(&self, destination: &str, channel: &str) -> bool {
        self.legs
            .iter()
            .any(|l| l.to == destination && l.to_channel == channel)
    }

    /// The channels routed from `source`, each once (what an MQTT endpoint subscribes to).
    pub fn channels_from(&self, source: &str) -> Vec<String> {
        let mut channels: Vec<String> = Vec::new();
        for leg in self.legs.iter().filter(|l| l.from == source) {
            if !channels.contains(&leg.channel) {
                channels.push(leg.channel.clone());
            }
        }
        channels
    }

    /// Decides what happens to one heard packet.
    #[must_use]
    pub fn route(&self, heard: Heard<'_>, now: Millis) -> Decision {
        let p = heard.packet;
        if p.id().is_unset() {
            return Decision::Ignore(Ignored::NoId);
        }
        if let Some(local) = heard.local {
            if p.from() == local || p.from() == NodeId::LOCAL {
                return Decision::Ignore(Ignored::OwnRadio);
            }
            if p.to() == local {
                return Decision::Ignore(Ignored::ToOwnRadio);
            }
        }
        let Some(data) = p.data() else {
            return Decision::Ignore(Ignored::Undecryptable);
        };
        if data.portnum == proto::PortNum::AdminApp as i32 {
            return Decision::Ignore(Ignored::Admin);
        }
        // The raw fields: the packet's accessors clamp to what a LoRa header can carry.
        let max = u32::from(mesh_core::packet::HOP_MAX);
        if p.meta().hop_limit > max || p.meta().hop_start > max {
            return Decision::Ignore(Ignored::HopFields);
        }
        let crossed = heard.federated.map_or(0, |f| f.hops);
        if crossed > self.max_hops {
            return Decision::Ignore(Ignored::TooManyHops);
        }
        let mut deliveries: Vec<NewDelivery> = Vec::new();
        for leg in self.legs.iter().filter(|l| {
            l.from == heard.source && l.channel == heard.channel && l.to != heard.source
        }) {
            if !self.keys.contains_key(&leg.to_channel) {
                continue;
            }
            if self.text_only.contains(&leg.to)
                && (!p.to().is_broadcast() || data.portnum != proto::PortNum::TextMessageApp as i32)
            {
                continue;
            }
            let hops = if self.peers.contains(&leg.to) {
                if crossed >= self.max_hops {
                    continue;
                }
                crossed + 1
            } else {
                leg.hops
            };
            deliveries.push(NewDelivery {
                destination: leg.to.clone(),
                to_channel: (leg.to_channel != heard.channel).then(|| leg.to_channel.clone()),
                hops,
            });
        }
        if deliveries.is_empty() {
            return Decision::Ignore(Ignored::NoRoute);
        }
        let Some(key) = self.keys.get(heard.channel) else {
            return Decision::Ignore(Ignored::UnknownChannel);
        };
        let class = Class::of(p);
        let expires_at =
            now.saturating_add(i64::try_from(self.ttl.of(class).as_millis()).unwrap_or(i64::MAX));
        Decision::Relay(Inbound {
            from: p.from(),
            id: p.id(),
            class,
            source: heard.source.to_owned(),
            channel: heard.channel.to_owned(),
            packet: p.encrypt(heard.channel, key).encode(),
            origin: heard.federated.map(|f| f.origin),
            expires_at,
            deliveries,
        })
    }

    /// A text a tool asks one of our radios to send as itself (an MQTT JSON `sendtext`): queued
    /// for that radio alone, on its `channel`, through the same outbox and governor as relayed
    /// traffic. `packet` is decoded, from [`NodeId::LOCAL`] (the radio becomes its sender), with
    /// its id set.
    #[must_use]
    pub fn originate(
        &self,
        source: &str,
        radio: &str,
        channel: &str,
        packet: &Packet,
        now: Millis,
    ) -> Decision {
        if packet.id().is_unset() {
            return Decision::Ignore(Ignored::NoId);
        }
        let Some(key) = self.keys.get(channel) else {
            return Decision::Ignore(Ignored::UnknownChannel);
        };
        let class = Class::of(packet);
        let expires_at =
            now.saturating_add(i64::try_from(self.ttl.of(class).as_millis()).unwrap_or(i64::MAX));
        Decision::Relay(Inbound {
            from: packet.from(),
            id: packet.id(),
            class,
            source: source.to_owned(),
            channel: channel.to_owned(),
            packet: packet.encrypt(channel, key).encode(),
            origin: None,
            expires_at,
            deliveries: vec![NewDelivery {
                destination: radio.to_owned(),
                to_channel: None,
                hops: 0,
            }],
        })
    }

    /// What a queued delivery's destination is handed: the stored packet, re-encrypted for
    /// the destination channel when its key differs.
    pub fn render(&self, d: &Delivery) -> Result<Rendered, RenderError> {
        let stored = Packet::decode(d.packet.clone().into())
            .map_err(|e| RenderError::Unreadable(e.to_string()))?;
        if d.channel == PKI {
            return Ok(Rendered {
                packet: stored,
                channel: PKI.to_owned(),
                key: ChannelKey::None,
                hops: d.hops,
            });
        }
        let from_key = self
            .keys
            .get(&d.channel)
            .ok_or_else(|| RenderError::UnknownChannel(d.channel.clone()))?;
        let to_key = self
            .keys
            .get(&d.to_channel)
            .ok_or_else(|| RenderError::UnknownChannel(d.to_channel.clone()))?;
        let packet = if d.to_channel == d.channel {
            stored
        } else {
            stored
                .decrypt(from_key)
                .map_err(|_| RenderError::WrongKey(d.channel.clone()))?
                .encrypt(&d.to_channel, to_key)
        };
        Ok(Rendered {
            packet,
            channel: d.to_channel.clone(),
            key: to_key.clone(),
            hops: d.hops,
        })
    }
}

#[cfg(test)]
mod tests;
