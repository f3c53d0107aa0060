//! A packet the client hands its radio (`ToRadio.packet`), handled as
//! `PhoneAPI::handleToRadioPacket` and `MeshService::handleToRadio` do: repeats dropped, the
//! phone API's pacing, the fix-ups the firmware applies, the PKI refusals of `perhapsEncode`,
//! and the queue status that answers it.

use std::time::Duration;

use mesh_core::pki::PKI_OVERHEAD;
use mesh_core::proto::from_radio::PayloadVariant as Out;
use mesh_core::proto::mesh_packet::Priority;
use mesh_core::proto::routing::Error as RoutingError;
use mesh_core::{NodeId, PacingClass, Packet, PacketId, PublicKey, proto};
use prost::Message;

use super::{Device, DeviceOutput, QUEUE_FULL, RECENT_IDS, RadioStatus, SENT_MEMORY, from_radio};
use crate::sim::config::MAX_CHANNELS;
use crate::sim::keys::{pki_exempt_channel, pki_port};
use crate::sim::world::{DEFAULT_HOP_LIMIT, MAX_LORA_FRAME};

impl Device {
    pub(super) fn client_packet(
        &mut self,
        mut packet: proto::MeshPacket,
        now: Duration,
        status: RadioStatus,
    ) -> DeviceOutput {
        let mut out = DeviceOutput::default();
        if packet.id != 0 {
            if self.recent_ids.contains(&packet.id) {
                let id = PacketId::new(packet.id);
                tracing::debug!(%id, "ignore packet from client, already seen recently");
                return out;
            }
            if self.recent_ids.len() >= RECENT_IDS {
                self.recent_ids.pop_front();
            }
            self.recent_ids.push_back(packet.id);
        }
        let Some(proto::mesh_packet::PayloadVariant::Decoded(mut data)) =
            packet.payload_variant.take()
        else {
            // The firmware encrypts what it sends itself; a client gives it plaintext.
            let id = self.id_or_new(packet.id);
            out.to_client
                .extend(self.queue_status_for_phone(0, status.tx_queue_free, id.get()));
            let nak = self.routing_packet(id, 0, RoutingError::BadRequest, now);
            out.to_client.extend(self.deliver(nak));
            return out;
        };
        let port = data.portnum;
        let class = proto::PortNum::try_from(port)
            .ok()
            .and_then(PacingClass::of_port);
        if let Some(class) = class
            && self
                .last_sent
                .get(&port)
                .is_some_and(|&t| now.saturating_sub(t) < class.min_spacing())
        {
            tracing::debug!(port, "rate limit: client packet refused");
            out.to_client
                .extend(self.refuse_paced(class, &packet, now, status));
            return out;
        }
        let id = self.id_or_new(packet.id);
        let refuse = |this: &mut Device, error: RoutingError, channel: u8| {
            let mut msgs = this.queue_status_for_phone(0, status.tx_queue_free, id.get());
            let nak = this.routing_packet(id, channel, error, now);
            msgs.extend(this.deliver(nak));
            msgs
        };
        if packet.channel as usize >= self.profile.channels.len().min(MAX_CHANNELS) {
            out.to_client = refuse(self, RoutingError::NoChannel, 0);
            return out;
        }
        let channel = packet.channel as u8;
        if data.bitfield.is_none() {
            // Set on every packet the firmware originates; bit 0 (ok to MQTT) stays off.
            data.bitfield = Some(0);
        }
        if data.encoded_len() + mesh_core::packet::ON_AIR_HEADER > MAX_LORA_FRAME {
            out.to_client = refuse(self, RoutingError::TooLarge, channel);
            return out;
        }
        if let Some(error) = self.pki_refusal(&packet, &data, channel) {
            // `Router::send` gives up before the radio queue: the queue status carries the
            // routing error as its result, then a NAK follows on channel 0.
            tracing::debug!(%id, to = %NodeId::new(packet.to), error = error.as_str_name(), "client packet refused");
            if error == RoutingError::TooLarge {
                out.to_client = refuse(self, error, channel);
                return out;
            }
            if class.is_some() {
                self.last_sent.insert(port, now);
            }
            out.to_client.extend(self.queue_status_for_phone(
                error as i32,
                status.tx_queue_free,
                id.get(),
            ));
            let nak = self.routing_packet(id, 0, error, now);
            out.to_client.extend(self.deliver(nak));
            return out;
        }
        if status.tx_queue_free == 0 {
            out.to_client
                .extend(self.queue_status_for_phone(QUEUE_FULL, 0, id.get()));
            return out;
        }
        let own = self.profile.node.get();
        packet.from = own;
        packet.id = id.get();
        packet.relay_node = 0;
        packet.next_hop = 0;
        packet.rx_time = self.unix_time(now);
        if packet.hop_limit == 0 && packet.want_ack {
            packet.hop_limit = u32::from(DEFAULT_HOP_LIMIT);
        }
        if packet.hop_limit > u32::from(mesh_core::packet::HOP_MAX) {
            packet.hop_limit = u32::from(DEFAULT_HOP_LIMIT);
        }
        packet.hop_start = packet.hop_limit;
        if packet.priority == Priority::Unset as i32 {
            packet.priority = if packet.want_ack {
                Priority::Reliable as i32
            } else {
                Priority::Default as i32
            };
        }
        if packet.want_ack {
            if self.sent.len() >= SENT_MEMORY {
                self.sent.pop_front();
            }
            self.sent.push_back(id);
        }
        if class.is_some() {
            self.last_sent.insert(port, now);
        }
        out.to_mesh.push(Packet::from_data(packet, data));
        let free = status.tx_queue_free.saturating_sub(1);
        out.to_client
            .extend(self.queue_status_for_phone(0, free, id.get()));
        out
    }

