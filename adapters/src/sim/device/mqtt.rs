//! The MQTT client proxy of a device: downlink the client hands it, uplink it hands the
//! client, both as [`mesh_core::envelope`] `ServiceEnvelope`s under the device's topic root.
//!
//! PKI direct messages travel on the `PKI` pseudo-channel (v2.7.26 `MQTT.cpp`):
//!
//! | way | rule |
//! |-----|------|
//! | uplink | a PKI message the radio read is published on `<root>/2/e/PKI/!<gw>` as heard (still encrypted); one between two other nodes, which it cannot read, too, marked `pki_encrypted` (`Router::handleReceived`, `MQTT::onSend`) |
//! | downlink | a `PKI` envelope is taken, still encrypted, only when it is addressed to this radio or both its sender and its destination are announced in the node database; anything else is dropped and counted (`onReceiveProto`) |

use mesh_core::envelope::PKI_CHANNEL;
use mesh_core::proto::from_radio::PayloadVariant as Out;
use mesh_core::{Envelope, NodeId, Packet, Topic, TopicChannel, TopicKind, proto};

use super::{Device, Session, from_radio};

/// What the MQTT client proxy refused since the device started, by reason (all logged at
/// debug level one by one; the totals are what tests and operators look at).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownlinkDrops {
    /// The proxy is off, or no client completed the handshake (the firmware ignores proxy
    /// messages until then).
    pub ignored: u64,
    /// Not data, not an encrypted topic under the radio's root, or not a `ServiceEnvelope`.
    pub malformed: u64,
    /// For a channel the radio has no downlink on.
    pub no_downlink: u64,
    /// Published by this radio, or sent by it: its own traffic coming back.
    pub own: u64,
    /// Hop fields over 7, or a sender that is the broadcast address.
    pub invalid: u64,
    /// A channel packet the channel's key does not read, or a decoded one (the radio's MQTT
    /// encryption is on, so plaintext is refused).
    pub undecryptable: u64,
    /// A channel-key text addressed to this radio, which a radio with PKI refuses
    /// ("Rejecting legacy DM").
    pub legacy_dm: u64,
    /// A PKI message neither for this radio nor between two nodes it knows.
    pub pki_unknown_nodes: u64,
}

impl DownlinkDrops {
    /// Every refusal, whatever the reason.
    pub fn total(&self) -> u64 {
        self.ignored
            + self.malformed
            + self.no_downlink
            + self.own
            + self.invalid
            + self.undecryptable
            + self.legacy_dm
            + self.pki_unknown_nodes
    }
}

impl std::ops::AddAssign for DownlinkDrops {
    fn add_assign(&mut self, o: DownlinkDrops) {
        self.ignored += o.ignored;
        self.malformed += o.malformed;
        self.no_downlink += o.no_downlink;
        self.own += o.own;
        self.invalid += o.invalid;
        self.undecryptable += o.undecryptable;
        self.legacy_dm += o.legacy_dm;
        self.pki_unknown_nodes += o.pki_unknown_nodes;
    }
}

impl Device {
    /// A message the client publishes for us through the MQTT client proxy, taken as MQTT
    /// downlink is (`MQTT::onReceiveProto`): only an encrypted `ServiceEnvelope` on a channel
    /// with downlink (or `PKI`), not from this node or gateway, with sane hop fields; a channel
    /// packet must decrypt with a channel key, a PKI one must pass the rule of the module doc.
    /// Returns the packet, still encrypted, with `via_mqtt` set and nothing else of the
    /// envelope's local fields (PKI status is for the radio to establish).
    ///
    /// The topic must be `<root>/2/e/...` under this device's root. (The firmware looks only
    /// at the envelope; a gateway that gets the topic wrong would still be caught by a real
    /// broker's subscriptions, so the simulator refuses it outright.)
    pub(super) fn mqtt_downlink(&mut self, m: proto::MqttClientProxyMessage) -> Option<Packet> {
        let verdict = self.judge_downlink(m);
        let drops = &mut self.downlink_drops;
        let counter = match verdict {
            Ok(packet) => return Some(packet),
            Err(Refusal::Ignored) => &mut drops.ignored,
            Err(Refusal::Malformed) => &mut drops.malformed,
            Err(Refusal::NoDownlink) => &mut drops.no_downlink,
            Err(Refusal::Own) => &mut drops.own,
            Err(Refusal::Invalid) => &mut drops.invalid,
            Err(Refusal::Undecryptable) => &mut drops.undecryptable,
            Err(Refusal::LegacyDm) => &mut drops.legacy_dm,
            Err(Refusal::PkiUnknownNodes) => &mut drops.pki_unknown_nodes,
        };
        *counter += 1;
        None
    }

