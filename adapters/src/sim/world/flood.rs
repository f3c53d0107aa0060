//! Managed flooding, as the firmware's `FloodingRouter`: a node hears a packet, drops what
//! it has seen, hands the rest to its client, and relays with one hop less, cancelling its
//! relay when someone else was first. Apart from `reliable` because flooding leaves every
//! ACK to it: an echo of the node's own packet, or a direct message to the node, leaves here
//! for `reliable` (the latter through `pki`, to be read first).

use mesh_core::proto::mesh_packet::Priority;
use mesh_core::{NodeId, Packet, Seen};

use super::transmit::{Queued, air_form};
use super::{Link, TX_QUEUE_LEN, TxKind, World, WorldEvent};

impl World {
    /// Node `idx` hears `packet` over `link` (whose SNR and RSSI it measures).
    pub(super) fn receive(&mut self, idx: usize, packet: &Packet, link: Link) {
        let now = self.now;
        let me = self.nodes[idx].id;
        if packet.from() == me {
            self.heard_own_packet(idx, packet.id());
            return;
        }
        let at = self.instant(now);
        if self.nodes[idx]
            .dedup
            .observe(packet.from(), packet.id(), at)
            == Seen::Duplicate
        {
            self.heard_duplicate(idx, packet, link.snr);
            return;
        }
        let mut heard = packet.clone();
        {
            let m = heard.meta_mut();
            m.rx_time = self.unix_time(now);
            m.rx_snr = link.snr;
            m.rx_rssi = link.rssi;
        }
        let decoded = self.decode(idx, &heard);
        if let Some(d) = &decoded {
            self.learn(idx, d);
        }
        self.events.push_back(WorldEvent::Received {
            at: now,
            node: me,
            packet: heard,
            decoded: decoded.clone(),
        });
        if packet.to() == me {
            self.addressed(idx, packet, decoded.as_ref());
            return;
        }
        if self.should_relay(idx, packet) {
            self.queue_relay(idx, packet, link.snr);
        }
    }

    fn heard_duplicate(&mut self, idx: usize, packet: &Packet, snr: f32) {
        let me = self.nodes[idx].id;
        // Straight from the originator, nothing consumed: a retransmission.
        let from_originator = packet.hop_start() > 0 && packet.hop_limit() == packet.hop_start();
        let same = |q: &Queued| {
            q.kind == TxKind::Relay
                && q.packet.from() == packet.from()
                && q.packet.id() == packet.id()
        };
        let node = &mut self.nodes[idx];
        if !from_originator {
            if node.role.cancels_duplicates() {
                // Someone else relayed it first: our copy would add nothing.
                node.queue.retain(|q| !same(q));
            }
            return;
        }
        // The originator repeats itself: our relay, or our ACK, may have been lost.
        if packet.to() == me {
            let decoded = self.decode(idx, packet);
            self.addressed(idx, packet, decoded.as_ref());
        } else if !self.nodes[idx].queue.iter().any(same) && self.should_relay(idx, packet) {
            self.queue_relay(idx, packet, snr);
        }
    }

    fn should_relay(&self, idx: usize, packet: &Packet) -> bool {
        let node = &self.nodes[idx];
        let next_hop = packet.meta().next_hop;
        node.role.relays()
            && packet.hop_limit() > 0
            && !packet.id().is_unset()
            && packet.to() != node.id
            && packet.from() != node.id
            && packet.to() != NodeId::BROADCAST_NO_LORA
            && (next_hop == 0 || next_hop == u32::from(node.id.last_byte()))
    }

    fn queue_relay(&mut self, idx: usize, packet: &Packet, snr: f32) {
        if self.nodes[idx].queue.len() >= TX_QUEUE_LEN {
            tracing::debug!(node = %self.nodes[idx].id, id = %packet.id(), "transmit queue full, relay dropped");
            return;
        }
        let mut copy = air_form(packet);
        {
            let m = copy.meta_mut();
            m.hop_limit = m.hop_limit.saturating_sub(1);
            m.relay_node = u32::from(self.nodes[idx].id.last_byte());
        }
        let delay = self.relay_delay(idx, snr);
        let ready = self.now + delay;
        self.enqueue(idx, copy, TxKind::Relay, ready, Priority::Default as i32);
    }
}
