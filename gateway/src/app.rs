//! The running gateway: every configured endpoint started from one registry, each with an
//! ingest task in front of the router and a drain worker behind the store.
//!
//! ```text
//! radio link ─RadioEvent─> ingest::radio ─┐                                 ┌─> DrainWorker<RadioSink> ─> radio link
//!                                         ├─ Router::route ─> Writer (commit) ┤
//! mqtt link ──MqttEvent──> ingest::mqtt ──┤    (then: wake, count, PUBACK)   ├─> DrainWorker<MqttSink> ──> mqtt link
//! xmpp link ──XmppEvent──> ingest::xmpp ──┘                                  └─> DrainWorker<XmppSink> ──> xmpp link
//! ```
//!
//! Packets addressed to an XMPP user's virtual node skip the route legs: radio ingest queues
//! them for that user's XMPP endpoint ([`crate::people`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use archipel_adapters::mqtt::{self, MqttHandle};
use archipel_adapters::peer::{
    self, IdentityError, PeerAcceptor, PeerCounters, PeerHandle, PeerLinkConfig, PeerListener,
    TransportError,
};
use archipel_adapters::radio::{self, Attachment, RadioConfig, RadioHandle};
use archipel_adapters::xmpp::{self, XmppHandle};
use mesh_core::Governor;
use mesh_core::envelope::{Root, TopicChannel};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::activity::Activity;
use crate::config::{Config, MqttSection, RadioSection, XmppSection};
use crate::ingest::Ingest;
use crate::ingest::downlink::DownlinkFilter;
use crate::ingest::mqtt::{JsonDownlink, MqttIngest};
use crate::ingest::peer::PeerIngest;
use crate::ingest::radio::{Expected, RadioIngest};
use crate::ingest::xmpp::XmppIngest;
use crate::nodes::{DEFAULT_AWAY_AFTER, DEFAULT_CAPACITY, NodeDirectory};
use crate::people::People;
use crate::ratelimit::Rate;
use crate::router::Router;
use crate::sink::mqtt::MqttSink;
use crate::sink::peer::PeerSink;
use crate::sink::radio::{Airtime, DirectWait, RadioSink};
use crate::sink::xmpp::XmppSink;
use crate::stats::Stats;
use crate::status::{EndpointStates, Observer, View};
use crate::store::{Millis, Store, StoreConfig, StoreError, Writer};
use crate::worker::{DrainWorker, Shared};

