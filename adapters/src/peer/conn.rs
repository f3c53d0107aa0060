//! One connection to a peer and everything that lives and dies with it: the stream's two
//! halves, the protocol [`Session`], the bytes waiting for the socket, and the offers made on
//! it. The link task owns at most one; this file turns what the socket and the owner do into
//! session calls, and what the session says into owner events.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mesh_core::DeliveryStatus;
use mesh_core::peer::{Event, OfferError, Outgoing, Session};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};
use tracing::{Instrument, debug, info};

use super::duplicate::Direction;
use super::handle::{PeerCounters, PeerEvent};
use super::offers::Offers;
use super::transport::PeerStream;

/// The most bytes read from the socket at once (one TLS record's plaintext).
const READ_CHUNK: usize = 16 * 1024;

/// How long a closed connection's last bytes (its `Close`) may take to leave.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// What an offer's waiter is told.
pub(super) type Reply = oneshot::Sender<DeliveryStatus>;

/// One authenticated connection and its session.
pub(super) struct Conn {
    /// Its number: `Deliver` events and offers name it, so nothing crosses to another one.
    pub(super) number: u64,
    /// Who dialled, for `resolve_duplicate` when another connection arrives.
    pub(super) direction: Direction,
    /// This end's address, for the lifecycle and logs.
    pub(super) local: SocketAddr,
    /// The other end's address.
    pub(super) remote: SocketAddr,
    /// The reading half of the stream.
    pub(super) reader: ReadHalf<PeerStream>,
    /// The writing half, separate so a blocked write never blocks a read.
    pub(super) writer: WriteHalf<PeerStream>,
    /// Where reads land, reused.
    pub(super) rbuf: Box<[u8]>,
    /// The protocol engine.
    pub(super) session: Session,
    /// Bytes the session handed out that the socket has not taken yet.
    pub(super) tx: Vec<u8>,
    /// Bytes were written since the last flush (TLS may hold some back until flushed).
    pub(super) unflushed: bool,
    /// Offers on this connection and their waiters.
    offers: Offers<Reply>,
    /// When the peer's `Hello` arrived (`None` while handshaking): for `Connected` and how
    /// long the connection lasted, which the backoff forgives.
    pub(super) opened: Option<Instant>,
}

impl Conn {
    /// A fresh connection numbered `number`, whose session has just queued its `Hello`.
    pub(super) fn new(stream: PeerStream, number: u64, session: Session) -> Conn {
        let (direction, local, remote) = (
            stream.direction(),
            stream.local_addr(),
            stream.remote_addr(),
        );
        let (reader, writer) = tokio::io::split(stream);
        Conn {
            number,
            direction,
            local,
            remote,
            reader,
            writer,
            rbuf: vec![0; READ_CHUNK].into_boxed_slice(),
            session,
            tx: Vec::new(),
            unflushed: false,
            offers: Offers::default(),
            opened: None,
        }
    }

    /// An offer the link accepted for this connection: to the session, or behind the earlier
    /// ones still waiting for room.
    pub(super) fn offer(&mut self, item: Outgoing, reply: Reply, counters: &PeerCounters) {
        if self.offers.has_waiting() || self.session.room() == 0 {
            self.offers.wait(item, reply);
        } else {
            self.hand(item, reply, counters);
        }
    }

    /// The socket gave `read` (bytes in `rbuf`, 0 at its end) or failed.
    pub(super) fn on_read(&mut self, read: io::Result<usize>, counters: &PeerCounters) {
        match read {
            Ok(0) => self.session.on_eof(),
            Ok(n) => {
                PeerCounters::add(&counters.bytes_in, n as u64);
                self.session
                    .on_bytes(&self.rbuf[..n], std::time::Instant::now());
            }
            Err(e) => {
                debug!(error = %e, "reading from the peer failed");
                self.session.on_eof();
            }
        }
    }

    /// The socket took `Some(n)` bytes or finished a flush (`None`), or failed.
    pub(super) fn on_wrote(&mut self, wrote: io::Result<Option<usize>>, counters: &PeerCounters) {
        match wrote {
            Ok(Some(0)) => {
                debug!("the peer's socket takes no more bytes");
                self.session.on_eof();
            }
            Ok(Some(n)) => {
                PeerCounters::add(&counters.bytes_out, n as u64);
                self.tx.drain(..n.min(self.tx.len()));
                self.unflushed = true;
            }
            Ok(None) => self.unflushed = false,
            Err(e) => {
                debug!(error = %e, "writing to the peer failed");
                self.session.on_eof();
            }
        }
    }

