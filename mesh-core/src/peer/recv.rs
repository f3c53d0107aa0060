//! The receiving half of an open session: tables, delivery, the window we advertised, and
//! acknowledgements that follow the owner's commits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::compact;
use super::frame::{self, Data, Definition, Frame};
use super::session::{Incoming, ProtocolError};
use crate::node::NodeId;

/// The receiving half.
#[derive(Debug)]
pub(crate) struct Inbound {
    /// The sequence number the next item must carry: the sender numbers densely from 1.
    expected: u64,
    /// The sender's channel table: its `Hello` channels, then its definitions.
    channels: Vec<Arc<str>>,
    /// The sender's origin table: its own gateway id, then its definitions.
    origins: Vec<NodeId>,
    /// The sender's node table, for the `from` of compact packets: its definitions.
    nodes: Vec<NodeId>,
    /// Packet lengths of items delivered and not yet acknowledged, oldest first; the window
    /// we advertised is checked against them.
    unacked: VecDeque<(u64, usize)>,
    /// Packet bytes of `unacked`.
    unacked_bytes: usize,
    /// The highest position the owner reported committed to its store.
    committed: u64,
    /// The highest position we acknowledged: never above `committed`.
    acked: u64,
    /// When the committed-but-unacknowledged items must be acknowledged at the latest.
    ack_due: Option<Instant>,
    /// The window we advertised, in items.
    window_items: usize,
    /// The window we advertised, in packet bytes.
    window_bytes: usize,
    /// Acknowledge at once when this many committed items wait.
    ack_items: u64,
    /// Otherwise acknowledge this long after the first commit that waits.
    ack_delay: Duration,
}

impl Inbound {
    /// The receiving half for a sender that announced `channels` and is `gateway`.
    pub(crate) fn new(
        channels: &[String],
        gateway: NodeId,
        window_items: u32,
        window_bytes: u32,
        ack_items: u32,
        ack_delay: Duration,
    ) -> Inbound {
        let window_items = window_items.max(1) as usize;
        Inbound {
            expected: 1,
            channels: channels.iter().map(|c| Arc::from(c.as_str())).collect(),
            origins: vec![gateway],
            nodes: Vec::new(),
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            committed: 0,
            acked: 0,
            ack_due: None,
            window_items,
            window_bytes: window_bytes as usize,
            // Waiting for more than half the window would stall a sender that respects it.
            ack_items: u64::from(ack_items).clamp(1, (window_items as u64 / 2).max(1)),
            ack_delay,
        }
    }

    /// Adds a table entry; indexes must come in order so both sides agree on them.
    pub(crate) fn on_define(&mut self, def: Definition) -> Result<(), ProtocolError> {
        match def {
            Definition::Channel { index, name } => {
                let expected = self.channels.len();
                if index as usize != expected {
                    return Err(ProtocolError::DefineOutOfOrder {
                        table: "channel",
                        index,
                        expected,
                    });
                }
                self.channels.push(Arc::from(name));
            }
            Definition::Origin { index, gateway } => {
                let expected = self.origins.len();
                if index as usize != expected {
                    return Err(ProtocolError::DefineOutOfOrder {
                        table: "origin",
                        index,
                        expected,
                    });
                }
                self.origins.push(gateway);
            }
            Definition::Node { index, node } => {
                let expected = self.nodes.len();
                if index as usize != expected {
                    return Err(ProtocolError::DefineOutOfOrder {
                        table: "node",
                        index,
                        expected,
                    });
                }
                self.nodes.push(node);
            }
        }
        Ok(())
    }

    /// Checks a whole `Data` frame, then hands its items out for the owner to commit.
    pub(crate) fn on_data(&mut self, data: Data) -> Result<Vec<Incoming>, ProtocolError> {
        if data.first != self.expected {
            return Err(ProtocolError::SequenceGap {
                expected: self.expected,
                got: data.first,
            });
        }
        // The window counts packets as they were offered, so compact ones count rebuilt.
        let mut packets = Vec::with_capacity(data.items.len());
        for item in data.items {
            let packet = if item.compact {
                compact::unpack(&item.packet, |i| self.nodes.get(i as usize).copied())
                    .map_err(ProtocolError::Frame)?
            } else {
                item.packet
            };
            packets.push((item.channel, item.origin, item.hops, packet));
        }
        let bytes: usize = packets.iter().map(|(.., p)| p.len()).sum();
        let items = self.unacked.len() + packets.len();
        if items > self.window_items
            || self.unacked_bytes + bytes > self.window_bytes.max(frame::MAX_PACKET)
        {
            return Err(ProtocolError::WindowExceeded {
                items,
                bytes: self.unacked_bytes + bytes,
            });
        }
        let mut out = Vec::with_capacity(packets.len());
        for (seq, (channel, origin, hops, packet)) in (data.first..).zip(packets) {
            let name = self
                .channels
                .get(channel as usize)
                .ok_or(ProtocolError::UnknownChannel(channel))?;
            let origin = *self
                .origins
                .get(origin as usize)
                .ok_or(ProtocolError::UnknownOrigin(origin))?;
            out.push(Incoming {
                seq,
                channel: Arc::clone(name),
                origin,
                hops,
                packet,
            });
        }
        for i in &out {
            self.unacked.push_back((i.seq, i.packet.len()));
        }
        self.unacked_bytes += bytes;
        self.expected = data.first + out.len() as u64;
        Ok(out)
    }

    /// The owner committed everything up to `up_to` (clamped to what was delivered).
    /// Acknowledges at once when enough waits, otherwise arms the ack timer.
    pub(crate) fn committed(&mut self, up_to: u64, now: Instant, tx: &mut Vec<u8>) {
        let up_to = up_to.min(self.expected - 1);
        if up_to <= self.committed {
            return;
        }
        self.committed = up_to;
        let waiting = self.committed - self.acked;
        let waiting_bytes: usize = self
            .unacked
            .iter()
            .take_while(|(seq, _)| *seq <= self.committed)
            .map(|(_, len)| len)
            .sum();
        if waiting >= self.ack_items || waiting_bytes * 2 >= self.window_bytes {
            self.ack(tx);
        } else {
            self.ack_due.get_or_insert(now + self.ack_delay);
        }
    }

    /// Writes an `Ack` for everything committed, if anything waits.
    pub(crate) fn ack(&mut self, tx: &mut Vec<u8>) {
        if self.committed == self.acked {
            return;
        }
        // An Ack has no field that can exceed a bound.
        let _ = frame::encode(
            &Frame::Ack {
                up_to: self.committed,
            },
            tx,
        );
        self.acked = self.committed;
        self.ack_due = None;
        while self
            .unacked
            .front()
            .is_some_and(|(seq, _)| *seq <= self.acked)
        {
            if let Some((_, len)) = self.unacked.pop_front() {
                self.unacked_bytes -= len;
            }
        }
    }

    /// When the waiting acknowledgement is due, if one waits.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.ack_due
    }

    /// Acknowledges if the ack timer ran out.
    pub(crate) fn tick(&mut self, now: Instant, tx: &mut Vec<u8>) {
        if self.ack_due.is_some_and(|d| d <= now) {
            self.ack(tx);
        }
    }
}