/// Wall-clock time as the store keeps it.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long a dial to a neighbour hub (TCP and the TLS handshake) may take, and how long an
/// inbound one may take to authenticate.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most items the group-commit writer takes into one transaction.
const MAX_BATCH: usize = 1024;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened (or read).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An MQTT link could not be set up.
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
    /// The gateway's identity (its key pair for federation) could not be read or made.
    #[error("federation.identity_file: {0}")]
    Identity(#[from] IdentityError),
    /// The federation listener could not be opened.
    #[error("federation.listen: {0}")]
    Listen(#[from] TransportError),
}

/// One started endpoint, for shutdown and status.
enum Link {
    /// A radio link.
    Radio(RadioHandle),
    /// An MQTT link.
    Mqtt(MqttHandle),
    /// An XMPP link.
    Xmpp(XmppHandle),
    /// A link to a neighbour hub.
    Peer(PeerHandle),
}

/// A running gateway.
pub struct Gateway {
    /// Counters, read by the summary.
    stats: Arc<Stats>,
    /// Where everything that happens is announced.
    activity: broadcast::Sender<Activity>,
    /// A receiver subscribed before anything started, handed to the first caller of
    /// [`Gateway::activity`] so no early event (a radio coming up) is missed.
    first_activity: Mutex<Option<broadcast::Receiver<Activity>>>,
    /// The store, for depth queries and closing last.
    store: Store,
    /// Every mesh node the radios heard.
    nodes: Arc<NodeDirectory>,
    /// Turned true to stop the workers and the maintenance task.
    stop: watch::Sender<bool>,
    /// Ingest tasks, drain workers and maintenance, awaited on shutdown.
    tasks: Vec<JoinHandle<()>>,
    /// Every endpoint's link, shut down after the workers.
    links: Vec<Link>,
    /// What the page, the API and the metrics read.
    view: View,
}

impl Gateway {
    /// Opens the store, starts every endpoint and starts relaying.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        let store = Store::open(StoreConfig {
            path: config.store.path.clone(),
            max_per_destination: config.store.max_queue_per_destination,
            airtime_window: Duration::from_secs(config.airtime.window_secs),
        })
        .await?;
        // A clock that went back while the gateway was stopped: nothing stored is younger
        // than now (see `clock`).
        match store.clamp_future(now_ms()).await {
            Ok(0) => {}
            Ok(n) => {
                warn!(
                    messages = n,
                    "messages stamped later than now (the clock went back while stopped): their time to live counts from now"
                )
            }
            Err(e) => warn!(error = %e, "cannot check the stored times against the clock"),
        }
        let names: Vec<&str> = config
            .radios
            .iter()
            .map(|r| r.name.as_str())
            .chain(config.mqtt.iter().map(|m| m.name.as_str()))
            .chain(config.xmpp.iter().map(|x| x.name.as_str()))
            .chain(config.peers.iter().map(|p| p.name.as_str()))
            .collect();
        report_orphan_queues(&store, &names).await;
        let writer = Writer::spawn(store.clone(), MAX_BATCH);
        let router = Arc::new(Router::new(&config));
        let (activity, first_activity) = broadcast::channel(4096);
        let stats = Arc::new(Stats::new(names.iter().copied()));
        let (stop, stop_rx) = watch::channel(false);
        // Subscribed before anything starts, so the first radio coming up is seen.
        let observer = Arc::new(Observer::new(EndpointStates::new(
            config
                .endpoints()
                .map(|e| (e.name().to_owned(), e.kind().as_str())),
        )));
        let observed = tokio::spawn(
            observer
                .clone()
                .follow(activity.subscribe(), stop_rx.clone()),
        );
        let wakes: HashMap<String, Arc<Notify>> = names
            .iter()
            .map(|n| ((*n).to_owned(), Arc::new(Notify::new())))
            .collect();
        let people = Arc::new(People::new());
        if let Some(first) = config.xmpp.first() {
            // Virtual nodes are per owner, not per endpoint; with one XMPP server (the usual
            // hub) they are all its users'.
            for v in store.virtual_nodes().await? {
                people.insert(&v, &first.name);
            }
        }
        let ingest = Arc::new(Ingest::new(
            router.clone(),
            writer,
            wakes.clone(),
            activity.clone(),
            stats.clone(),
            people.clone(),
            config.radios.iter().map(|r| r.name.clone()).collect(),
        ));
        let mut tasks = Vec::new();
        let mut acceptor_counters = None;
        let mut links = Vec::new();
        let nodes = Arc::new(NodeDirectory::new(DEFAULT_CAPACITY, DEFAULT_AWAY_AFTER));
        let shared = Shared {
            store: store.clone(),
            router: router.clone(),
            activity: activity.clone(),
            stats: stats.clone(),
            max_attempts: config.store.max_attempts,
            nodes: nodes.clone(),
            show_direct: config.log.show_direct_messages,
        };

        for r in &config.radios {
            let (handle, events) = radio::spawn(RadioConfig::new(r.name.clone(), attachment(r)));
            let (util_tx, util_rx) = watch::channel(None);
            let governor = governor_with_history(&config, r, &store).await?;
            let sink = RadioSink::new(
                handle.clone(),
                Airtime {
                    governor,
                    duty_cycle_override: r.duty_cycle_percent,
                    stats: stats.clone(),
                    name: r.name.clone(),
                },
                r.preset,
                config.gateway.id,
                util_rx,
                DirectWait {
                    nodes: nodes.clone(),
                    absent_after: config.store.absent_after(),
                },
            );
            let w = DrainWorker::new(r.name.clone(), sink, &shared, wakes[&r.name].clone());
            tasks.push(tokio::spawn(w.run(stop_rx.clone())));
            let expected = Expected {
                region: r.region.clone(),
                preset: r.preset,
                frequency_mhz: r.frequency_mhz,
                gateway: config.gateway.id,
            };
            let task = RadioIngest::new(
                r.name.clone(),
                events,
                util_tx,
                expected,
                ingest.clone(),
                nodes.clone(),
            );
            tasks.push(tokio::spawn(task.run()));
            links.push(Link::Radio(handle));
        }

        for m in &config.mqtt {
            // Validation checked the root and the channel names.
            let root = Root::new(config.mqtt_root(m)).unwrap_or_default();
            let mut subscriptions: Vec<String> = router
                .channels_from(&m.name)
                .iter()
                .filter_map(|c| TopicChannel::new(c).ok())
                .map(|c| root.downlink_filter(&c))
                .collect();
            if m.downlink_json {
                // `<root>/2/json/mqtt/`, where tools publish the firmware's `sendtext`.
                subscriptions.push(format!(
                    "{}#",
                    mesh_core::mqtt_json::downlink_topic(root.as_str())
                ));
            }
            let (handle, events) = mqtt::spawn(mqtt_config(&config, m, subscriptions))?;
            let sink = MqttSink::new(
                handle.clone(),
                root.clone(),
                config.gateway.id,
                m.encrypted,
                m.json,
            );
            let w = DrainWorker::new(m.name.clone(), sink, &shared, wakes[&m.name].clone());
            tasks.push(tokio::spawn(w.run(stop_rx.clone())));
            let filter = DownlinkFilter::new(
                config.gateway.id,
                Rate {
                    per_minute: m.rate_per_node,
                    burst: f64::from(m.burst_per_node),
                },
            );
            let json = JsonDownlink {
                enabled: m.downlink_json,
                gateway: config.gateway.id,
            };
            let task = MqttIngest::new(
                m.name.clone(),
                root,
                events,
                handle.clone(),
                filter,
                json,
                ingest.clone(),
            );
            tasks.push(tokio::spawn(task.run()));
            links.push(Link::Mqtt(handle));
        }

        for x in &config.xmpp {
            let (handle, events) = xmpp::spawn(xmpp_config(x));
            for (channel, room) in x.bridged() {
                handle.keep_room(crate::xmpp::room_spec(channel, &room, &config.gateway.name));
            }
            let sink = XmppSink::new(handle.clone(), x.clone(), nodes.clone(), people.clone());
            let w = DrainWorker::new(x.name.clone(), sink, &shared, wakes[&x.name].clone());
            tasks.push(tokio::spawn(w.run(stop_rx.clone())));
            tasks.push(tokio::spawn(contacts(
                handle.clone(),
                nodes.clone(),
                stop_rx.clone(),
            )));
            let task = XmppIngest::new(
                x.clone(),
                events,
                handle.clone(),
                nodes.clone(),
                people.clone(),
                store.clone(),
                ingest.clone(),
            );
            tasks.push(tokio::spawn(task.run()));
            links.push(Link::Xmpp(handle));
        }

        if config.federated() {
            let identity = config.identity()?;
            let mut by_key = HashMap::new();
            for p in &config.peers {
                // Validation parsed every key.
                let Some(key) = p.public_key() else { continue };
                let (handle, events) = peer::spawn(PeerLinkConfig {
                    name: p.name.clone(),
                    identity: identity.clone(),
                    gateway: config.gateway.id,
                    channels: router.channels_of(&p.name),
                    peer_key: key,
                    address: p.socket_addr(),
                    session: config.peer_session(p),
                    connect_timeout: PEER_CONNECT_TIMEOUT,
                    backoff_initial: Duration::from_millis(500),
                    backoff_max: Duration::from_secs(30),
                });
                by_key.insert(key, handle.clone());
                let sink = PeerSink::new(handle.clone(), config.gateway.id);
                let w = DrainWorker::new(p.name.clone(), sink, &shared, wakes[&p.name].clone());
                tasks.push(tokio::spawn(w.run(stop_rx.clone())));
                let task = PeerIngest::new(p.name.clone(), events, handle.clone(), ingest.clone());
                tasks.push(tokio::spawn(task.run()));
                links.push(Link::Peer(handle));
            }
            if let Some(addr) = config.federation.listen_addr() {
                let listener = PeerListener::bind(
                    addr,
                    &identity,
                    by_key.keys().copied(),
                    PEER_CONNECT_TIMEOUT,
                )
                .await?;
                info!(listen = %addr, key = %identity.public_key(),
                      fingerprint = %identity.public_key().fingerprint(), "federation listening");
                let acceptor = PeerAcceptor::new(listener, by_key);
                acceptor_counters = Some(acceptor.counters());
                let mut stop = stop_rx.clone();
                tasks.push(tokio::spawn(async move {
                    tokio::select! {
                        () = acceptor.run() => {}
                        _ = stop.changed() => {}
                    }
                }));
            }
        }

        let seen_window = Duration::from_secs(config.store.seen_window_hours.saturating_mul(3600));
        tasks.push(tokio::spawn(crate::maintain::maintain(
            store.clone(),
            seen_window,
            activity.clone(),
            stats.clone(),
            stop_rx,
        )));
        tasks.push(observed);
        info!(name = %config.gateway.name, id = %config.gateway.id,
              radios = config.radios.len(), mqtt = config.mqtt.len(), xmpp = config.xmpp.len(),
              "gateway running");
        let view = View {
            name: config.gateway.name.clone(),
            id: config.gateway.id,
            started_at: now_ms(),
            stats: stats.clone(),
            store: store.clone(),
            nodes: nodes.clone(),
            observer,
            radios: config
                .radios
                .iter()
                .zip(links.iter().filter_map(|l| match l {
                    Link::Radio(r) => Some(r.clone()),
                    _ => None,
                }))
                .map(|(r, h)| (r.name.clone(), h))
                .collect(),
            peers: links
                .iter()
                .filter_map(|l| match l {
                    Link::Peer(p) => Some((p.name().to_owned(), p.clone())),
                    _ => None,
                })
                .collect(),
            acceptor: acceptor_counters,
        };
        Ok(Gateway {
            stats,
            activity,
            first_activity: Mutex::new(Some(first_activity)),
            store,
            nodes,
            stop,
            tasks,
            links,
            view,
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

    /// What the status page, the JSON API and the metrics read.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The store (queue depths, status).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every mesh node the radios heard (names, presence, what direct messages wait for).
    pub fn nodes(&self) -> &Arc<NodeDirectory> {
        &self.nodes
    }

    /// Connections refused for a key: inbound ones proving a key no `[[peer]]` lists, and
    /// dials where the neighbour presented another key than configured or refused ours. Read
    /// from the adapters' own counters, so nothing counts a refusal twice.
    pub fn refused(&self) -> u64 {
        let inbound = self
            .view
            .acceptor
            .as_ref()
            .map_or(0, |c| PeerCounters::get(&c.unknown_keys));
        let dialled: u64 = self
            .links
            .iter()
            .filter_map(|l| match l {
                Link::Peer(p) => Some(PeerCounters::get(&p.counters().refusals)),
                _ => None,
            })
            .sum();
        inbound + dialled
    }

    /// Messages waiting, over all destinations.
    pub async fn queued(&self) -> u64 {
        self.store
            .depths()
            .await
            .map(|d| d.iter().map(|d| d.count).sum())
            .unwrap_or(0)
    }

    /// Stops relaying: workers finish and confirm what is in flight, links close, ingest
    /// commits what it holds, the store closes. Nothing queued is lost; it is delivered after
    /// the next start.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut tasks = self.tasks;
        // Workers end once what they had in flight is answered; links answer or fail it.
        for link in &self.links {
            match link {
                Link::Radio(r) => r.shutdown().await,
                Link::Mqtt(m) => m.shutdown().await,
                Link::Xmpp(x) => x.shutdown().await,
                Link::Peer(p) => p.shutdown().await,
            }
        }
        for t in tasks.drain(..) {
            let _ = t.await;
        }
        self.store.close().await;
    }
}

