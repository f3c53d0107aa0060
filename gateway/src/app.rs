//! The running gateway: one link per radio, the router in front of the store, and one worker
//! per destination behind it.
//!
//! ```text
//! radio link --RadioEvent::Packet--> Gateway loop --Router::route--> Writer::accept (one commit:
//!   seen-set + deliveries) --Notify--> RadioWorker --RadioHandle::relay--> radio, then confirm
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use archipel_adapters::radio::{self, Attachment, RadioConfig, RadioEvent, RadioHandle, RadioInfo};
use mesh_core::{Class, Governor, NodeId, Packet, PacketId, proto};
use prost::Message;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::router::{Heard, Router, Verdict};
use crate::store::{Accepted, Millis, Store, StoreConfig, Writer};
use crate::worker::RadioWorker;

/// Wall-clock time as the store keeps it.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Something an operator may want to see, as it happens.
#[derive(Debug, Clone)]
pub enum Activity {
    /// A radio finished its handshake.
    RadioUp {
        /// Configured name.
        radio: String,
        /// Its node id.
        node: Option<NodeId>,
    },
    /// A radio link went down (it reconnects by itself).
    RadioDown {
        /// Configured name.
        radio: String,
        /// Why.
        reason: String,
    },
    /// A packet was accepted and queued for these destinations.
    Queued {
        /// Sender.
        from: NodeId,
        /// Packet id.
        id: PacketId,
        /// Radio it was heard on.
        source: String,
        /// Channel it was heard on.
        channel: String,
        /// Where it will go.
        destinations: Vec<String>,
        /// Its priority class.
        class: Class,
    },
    /// A packet already seen was dropped.
    Duplicate {
        /// Sender.
        from: NodeId,
        /// Packet id.
        id: PacketId,
        /// Radio the copy came from.
        source: String,
    },
    /// A destination radio confirmed a relayed packet.
    Relayed {
        /// Original sender (unchanged).
        from: NodeId,
        /// Packet id (unchanged).
        id: PacketId,
        /// Destination radio.
        destination: String,
        /// Channel there.
        channel: String,
        /// Priority class.
        class: Class,
        /// The text, when it is one.
        text: Option<String>,
        /// Time between queueing and confirmation.
        waited: Duration,
        /// Airtime it cost on the far mesh.
        airtime: Duration,
    },
    /// A delivery was set aside after the destination refused it or kept failing.
    Undeliverable {
        /// Sender.
        from: NodeId,
        /// Packet id.
        id: PacketId,
        /// Destination radio.
        destination: String,
        /// Why.
        reason: String,
    },
    /// Messages waited longer than their class allows and were dropped.
    Expired {
        /// Destination radio.
        destination: String,
        /// Their class.
        class: Class,
        /// How many.
        count: u64,
    },
    /// A full queue dropped or refused a message.
    Overflow {
        /// Destination radio.
        destination: String,
        /// Class of what was dropped.
        class: Option<Class>,
    },
}

/// Counters for summaries (and, later, metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Packets confirmed by a destination.
    pub relayed: AtomicU64,
    /// Packets dropped as already seen.
    pub duplicates: AtomicU64,
    /// Packets accepted into the store.
    pub accepted: AtomicU64,
    /// Deliveries dropped by their time to live.
    pub expired: AtomicU64,
    /// Deliveries dropped or refused by a full queue.
    pub overflowed: AtomicU64,
    /// Deliveries set aside as undeliverable.
    pub undeliverable: AtomicU64,
    /// Airtime injected per radio.
    airtime: Mutex<HashMap<String, Duration>>,
}

impl Stats {
    fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// A relay confirmed on `radio`, costing `airtime`.
    pub fn relayed(&self, radio: &str, airtime: Duration) {
        Self::bump(&self.relayed, 1);
        let mut a = self.airtime.lock().unwrap_or_else(|p| p.into_inner());
        *a.entry(radio.to_owned()).or_default() += airtime;
    }

