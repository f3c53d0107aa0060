//! The XMPP link task: the only owner of the component stream, its timers and its requests.
//!
//! ```text
//!   Connecting{attempt} --handshake--> Joining --every room answered--> Connected
//!        ^     |                          |                                 |
//!        |     +--(refused | error)-------+------(stream ended)-------------+--> Backoff{until}
//!        +------------------------------------------------------------------------------+
//! ```
//!
//! A component stream does not reconnect by itself (see [`stream`](super::stream) for why the
//! link reads it without `tokio_xmpp::Component`): when the server goes away the stream ends.
//! The link therefore reconnects with capped backoff (0.5 s → 30 s, not forgiven by a
//! connection that dies at once), and pings its server whenever it heard nothing from it for
//! `keepalive_every`: an unanswered ping ends a dead (half-open) stream, so messages are then
//! answered `Unreachable` rather than `Failed` one by one on a stream that no longer carries
//! anything.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use mesh_core::{Backoff, DeliveryStatus};
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::xmlstream::{RawStanzaHeader, Timeouts};
use tracing::{debug, info, warn};

use super::config::XmppConfig;
use super::directory::Directory;
use super::handle::{Lifecycle, Request, XmppCounters, XmppEvent};
use super::pending::Pending;
use super::rooms::{Action, Rooms, Timings, Who};
use super::stanza::{self, ErrorCondition};
use super::stream::{self, Connection, Read, XmppError};

/// The whole connect (TCP, stream header, handshake) must be done within this.
const CONNECT_LIMIT: Duration = Duration::from_secs(15);

/// A send that does not complete within this means a dead connection.
const SEND_LIMIT: Duration = Duration::from_secs(15);

/// How long a room has to answer a join.
const JOIN_LIMIT: Duration = Duration::from_secs(30);

/// Before joining a room again that dropped or refused us.
const REJOIN_AFTER: Duration = Duration::from_secs(2);

/// How a connection ended.
pub(super) enum Ended {
    /// Lost, with why.
    Lost(String),
    /// Shut down on request.
    Stopped,
}

/// The task state of one XMPP link.
pub(super) struct Link {
    /// Name, server, domains and timings.
    pub(super) config: XmppConfig,
    /// Times the link became ready, shared with the handles that stamp requests with it (see
    /// `XmppHandle`): a say or chat stamped earlier is refused, so the owner's retries keep
    /// their order across a reconnect.
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// Work from handles.
    requests: mpsc::UnboundedReceiver<Request>,
    /// Events to the owner; only ever `try_send`, so a slow owner never stalls the stream.
    events: mpsc::Sender<XmppEvent>,
    /// Events that found `events` full, in order (at most `event_capacity`).
    stash: VecDeque<XmppEvent>,
    /// Publishes where the link is.
    lifecycle: watch::Sender<Lifecycle>,
    /// Shared counters.
    pub(super) counters: Arc<XmppCounters>,
    /// Kept rooms and our occupants in them.
    pub(super) rooms: Rooms<oneshot::Sender<DeliveryStatus>>,
    /// Contacts and their followers.
    pub(super) directory: Directory,
    /// Chat messages waiting for the answer to the ping sent after them, by ping id.
    pub(super) chats: Pending<oneshot::Sender<DeliveryStatus>>,
    /// Room configuration iqs in flight: id → room, to report a refusal.
    pub(super) configuring: HashMap<String, String>,
    /// The keepalive ping in flight and when it counts as unanswered.
    pub(super) keepalive: Option<(String, Instant)>,
    /// When the stream came up (for `Lifecycle`).
    since: Instant,
    /// Why the server cannot be reached, for requests answered while offline.
    offline_reason: String,
    /// Reconnect delays.
    backoff: Backoff,
    /// Randomness for backoff jitter and id prefixes.
    rng: rand::rngs::SmallRng,
}