    /// Fills the session's window from the waiting offers and acts on its events until it
    /// has nothing more: bytes go to `tx`, acknowledgements answer their waiters, the owner's
    /// events are returned, with the close reason if the session ended. `open` (the handles'
    /// stamp) is set when the session opens and cleared once it no longer takes offers.
    pub(super) fn drain(
        &mut self,
        counters: &PeerCounters,
        open: &AtomicU64,
    ) -> (Vec<PeerEvent>, Option<String>) {
        let (mut events, mut closed) = (Vec::new(), None);
        loop {
            self.fill(counters);
            let Some(event) = self.session.poll_event() else {
                break;
            };
            match event {
                Event::Transmit(bytes) => {
                    PeerCounters::add(&counters.writes, 1);
                    self.tx.extend_from_slice(&bytes);
                }
                Event::Peer {
                    id,
                    channels,
                    version,
                } => {
                    self.opened = Some(Instant::now());
                    open.store(self.number, Ordering::Release);
                    PeerCounters::add(&counters.connects, 1);
                    info!(
                        connection = self.number,
                        gateway = %id,
                        version,
                        remote = %self.remote,
                        "peer connected"
                    );
                    events.push(PeerEvent::Up {
                        gateway: id,
                        channels,
                    });
                }
                Event::Deliver(items) => {
                    PeerCounters::add(&counters.items_received, items.len() as u64);
                    events.push(PeerEvent::Deliver {
                        connection: self.number,
                        items,
                    });
                }
                Event::Acknowledged(keys) => {
                    let replies = self.offers.acknowledged(&keys);
                    PeerCounters::add(&counters.items_acked, replies.len() as u64);
                    for reply in replies {
                        let _ = reply.send(DeliveryStatus::Delivered);
                    }
                }
                Event::Closed(reason) => closed = Some(reason.to_string()),
            }
        }
        if !self.session.is_open() {
            // Closing or closed: nothing offered from now on can be taken.
            let _ = open.compare_exchange(self.number, 0, Ordering::AcqRel, Ordering::Acquire);
        }
        (events, closed)
    }

    /// The connection is over: every offer still on it is answered `Unreachable`, its last
    /// bytes leave in the background. Returns how long it was open (`None`: never opened).
    pub(super) fn close(mut self, reason: &str, counters: &PeerCounters) -> Option<Duration> {
        debug!(
            connection = self.number,
            unacknowledged = self.offers.in_flight(),
            waiting = self.offers.waiting(),
            "connection over: its offers are answered unreachable"
        );
        let replies = self.offers.drain();
        PeerCounters::add(&counters.items_unreachable, replies.len() as u64);
        for reply in replies {
            let _ = reply.send(DeliveryStatus::unreachable(format!(
                "the connection to the peer closed: {reason}"
            )));
        }
        close_quietly(self.writer, std::mem::take(&mut self.tx));
        self.opened.map(|t| t.elapsed())
    }

    /// Hands one offer to the session, or back to the head of the waiting queue when its
    /// window is full.
    fn hand(&mut self, item: Outgoing, reply: Reply, counters: &PeerCounters) {
        let key = item.key;
        match self.session.offer(item, std::time::Instant::now()) {
            Ok(()) => {
                PeerCounters::add(&counters.items_sent, 1);
                self.offers.sent(key, reply);
            }
            Err(OfferError::Full(item)) => self.offers.wait_first(item, reply),
            Err(OfferError::NotOpen(_)) => {
                PeerCounters::add(&counters.items_unreachable, 1);
                let _ = reply.send(DeliveryStatus::unreachable("the connection is closing"));
            }
            Err(OfferError::Invalid { what, .. }) => {
                PeerCounters::add(&counters.items_rejected, 1);
                let _ = reply.send(DeliveryStatus::Rejected {
                    reason: format!("no peer session can carry this item: {what}"),
                });
            }
        }
    }

    /// Hands waiting offers to the session while it has room, oldest first.
    fn fill(&mut self, counters: &PeerCounters) {
        while self.offers.has_waiting() && self.session.room() > 0 && self.session.is_open() {
            let Some((item, reply)) = self.offers.next_waiting() else {
                return;
            };
            let before = self.offers.waiting();
            self.hand(item, reply, counters);
            if self.offers.waiting() > before {
                // Put back: the byte window is full even though the item window is not.
                return;
            }
        }
    }
}

/// Writes a closed connection's last bytes (its `Close`) and shuts it, in the background and
/// bounded in time: the link goes on with the next connection meanwhile.
pub(super) fn close_quietly(mut writer: WriteHalf<PeerStream>, last: Vec<u8>) {
    tokio::spawn(
        async move {
            let _ = timeout(CLOSE_FLUSH, async {
                writer.write_all(&last).await?;
                writer.shutdown().await
            })
            .await;
        }
        .in_current_span(),
    );
}
