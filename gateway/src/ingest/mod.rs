//! Ingest: what every endpoint hears goes through the router into the store, here. One task
//! per endpoint ([`radio`], [`mqtt`]) reads its link's events, decodes what its kind needs
//! decoding, and hands packets to the shared [`Ingest`]: routed at once (pure), submitted to
//! the group-commit writer without waiting for the commit, and finished in order when the
//! commit is on disk: wake the destinations' workers, count, announce, and fire the upstream
//! acknowledgement (an MQTT PUBACK) only then.
//!
//! A link's read loop therefore never waits on an fsync: a task keeps up to [`MAX_PENDING`]
//! packets in the writer's hands and only stops reading past that, when the disk truly lags.

pub mod downlink;
pub mod mqtt;
pub mod peer;
pub mod radio;
pub mod xmpp;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use mesh_core::{Class, NodeId, PacketId};
use tokio::sync::{Notify, broadcast};
use tracing::warn;

use crate::activity::Activity;
use crate::failpoint::{self, CrashPoint};
use crate::people::People;
use crate::router::{Decision, Heard, Router};
use crate::stats::Stats;
use crate::store::{Accepted, Inbound, Millis, StoreError, Writer};

/// Packets one endpoint may have waiting for their commit before its task stops reading.
pub const MAX_PENDING: usize = 256;

/// Our own radios as their handshakes describe them: an MQTT envelope claiming to come from
/// one of them is a spoof or a loop, and a tool's JSON `sendtext` names one by its node.
#[derive(Debug, Default)]
pub struct LocalNodes(RwLock<HashMap<NodeId, LocalRadio>>);

/// One of our radios, by its node id.
#[derive(Debug, Clone)]
pub struct LocalRadio {
    /// Its endpoint name.
    pub endpoint: String,
    /// Its channel names, by index (`None` for a disabled slot).
    pub channels: Vec<Option<String>>,
}

impl LocalNodes {
    /// A radio said it is `node`.
    pub fn insert(&self, node: NodeId, radio: LocalRadio) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, radio);
    }

    /// The name of the primary channel (index 0) of radio endpoint `endpoint`, once its
    /// handshake said it: the channel direct messages to its mesh go on.
    pub fn primary_channel(&self, endpoint: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|r| r.endpoint == endpoint)
            .and_then(|r| r.channels.first().cloned().flatten())
    }

    /// Whether `node` is one of our radios.
    pub fn contains(&self, node: NodeId) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&node)
    }

    /// The radio that is `node`, if it is one of ours.
    pub fn get(&self, node: NodeId) -> Option<LocalRadio> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .cloned()
    }
}

/// What every endpoint's ingest task shares.
pub struct Ingest {
    /// Routing decisions and channel keys.
    pub router: Arc<Router>,
    /// Group commits into the store.
    writer: Writer,
    /// Each destination's bell, rung after a commit queued rows for it.
    wakes: HashMap<String, Arc<Notify>>,
    /// Our radios' node ids.
    pub local_nodes: LocalNodes,
    /// Where arrivals are announced.
    pub activity: broadcast::Sender<Activity>,
    /// Shared counters.
    pub stats: Arc<Stats>,
    /// XMPP users' virtual nodes: packets addressed to one go to its XMPP endpoint.
    pub people: Arc<People>,
    /// The radio endpoints' names, in configuration order.
    pub radios: Vec<String>,
}

/// A packet handed to the writer, with what to report once its commit is done.
pub struct Submitted {
    /// Sender.
    from: NodeId,
    /// Packet id.
    id: PacketId,
    /// Endpoint it was heard on.
    source: String,
    /// Channel it was heard on.
    channel: String,
    /// Where it is queued for.
    destinations: Vec<String>,
    /// Its class.
    class: Class,
    /// When ingest had it, for the commit latency.
    arrived: Instant,
}

/// A commit's answer for a submitted item, or nothing for an item that was not to be stored.
pub type Finished = Option<(Submitted, Result<Accepted, StoreError>)>;

/// The end of one ingested item, in arrival order, with the upstream acknowledgement it
/// carries.
pub type Done<A> = (Finished, A);

/// One endpoint's items between its link and the disk, finished in the order they came.
pub struct Pipeline<A> {
    /// Commits in progress (and items that needed none), oldest first.
    queue: FuturesOrdered<BoxFuture<'static, Done<A>>>,
}

impl<A: Send + 'static> Default for Pipeline<A> {
    fn default() -> Self {
        Pipeline {
            queue: FuturesOrdered::new(),
        }
    }
}

impl<A: Send + 'static> Pipeline<A> {
    /// Whether the task may read more from its link.
    pub fn has_room(&self) -> bool {
        self.queue.len() < MAX_PENDING
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// An item that is not stored (dropped, ignored): it finishes in its turn, so its
    /// acknowledgement keeps the order of arrival.
    pub fn skip(&mut self, ack: A) {
        self.queue
            .push_back(futures_util::future::ready((None, ack)).boxed());
    }

    /// The next finished item, oldest first; pending forever while empty (for `select!`).
    pub async fn next(&mut self) -> Done<A> {
        match self.queue.next().await {
            Some(done) => done,
            None => std::future::pending().await,
        }
    }
}

