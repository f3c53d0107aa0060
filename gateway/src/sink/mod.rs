//! The one seam every destination is wired through. A [`Sink`] wraps one adapter handle (a
//! radio link, an MQTT link) and says, for one rendered delivery, whether it may go now and how
//! it is sent; the generic [`DrainWorker`](crate::worker::DrainWorker) does the rest (the store,
//! the window, retries, batched confirms) the same way for every kind.
//!
//! The glue lives here, in the gateway, so the adapters see only `mesh-core` and never each
//! other.

pub mod mqtt;
pub mod peer;
pub mod radio;
pub mod xmpp;

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use mesh_core::{DeliveryStatus, NodeId};

use crate::router::Rendered;
use crate::store::Delivery;

/// The adapter behind a sink has stopped for good (the gateway is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// A sink's answer for one delivery.
pub enum Prepared {
    /// Send it: the future resolves with the far side's answer, and never says
    /// [`DeliveryStatus::Delivered`] before the far side confirmed.
    Send {
        /// The send in progress (it owns what it needs, so many can be in flight at once).
        send: BoxFuture<'static, DeliveryStatus>,
        /// What the worker keeps beside the row until it is confirmed: the airtime it costs
        /// on a radio (recorded with the confirm, so the budget survives a restart).
        airtime: Option<Duration>,
    },
    /// Not now: the sink's pacer holds the queue until then (a more urgent row may be asked
    /// again sooner).
    Hold(Instant),
    /// This destination will never take it (a channel it does not have, too large).
    Refuse(String),
    /// It is for one node that has not been heard for a while: sending it now would only
    /// cost airtime and retransmissions. It waits in the outbox (its class TTL still
    /// applies), set aside in the worker's memory, and is read again once `node` is heard;
    /// the rest of the queue goes on.
    Park {
        /// The node it is addressed to.
        node: NodeId,
        /// What it waits for, for the operator ("waiting for Amira's radio (!a1b2c3d4 last
        /// heard 3 h ago)").
        reason: String,
        /// When the node was last heard as the sink saw it: a packet from it arriving after
        /// this decision still wakes the row.
        heard: Option<Instant>,
    },
}

/// One destination kind's way of sending. Static dispatch: the worker is generic over it.
pub trait Sink: Send + 'static {
    /// Deliveries in flight at once (a radio takes one at a time; a broker dozens).
    fn window(&self) -> usize;

    /// Resolves once the destination is reachable (at once if it is now). Owned, so the worker
    /// can wait on it beside everything else.
    fn ready(&self) -> BoxFuture<'static, Result<(), Stopped>>;

    /// Turns one rendered delivery into a send, a hold or a refusal, at `now`.
    fn prepare(&mut self, row: &Delivery, out: Rendered, now: Instant) -> Prepared;

    /// The far side confirmed a delivery that cost `airtime` (radios: the governor counts it).
    fn delivered(&mut self, airtime: Option<Duration>, now: Instant) {
        let _ = (airtime, now);
    }
}
