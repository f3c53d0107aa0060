//! What the virtual people send by themselves: chat texts, positions, telemetry and NodeInfo,
//! each at its configured rate with jitter. Apart because it is the world's only source of
//! packets besides the drivers, and none of the rest depends on what it sends.

use std::time::Duration;

use mesh_core::{NodeId, Packet, proto};
use prost::Message;
use rand::Rng;
use rand::seq::IndexedRandom;

use super::{DEFAULT_HOP_LIMIT, TX_QUEUE_LEN, TimerKind, World};
use crate::sim::config::TrafficConfig;

/// Chat lines the virtual people send, picked by the seeded generator.
const PHRASES: &[&str] = &[
    "Water point at the school is open until 6pm",
    "Anyone have a spare 12V battery for the clinic fridge?",
    "Bakery has bread left, come by before 5",
    "Road to the ridge is blocked by a fallen tree",
    "Generator at the community hall is running, phones can charge there",
    "Checking in: all fine on Hill Street",
    "Need two volunteers to carry water to the elderly on Oak Lane",
    "Power back on the east side",
    "The pharmacy opens tomorrow at 9",
    "Who can lend a ladder? Gutter blocked at number 12",
    "Soup kitchen at the church at noon",
    "Radio check, how do you read me?",
    "Mobile network down again, use the mesh",
    "Found a brown dog near the bridge, anyone missing one?",
    "Meeting at the town square at 7 to plan the week",
    "Solar panel on the water tower relay cleaned",
    "Flood warning: keep away from the river path",
    "Bus to the hospital leaves at 10 from the market",
    "Thanks everyone for the help today!",
    "Ops: next check-in at the top of the hour",
    "First aid kit restocked at the library",
    "Battery low here, going quiet until tomorrow",
    "Seeds available at the garden plots, free",
    "Is the north road passable by car?",
];

/// The kinds of packets a node generates by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TrafficKind {
    Text,
    Position,
    Telemetry,
    NodeInfo,
}

impl TrafficKind {
    const ALL: [TrafficKind; 4] = [
        TrafficKind::Text,
        TrafficKind::Position,
        TrafficKind::Telemetry,
        TrafficKind::NodeInfo,
    ];

    fn period(self, traffic: &TrafficConfig) -> Option<f64> {
        match self {
            TrafficKind::Text => traffic.text_every_secs,
            TrafficKind::Position => traffic.position_every_secs,
            TrafficKind::Telemetry => traffic.telemetry_every_secs,
            TrafficKind::NodeInfo => traffic.nodeinfo_every_secs,
        }
    }
}

impl World {
    /// Schedules each generator's first packet at a random moment within one period.
    pub(super) fn start_traffic(&mut self) {
        for node in 0..self.nodes.len() {
            let Some(traffic) = self.nodes[node].traffic.clone() else {
                continue;
            };
            for kind in TrafficKind::ALL {
                let phase = self.rng.random_range(0.0..1.0);
                if let Some(first) = kind.period(&traffic).and_then(|p| secs(p * phase)) {
                    self.schedule(first, TimerKind::Traffic { node, kind });
                }
            }
        }
    }

    pub(super) fn generate(&mut self, idx: usize, kind: TrafficKind) {
        let Some(traffic) = self.nodes[idx].traffic.clone() else {
            return;
        };
        let jitter = self.rng.random_range(0.8..1.2);
        let Some(next) = kind.period(&traffic).and_then(|p| secs(p * jitter)) else {
            return;
        };
        self.schedule(self.now + next, TimerKind::Traffic { node: idx, kind });
        if self.nodes[idx].queue.len() >= TX_QUEUE_LEN {
            return;
        }
        let packet = match kind {
            TrafficKind::Text => {
                let text = PHRASES.choose(&mut self.rng).copied().unwrap_or("hello");
                text_packet(traffic.to, traffic.channel, text)
            }
            TrafficKind::Position => self.position_packet(idx),
            TrafficKind::Telemetry => self.telemetry_packet(idx),
            TrafficKind::NodeInfo => {
                let user = self.nodes[idx].user.clone();
                broadcast_packet(proto::PortNum::NodeinfoApp, user.encode_to_vec())
            }
        };
        if let Err(e) = self.originate(idx, packet) {
            tracing::debug!(node = %self.nodes[idx].id, error = %e, "generated packet not sent");
        }
    }

    fn position_packet(&mut self, idx: usize) -> Packet {
        let (lat, lon) = self.nodes[idx].position;
        let jitter = (
            self.rng.random_range(-0.0002..0.0002),
            self.rng.random_range(-0.0002..0.0002),
        );
        let position = proto::Position {
            latitude_i: Some(((lat + jitter.0) * 1e7) as i32),
            longitude_i: Some(((lon + jitter.1) * 1e7) as i32),
            altitude: Some(170 + self.rng.random_range(0..60)),
            time: self.unix_time(self.now),
            location_source: proto::position::LocSource::LocInternal as i32,
            precision_bits: 32,
            ..Default::default()
        };
        broadcast_packet(proto::PortNum::PositionApp, position.encode_to_vec())
    }

    fn telemetry_packet(&mut self, idx: usize) -> Packet {
        let now = self.now;
        let id = self.nodes[idx].id;
        let channel_utilization = self.node_channel_utilization(id, now).unwrap_or(0.0);
        let air_util_tx = self.air_util_tx(id, now).unwrap_or(0.0);
        let node = &mut self.nodes[idx];
        node.battery -= 0.4;
        if node.battery < 20.0 {
            node.battery = 100.0; // someone recharged it
        }
        let metrics = proto::DeviceMetrics {
            battery_level: Some(node.battery as u32),
            voltage: Some(3.3 + node.battery / 100.0 * 0.9),
            channel_utilization: Some(channel_utilization),
            air_util_tx: Some(air_util_tx),
            uptime_seconds: Some(now.as_secs() as u32),
        };
        let telemetry = proto::Telemetry {
            time: self.unix_time(now),
            variant: Some(proto::telemetry::Variant::DeviceMetrics(metrics)),
        };
        broadcast_packet(proto::PortNum::TelemetryApp, telemetry.encode_to_vec())
    }
}

/// A text on channel `channel`; a direct message asks for an ACK, as the apps do.
pub(super) fn text_packet(to: NodeId, channel: u8, text: &str) -> Packet {
    let meta = proto::MeshPacket {
        to: to.get(),
        channel: u32::from(channel),
        hop_limit: u32::from(DEFAULT_HOP_LIMIT),
        want_ack: !to.is_broadcast(),
        ..Default::default()
    };
    // What the firmware originates always carries the bitfield (OK-to-MQTT off).
    let data = proto::Data {
        portnum: proto::PortNum::TextMessageApp as i32,
        payload: text.as_bytes().to_vec(),
        bitfield: Some(0),
        ..Default::default()
    };
    Packet::from_data(meta, data)
}

/// A broadcast on the primary channel with the default hop limit.
fn broadcast_packet(port: proto::PortNum, payload: Vec<u8>) -> Packet {
    let meta = proto::MeshPacket {
        to: NodeId::BROADCAST.get(),
        hop_limit: u32::from(DEFAULT_HOP_LIMIT),
        ..Default::default()
    };
    Packet::from_data(
        meta,
        proto::Data {
            portnum: port as i32,
            payload,
            bitfield: Some(0),
            ..Default::default()
        },
    )
}

/// Seconds as a duration; `None` for what a validated config never holds (negative, NaN,
/// absurdly large), so an unchecked config cannot make the world panic.
fn secs(value: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(value).ok()
}
