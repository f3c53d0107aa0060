//! Archipel's links to the outside worlds. One module per world; no module imports another
//! (they share only [`codec`] plumbing and `mesh-core` types):
//! - [`radio`]: a Meshtastic device over its stream API (USB serial or TCP 4403);
//! - [`sim`]: a simulated RF world whose attached radios speak that same API.
#![warn(missing_docs)]

pub mod codec;
pub mod radio;
pub mod sim;
