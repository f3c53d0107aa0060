//! What the hub tells about itself: one snapshot ([`Status`]) behind the status page, the JSON
//! API, `archipel status` and the metrics, so the terminal, the page and Prometheus never
//! disagree. An [`Observer`] follows the activity feed (endpoint states, the last messages
//! relayed); a [`View`] holds what the rest is read from. Names and counts only: no key,
//! password or configuration value beyond names ever gets in.

pub mod endpoints;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use archipel_adapters::peer::{AcceptorCounters, PeerHandle};
use archipel_adapters::radio::RadioHandle;
use mesh_core::NodeId;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

pub use endpoints::{Endpoint, EndpointStates, State};

use crate::activity::Activity;
use crate::app::now_ms;
use crate::nodes::NodeDirectory;
use crate::stats::Stats;
use crate::store::{Millis, Store};

/// Messages relayed that the page lists: enough to see traffic flow, bounded.
const RECENT: usize = 20;
/// Nodes the page lists, most recently heard first.
const NODES_LISTED: usize = 100;
/// "Nodes heard in the last hour", per radio.
pub const NODES_WINDOW: Duration = Duration::from_secs(3600);

/// One message a destination confirmed.
#[derive(Debug, Clone, Serialize)]
pub struct RecentRelay {
    /// When (unix ms).
    pub at: Millis,
    /// The sender (`!a1b2c3d4`).
    pub from: String,
    /// The packet id, as the terminal prints it.
    pub id: String,
    /// Where it went.
    pub destination: String,
    /// The channel there.
    pub channel: String,
    /// Its class.
    pub class: &'static str,
    /// A channel text's words (the mesh already broadcast them); never a direct message's.
    pub text: Option<String>,
}

/// Follows the activity feed for the page: endpoint states and the last relays.
#[derive(Debug)]
pub struct Observer {
    /// Behind a lock taken per event and per page view, never on the relay path.
    inner: Mutex<Observed>,
}

#[derive(Debug)]
struct Observed {
    /// Each endpoint's state.
    endpoints: EndpointStates,
    /// The last [`RECENT`] relays, oldest first.
    recent: VecDeque<RecentRelay>,
}

