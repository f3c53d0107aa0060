//! The peer link task: the only owner of the connection to one peer gateway, its
//! [`Session`], its timers, its dials and its requests.
//!
//! ```text
//!   Waiting (no address) ----------------adopt----------------+
//!   Dialling{attempt} --authenticated--> Handshaking --Hello--> Connected
//!        ^      |                            |                      |
//!        |      +--(refused | error)---------+-----(closed, lost)---+--> Backoff{until}
//!        +--------------------------------------------------------------------+
//! ```
//!
//! One loop selects over the requests, the dial in flight, the socket's two halves and the
//! session's next deadline; every decision about bytes and time is the session's. Writes go
//! through a buffer written as the socket takes it, so a peer slow to read never stops the
//! link from reading, answering requests or noticing the peer's silence.
//!
//! A dial runs in a task of its own and its stream comes back like an adopted one: both go
//! through [`resolve_duplicate`], so when two hubs dial each other each keeps the same single
//! connection. Dials back off (capped, jittered, also after a connection that worked and then
//! died, forgiven after [`STABLE_AFTER`] of good connection).

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mesh_core::peer::{CloseCode, Outgoing, Session};
use mesh_core::{Backoff, DeliveryStatus};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, info, warn};

use super::conn::{Conn, Reply, close_quietly};
use super::duplicate::{Duplicate, resolve_duplicate};
use super::handle::{Lifecycle, PeerCounters, PeerEvent, PeerLinkConfig, Request};
use super::offers::admit;
use super::transport::{PeerStream, TransportError, connect};

/// Events the owner may leave unread before they wait in the link's stash.
pub(super) const EVENT_CAPACITY: usize = 64;

/// A connection that lasted this long forgives the backoff: the next failure starts it over.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// The dial in flight.
type Dial = JoinHandle<Result<Box<PeerStream>, TransportError>>;

/// What follows a lost connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Dial again (after the backoff) when the link has an address.
    Redial,
    /// Another connection takes its place at once.
    Replaced,
    /// The link is stopping.
    Stopped,
}

/// What woke the loop.
enum Wake {
    /// A request, or `None` when every handle is gone.
    Request(Option<Request>),
    /// The dial in flight finished.
    Dialled(Result<Result<Box<PeerStream>, TransportError>, tokio::task::JoinError>),
    /// Time to dial again.
    Redial,
    /// The socket gave bytes (0: the end) or failed.
    Read(io::Result<usize>),
    /// The socket took bytes (`Some(n)`) or finished a flush (`None`), or failed.
    Wrote(io::Result<Option<usize>>),
    /// The session's next deadline passed.
    Deadline,
    /// The owner's event queue has room for a stashed event.
    Unstash(Result<mpsc::OwnedPermit<PeerEvent>, mpsc::error::SendError<()>>),
}

/// The task state of one peer link.
pub(super) struct Link {
    /// Who we are, who the peer is, where to dial it, the session and backoff settings.
    config: PeerLinkConfig,
    /// Work from handles.
    requests: mpsc::UnboundedReceiver<Request>,
    /// False once every handle is gone (the channel would answer `None` forever).
    requests_open: bool,
    /// Events to the owner; only ever `try_send`, so a slow owner never stalls the socket.
    events: mpsc::Sender<PeerEvent>,
    /// Events that found `events` full, in order. Never dropped but for repeated problems: a
    /// lost `Deliver` would never be committed, so never acknowledged. Bounded by the
    /// session's receive window (a peer that sends beyond it is closed), by one `Up`/`Down`
    /// per connection, and by `EVENT_CAPACITY` problems.
    stash: VecDeque<PeerEvent>,
    /// Publishes where the link is.
    lifecycle: watch::Sender<Lifecycle>,
    /// The open connection's number, shared with the handles that stamp offers with it.
    open: Arc<AtomicU64>,
    /// Shared counters.
    counters: Arc<PeerCounters>,
    /// The connection, when there is one.
    conn: Option<Conn>,
    /// The dial in flight.
    dial: Option<Dial>,
    /// When to dial next (`None`: no dial planned, or no address).
    retry_at: Option<Instant>,
    /// Delays between dials.
    backoff: Backoff,
    /// The number the next connection gets (from 1: 0 means none in offers' stamps).
    next_number: u64,
    /// Shutdown asked: the connection is closing and the loop ends once it is gone.
    stopping: bool,
    /// Randomness for the backoff's jitter.
    rng: rand::rngs::SmallRng,
    /// The owner was told the peer is down since the last connection (or the start), so a
    /// neighbour that was never reached shows as down with why, once, not at every retry.
    down_told: bool,
}

