//! What an MQTT downlink message must pass before it may reach a radio. A broker is shared
//! with other gateways and tools, so everything on it is untrusted input; the rules follow the
//! firmware's own downlink checks (reference §5.4) and add a per-sender rate limit, since one
//! misconfigured downlink "can send a mesh into a tailspin" (§5.6). Pure: `now` is an argument.

use std::time::Instant;

use mesh_core::envelope::Envelope;
use mesh_core::{NodeId, Packet, proto};

use crate::ratelimit::{Rate, RateLimiter};

/// Why a downlink message was dropped. Bounded: each is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    /// The topic is not a mesh topic under our root.
    Topic,
    /// The payload is not a ServiceEnvelope.
    Envelope,
    /// A channel no route takes from this endpoint.
    Unrouted,
    /// Our own publish, coming back.
    OwnGateway,
    /// `from` is one of our radios: a spoof or a loop.
    Spoofed,
    /// `from` is the broadcast or the local address.
    BadSender,
    /// Hop fields above the mesh's 7.
    Hops,
    /// Does not decrypt with the channel's key.
    Undecryptable,
    /// Admin traffic is never taken from MQTT.
    Admin,
    /// The sender exceeded its rate.
    RateLimited,
    /// A JSON downlink that is not a valid `sendtext`.
    Json,
    /// A JSON downlink naming a node that is none of our radios.
    NotOurRadio,
    /// A JSON downlink naming a channel index the radio does not have.
    NoSuchChannel,
}

impl Drop {
    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Topic => "topic",
            Drop::Envelope => "envelope",
            Drop::Unrouted => "unrouted",
            Drop::OwnGateway => "own-gateway",
            Drop::Spoofed => "spoofed",
            Drop::BadSender => "bad-sender",
            Drop::Hops => "hops",
            Drop::Undecryptable => "undecryptable",
            Drop::Admin => "admin",
            Drop::RateLimited => "rate-limited",
            Drop::Json => "json",
            Drop::NotOurRadio => "not-our-radio",
            Drop::NoSuchChannel => "no-such-channel",
        }
    }
}

/// The downlink rules of one MQTT endpoint.
#[derive(Debug)]
pub struct DownlinkFilter {
    /// Our gateway id: an envelope carrying it is our own publish coming back.
    gateway: NodeId,
    /// One bucket per sender.
    limiter: RateLimiter<NodeId>,
}

impl DownlinkFilter {
    /// The rules for a gateway publishing as `gateway`, each sender limited to `rate`.
    pub fn new(gateway: NodeId, rate: Rate) -> DownlinkFilter {
        DownlinkFilter {
            gateway,
            limiter: RateLimiter::new(rate, 10_000),
        }
    }

    /// Checks a decoded envelope heard on `channel`: the decoded packet when it passes.
    /// `decrypt` reads the packet with the channel's key; `is_local` tells our radios' nodes.
    pub fn check(
        &mut self,
        envelope: &Envelope,
        decrypt: impl FnOnce(&Packet) -> Option<Packet>,
        is_local: impl Fn(NodeId) -> bool,
        now: Instant,
    ) -> Result<Packet, Drop> {
        if envelope.gateway_id.node() == Some(self.gateway) {
            return Err(Drop::OwnGateway);
        }
        let p = &envelope.packet;
        if is_local(p.from()) {
            return Err(Drop::Spoofed);
        }
        if p.from() == NodeId::BROADCAST || p.from() == NodeId::LOCAL {
            return Err(Drop::BadSender);
        }
        // The raw fields: the packet's accessors clamp to what a LoRa header can carry.
        let max = u32::from(mesh_core::packet::HOP_MAX);
        if p.meta().hop_limit > max || p.meta().hop_start > max {
            return Err(Drop::Hops);
        }
        let decoded = match p.data() {
            Some(_) => p.clone(),
            None => decrypt(p).ok_or(Drop::Undecryptable)?,
        };
        if decoded
            .data()
            .is_some_and(|d| d.portnum == proto::PortNum::AdminApp as i32)
        {
            return Err(Drop::Admin);
        }
        if !self.limiter.allow(&p.from(), now) {
            return Err(Drop::RateLimited);
        }
        Ok(decoded)
    }