/// How a configured radio is attached.
fn attachment(r: &RadioSection) -> Attachment {
    match (&r.tcp, &r.serial) {
        (Some(addr), _) => Attachment::Tcp(addr.clone()),
        (None, Some(path)) => Attachment::Serial {
            path: path.clone(),
            baud: r.baud,
        },
        // Validation refuses a radio without a connection; keep the type total anyway.
        (None, None) => Attachment::Tcp(String::new()),
    }
}

/// A radio's governor, holding the airtime the store remembers for the current window, so a
/// restart (or a crash loop) never grants a fresh budget.
async fn governor_with_history(
    config: &Config,
    r: &RadioSection,
    store: &Store,
) -> Result<Governor, StoreError> {
    let limits = config.governor(r);
    let window = limits.window;
    let mut governor = Governor::new(limits);
    let now = now_ms();
    let now_instant = Instant::now();
    let since = now.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    for (at, airtime) in store.airtime_since(&r.name, since).await? {
        // A record from the future (the clock went back) counts as just now: conservative.
        let ago = Duration::from_millis(u64::try_from(now.saturating_sub(at)).unwrap_or(0));
        let instant = now_instant.checked_sub(ago).unwrap_or(now_instant);
        governor.record(airtime, instant);
    }
    Ok(governor)
}