impl Link {
    /// The task state for a link whose channels `spawn` made.
    pub(super) fn new(
        config: PeerLinkConfig,
        requests: mpsc::UnboundedReceiver<Request>,
        events: mpsc::Sender<PeerEvent>,
        lifecycle: watch::Sender<Lifecycle>,
        counters: Arc<PeerCounters>,
        open: Arc<AtomicU64>,
    ) -> Link {
        let retry_at = config.address.map(|_| Instant::now());
        Link {
            backoff: Backoff::new(config.backoff_initial, config.backoff_max, STABLE_AFTER),
            config,
            requests,
            requests_open: true,
            events,
            stash: VecDeque::new(),
            lifecycle,
            open,
            counters,
            conn: None,
            dial: None,
            retry_at,
            next_number: 1,
            stopping: false,
            rng: rand::rngs::SmallRng::from_os_rng(),
            down_told: false,
        }
    }

    pub(super) async fn run(mut self) {
        if let Err(e) = Session::new(
            self.config.gateway,
            self.config.channels.clone(),
            self.config.session.clone(),
            std::time::Instant::now(),
        ) {
            let problem = format!("peer link not started: {e}");
            warn!("{problem}");
            self.emit(PeerEvent::Problem(problem));
            return self.finish();
        }
        while !(self.stopping && self.conn.is_none()) {
            self.publish();
            match self.wait().await {
                Wake::Request(None) => {
                    self.requests_open = false;
                    self.stop();
                }
                Wake::Request(Some(request)) => self.request(request),
                Wake::Dialled(result) => self.dialled(result),
                Wake::Redial => self.start_dial(),
                Wake::Read(read) => self.on_read(read),
                Wake::Wrote(wrote) => self.on_wrote(wrote),
                Wake::Deadline => {
                    if let Some(conn) = &mut self.conn {
                        conn.session.tick(std::time::Instant::now());
                    }
                }
                Wake::Unstash(permit) => self.unstash(permit),
            }
            self.pump();
        }
        self.finish();
    }

    /// Waits for the next thing to act on.
    async fn wait(&mut self) -> Wake {
        let Link {
            requests,
            requests_open,
            events,
            stash,
            conn,
            dial,
            retry_at,
            stopping,
            ..
        } = self;
        let redial = match (&conn, &dial, *retry_at, *stopping) {
            (None, None, Some(at), false) => Some(at),
            _ => None,
        };
        let far = Instant::now() + Duration::from_secs(3600);
        let dialling = async {
            match dial.as_mut() {
                Some(dial) => dial.await,
                None => std::future::pending().await,
            }
        };
        let Some(conn) = conn else {
            return tokio::select! {
                request = requests.recv(), if *requests_open => Wake::Request(request),
                result = dialling => Wake::Dialled(result),
                _ = sleep_until(redial.unwrap_or(far)), if redial.is_some() => Wake::Redial,
                permit = events.clone().reserve_owned(), if !stash.is_empty() => Wake::Unstash(permit),
            };
        };
        let deadline = conn.session.next_deadline().map(Instant::from_std);
        let Conn {
            reader,
            writer,
            rbuf,
            tx,
            unflushed,
            ..
        } = conn;
        let must_write = !tx.is_empty() || *unflushed;
        let write = async {
            if tx.is_empty() {
                writer.flush().await.map(|()| None)
            } else {
                writer.write(tx).await.map(Some)
            }
        };
        tokio::select! {
            request = requests.recv(), if *requests_open => Wake::Request(request),
            result = dialling => Wake::Dialled(result),
            read = reader.read(rbuf) => Wake::Read(read),
            wrote = write, if must_write => Wake::Wrote(wrote),
            _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => Wake::Deadline,
            permit = events.clone().reserve_owned(), if !stash.is_empty() => Wake::Unstash(permit),
        }
    }

    fn request(&mut self, request: Request) {
        match request {
            Request::Offer {
                item,
                connection,
                reply,
            } => self.offer(item, connection, reply),
            Request::Committed { connection, seq } => {
                if let Some(conn) = &mut self.conn
                    && conn.number == connection
                {
                    conn.session.committed(seq, std::time::Instant::now());
                }
            }
            Request::Adopt(stream) => {
                if stream.peer_key() != self.config.peer_key {
                    // The acceptor routes by key; a mismatch is a caller's bug, not the peer's.
                    let problem = format!(
                        "refused a connection from {} handed to this peer: it proved key {}",
                        stream.remote_addr(),
                        stream.peer_key().fingerprint()
                    );
                    warn!("{problem}");
                    self.emit(PeerEvent::Problem(problem));
                    return;
                }
                self.arrived(*stream);
            }
            Request::Shutdown => self.stop(),
        }
    }

