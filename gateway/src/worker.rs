//! A destination worker: drains one radio's queue from the store into the radio, paced by the
//! radio's airtime governor, and deletes a row only when the radio confirmed it has the packet.
//!
//! Order: the store hands rows most urgent class first, oldest first within a class. After a
//! failed attempt the whole queue waits for that row's retry time, so what one sender said
//! never overtakes what they said before on the same class.

use std::sync::Arc;
use std::time::Duration;

use archipel_adapters::radio::RadioHandle;
use mesh_core::{DeliveryStatus, Governor, ModemPreset, NodeId, Packet, Verdict};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::app::{Activity, Stats, now_ms};
use crate::router::Router;
use crate::store::{Delivery, Sent, Store, StoreError};

/// How many rows to fetch at once.
const BATCH: usize = 16;
/// Longest wait between retries of a delivery the radio did not take.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// What to do after one row.
enum Flow {
    /// Go on with the next row of the batch.
    Next,
    /// The governor holds traffic back until then; a new, more urgent row may go earlier.
    Hold(Instant),
    /// The radio failed a delivery: the queue waits until then, whatever arrives.
    Backoff(Instant),
}

/// One radio's drain loop.
pub struct RadioWorker {
    /// The radio's configured name, which is also its queue's name in the store.
    pub name: String,
    /// The radio link.
    pub radio: RadioHandle,
    /// The durable queues.
    pub store: Store,
    /// Airtime accounting for this radio.
    pub governor: Governor,
    /// The radio's modem preset, for airtime per packet.
    pub preset: ModemPreset,
    /// Our gateway id, for the envelopes.
    pub gateway: NodeId,
    /// The routing table, whose channel keys read a relayed text for the activity feed.
    pub router: Arc<Router>,
    /// Attempts before a delivery is set aside as undeliverable.
    pub max_attempts: u32,
    /// Rung by the router when it queued something for this radio.
    pub wake: Arc<Notify>,
    /// The radio's latest channel utilisation report (percent, when it came).
    pub utilization: watch::Receiver<Option<(f32, std::time::Instant)>>,
    /// Where relays are announced.
    pub activity: broadcast::Sender<Activity>,
    /// Shared counters.
    pub stats: Arc<Stats>,
}

