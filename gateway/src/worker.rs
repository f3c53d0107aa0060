//! The drain worker: one per destination, the same for every kind. It reads the destination's
//! queue from the store, renders each row (the [`Router`]), hands it to the [`Sink`] (which may
//! pace it), keeps up to the sink's window in flight, and carries out the pure [`Drain`]'s
//! decisions: batched confirms, counted failures, rows set aside. A row leaves the store only
//! when the far side confirmed it.
//!
//! ```text
//!  Notify (ingest committed rows) ─┐
//!  sink ready ─────────────────────┼─> fill: store.next → router.render → sink.prepare → send
//!  outcome of a send ──────────────┤       (up to the window, skipping rows in flight
//!  pause / linger timer ───────────┤        and rows parked for their node)
//!  a parked row's node heard ──────┘   outcome → Drain → confirm batch | fail | set aside
//! ```
//!
//! A row the sink parks (for one node not heard for a while) stays queued and is remembered
//! by node ([`Parked`]): reads move past it, a later row for the same node parks with it so it
//! never overtakes, and when the [`NodeDirectory`] hears the node, the worker reads its rows
//! again from the front, in their original order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use mesh_core::{Class, DeliveryStatus, NodeId, PacketId};
use tokio::sync::{Notify, broadcast, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::activity::{Activity, Shown};
use crate::app::now_ms;
use crate::drain::{Drain, DrainPolicy, Parked, Parking, Pause, Step};
use crate::failpoint::{self, CrashPoint};
use crate::nodes::{NodeDirectory, NodeWatch};
use crate::router::Router;
use crate::sink::{Prepared, Sink};
use crate::stats::Stats;
use crate::store::{Delivery, DeliveryKey, Millis, Sent, Store, StoreError};

/// How long an idle worker waits before looking at its queue again on its own (new rows ring
/// the bell; this only covers a missed ring).
const IDLE_RECHECK: Duration = Duration::from_secs(60);

/// Rows one worker remembers as parked for their node. Each is a key in every read from the
/// front (SQLite leaves them out), so the bound keeps that list short; 256 direct messages
/// waiting for absent nodes on one radio is far beyond a hub's day. Past it, see [`Parked`].
pub const MAX_PARKED: usize = 256;

/// What the worker remembers of a row between handing it over and confirming it.
#[derive(Debug, Clone)]
struct RowMeta {
    /// Airtime it costs (radios), recorded with the confirm.
    airtime: Option<Duration>,
    /// For the activity line.
    from: NodeId,
    /// For the activity line.
    id: PacketId,
    /// For the activity line.
    class: Class,
    /// Destination channel, for the activity line.
    channel: String,
    /// When it was accepted, for "waited".
    enqueued_at: Millis,
    /// What is shown of its text, read only when someone follows the activity.
    text: Option<Shown>,
}

/// The answer of one send, with what is needed to act on it: the row, its counted attempts
/// so far, and the airtime it cost.
type Outcome = (DeliveryKey, u32, Option<Duration>, DeliveryStatus);

/// What every drain worker of a gateway shares.
#[derive(Clone)]
pub struct Shared {
    /// The durable queues.
    pub store: Store,
    /// Renders rows for their destination (re-encryption with the channel table).
    pub router: Arc<Router>,
    /// Where relays and problems are announced.
    pub activity: broadcast::Sender<Activity>,
    /// Shared counters.
    pub stats: Arc<Stats>,
    /// Counted failures before a row is set aside.
    pub max_attempts: u32,
    /// Who was heard when: wakes rows parked for their node, words what they wait for.
    pub nodes: Arc<NodeDirectory>,
    /// Whether the activity shows what direct messages say (`[log] show_direct_messages`).
    pub show_direct: bool,
}

/// One destination's drain loop.
pub struct DrainWorker<S: Sink> {
    /// The destination's name: its queue in the store, its log span.
    name: String,
    /// How it is sent to.
    sink: S,
    /// The durable queues.
    store: Store,
    /// Renders rows for the destination (re-encryption with the channel table).
    router: Arc<Router>,
    /// What is in flight, paused, or waiting for its confirm.
    drain: Drain<DeliveryKey, RowMeta>,
    /// Rung by ingest when it committed rows for this destination.
    wake: Arc<Notify>,
    /// Where relays and problems are announced.
    activity: broadcast::Sender<Activity>,
    /// Shared counters.
    stats: Arc<Stats>,
    /// Whether the destination was unreachable at the last outcome, so "waiting" is said once.
    waiting: bool,
    /// The last row handed to the sink, while every queued row before it is in flight or
    /// done: the next read resumes after it instead of reading the rows in flight again (a
    /// fast sink would otherwise reread its whole window for every outcome). Forgotten when
    /// something may have landed before it: new rows (a more urgent class), a row to resend,
    /// parked rows whose node was heard.
    cursor: Option<DeliveryKey>,
    /// Rows parked until their node is heard, by node.
    parked: Parked<DeliveryKey>,
    /// Who was heard when (words what parked rows wait for; takes the watches).
    nodes: Arc<NodeDirectory>,
    /// Rung by the directory when a node with parked rows is heard.
    watch: Arc<NodeWatch>,
    /// Set by a fill that moved past rows without sending them (parked, or set aside for
    /// good): the next read may follow at once.
    read_on: bool,
    /// Whether the activity shows what direct messages say.
    show_direct: bool,
}

impl<S: Sink> DrainWorker<S> {
    /// A worker draining `name`'s queue into `sink`, rung by `wake`.
    pub fn new(name: String, sink: S, shared: &Shared, wake: Arc<Notify>) -> DrainWorker<S> {
        let policy = DrainPolicy::new(sink.window(), shared.max_attempts);
        DrainWorker {
            name,
            sink,
            store: shared.store.clone(),
            router: shared.router.clone(),
            drain: Drain::new(policy),
            wake,
            activity: shared.activity.clone(),
            stats: shared.stats.clone(),
            waiting: false,
            cursor: None,
            parked: Parked::new(MAX_PARKED),
            nodes: shared.nodes.clone(),
            watch: Arc::new(NodeWatch::default()),
            read_on: false,
            show_direct: shared.show_direct,
        }
    }

    /// Drains until `stop` turns true, then waits for what is in flight and confirms it.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let span = info_span!("drain", destination = %self.name);
        self.drive(stop).instrument(span).await;
    }

    async fn drive(mut self, mut stop: watch::Receiver<bool>) {
        let mut in_flight: FuturesUnordered<BoxFuture<'static, Outcome>> = FuturesUnordered::new();
        // Whether the last look at the queue found nothing to send: then only the bell (or
        // the idle recheck) brings the worker back to it.
        let mut idle = false;
        loop {
            let stopping = *stop.borrow();
            let finished = stopping && in_flight.is_empty();
            self.confirm(Instant::now(), finished).await;
            if finished {
                return;
            }
            let ready = self.sink.ready();
            let mut ready = ready.fuse();
            let reachable = match (&mut ready).now_or_never() {
                Some(Ok(())) => true,
                Some(Err(_)) => {
                    // The adapter is gone: nothing more will be sent; what is in flight ends.
                    if in_flight.is_empty() {
                        self.confirm(Instant::now(), true).await;
                        return;
                    }
                    false
                }
                None => false,
            };
            // Refill a wide window a quarter at a time, not after every single outcome: each
            // read is a round trip to the store's connection thread.
            let refill_at = if in_flight.is_empty() {
                1
            } else {
                (self.drain.policy().window / 4).max(1)
            };
            if reachable && !stopping && !idle && self.drain.room(Instant::now()) >= refill_at {
                self.read_on = false;
                idle = !self.fill(&mut in_flight).await;
                if self.read_on && in_flight.is_empty() && self.drain.room(Instant::now()) > 0 {
                    // Rows were parked or set aside and none sent: read on at once rather
                    // than wait for an event (the idle recheck is a minute away). Each such
                    // pass moved the cursor or removed a row, so this ends.
                    continue;
                }
            }
            let now = Instant::now();
            let timeout = self
                .drain
                .poll_timeout()
                .filter(|t| *t > now)
                .unwrap_or(now + IDLE_RECHECK);
            tokio::select! {
                Some((key, attempts, airtime, status)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.outcome(key, attempts, airtime, status).await;
                    idle = false;
                }
                _ = self.wake.notified(), if !stopping => {
                    self.drain.lift_hold();
                    self.cursor = None;
                    idle = false;
                }
                _ = self.watch.heard(), if !stopping && !self.parked.is_empty() => {
                    if self.unpark() {
                        idle = false;
                    }
                }
                r = &mut ready, if !reachable && !stopping => {
                    if r.is_ok() {
                        idle = false;
                    }
                }
                _ = tokio::time::sleep_until(timeout.into()) => idle = false,
                _ = stop.changed(), if !stopping => {}
            }
        }
    }

    /// Sends what the window and the sink allow. Returns false when the queue had nothing to
    /// send or set aside (idle until rung).
    async fn fill(
        &mut self,
        in_flight: &mut FuturesUnordered<BoxFuture<'static, Outcome>>,
    ) -> bool {
        // Rows in flight or awaiting their confirm are still listed: read on after the last
        // one sent, or from the front past them for `room` rows that are not.
        let room = self.drain.room(Instant::now());
        let busy = self.drain.in_flight() + self.drain.unconfirmed();
        let forgotten = self.parked.expire(now_ms());
        if !forgotten.is_empty() {
            for node in forgotten {
                self.nodes.unwatch(node, &self.watch);
            }
            self.report_parked();
        }
        let read = match self.cursor {
            Some(after) => {
                self.store
                    .next_after(&self.name, now_ms(), after, room)
                    .await
            }
            None if self.parked.is_empty() => {
                self.store.next(&self.name, now_ms(), 0, room + busy).await
            }
            None => {
                self.store
                    .next_except(&self.name, now_ms(), self.parked.keys(), room + busy)
                    .await
            }
        };
        let rows = match read {
            Ok(rows) => rows,
            Err(StoreError::Corrupt {
                key: Some(key),
                what,
                ..
            }) => {
                // One damaged row must not block the queue behind it.
                warn!(%what, "damaged row in the outbox; setting it aside");
                self.set_aside_key(key, &format!("damaged row: {what}"))
                    .await;
                return true;
            }
            Err(e) => {
                warn!(error = %e, "cannot read the outbox; trying again shortly");
                self.drain
                    .hold_until(Instant::now() + Duration::from_secs(1));
                return true;
            }
        };
        // Sent or set aside: either way the queue moved, and more may be behind these rows.
        let mut progressed = false;
        for row in rows {
            if self.drain.room(Instant::now()) == 0 {
                break;
            }
            if self.drain.is_busy(&row.key) {
                continue;
            }
            if self.parked.contains(&row.key) {
                // Waiting for its node: read on past it.
                self.cursor = Some(row.key);
                self.read_on = true;
                progressed = true;
                continue;
            }
            let rendered = match self.router.render(&row) {
                Ok(r) => r,
                Err(e) => {
                    self.read_on |= self.set_aside(&row, &e.to_string()).await;
                    progressed = true;
                    continue;
                }
            };
            let to = rendered.packet.to();
            if self.parked.waits_for(to) {
                // Earlier rows for the same node wait: this one must not overtake them.
                let reason = self.nodes.waiting_line(to, Instant::now());
                self.park(&row, to, &reason, None);
                progressed = true;
                continue;
            }
            let direct = row.class == Class::Direct || !to.is_broadcast();
            let text = (self.activity.receiver_count() > 0)
                .then(|| rendered.decoded().and_then(|p| p.text()))
                .and_then(|text| Shown::of(text, direct, self.show_direct));
            let channel = rendered.channel.clone();
            match self.sink.prepare(&row, rendered, Instant::now()) {
                Prepared::Send { send, airtime } => {
                    failpoint::hit(CrashPoint::DrainBeforeSend);
                    let (key, attempts) = (row.key, row.attempts);
                    self.drain.sent(
                        key,
                        RowMeta {
                            airtime,
                            from: row.from,
                            id: row.id,
                            class: row.class,
                            channel,
                            enqueued_at: row.enqueued_at,
                            text,
                        },
                    );
                    in_flight.push(
                        send.map(move |status| (key, attempts, airtime, status))
                            .boxed(),
                    );
                    self.cursor = Some(key);
                    progressed = true;
                }
                Prepared::Hold(until) => {
                    self.drain.hold_until(until);
                    return true;
                }
                Prepared::Refuse(reason) => {
                    self.read_on |= self.set_aside(&row, &reason).await;
                    progressed = true;
                }
                Prepared::Park {
                    node,
                    reason,
                    heard,
                } => {
                    self.park(&row, node, &reason, Some(heard));
                    progressed = true;
                }
            }
        }
        progressed || self.drain.in_flight() > 0
    }

    async fn outcome(
        &mut self,
        key: DeliveryKey,
        attempts: u32,
        airtime: Option<Duration>,
        status: DeliveryStatus,
    ) {
        let now = Instant::now();
        let stats = self.stats.endpoint(&self.name);
        match &status {
            DeliveryStatus::Delivered => {
                if std::mem::take(&mut self.waiting) {
                    info!("destination reachable again; draining");
                }
            }
            DeliveryStatus::Unreachable { reason } => {
                if let Some(s) = stats {
                    Stats::add(&s.unreachable, 1);
                }
                if !std::mem::replace(&mut self.waiting, true) {
                    warn!(%reason, "destination unreachable; its queue waits");
                    let _ = self.activity.send(Activity::Waiting {
                        destination: self.name.clone(),
                        reason: reason.clone(),
                    });
                }
            }
            DeliveryStatus::Failed { reason } => {
                if let Some(s) = stats {
                    Stats::add(&s.failed, 1);
                }
                info!(%reason, "delivery not confirmed; will retry");
            }
            DeliveryStatus::Rejected { .. } => {}
        }
        let delivered = status.is_delivered();
        if !delivered {
            // The row may be sent again: the next read starts from the front.
            self.cursor = None;
        }
        let step = self.drain.outcome(key, attempts, status, now);
        if delivered {
            // The governor counts it at once; the store records it with the confirm.
            self.sink.delivered(airtime, now);
        }
        match step {
            None => {}
            Some(Step::Fail { key, reason }) => {
                if let Err(e) = self.store.fail(key, &reason).await {
                    warn!(error = %e, "cannot record a failed attempt");
                }
            }
            Some(Step::SetAside { key, reason, meta }) => {
                warn!(from = %meta.from, id = %meta.id, %reason, "delivery set aside as undeliverable");
                let _ = self.activity.send(Activity::Undeliverable {
                    from: meta.from,
                    id: meta.id,
                    destination: self.name.clone(),
                    reason: reason.clone(),
                });
                self.reject(key, &reason).await;
            }
        }
        if let Some((until, Pause::Retry)) = self.drain.paused_at(now) {
            debug!(
                retry_in_ms = (until - now).as_millis() as u64,
                "queue paused after a failure"
            );
        }
    }

    /// Commits the confirms that are due (all of them when `flush`).
    async fn confirm(&mut self, now: Instant, flush: bool) {
        let due = self.drain.confirms_due(now, flush);
        if due.is_empty() {
            return;
        }
        failpoint::hit(CrashPoint::DrainBeforeConfirm);
        let sent: Vec<Sent> = due
            .iter()
            .map(|(key, meta)| Sent {
                key: *key,
                airtime: meta.airtime,
            })
            .collect();
        if let Err(e) = self.store.confirm(&sent, now_ms()).await {
            // The far side has them; a re-send after a restart is dropped by its dedup.
            warn!(error = %e, rows = sent.len(), "cannot remove delivered rows");
        }
        let wall = now_ms();
        for (_, meta) in due {
            self.stats.relayed(&self.name, meta.airtime);
            let _ = self.activity.send(Activity::Relayed {
                from: meta.from,
                id: meta.id,
                destination: self.name.clone(),
                channel: meta.channel,
                class: meta.class,
                text: meta.text,
                waited: Duration::from_millis(
                    u64::try_from(wall.saturating_sub(meta.enqueued_at)).unwrap_or(0),
                ),
                airtime: meta.airtime,
            });
        }
    }

    /// Parks `row` until `node` is heard, moving the cursor past it. `heard` is when the sink
    /// saw the node last heard: given for a row that may start a node's wait, so the watch
    /// cannot miss a packet that arrived since.
    fn park(&mut self, row: &Delivery, node: NodeId, reason: &str, heard: Option<Option<Instant>>) {
        let (parking, forgotten) = self.parked.park(row.key, node, row.expires_at);
        for gone in forgotten {
            self.nodes.unwatch(gone, &self.watch);
        }
        match parking {
            Parking::New => {
                if let Some(heard) = heard {
                    self.nodes.watch(node, heard, &self.watch);
                }
                info!(%node, %reason, "direct messages wait until their node is heard");
            }
            Parking::Joined | Parking::Already => {}
            Parking::Full => {
                debug!(%node, "too many rows parked; reading past this one without remembering it");
            }
        }
        if parking != Parking::Already {
            let _ = self.activity.send(Activity::Parked {
                from: row.from,
                id: row.id,
                destination: self.name.clone(),
                node,
                reason: reason.to_owned(),
            });
        }
        self.cursor = Some(row.key);
        self.read_on = true;
        self.report_parked();
    }

    /// Watched nodes were heard: their parked rows are read again, from the front, in their
    /// original order. Returns whether any row was released.
    fn unpark(&mut self) -> bool {
        let mut released = false;
        for node in self.watch.take() {
            let rows = self.parked.wake(node);
            if !rows.is_empty() {
                info!(%node, name = %self.nodes.display_name(node), rows = rows.len(),
                      "node heard again; what waited for it goes");
                released = true;
            }
        }
        if released {
            self.cursor = None;
            self.report_parked();
        }
        released
    }

    /// Publishes what is parked in the destination's counters.
    fn report_parked(&self) {
        if let Some(s) = self.stats.endpoint(&self.name) {
            s.set_parked(
                self.parked
                    .nodes()
                    .into_iter()
                    .map(|(n, c)| (n, c as u64))
                    .collect(),
            );
        }
    }

    /// Returns whether the row left the queue (the reject committed).
    async fn set_aside(&self, row: &Delivery, reason: &str) -> bool {
        warn!(from = %row.from, id = %row.id, %reason, "delivery set aside as undeliverable");
        let _ = self.activity.send(Activity::Undeliverable {
            from: row.from,
            id: row.id,
            destination: self.name.clone(),
            reason: reason.to_owned(),
        });
        self.reject(row.key, reason).await
    }

    async fn set_aside_key(&self, key: DeliveryKey, reason: &str) {
        warn!(%reason, "delivery set aside as undeliverable");
        self.reject(key, reason).await;
    }

    async fn reject(&self, key: DeliveryKey, reason: &str) -> bool {
        Stats::add(&self.stats.undeliverable, 1);
        match self.store.reject(key, reason, now_ms()).await {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "cannot set a delivery aside");
                false
            }
        }
    }
}