impl Observer {
    /// An observer of these endpoints, all starting.
    pub fn new(endpoints: EndpointStates) -> Observer {
        Observer {
            inner: Mutex::new(Observed {
                endpoints,
                recent: VecDeque::with_capacity(RECENT),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in one event seen at `now`.
    pub fn apply(&self, a: &Activity, now: Millis) {
        let mut o = self.lock();
        o.endpoints.apply(a, now);
        if let Activity::Relayed {
            from,
            id,
            destination,
            channel,
            class,
            text,
            ..
        } = a
        {
            if o.recent.len() == RECENT {
                o.recent.pop_front();
            }
            o.recent.push_back(RecentRelay {
                at: now,
                from: from.to_string(),
                id: id.to_string(),
                destination: destination.clone(),
                channel: channel.clone(),
                class: class.name(),
                // The same rule as the feed: a direct message by its size only, by default.
                text: text.as_ref().map(ToString::to_string),
            });
        }
    }

    /// Each endpoint's state now.
    pub fn endpoints(&self) -> EndpointStates {
        self.lock().endpoints.clone()
    }

    /// The last relays, newest first.
    pub fn recent(&self) -> Vec<RecentRelay> {
        self.lock().recent.iter().rev().cloned().collect()
    }

    /// Follows `events` until `stop` turns true. A lagging observer skips what it missed:
    /// the states catch up with the next up or down.
    pub async fn follow(
        self: Arc<Self>,
        mut events: broadcast::Receiver<Activity>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Ok(a) => self.apply(&a, now_ms()),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = stop.changed() => break,
            }
        }
    }
}

/// What the page, the API and the metrics are read from; cheap to clone.
#[derive(Clone)]
pub struct View {
    /// `[gateway] name`.
    pub name: String,
    /// `[gateway] id`.
    pub id: NodeId,
    /// When the gateway started (unix ms).
    pub started_at: Millis,
    /// The counters.
    pub stats: Arc<Stats>,
    /// The store, for queue depths.
    pub store: Store,
    /// Every node the radios heard.
    pub nodes: Arc<NodeDirectory>,
    /// Endpoint states and recent relays.
    pub observer: Arc<Observer>,
    /// Each radio's link: what the radio said about itself, and its frame counters.
    pub radios: Vec<(String, RadioHandle)>,
    /// Each neighbour hub's link, for its counters (refusals).
    pub peers: Vec<(String, PeerHandle)>,
    /// The federation listener's counters (unknown keys), when this hub listens.
    pub acceptor: Option<Arc<AcceptorCounters>>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The whole snapshot, as `/api/status` serves it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Who this is.
    pub gateway: GatewayStatus,
    /// True when every endpoint is up and the store answers.
    pub ok: bool,
    /// What is wrong, in words an operator acts on; empty when `ok`.
    pub problems: Vec<String>,
    /// The radios.
    pub radios: Vec<RadioStatus>,
    /// Every other endpoint: brokers, XMPP servers, neighbour hubs.
    pub links: Vec<Endpoint>,
    /// What waits, per destination.
    pub queues: Vec<QueueStatus>,
    /// The nodes heard, most recent first.
    pub nodes: Vec<NodeStatus>,
    /// The last messages relayed, newest first.
    pub recent: Vec<RecentRelay>,
    /// Totals since start.
    pub totals: Totals,
}

/// `gateway` of [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStatus {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: String,
    /// The build.
    pub version: &'static str,
    /// When it started (unix ms).
    pub started_at: Millis,
    /// When this snapshot was taken (unix ms): the page shows its age.
    pub now: Millis,
}

/// One radio.
#[derive(Debug, Clone, Serialize)]
pub struct RadioStatus {
    /// Its link's state.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// The radio's own node, once it said.
    pub node: Option<String>,
    /// The preset it is on.
    pub preset: Option<String>,
    /// Its region.
    pub region: Option<String>,
    /// Airtime spent in the current duty-cycle window (seconds).
    pub airtime_window_s: f64,
    /// What the window allows (seconds); none without a legal limit.
    pub airtime_budget_s: Option<f64>,
    /// What is left of it (seconds).
    pub airtime_left_s: Option<f64>,
    /// The channel utilisation the radio last reported (percent).
    pub channel_utilization: Option<f64>,
    /// Times the governor held its queue back.
    pub governor_holds: u64,
    /// Nodes it heard in the last hour.
    pub nodes_last_hour: u64,
}

/// One destination's queue.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    /// The destination.
    pub destination: String,
    /// Deliveries waiting.
    pub depth: u64,
    /// How long the oldest has waited (seconds).
    pub oldest_age_s: Option<f64>,
    /// The most urgent class waiting.
    pub most_urgent: Option<&'static str>,
}

/// One node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// `!a1b2c3d4`.
    pub id: String,
    /// Its long name, once it sent one.
    pub name: Option<String>,
    /// Its short name.
    pub short_name: Option<String>,
    /// When it was last heard (unix ms).
    pub last_heard_at: Option<Millis>,
    /// Hops away when last heard.
    pub hops: Option<u8>,
    /// SNR of its last packet (dB).
    pub snr: Option<f32>,
    /// Battery percent (above 100: external power).
    pub battery: Option<u32>,
    /// The radio that heard it last.
    pub heard_by: Option<String>,
}

/// Totals since start.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// Deliveries confirmed.
    pub relayed: u64,
    /// Copies dropped as already seen.
    pub duplicates: u64,
    /// Packets an ingress dropped.
    pub dropped: u64,
    /// Deliveries past their time to live.
    pub expired: u64,
    /// Deliveries dropped by a full queue.
    pub overflowed: u64,
    /// Deliveries set aside as undeliverable.
    pub undeliverable: u64,
    /// Deliveries waiting now.
    pub queued: u64,
}

