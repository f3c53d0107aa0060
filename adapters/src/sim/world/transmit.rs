//! A node's transmit queue and the shared medium: what a node originates, which queued
//! packet goes next, the airtime it occupies, and its delivery to the neighbours at the end.
//! Apart from the receive side (`flood`, `reliable`) because it owns the medium: only here
//! is a node busy, does airtime pass and does a packet reach other nodes; the rest queues.

use std::cmp::Reverse;
use std::time::Duration;

use mesh_core::packet::HOP_MAX;
use mesh_core::proto::mesh_packet::Priority;
use mesh_core::{Packet, PacketId, proto};
use rand::Rng;

use super::airtime::{AIR_UTIL_TX_WINDOW, UTILIZATION_WINDOW, prune};
use super::reliable::Reliable;
use super::{MAX_LORA_FRAME, RELIABLE_RETRIES, TimerKind, TxKind, World, WorldError, WorldEvent};

/// A packet waiting in a node's transmit queue.
#[derive(Debug, Clone)]
pub(super) struct Queued {
    /// As it will go on the air.
    pub(super) packet: Packet,
    /// Why it is sent.
    pub(super) kind: TxKind,
    /// Not before this time (contention delay).
    pub(super) ready_at: Duration,
    /// Higher goes first among ready packets (ACKs before the rest).
    pub(super) priority: i32,
    /// Insertion order among equal priorities.
    pub(super) seq: u64,
}

/// A transmission in progress.
#[derive(Debug, Clone)]
pub(super) struct OnAir {
    pub(super) packet: Packet,
    pub(super) kind: TxKind,
}

impl World {
    /// Queues a packet the node originates. See [`World::transmit`].
    pub(super) fn originate(
        &mut self,
        idx: usize,
        mut packet: Packet,
    ) -> Result<PacketId, WorldError> {
        let node_id = self.nodes[idx].id;
        let mesh = self.nodes[idx].mesh;
        let index = packet.channel();
        let count = self.meshes[mesh].channels.len();
        if index as usize >= count {
            return Err(WorldError::NoChannel {
                node: node_id,
                index,
                count,
            });
        }
        let raw_len = match packet.payload() {
            mesh_core::Payload::Decoded { raw, .. } => raw.len(),
            mesh_core::Payload::Encrypted(_) => return Err(WorldError::NotDecoded),
        };
        if raw_len + mesh_core::packet::ON_AIR_HEADER > MAX_LORA_FRAME {
            return Err(WorldError::TooLarge {
                len: raw_len + mesh_core::packet::ON_AIR_HEADER,
            });
        }
        let id = if packet.id().is_unset() {
            self.next_id(idx)
        } else {
            packet.id()
        };
        let priority = match Priority::try_from(packet.meta().priority) {
            Ok(Priority::Unset) | Err(_) if packet.want_ack() => Priority::Reliable as i32,
            Ok(Priority::Unset) | Err(_) => Priority::Default as i32,
            Ok(p) => p as i32,
        };
        {
            let m = packet.meta_mut();
            m.from = node_id.get();
            m.id = id.get();
            m.hop_limit = m.hop_limit.min(u32::from(HOP_MAX));
            m.hop_start = m.hop_limit;
            m.relay_node = 0;
            m.next_hop = 0;
        }
        let encrypted = self.encode(idx, &packet)?;
        let now = self.now;
        let anchor = self.instant(now);
        self.nodes[idx].dedup.observe(node_id, id, anchor);
        let broadcast = packet.to().is_broadcast();
        let mut on_air = air_form(&encrypted);
        if broadcast {
            // The firmware clears want_ack on the air for broadcasts: nobody answers them.
            on_air.meta_mut().want_ack = false;
        }
        if packet.want_ack() {
            self.nodes[idx].reliable.push(Reliable {
                id,
                channel: index as u8,
                packet: on_air.clone(),
                plain: encrypted.meta().pki_encrypted.then(|| packet.clone()),
                retries_left: RELIABLE_RETRIES,
                attempt: 0,
                broadcast,
            });
        }
        let delay = self.originate_delay(mesh);
        self.enqueue(idx, on_air, TxKind::Originated, now + delay, priority);
        Ok(id)
    }

