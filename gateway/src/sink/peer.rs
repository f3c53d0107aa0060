//! A neighbour hub as a destination: each delivery is offered to the peer link as the packet
//! as stored (encrypted with its channel's key), with the channel's name, its origin gateway
//! (this one, unless another hub delivered it) and the hubs it will have crossed, and is
//! Delivered only once the far hub committed it to its own store and acknowledged it. Many ride in one TLS record; the peer protocol's window keeps a slow
//! receiver from being flooded.

use std::time::Instant;

use archipel_adapters::peer::PeerHandle;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use mesh_core::NodeId;
use mesh_core::peer::Outgoing;

use super::{Prepared, Sink, Stopped};
use crate::router::Rendered;
use crate::store::Delivery;

/// Deliveries in flight at once: enough to fill the peer protocol's batches on a fast link;
/// the session's own window (from the peer's hello) bounds what is on the wire.
const WINDOW: usize = 512;

/// A peer link wrapped for the drain worker.
pub struct PeerSink {
    /// The link.
    peer: PeerHandle,
    /// This gateway's id: the origin of what it heard itself.
    gateway: NodeId,
    /// Keys for the session's bookkeeping, one per offer.
    next_key: u64,
}

impl PeerSink {
    /// A sink offering to `peer` as gateway `gateway`.
    pub fn new(peer: PeerHandle, gateway: NodeId) -> PeerSink {
        PeerSink {
            peer,
            gateway,
            next_key: 0,
        }
    }
}

impl Sink for PeerSink {
    fn window(&self) -> usize {
        WINDOW
    }

    fn ready(&self) -> BoxFuture<'static, Result<(), Stopped>> {
        let peer = self.peer.clone();
        async move { peer.connected().await.map_err(|_| Stopped) }.boxed()
    }

    fn prepare(&mut self, row: &Delivery, out: Rendered, _now: Instant) -> Prepared {
        self.next_key = self.next_key.wrapping_add(1);
        let item = Outgoing {
            key: self.next_key,
            channel: out.channel,
            // The hub that first put it on the federation, so a third hub sees who it came
            // from, not only who passed it on.
            origin: row.origin.unwrap_or(self.gateway),
            // The router counted the hubs it will have crossed there (at least this one).
            hops: out.hops.max(1),
            packet: out.packet.encode(),
        };
        // Handed to the link now, so offers keep the drain order.
        let send = self.peer.offer(item);
        Prepared::Send {
            send: send.boxed(),
            airtime: None,
        }
    }
}
