//! The phone-side node database of a device: what it learns from what it hears, with the
//! firmware's pinning of public keys (the `keys` module).

use mesh_core::{NodeId, Packet, PrivateKey, PublicKey, proto};
use prost::Message;

use super::Device;
use crate::sim::keys::{UserUpdate, user_update};

impl Device {
    /// Updates the node database from a decoded packet heard on the mesh.
    pub(super) fn learn(&mut self, packet: &Packet, channel: u8) {
        let from = packet.from();
        if from == self.profile.node || from.is_broadcast() || from == NodeId::LOCAL {
            return;
        }
        let meta = packet.meta();
        let entry = self.nodes.entry(from).or_insert_with(|| unknown_node(from));
        entry.last_heard = meta.rx_time;
        entry.snr = meta.rx_snr;
        entry.channel = u32::from(channel);
        entry.via_mqtt = meta.via_mqtt;
        if packet.hop_start() > 0 {
            entry.hops_away = Some(u32::from(
                packet.hop_start().saturating_sub(packet.hop_limit()),
            ));
        }
        let Some(data) = packet.data() else {
            return;
        };
        match proto::PortNum::try_from(data.portnum) {
            Ok(proto::PortNum::NodeinfoApp) => {
                let Ok(mut user) = proto::User::decode(&data.payload[..]) else {
                    return;
                };
                let stored = entry
                    .user
                    .as_ref()
                    .filter(|_| self.announced.contains(&from))
                    .and_then(|u| PublicKey::from_user_field(&u.public_key).ok().flatten());
                let own = self
                    .profile
                    .private_key
                    .as_ref()
                    .map(PrivateKey::public_key);
                match user_update(stored.as_ref(), &user, own.as_ref()) {
                    UserUpdate::Take(_) => {
                        user.id = from.to_string();
                        entry.user = Some(user);
                        self.announced.insert(from);
                    }
                    verdict => {
                        tracing::debug!(node = %self.profile.node, %from, ?verdict, "NodeInfo dropped");
                    }
                }
            }
            Ok(proto::PortNum::PositionApp) => {
                if let Ok(position) = proto::Position::decode(&data.payload[..]) {
                    entry.position = Some(position);
                }
            }
            Ok(proto::PortNum::TelemetryApp) => {
                if let Ok(proto::Telemetry {
                    variant: Some(proto::telemetry::Variant::DeviceMetrics(m)),
                    ..
                }) = proto::Telemetry::decode(&data.payload[..])
                {
                    entry.device_metrics = Some(m);
                }
            }
            _ => {}
        }
    }
}

/// A node heard but never announced: the firmware's default names.
pub(super) fn unknown_node(id: NodeId) -> proto::NodeInfo {
    let short = format!("{:04x}", id.get() & 0xffff);
    proto::NodeInfo {
        num: id.get(),
        user: Some(proto::User {
            id: id.to_string(),
            long_name: format!("Meshtastic {short}"),
            short_name: short,
            ..Default::default()
        }),
        ..Default::default()
    }
}