    pub(super) fn enqueue(
        &mut self,
        idx: usize,
        packet: Packet,
        kind: TxKind,
        ready_at: Duration,
        priority: i32,
    ) {
        self.seq += 1;
        let seq = self.seq;
        // A radio sends packets of equal priority in the order it queued them: a later one
        // never becomes ready before an earlier one.
        let ready_at = self.nodes[idx]
            .queue
            .iter()
            .filter(|q| q.priority == priority)
            .map(|q| q.ready_at)
            .fold(ready_at, Duration::max);
        self.nodes[idx].queue.push(Queued {
            packet,
            kind,
            ready_at,
            priority,
            seq,
        });
        self.try_start(idx);
    }

    fn schedule_wake(&mut self, idx: usize, at: Duration) {
        if self.nodes[idx]
            .wake_at
            .is_some_and(|t| t <= at && t > self.now)
        {
            return;
        }
        self.nodes[idx].wake_at = Some(at);
        self.schedule(at, TimerKind::Wake(idx));
    }

    /// Starts the node's next transmission if it is free, hears nobody, and a packet is ready.
    pub(super) fn try_start(&mut self, idx: usize) {
        let now = self.now;
        let node = &self.nodes[idx];
        if node.on_air.is_some() || node.queue.is_empty() {
            return;
        }
        if node.rx_busy_until > now {
            let at = node.rx_busy_until;
            self.schedule_wake(idx, at);
            return;
        }
        let best = node
            .queue
            .iter()
            .enumerate()
            .filter(|(_, q)| q.ready_at <= now)
            .max_by_key(|(_, q)| (q.priority, Reverse(q.seq)))
            .map(|(i, _)| i);
        let Some(pos) = best else {
            let next = node.queue.iter().map(|q| q.ready_at).min().unwrap_or(now);
            self.schedule_wake(idx, next);
            return;
        };
        let queued = self.nodes[idx].queue.remove(pos);
        let mesh = self.nodes[idx].mesh;
        let airtime = self.meshes[mesh]
            .preset
            .time_on_air(queued.packet.on_air_len());
        let ends = now + airtime;
        let m = &mut self.meshes[mesh];
        prune(&mut m.busy, UTILIZATION_WINDOW, now);
        m.busy.push_back((now, ends));
        let node = &mut self.nodes[idx];
        prune(&mut node.tx_log, AIR_UTIL_TX_WINDOW, now);
        node.tx_log.push_back((now, ends));
        node.on_air = Some(OnAir {
            packet: queued.packet.clone(),
            kind: queued.kind,
        });
        let listeners: Vec<usize> = node.neighbours.iter().map(|l| l.to).collect();
        for n in listeners {
            let rx = &mut self.nodes[n].rx_busy_until;
            *rx = (*rx).max(ends);
        }
        self.events.push_back(WorldEvent::Transmitted {
            at: now,
            mesh: self.meshes[mesh].name.clone(),
            node: self.nodes[idx].id,
            packet: queued.packet,
            airtime,
            kind: queued.kind,
        });
        self.schedule(ends, TimerKind::TxEnd(idx));
    }

    pub(super) fn end_transmission(&mut self, idx: usize) {
        let Some(on_air) = self.nodes[idx].on_air.take() else {
            return;
        };
        let mesh = self.nodes[idx].mesh;
        let loss = self.meshes[mesh].loss;
        let links = self.nodes[idx].neighbours.clone();
        for link in &links {
            if loss > 0.0 && self.rng.random::<f64>() < loss {
                continue;
            }
            self.receive(link.to, &on_air.packet, *link);
        }
        if matches!(on_air.kind, TxKind::Originated | TxKind::Retransmission) {
            let id = on_air.packet.id();
            if let Some(r) = self.nodes[idx].reliable.iter().find(|r| r.id == id) {
                let attempt = r.attempt;
                let at = self.now + self.retransmission_delay(mesh, &on_air.packet);
                self.schedule(
                    at,
                    TimerKind::Retry {
                        node: idx,
                        id,
                        attempt,
                    },
                );
            }
        }
        self.try_start(idx);
        for link in &links {
            self.try_start(link.to);
        }
    }
}

/// Only what the 16-byte LoRa header carries, plus the payload: local fields (rx metadata,
/// priority) never go on the air.
pub(super) fn air_form(packet: &Packet) -> Packet {
    let m = packet.meta();
    let meta = proto::MeshPacket {
        from: m.from,
        to: m.to,
        channel: m.channel,
        id: m.id,
        hop_limit: m.hop_limit,
        want_ack: m.want_ack,
        via_mqtt: m.via_mqtt,
        hop_start: m.hop_start,
        next_hop: m.next_hop,
        relay_node: m.relay_node,
        ..Default::default()
    };
    Packet::new(meta, packet.payload().clone())
}