impl Ingest {
    /// Something an ingress of `source` will not pass on, for `reason`: counted and told to
    /// whoever follows the gateway (the terminal shows the first of each kind).
    pub fn dropped(&self, source: &str, reason: &'static str, from: Option<NodeId>) {
        self.stats.dropped(source, reason);
        let _ = self.activity.send(Activity::Dropped {
            source: source.to_owned(),
            reason,
            from,
        });
    }

    /// The shared ingest state.
    pub fn new(
        router: Arc<Router>,
        writer: Writer,
        wakes: HashMap<String, Arc<Notify>>,
        activity: broadcast::Sender<Activity>,
        stats: Arc<Stats>,
        people: Arc<People>,
        radios: Vec<String>,
    ) -> Ingest {
        Ingest {
            router,
            writer,
            wakes,
            local_nodes: LocalNodes::default(),
            activity,
            stats,
            people,
            radios,
        }
    }

    /// Routes one heard packet and, when it is to be queued, hands it to the writer as the
    /// next item of `pipeline`, carrying `ack` (what is not to be queued finishes in its turn
    /// all the same, so acknowledgements keep the order of arrival).
    pub fn heard<A: Send + 'static>(
        &self,
        heard: Heard<'_>,
        now: Millis,
        pipeline: &mut Pipeline<A>,
        ack: A,
    ) {
        let decision = self.router.route(heard, now);
        if let Decision::Ignore(why) = decision
            && why.is_abuse()
        {
            // Every ingress the same way: counted by reason and told once, not only on MQTT.
            self.dropped(heard.source, why.as_str(), Some(heard.packet.from()));
        }
        self.queue(decision, now, pipeline, ack)
    }

    /// Carries out a routing decision for the next item of `pipeline`: submits what is to be
    /// queued, lets the rest finish in its turn.
    pub fn queue<A: Send + 'static>(
        &self,
        decision: Decision,
        now: Millis,
        pipeline: &mut Pipeline<A>,
        ack: A,
    ) {
        let Decision::Relay(inbound) = decision else {
            pipeline.skip(ack);
            return;
        };
        let submitted = Submitted {
            from: inbound.from,
            id: inbound.id,
            source: inbound.source.clone(),
            channel: inbound.channel.clone(),
            destinations: inbound
                .deliveries
                .iter()
                .map(|d| d.destination.clone())
                .collect(),
            class: inbound.class,
            arrived: Instant::now(),
        };
        failpoint::hit(CrashPoint::AcceptBeforeCommit);
        let commit = self.submit(inbound, now);
        pipeline.queue.push_back(
            async move {
                let result = commit.await;
                (Some((submitted, result)), ack)
            }
            .boxed(),
        );
    }

    /// Hands an item to the group-commit writer at once, so items enter its queue in the
    /// order they were heard; the future resolves once its batch is on disk. The writer's
    /// queue holds more than every endpoint's [`MAX_PENDING`] together, so it is full only
    /// when the disk has fallen far behind: the item then waits for room instead.
    fn submit(
        &self,
        inbound: Inbound,
        now: Millis,
    ) -> BoxFuture<'static, Result<Accepted, StoreError>> {
        match self.writer.submit(inbound.clone(), now) {
            Ok(pending) => pending.boxed(),
            Err(StoreError::Busy { .. }) => {
                let writer = self.writer.clone();
                async move { writer.accept(inbound, now).await }.boxed()
            }
            Err(e) => futures_util::future::ready(Err(e)).boxed(),
        }
    }

    /// Reports a finished item: counts, announces and wakes. Returns whether it is stored (or
    /// was already), i.e. whether an upstream acknowledgement may be sent.
    pub fn finish(&self, done: Finished) -> bool {
        let Some((s, result)) = done else {
            return true;
        };
        self.stats.commit_latency.record(s.arrived.elapsed());
        match result {
            Ok(Accepted::Duplicate) => {
                Stats::add(&self.stats.duplicates, 1);
                let _ = self.activity.send(Activity::Duplicate {
                    from: s.from,
                    id: s.id,
                    source: s.source,
                });
                true
            }
            Ok(Accepted::New { refused, evicted }) => {
                Stats::add(&self.stats.accepted, 1);
                if let Some(e) = self.stats.endpoint(&s.source) {
                    Stats::add(&e.heard, 1);
                    Stats::add(&e.heard_by_class[usize::from(s.class.rank())], 1);
                }
                for d in refused {
                    Stats::add(&self.stats.overflowed, 1);
                    warn!(destination = %d, "queue full: message refused");
                    let _ = self.activity.send(Activity::Overflow {
                        destination: d,
                        class: None,
                    });
                }
                for (d, class) in evicted {
                    Stats::add(&self.stats.overflowed, 1);
                    warn!(destination = %d, %class, "queue full: oldest less urgent message dropped");
                    let _ = self.activity.send(Activity::Overflow {
                        destination: d,
                        class: Some(class),
                    });
                }
                for d in &s.destinations {
                    if let Some(bell) = self.wakes.get(d) {
                        bell.notify_one();
                    }
                }
                let _ = self.activity.send(Activity::Queued {
                    from: s.from,
                    id: s.id,
                    source: s.source,
                    channel: s.channel,
                    destinations: s.destinations,
                    class: s.class,
                });
                true
            }
            Err(e) => {
                // Not accepted: nothing was promised downstream, and no ack goes upstream.
                Stats::add(&self.stats.store_errors, 1);
                warn!(error = %e, from = %s.from, id = %s.id, source = %s.source,
                      "cannot store a received message; it is not relayed");
                false
            }
        }
    }
}
