//! The federation session (`peer::session::Session`) driven by a peer after a valid handshake:
//! fuzzed frames (well-formed ones built from the input, and raw bytes), cut at any point,
//! interleaved with the owner's calls (offer, committed, flush, close, end of stream) and with
//! time passing (`now` is input, monotonic as the gateway's clock is).
//!
//! Checked: the handshake opens the session; items are delivered with sequence numbers 1, 2,
//! 3… with none skipped or repeated; acknowledged store keys are the accepted offers, in offer
//! order, each once, and only once sent; at most one `Closed`, and nothing delivered or
//! acknowledged after it; every byte the session transmits parses as whole frames; a session
//! that is not closed always has a next deadline.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use mesh_core::NodeId;
use mesh_core::peer::frame::{self, CloseCode, Data, Definition, Frame, Hello, Item};
use mesh_core::peer::session::{Event, Outgoing, PROTOCOL_VERSION, Session, SessionConfig};

const CHANNELS: [&str; 3] = ["LongFast", "MediumSlow", "PKI"];

/// What the owner has seen so far, to check each event against.
struct Owner {
    session: Session,
    now: Instant,
    next_key: u64,
    offered: Vec<u64>,
    acked: usize,
    delivered: u64,
    closed: bool,
    transmitted: Vec<u8>,
    /// Items carried in the `Data` frames the session wrote.
    sent: usize,
}

impl Owner {
    fn drain(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Transmit(bytes) => self.transmitted.extend_from_slice(&bytes),
                Event::Peer { .. } => panic!("a second Peer event"),
                Event::Deliver(items) => {
                    assert!(!self.closed, "delivered after Closed");
                    assert!(!items.is_empty(), "an empty delivery");
                    for item in items {
                        self.delivered += 1;
                        assert_eq!(item.seq, self.delivered, "sequence numbers skip or repeat");
                        assert!(!item.packet.is_empty());
                    }
                }
                Event::Acknowledged(keys) => {
                    assert!(!self.closed, "acknowledged after Closed");
                    let expected = &self.offered[self.acked..];
                    assert!(
                        expected.starts_with(&keys),
                        "acknowledged {keys:?}, expected a prefix of {expected:?}"
                    );
                    self.acked += keys.len();
                }
                Event::Closed(_) => {
                    assert!(!self.closed, "a second Closed");
                    self.closed = true;
                }
            }
        }
        assert_eq!(self.closed, self.session.is_closed());
        assert_eq!(self.session.next_deadline().is_none(), self.closed);
        // Whatever was written so far is whole frames, each valid.
        let mut at = 0;
        while at < self.transmitted.len() {
            match frame::decode(&self.transmitted[at..]) {
                Ok((Frame::Data(data), n)) => {
                    self.sent += data.items.len();
                    at += n;
                }
                Ok((_, n)) => at += n,
                Err(e) => panic!("the session wrote a bad frame at byte {at}: {e}"),
            }
        }
        self.transmitted.clear();
        assert!(
            self.acked <= self.sent,
            "{} acknowledged, {} sent",
            self.acked,
            self.sent
        );
    }

    fn step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        match u.int_in_range(0..=9)? {
            0..=2 => {
                let mut bytes = Vec::new();
                if u.arbitrary()? {
                    let _ = frame::encode(&peer_frame(u, self.delivered)?, &mut bytes);
                } else {
                    let len = u.int_in_range(0..=64)?;
                    bytes.extend_from_slice(u.bytes(len)?);
                }
                // Cut in two reads, as TCP may.
                let cut = u.int_in_range(0..=bytes.len())?;
                self.session.on_bytes(&bytes[..cut], self.now);
                self.drain();
                self.session.on_bytes(&bytes[cut..], self.now);
            }
            3 => {
                let ms = u.int_in_range(0..=60_000)?;
                self.now += Duration::from_millis(ms);
                self.session.tick(self.now);
            }
            4 => {
                if let Some(deadline) = self.session.next_deadline() {
                    self.now = self.now.max(deadline);
                    self.session.tick(self.now);
                }
            }
            5 | 6 => {
                let key = self.next_key;
                self.next_key += 1;
                let len = u.int_in_range(1..=300)?;
                let item = Outgoing {
                    key,
                    channel: (*u.choose(&CHANNELS)?).to_owned(),
                    origin: NodeId::new(u.int_in_range(1..=4)?),
                    hops: u.int_in_range(0..=15)?,
                    packet: vec![0xa5; len],
                };
                if self.session.offer(item, self.now).is_ok() {
                    self.offered.push(key);
                }
            }
            7 => {
                let seq = if u.arbitrary()? {
                    u.arbitrary()?
                } else {
                    self.delivered
                };
                self.session.committed(seq, self.now);
            }
            8 => self.session.flush(self.now),
            _ => {
                if u.arbitrary()? {
                    self.session.on_eof();
                } else {
                    let text: String = u.arbitrary()?;
                    self.session.close(CloseCode::Normal, &text, self.now);
                }
            }
        }
        self.drain();
        Ok(())
    }
}