impl RadioWorker {
    /// Drains until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        self.restore_airtime().await;
        loop {
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                r = self.radio.connected() => if r.is_err() { return },
                _ = stop.changed() => continue,
            }
            let rows = match self.store.next(&self.name, now_ms(), 0, BATCH).await {
                Ok(rows) => rows,
                Err(StoreError::Corrupt {
                    key: Some(key),
                    what,
                    ..
                }) => {
                    // One damaged row must not block the queue behind it.
                    warn!(radio = %self.name, %key, %what, "damaged row in the outbox; setting it aside");
                    let _ = self
                        .store
                        .reject(key, &format!("damaged row: {what}"), now_ms())
                        .await;
                    self.stats.undeliverable();
                    continue;
                }
                Err(e) => {
                    warn!(radio = %self.name, error = %e, "cannot read the outbox; trying again in 1s");
                    self.pause(Instant::now() + Duration::from_secs(1), false, &mut stop)
                        .await;
                    continue;
                }
            };
            if rows.is_empty() {
                let until = Instant::now() + Duration::from_secs(3600);
                self.pause(until, true, &mut stop).await;
                continue;
            }
            for row in rows {
                match self.deliver(row).await {
                    Flow::Next => {}
                    Flow::Hold(until) => {
                        self.pause(until, true, &mut stop).await;
                        break;
                    }
                    Flow::Backoff(until) => {
                        self.pause(until, false, &mut stop).await;
                        break;
                    }
                }
            }
        }
    }

    /// Counts what this radio put on the air before a restart, within the governor's window,
    /// so a restart grants no fresh budget.
    async fn restore_airtime(&mut self) {
        let window = self.governor.config().window;
        let (now, wall) = (std::time::Instant::now(), now_ms());
        let since = wall.saturating_sub(window.as_millis() as i64);
        match self.store.airtime_since(&self.name, since).await {
            Ok(sent) => {
                for (at, airtime) in sent {
                    // A record from the future (the clock went back) counts as just now.
                    let ago = Duration::from_millis(wall.saturating_sub(at).max(0) as u64);
                    self.governor
                        .record(airtime, now.checked_sub(ago).unwrap_or(now));
                }
            }
            Err(e) => warn!(radio = %self.name, error = %e, "cannot read past airtime"),
        }
    }

    /// Waits until `until`, or until new work arrives when `wakeable`, or until stopped.
    async fn pause(&self, until: Instant, wakeable: bool, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = self.wake.notified(), if wakeable => {}
            _ = stop.changed() => {}
        }
    }

    async fn deliver(&mut self, row: Delivery) -> Flow {
        let Some(packet) = self.router.render(&row) else {
            self.set_aside(
                &row,
                "stored packet is unreadable, or its channel keys are not configured",
            )
            .await;
            return Flow::Next;
        };
        if let Some((percent, at)) = *self.utilization.borrow() {
            self.governor.observe_utilization(percent, at);
        }
        let airtime = self.preset.time_on_air(packet.on_air_len());
        if let (Verdict::WaitUntil(until), hold) =
            self.governor
                .check(row.class, airtime, std::time::Instant::now())
        {
            debug!(radio = %self.name, class = %row.class, ?hold, "airtime governor holds the queue");
            return Flow::Hold(Instant::from_std(until));
        }
        let text = self.text_of(&packet, &row.to_channel);
        crate::failpoint::hit("drain.before-relay");
        let status = self
            .radio
            .relay(packet, &row.to_channel, self.gateway, row.hops)
            .await;
        match status {
            DeliveryStatus::Delivered => {
                self.governor.record(airtime, std::time::Instant::now());
                crate::failpoint::hit("drain.before-confirm");
                let sent = Sent {
                    key: row.key,
                    airtime: Some(airtime),
                };
                if let Err(e) = self.store.confirm(&[sent], now_ms()).await {
                    // The radio has it; a re-send after a restart is dropped by its dedup.
                    warn!(radio = %self.name, error = %e, "cannot remove a delivered row");
                }
                self.stats.relayed(&self.name, airtime);
                let _ = self.activity.send(Activity::Relayed {
                    from: row.from,
                    id: row.id,
                    destination: self.name.clone(),
                    channel: row.to_channel.clone(),
                    class: row.class,
                    text,
                    waited: Duration::from_millis((now_ms() - row.enqueued_at).max(0) as u64),
                    airtime,
                });
                Flow::Next
            }
            DeliveryStatus::Unreachable { reason } => {
                // Not the message's fault: it waits, uncounted, for the radio to be back.
                info!(radio = %self.name, %reason, "radio unreachable; the queue waits");
                Flow::Backoff(Instant::now() + Duration::from_secs(1))
            }
            DeliveryStatus::Failed { reason } => {
                if row.attempts + 1 >= self.max_attempts {
                    self.set_aside(
                        &row,
                        &format!("{} attempts failed; last: {reason}", row.attempts + 1),
                    )
                    .await;
                    return Flow::Next;
                }
                let delay = Duration::from_secs(1u64 << row.attempts.min(6)).min(MAX_RETRY_DELAY);
                info!(radio = %self.name, from = %row.from, id = %row.id, %reason,
                      retry_in_s = delay.as_secs(), "delivery not confirmed; will retry");
                if let Err(e) = self.store.fail(row.key, &reason).await {
                    warn!(radio = %self.name, error = %e, "cannot record a retry");
                }
                Flow::Backoff(Instant::now() + delay)
            }
            DeliveryStatus::Rejected { reason } => {
                self.set_aside(&row, &reason).await;
                Flow::Next
            }
        }
    }

    async fn set_aside(&self, row: &Delivery, reason: &str) {
        warn!(radio = %self.name, from = %row.from, id = %row.id, %reason, "delivery set aside as undeliverable");
        if let Err(e) = self.store.reject(row.key, reason, now_ms()).await {
            warn!(radio = %self.name, error = %e, "cannot set a delivery aside");
        }
        self.stats.undeliverable();
        let _ = self.activity.send(Activity::Undeliverable {
            from: row.from,
            id: row.id,
            destination: self.name.clone(),
            reason: reason.to_owned(),
        });
    }

    /// The text of a relayed packet, for whoever follows the activity feed (only then: it
    /// costs a decryption).
    fn text_of(&self, packet: &Packet, channel: &str) -> Option<String> {
        if self.activity.receiver_count() == 0 {
            return None;
        }
        self.router.decrypt(&self.name, channel, packet)?.text()
    }
}