    fn judge_downlink(&self, m: proto::MqttClientProxyMessage) -> Result<Packet, Refusal> {
        use proto::mqtt_client_proxy_message::PayloadVariant as P;
        if !self.profile.mqtt_proxy || self.session != Session::Live {
            return Err(Refusal::Ignored);
        }
        let Some(P::Data(data)) = m.payload_variant else {
            return Err(Refusal::Malformed);
        };
        match Topic::parse_under(&self.profile.mqtt_root, &m.topic) {
            Ok(t) if t.kind == TopicKind::Encrypted => {}
            Ok(_) => return Err(Refusal::Malformed),
            Err(e) => {
                tracing::debug!(error = %e, "downlink on a topic this radio does not follow");
                return Err(Refusal::Malformed);
            }
        }
        let envelope = Envelope::decode(&data).map_err(|e| {
            tracing::debug!(error = %e, topic = ?m.topic, "invalid MQTT service envelope");
            Refusal::Malformed
        })?;
        let me = self.profile.node;
        let p = &envelope.packet;
        let dropped = |why: Refusal| {
            tracing::debug!(from = %p.from(), to = %p.to(), id = %p.id(), channel = ?envelope.channel_id, ?why, "downlink dropped");
            why
        };
        let entry = self
            .profile
            .channels
            .entries()
            .iter()
            .find(|e| e.name == envelope.channel_id);
        if entry.is_none() && !envelope.is_pki() {
            return Err(dropped(Refusal::NoDownlink));
        }
        if envelope.gateway_id.node() == Some(me) || p.from() == me {
            return Err(dropped(Refusal::Own));
        }
        let hop_max = u32::from(mesh_core::packet::HOP_MAX);
        if p.from() == NodeId::BROADCAST
            || p.meta().hop_limit > hop_max
            || p.meta().hop_start > hop_max
        {
            return Err(dropped(Refusal::Invalid));
        }
        if p.data().is_some() {
            return Err(dropped(Refusal::Undecryptable));
        }
        match entry {
            _ if envelope.is_pki() => {
                let known = |n: NodeId| self.announced.contains(&n);
                if p.to() != me && !(known(p.from()) && known(p.to())) {
                    return Err(dropped(Refusal::PkiUnknownNodes));
                }
            }
            Some(entry) => {
                let plain = (p.channel() == u32::from(entry.hash))
                    .then(|| p.decrypt(&entry.key).ok())
                    .flatten()
                    .ok_or_else(|| dropped(Refusal::Undecryptable))?;
                if self.profile.private_key.is_some()
                    && p.to() == me
                    && plain.portnum() == Some(proto::PortNum::TextMessageApp)
                {
                    return Err(dropped(Refusal::LegacyDm));
                }
            }
            None => return Err(dropped(Refusal::NoDownlink)),
        }
        let mut packet = envelope.packet;
        let meta = packet.meta_mut();
        meta.via_mqtt = true;
        meta.pki_encrypted = false;
        meta.public_key.clear();
        Ok(packet)
    }

    /// The client-proxy message that publishes `heard` (encrypted, as heard), which the radio
    /// read as `decoded`: on the `PKI` topic for a PKI message, else on its channel's topic.
    /// `None` for a channel name no topic can carry.
    pub(super) fn uplink(&self, heard: &Packet, decoded: &Packet) -> Option<proto::FromRadio> {
        if decoded.meta().pki_encrypted {
            return self.publish(heard.clone(), PKI_CHANNEL);
        }
        let index = usize::try_from(decoded.channel()).ok()?;
        let channel = self.profile.channels.get(index)?.name.clone();
        self.publish(heard.clone(), &channel)
    }

    /// The client-proxy message for a packet the radio could not read: only a PKI message
    /// between two other nodes is published, marked `pki_encrypted`.
    pub(super) fn uplink_unreadable(&self, heard: &Packet) -> Option<proto::FromRadio> {
        if !heard.is_pki() || heard.to() == self.profile.node {
            return None;
        }
        let mut marked = heard.clone();
        marked.meta_mut().pki_encrypted = true;
        self.publish(marked, PKI_CHANNEL)
    }

    fn publish(&self, packet: Packet, channel: &str) -> Option<proto::FromRadio> {
        let envelope = Envelope::new(packet, channel, self.profile.node);
        let topic = Topic::new(
            self.profile.mqtt_root.clone(),
            TopicKind::Encrypted,
            TopicChannel::new(channel).ok()?,
            envelope.gateway_id.clone(),
        )
        .ok()?;
        Some(from_radio(Out::MqttClientProxyMessage(
            proto::MqttClientProxyMessage {
                topic: topic.to_string(),
                retained: false,
                payload_variant: Some(proto::mqtt_client_proxy_message::PayloadVariant::Data(
                    envelope.encode(),
                )),
            },
        )))
    }
}

/// Why a downlink message was refused; one counter of [`DownlinkDrops`] each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Ignored,
    Malformed,
    NoDownlink,
    Own,
    Invalid,
    Undecryptable,
    LegacyDm,
    PkiUnknownNodes,
}