    /// Whether a tool's `sendtext` through radio `radio` may pass at `now` (the same limit
    /// per sender: the radio it goes out as).
    pub fn allow_json(&mut self, radio: NodeId, now: Instant) -> bool {
        self.limiter.allow(&radio, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::ChannelKey;
    use mesh_core::envelope::GatewayId;
    use std::time::Duration;

    const GW: NodeId = NodeId::new(0xa7c4_0001);
    const RADIO: NodeId = NodeId::new(0x0a0b_0c0d);

    fn key() -> ChannelKey {
        ChannelKey::from_psk(&[1])
    }

    fn envelope(from: u32, id: u32, gateway: &str) -> Envelope {
        let mut p = Packet::text_message(NodeId::BROADCAST, 0, "from the broker");
        let m = p.meta_mut();
        (m.from, m.id, m.hop_limit, m.hop_start) = (from, id, 0, 3);
        Envelope::new(
            p.encrypt("LongFast", &key()),
            "LongFast",
            GatewayId::parse(gateway),
        )
    }

    fn filter() -> DownlinkFilter {
        DownlinkFilter::new(
            GW,
            Rate {
                per_minute: 60.0,
                burst: 10.0,
            },
        )
    }

    fn check(f: &mut DownlinkFilter, e: &Envelope, now: Instant) -> Result<Packet, Drop> {
        f.check(e, |p| p.decrypt(&key()).ok(), |n| n == RADIO, now)
    }

    #[test]
    fn a_text_from_another_gateway_passes_decoded() {
        let now = Instant::now();
        let p = check(&mut filter(), &envelope(0x1234, 1, "!0badcafe"), now).unwrap();
        assert_eq!(p.text().as_deref(), Some("from the broker"));
    }

    #[test]
    fn each_abuse_is_dropped_for_its_reason() {
        let now = Instant::now();
        let mut f = filter();
        assert_eq!(
            check(&mut f, &envelope(0x1234, 1, &GW.to_string()), now).unwrap_err(),
            Drop::OwnGateway
        );
        assert_eq!(
            check(&mut f, &envelope(RADIO.get(), 1, "!0badcafe"), now).unwrap_err(),
            Drop::Spoofed
        );
        assert_eq!(
            check(&mut f, &envelope(u32::MAX, 1, "!0badcafe"), now).unwrap_err(),
            Drop::BadSender
        );
        let mut hops = envelope(0x1234, 2, "!0badcafe");
        hops.packet.meta_mut().hop_start = 8;
        assert_eq!(check(&mut f, &hops, now).unwrap_err(), Drop::Hops);
        let mut wrong = envelope(0x1234, 3, "!0badcafe");
        wrong.packet = Packet::text_message(NodeId::BROADCAST, 0, "x")
            .encrypt("LongFast", &ChannelKey::from_psk(&[9]));
        wrong.packet.meta_mut().from = 0x1234;
        assert_eq!(check(&mut f, &wrong, now).unwrap_err(), Drop::Undecryptable);
        let admin = Packet::from_data(
            proto::MeshPacket {
                from: 0x1234,
                id: 4,
                ..Default::default()
            },
            proto::Data {
                portnum: proto::PortNum::AdminApp as i32,
                ..Default::default()
            },
        );
        let admin = Envelope::new(
            admin.encrypt("LongFast", &key()),
            "LongFast",
            GatewayId::parse("!0badcafe"),
        );
        assert_eq!(check(&mut f, &admin, now).unwrap_err(), Drop::Admin);
    }

    #[test]
    fn a_thousand_messages_a_second_from_one_node_mostly_never_pass() {
        let t = Instant::now();
        let mut f = filter();
        let passed = (0..1000u32)
            .filter(|i| {
                let e = envelope(0x1234, i + 1, "!0badcafe");
                check(&mut f, &e, t + Duration::from_millis(u64::from(*i))).is_ok()
            })
            .count();
        assert_eq!(passed, 10, "the burst; the next token is a second away");
        assert!(
            check(&mut f, &envelope(0x5678, 1, "!0badcafe"), t).is_ok(),
            "another sender has its own bucket"
        );
    }
}