/// Queues in the store for destinations the configuration no longer has (a renamed radio):
/// said at start, and kept.
async fn report_orphan_queues(store: &Store, names: &[&str]) {
    let Ok(queues) = store.queues().await else {
        return;
    };
    for q in queues
        .iter()
        .filter(|q| !names.contains(&q.destination.as_str()))
    {
        let age = q
            .oldest
            .map(|t| format!("{} min", now_ms().saturating_sub(t) / 60_000))
            .unwrap_or_else(|| "?".into());
        warn!(destination = %q.destination, queued = q.count, oldest = %age,
              "the store holds a queue for a destination the configuration no longer has; it is kept: restore that name to deliver it");
    }
}

/// The MQTT link settings of one (validated) section.
fn mqtt_config(config: &Config, m: &MqttSection, subscriptions: Vec<String>) -> mqtt::MqttConfig {
    let (host, port) = m
        .address
        .rsplit_once(':')
        .map(|(h, p)| (h.trim_start_matches('[').trim_end_matches(']'), p))
        .unwrap_or((m.address.as_str(), "1883"));
    let mut link = mqtt::MqttConfig::new(
        m.name.clone(),
        host,
        port.parse().unwrap_or(1883),
        config.mqtt_client_id(m),
    );
    link.username = m.username.clone();
    link.password = m.password.as_ref().map(|p| p.expose().to_owned());
    link.tls = m.tls.as_ref().map(|t| mqtt::TlsSettings {
        ca_file: t.ca_file.clone(),
    });
    link.subscriptions = subscriptions;
    link
}

