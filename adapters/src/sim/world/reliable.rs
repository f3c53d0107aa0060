//! Acknowledgements and retries, as the firmware's `ReliableRouter`: a node answers a
//! direct message with an ACK or a NAK, retransmits its own reliable packets until one comes
//! (or, for a broadcast, until it overhears a relay), then gives up with a NAK. Apart from
//! `flood` because only the two ends of a packet take part, while flooding is every node's.

use mesh_core::proto::mesh_packet::Priority;
use mesh_core::proto::routing::Error as RoutingError;
use mesh_core::{Packet, PacketId, proto};
use prost::Message;

use super::transmit::air_form;
use super::{DEFAULT_HOP_LIMIT, TxKind, World, WorldEvent};

/// One of the node's own reliable packets, waiting for its ACK.
#[derive(Debug, Clone)]
pub(super) struct Reliable {
    /// Its id.
    pub(super) id: PacketId,
    /// Channel index, for the ACK or NAK reported to the client.
    pub(super) channel: u8,
    /// As on the air, for retransmissions.
    pub(super) packet: Packet,
    /// The plaintext of a PKI packet: the firmware encrypts each retransmission again, with
    /// a fresh extra nonce (its retry copy is taken before `perhapsEncode`).
    pub(super) plain: Option<Packet>,
    /// Retransmissions left.
    pub(super) retries_left: u8,
    /// Counts transmissions, so a stale retry timer is recognised.
    pub(super) attempt: u8,
    /// Broadcasts are acknowledged implicitly, by an overheard relay.
    pub(super) broadcast: bool,
}

impl World {
    /// A relay of the node's own packet came back: for a reliable broadcast, that is the
    /// implicit ACK.
    pub(super) fn heard_own_packet(&mut self, idx: usize, id: PacketId) {
        let node = &mut self.nodes[idx];
        let Some(pos) = node.reliable.iter().position(|r| r.id == id && r.broadcast) else {
            return;
        };
        let r = node.reliable.remove(pos);
        node.queue
            .retain(|q| !(q.kind == TxKind::Retransmission && q.packet.id() == id));
        self.events.push_back(WorldEvent::ImplicitAck {
            at: self.now,
            node: node.id,
            id,
            channel: r.channel,
        });
    }

    /// A decoded packet addressed to this node: ACKs end our retries; requests for an ACK
    /// get one.
    pub(super) fn handle_addressed(&mut self, idx: usize, packet: &Packet) {
        let Some(data) = packet.data() else {
            return;
        };
        if data.portnum == proto::PortNum::RoutingApp as i32 {
            let id = PacketId::new(data.request_id);
            let node = &mut self.nodes[idx];
            node.reliable.retain(|r| r.id != id || r.broadcast);
            node.queue
                .retain(|q| !(q.kind == TxKind::Retransmission && q.packet.id() == id));
            self.on_routing_error(idx, packet, data);
            return;
        }
        if packet.want_ack() {
            self.queue_ack(idx, packet);
        }
    }

    fn queue_ack(&mut self, idx: usize, request: &Packet) {
        self.queue_routing(idx, request, RoutingError::None, request.channel());
    }

    /// An ACK (`RoutingError::None`) or NAK of `request`, on channel index `channel`, with the
    /// channel key (ROUTING_APP is never PKI-encrypted).
    pub(super) fn queue_routing(
        &mut self,
        idx: usize,
        request: &Packet,
        error: RoutingError,
        channel: u32,
    ) {
        let routing = proto::Routing {
            variant: Some(proto::routing::Variant::ErrorReason(error as i32)),
        };
        let data = proto::Data {
            portnum: proto::PortNum::RoutingApp as i32,
            payload: routing.encode_to_vec(),
            request_id: request.id().get(),
            ..Default::default()
        };
        let hop_limit = hop_limit_for_response(request.hop_start(), request.hop_limit());
        let id = self.next_id(idx);
        let meta = proto::MeshPacket {
            from: self.nodes[idx].id.get(),
            to: request.from().get(),
            id: id.get(),
            channel,
            hop_limit: u32::from(hop_limit),
            hop_start: u32::from(hop_limit),
            ..Default::default()
        };
        let mesh = self.nodes[idx].mesh;
        let Some(encrypted) = self.meshes[mesh]
            .channels
            .encrypt(&Packet::from_data(meta, data), channel as usize)
        else {
            return;
        };
        let anchor = self.instant(self.now);
        let me = self.nodes[idx].id;
        self.nodes[idx].dedup.observe(me, id, anchor);
        let ready = self.now + self.originate_delay(mesh);
        self.enqueue(
            idx,
            air_form(&encrypted),
            TxKind::Ack,
            ready,
            Priority::Ack as i32,
        );
    }

    pub(super) fn retry(&mut self, idx: usize, id: PacketId, attempt: u8) {
        let node = &mut self.nodes[idx];
        let Some(pos) = node
            .reliable
            .iter()
            .position(|r| r.id == id && r.attempt == attempt)
        else {
            return;
        };
        if node.reliable[pos].retries_left == 0 {
            let r = node.reliable.remove(pos);
            self.events.push_back(WorldEvent::Nak {
                at: self.now,
                node: node.id,
                id,
                channel: r.channel,
                error: RoutingError::MaxRetransmit,
            });
            return;
        }
        let r = &mut node.reliable[pos];
        r.retries_left -= 1;
        r.attempt += 1;
        let (mut packet, plain) = (r.packet.clone(), r.plain.clone());
        if let Some(plain) = plain {
            match self.encode(idx, &plain) {
                Ok(again) => packet = air_form(&again),
                Err(e) => tracing::debug!(error = %e, "retransmission sent as before"),
            }
        }
        let now = self.now;
        self.enqueue(
            idx,
            packet,
            TxKind::Retransmission,
            now,
            Priority::Reliable as i32,
        );
    }
}

/// The hop limit for an answer (`getHopLimitForResponse`): enough for the hops the request
/// took, with some margin, else the default.
pub(super) fn hop_limit_for_response(hop_start: u8, hop_limit: u8) -> u8 {
    if hop_start == 0 {
        return DEFAULT_HOP_LIMIT;
    }
    let used = hop_start.saturating_sub(hop_limit);
    if used > DEFAULT_HOP_LIMIT {
        used
    } else if used + 2 < DEFAULT_HOP_LIMIT {
        used + 2
    } else {
        DEFAULT_HOP_LIMIT
    }
}