/// A well-formed frame a peer might send, mostly near what the session expects.
fn peer_frame(u: &mut Unstructured<'_>, delivered: u64) -> Result<Frame> {
    Ok(match u.int_in_range(0..=7)? {
        7 => Frame::Define(Definition::Node {
            index: u.int_in_range(0..=3)?,
            node: NodeId::new(u.arbitrary()?),
        }),
        0 => Frame::Define(Definition::Channel {
            index: u.int_in_range(0..=3)?,
            name: (*u.choose(&CHANNELS)?).to_owned(),
        }),
        1 => Frame::Define(Definition::Origin {
            index: u.int_in_range(0..=3)?,
            gateway: NodeId::new(u.arbitrary()?),
        }),
        2 | 3 => {
            let first = if u.ratio(7, 8)? {
                delivered + 1
            } else {
                u.arbitrary()?
            };
            let count = u.int_in_range(0..=4)?;
            let mut items = Vec::new();
            for _ in 0..count {
                let len = u.int_in_range(1..=64)?;
                items.push(Item {
                    channel: u.int_in_range(0..=2)?,
                    origin: u.int_in_range(0..=2)?,
                    hops: u.int_in_range(0..=15)?,
                    packet: u.bytes(len)?.to_vec(),
                    compact: u.arbitrary()?,
                });
            }
            Frame::Data(Data { first, items })
        }
        4 => Frame::Ack {
            up_to: if u.arbitrary()? {
                u.arbitrary()?
            } else {
                u.int_in_range(0..=64)?
            },
        },
        5 => Frame::Keepalive,
        _ => Frame::Close {
            code: CloseCode::Normal,
            text: u.arbitrary()?,
        },
    })
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let now = Instant::now();
    let config = SessionConfig {
        window_items: u.int_in_range(1..=64)?,
        window_bytes: u.int_in_range(1..=64 * 1024)?,
        ack_items: u.int_in_range(1..=16)?,
        ..SessionConfig::default()
    };
    let channels = vec![CHANNELS[0].to_owned()];
    let session = Session::new(NodeId::new(1), channels, config, now).expect("our Hello encodes");
    let hello = Hello {
        versions: vec![PROTOCOL_VERSION],
        gateway: NodeId::new(2),
        window_items: u.int_in_range(0..=128)?,
        window_bytes: u.arbitrary()?,
        dead_after_ms: u.arbitrary()?,
        channels: CHANNELS.iter().map(|c| c.to_string()).collect(),
    };
    let mut bytes = Vec::new();
    frame::encode(&Frame::Hello(hello), &mut bytes).expect("the peer's Hello encodes");
    let mut owner = Owner {
        session,
        now,
        next_key: 100,
        offered: Vec::new(),
        acked: 0,
        delivered: 0,
        closed: false,
        transmitted: Vec::new(),
        sent: 0,
    };
    owner.session.on_bytes(&bytes, now);
    assert!(
        owner.session.is_open(),
        "a valid Hello did not open the session"
    );
    assert!(matches!(
        owner.session.drain_events().last(),
        Some(Event::Peer { .. })
    ));
    while !u.is_empty() {
        owner.step(u)?;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
