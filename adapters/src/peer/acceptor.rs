//! The accept loop of a gateway's listener: every TCP connection is authenticated in a task
//! of its own (a silent peer then holds one task until the handshake timeout, never the
//! listener) and handed to the link of the peer whose key it proved.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use mesh_core::Backoff;
use tracing::{Instrument, debug, info_span, warn};

use super::handle::{PeerCounters, PeerHandle};
use super::key::PeerKey;
use super::transport::{PeerListener, TransportError};

/// After an accept error (out of file descriptors, mostly), the first pause and the cap.
const ACCEPT_PAUSE: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));

/// What the acceptor saw, shared with metrics and status pages.
#[derive(Debug, Default)]
pub struct AcceptorCounters {
    /// TCP connections accepted.
    pub accepted: AtomicU64,
    /// Connections authenticated and handed to a peer's link.
    pub adopted: AtomicU64,
    /// Connections that proved a key no `[[peer]]` lists (the handshake refused them).
    pub unknown_keys: AtomicU64,
    /// Handshakes that did not finish within the listener's timeout: a silent client, or a
    /// slow-loris one trickling bytes, each held a task until then and no longer.
    pub timeouts: AtomicU64,
    /// Handshakes that failed otherwise (broken TLS, lost connections).
    pub failed: AtomicU64,
    /// Errors from `accept` itself.
    pub accept_errors: AtomicU64,
}

/// Accepts connections on a bound listener and hands each to its peer's link.
pub struct PeerAcceptor {
    /// The bound listener, which already refuses keys it was not given.
    listener: PeerListener,
    /// The link of each peer, by the key it must prove.
    peers: Arc<HashMap<PeerKey, PeerHandle>>,
    /// What it saw.
    counters: Arc<AcceptorCounters>,
}

impl PeerAcceptor {
    /// An acceptor for `listener` (bound with the keys of `peers`).
    pub fn new(listener: PeerListener, peers: HashMap<PeerKey, PeerHandle>) -> Self {
        PeerAcceptor {
            listener,
            peers: Arc::new(peers),
            counters: Arc::default(),
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Its counters, to read while it runs.
    pub fn counters(&self) -> Arc<AcceptorCounters> {
        self.counters.clone()
    }

    /// Accepts forever (drop or abort the future to stop; handshakes under way finish or
    /// time out on their own).
    pub async fn run(self) {
        let addr = self.listener.local_addr().ok();
        let span = info_span!("peer_listener", addr = ?addr);
        self.accept_loop().instrument(span).await
    }

    async fn accept_loop(self) {
        let mut pause = Backoff::new(ACCEPT_PAUSE.0, ACCEPT_PAUSE.1, Duration::ZERO);
        loop {
            let incoming = match self.listener.accept().await {
                Ok(incoming) => incoming,
                Err(e) => {
                    PeerCounters::add(&self.counters.accept_errors, 1);
                    let delay = pause.next_delay(None, 0.5);
                    warn!(error = %e, pause_ms = delay.as_millis() as u64, "accept failed");
                    // Not a synchronisation: the system is out of something; give it time.
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            if pause.attempt() > 0 {
                pause = Backoff::new(ACCEPT_PAUSE.0, ACCEPT_PAUSE.1, Duration::ZERO);
            }
            PeerCounters::add(&self.counters.accepted, 1);
            let (peers, counters) = (self.peers.clone(), self.counters.clone());
            let remote = incoming.remote_addr();
            tokio::spawn(
                async move {
                    match incoming.authenticate().await {
                        Ok((stream, key)) => match peers.get(&key) {
                            Some(link) => {
                                PeerCounters::add(&counters.adopted, 1);
                                debug!(peer = link.name(), "inbound connection authenticated");
                                link.adopt(stream);
                            }
                            None => {
                                PeerCounters::add(&counters.unknown_keys, 1);
                                warn!(key = %key.fingerprint(), "an authenticated key has no peer link");
                            }
                        },
                        Err(e @ TransportError::UnknownKey { .. }) => {
                            PeerCounters::add(&counters.unknown_keys, 1);
                            warn!(error = %e, "refused an unknown key");
                        }
                        Err(e @ TransportError::Timeout { .. }) => {
                            // Counted, not logged at warn: a flood of them would flood the log.
                            PeerCounters::add(&counters.timeouts, 1);
                            debug!(error = %e, "an inbound handshake timed out");
                        }
                        Err(e) => {
                            PeerCounters::add(&counters.failed, 1);
                            debug!(error = %e, "an inbound handshake failed");
                        }
                    }
                }
                .instrument(info_span!("inbound", %remote)),
            );
        }
    }
}
