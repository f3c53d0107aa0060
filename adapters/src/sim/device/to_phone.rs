//! What a device keeps for a client that is away: the firmware's separate to-phone queues
//! (`MeshService`: `toPhoneQueue`, `toPhoneQueueStatusQueue`, `toPhoneMqttProxyQueue`,
//! `toPhoneClientNotificationQueue`), each bounded and each dropping as the firmware does:
//!
//! | queue               | bound (v2.7.26, `mesh-pb-constants.h`) | when full (`MeshService.cpp`)                     |
//! |---------------------|----------------------------------------|---------------------------------------------------|
//! | mesh packets        | `MAX_RX_TOPHONE` 32 (8 on classic ESP32) | a text or range test pushes out the oldest; anything else is dropped |
//! | queue statuses      | `MAX_RX_QUEUESTATUS_TOPHONE` 2        | the oldest is dropped                              |
//! | MQTT proxy messages | `MAX_RX_MQTTPROXY_TOPHONE` 8          | the oldest is dropped                              |
//! | client notifications| `MAX_RX_NOTIFICATION_TOPHONE` 2       | the oldest is dropped                              |
//!
//! The simulated radios run the Linux build, which keeps 32 packets. When a client completes
//! its handshake the queues drain in the order `PhoneAPI::getFromRadio` takes them: queue
//! statuses, MQTT proxy messages, notifications, then packets. Every drop is counted.

use std::collections::VecDeque;
use std::ops::AddAssign;

use mesh_core::proto::{self, PortNum, from_radio::PayloadVariant as Out};

/// Mesh packets kept (`MAX_RX_TOPHONE` on the Linux build).
pub const MAX_PACKETS: usize = 32;
/// Queue statuses kept (`MAX_RX_QUEUESTATUS_TOPHONE`).
pub const MAX_QUEUE_STATUS: usize = 2;
/// MQTT client proxy messages kept (`MAX_RX_MQTTPROXY_TOPHONE`).
pub const MAX_MQTT_PROXY: usize = 8;
/// Client notifications kept (`MAX_RX_NOTIFICATION_TOPHONE`).
pub const MAX_NOTIFICATIONS: usize = 2;

/// What the to-phone queues dropped, by queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ToPhoneDrops {
    /// Mesh packets (including ACKs and NAKs for the client).
    pub packets: u64,
    /// Queue statuses.
    pub queue_status: u64,
    /// MQTT client proxy messages (the radio's uplink).
    pub mqtt_proxy: u64,
    /// Client notifications.
    pub notifications: u64,
}

impl ToPhoneDrops {
    /// Nothing dropped.
    pub fn is_empty(&self) -> bool {
        *self == ToPhoneDrops::default()
    }

    /// Everything dropped, whatever the queue.
    pub fn total(&self) -> u64 {
        self.packets + self.queue_status + self.mqtt_proxy + self.notifications
    }
}

impl AddAssign for ToPhoneDrops {
    fn add_assign(&mut self, other: ToPhoneDrops) {
        self.packets += other.packets;
        self.queue_status += other.queue_status;
        self.mqtt_proxy += other.mqtt_proxy;
        self.notifications += other.notifications;
    }
}

/// The four queues. See the module doc.
#[derive(Debug, Default)]
pub(super) struct ToPhone {
    /// Mesh packets for the client.
    packets: VecDeque<proto::FromRadio>,
    /// Queue statuses (answers to client packets, and the self-sent ones).
    queue_status: VecDeque<proto::FromRadio>,
    /// The radio's MQTT uplink, for a client that proxies it.
    mqtt_proxy: VecDeque<proto::FromRadio>,
    /// Notices for the user.
    notifications: VecDeque<proto::FromRadio>,
    /// Drops since the device started, for the simulator's API.
    dropped: ToPhoneDrops,
    /// Drops since the queues last drained: one absence of the client, logged as one burst.
    burst: ToPhoneDrops,
}

impl ToPhone {
    /// Keeps `msg` for the next client. Returns true when this is the first drop of a burst,
    /// so the caller can say so once.
    pub(super) fn keep(&mut self, msg: proto::FromRadio) -> bool {
        let mut drop = ToPhoneDrops::default();
        match &msg.payload_variant {
            Some(Out::QueueStatus(_)) => {
                drop.queue_status = push_oldest_out(&mut self.queue_status, MAX_QUEUE_STATUS, msg);
            }
            Some(Out::MqttClientProxyMessage(_)) => {
                drop.mqtt_proxy = push_oldest_out(&mut self.mqtt_proxy, MAX_MQTT_PROXY, msg);
            }
            Some(Out::ClientNotification(_)) => {
                drop.notifications =
                    push_oldest_out(&mut self.notifications, MAX_NOTIFICATIONS, msg);
            }
            _ if self.packets.len() < MAX_PACKETS => self.packets.push_back(msg),
            _ => {
                if pushes_out_the_oldest(&msg) {
                    self.packets.pop_front();
                    self.packets.push_back(msg);
                }
                drop.packets = 1;
            }
        }
        if drop.is_empty() {
            return false;
        }
        let first = self.burst.is_empty();
        self.burst += drop;
        self.dropped += drop;
        first
    }