    /// An offer is taken only by the connection that was open when the owner made it.
    fn offer(&mut self, item: Outgoing, connection: u64, reply: Reply) {
        let current = self.conn.as_ref().map(|c| (c.number, c.session.is_open()));
        match (admit(connection, current, self.stopping), &mut self.conn) {
            (Ok(()), Some(conn)) => conn.offer(item, reply, &self.counters),
            (refused, _) => {
                let reason = refused.err().unwrap_or("no connection to the peer");
                PeerCounters::add(&self.counters.items_unreachable, 1);
                let _ = reply.send(DeliveryStatus::unreachable(reason));
            }
        }
    }

    /// A new authenticated connection, dialled or adopted: kept, or closed per the rule both
    /// gateways apply.
    fn arrived(&mut self, stream: PeerStream) {
        let existing = self.conn.as_ref().map(|c| c.direction);
        let ours = self.config.identity.public_key();
        match resolve_duplicate(ours, self.config.peer_key, existing, stream.direction()) {
            Duplicate::Keep => self.install(stream),
            Duplicate::Replace => {
                PeerCounters::add(&self.counters.duplicates, 1);
                debug!(remote = %stream.remote_addr(), "a new connection replaces the open one");
                if let Some(conn) = &mut self.conn {
                    conn.session.close(
                        CloseCode::Replaced,
                        "another connection to this gateway is kept",
                        std::time::Instant::now(),
                    );
                }
                self.collect();
                self.lost("replaced by a newer connection".into(), After::Replaced);
                self.install(stream);
            }
            Duplicate::CloseNew => {
                PeerCounters::add(&self.counters.duplicates, 1);
                debug!(remote = %stream.remote_addr(), "closed a duplicate connection");
                close_quietly(tokio::io::split(stream).1, Vec::new());
            }
        }
    }

    fn install(&mut self, stream: PeerStream) {
        if self.stopping {
            close_quietly(tokio::io::split(stream).1, Vec::new());
            return;
        }
        self.down_told = false;
        let session = match Session::new(
            self.config.gateway,
            self.config.channels.clone(),
            self.config.session.clone(),
            std::time::Instant::now(),
        ) {
            Ok(session) => session,
            // Checked when the link started; the configuration does not change.
            Err(e) => return warn!(error = %e, "cannot start a peer session"),
        };
        let number = self.next_number;
        self.next_number += 1;
        debug!(
            connection = number,
            direction = ?stream.direction(),
            remote = %stream.remote_addr(),
            "peer connection authenticated"
        );
        self.conn = Some(Conn::new(stream, number, session));
        self.retry_at = None;
    }

    fn start_dial(&mut self) {
        self.retry_at = None;
        let Some(addr) = self.config.address else {
            return;
        };
        PeerCounters::add(&self.counters.dials, 1);
        debug!(attempt = self.backoff.attempt(), %addr, "dialling the peer");
        let (identity, expected, limit) = (
            self.config.identity.clone(),
            self.config.peer_key,
            self.config.connect_timeout,
        );
        let dial = async move {
            connect(addr, &identity, expected, limit)
                .await
                .map(|(stream, _)| Box::new(stream))
        };
        self.dial = Some(tokio::spawn(dial.in_current_span()));
    }

    fn dialled(
        &mut self,
        result: Result<Result<Box<PeerStream>, TransportError>, tokio::task::JoinError>,
    ) {
        self.dial = None;
        let error = match result {
            Ok(Ok(stream)) => return self.arrived(*stream),
            Ok(Err(e)) => e,
            Err(e) => return warn!(error = %e, "the dial task failed"),
        };
        PeerCounters::add(&self.counters.failed_dials, 1);
        let refusal = error.presented().is_some()
            || matches!(
                error,
                TransportError::Refused { .. } | TransportError::OwnKey
            );
        if refusal {
            PeerCounters::add(&self.counters.refusals, 1);
            warn!(error = %error, "the peer's handshake was refused");
            self.emit(PeerEvent::Problem(format!(
                "peer `{}`: {error}",
                self.config.name
            )));
        } else {
            debug!(error = %error, "dialling the peer failed");
        }
        if !self.down_told {
            self.down_told = true;
            self.emit(PeerEvent::Down {
                reason: error.to_string(),
            });
        }
        self.schedule(None);
    }

    /// Plans the next dial, unless a connection is open, a dial is out, or none is possible.
    fn schedule(&mut self, lasted: Option<Duration>) {
        if self.config.address.is_none()
            || self.stopping
            || self.conn.is_some()
            || self.dial.is_some()
        {
            return;
        }
        let delay = self.backoff.next_delay(lasted, self.rng.random::<f64>());
        debug!(retry_in_ms = delay.as_millis() as u64, "backing off");
        self.retry_at = Some(Instant::now() + delay);
    }

