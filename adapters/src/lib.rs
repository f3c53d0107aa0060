//! Archipel's links to the outside worlds. One module per world; no module imports another
//! (they share only [`codec`] plumbing and `mesh-core` types):
//! - [`radio`]: a Meshtastic device over its stream API (USB serial or TCP 4403);
//! - [`mqtt`]: an MQTT broker (QoS 1, persistent session, acknowledged after commit);
//! - [`sim`]: a simulated RF world whose attached radios speak that same API;
//! - [`xmpp`]: an XMPP server, as a XEP-0114 component (rooms, contacts);
//! - [`peer`]: other gateways, over TLS pinned by public key (identity and transport).
#![warn(missing_docs)]

pub mod codec;
pub mod mqtt;
pub mod peer;
pub mod radio;
pub mod sim;
pub mod xmpp;
