//! The MQTT door of a radio: packets relayed from elsewhere go in as client-proxy MQTT
//! downlink, and what the radio publishes on its uplink comes out the same way, both as
//! `ServiceEnvelope`s ([`mesh_core::envelope`]) on the radio's own topic root.

use bytes::Bytes;
use mesh_core::proto::{self, mqtt_client_proxy_message::PayloadVariant as ProxyPayload};
use mesh_core::{DeliveryStatus, Envelope, NodeId, Packet, Topic, TopicChannel, TopicKind};

use super::super::info::RadioInfo;

/// The firmware's pseudo-channel of PKI direct messages on MQTT (`<root>/2/e/PKI/!gw`): the
/// radio takes such a packet from any downlink when it knows both of its ends, and decrypts it
/// only if it is the recipient; everyone else relays it as it is.
pub const PKI_CHANNEL: &str = "PKI";

/// A relayed packet and where it goes.
#[derive(Debug)]
pub(super) struct Relay {
    /// Encrypted for the channel, `channel` set to its hash.
    pub(super) packet: Packet,
    /// Channel name on this radio.
    pub(super) channel: String,
    /// Our gateway id, the envelope's `gateway_id`.
    pub(super) gateway: NodeId,
    /// Hop limit once it is on this radio's mesh.
    pub(super) hops: u8,
}

/// The encoded `ToRadio` that injects `relay`, or why the radio cannot take it: its set-up
/// (unreachable: an operator can fix it while the message waits), or a channel key that differs
/// from the one the packet was encrypted with (rejected: the radio would drop it silently).
pub(super) fn relay_message(info: &RadioInfo, relay: &Relay) -> Result<Bytes, DeliveryStatus> {
    let pki = relay.channel == PKI_CHANNEL;
    let accepts = if pki {
        info.accepts_pki_relay()
    } else {
        info.accepts_relay_on(&relay.channel)
    };
    if let Err(why) = accepts {
        return Err(DeliveryStatus::unreachable(format!(
            "radio cannot take relayed traffic: {why}"
        )));
    }
    let radio_hash = info
        .active_channels()
        .find(|c| info.channel_name(c) == relay.channel)
        .map(|c| mesh_core::channel::channel_hash(&relay.channel, &info.channel_psk(c).expand()));
    if !pki && radio_hash.is_some_and(|h| u32::from(h) != relay.packet.channel()) {
        return Err(DeliveryStatus::rejected(format!(
            "the radio's key for channel `{}` differs from the configured one",
            relay.channel
        )));
    }
    let unusable =
        |e| DeliveryStatus::unreachable(format!("radio's MQTT settings give no usable topic: {e}"));
    let root = info.mqtt_root().map_err(unusable)?;
    let channel = TopicChannel::new(&relay.channel).map_err(unusable)?;
    let mut packet = relay.packet.clone();
    // The radio handles it as heard from MQTT and rebroadcasts it with one hop less.
    packet.meta_mut().hop_limit = u32::from(relay.hops) + 1;
    let envelope = Envelope::new(packet, relay.channel.clone(), relay.gateway);
    let topic = Topic::new(
        root,
        TopicKind::Encrypted,
        channel,
        envelope.gateway_id.clone(),
    )
    .map_err(unusable)?;
    Ok(super::encode_to_radio(
        proto::to_radio::PayloadVariant::MqttClientProxyMessage(proto::MqttClientProxyMessage {
            topic: topic.to_string(),
            retained: false,
            payload_variant: Some(ProxyPayload::Data(envelope.encode())),
        }),
    ))
}

/// What the radio published through us, if it is a mesh packet: an encrypted envelope on a
/// `<root>/2/e/` topic under the radio's root. Other topics (JSON, map reports) are not
/// packets and give `Ok(None)`; a broken envelope is an error for the counters.
pub(super) fn uplink(
    info: &RadioInfo,
    m: proto::MqttClientProxyMessage,
) -> Result<Option<Envelope>, String> {
    let Some(ProxyPayload::Data(data)) = m.payload_variant else {
        return Ok(None);
    };
    let root = info
        .mqtt_root()
        .map_err(|e| format!("uplink under an unusable root: {e}"))?;
    match Topic::parse_under(&root, &m.topic) {
        Ok(t) if t.kind == TopicKind::Encrypted => {}
        Ok(_) | Err(mesh_core::TopicError::NotMeshTopic(_)) => return Ok(None),
        Err(e) => return Err(format!("uplink topic: {e}")),
    }
    Envelope::decode(&data)
        .map(Some)
        .map_err(|e| format!("uplink envelope on {:?}: {e}", m.topic))
}