    /// A delivery set aside.
    pub fn undeliverable(&self) {
        Self::bump(&self.undeliverable, 1);
    }

    /// Airtime injected per radio, sorted by name.
    pub fn airtime(&self) -> Vec<(String, Duration)> {
        let a = self.airtime.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = a.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v
    }
}

/// How often expired messages are swept.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);
/// How often the seen-set is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// One radio as the gateway loop knows it.
struct RadioSlot {
    /// Configured name.
    name: String,
    /// The last handshake (channel names, own node).
    info: Option<Arc<RadioInfo>>,
    /// Wakes this radio's worker when something is queued for it.
    wake: Arc<Notify>,
    /// Feeds the worker's governor with channel utilisation.
    utilization: watch::Sender<Option<(f32, std::time::Instant)>>,
}

/// A running gateway.
pub struct Gateway {
    /// Counters.
    stats: Arc<Stats>,
    /// Activity feed.
    activity: broadcast::Sender<Activity>,
    /// A receiver subscribed before anything started, handed to the first caller of
    /// [`Gateway::activity`] so no early event (a radio coming up) is missed.
    first_activity: Mutex<Option<broadcast::Receiver<Activity>>>,
    /// The store, for depth queries.
    store: Store,
    /// Turned true to stop every task.
    stop: watch::Sender<bool>,
    /// The loop and workers, awaited on shutdown.
    tasks: Vec<JoinHandle<()>>,
    /// Radio links, shut down last.
    radios: Vec<RadioHandle>,
}

impl Gateway {
    /// Opens the store, connects the radios and starts relaying.
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        let store = Store::open(StoreConfig {
            path: config.store.path.clone(),
            max_per_destination: config.store.max_queue_per_destination,
            airtime_window: Duration::from_secs(config.airtime.window_secs),
        })
        .await
        .with_context(|| format!("cannot open the store at {}", config.store.path.display()))?;
        let writer = Writer::spawn(store.clone(), 256);
        let router = Arc::new(Router::new(&config));
        let (activity, first_activity) = broadcast::channel(1024);
        let stats = Arc::new(Stats::default());
        let (stop, stop_rx) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::channel::<(usize, RadioEvent)>(1024);
        let mut slots = Vec::new();
        let mut radios = Vec::new();
        let mut tasks = Vec::new();
        for (i, r) in config.radios.iter().enumerate() {
            let endpoint = match (&r.tcp, &r.serial) {
                (Some(addr), _) => Attachment::Tcp(addr.clone()),
                (None, Some(path)) => Attachment::Serial {
                    path: path.clone(),
                    baud: r.baud,
                },
                (None, None) => {
                    anyhow::bail!("radio {} has no connection (config not validated)", r.name)
                }
            };
            let (handle, mut events) = radio::spawn(RadioConfig::new(r.name.clone(), endpoint));
            let tx = events_tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    if tx.send((i, ev)).await.is_err() {
                        break;
                    }
                }
            }));
            let wake = Arc::new(Notify::new());
            let (util_tx, util_rx) = watch::channel(None);
            let worker = RadioWorker {
                name: r.name.clone(),
                radio: handle.clone(),
                store: store.clone(),
                governor: Governor::new(config.governor(r)),
                // Until the radio's own preset is read from its handshake: the firmware's default.
                preset: r.preset.unwrap_or_default(),
                gateway: config.gateway.id,
                router: router.clone(),
                max_attempts: config.store.max_attempts,
                wake: wake.clone(),
                utilization: util_rx,
                activity: activity.clone(),
                stats: stats.clone(),
            };
            tasks.push(tokio::spawn(worker.run(stop_rx.clone())));
            radios.push(handle);
            slots.push(RadioSlot {
                name: r.name.clone(),
                info: None,
                wake,
                utilization: util_tx,
            });
        }
        drop(events_tx);
        let main = MainLoop {
            slots,
            router,
            writer,
            store: store.clone(),
            seen_window: Duration::from_secs(config.store.seen_window_hours * 3600),
            activity: activity.clone(),
            stats: stats.clone(),
        };
        tasks.push(tokio::spawn(main.run(events_rx, stop_rx)));
        info!(name = %config.gateway.name, id = %config.gateway.id, radios = config.radios.len(), "gateway running");
        Ok(Gateway {
            stats,
            activity,
            first_activity: Mutex::new(Some(first_activity)),
            store,
            stop,
            tasks,
            radios,
        })
    }

    /// Follow what happens. The first call sees everything since the start.
    pub fn activity(&self) -> broadcast::Receiver<Activity> {
        self.first_activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| self.activity.subscribe())
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Messages waiting, over all destinations.
    pub async fn queued(&self) -> u64 {
        self.store
            .depths()
            .await
            .map(|d| d.iter().map(|d| d.count).sum())
            .unwrap_or(0)
    }

    /// Stops relaying: workers finish the delivery in hand, links close, the store closes.
    /// Nothing queued is lost; it is delivered after the next start.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for r in &self.radios {
            r.shutdown().await;
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.store.close().await;
    }
}

