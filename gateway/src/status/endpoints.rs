//! Each endpoint's state as its events told it: what the terminal summary, the status page,
//! `archipel status` and the `archipel_endpoint_up` metric all read, so they never disagree.
//! Pure: events and the wall-clock time they were seen at come in as arguments.

use serde::Serialize;

use crate::activity::Activity;
use crate::store::Millis;

/// One endpoint's last known state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No event yet: still connecting (or never came up).
    Starting,
    /// Up.
    Up,
    /// Down.
    Down,
}

/// One endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// Its configured name.
    pub name: String,
    /// Its kind (`radio`, `mqtt`, `xmpp`, `peer`).
    pub kind: &'static str,
    /// Up, down or not yet either.
    pub state: State,
    /// When it entered that state (unix ms), once it had an event: "down since 03:12".
    pub since: Option<Millis>,
    /// What its link said when it last went down; kept after it recovers, so a flapping
    /// link's cause stays readable.
    pub last_error: Option<String>,
    /// What it said when it last came up (the radio's node and firmware, the peer's id).
    pub detail: Option<String>,
    /// Times it came up after being down: a link that keeps reconnecting is a link in trouble.
    pub reconnects: u64,
}

/// Every configured endpoint's state, in config order.
#[derive(Debug, Clone, Default)]
pub struct EndpointStates {
    /// In config order: the page and the summary list them as the operator wrote them.
    endpoints: Vec<Endpoint>,
}

impl EndpointStates {
    /// Every configured endpoint, as (name, kind), starting.
    pub fn new(endpoints: impl IntoIterator<Item = (String, &'static str)>) -> EndpointStates {
        EndpointStates {
            endpoints: endpoints
                .into_iter()
                .map(|(name, kind)| Endpoint {
                    name,
                    kind,
                    state: State::Starting,
                    since: None,
                    last_error: None,
                    detail: None,
                    reconnects: 0,
                })
                .collect(),
        }
    }

    /// Applies an event seen at `now` (only ups and downs change anything).
    pub fn apply(&mut self, a: &Activity, now: Millis) {
        match a {
            Activity::EndpointUp {
                endpoint, detail, ..
            } => {
                if let Some(e) = self.get_mut(endpoint) {
                    if e.state == State::Down {
                        e.reconnects += 1;
                    }
                    if e.state != State::Up {
                        e.since = Some(now);
                    }
                    e.state = State::Up;
                    e.detail.clone_from(detail);
                }
            }
            Activity::EndpointDown {
                endpoint, reason, ..
            } => {
                if let Some(e) = self.get_mut(endpoint) {
                    if e.state != State::Down {
                        e.since = Some(now);
                    }
                    e.state = State::Down;
                    e.last_error = Some(reason.clone());
                }
            }
            _ => {}
        }
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Endpoint> {
        self.endpoints.iter_mut().find(|e| e.name == name)
    }

    /// Every endpoint, in config order.
    pub fn all(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// One endpoint by name.
    pub fn get(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// "radio north up, mqtt broker DOWN (connection refused)".
    pub fn line(&self) -> String {
        if self.endpoints.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| match e.state {
                State::Starting => format!("{} {} not up yet", e.kind, e.name),
                State::Up => format!("{} {} up", e.kind, e.name),
                State::Down => format!(
                    "{} {} DOWN ({})",
                    e.kind,
                    e.name,
                    e.last_error.as_deref().unwrap_or("no reason given")
                ),
            })
            .collect();
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str) -> Activity {
        Activity::EndpointUp {
            endpoint: name.into(),
            kind: "radio",
            detail: Some("node !a1b2c3d4".into()),
        }
    }

    fn down(name: &str, reason: &str) -> Activity {
        Activity::EndpointDown {
            endpoint: name.into(),
            kind: "mqtt",
            reason: reason.into(),
        }
    }

    #[test]
    fn endpoint_states_follow_their_ups_and_downs() {
        let mut s = EndpointStates::new([("north".into(), "radio"), ("broker".into(), "mqtt")]);
        assert_eq!(s.line(), "radio north not up yet, mqtt broker not up yet");
        s.apply(&up("north"), 1);
        s.apply(&down("broker", "connection refused"), 2);
        // An endpoint that is not configured changes nothing.
        s.apply(&up("elsewhere"), 3);
        assert_eq!(
            s.line(),
            "radio north up, mqtt broker DOWN (connection refused)"
        );
        let north = s.get("north").unwrap();
        assert_eq!(
            (north.since, north.detail.as_deref()),
            (Some(1), Some("node !a1b2c3d4"))
        );
    }

    #[test]
    fn a_link_keeps_its_first_moment_in_a_state_its_last_error_and_counts_reconnects() {
        let mut s = EndpointStates::new([("broker".into(), "mqtt")]);
        s.apply(&up("broker"), 10);
        s.apply(&down("broker", "connection reset"), 20);
        // A second down while down (a failed retry) keeps "down since" and the newest cause.
        s.apply(&down("broker", "connection refused"), 30);
        let b = s.get("broker").unwrap();
        assert_eq!((b.state.clone(), b.since), (State::Down, Some(20)));
        assert_eq!(b.last_error.as_deref(), Some("connection refused"));
        s.apply(&up("broker"), 40);
        let b = s.get("broker").unwrap();
        assert_eq!(
            (b.state.clone(), b.since, b.reconnects),
            (State::Up, Some(40), 1)
        );
        assert_eq!(b.last_error.as_deref(), Some("connection refused"), "kept");
    }
}
