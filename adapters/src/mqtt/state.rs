//! The MQTT link's decisions, with no I/O: which caller a PUBACK confirms, and what an error
//! means for the operator.
//!
//! `Publishes` follows rumqttc's events for the publishes the link handed it. rumqttc
//! (0.25.1, `src/state.rs`) handles requests one at a time, in the order they were queued, and
//! for each QoS 1 publish pushes exactly one of:
//! - `Outgoing::Publish(pkid)` (`outgoing_publish`): written with packet id `pkid`;
//! - `Outgoing::AwaitAck(pkid)`: `pkid` is still awaiting its PUBACK (the broker acked out of
//!   order), so rumqttc holds the publish as its `collision` and reads no further request until
//!   `Incoming::PubAck(pkid)` arrives, after which it writes the held publish and pushes
//!   `Outgoing::Publish(pkid)` for it (`handle_incoming_puback`, `check_collision`).
//!
//! Then `Incoming::PubAck(pkid)` confirms the publish written with that id. So submissions,
//! kept in order, get their packet ids from the outgoing events in order, and a PUBACK
//! resolves exactly the publish it answers. Anything inconsistent (an id reused while still
//! awaited) hands the displaced caller back to be told [`Unreachable`], never [`Delivered`]:
//! a mistake here costs a duplicate, never a loss.
//!
//! | lifecycle     | entered by                          | leaves on                               |
//! |---------------|-------------------------------------|-----------------------------------------|
//! | `Connecting`  | start; end of a backoff             | CONNACK → `Connected`; error → `Backoff`|
//! | `Connected`   | CONNACK accepted                    | error → `Backoff`; shutdown → `Stopped` |
//! | `Backoff`     | a failed attempt or a lost link     | delay over → `Connecting`               |
//! | `Stopped`     | shutdown, or every handle dropped   | —                                       |
//!
//! [`Unreachable`]: mesh_core::DeliveryStatus::Unreachable
//! [`Delivered`]: mesh_core::DeliveryStatus::Delivered

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use rumqttc::{ConnectReturnCode, ConnectionError, StateError};

use super::config::MqttConfig;

/// Where an MQTT link is; each state carries what only it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Opening TCP (and TLS) and waiting for the CONNACK.
    Connecting {
        /// Failed attempts since the last stable connection.
        attempt: u32,
    },
    /// The broker accepted us.
    Connected {
        /// When it did (monotonic).
        since: Instant,
        /// Whether the broker still had our session (subscriptions and queued messages).
        session_present: bool,
    },
    /// Waiting before the next attempt; publishes are answered `Unreachable` meanwhile.
    Backoff {
        /// When to try again (monotonic).
        until: Instant,
    },
    /// Shut down; nothing more happens.
    Stopped,
}

impl Lifecycle {
    /// True while the broker accepts publishes.
    pub fn is_connected(&self) -> bool {
        matches!(self, Lifecycle::Connected { .. })
    }
}

/// Publishes handed to rumqttc and not yet answered, each with its waiter `W`.
#[derive(Debug)]
pub(crate) struct Publishes<W> {
    /// Submitted, no packet id yet, in submission order (rumqttc's order).
    queued: VecDeque<W>,
    /// Written with a packet id, waiting for that id's PUBACK.
    inflight: HashMap<u16, W>,
    /// The publish rumqttc holds because its id was still awaited, with that id.
    collided: Option<(u16, W)>,
}

impl<W> Default for Publishes<W> {
    fn default() -> Self {
        Publishes {
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            collided: None,
        }
    }
}

impl<W> Publishes<W> {
    /// A publish was queued to rumqttc.
    pub(crate) fn submitted(&mut self, waiter: W) {
        self.queued.push_back(waiter);
    }

    /// Publishes not yet answered.
    pub(crate) fn outstanding(&self) -> usize {
        self.queued.len() + self.inflight.len() + usize::from(self.collided.is_some())
    }

    /// `Outgoing::Publish(pkid)` for a QoS 1 publish. Returns a waiter whose publish can no
    /// longer be told apart (to be answered as unreachable), which only a broken invariant
    /// produces.
    pub(crate) fn written(&mut self, pkid: u16) -> Option<W> {
        if self.collided.as_ref().is_some_and(|(id, _)| *id == pkid)
            && !self.inflight.contains_key(&pkid)
            && let Some((_, waiter)) = self.collided.take()
        {
            self.inflight.insert(pkid, waiter);
            return None;
        }
        // A write with no submission behind it is not ours (rumqttc retransmitting a previous
        // session, which the link prevents): nothing to correlate.
        let waiter = self.queued.pop_front()?;
        self.inflight.insert(pkid, waiter)
    }

