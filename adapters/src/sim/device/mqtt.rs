//! The MQTT client proxy of a device: downlink the client hands it, uplink it hands the
//! client, both as [`mesh_core::envelope`] `ServiceEnvelope`s under the device's topic root.

use mesh_core::proto::from_radio::PayloadVariant as Out;
use mesh_core::{Envelope, NodeId, Packet, Topic, TopicChannel, TopicKind, proto};

use super::{Device, Session, from_radio};

impl Device {
    /// A message the client publishes for us through the MQTT client proxy, taken as MQTT
    /// downlink is (`MQTT::onReceiveProto`): only an encrypted `ServiceEnvelope` on a channel
    /// with downlink, not from this node or gateway, with sane hop fields, that decrypts with
    /// the channel's key. Returns the packet, still encrypted, with `via_mqtt` set.
    ///
    /// The topic must be `<root>/2/e/...` under this device's root. (The firmware looks only
    /// at the envelope; a gateway that gets the topic wrong would still be caught by a real
    /// broker's subscriptions, so the simulator refuses it outright.)
    pub(super) fn mqtt_downlink(&self, m: proto::MqttClientProxyMessage) -> Option<Packet> {
        use proto::mqtt_client_proxy_message::PayloadVariant as P;
        if !self.profile.mqtt_proxy || self.session != Session::Live {
            return None;
        }
        let Some(P::Data(data)) = m.payload_variant else {
            return None;
        };
        match Topic::parse_under(&self.profile.mqtt_root, &m.topic) {
            Ok(t) if t.kind == TopicKind::Encrypted => {}
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "downlink on a topic this radio does not follow");
                return None;
            }
        }
        let envelope = match Envelope::decode(&data) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::debug!(error = %e, topic = ?m.topic, "invalid MQTT service envelope");
                return None;
            }
        };
        let mut packet = envelope.packet;
        let me = self.profile.node;
        let entry = self
            .profile
            .channels
            .entries()
            .iter()
            .find(|e| e.name == envelope.channel_id)?;
        let sane = envelope.gateway_id.node() != Some(me)
            && packet.from() != me
            && packet.from() != NodeId::BROADCAST
            && packet.meta().hop_limit <= u32::from(mesh_core::packet::HOP_MAX)
            && packet.meta().hop_start <= u32::from(mesh_core::packet::HOP_MAX)
            && packet.channel() == u32::from(entry.hash)
            && packet.decrypt(&entry.key).is_ok();
        if !sane {
            tracing::debug!(from = %packet.from(), id = %packet.id(), channel = ?envelope.channel_id, "downlink dropped");
            return None;
        }
        packet.meta_mut().via_mqtt = true;
        Some(packet)
    }

    /// The client-proxy message that publishes `packet` (encrypted, as heard) on its
    /// channel's uplink topic, or `None` for a channel name no topic can carry.
    pub(super) fn uplink(&self, packet: &Packet, index: u8) -> Option<proto::FromRadio> {
        let channel = self.profile.channels.get(usize::from(index))?.name.clone();
        let envelope = Envelope::new(packet.clone(), channel.clone(), self.profile.node);
        let topic = Topic::new(
            self.profile.mqtt_root.clone(),
            TopicKind::Encrypted,
            TopicChannel::new(&channel).ok()?,
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
