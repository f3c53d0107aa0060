//! An MQTT broker as a destination: each delivery is published as the firmware's gateways
//! publish what they hear, a `ServiceEnvelope` with the packet as heard (encrypted) on
//! `<root>/2/e/<channel>/!<gateway id>`, and optionally the firmware's JSON on
//! `<root>/2/json/<channel>/!<gateway id>`; QoS 1, delivered only on the broker's PUBACK of
//! every message it took.

use std::time::Instant;

use archipel_adapters::mqtt::MqttHandle;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use mesh_core::envelope::{Envelope, GatewayId, Root, Topic, TopicChannel, TopicKind};
use mesh_core::{DeliveryStatus, NodeId};

use super::{Prepared, Sink, Stopped};
use crate::router::Rendered;
use crate::store::Delivery;

/// How many publishes may wait for their PUBACK at once (Mosquitto's default in-flight limit
/// per client is 20; more queue in the client, which keeps the link busy while acks return).
const WINDOW: usize = 64;

/// An MQTT link wrapped for the drain worker.
pub struct MqttSink {
    /// The link.
    mqtt: MqttHandle,
    /// The topic root (`msh/EU_868`): where the firmware's consumers look.
    root: Root,
    /// Our gateway id, the envelope's `gateway_id` and the topic's last level: how other
    /// gateways (and our own downlink) recognise what we published.
    gateway: NodeId,
    /// Publish envelopes on `/2/e/` (the firmware's default form).
    encrypted: bool,
    /// Also publish the firmware's JSON on `/2/json/`, decrypted.
    json: bool,
}

impl MqttSink {
    /// A sink publishing under `root` as gateway `gateway`.
    pub fn new(
        mqtt: MqttHandle,
        root: Root,
        gateway: NodeId,
        encrypted: bool,
        json: bool,
    ) -> MqttSink {
        MqttSink {
            mqtt,
            root,
            gateway,
            encrypted,
            json,
        }
    }
}

impl Sink for MqttSink {
    fn window(&self) -> usize {
        WINDOW
    }

    fn ready(&self) -> BoxFuture<'static, Result<(), Stopped>> {
        let mqtt = self.mqtt.clone();
        async move { mqtt.connected().await.map(|_| ()).map_err(|_| Stopped) }.boxed()
    }

    fn prepare(&mut self, _row: &Delivery, out: Rendered, _now: Instant) -> Prepared {
        let channel = match TopicChannel::new(&out.channel) {
            Ok(c) => c,
            Err(e) => return Prepared::Refuse(e.to_string()),
        };
        let topic = |kind| {
            Topic {
                root: self.root.clone(),
                kind,
                channel: channel.clone(),
                gateway: GatewayId::Node(self.gateway),
            }
            .to_string()
        };
        let mut messages: Vec<(String, Bytes)> = Vec::with_capacity(2);
        if self.encrypted {
            let envelope = Envelope::new(out.packet.clone(), out.channel.clone(), self.gateway);
            messages.push((topic(TopicKind::Encrypted), Bytes::from(envelope.encode())));
        }
        if self.json {
            // The firmware's JSON names the channel by its index on the publishing radio; a
            // gateway publishing for a whole archipelago has none, so it says 0 and the
            // topic carries the channel's name.
            match out
                .decoded()
                .map(|p| mesh_core::mqtt_json::uplink_json(&p, 0, self.gateway))
            {
                Some(Ok(json)) => messages.push((topic(TopicKind::Json), Bytes::from(json))),
                Some(Err(e)) if !self.encrypted => return Prepared::Refuse(e.to_string()),
                None if !self.encrypted => {
                    return Prepared::Refuse(format!(
                        "cannot show the packet as JSON: it does not decrypt with the key of `{}`",
                        out.channel
                    ));
                }
                _ => {}
            }
        }
        // Handed to the link now, so publishes keep the drain order whatever order the worker
        // polls the sends in.
        let sends: Vec<_> = messages
            .into_iter()
            .map(|(topic, payload)| self.mqtt.publish(topic, payload))
            .collect();
        let send = async move {
            // Every message must be PUBACKed; the first that is not decides the status.
            for status in futures_util::future::join_all(sends).await {
                if !status.is_delivered() {
                    return status;
                }
            }
            DeliveryStatus::Delivered
        }
        .boxed();
        Prepared::Send {
            send,
            airtime: None,
        }
    }
}
