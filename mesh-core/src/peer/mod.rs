//! The peer protocol: how two gateways carry their meshes' packets to each other over one
//! authenticated stream (TLS, set up by the adapter). Pure: no socket, no clock.
//!
//! - [`frame`]: the codec, `TYPE LEN BODY` with bounded sizes, incomplete kept apart from
//!   invalid, unknown types skipped;
//! - [`session`]: the engine for one connection: handshake, batching, flow control,
//!   acknowledgements after the owner's commit, keepalive and close.
//!
//! # The conversation
//!
//! Both sides send `Hello` as soon as the stream is up, without waiting for the other's (one
//! round trip less on a satellite link): versions, gateway id, the window it accepts, how
//! long it tolerates silence, the channels it offers. Each side picks the highest version
//! both list, so both pick the same; none in common ends the session with a `Close` saying
//! so. A `Hello` with eight channel names is under 150 bytes. The two sides are alike (no
//! dialer or listener role, no `Welcome`): which connection to keep when both dial is the
//! transport's decision, which closes the other with [`CloseCode::Replaced`].
//!
//! Then data flows both ways independently. Each direction has its own tables: a channel
//! name or an origin gateway crosses once per session (in `Hello` or a `Define`), then as a
//! one-byte index. Items carry the packet as heard, its channel, its origin and its hop
//! count. From version 2 the packet's header fields (sender, destination, id, hop counts,
//! the payload's keys) cross in the compact form of [`compact`], rebuilt byte for byte on
//! the far side; its payload is never touched (ciphertext does not compress, and compressing
//! a plaintext next to secrets inside TLS would leak through the lengths).
//!
//! # Delivery: commit before acknowledge, resume by re-offering
//!
//! Sequence numbers are per connection: dense, from 1. The receiver hands items out in
//! [`session::Event::Deliver`]; the owner stores them, then calls
//! [`session::Session::committed`], and only then does an `Ack` (cumulative, batched: after
//! `ack_items` items, half the window, or `ack_delay`) go back. The sender turns it into
//! [`session::Event::Acknowledged`] with the owner's store keys, and only then may the
//! outbox delete those rows.
//!
//! Nothing about a session survives it. After a reconnect the owner offers again every row
//! still in its outbox, that is every item not acknowledged: nothing acknowledged is sent
//! again (its row is gone), nothing unacknowledged is lost (its row is still there). The one
//! repeat is an item the receiver committed whose `Ack` was lost with the connection; the
//! receiver's seen-set (it keys packets by sender and id, not by sequence number) drops it.
//! This was chosen over exchanging a persisted position in the handshake: that would need
//! both stores to agree on one order of items across restarts and priorities, while the
//! seen-set is needed anyway for packets heard by two gateways' radios.
//!
//! # Flow control
//!
//! Each `Hello` advertises the receiver's window (items and packet bytes). A sender keeps at
//! most that much offered and unacknowledged ([`session::Session::room`] says how much more it
//! takes; a refused offer hands the item back), and the receiver closes the session if the
//! window is exceeded. Since acknowledgements follow commits, a slow store (an SD card)
//! slows the sender down to its pace instead of filling memory.
//!
//! # Compactness
//!
//! What one 60-byte packet costs on the wire at steady state, when the outbox has a backlog
//! (numbers from the defaults, checked by a test that drives two sessions and counts):
//!
//! | part                                   | bytes per item                                |
//! |----------------------------------------|-----------------------------------------------|
//! | item: head 1 + length 1 + packet 60    | 62                                            |
//! | `Data` header (≤ 14) per 264-item frame| 0.05                                          |
//! | TLS: 22 per record, one frame a record | 22 / 264 = 0.08                               |
//! | TCP/IP: 52 per 1,448-byte segment      | 52 × 62.1 / 1,448 = 2.23                      |
//! | TCP's own ACKs: 52 per two segments    | 26 × 62.1 / 1,448 = 1.12                      |
//! | our `Ack`: 5 + 22 + 52 per frame       | 79 / 264 = 0.30                               |
//! | total                                  | about 65.8 (the goal is at most 80)           |
//!
//! A 60-byte *text* is an 85-byte packet as Archipel writes it (87 with larger ids): 92.2 bytes
//! on the wire in version 1, 75.9 compacted in version 2 (the 256 senders of the test each
//! defined once per session; checked by the same test).
//!
//! A batch closes at 16,368 bytes of items so that a `Data` frame fits one 16 KiB TLS
//! record, or after a 2 ms linger; on a thin link the backlog fills batches anyway, and a
//! lone item pays a frame header, a record and a segment of its own (about 140 bytes) but
//! waits at most 2 ms.

mod bytes;
mod close;
pub mod compact;
#[cfg(test)]
mod compact_tests;
pub mod frame;
#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod pair;
mod recv;
mod send;
pub mod session;
#[cfg(test)]
mod session_tests;

pub use frame::{CloseCode, Frame, FrameError};
pub use send::{MAX_WINDOW_BYTES, MAX_WINDOW_ITEMS, OfferError};
pub use session::{
    CloseReason, Event, Incoming, Outgoing, PROTOCOL_VERSION, ProtocolError, Session,
    SessionConfig, State,
};