    /// Everything kept, in the order the firmware hands it out, and what was dropped since the
    /// last drain (then forgotten: the next absence is a new burst).
    pub(super) fn drain(&mut self) -> (Vec<proto::FromRadio>, ToPhoneDrops) {
        let mut out = Vec::new();
        out.extend(self.queue_status.drain(..));
        out.extend(self.mqtt_proxy.drain(..));
        out.extend(self.notifications.drain(..));
        out.extend(self.packets.drain(..));
        (out, std::mem::take(&mut self.burst))
    }

    /// Drops since the device started.
    pub(super) fn dropped(&self) -> ToPhoneDrops {
        self.dropped
    }
}

/// Appends to a bounded queue that drops its oldest when full; returns how many it dropped.
fn push_oldest_out(
    queue: &mut VecDeque<proto::FromRadio>,
    max: usize,
    msg: proto::FromRadio,
) -> u64 {
    let dropped = if queue.len() >= max {
        queue.pop_front();
        1
    } else {
        0
    };
    queue.push_back(msg);
    dropped
}

/// Whether a packet for a full queue takes the oldest one's place (texts and range tests,
/// which people read) or is itself dropped (everything else).
fn pushes_out_the_oldest(msg: &proto::FromRadio) -> bool {
    let Some(Out::Packet(p)) = &msg.payload_variant else {
        return false;
    };
    let Some(proto::mesh_packet::PayloadVariant::Decoded(d)) = &p.payload_variant else {
        return false;
    };
    d.portnum == PortNum::TextMessageApp as i32 || d.portnum == PortNum::RangeTestApp as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(port: PortNum, id: u32) -> proto::FromRadio {
        proto::FromRadio {
            id: 0,
            payload_variant: Some(Out::Packet(proto::MeshPacket {
                id,
                payload_variant: Some(proto::mesh_packet::PayloadVariant::Decoded(proto::Data {
                    portnum: port as i32,
                    ..Default::default()
                })),
                ..Default::default()
            })),
        }
    }

    fn status(free: u32) -> proto::FromRadio {
        proto::FromRadio {
            id: 0,
            payload_variant: Some(Out::QueueStatus(proto::QueueStatus {
                free,
                ..Default::default()
            })),
        }
    }

    fn ids(msgs: &[proto::FromRadio]) -> Vec<u32> {
        msgs.iter()
            .filter_map(|m| match &m.payload_variant {
                Some(Out::Packet(p)) => Some(p.id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_full_packet_queue_keeps_new_texts_and_drops_new_telemetry() {
        let mut q = ToPhone::default();
        for id in 0..MAX_PACKETS as u32 {
            assert!(!q.keep(packet(PortNum::PositionApp, id)));
        }
        assert!(
            q.keep(packet(PortNum::TelemetryApp, 100)),
            "first drop of the burst"
        );
        assert!(
            !q.keep(packet(PortNum::TextMessageApp, 101)),
            "said once per burst"
        );
        let (out, burst) = q.drain();
        let kept = ids(&out);
        assert_eq!(kept.len(), MAX_PACKETS);
        assert_eq!(kept[0], 1, "the text pushed out the oldest");
        assert_eq!(*kept.last().unwrap(), 101);
        assert!(!kept.contains(&100), "the telemetry was dropped itself");
        assert_eq!(burst.packets, 2);
        assert_eq!(q.dropped().packets, 2);
    }

    #[test]
    fn each_queue_has_its_own_bound_and_the_drain_follows_the_firmware_order() {
        let mut q = ToPhone::default();
        q.keep(packet(PortNum::TextMessageApp, 1));
        for free in 0..5 {
            q.keep(status(free));
        }
        let (out, burst) = q.drain();
        assert_eq!(out.len(), 1 + MAX_QUEUE_STATUS);
        assert!(matches!(out[0].payload_variant, Some(Out::QueueStatus(s)) if s.free == 3));
        assert!(matches!(out[2].payload_variant, Some(Out::Packet(_))));
        assert_eq!(
            burst,
            ToPhoneDrops {
                queue_status: 3,
                ..Default::default()
            }
        );
        // A new absence starts a new burst; the totals keep counting.
        for free in 0..3 {
            q.keep(status(free));
        }
        assert_eq!(q.drain().1.queue_status, 1);
        assert_eq!(q.dropped().queue_status, 4);
    }
}
