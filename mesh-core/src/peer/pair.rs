//! A test harness in the spirit of quinn's `Pair`: two sessions joined by in-memory byte
//! queues, a virtual clock, and owners that behave like the gateway's outbox and store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::frame::{self, Data, Frame};
use super::session::{CloseReason, Event, Incoming, Outgoing, Session, SessionConfig};
use crate::node::NodeId;

/// One gateway: its session plus the outbox and store the session serves.
pub(crate) struct Side {
    /// The engine under test.
    pub session: Session,
    /// Our gateway id, for new sessions after a reconnect.
    pub id: NodeId,
    /// The channels we announce.
    pub channels: Vec<String>,
    /// The configuration, for new sessions after a reconnect.
    pub config: SessionConfig,
    /// Rows not acknowledged by the peer, by store key.
    pub outbox: BTreeMap<u64, Outgoing>,
    /// Keys offered on the current session (each row once per session).
    pub offered: BTreeSet<u64>,
    /// Every key offered on any session, in order, with the stamp of the offer.
    pub offer_log: Vec<(u64, u64)>,
    /// The stamp at which each key was acknowledged: an offer stamped later is a resend of
    /// acknowledged data.
    pub acked_at: HashMap<u64, u64>,
    /// Counts offers and acknowledgements, ordering them.
    stamp: u64,
    /// Offer rows from the outbox whenever the session has room.
    pub auto_offer: bool,
    /// Commit delivered items at once (otherwise they wait in `uncommitted`).
    pub auto_commit: bool,
    /// Delivered and not yet committed.
    pub uncommitted: Vec<Incoming>,
    /// Committed items, first copies only.
    pub store: Vec<Incoming>,
    /// Packets stored, the receiver's seen-set.
    pub seen: HashSet<Vec<u8>>,
    /// Repeats the seen-set dropped.
    pub repeats: usize,
    /// Keys the peer acknowledged, in order.
    pub acknowledged: Vec<u64>,
    /// What `Event::Peer` said.
    pub peer: Option<(NodeId, Vec<String>, u16)>,
    /// Every `Event::Closed`, to check there is exactly one per session.
    pub closed: Vec<CloseReason>,
    /// Every `Transmit`, in order.
    pub transmits: Vec<Vec<u8>>,
}

impl Side {
    pub fn new(id: u32, channels: &[&str], config: SessionConfig, now: Instant) -> Side {
        let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        let id = NodeId::new(id);
        Side {
            session: Session::new(id, channels.clone(), config.clone(), now).unwrap(),
            id,
            channels,
            config,
            outbox: BTreeMap::new(),
            offered: BTreeSet::new(),
            offer_log: Vec::new(),
            acked_at: HashMap::new(),
            stamp: 0,
            auto_offer: true,
            auto_commit: true,
            uncommitted: Vec::new(),
            store: Vec::new(),
            seen: HashSet::new(),
            repeats: 0,
            acknowledged: Vec::new(),
            peer: None,
            closed: Vec::new(),
            transmits: Vec::new(),
        }
    }

    /// Puts rows `keys` into the outbox.
    pub fn queue(&mut self, keys: impl IntoIterator<Item = u64>) {
        for k in keys {
            self.outbox.insert(k, item(k));
        }
    }

    /// Commits everything delivered so far.
    pub fn commit_all(&mut self, now: Instant) {
        self.commit_first(self.uncommitted.len(), now);
    }

    /// Stores the first `n` items delivered and not committed, then reports them committed.
    pub fn commit_first(&mut self, n: usize, now: Instant) {
        let n = n.min(self.uncommitted.len());
        let Some(last) = self.uncommitted.get(n.wrapping_sub(1)).map(|i| i.seq) else {
            return;
        };
        for i in self.uncommitted.drain(..n).collect::<Vec<_>>() {
            self.store_item(i);
        }
        self.session.committed(last, now);
    }

    /// The keys of the offers made after the first `skip`.
    pub fn offered_after(&self, skip: usize) -> Vec<u64> {
        self.offer_log[skip..].iter().map(|(k, _)| *k).collect()
    }

    /// Checks that no key was offered after its acknowledgement.
    pub fn assert_nothing_acknowledged_was_offered_again(&self) {
        for (k, at) in &self.offer_log {
            if let Some(acked) = self.acked_at.get(k) {
                assert!(
                    acked > at,
                    "key {k} offered again after its acknowledgement"
                );
            }
        }
    }

    fn store_item(&mut self, i: Incoming) {
        if self.seen.insert(i.packet.clone()) {
            self.store.push(i);
        } else {
            self.repeats += 1;
        }
    }

    /// Offers outbox rows not yet offered on this session while there is room.
    fn fill(&mut self, now: Instant) {
        if !self.auto_offer {
            return;
        }
        let keys: Vec<u64> = self
            .outbox
            .keys()
            .filter(|k| !self.offered.contains(k))
            .take(self.session.room())
            .copied()
            .collect();
        for k in keys {
            let row = self.outbox[&k].clone();
            match self.session.offer(row, now) {
                Ok(()) => {
                    self.offered.insert(k);
                    self.stamp += 1;
                    self.offer_log.push((k, self.stamp));
                }
                Err(_) => break,
            }
        }
    }

