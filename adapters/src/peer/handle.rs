//! The owner's side of a link to one peer gateway: its configuration ([`PeerLinkConfig`]),
//! what it reports ([`PeerEvent`]), where it is ([`Lifecycle`]), its counters, the handle that
//! offers items and hands over inbound connections ([`PeerHandle`]), and [`spawn`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mesh_core::peer::{Incoming, Outgoing, SessionConfig};
use mesh_core::{DeliveryStatus, NodeId};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, info_span};

use super::identity::Identity;
use super::key::PeerKey;
use super::link::Link;
use super::transport::PeerStream;

/// How a link to one peer gateway behaves.
#[derive(Clone, Debug)]
pub struct PeerLinkConfig {
    /// The `[[peer]]` name, in spans and messages.
    pub name: String,
    /// This gateway's key pair, proved on every connection.
    pub identity: Identity,
    /// This gateway's id, sent in the handshake.
    pub gateway: NodeId,
    /// The channels this gateway offers the peer.
    pub channels: Vec<String>,
    /// The key the peer must prove.
    pub peer_key: PeerKey,
    /// Where to dial the peer; `None` for a peer that only dials in.
    pub address: Option<SocketAddr>,
    /// The peer protocol's window, batching and timeouts.
    pub session: SessionConfig,
    /// How long a dial (TCP and TLS handshake) may take.
    pub connect_timeout: Duration,
    /// The first delay before dialling again after a failure or a lost connection.
    pub backoff_initial: Duration,
    /// The cap on that delay, also after a connection that worked and then died.
    pub backoff_max: Duration,
}

/// What a peer link reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A connection is open and both sides said hello: offer the outbox again, in order.
    Up {
        /// The peer's gateway id.
        gateway: NodeId,
        /// The channels it offers.
        channels: Vec<String>,
    },
    /// The open connection ended; every offer not acknowledged on it was answered
    /// `Unreachable`. The link dials again by itself (when it has an address).
    Down {
        /// Why, for the operator.
        reason: String,
    },
    /// Items from the peer: commit them, then call [`PeerHandle::committed`] with `connection`
    /// and the last item's `seq`; only then are they acknowledged.
    Deliver {
        /// The connection they came on (a commit for an older one is ignored).
        connection: u64,
        /// The items, in the peer's order.
        items: Vec<Incoming>,
    },
    /// Something the operator should know, already human-readable: a wrong key presented
    /// (with its fingerprint), a refusal, a handshake that failed.
    Problem(String),
}

/// Where a peer link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// No connection and no dial planned: waiting for the peer to dial in.
    Waiting,
    /// Dialling the peer.
    Dialling {
        /// Failed attempts since the last stable connection.
        attempt: u32,
    },
    /// Waiting before the next dial.
    Backoff {
        /// When to dial again.
        until: Instant,
    },
    /// Authenticated; the peer protocol's handshake is under way.
    Handshaking {
        /// The connection's number.
        connection: u64,
    },
    /// Open: items flow.
    Connected {
        /// The connection's number, as in [`PeerEvent::Deliver`].
        connection: u64,
        /// This end's address: with `remote` it names the one TCP connection kept.
        local: SocketAddr,
        /// The other end's address.
        remote: SocketAddr,
        /// Since when it is open.
        since: Instant,
    },
    /// Shut down.
    Stopped,
}

/// Counters of what crossed the link, shared with metrics and status pages.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Bytes read from connections (after TLS).
    pub bytes_in: AtomicU64,
    /// Bytes written to connections (before TLS).
    pub bytes_out: AtomicU64,
    /// Batches of frames the session handed out to write.
    pub writes: AtomicU64,
    /// Dials started.
    pub dials: AtomicU64,
    /// Dials that failed (refusals included).
    pub failed_dials: AtomicU64,
    /// Connections whose peer protocol handshake completed.
    pub connects: AtomicU64,
    /// Connections refused for a key: the peer presented the wrong one, or refused ours.
    pub refusals: AtomicU64,
    /// Connections closed because another one to the same peer was kept.
    pub duplicates: AtomicU64,
    /// Items handed to a session.
    pub items_sent: AtomicU64,
    /// Items the peer acknowledged (answered `Delivered`).
    pub items_acked: AtomicU64,
    /// Offers answered `Unreachable`.
    pub items_unreachable: AtomicU64,
    /// Offers answered `Rejected` (an item no session can carry).
    pub items_rejected: AtomicU64,
    /// Items received from the peer and handed to the owner.
    pub items_received: AtomicU64,
    /// Problem reports dropped because the owner left too many events unread.
    pub dropped_problems: AtomicU64,
}

