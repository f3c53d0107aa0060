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
    /// Counts one refusal.
    pub fn count(&mut self, why: DownlinkDrop) {
        let counter = match why {
            DownlinkDrop::Ignored => &mut self.ignored,
            DownlinkDrop::Malformed => &mut self.malformed,
            DownlinkDrop::NoDownlink => &mut self.no_downlink,
            DownlinkDrop::Own => &mut self.own,
            DownlinkDrop::Invalid => &mut self.invalid,
            DownlinkDrop::Undecryptable => &mut self.undecryptable,
            DownlinkDrop::LegacyDm => &mut self.legacy_dm,
            DownlinkDrop::PkiUnknownNodes => &mut self.pki_unknown_nodes,
        };
        *counter += 1;
    }

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
    /// Refusals are counted in [`Device::downlink_drops`].
    pub(super) fn mqtt_downlink(
        &mut self,
        m: proto::MqttClientProxyMessage,
    ) -> Result<Packet, DownlinkDrop> {
        let verdict = self.judge_downlink(m);
        if let Err(why) = verdict {
            self.downlink_drops.count(why);
        }
        verdict
    }

    fn judge_downlink(&self, m: proto::MqttClientProxyMessage) -> Result<Packet, DownlinkDrop> {
        use proto::mqtt_client_proxy_message::PayloadVariant as P;
        if !self.profile.mqtt_proxy || self.session != Session::Live {
            return Err(DownlinkDrop::Ignored);
        }
        let Some(P::Data(data)) = m.payload_variant else {
            return Err(DownlinkDrop::Malformed);
        };
        match Topic::parse_under(&self.profile.mqtt_root, &m.topic) {
            Ok(t) if t.kind == TopicKind::Encrypted => {}
            Ok(_) => return Err(DownlinkDrop::Malformed),
            Err(e) => {
                tracing::debug!(error = %e, "downlink on a topic this radio does not follow");
                return Err(DownlinkDrop::Malformed);
            }
        }
        let envelope = Envelope::decode(&data).map_err(|e| {
            tracing::debug!(error = %e, topic = ?m.topic, "invalid MQTT service envelope");
            DownlinkDrop::Malformed
        })?;
        let me = self.profile.node;
        let p = &envelope.packet;
        let dropped = |why: DownlinkDrop| {
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
            return Err(dropped(DownlinkDrop::NoDownlink));
        }
        if envelope.gateway_id.node() == Some(me) || p.from() == me {
            return Err(dropped(DownlinkDrop::Own));
        }
        let hop_max = u32::from(mesh_core::packet::HOP_MAX);
        if p.from() == NodeId::BROADCAST
            || p.meta().hop_limit > hop_max
            || p.meta().hop_start > hop_max
        {
            return Err(dropped(DownlinkDrop::Invalid));
        }
        if p.data().is_some() {
            return Err(dropped(DownlinkDrop::Undecryptable));
        }
        match entry {
            _ if envelope.is_pki() => {
                let known = |n: NodeId| self.announced.contains(&n);
                if p.to() != me && !(known(p.from()) && known(p.to())) {
                    return Err(dropped(DownlinkDrop::PkiUnknownNodes));
                }
            }
            Some(entry) => {
                let plain = (p.channel() == u32::from(entry.hash))
                    .then(|| p.decrypt(&entry.key).ok())
                    .flatten()
                    .ok_or_else(|| dropped(DownlinkDrop::Undecryptable))?;
                if self.profile.private_key.is_some()
                    && p.to() == me
                    && plain.portnum() == Some(proto::PortNum::TextMessageApp)
                {
                    return Err(dropped(DownlinkDrop::LegacyDm));
                }
            }
            None => return Err(dropped(DownlinkDrop::NoDownlink)),
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
        // The firmware's test: no channel hash, one destination, not us (`handleReceived`).
        let to = heard.to();
        if heard.channel() != 0 || to.is_broadcast() || to == self.profile.node {
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

/// Why a downlink message was refused; each has its counter in [`DownlinkDrops`], whose
/// fields say what they mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownlinkDrop {
    /// See [`DownlinkDrops::ignored`].
    Ignored,
    /// See [`DownlinkDrops::malformed`].
    Malformed,
    /// See [`DownlinkDrops::no_downlink`].
    NoDownlink,
    /// See [`DownlinkDrops::own`].
    Own,
    /// See [`DownlinkDrops::invalid`].
    Invalid,
    /// See [`DownlinkDrops::undecryptable`].
    Undecryptable,
    /// See [`DownlinkDrops::legacy_dm`].
    LegacyDm,
    /// See [`DownlinkDrops::pki_unknown_nodes`].
    PkiUnknownNodes,
}