    /// Handles every waiting event; returns the bytes to write.
    fn drain(&mut self, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(ev) = self.session.poll_event() {
            match ev {
                Event::Transmit(b) => {
                    out.extend_from_slice(&b);
                    self.transmits.push(b);
                }
                Event::Peer {
                    id,
                    channels,
                    version,
                } => self.peer = Some((id, channels, version)),
                Event::Deliver(items) => {
                    self.uncommitted.extend(items);
                    if self.auto_commit {
                        self.commit_all(now);
                    }
                }
                Event::Acknowledged(keys) => {
                    for k in keys {
                        assert!(
                            self.outbox.remove(&k).is_some(),
                            "key {k} acknowledged twice"
                        );
                        self.acknowledged.push(k);
                        self.stamp += 1;
                        self.acked_at.insert(k, self.stamp);
                    }
                }
                Event::Closed(reason) => self.closed.push(reason),
            }
        }
        out
    }

    /// A new connection: the old session is gone, its unacknowledged rows stay.
    pub fn reconnect(&mut self, now: Instant) {
        self.session.on_eof();
        let _ = self.drain(now);
        self.uncommitted.clear();
        self.offered.clear();
        self.session =
            Session::new(self.id, self.channels.clone(), self.config.clone(), now).unwrap();
    }
}

/// Two sides, the bytes between them and a virtual clock.
pub(crate) struct Pair {
    pub a: Side,
    pub b: Side,
    pub now: Instant,
    /// Bytes written by A, not yet read by B.
    pub a_to_b: Vec<u8>,
    /// Bytes written by B, not yet read by A.
    pub b_to_a: Vec<u8>,
    /// Splits reads at random points when set.
    pub split: Option<SmallRng>,
    /// Drops everything B writes (a dead or unreachable peer).
    pub blackhole_b: bool,
}

pub(crate) fn config() -> SessionConfig {
    SessionConfig::default()
}

impl Pair {
    pub fn new() -> Pair {
        Pair::with(config(), config())
    }

    pub fn with(a: SessionConfig, b: SessionConfig) -> Pair {
        let now = Instant::now();
        Pair {
            a: Side::new(0xaaaa_0001, &["LongFast", "PKI"], a, now),
            b: Side::new(0xbbbb_0002, &["LongFast"], b, now),
            now,
            a_to_b: Vec::new(),
            b_to_a: Vec::new(),
            split: None,
            blackhole_b: false,
        }
    }

    pub fn split_randomly(&mut self, seed: u64) {
        self.split = Some(SmallRng::seed_from_u64(seed));
    }

    /// Exchanges events and bytes until both sides are quiet, without moving the clock.
    pub fn pump(&mut self) {
        loop {
            self.a.fill(self.now);
            self.b.fill(self.now);
            let from_a = self.a.drain(self.now);
            let from_b = self.b.drain(self.now);
            self.a_to_b.extend(from_a);
            if !self.blackhole_b {
                self.b_to_a.extend(from_b);
            }
            if self.a_to_b.is_empty() && self.b_to_a.is_empty() {
                break;
            }
            let to_b = std::mem::take(&mut self.a_to_b);
            let to_a = std::mem::take(&mut self.b_to_a);
            self.feed(false, &to_b);
            self.feed(true, &to_a);
        }
    }

    /// Hands `bytes` to A (`to_a`) or B, in random pieces when splitting.
    fn feed(&mut self, to_a: bool, bytes: &[u8]) {
        let now = self.now;
        let side = if to_a { &mut self.a } else { &mut self.b };
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = match &mut self.split {
                Some(rng) => rng.random_range(1..=rest.len().min(40)),
                None => rest.len(),
            };
            side.session.on_bytes(&rest[..n], now);
            rest = &rest[n..];
        }
    }

    /// Moves the clock to `now + by`, ticking both sides at every deadline on the way.
    pub fn run_for(&mut self, by: Duration) {
        let end = self.now + by;
        self.pump();
        loop {
            let next = [
                self.a.session.next_deadline(),
                self.b.session.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= end => self.now = self.now.max(t),
                _ => break,
            }
            self.a.session.tick(self.now);
            self.b.session.tick(self.now);
            self.pump();
        }
        self.now = end;
        self.a.session.tick(self.now);
        self.b.session.tick(self.now);
        self.pump();
    }

    /// Drops the connection (bytes in flight are lost) and opens a new one.
    pub fn reconnect(&mut self) {
        self.a_to_b.clear();
        self.b_to_a.clear();
        self.a.reconnect(self.now);
        self.b.reconnect(self.now);
        self.pump();
    }
}

/// The outbox row with store key `key`: a 60-byte packet unique to it.
pub(crate) fn item(key: u64) -> Outgoing {
    let mut packet = key.to_le_bytes().to_vec();
    packet.resize(60, (key % 251) as u8);
    Outgoing {
        key,
        channel: if key.is_multiple_of(5) {
            "MediumFast"
        } else {
            "LongFast"
        }
        .into(),
        origin: NodeId::new(0x1000 + (key % 3) as u32),
        hops: (key % 4) as u8,
        packet,
    }
}

/// The key an `item` packet was made from.
pub(crate) fn key_of(packet: &[u8]) -> u64 {
    u64::from_le_bytes(packet[..8].try_into().unwrap())
}

/// Milliseconds.
pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The frames in a run of written bytes.
pub(crate) fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (f, n) = frame::decode(&bytes[at..]).unwrap();
        out.push(f);
        at += n;
    }
    out
}

pub(crate) fn data_frames(transmits: &[Vec<u8>]) -> Vec<Data> {
    transmits
        .iter()
        .flat_map(|t| frames(t))
        .filter_map(|f| match f {
            Frame::Data(d) => Some(d),
            _ => None,
        })
        .collect()
}

pub(crate) fn acks(transmits: &[Vec<u8>]) -> Vec<u64> {
    transmits
        .iter()
        .flat_map(|t| frames(t))
        .filter_map(|f| match f {
            Frame::Ack { up_to } => Some(up_to),
            _ => None,
        })
        .collect()
}
