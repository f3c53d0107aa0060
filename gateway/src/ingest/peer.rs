//! A neighbour hub's ingest task: the items its link delivers, each the packet as heard on the
//! far hub's mesh with its channel's name, decrypted with that channel's key here, routed like
//! anything heard (deduplicated on (from, id), so a message heard on two hubs' radios of one
//! mesh, or coming round a triangle, is stored once), and acknowledged to the peer only once
//! committed: the link is told `committed(connection, seq)` in arrival order.

use std::sync::Arc;

use archipel_adapters::peer::{PeerEvent, PeerHandle};
use mesh_core::Packet;
use tokio::sync::mpsc;
use tracing::{Instrument, info_span, warn};

use super::{Ingest, Pipeline};
use crate::activity::Activity;
use crate::app::now_ms;
use crate::router::{Federated, Heard};

/// What finishing an item acknowledges: its connection and sequence number.
type Ack = (u64, u64);

/// One peer's ingest.
pub struct PeerIngest {
    /// The `[[peer]]` name: the source of what it delivers.
    name: String,
    /// The link's events.
    events: mpsc::Receiver<PeerEvent>,
    /// The link, told what is committed.
    peer: PeerHandle,
    /// Shared routing and commit machinery.
    ingest: Arc<Ingest>,
}

impl PeerIngest {
    /// The ingest task of peer `name`.
    pub fn new(
        name: String,
        events: mpsc::Receiver<PeerEvent>,
        peer: PeerHandle,
        ingest: Arc<Ingest>,
    ) -> PeerIngest {
        PeerIngest {
            name,
            events,
            peer,
            ingest,
        }
    }

    /// Runs until the link's event channel closes (the link stopped).
    pub async fn run(self) {
        let span = info_span!("ingest", peer = %self.name);
        self.drive().instrument(span).await;
    }

    async fn drive(mut self) {
        let mut pipeline: Pipeline<Ack> = Pipeline::default();
        loop {
            tokio::select! {
                ev = self.events.recv(), if pipeline.has_room() => match ev {
                    Some(ev) => self.on_event(ev, &mut pipeline),
                    None => break,
                },
                (done, ack) = pipeline.next() => self.finish(done, ack),
            }
        }
        while !pipeline.is_empty() {
            let (done, ack) = pipeline.next().await;
            self.finish(done, ack);
        }
    }

    /// A finished item: acknowledged to the peer only when stored (or already stored, or not
    /// to be stored at all).
    fn finish(&self, done: super::Finished, (connection, seq): Ack) {
        if self.ingest.finish(done) {
            self.peer.committed(connection, seq);
        }
    }

    fn on_event(&mut self, ev: PeerEvent, pipeline: &mut Pipeline<Ack>) {
        match ev {
            PeerEvent::Up { gateway, channels } => {
                let _ = self.ingest.activity.send(Activity::EndpointUp {
                    endpoint: self.name.clone(),
                    kind: "peer",
                    detail: Some(format!("{gateway}, offers {}", channels.join(", "))),
                });
            }
            PeerEvent::Down { reason } => {
                let _ = self.ingest.activity.send(Activity::EndpointDown {
                    endpoint: self.name.clone(),
                    kind: "peer",
                    reason,
                });
            }
            PeerEvent::Problem(text) => {
                warn!("peer {}: {text}", self.name);
                let _ = self.ingest.activity.send(Activity::Problem {
                    endpoint: self.name.clone(),
                    text,
                });
            }
            PeerEvent::Deliver { connection, items } => {
                for item in items {
                    let ack = (connection, item.seq);
                    let decoded = Packet::decode(item.packet.clone().into())
                        .ok()
                        .and_then(|p| self.ingest.router.decrypt(&item.channel, &p));
                    let Some(packet) = decoded else {
                        // A channel this hub does not hold, or bytes that are not a packet:
                        // counted, and acknowledged (keeping it would not make it readable).
                        self.ingest.dropped(&self.name, "undecryptable", None);
                        pipeline.skip(ack);
                        continue;
                    };
                    let heard = Heard {
                        source: &self.name,
                        channel: &item.channel,
                        packet: &packet,
                        local: None,
                        federated: Some(Federated {
                            origin: item.origin,
                            hops: item.hops,
                        }),
                    };
                    // Too many hubs, admin, forged hop fields: counted by `heard`, and
                    // acknowledged like any item this hub will not keep (the far hub must not
                    // offer it again).
                    self.ingest.heard(heard, now_ms(), pipeline, ack);
                }
            }
        }
    }
}