/// The loop between radios and store.
struct MainLoop {
    /// The radios, by index.
    slots: Vec<RadioSlot>,
    /// Routing decisions (shared with the workers, which read relayed texts with its keys).
    router: Arc<Router>,
    /// Group commits into the store.
    writer: Writer,
    /// For sweeping expired rows and pruning the seen-set.
    store: Store,
    /// How long (from, id) stays seen.
    seen_window: Duration,
    /// Activity feed.
    activity: broadcast::Sender<Activity>,
    /// Counters.
    stats: Arc<Stats>,
}

impl MainLoop {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<(usize, RadioEvent)>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut expire = tokio::time::interval(EXPIRE_EVERY);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                ev = events.recv() => match ev {
                    Some((i, ev)) => self.on_event(i, ev).await,
                    None => break,
                },
                _ = expire.tick() => self.expire().await,
                _ = prune.tick() => {
                    if let Err(e) = self.store.rotate_seen(now_ms(), self.seen_window).await {
                        warn!(error = %e, "cannot rotate the seen-set");
                    }
                }
            }
        }
    }

    async fn expire(&self) {
        match self.store.expire(now_ms()).await {
            Ok(expired) => {
                for e in expired {
                    Stats::bump(&self.stats.expired, e.count);
                    warn!(destination = %e.destination, class = %e.class, count = e.count, "messages expired before delivery");
                    let _ = self.activity.send(Activity::Expired {
                        destination: e.destination,
                        class: e.class,
                        count: e.count,
                    });
                }
            }
            Err(e) => warn!(error = %e, "cannot sweep expired messages"),
        }
    }

    async fn on_event(&mut self, i: usize, ev: RadioEvent) {
        let slot = &mut self.slots[i];
        match ev {
            RadioEvent::Connected(info) => {
                let node = info.node_id();
                for c in info.active_channels() {
                    let name = info.channel_name(c);
                    if !info.uplinks_on(&name) {
                        warn!(radio = %slot.name, channel = %name,
                            "the radio does not publish what it hears on this channel through its client proxy: \
                             only broadcasts will cross, not direct messages between other nodes \
                             (meshtastic --set mqtt.enabled true --set mqtt.proxy_to_client_enabled true \
                             --set mqtt.address 127.0.0.1; meshtastic --ch-index {} --ch-set uplink_enabled true)",
                            c.index);
                    }
                }
                slot.info = Some(info);
                let _ = self.activity.send(Activity::RadioUp {
                    radio: slot.name.clone(),
                    node,
                });
            }
            RadioEvent::Disconnected { reason, .. } => {
                let _ = self.activity.send(Activity::RadioDown {
                    radio: slot.name.clone(),
                    reason,
                });
            }
            RadioEvent::Notification(_) => {}
            RadioEvent::Packet(packet) => self.on_packet(i, packet).await,
            RadioEvent::Uplink { packet, channel } => {
                let Some(decoded) = self.router.decrypt(&slot.name, &channel, &packet) else {
                    warn!(radio = %slot.name, %channel, "uplink packet on a channel whose configured key does not read it");
                    return;
                };
                self.relay(i, decoded, channel).await;
            }
        }
    }

    /// A packet the radio handed its client. When the radio publishes its uplink on that
    /// channel, the uplink carries the same packet (and more), so this copy is not routed.
    async fn on_packet(&mut self, i: usize, packet: Packet) {
        let slot = &self.slots[i];
        let Some(info) = slot.info.clone() else {
            return;
        };
        let own = info.node_id().unwrap_or(NodeId::LOCAL);
        if packet.from() == own
            && let Some(percent) = channel_utilization(&packet)
        {
            slot.utilization
                .send_replace(Some((percent, std::time::Instant::now())));
        }
        let Some(channel) = info
            .channels
            .iter()
            .find(|c| c.index as u32 == packet.channel())
            .map(|c| info.channel_name(c))
        else {
            return;
        };
        if info.uplinks_on(&channel) {
            return;
        }
        self.relay(i, packet, channel).await;
    }

    /// Routes a decoded packet heard by radio `i` on `channel` and commits its deliveries.
    async fn relay(&mut self, i: usize, packet: Packet, channel: String) {
        let slot = &self.slots[i];
        let own = slot
            .info
            .as_ref()
            .and_then(|i| i.node_id())
            .unwrap_or(NodeId::LOCAL);
        let heard = Heard {
            radio: &slot.name,
            radio_node: own,
            channel: &channel,
            packet: &packet,
        };
        let inbound = match self.router.route(heard, now_ms()) {
            Verdict::Relay(inbound) => inbound,
            Verdict::Ignore(_) => return,
        };
        let destinations: Vec<String> = inbound
            .deliveries
            .iter()
            .map(|d| d.destination.clone())
            .collect();
        let class = inbound.class;
        let source = slot.name.clone();
        crate::failpoint::hit("accept.before-commit");
        match self.writer.accept(inbound, now_ms()).await {
            Ok(Accepted::Duplicate) => {
                Stats::bump(&self.stats.duplicates, 1);
                let _ = self.activity.send(Activity::Duplicate {
                    from: packet.from(),
                    id: packet.id(),
                    source,
                });
            }
            Ok(Accepted::New { refused, evicted }) => {
                Stats::bump(&self.stats.accepted, 1);
                for d in &refused {
                    Stats::bump(&self.stats.overflowed, 1);
                    warn!(destination = %d, "queue full: message refused");
                    let _ = self.activity.send(Activity::Overflow {
                        destination: d.clone(),
                        class: None,
                    });
                }
                for (d, class) in evicted {
                    Stats::bump(&self.stats.overflowed, 1);
                    warn!(destination = %d, %class, "queue full: oldest less urgent message dropped");
                    let _ = self.activity.send(Activity::Overflow {
                        destination: d,
                        class: Some(class),
                    });
                }
                for d in &destinations {
                    if let Some(s) = self.slots.iter().find(|s| &s.name == d) {
                        s.wake.notify_one();
                    }
                }
                let _ = self.activity.send(Activity::Queued {
                    from: packet.from(),
                    id: packet.id(),
                    source,
                    channel,
                    destinations,
                    class,
                });
            }
            Err(e) => {
                // Not accepted: nothing was promised downstream. Say so loudly.
                warn!(error = %e, from = %packet.from(), id = %packet.id(), "cannot store a received message; it is not relayed");
            }
        }
    }
}

/// The channel utilisation a radio reports about itself in its device telemetry.
fn channel_utilization(packet: &Packet) -> Option<f32> {
    let data = packet.data()?;
    if data.portnum != proto::PortNum::TelemetryApp as i32 {
        return None;
    }
    let telemetry = proto::Telemetry::decode(&data.payload[..]).ok()?;
    match telemetry.variant? {
        proto::telemetry::Variant::DeviceMetrics(m) => m.channel_utilization,
        _ => None,
    }
}
