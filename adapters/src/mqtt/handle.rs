//! The owner's side of an MQTT link: what it reports ([`MqttEvent`]), the handle that publishes
//! and acknowledges ([`MqttHandle`]), and [`spawn`], which checks the settings and starts the
//! link task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mesh_core::DeliveryStatus;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, info_span};

use super::config::{self, MqttConfig, MqttError};
use super::link::Link;
use super::state::Lifecycle;

/// What an MQTT link reports to its owner.
#[derive(Debug)]
pub enum MqttEvent {
    /// The broker accepted the connection.
    Connected {
        /// Whether it still had our session (then it redelivers what we had not acked).
        session_present: bool,
    },
    /// The broker answered our subscriptions; `refused` lists the filters it turned down.
    Subscribed {
        /// Filters the broker refused (usually its access rules).
        refused: Vec<String>,
    },
    /// The connection ended or could not be made; the link retries after `retry_in`.
    Disconnected {
        /// Why, for the operator.
        reason: String,
        /// Backoff before the next attempt.
        retry_in: Duration,
    },
    /// A message from a subscription. Acknowledge it with [`MqttHandle::ack`] once it is safe.
    Message(Incoming),
}

/// A message the broker delivered, with the token that acknowledges it.
#[derive(Debug)]
pub struct Incoming {
    /// Its topic.
    pub topic: String,
    /// Its bytes, exactly as published.
    pub payload: Bytes,
    /// The broker's DUP flag: it may have delivered this message before.
    pub duplicate: bool,
    /// A retained message (sent on subscribing, not a new publish).
    pub retained: bool,
    /// Hand this to [`MqttHandle::ack`] once the message is stored; until then the broker
    /// keeps it and redelivers it on the next session.
    pub ack: AckToken,
}

/// The right to acknowledge one received message, exactly once (it is not `Clone`).
#[derive(Debug)]
pub struct AckToken {
    /// Which connection delivered it: packet ids mean nothing on another connection.
    pub(super) generation: u64,
    /// The message's packet id on that connection.
    pub(super) pkid: u16,
    /// Its QoS; QoS 0 needs no acknowledgement.
    pub(super) qos: QoS,
}

/// Counters of what crossed the link, shared with metrics and status pages.
#[derive(Debug, Default)]
pub struct MqttCounters {
    /// Publishes written to the broker (a publish retried by the owner counts again).
    pub published: AtomicU64,
    /// Publishes the broker confirmed with a PUBACK (answered `Delivered`).
    pub acked: AtomicU64,
    /// Publishes answered `Unreachable` (link down or lost with them in flight).
    pub unreachable: AtomicU64,
    /// Publishes refused before sending (wildcard or empty topic, over max_packet_size).
    pub rejected: AtomicU64,
    /// Messages received from subscriptions.
    pub received: AtomicU64,
    /// PUBACKs sent for received messages.
    pub acked_in: AtomicU64,
    /// Acknowledgements dropped because their connection was gone (the broker redelivers).
    pub stale_acks: AtomicU64,
    /// QoS 0 messages dropped because the owner's event queue was full.
    pub dropped_qos0: AtomicU64,
    /// Connections dropped on purpose because the owner's event queue was full.
    pub overflows: AtomicU64,
    /// Connections the broker accepted.
    pub connects: AtomicU64,
    /// Connections lost after the broker had accepted them.
    pub connection_losses: AtomicU64,
    /// Connection attempts that failed (refusals included).
    pub failed_attempts: AtomicU64,
    /// Attempts the broker refused in its CONNACK (credentials, client id).
    pub refused: AtomicU64,
    /// Subscription filters the broker refused.
    pub subscribe_refused: AtomicU64,
}

impl MqttCounters {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The link refuses work because it has stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("MQTT link `{0}` has stopped")]
pub struct LinkStopped(pub String);

/// A publish waiting for the link.
pub(super) struct PublishRequest {
    /// Where to publish.
    pub(super) topic: String,
    /// What.
    pub(super) payload: Bytes,
    /// Who waits for the outcome.
    pub(super) reply: oneshot::Sender<DeliveryStatus>,
}

/// Requests that are not publishes; never held back by the in-flight window.
pub(super) enum Control {
    /// Send this message's PUBACK.
    Ack(AckToken),
    /// Finish what is in flight and stop.
    Shutdown,
}