impl Link {
    /// The task state for a link whose channels `spawn` made.
    pub(super) fn new(
        config: XmppConfig,
        requests: mpsc::UnboundedReceiver<Request>,
        events: mpsc::Sender<XmppEvent>,
        lifecycle: watch::Sender<Lifecycle>,
        counters: Arc<XmppCounters>,
        generation: Arc<std::sync::atomic::AtomicU64>,
    ) -> Link {
        let mut rng = rand::rngs::SmallRng::from_os_rng();
        let prefix = format!("ar{:08x}", rng.random::<u32>());
        let timings = Timings {
            reflection: config.reflection_timeout,
            join: JOIN_LIMIT,
            self_ping: config.self_ping_every,
            rejoin: REJOIN_AFTER,
        };
        Link {
            generation,
            rooms: Rooms::new(&config.bridge_nick, timings, prefix),
            directory: Directory::new(&config.domain),
            chats: Pending::new(config.ping_timeout),
            backoff: Backoff::new(
                config.backoff_initial,
                config.backoff_max,
                config.stable_after,
            ),
            config,
            requests,
            events,
            stash: VecDeque::new(),
            lifecycle,
            counters,
            configuring: HashMap::new(),
            keepalive: None,
            since: Instant::now(),
            offline_reason: "not connected to the XMPP server yet".into(),
            rng,
        }
    }

    pub(super) async fn run(mut self) {
        if let Err(e) = self.config.check() {
            warn!(error = %e, "XMPP link not started");
            self.emit(XmppEvent::Problem(e.to_string()));
            return self.finish();
        }
        loop {
            self.lifecycle.send_replace(Lifecycle::Connecting {
                attempt: self.backoff.attempt(),
            });
            let lasted = match self.connect().await {
                Some(Ok(stream)) => {
                    XmppCounters::add(&self.counters.connects, 1);
                    self.since = Instant::now();
                    match self.serve(stream).await {
                        Ended::Lost(reason) => {
                            XmppCounters::add(&self.counters.reconnects, 1);
                            let lasted = self.since.elapsed();
                            self.lost(&reason);
                            Some(lasted)
                        }
                        Ended::Stopped => break,
                    }
                }
                Some(Err(reason)) => {
                    XmppCounters::add(&self.counters.failed_attempts, 1);
                    self.lost(&reason);
                    None
                }
                None => break,
            };
            let delay = self.backoff.next_delay(lasted, self.rng.random::<f64>());
            debug!(
                retry_in_ms = delay.as_millis() as u64,
                "XMPP link backing off"
            );
            let until = Instant::now() + delay;
            self.lifecycle.send_replace(Lifecycle::Backoff {
                until: until.into_std(),
            });
            if !self.wait_offline(until).await {
                break;
            }
        }
        self.finish();
    }