impl PeerCounters {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The link refuses work because it has stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer link `{0}` has stopped")]
pub struct LinkStopped(pub String);

/// Work for the link task.
pub(super) enum Request {
    /// Carry an item to the peer.
    Offer {
        /// The item.
        item: Outgoing,
        /// The connection open when the owner offered it (0: none); see `PeerHandle::open`.
        connection: u64,
        /// Who waits for the outcome.
        reply: oneshot::Sender<DeliveryStatus>,
    },
    /// The owner committed the items of `connection` up to `seq`.
    Committed {
        /// The connection they came on.
        connection: u64,
        /// The last one committed.
        seq: u64,
    },
    /// An inbound connection authenticated as this peer (boxed: a TLS stream is large, and
    /// every request in the channel would otherwise take its size).
    Adopt(Box<PeerStream>),
    /// Close the connection and stop.
    Shutdown,
}

/// The owner's side of a peer link. Cloning it shares the same link.
#[derive(Clone)]
pub struct PeerHandle {
    /// For messages.
    name: Arc<str>,
    /// Work for the link; unbounded because offers are bounded by the owner's window and the
    /// other requests by the peer's, and a call must never block the owner's event loop.
    requests: mpsc::UnboundedSender<Request>,
    /// The number of the open connection (0 while none is open). An offer is stamped with it
    /// when made, and the link refuses one stamped for another connection: an offer made just
    /// before a reconnect, handed over just after, would otherwise go out on the new
    /// connection ahead of the items the owner offers again after `Up`, out of order.
    open: Arc<AtomicU64>,
    /// What crossed the link.
    counters: Arc<PeerCounters>,
    /// Where the link is.
    lifecycle: watch::Receiver<Lifecycle>,
    /// The link task, awaited on shutdown.
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl PeerHandle {
    /// The `[[peer]]` name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands an item to the link now (the order of the calls is the order on the wire). The
    /// outcome is `Delivered` only once the peer acknowledged it, that is committed it;
    /// `Unreachable` when no connection is open or it closed before the acknowledgement (offer
    /// it again after the next [`PeerEvent::Up`], in order); `Rejected` for an item no
    /// session can carry (a packet beyond the frame bound).
    pub fn offer(&self, item: Outgoing) -> impl Future<Output = DeliveryStatus> + Send + 'static {
        let (reply, outcome) = oneshot::channel();
        let request = Request::Offer {
            item,
            connection: self.open.load(Ordering::Acquire),
            reply,
        };
        let name = self.name.clone();
        let stopped =
            move || DeliveryStatus::unreachable(LinkStopped(name.to_string()).to_string());
        let handed = self.requests.send(request).is_ok();
        async move {
            if !handed {
                return stopped();
            }
            outcome.await.unwrap_or_else(|_| stopped())
        }
    }

    /// The owner committed every item of connection `connection` up to `seq`: the link may
    /// acknowledge them.
    pub fn committed(&self, connection: u64, seq: u64) {
        let _ = self.requests.send(Request::Committed { connection, seq });
    }

    /// An inbound connection the listener authenticated as this peer's key: the link keeps
    /// one connection per peer (see [`super::resolve_duplicate`]).
    pub fn adopt(&self, stream: PeerStream) {
        let _ = self.requests.send(Request::Adopt(Box::new(stream)));
    }

    /// Resolves once a connection is open (at once if one is); `Err` when the link stopped.
    pub async fn connected(&self) -> Result<(), LinkStopped> {
        let mut rx = self.lifecycle.clone();
        let state = rx
            .wait_for(|l| matches!(l, Lifecycle::Connected { .. } | Lifecycle::Stopped))
            .await
            .map_err(|_| LinkStopped(self.name.to_string()))?;
        match *state {
            Lifecycle::Stopped => Err(LinkStopped(self.name.to_string())),
            _ => Ok(()),
        }
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        matches!(*self.lifecycle.borrow(), Lifecycle::Connected { .. })
    }

    /// Where the link is now.
    pub fn lifecycle(&self) -> Lifecycle {
        *self.lifecycle.borrow()
    }

    /// A receiver of the link's lifecycle, to wait for a change.
    pub fn watch_lifecycle(&self) -> watch::Receiver<Lifecycle> {
        self.lifecycle.clone()
    }

    /// What crossed the link so far.
    pub fn counters(&self) -> &PeerCounters {
        &self.counters
    }

    /// Closes the connection (what is committed is acknowledged first) and ends the task.
    pub async fn shutdown(&self) {
        let _ = self.requests.send(Request::Shutdown);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// Starts a peer link task. Events arrive on the returned receiver; the link keeps dialling
/// (when it has an address) and adopting inbound connections until [`PeerHandle::shutdown`]
/// or until every handle is dropped.
///
/// # Panics
/// Outside a Tokio runtime (the link is a task on it).
pub fn spawn(config: PeerLinkConfig) -> (PeerHandle, mpsc::Receiver<PeerEvent>) {
    let (requests, request_rx) = mpsc::unbounded_channel();
    let (events, event_rx) = mpsc::channel(super::link::EVENT_CAPACITY);
    let initial = if config.address.is_some() {
        Lifecycle::Dialling { attempt: 0 }
    } else {
        Lifecycle::Waiting
    };
    let (lifecycle_tx, lifecycle) = watch::channel(initial);
    let counters = Arc::new(PeerCounters::default());
    let open = Arc::new(AtomicU64::new(0));
    let span = info_span!(
        "peer",
        name = %config.name,
        key = %config.peer_key.fingerprint(),
        address = ?config.address,
    );
    let name: Arc<str> = config.name.clone().into();
    let link = Link::new(
        config,
        request_rx,
        events,
        lifecycle_tx,
        counters.clone(),
        open.clone(),
    );
    let task = tokio::spawn(link.run().instrument(span));
    let handle = PeerHandle {
        name,
        requests,
        open,
        counters,
        lifecycle,
        task: Arc::new(tokio::sync::Mutex::new(Some(task))),
    };
    (handle, event_rx)
}
