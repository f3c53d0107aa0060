//! The MQTT link task: the only owner of rumqttc's `EventLoop`, its timers and its requests.
//!
//! ```text
//!   Connecting{attempt} --CONNACK--> Connected{since,..} --(error)--> Backoff{until}
//!        ^     |                                                          |
//!        |     +------------------(refused | error)---------------------->+
//!        +----------------------------------------------------------------+
//! ```
//!
//! rumqttc's `poll` future is never dropped half-way while connected: its read path handles a
//! packet and then writes the answer, so cancelling it between the two would lose state. The
//! link therefore keeps one `poll` future alive and serves its own requests beside it; those
//! requests only queue work for rumqttc (a non-blocking send) and never touch the event loop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mesh_core::{Backoff, DeliveryStatus};
use rand::{Rng, SeedableRng};
use rumqttc::{
    AsyncClient, ClientError, Event, EventLoop, Outgoing, Packet, Publish, QoS, Request, SubAck,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::config::MqttConfig;
use super::handle::{AckToken, Control, Incoming, MqttCounters, MqttEvent, PublishRequest};
use super::state::{self, Lifecycle, Publishes, check_publish};

/// How long a shutdown waits for publishes in flight to be acknowledged before it leaves.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Work for rumqttc that did not fit its request channel yet, kept in order.
enum Queued {
    Publish { topic: String, payload: Bytes },
    Ack { pkid: u16, qos: QoS },
    Subscribe(Vec<String>),
    Disconnect,
}

/// How a connection attempt ended.
enum Attempt {
    Up { session_present: bool },
    Failed { reason: String, refused: bool },
    Stop,
}

/// How a connection ended.
enum Served {
    Lost(String),
    Stopped,
}

/// The task state of one MQTT link.
pub(super) struct Link {
    /// Name, broker, subscriptions and timings.
    config: MqttConfig,
    /// `host:port`, for messages.
    address: String,
    /// Queues requests into rumqttc's channel (non-blocking only: the loop must keep polling).
    client: AsyncClient,
    /// Publishes from handles; read only while the in-flight window has room.
    publish_rx: mpsc::UnboundedReceiver<PublishRequest>,
    /// Acks and shutdown from handles.
    control_rx: mpsc::UnboundedReceiver<Control>,
    /// Events to the owner; only ever `try_send`, so the owner never stalls the loop.
    events: mpsc::Sender<MqttEvent>,
    /// Events that found `events` full, in order, moved over as it frees (at most
    /// `event_capacity` of them).
    stash: VecDeque<MqttEvent>,
    /// Publishes where the link is.
    lifecycle: watch::Sender<Lifecycle>,
    /// Shared counters.
    counters: Arc<MqttCounters>,
    /// Who waits for which publish's PUBACK.
    waiting: Publishes<oneshot::Sender<DeliveryStatus>>,
    /// Requests that found rumqttc's channel full, in order, sent as it drains.
    backlog: VecDeque<Queued>,
    /// Counts accepted connections, so an ack is only sent on the connection that delivered.
    generation: u64,
    /// Packet id of our SUBSCRIBE, to recognise its SUBACK.
    subscribe_pkid: Option<u16>,
    /// Whether the broker acknowledged our subscriptions once in this process: a resumed
    /// session keeps them, but the first connection re-subscribes in case the config changed.
    subscribed_once: bool,
    /// Why the broker is not reachable, for publishes answered while offline.
    offline_reason: String,
    /// Reconnect delays that do not reset on a connection that dies at once.
    backoff: Backoff,
    /// Randomness for backoff jitter.
    rng: rand::rngs::SmallRng,
}

impl Link {
    /// The task state for a link whose channels `spawn` made.
    pub(super) fn new(
        config: MqttConfig,
        client: AsyncClient,
        publish_rx: mpsc::UnboundedReceiver<PublishRequest>,
        control_rx: mpsc::UnboundedReceiver<Control>,
        events: mpsc::Sender<MqttEvent>,
        lifecycle: watch::Sender<Lifecycle>,
        counters: Arc<MqttCounters>,
    ) -> Link {
        Link {
            backoff: Backoff::new(
                config.backoff_initial,
                config.backoff_max,
                config.stable_after,
            ),
            address: config.address(),
            config,
            client,
            publish_rx,
            control_rx,
            events,
            stash: VecDeque::new(),
            lifecycle,
            counters,
            waiting: Publishes::default(),
            backlog: VecDeque::new(),
            generation: 0,
            subscribe_pkid: None,
            subscribed_once: false,
            offline_reason: "not connected to the broker yet".into(),
            rng: rand::rngs::SmallRng::from_os_rng(),
        }
    }

    pub(super) async fn run(mut self, mut eventloop: EventLoop) {
        let mut state = Lifecycle::Connecting { attempt: 0 };
        loop {
            self.lifecycle.send_replace(state);
            state = match state {
                Lifecycle::Connecting { .. } => match self.connect(&mut eventloop).await {
                    Attempt::Up { session_present } => Lifecycle::Connected {
                        since: Instant::now().into_std(),
                        session_present,
                    },
                    Attempt::Failed { reason, refused } => {
                        MqttCounters::add(&self.counters.failed_attempts, 1);
                        if refused {
                            MqttCounters::add(&self.counters.refused, 1);
                        }
                        self.lost(&mut eventloop, reason, None)
                    }
                    Attempt::Stop => Lifecycle::Stopped,
                },
                Lifecycle::Connected {
                    since,
                    session_present,
                } => match self.serve(&mut eventloop, session_present).await {
                    Served::Lost(reason) => {
                        MqttCounters::add(&self.counters.connection_losses, 1);
                        self.lost(&mut eventloop, reason, Some(since.elapsed()))
                    }
                    Served::Stopped => Lifecycle::Stopped,
                },
                Lifecycle::Backoff { until } => {
                    if self.wait_offline(Instant::from_std(until)).await {
                        Lifecycle::Connecting {
                            attempt: self.backoff.attempt(),
                        }
                    } else {
                        Lifecycle::Stopped
                    }
                }
                Lifecycle::Stopped => break,
            };
        }
        self.finish();
    }

    /// One connection attempt. Publishes meanwhile are answered at once: the broker is not
    /// there yet, and the owner's outbox keeps them.
    async fn connect(&mut self, eventloop: &mut EventLoop) -> Attempt {
        debug!(attempt = self.backoff.attempt(), "connecting");
        let poll = eventloop.poll();
        tokio::pin!(poll);
        loop {
            tokio::select! {
                polled = &mut poll => return match polled {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => Attempt::Up {
                        session_present: ack.session_present,
                    },
                    Ok(other) => Attempt::Failed {
                        reason: format!("expected the broker's CONNACK, got {other:?}"),
                        refused: false,
                    },
                    Err(e) => Attempt::Failed {
                        reason: state::describe(&e, &self.address),
                        refused: state::is_refusal(&e),
                    },
                },
                request = self.publish_rx.recv() => match request {
                    Some(r) => self.refuse_offline(r),
                    None => return Attempt::Stop,
                },
                control = self.control_rx.recv() => match control {
                    Some(Control::Ack(token)) => self.stale_ack(token),
                    Some(Control::Shutdown) | None => return Attempt::Stop,
                },
                permit = self.events.clone().reserve_owned(), if !self.stash.is_empty() => self.unstash(permit),
            }
        }
    }

    /// One accepted connection, until it ends.
    async fn serve(&mut self, eventloop: &mut EventLoop, session_present: bool) -> Served {
        self.generation += 1;
        MqttCounters::add(&self.counters.connects, 1);
        info!(session_present, "connected to the broker");
        let _ = self.emit(MqttEvent::Connected { session_present });
        let subscriptions = self.config.subscriptions.clone();
        if !subscriptions.is_empty() && (!session_present || !self.subscribed_once) {
            self.queue(Queued::Subscribe(subscriptions));
        }
        let max_inflight = usize::from(self.config.max_inflight);
        // Set once shutdown is asked for: no new publishes, DISCONNECT once the window is empty.
        let mut stopping: Option<Instant> = None;
        let mut disconnect_sent = false;
        loop {
            if let Some(deadline) = stopping
                && !disconnect_sent
                && (self.waiting.outstanding() == 0 || Instant::now() >= deadline)
            {
                self.queue(Queued::Disconnect);
                disconnect_sent = true;
            }
            let far = Instant::now() + Duration::from_secs(3600);
            // Behind the owner: read nothing more from the broker until it caught up, so TCP
            // pushes back. (A broker may overshoot its in-flight limit towards a client that
            // acknowledges, and resends everything after a reconnect, so reconnecting to shed
            // the load would only bring it back at once.) A poll is never cancelled, so this
            // waits before starting the next one.
            let high = (self.config.event_capacity / 2).max(1);
            while self.stash.len() >= high && stopping.is_none() {
                tokio::select! {
                    permit = self.events.clone().reserve_owned() => self.unstash(permit),
                    control = self.control_rx.recv() => match control {
                        Some(Control::Ack(token)) => self.ack(token),
                        Some(Control::Shutdown) | None => {
                            stopping = Some(Instant::now() + SHUTDOWN_GRACE);
                            disconnect_sent = self.disconnect_when_idle();
                        }
                    },
                }
            }
            let polled = {
                let poll = eventloop.poll();
                tokio::pin!(poll);
                loop {
                    let room = stopping.is_none() && self.waiting.outstanding() < max_inflight;
                    tokio::select! {
                        polled = &mut poll => break polled,
                        control = self.control_rx.recv(), if stopping.is_none() => match control {
                            Some(Control::Ack(token)) => self.ack(token),
                            Some(Control::Shutdown) | None => {
                                stopping = Some(Instant::now() + SHUTDOWN_GRACE);
                                disconnect_sent = self.disconnect_when_idle();
                            }
                        },
                        request = self.publish_rx.recv(), if room => match request {
                            Some(r) => self.submit(r),
                            None => {
                                stopping = Some(Instant::now() + SHUTDOWN_GRACE);
                                disconnect_sent = self.disconnect_when_idle();
                            }
                        },
                        permit = self.events.clone().reserve_owned(), if !self.stash.is_empty() => {
                            self.unstash(permit);
                        }
                        _ = tokio::time::sleep_until(stopping.map_or(far, |d| d + SHUTDOWN_GRACE)),
                            if stopping.is_some() => return Served::Stopped,
                    }
                }
            };
            match polled {
                Ok(event) => {
                    if let Some(ended) = self.on_event(event, disconnect_sent) {
                        return ended;
                    }
                    self.flush_backlog();
                }
                Err(_) if stopping.is_some() => return Served::Stopped,
                Err(e) => return Served::Lost(state::describe(&e, &self.address)),
            }
        }
    }

    /// Queues DISCONNECT if no publish awaits its PUBACK; says whether it did.
    fn disconnect_when_idle(&mut self) -> bool {
        let idle = self.waiting.outstanding() == 0;
        if idle {
            self.queue(Queued::Disconnect);
        }
        idle
    }

    /// One rumqttc event while connected; `Some` ends the connection.
    fn on_event(&mut self, event: Event, disconnecting: bool) -> Option<Served> {
        match event {
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(reply) = self.waiting.acked(ack.pkid) {
                    MqttCounters::add(&self.counters.acked, 1);
                    let _ = reply.send(DeliveryStatus::Delivered);
                }
            }
            Event::Incoming(Packet::Publish(publish)) => return self.deliver(publish),
            Event::Incoming(Packet::SubAck(ack)) => self.subscribed(ack),
            Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => {
                MqttCounters::add(&self.counters.published, 1);
                if let Some(reply) = self.waiting.written(pkid) {
                    self.unreachable(reply, "its packet id was reused before it was confirmed");
                }
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                if let Some(reply) = self.waiting.held(pkid) {
                    self.unreachable(reply, "its packet id was reused before it was confirmed");
                }
            }
            Event::Outgoing(Outgoing::PubAck(_) | Outgoing::PubRec(_)) => {
                MqttCounters::add(&self.counters.acked_in, 1);
            }
            Event::Outgoing(Outgoing::Subscribe(pkid)) => self.subscribe_pkid = Some(pkid),
            Event::Outgoing(Outgoing::Disconnect) if disconnecting => return Some(Served::Stopped),
            _ => {}
        }
        None
    }

    /// Hands a received message to the owner without ever waiting for it.
    fn deliver(&mut self, publish: Publish) -> Option<Served> {
        MqttCounters::add(&self.counters.received, 1);
        let qos = publish.qos;
        let message = MqttEvent::Message(Incoming {
            topic: publish.topic,
            payload: publish.payload,
            duplicate: publish.dup,
            retained: publish.retain,
            ack: AckToken {
                generation: self.generation,
                pkid: publish.pkid,
                qos,
            },
        });
        match self.emit(message) {
            Ok(()) => None,
            Err(_) if qos == QoS::AtMostOnce => {
                MqttCounters::add(&self.counters.dropped_qos0, 1);
                debug!("dropped a QoS 0 message: the owner's event queue is full");
                None
            }
            Err(_) => {
                MqttCounters::add(&self.counters.overflows, 1);
                Some(Served::Lost(format!(
                    "the owner left {} events waiting; reconnecting so the broker keeps and \
                     redelivers the unacknowledged messages (is the broker's max_inflight_messages \
                     above event_capacity?)",
                    2 * self.config.event_capacity
                )))
            }
        }
    }

    /// Hands an event to the owner, or keeps it while the channel is full; gives it back when
    /// there is no room left at all. Never waits.
    fn emit(&mut self, event: MqttEvent) -> Result<(), MqttEvent> {
        let event = if self.stash.is_empty() {
            match self.events.try_send(event) {
                // Nobody listens any more: unacked messages stay with the broker.
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(event)) => event,
            }
        } else {
            event
        };
        if self.stash.len() < self.config.event_capacity {
            self.stash.push_back(event);
            Ok(())
        } else {
            Err(event)
        }
    }

    /// The owner's channel has room again: moves the oldest kept event over.
    fn unstash(
        &mut self,
        permit: Result<mpsc::OwnedPermit<MqttEvent>, mpsc::error::SendError<()>>,
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

    fn subscribed(&mut self, ack: SubAck) {
        if self.subscribe_pkid != Some(ack.pkid) {
            return;
        }
        self.subscribe_pkid = None;
        self.subscribed_once = true;
        let mut refused = Vec::new();
        for (filter, code) in self.config.subscriptions.iter().zip(&ack.return_codes) {
            match code {
                SubscribeReasonCode::Failure => {
                    warn!(%filter, "the broker refused the subscription");
                    refused.push(filter.clone());
                }
                SubscribeReasonCode::Success(QoS::AtMostOnce) => warn!(
                    %filter,
                    "the broker granted QoS 0 only: messages will not be redelivered after a loss"
                ),
                SubscribeReasonCode::Success(_) => {}
            }
        }
        MqttCounters::add(&self.counters.subscribe_refused, refused.len() as u64);
        debug!(refused = refused.len(), "subscriptions acknowledged");
        let _ = self.emit(MqttEvent::Subscribed { refused });
    }

    fn submit(&mut self, request: PublishRequest) {
        if let Err(why) = check_publish(&request.topic, request.payload.len(), &self.config) {
            MqttCounters::add(&self.counters.rejected, 1);
            let _ = request.reply.send(DeliveryStatus::rejected(why));
            return;
        }
        self.waiting.submitted(request.reply);
        self.queue(Queued::Publish {
            topic: request.topic,
            payload: request.payload,
        });
    }

    fn ack(&mut self, token: AckToken) {
        if token.qos == QoS::AtMostOnce {
            return;
        }
        if token.generation != self.generation {
            return self.stale_ack(token);
        }
        self.queue(Queued::Ack {
            pkid: token.pkid,
            qos: token.qos,
        });
    }

    fn stale_ack(&mut self, token: AckToken) {
        if token.qos != QoS::AtMostOnce {
            MqttCounters::add(&self.counters.stale_acks, 1);
            debug!(
                pkid = token.pkid,
                "ack for a message of a dropped connection: the broker redelivers it"
            );
        }
    }

    /// Queues work for rumqttc behind anything already waiting, so order is kept.
    fn queue(&mut self, work: Queued) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(work);
        } else if let Err(back) = self.send_now(work) {
            self.backlog.push_back(back);
        }
    }

    fn flush_backlog(&mut self) {
        while let Some(work) = self.backlog.pop_front() {
            if let Err(back) = self.send_now(work) {
                self.backlog.push_front(back);
                break;
            }
        }
    }

    /// Tries to hand `work` to rumqttc; gives it back when its channel is full.
    fn send_now(&self, work: Queued) -> Result<(), Queued> {
        let sent = match work {
            Queued::Publish { topic, payload } => {
                self.client
                    .try_publish(topic, QoS::AtLeastOnce, false, payload)
            }
            Queued::Ack { pkid, qos } => {
                let mut publish = Publish::new("", qos, Vec::new());
                publish.pkid = pkid;
                self.client.try_ack(&publish)
            }
            Queued::Subscribe(filters) => self.client.try_subscribe_many(
                filters
                    .into_iter()
                    .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce)),
            ),
            Queued::Disconnect => self.client.try_disconnect(),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(ClientError::TryRequest(request) | ClientError::Request(request)) => {
                Err(match request {
                    Request::Publish(p) => Queued::Publish {
                        topic: p.topic,
                        payload: p.payload,
                    },
                    Request::PubAck(a) => Queued::Ack {
                        pkid: a.pkid,
                        qos: QoS::AtLeastOnce,
                    },
                    Request::PubRec(r) => Queued::Ack {
                        pkid: r.pkid,
                        qos: QoS::ExactlyOnce,
                    },
                    Request::Subscribe(s) => {
                        Queued::Subscribe(s.filters.into_iter().map(|f| f.path).collect())
                    }
                    _ => Queued::Disconnect,
                })
            }
        }
    }

    /// The connection is gone (or never came): settle what rumqttc had already seen, answer
    /// every waiting publish as unreachable, and back off.
    fn lost(
        &mut self,
        eventloop: &mut EventLoop,
        reason: String,
        lasted: Option<Duration>,
    ) -> Lifecycle {
        // Events rumqttc queued before the error are still true: PUBACKs among them confirm.
        for event in std::mem::take(&mut eventloop.state.events) {
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => {
                    if let Some(reply) = self.waiting.written(pkid) {
                        self.unreachable(reply, &reason);
                    }
                }
                Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                    if let Some(reply) = self.waiting.held(pkid) {
                        self.unreachable(reply, &reason);
                    }
                }
                Event::Incoming(Packet::PubAck(ack)) => {
                    if let Some(reply) = self.waiting.acked(ack.pkid) {
                        MqttCounters::add(&self.counters.acked, 1);
                        let _ = reply.send(DeliveryStatus::Delivered);
                    }
                }
                _ => {}
            }
        }
        // A connection the link gave up on itself is still open: close it, so the next poll
        // connects afresh. rumqttc would then retransmit its unacknowledged publishes on a
        // resumed session; the owner's outbox retries them instead, so nothing is sent twice
        // behind its back and nothing is held in memory here.
        eventloop.clean();
        eventloop.pending.clear();
        // rumqttc's clean() keeps a publish held for a busy packet id; its caller has been
        // answered, and a stale hold would stop every later request on the next connection.
        eventloop.state.collision = None;
        self.backlog.clear();
        // Kept QoS 1 messages come again on the next session (their acks would be stale);
        // QoS 0 ones never would, so they stay.
        self.stash
            .retain(|e| !matches!(e, MqttEvent::Message(m) if m.ack.qos != QoS::AtMostOnce));
        self.subscribe_pkid = None;
        for reply in self.waiting.drain() {
            self.unreachable(reply, &reason);
        }
        let delay = self.backoff.next_delay(lasted, self.rng.random::<f64>());
        warn!(
            %reason,
            attempt = self.backoff.attempt(),
            retry_in_ms = delay.as_millis() as u64,
            "MQTT link down"
        );
        self.offline_reason = format!("MQTT broker {} unreachable: {reason}", self.address);
        let _ = self.emit(MqttEvent::Disconnected {
            reason,
            retry_in: delay,
        });
        Lifecycle::Backoff {
            until: (Instant::now() + delay).into_std(),
        }
    }

    /// Waits out a backoff; `false` means stop.
    async fn wait_offline(&mut self, until: Instant) -> bool {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                request = self.publish_rx.recv() => match request {
                    Some(r) => self.refuse_offline(r),
                    None => return false,
                },
                control = self.control_rx.recv() => match control {
                    Some(Control::Ack(token)) => self.stale_ack(token),
                    Some(Control::Shutdown) | None => return false,
                },
                permit = self.events.clone().reserve_owned(), if !self.stash.is_empty() => self.unstash(permit),
            }
        }
    }

    fn refuse_offline(&mut self, request: PublishRequest) {
        if let Err(why) = check_publish(&request.topic, request.payload.len(), &self.config) {
            MqttCounters::add(&self.counters.rejected, 1);
            let _ = request.reply.send(DeliveryStatus::rejected(why));
            return;
        }
        let reason = self.offline_reason.clone();
        self.unreachable(request.reply, &reason);
    }

    fn unreachable(&self, reply: oneshot::Sender<DeliveryStatus>, reason: &str) {
        MqttCounters::add(&self.counters.unreachable, 1);
        let _ = reply.send(DeliveryStatus::unreachable(reason));
    }

    /// Stopped: whoever still waits learns it, and later publishes find the channel closed.
    fn finish(&mut self) {
        let reason = format!("MQTT link `{}` has stopped", self.config.name);
        for reply in self.waiting.drain() {
            self.unreachable(reply, &reason);
        }
        self.publish_rx.close();
        while let Ok(request) = self.publish_rx.try_recv() {
            self.unreachable(request.reply, &reason);
        }
        self.lifecycle.send_replace(Lifecycle::Stopped);
        info!("MQTT link stopped");
    }
}
