//! The owner's side of an XMPP link: what it reports ([`XmppEvent`]), the handle that speaks
//! in rooms, sends chats and keeps the directory ([`XmppHandle`]), its counters, and
//! [`spawn`], which starts the link task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mesh_core::DeliveryStatus;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, info_span};

use super::config::{Contact, RoomSpec, XmppConfig};
use super::link::Link;
use super::stanza::ErrorCondition;

/// What an XMPP link reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmppEvent {
    /// The stream is up (authenticated) and every kept room answered the bridge's join.
    Connected,
    /// The stream ended or could not be opened; the link reconnects by itself with capped
    /// backoff.
    Disconnected {
        /// Why, for the operator.
        reason: String,
    },
    /// Someone (not one of our own occupants) said something in a kept room, live.
    Groupchat(RoomMessage),
    /// A chat message to one of our JIDs `local@domain`.
    Chat(ChatMessage),
    /// Something the operator should know, already human-readable (a room could not be
    /// configured, a stanza bounced for size, the server refused the handshake).
    Problem(String),
}

/// A message said in a kept room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMessage {
    /// The room's local part, as in [`RoomSpec`].
    pub room: String,
    /// The speaker's nick in the room.
    pub nick: String,
    /// The speaker's full real JID, when the room shows it to the bridge: where an answer
    /// about this message goes (an error to a bare JID is dropped by servers, RFC 6121 §8.5.2).
    pub real_jid: Option<String>,
    /// The stanza id as sent.
    pub id: Option<String>,
    /// What was said.
    pub body: String,
}

/// A chat message to one of our JIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// The sender's full JID, `alice@hub.lan/res`.
    pub from: String,
    /// The local part of our JID it went to (`!a1b2c3d4`); `""` for the bare domain.
    pub to_local: String,
    /// Its id.
    pub id: Option<String>,
    /// Its body.
    pub body: String,
    /// It asks for a XEP-0184 receipt.
    pub wants_receipt: bool,
}

/// Where an XMPP link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Opening the stream and doing the component handshake.
    Connecting {
        /// Failed attempts since the last stable connection.
        attempt: u32,
    },
    /// The stream is up; the bridge is joining the kept rooms.
    Joining {
        /// Since when the stream is up.
        since: Instant,
    },
    /// Up, and every kept room answered.
    Connected {
        /// Since when the stream is up.
        since: Instant,
    },
    /// Waiting before the next attempt.
    Backoff {
        /// When to try again.
        until: Instant,
    },
    /// Shut down.
    Stopped,
}

/// Counters of what crossed the link, shared with metrics and status pages.
#[derive(Debug, Default)]
pub struct XmppCounters {
    /// Stanzas received.
    pub stanzas_in: AtomicU64,
    /// Stanzas sent.
    pub stanzas_out: AtomicU64,
    /// Inbound messages bounced because their body was above `max_body`.
    pub bounced: AtomicU64,
    /// Stanzas received that the parsers could not read (skipped; messages and iq requests
    /// answered `bad-request`).
    pub invalid_in: AtomicU64,
    /// Streams the server accepted (the first one included).
    pub connects: AtomicU64,
    /// Streams lost after the server had accepted them (each is followed by a reconnect).
    pub reconnects: AtomicU64,
    /// Connection attempts that failed (refused handshakes included).
    pub failed_attempts: AtomicU64,
    /// Room and chat messages answered `Delivered`.
    pub delivered: AtomicU64,
    /// Answered `Unreachable`.
    pub unreachable: AtomicU64,
    /// Answered `Failed` (no reflection or ping answer in time).
    pub failed: AtomicU64,
    /// Answered `Rejected`.
    pub rejected: AtomicU64,
    /// Events dropped because the owner left too many unread.
    pub dropped_events: AtomicU64,
}