    fn on_read(&mut self, read: io::Result<usize>) {
        if let Some(conn) = &mut self.conn {
            conn.on_read(read, &self.counters);
        }
    }

    fn on_wrote(&mut self, wrote: io::Result<Option<usize>>) {
        if let Some(conn) = &mut self.conn {
            conn.on_wrote(wrote, &self.counters);
        }
    }

    /// Acts on what the session has for us, until it has nothing more.
    fn pump(&mut self) {
        if let Some(reason) = self.collect() {
            self.lost(reason, After::Redial);
        }
    }

    /// Like `pump`, but hands a close back instead of acting on it.
    fn collect(&mut self) -> Option<String> {
        let (events, closed) = self.conn.as_mut()?.drain(&self.counters, &self.open);
        // Where the link is, first: an owner told `Up` finds the handle connected.
        self.publish();
        for event in events {
            self.emit(event);
        }
        closed
    }

    /// The connection is over: its waiters are answered, its last bytes leave in the
    /// background, the owner is told, and what comes `after` is planned.
    fn lost(&mut self, reason: String, after: After) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        self.open.store(0, Ordering::Release);
        let (number, remote) = (conn.number, conn.remote);
        let lasted = conn.close(&reason, &self.counters);
        if lasted.is_some() {
            info!(connection = number, %reason, "peer disconnected");
            self.down_told = true;
            self.emit(PeerEvent::Down {
                reason: reason.clone(),
            });
        } else if after == After::Replaced {
            debug!(connection = number, "replaced during the handshake");
        } else {
            let problem = format!(
                "peer `{}`: the connection with {} closed during the handshake: {reason}",
                self.config.name, remote
            );
            warn!("{problem}");
            self.emit(PeerEvent::Problem(problem));
        }
        if after == After::Redial {
            self.schedule(lasted);
        }
    }

    /// Shutdown asked: close the connection politely; the loop ends once it is gone.
    fn stop(&mut self) {
        self.stopping = true;
        self.retry_at = None;
        if let Some(dial) = self.dial.take() {
            dial.abort();
        }
        if let Some(conn) = &mut self.conn {
            conn.session.close(
                CloseCode::Normal,
                "the gateway is shutting down",
                std::time::Instant::now(),
            );
        }
    }

    fn publish(&mut self) {
        let now = match (&self.conn, &self.dial, self.retry_at) {
            (Some(conn), _, _) => match conn.opened {
                Some(since) if conn.session.is_open() => Lifecycle::Connected {
                    connection: conn.number,
                    local: conn.local,
                    remote: conn.remote,
                    since: since.into_std(),
                },
                _ => Lifecycle::Handshaking {
                    connection: conn.number,
                },
            },
            (None, Some(_), _) => Lifecycle::Dialling {
                attempt: self.backoff.attempt(),
            },
            (None, None, Some(until)) => Lifecycle::Backoff {
                until: until.into_std(),
            },
            (None, None, None) => Lifecycle::Waiting,
        };
        self.lifecycle.send_if_modified(|current| {
            let changed = *current != now;
            *current = now;
            changed
        });
    }

    fn emit(&mut self, event: PeerEvent) {
        let event = if self.stash.is_empty() {
            match self.events.try_send(event) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(event)) => event,
            }
        } else {
            event
        };
        if let PeerEvent::Problem(problem) = &event
            && self.stash.len() >= EVENT_CAPACITY
        {
            // Problems repeat with every refused dial; an owner that reads none must not
            // make them pile up. Deliveries and Up/Down are never dropped (see `stash`).
            PeerCounters::add(&self.counters.dropped_problems, 1);
            return debug!(%problem, "dropped a problem report: the owner's queue is full");
        }
        self.stash.push_back(event);
    }

    fn unstash(
        &mut self,
        permit: Result<mpsc::OwnedPermit<PeerEvent>, mpsc::error::SendError<()>>,
    ) {
        match permit {
            Ok(permit) => {
                if let Some(event) = self.stash.pop_front() {
                    permit.send(event);
                }
            }
            Err(_) => self.stash.clear(),
        }
    }

    /// Stopped: whoever still waits learns it.
    fn finish(&mut self) {
        self.lost("the peer link stopped".into(), After::Stopped);
        if let Some(dial) = self.dial.take() {
            dial.abort();
        }
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            if let Request::Offer { reply, .. } = request {
                PeerCounters::add(&self.counters.items_unreachable, 1);
                let _ = reply.send(DeliveryStatus::unreachable("the peer link stopped"));
            }
        }
        while let Some(event) = self.stash.pop_front() {
            if self.events.try_send(event).is_err() {
                break;
            }
        }
        self.lifecycle.send_replace(Lifecycle::Stopped);
        info!("peer link stopped");
    }
}