    /// The answer to a client packet that came too soon after the last of its port, as
    /// `PhoneAPI::handleToRadioPacket` gives it: a traceroute gets a notification first, a
    /// text a `RATE_LIMIT_EXCEEDED` routing error after; all get their queue status.
    fn refuse_paced(
        &mut self,
        class: PacingClass,
        packet: &proto::MeshPacket,
        now: Duration,
        status: RadioStatus,
    ) -> Vec<proto::FromRadio> {
        let mut out = Vec::new();
        if class == PacingClass::Traceroute {
            let notice = proto::ClientNotification {
                reply_id: Some(packet.id),
                time: self.unix_time(now),
                level: proto::log_record::Level::Warning as i32,
                message: "TraceRoute can only be sent once every 30 seconds".into(),
                payload_variant: None,
            };
            out.extend(self.send_or_keep(from_radio(Out::ClientNotification(notice))));
        }
        out.extend(self.queue_status_for_phone(0, status.tx_queue_free, packet.id));
        if class == PacingClass::Text {
            let id = PacketId::new(packet.id);
            let channel = packet.channel.min(7) as u8;
            let nak = self.routing_packet(id, channel, RoutingError::RateLimitExceeded, now);
            out.extend(self.deliver(nak));
        }
        out
    }

    /// What `perhapsEncode` would refuse about a client packet on channel index `channel`,
    /// judged on this radio's node database (the RF world, which encrypts, holds the same
    /// keys): a direct message that must go with PKI to a node whose key is unknown, or PKI
    /// asked for where it cannot be done.
    fn pki_refusal(
        &self,
        packet: &proto::MeshPacket,
        data: &proto::Data,
        channel: u8,
    ) -> Option<RoutingError> {
        let to = NodeId::new(packet.to);
        let requested = packet.pki_encrypted;
        let exempt = self
            .profile
            .channels
            .get(usize::from(channel))
            .is_some_and(|c| pki_exempt_channel(&c.name));
        let pki = self.profile.private_key.is_some()
            && !to.is_broadcast()
            // Delivered locally, never encrypted.
            && to != self.profile.node
            && pki_port(data.portnum)
            && (requested || !exempt);
        if !pki {
            return requested.then_some(RoutingError::PkiFailed);
        }
        if data.encoded_len() + mesh_core::packet::ON_AIR_HEADER + PKI_OVERHEAD > MAX_LORA_FRAME {
            return Some(RoutingError::TooLarge);
        }
        let known = self
            .nodes
            .get(&to)
            .and_then(|n| n.user.as_ref())
            .and_then(|u| PublicKey::from_user_field(&u.public_key).ok().flatten());
        let Some(known) = known else {
            return Some(RoutingError::PkiSendFailPublicKey);
        };
        let asked = &packet.public_key;
        if requested && asked.iter().any(|&b| b != 0) && asked[..] != known.as_bytes()[..] {
            return Some(RoutingError::PkiFailed);
        }
        None
    }

    fn id_or_new(&mut self, id: u32) -> PacketId {
        if id == 0 {
            self.next_id()
        } else {
            PacketId::new(id)
        }
    }
}