impl XmppCounters {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an outcome under its kind.
    pub(super) fn outcome(&self, status: &DeliveryStatus) {
        let counter = match status {
            DeliveryStatus::Delivered => &self.delivered,
            DeliveryStatus::Unreachable { .. } => &self.unreachable,
            DeliveryStatus::Failed { .. } => &self.failed,
            DeliveryStatus::Rejected { .. } => &self.rejected,
        };
        XmppCounters::add(counter, 1);
    }
}

/// The link refuses work because it has stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("XMPP link `{0}` has stopped")]
pub struct LinkStopped(pub String);

/// Work for the link task.
pub(super) enum Request {
    /// Keep a room.
    KeepRoom(RoomSpec),
    /// Say something in a room.
    Say {
        /// Room local part.
        room: String,
        /// Node local part.
        local: String,
        /// Nick wanted.
        nick: String,
        /// Text.
        body: String,
        /// The link's generation when it was asked ([`XmppHandle::generation`]).
        generation: u64,
        /// Who waits.
        reply: oneshot::Sender<DeliveryStatus>,
    },
    /// Send a chat message.
    Chat {
        /// Node local part.
        local: String,
        /// Recipient JID.
        to: String,
        /// Text.
        body: String,
        /// The link's generation when it was asked.
        generation: u64,
        /// Who waits.
        reply: oneshot::Sender<DeliveryStatus>,
    },
    /// Send a receipt.
    Receipt {
        /// Node local part.
        local: String,
        /// Recipient JID.
        to: String,
        /// The acknowledged message id.
        id: String,
    },
    /// Send a message error.
    Error {
        /// Node local part.
        local: String,
        /// Recipient JID.
        to: String,
        /// The message it is about.
        id: Option<String>,
        /// Condition.
        condition: ErrorCondition,
        /// Text.
        text: String,
    },
    /// Set a contact.
    SetContact(Contact),
    /// Say goodbye and stop.
    Shutdown,
}

/// The owner's side of an XMPP link. Cloning it shares the same link.
#[derive(Clone)]
pub struct XmppHandle {
    /// For messages.
    name: Arc<str>,
    /// Work for the link; unbounded because every waiting call is bounded by its caller, and
    /// fire-and-forget calls must not block the owner's event loop.
    requests: mpsc::UnboundedSender<Request>,
    /// How many times the link became ready (every kept room joined): a say or chat is
    /// stamped with it when asked, and the link refuses (`Unreachable`) one stamped before its
    /// current readiness. Without it, a message asked for just before a reconnect could be
    /// refused while the next one, asked a moment later, went out on the new stream: the
    /// owner then sent the first again after the second, out of order.
    generation: Arc<AtomicU64>,
    /// What crossed the link.
    counters: Arc<XmppCounters>,
    /// Where the link is.
    lifecycle: watch::Receiver<Lifecycle>,
    /// The link task, awaited on shutdown.
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl XmppHandle {
    /// Resolves once the stream is up and every kept room answered (at once if so); `Err`
    /// when the link stopped for good.
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

    /// Whether the stream is up and the kept rooms joined.
    pub fn is_connected(&self) -> bool {
        matches!(*self.lifecycle.borrow(), Lifecycle::Connected { .. })
    }

    /// Where the link is now.
    pub fn lifecycle(&self) -> Lifecycle {
        *self.lifecycle.borrow()
    }

    /// Keeps (creates, configures, joins) a room; idempotent.
    pub fn keep_room(&self, room: RoomSpec) {
        let _ = self.requests.send(Request::KeepRoom(room));
    }

    /// Says `body` in room `room` (local part) as `from_local@domain` with nickname `nick`
    /// (joined on demand; on a nick conflict the link takes `nick (2)`… and keeps it).
    /// `Delivered` only once the room reflected the message (matched on the id it sent);
    /// `Unreachable` while the stream is down or the room is not joined; `Rejected` when the
    /// room refused it; `Failed` when no reflection came in time.
    pub fn say(
        &self,
        room: &str,
        from_local: &str,
        nick: &str,
        body: String,
    ) -> impl Future<Output = DeliveryStatus> + Send + 'static {
        let (reply, outcome) = oneshot::channel();
        let request = Request::Say {
            room: room.to_owned(),
            local: from_local.to_owned(),
            nick: nick.to_owned(),
            body,
            generation: self.generation.load(Ordering::Acquire),
            reply,
        };
        self.ask(request, outcome)
    }