    /// One connection attempt; `None` means stop. Requests meanwhile are answered at once.
    async fn connect(&mut self) -> Option<Result<Connection, String>> {
        debug!(attempt = self.backoff.attempt(), "connecting");
        let (domain, secret, server) = (
            self.config.domain.clone(),
            self.config.secret.clone(),
            self.config.server.clone(),
        );
        // Reads are bounded by the keepalive: a stream silent this long is dead.
        let timeouts = Timeouts {
            read_timeout: self.config.keepalive_every * 3,
            response_timeout: Duration::from_secs(15),
        };
        let attempt = tokio::time::timeout(
            CONNECT_LIMIT,
            stream::connect(&server, &domain, &secret, timeouts),
        );
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                done = &mut attempt => return Some(match done {
                    Ok(Ok(connection)) => Ok(connection),
                    Ok(Err(e)) => {
                        if matches!(e, XmppError::Refused { .. }) {
                            self.emit(XmppEvent::Problem(e.to_string()));
                        }
                        Err(e.to_string())
                    }
                    Err(_) => Err(format!("no handshake from {server} within {}s", CONNECT_LIMIT.as_secs())),
                }),
                request = self.requests.recv() => match request {
                    Some(Request::Shutdown) | None => return None,
                    Some(r) => self.offline_request(r),
                },
                permit = self.events.clone().reserve_owned(), if !self.stash.is_empty() => self.unstash(permit),
            }
        }
    }

    /// One accepted stream, until it ends.
    async fn serve(&mut self, mut stream: Connection) -> Ended {
        info!("connected to the XMPP server");
        self.lifecycle.send_replace(Lifecycle::Joining {
            since: self.since.into_std(),
        });
        let now = Instant::now().into_std();
        let mut out = Vec::new();
        let actions = self.rooms.online(now);
        self.apply(actions, &mut out);
        out.extend(self.directory.rebroadcast());
        let mut keepalive_at = Instant::now() + self.config.keepalive_every;
        loop {
            for s in out.drain(..) {
                if let Err(why) = self.send(&mut stream, s).await {
                    return Ended::Lost(why);
                }
            }
            let mut wake = keepalive_at;
            for t in [
                self.rooms.next_deadline().map(Instant::from_std),
                self.chats.next_deadline().map(Instant::from_std),
                self.keepalive.as_ref().map(|(_, d)| *d),
            ]
            .into_iter()
            .flatten()
            {
                wake = wake.min(t);
            }
            tokio::select! {
                read = stream.next() => match read {
                    Read::Stanza(s) => {
                        // The server is alive: the keepalive is only for silence.
                        keepalive_at = Instant::now() + self.config.keepalive_every;
                        XmppCounters::add(&self.counters.stanzas_in, 1);
                        self.inbound(*s, &mut out);
                    }
                    Read::Invalid { kind, header, why } => {
                        XmppCounters::add(&self.counters.invalid_in, 1);
                        warn!(%kind, from = ?header.from, %why, "skipped a stanza that cannot be read");
                        out.extend(self.refuse_invalid(&kind, header));
                    }
                    // Silence is answered by the keepalive below; the stream is fine.
                    Read::Idle => keepalive_at = Instant::now(),
                    Read::Ended(e) => return Ended::Lost(e.to_string()),
                },
                request = self.requests.recv() => match request {
                    Some(Request::Shutdown) | None => {
                        self.goodbye(&mut stream).await;
                        return Ended::Stopped;
                    }
                    Some(r) => self.request(r, &mut out),
                },
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if let Some((_, deadline)) = &self.keepalive && *deadline <= now {
                        return Ended::Lost(format!(
                            "the XMPP server did not answer a ping within {}s",
                            self.config.ping_timeout.as_secs()
                        ));
                    }
                    if now >= keepalive_at && self.keepalive.is_none() {
                        let id = self.rooms.fresh_id();
                        if let (Ok(from), Ok(to)) = (Jid::new(&self.config.domain), Jid::new(&self.config.rooms)) {
                            out.push(stanza::ping(from, to, id.clone()));
                            self.keepalive = Some((id, now + self.config.ping_timeout));
                        }
                        keepalive_at = now + self.config.keepalive_every;
                    }
                    self.tick(now.into_std(), &mut out);
                }
                permit = self.events.clone().reserve_owned(), if !self.stash.is_empty() => self.unstash(permit),
            }
        }
    }

    async fn send(&mut self, stream: &mut Connection, s: Stanza) -> Result<(), String> {
        match tokio::time::timeout(SEND_LIMIT, stream.send(s)).await {
            Ok(Ok(())) => {
                XmppCounters::add(&self.counters.stanzas_out, 1);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("sending to the XMPP server failed: {e}")),
            Err(_) => Err(format!(
                "a send to the XMPP server took over {}s",
                SEND_LIMIT.as_secs()
            )),
        }
    }

    /// Unavailable presences for everyone we are, then the stream's end.
    async fn goodbye(&mut self, stream: &mut Connection) {
        let mut out = self.directory.goodbye();
        out.extend(self.leave_rooms());
        for s in out {
            if self.send(stream, s).await.is_err() {
                return;
            }
        }
        let _ = tokio::time::timeout(SEND_LIMIT, stream.close()).await;
    }

    /// A `bad-request` answer to a message or iq request we could not read (never to errors,
    /// results or presences: answering those could loop; never into a room: Prosody kicks an
    /// occupant for some errors, and a room's own stanzas are not the sender's fault).
    fn refuse_invalid(&self, kind: &str, header: RawStanzaHeader) -> Option<Stanza> {
        let from = Jid::new(header.to.as_deref()?).ok()?;
        let to = Jid::new(header.from.as_deref()?).ok()?;
        if to.domain().as_str() == self.config.rooms {
            return None;
        }
        let text = "this stanza cannot be read";
        match (kind, header.type_.as_deref()) {
            ("message", Some("error")) | ("iq", Some("result" | "error")) => None,
            ("message", _) => Some(stanza::message_error(
                from,
                to,
                header.id.as_deref(),
                ErrorCondition::BadRequest.to_error(text),
            )),
            ("iq", _) => Some(stanza::iq_error(
                from,
                to,
                header.id.unwrap_or_default(),
                ErrorCondition::BadRequest,
                text,
            )),
            _ => None,
        }
    }

    /// Timers: rooms (reflections, joins, self-pings) and chat confirmations.
    fn tick(&mut self, now: std::time::Instant, out: &mut Vec<Stanza>) {
        let actions = self.rooms.tick(now);
        self.apply(actions, out);
        for entry in self.chats.expired(now) {
            let why = format!(
                "the server did not confirm the chat to {} in time",
                entry.tag
            );
            self.settle(entry.waiter, DeliveryStatus::failed(why));
        }
    }

    /// The stream is gone: waiters learn it, the owner hears it.
    fn lost(&mut self, reason: &str) {
        warn!(%reason, attempt = self.backoff.attempt(), "XMPP link down");
        self.offline_reason = format!("XMPP server {} unreachable: {reason}", self.config.server);
        let actions = self.rooms.offline(&self.offline_reason.clone());
        let mut ignored = Vec::new();
        self.apply(actions, &mut ignored);
        for entry in self.chats.drain() {
            let why = self.offline_reason.clone();
            self.settle(entry.waiter, DeliveryStatus::unreachable(why));
        }
        self.configuring.clear();
        self.keepalive = None;
        self.emit(XmppEvent::Disconnected {
            reason: reason.to_owned(),
        });
    }

    /// Waits out a backoff; `false` means stop.
    async fn wait_offline(&mut self, until: Instant) -> bool {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                request = self.requests.recv() => match request {
                    Some(Request::Shutdown) | None => return false,
                    Some(r) => self.offline_request(r),
                },
                permit = self.events.clone().reserve_owned(), if !self.stash.is_empty() => self.unstash(permit),
            }
        }
    }

    /// A request while the stream is down: state is kept, messages are answered at once.
    fn offline_request(&mut self, request: Request) {
        let mut ignored = Vec::new();
        match request {
            Request::Say { reply, .. } | Request::Chat { reply, .. } => {
                let why = self.offline_reason.clone();
                self.settle(reply, DeliveryStatus::unreachable(why));
            }
            other => self.request(other, &mut ignored),
        }
    }

    /// Carries out what the rooms decided.
    pub(super) fn apply(
        &mut self,
        actions: Vec<Action<oneshot::Sender<DeliveryStatus>>>,
        out: &mut Vec<Stanza>,
    ) {
        for action in actions {
            match action {
                Action::Join { room, who, nick } => {
                    let from = self.who_jid(&who);
                    match (from, self.room_jid(&room, Some(&nick))) {
                        (Some(from), Some(to)) => out.push(stanza::join(from, to)),
                        _ => warn!(%room, %nick, "cannot make a JID for a join"),
                    }
                }
                Action::Configure { room } => {
                    let (Some(from), Some(to), Some(spec)) = (
                        self.who_jid(&Who::Bridge),
                        self.room_jid(&room, None),
                        self.rooms.spec(&room),
                    ) else {
                        continue;
                    };
                    let id = self.rooms.fresh_id();
                    out.push(stanza::configure(from, to, &spec, id.clone()));
                    self.configuring.insert(id, room);
                }
                Action::Say {
                    room,
                    local,
                    id,
                    body,
                } => {
                    if let (Some(from), Some(to)) =
                        (self.who_jid(&Who::Node(local)), self.room_jid(&room, None))
                    {
                        out.push(stanza::groupchat(from, to, id, body));
                    }
                }
                Action::SelfPing { room, nick, id } => {
                    if let (Some(from), Some(to)) = (
                        self.who_jid(&Who::Bridge),
                        self.room_jid(&room, Some(&nick)),
                    ) {
                        out.push(stanza::ping(from, to, id));
                    }
                }
                Action::Settle(waiter, status) => self.settle(waiter, status),
                Action::Problem(text) => {
                    warn!(problem = %text, "XMPP");
                    self.emit(XmppEvent::Problem(text));
                }
                Action::AllJoined => {
                    info!("every kept room joined");
                    self.generation
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    self.lifecycle.send_replace(Lifecycle::Connected {
                        since: self.since.into_std(),
                    });
                    self.emit(XmppEvent::Connected);
                }
            }
        }
    }

    /// Why a say or chat stamped with `generation` must not go out now: it was asked for before
    /// the link's current readiness (`None`: it may).
    pub(super) fn stale(&self, generation: u64) -> Option<String> {
        let now = self.generation.load(std::sync::atomic::Ordering::Acquire);
        (generation != now).then(|| {
            "asked for before the XMPP link was last ready (a reconnect or a room joined again); tried again in order".to_owned()
        })
    }

    /// The JID `who` speaks as in rooms.
    pub(super) fn who_jid(&self, who: &Who) -> Option<Jid> {
        let jid = match who {
            Who::Bridge => self.config.bridge_jid(),
            Who::Node(local) => self.config.occupant_jid(local),
        };
        Jid::new(&jid).ok()
    }

    /// `room@rooms` or `room@rooms/nick`.
    pub(super) fn room_jid(&self, room: &str, nick: Option<&str>) -> Option<Jid> {
        let jid = match nick {
            Some(nick) => format!("{room}@{}/{nick}", self.config.rooms),
            None => format!("{room}@{}", self.config.rooms),
        };
        Jid::new(&jid).ok()
    }

    /// `local@domain` (bare; the bare domain for `""`).
    pub(super) fn node_jid(&self, local: &str) -> Option<Jid> {
        if local.is_empty() {
            Jid::new(&self.config.domain).ok()
        } else {
            Jid::new(&format!("{local}@{}", self.config.domain)).ok()
        }
    }

    pub(super) fn settle(&self, waiter: oneshot::Sender<DeliveryStatus>, status: DeliveryStatus) {
        self.counters.outcome(&status);
        let _ = waiter.send(status);
    }

    /// Hands an event to the owner, or keeps it while the channel is full; drops (and counts)
    /// it when even the stash is full. Never waits.
    pub(super) fn emit(&mut self, event: XmppEvent) {
        let event = if self.stash.is_empty() {
            match self.events.try_send(event) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(event)) => event,
            }
        } else {
            event
        };
        if self.stash.len() < self.config.event_capacity {
            self.stash.push_back(event);
        } else {
            XmppCounters::add(&self.counters.dropped_events, 1);
            warn!("dropped an XMPP event: the owner's event queue is full");
        }
    }

    fn unstash(
        &mut self,
        permit: Result<mpsc::OwnedPermit<XmppEvent>, mpsc::error::SendError<()>>,
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
        let reason = format!("XMPP link `{}` has stopped", self.config.name);
        let actions = self.rooms.offline(&reason);
        let mut ignored = Vec::new();
        self.apply(actions, &mut ignored);
        for entry in self.chats.drain() {
            self.settle(entry.waiter, DeliveryStatus::unreachable(reason.clone()));
        }
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            if let Request::Say { reply, .. } | Request::Chat { reply, .. } = request {
                self.settle(reply, DeliveryStatus::unreachable(reason.clone()));
            }
        }
        self.lifecycle.send_replace(Lifecycle::Stopped);
        info!("XMPP link stopped");
    }
}
