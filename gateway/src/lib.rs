//! The gateway: configuration, the router, the durable store, and the workers that drain it.
//!
//! One message's way, module by module (a radio to MQTT, say):
//! 1. an adapter (`archipel_adapters::radio`) hands over a received packet;
//! 2. [`ingest`] decodes it for its kind, tells the [`nodes`] directory who was heard, and
//!    asks the [`router`] where it goes (deduplication is the store's seen-set, in the same
//!    transaction);
//! 3. [`store`] commits the message once and one delivery per destination, in a group commit;
//! 4. the destination's [`worker`] drains its queue through its [`sink`] (paced by the airtime
//!    governor for a radio), under the pure [`drain`] policy, and a row goes only when the far
//!    side confirmed it.
//!
//! [`xmpp`] holds what the XMPP endpoint decides without a link: whether a text fits the mesh,
//! the names on both sides, what a node's contact shows, and each user's rate.
//! XMPP users speak on the mesh as virtual nodes ([`people`]).
#![warn(missing_docs)]

pub mod activity;
pub mod app;
pub mod clock;
pub mod config;
pub mod drain;
pub mod escape;
pub mod failpoint;
pub mod http;
pub mod ingest;
mod maintain;
pub mod nodes;
pub mod people;
pub mod ratelimit;
pub mod router;
pub mod sink;
pub mod stats;
pub mod status;
pub mod store;
pub mod worker;
pub mod xmpp;
