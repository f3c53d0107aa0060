//! The gateway: configuration, the router, the durable store, and the workers that drain it.
//!
//! One message's way, module by module:
//! 1. an adapter (`archipel_adapters::radio`) hands over a received packet;
//! 2. [`router`] deduplicates it on the mesh's own (from, id) and applies the routes;
//! 3. [`store`] commits the seen-set entry and one delivery per destination in one transaction;
//! 4. a destination worker drains its queue through its adapter, paced by the airtime governor,
//!    and the row goes only when the far side confirmed it.
#![warn(missing_docs)]

pub mod app;
pub mod config;
pub mod failpoint;
pub mod router;
pub mod store;
pub mod worker;
