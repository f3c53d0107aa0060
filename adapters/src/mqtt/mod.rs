//! An MQTT broker (3.1.1, through rumqttc), as a transport: topics and bytes, QoS 1, a
//! persistent session and manual acknowledgements. It knows nothing of Meshtastic (the
//! envelope, the topics and the JSON shape live in `mesh-core`).
//!
//! - [`config`]: the settings, checked before the link starts;
//! - [`state`]: the decisions without I/O (which PUBACK confirms which publish, what an error
//!   means) and the [`Lifecycle`];
//! - [`handle`]: the owner's side: [`MqttHandle`], [`MqttEvent`], [`spawn`];
//! - `link`: the task that owns rumqttc's event loop and reconnects with capped backoff.
//!
//! # Sending
//! [`MqttHandle::publish`] answers `Delivered` only on the broker's PUBACK for that very
//! publish (see [`state`] for how rumqttc's packet ids are matched to callers), so the gateway
//! can keep a window of dozens in flight and delete each outbox row on its own confirmation.
//! When the connection drops, every publish not yet confirmed is answered `Unreachable`; it may
//! have reached the broker anyway, and the outbox sends it again: at least once, never
//! `Delivered` early. rumqttc would itself retransmit its unacknowledged publishes on a resumed
//! session; the link clears that queue (and rumqttc's stale events) on every loss, so the
//! outbox is the only retry queue and memory stays bounded by `max_inflight`. While the link is
//! down, `publish` answers `Unreachable` at once. A publish MQTT cannot carry (wildcard or
//! empty topic, over `max_packet_size`) is `Rejected` without touching the connection. MQTT
//! 3.1.1 has no negative acknowledgement: a broker that drops a publish by access rule still
//! sends its PUBACK, so such a publish counts as delivered.
//!
//! # Receiving
//! Subscriptions are QoS 1 on a persistent session (`clean_session = false`, a stable client
//! id), re-subscribed whenever the broker has no session (and on the first connection of the
//! process, in case the config changed). Each message arrives as [`MqttEvent::Message`] with an
//! [`AckToken`]; [`MqttHandle::ack`] sends its PUBACK, which the gateway does only after its
//! store committed the message. A message never acknowledged (the gateway crashed, the
//! connection dropped) stays with the broker and is redelivered on the next session; an ack
//! that arrives after its connection dropped is discarded, because packet ids are per
//! connection, and the broker redelivers that message (the gateway's seen-set drops the
//! repeat).
//!
//! # Never blocking the loop
//! rumqttc sends keep-alives only while its event loop is polled, so the link never waits on
//! its owner: events go out with `try_send` on a channel of `event_capacity` (1024 by default),
//! and up to as many more are kept aside, in order, and moved over as the owner reads. What
//! bounds incoming QoS 1 flow is the broker: it has at most `max_inflight_messages` (Mosquitto:
//! 20 by default) messages unacknowledged per client and holds the rest for us, and the owner
//! acknowledges only what it took. So with `event_capacity` above the broker's window, messages
//! cannot fill that room. If they do anyway (a broker with an unlimited window and a stalled
//! owner), a QoS 0 message is dropped and counted, and for a QoS 1 message the link drops the
//! connection on purpose: the broker keeps the message and redelivers it on the next session,
//! after a backoff like any other.
//!
//! QoS 0 matters more than it seems: Meshtastic firmware publishes with PubSubClient, which
//! only sends QoS 0 (`MQTT::publish`, v2.7.26), and a broker forwards a message at the lower of
//! the publisher's and the subscriber's QoS. Envelopes from firmware gateways therefore arrive
//! at QoS 0: nothing to acknowledge, and Mosquitto queues none of them for us while we are away
//! (unless `queue_qos0_messages` is set).
//!
//! # Reconnecting
//! rumqttc has no delay between attempts; the link waits with [`mesh_core::Backoff`] (capped,
//! jittered, not forgiven by a connection that dies quickly). A refused connection (wrong
//! password, unknown client) is one log line per attempt with the broker's reason, and the same
//! reason in [`MqttEvent::Disconnected`].

pub mod config;
pub mod handle;
mod link;
pub mod state;

pub use config::{MqttConfig, MqttError, TlsSettings};
pub use handle::{AckToken, Incoming, LinkStopped, MqttCounters, MqttEvent, MqttHandle, spawn};
pub use state::Lifecycle;