    /// `Outgoing::AwaitAck(pkid)`: the next submission waits for `pkid` to be acknowledged.
    /// Returns a waiter displaced by a second collision (a broken invariant).
    pub(crate) fn held(&mut self, pkid: u16) -> Option<W> {
        let waiter = self.queued.pop_front()?;
        self.collided.replace((pkid, waiter)).map(|(_, w)| w)
    }

    /// `Incoming::PubAck(pkid)`: the waiter whose publish the broker now holds.
    pub(crate) fn acked(&mut self, pkid: u16) -> Option<W> {
        self.inflight.remove(&pkid)
    }

    /// The connection is gone: every waiter, to be answered.
    pub(crate) fn drain(&mut self) -> Vec<W> {
        let mut all: Vec<W> = self.collided.take().map(|(_, w)| w).into_iter().collect();
        let mut inflight: Vec<(u16, W)> = self.inflight.drain().collect();
        inflight.sort_by_key(|(id, _)| *id);
        all.extend(inflight.into_iter().map(|(_, w)| w));
        all.extend(self.queued.drain(..));
        all
    }
}

/// What a connection error means, in words for the operator. `address` is `host:port`.
pub(crate) fn describe(error: &ConnectionError, address: &str) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection: {}", refusal(*code))
        }
        ConnectionError::Tls(e) => {
            let text = match e {
                rumqttc::TlsError::Io(io) => io.to_string(),
                other => other.to_string(),
            };
            let hint = if text.contains("UnknownIssuer") || text.contains("BadSignature") {
                " (is tls.ca_file the CA that signed the broker's certificate?)"
            } else if text.contains("NotValidForName") {
                " (the broker's certificate does not name the configured host)"
            } else {
                ""
            };
            format!("TLS handshake with {address} failed: {text}{hint}")
        }
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("nothing accepts connections at {address} (connection refused)")
        }
        ConnectionError::Io(e) => format!("cannot reach {address}: {e}"),
        ConnectionError::NetworkTimeout => {
            format!("no MQTT connection to {address} within the connect timeout")
        }
        ConnectionError::FlushTimeout => "the broker stopped reading what we send".into(),
        ConnectionError::MqttState(state) => match state {
            StateError::AwaitPingResp => {
                "the broker did not answer a keep-alive ping: the connection is half-open".into()
            }
            StateError::ConnectionAborted => "the broker closed the connection".into(),
            StateError::Io(e) => format!("the connection broke: {e}"),
            StateError::Deserialization(rumqttc::Error::PayloadSizeLimitExceeded(n)) => format!(
                "the broker sent a {n}-byte packet, over max_packet_size; it will redeliver it \
                 after the reconnect, so raise max_packet_size or remove that message"
            ),
            StateError::CollisionTimeout => {
                "the broker left a publish unacknowledged while its packet id was needed again"
                    .into()
            }
            other => format!("MQTT protocol error: {other}"),
        },
        ConnectionError::NotConnAck(packet) => {
            format!("the broker answered CONNECT with {packet:?} instead of a CONNACK")
        }
        ConnectionError::RequestsDone => "the link stopped".into(),
    }
}

/// Whether MQTT can carry this publish at all; the reason says what is wrong.
pub(crate) fn check_publish(
    topic: &str,
    payload: usize,
    config: &MqttConfig,
) -> Result<(), String> {
    if topic.is_empty() {
        return Err("an MQTT topic cannot be empty".into());
    }
    if topic.contains(['+', '#']) {
        return Err(format!(
            "topic `{topic}` contains a wildcard, which only subscriptions may use"
        ));
    }
    if topic.contains('\0') {
        return Err("an MQTT topic cannot contain a NUL character".into());
    }
    if topic.len() > usize::from(u16::MAX) {
        return Err(format!(
            "a topic of {} bytes is over MQTT's 65535",
            topic.len()
        ));
    }
    // Fixed header (at most 5 bytes), topic length prefix, topic, packet id, payload.
    let size = 5 + 2 + topic.len() + 2 + payload;
    if size > config.max_packet_size {
        return Err(format!(
            "a publish of {size} bytes is over max_packet_size ({})",
            config.max_packet_size
        ));
    }
    Ok(())
}

/// True when the broker itself said no (credentials, client id), as opposed to a network fault.
pub(crate) fn is_refusal(error: &ConnectionError) -> bool {
    matches!(error, ConnectionError::ConnectionRefused(_))
}

fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::BadUserNamePassword => {
            "bad user name or password (check username and password_file)"
        }
        ConnectReturnCode::NotAuthorized => {
            "not authorised (wrong or missing credentials, or the broker's access rules)"
        }
        ConnectReturnCode::BadClientId => "client id rejected (check client_id)",
        ConnectReturnCode::ServiceUnavailable => "service unavailable",
        ConnectReturnCode::RefusedProtocolVersion => "MQTT 3.1.1 is not accepted",
        ConnectReturnCode::Success => "no reason given",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_puback_confirms_the_publish_written_with_its_id() {
        let mut p = Publishes::default();
        for w in ["a", "b", "c"] {
            p.submitted(w);
        }
        assert_eq!(p.written(1), None);
        assert_eq!(p.written(2), None);
        assert_eq!(p.acked(2), Some("b"));
        assert_eq!(p.written(3), None);
        assert_eq!(p.acked(1), Some("a"));
        assert_eq!(p.acked(3), Some("c"));
        assert_eq!(p.outstanding(), 0);
    }

    #[test]
    fn a_puback_for_an_id_nobody_waits_for_confirms_nothing() {
        let mut p = Publishes::default();
        p.submitted("a");
        assert_eq!(p.acked(1), None, "not written yet");
        p.written(1);
        assert_eq!(p.acked(1), Some("a"));
        assert_eq!(p.acked(1), None, "a repeated PUBACK confirms nothing more");
    }

    #[test]
    fn a_held_publish_takes_its_id_after_the_previous_holder_is_acked() {
        // max_inflight 2: ids 1, 2, then 1 again while 1 is still awaited.
        let mut p = Publishes::default();
        for w in ["a", "b", "c", "d"] {
            p.submitted(w);
        }
        p.written(1);
        p.written(2);
        assert_eq!(p.acked(2), Some("b"));
        assert_eq!(p.held(1), None, "c waits for id 1");
        assert_eq!(p.outstanding(), 3);
        assert_eq!(p.acked(1), Some("a"), "the PUBACK for 1 is a's");
        assert_eq!(p.written(1), None, "then rumqttc writes c with id 1");
        assert_eq!(p.written(2), None, "and d gets the next id");
        assert_eq!(p.acked(1), Some("c"));
        assert_eq!(p.acked(2), Some("d"));
    }

    #[test]
    fn an_id_reused_while_still_awaited_displaces_the_older_waiter_as_unconfirmed() {
        let mut p = Publishes::default();
        p.submitted("a");
        p.submitted("b");
        p.written(5);
        assert_eq!(p.written(5), Some("a"), "a can no longer be confirmed");
        assert_eq!(p.acked(5), Some("b"));
    }

    #[test]
    fn a_lost_connection_hands_back_every_waiter_once() {
        let mut p = Publishes::default();
        for w in 0..6 {
            p.submitted(w);
        }
        p.written(3);
        p.written(1);
        p.held(3);
        let mut all = p.drain();
        all.sort();
        assert_eq!(all, [0, 1, 2, 3, 4, 5]);
        assert_eq!(p.outstanding(), 0);
        assert_eq!(p.acked(3), None);
    }

    #[test]
    fn writes_that_were_not_submitted_are_ignored() {
        let mut p: Publishes<&str> = Publishes::default();
        assert_eq!(p.written(7), None);
        assert_eq!(p.outstanding(), 0);
    }

    #[test]
    fn errors_read_as_sentences_with_the_reason() {
        let addr = "127.0.0.1:1883";
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert!(is_refusal(&refused));
        assert_eq!(
            describe(&refused, addr),
            "the broker refused the connection: not authorised (wrong or missing credentials, or the broker's access rules)"
        );
        let bad = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        assert!(describe(&bad, addr).contains("bad user name or password"));
        let down = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!is_refusal(&down));
        assert_eq!(
            describe(&down, addr),
            "nothing accepts connections at 127.0.0.1:1883 (connection refused)"
        );
        let ping = ConnectionError::MqttState(StateError::AwaitPingResp);
        assert!(describe(&ping, addr).contains("half-open"));
    }

    #[test]
    fn publishes_mqtt_cannot_carry_are_refused_with_the_reason() {
        let mut c = MqttConfig::new("b", "127.0.0.1", 1883, "id");
        c.max_packet_size = 1024;
        assert!(check_publish("msh/EU_868/2/e/LongFast/!a1b2c3d4", 200, &c).is_ok());
        for (topic, len, expected) in [
            ("", 1, "cannot be empty"),
            ("msh/+/x", 1, "wildcard"),
            ("msh/#", 1, "wildcard"),
            ("a\0b", 1, "NUL"),
            ("t", 2000, "over max_packet_size (1024)"),
        ] {
            let err = check_publish(topic, len, &c).unwrap_err();
            assert!(err.contains(expected), "{topic:?}: {err}");
        }
    }
}