    /// Sends a chat message from `from_local@domain` to `to`. `Delivered` only once the
    /// server answered a ping sent after it on the same stream; `Unreachable` when the stream
    /// is down; `Rejected` for a JID that cannot be one.
    pub fn chat(
        &self,
        from_local: &str,
        to: &str,
        body: String,
    ) -> impl Future<Output = DeliveryStatus> + Send + 'static {
        let (reply, outcome) = oneshot::channel();
        let request = Request::Chat {
            local: from_local.to_owned(),
            to: to.to_owned(),
            body,
            generation: self.generation.load(Ordering::Acquire),
            reply,
        };
        self.ask(request, outcome)
    }

    /// A XEP-0184 receipt from `from_local@domain` to `to` for message `id`.
    pub fn receipt(&self, from_local: &str, to: &str, id: &str) {
        let _ = self.requests.send(Request::Receipt {
            local: from_local.to_owned(),
            to: to.to_owned(),
            id: id.to_owned(),
        });
    }

    /// A message error from `from_local@domain` to `to` about message `id`, with `text`.
    pub fn error(
        &self,
        from_local: &str,
        to: &str,
        id: Option<&str>,
        condition: ErrorCondition,
        text: &str,
    ) {
        let _ = self.requests.send(Request::Error {
            local: from_local.to_owned(),
            to: to.to_owned(),
            id: id.map(str::to_owned),
            condition,
            text: text.to_owned(),
        });
    }

    /// Sets (or replaces) a contact: its presence goes to everyone subscribed to it;
    /// subscription requests to it are approved, probes answered, and vCard and disco#info on
    /// `local@domain` answer from it.
    pub fn set_contact(&self, contact: Contact) {
        let _ = self.requests.send(Request::SetContact(contact));
    }

    /// What crossed the link so far.
    pub fn counters(&self) -> &XmppCounters {
        &self.counters
    }

    /// Closes the stream (unavailable presences first) and ends the link task.
    pub async fn shutdown(&self) {
        let _ = self.requests.send(Request::Shutdown);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }

    /// Hands `request` to the link now (so requests keep the order of the calls), and
    /// returns what waits for its outcome.
    fn ask(
        &self,
        request: Request,
        outcome: oneshot::Receiver<DeliveryStatus>,
    ) -> impl Future<Output = DeliveryStatus> + Send + 'static {
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
}

/// Starts an XMPP link task. Events arrive on the returned receiver; the link keeps
/// reconnecting until [`XmppHandle::shutdown`] or until every handle is dropped.
///
/// # Panics
/// Outside a Tokio runtime (the link is a task on it).
pub fn spawn(config: XmppConfig) -> (XmppHandle, mpsc::Receiver<XmppEvent>) {
    let (requests, request_rx) = mpsc::unbounded_channel();
    let (events, event_rx) = mpsc::channel(config.event_capacity.max(1));
    let (lifecycle_tx, lifecycle) = watch::channel(Lifecycle::Connecting { attempt: 0 });
    let counters = Arc::new(XmppCounters::default());
    let span =
        info_span!("xmpp", name = %config.name, server = %config.server, domain = %config.domain);
    let name: Arc<str> = config.name.clone().into();
    let generation = Arc::new(AtomicU64::new(0));
    let link = Link::new(
        config,
        request_rx,
        events,
        lifecycle_tx,
        counters.clone(),
        generation.clone(),
    );
    let task = tokio::spawn(link.run().instrument(span));
    let handle = XmppHandle {
        name,
        requests,
        generation,
        counters,
        lifecycle,
        task: Arc::new(tokio::sync::Mutex::new(Some(task))),
    };
    (handle, event_rx)
}