/// How often contacts' status lines ("heard 4 min ago") are brought up to date.
const CONTACTS_EVERY: Duration = Duration::from_secs(60);

/// Keeps an XMPP link's contacts (one per mesh node) in step with the node directory: every
/// node at start, each change as it happens, and each status line whose words moved on
/// ("heard 4 min ago" → "5 min ago", available → away) once a minute. A line that did not
/// change is not sent again, so a quiet mesh costs the server nothing.
async fn contacts(xmpp: XmppHandle, nodes: Arc<NodeDirectory>, mut stop: watch::Receiver<bool>) {
    let mut changes = nodes.subscribe();
    let mut shown: HashMap<mesh_core::NodeId, xmpp::Contact> = HashMap::new();
    let mut show = |node: &crate::nodes::Node, now: Instant| {
        let view = crate::xmpp::contact(node, now);
        if shown.get(&node.id) != Some(&view) {
            xmpp.set_contact(view.clone());
            shown.insert(node.id, view);
        }
    };
    let mut tick = tokio::time::interval(CONTACTS_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                let now = Instant::now();
                for node in nodes.snapshot() {
                    show(&node, now);
                }
            }
            change = changes.recv() => match change {
                Ok(change) => show(&change.node, Instant::now()),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let now = Instant::now();
                    for node in nodes.snapshot() {
                        show(&node, now);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// The XMPP link settings of one (validated) section.
fn xmpp_config(x: &XmppSection) -> xmpp::XmppConfig {
    let mut link = xmpp::XmppConfig::new(
        x.name.clone(),
        x.server.clone(),
        x.domain.clone(),
        x.secret
            .as_ref()
            .map(|s| s.expose().to_owned())
            .unwrap_or_default(),
        x.rooms.clone(),
    );
    link.bridge_nick = x.bridge_nick.clone();
    link
}