/// The owner's side of an MQTT link. Cloning it shares the same link.
#[derive(Clone)]
pub struct MqttHandle {
    /// For messages.
    name: Arc<str>,
    /// Publishes to the link, in call order. Unbounded: the link takes them off only while
    /// its in-flight window has room, and the owner (the drain worker) bounds how many it has
    /// outstanding, so at most a window's worth waits here.
    publishes: mpsc::UnboundedSender<PublishRequest>,
    /// Acks and shutdown, in the order they were given.
    control: mpsc::UnboundedSender<Control>,
    /// What crossed the link.
    counters: Arc<MqttCounters>,
    /// Where the link is.
    lifecycle: watch::Receiver<Lifecycle>,
    /// The link task, awaited on shutdown.
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl MqttHandle {
    /// Publishes `payload` on `topic` with QoS 1; the future resolves with the outcome:
    /// `Delivered` only on the broker's PUBACK for this very publish; `Unreachable` when the
    /// link is down or drops before that PUBACK (the publish may still have reached the
    /// broker: at least once); `Rejected` for a topic or size MQTT cannot carry.
    ///
    /// The publish is handed to the link now, not when the future is first polled: publishes
    /// go out in the order of these calls. (Handing them over from the futures instead let a
    /// full window reorder them: the waiting senders were woken in batches, last first, and a
    /// backlog reached the broker with runs of messages reversed.)
    pub fn publish(
        &self,
        topic: String,
        payload: Bytes,
    ) -> impl Future<Output = DeliveryStatus> + Send + 'static {
        let (reply, outcome) = oneshot::channel();
        let request = PublishRequest {
            topic,
            payload,
            reply,
        };
        let handed = self.publishes.send(request).is_ok();
        let name = self.name.clone();
        async move {
            if !handed {
                return stopped(&name);
            }
            outcome.await.unwrap_or_else(|_| stopped(&name))
        }
    }

    /// Acknowledges a received message (sends its PUBACK). Call it only once the message is
    /// safe (committed): an ack from a connection that has since dropped is discarded, and
    /// the broker redelivers that message instead.
    pub fn ack(&self, token: AckToken) {
        let _ = self.control.send(Control::Ack(token));
    }

    /// Where the link is now.
    pub fn lifecycle(&self) -> Lifecycle {
        *self.lifecycle.borrow()
    }

    /// A receiver that sees every change of [`lifecycle`](Self::lifecycle).
    pub fn watch(&self) -> watch::Receiver<Lifecycle> {
        self.lifecycle.clone()
    }

    /// Waits until the broker has accepted the link (at once if it has).
    pub async fn connected(&self) -> Result<(), LinkStopped> {
        let mut rx = self.lifecycle.clone();
        let state = rx
            .wait_for(|l| l.is_connected() || *l == Lifecycle::Stopped)
            .await
            .map_err(|_| LinkStopped(self.name.to_string()))?;
        match *state {
            Lifecycle::Stopped => Err(LinkStopped(self.name.to_string())),
            _ => Ok(()),
        }
    }

    /// What crossed the link so far.
    pub fn counters(&self) -> &MqttCounters {
        &self.counters
    }

    /// Stops the link: acks already given are sent, publishes in flight get up to 2 s for
    /// their PUBACK, then the link says DISCONNECT (the broker keeps the session) and ends.
    pub async fn shutdown(&self) {
        let _ = self.control.send(Control::Shutdown);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// The outcome of a publish to link `name` after it stopped.
fn stopped(name: &str) -> DeliveryStatus {
    DeliveryStatus::unreachable(LinkStopped(name.to_owned()).to_string())
}

/// Starts an MQTT link task after checking its settings. Events arrive on the returned
/// receiver; the link keeps reconnecting until [`MqttHandle::shutdown`] or until every handle
/// is dropped. A setting that can never work is an error here, naming the setting.
///
/// # Panics
/// Outside a Tokio runtime (the link is a task on it).
pub fn spawn(config: MqttConfig) -> Result<(MqttHandle, mpsc::Receiver<MqttEvent>), MqttError> {
    let options = config::options(&config)?;
    // Publishes are capped at max_inflight by the link; the rest is room for acks and the few
    // control requests (anything beyond waits in the link's own backlog).
    let (client, mut eventloop) = AsyncClient::new(options, usize::from(config.max_inflight) + 64);
    eventloop.set_network_options(config::network_options(&config));
    let (publishes, publish_rx) = mpsc::unbounded_channel();
    let (control, control_rx) = mpsc::unbounded_channel();
    let (events, event_rx) = mpsc::channel(config.event_capacity);
    let (lifecycle_tx, lifecycle) = watch::channel(Lifecycle::Connecting { attempt: 0 });
    let counters = Arc::new(MqttCounters::default());
    let span = info_span!("mqtt", name = %config.name, broker = %config.address());
    let link = Link::new(
        config.clone(),
        client,
        publish_rx,
        control_rx,
        events,
        lifecycle_tx,
        counters.clone(),
    );
    let task = tokio::spawn(link.run(eventloop).instrument(span));
    let handle = MqttHandle {
        name: config.name.into(),
        publishes,
        control,
        counters,
        lifecycle,
        task: Arc::new(tokio::sync::Mutex::new(Some(task))),
    };
    Ok((handle, event_rx))
}