impl View {
    /// The snapshot at `now` (monotonic, for ages the directory keeps) and `wall` (unix ms).
    pub async fn status(&self, now: Instant, wall: Millis) -> Status {
        let endpoints = self.observer.endpoints();
        let mut problems = Vec::new();
        for e in endpoints.all() {
            match e.state {
                State::Up => {}
                State::Starting => problems.push(format!("{} {} is not up yet", e.kind, e.name)),
                State::Down => problems.push(format!(
                    "{} {} is down: {}",
                    e.kind,
                    e.name,
                    e.last_error.as_deref().unwrap_or("no reason given")
                )),
            }
        }
        let queues = match self.store.queues().await {
            Ok(q) => q
                .into_iter()
                .map(|q| QueueStatus {
                    destination: q.destination,
                    depth: q.count,
                    oldest_age_s: q.oldest.map(|t| (wall - t).max(0) as f64 / 1000.0),
                    most_urgent: q.most_urgent.map(|c| c.name()),
                })
                .collect(),
            Err(e) => {
                problems.push(format!("the store does not answer: {e}"));
                Vec::new()
            }
        };
        let nodes = self.nodes.snapshot();
        let radios = self
            .radios
            .iter()
            .filter_map(|(name, handle)| {
                let endpoint = endpoints.get(name)?.clone();
                let info = handle.info();
                let gauges = &self.stats.endpoint(name)?.governor;
                let budget = gauges.budget();
                let window = gauges.window();
                let recent = nodes
                    .iter()
                    .filter(|n| n.heard_by.as_deref() == Some(name.as_str()))
                    .filter(|n| {
                        n.last_heard
                            .is_some_and(|t| now.saturating_duration_since(t) <= NODES_WINDOW)
                    })
                    .count();
                Some(RadioStatus {
                    endpoint,
                    node: info
                        .as_ref()
                        .and_then(|i| i.node_id())
                        .map(|n| n.to_string()),
                    preset: info
                        .as_ref()
                        .and_then(|i| i.preset())
                        .map(|p| p.to_string()),
                    region: info.as_ref().and_then(|i| i.region()).map(str::to_owned),
                    airtime_window_s: window.as_secs_f64(),
                    airtime_budget_s: budget.map(|b| b.as_secs_f64()),
                    airtime_left_s: budget.map(|b| b.saturating_sub(window).as_secs_f64()),
                    channel_utilization: gauges.utilization(),
                    governor_holds: Stats::get(&gauges.holds),
                    nodes_last_hour: recent as u64,
                })
            })
            .collect();
        let mut heard: Vec<_> = nodes
            .into_iter()
            .filter(|n| n.last_heard.is_some())
            .collect();
        heard.sort_by_key(|n| std::cmp::Reverse(n.last_heard));
        heard.truncate(NODES_LISTED);
        let s = &self.stats;
        let queued = queues.iter().map(|q: &QueueStatus| q.depth).sum();
        Status {
            gateway: GatewayStatus {
                name: self.name.clone(),
                id: self.id.to_string(),
                version: env!("CARGO_PKG_VERSION"),
                started_at: self.started_at,
                now: wall,
            },
            ok: problems.is_empty(),
            problems,
            radios,
            links: endpoints
                .all()
                .iter()
                .filter(|e| e.kind != "radio")
                .cloned()
                .collect(),
            queues,
            nodes: heard
                .into_iter()
                .map(|n| NodeStatus {
                    id: n.id.to_string(),
                    name: n.user.as_ref().map(|u| u.long_name.clone()),
                    short_name: n.user.as_ref().map(|u| u.short_name.clone()),
                    last_heard_at: n.last_heard_at,
                    hops: n.hops_away,
                    snr: n.snr,
                    battery: n.battery_level,
                    heard_by: n.heard_by,
                })
                .collect(),
            recent: self.observer.recent(),
            totals: Totals {
                relayed: Stats::get(&s.relayed),
                duplicates: Stats::get(&s.duplicates),
                dropped: Stats::get(&s.dropped),
                expired: Stats::get(&s.expired),
                overflowed: Stats::get(&s.overflowed),
                undeliverable: Stats::get(&s.undeliverable),
                queued,
            },
        }
    }
}
