//! What the terminal tells beyond one line per event: each endpoint's state for the summary,
//! and which ingress drops are shown.
//!
//! Which ingress drops the terminal shows. A drop loses a message, so the operator must see it
//! on stdout; but a flood (a sender at 1,000 msg/s, a spoofing node) must not bury every other
//! line. The first drop of each (endpoint, reason) between two summaries is shown as it
//! happens; the rest are counted and told once, with the summary.

use std::collections::BTreeMap;

use mesh_core::NodeId;

use archipel_gateway::activity::Activity;

/// Each endpoint's state as its events told it, for the summary: an operator on the phone
/// must read "north down" there, not infer it from a quiet log.
#[derive(Debug)]
pub struct EndpointStates {
    /// By endpoint name, in config order: (kind, state).
    states: Vec<(String, &'static str, State)>,
}

/// One endpoint's last known state.
#[derive(Debug, Clone, PartialEq)]
enum State {
    /// No event yet: still connecting (or never came up).
    Starting,
    /// Up.
    Up,
    /// Down, with the reason its link gave.
    Down(String),
}

impl EndpointStates {
    /// Every configured endpoint, as (name, kind), starting.
    pub fn new(endpoints: impl IntoIterator<Item = (String, &'static str)>) -> EndpointStates {
        EndpointStates {
            states: endpoints
                .into_iter()
                .map(|(n, k)| (n, k, State::Starting))
                .collect(),
        }
    }

    /// Applies an event (only ups and downs change anything).
    pub fn apply(&mut self, a: &Activity) {
        let (endpoint, state) = match a {
            Activity::EndpointUp { endpoint, .. } => (endpoint, State::Up),
            Activity::EndpointDown {
                endpoint, reason, ..
            } => (endpoint, State::Down(reason.clone())),
            _ => return,
        };
        if let Some(e) = self.states.iter_mut().find(|e| &e.0 == endpoint) {
            e.2 = state;
        }
    }

    /// "radio north up, mqtt broker down (connection refused)".
    pub fn line(&self) -> String {
        if self.states.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> = self
            .states
            .iter()
            .map(|(name, kind, state)| match state {
                State::Starting => format!("{kind} {name} not up yet"),
                State::Up => format!("{kind} {name} up"),
                State::Down(why) => format!("{kind} {name} DOWN ({why})"),
            })
            .collect();
        parts.join(", ")
    }
}

/// Drops seen since the last summary, by (endpoint, reason).
#[derive(Debug, Default)]
pub struct DropNotices {
    /// How many drops of each key were not shown (the first of each was).
    held: BTreeMap<(String, &'static str), u64>,
}

impl DropNotices {
    /// A drop by `source` for `reason`: the line to show now, or `None` when one of the same
    /// kind was already shown since the last summary.
    pub fn on_drop(
        &mut self,
        source: &str,
        reason: &'static str,
        from: Option<NodeId>,
    ) -> Option<String> {
        let key = (source.to_owned(), reason);
        if let Some(n) = self.held.get_mut(&key) {
            *n += 1;
            return None;
        }
        self.held.insert(key, 0);
        let from = from.map(|f| format!(" from {f}")).unwrap_or_default();
        Some(format!(
            "dropped a packet{from} heard on {source}: {reason} (more like it are counted in the summary)"
        ))
    }

    /// The drops not shown since the last summary, one line per kind, and a fresh start.
    pub fn summary(&mut self) -> Vec<String> {
        std::mem::take(&mut self.held)
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|((source, reason), n)| format!("dropped {n} more heard on {source}: {reason}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_states_follow_their_ups_and_downs() {
        let mut s = EndpointStates::new([("north".into(), "radio"), ("broker".into(), "mqtt")]);
        assert_eq!(s.line(), "radio north not up yet, mqtt broker not up yet");
        s.apply(&Activity::EndpointUp {
            endpoint: "north".into(),
            kind: "radio",
            detail: None,
        });
        s.apply(&Activity::EndpointDown {
            endpoint: "broker".into(),
            kind: "mqtt",
            reason: "connection refused".into(),
        });
        // An endpoint that is not configured changes nothing.
        s.apply(&Activity::EndpointUp {
            endpoint: "elsewhere".into(),
            kind: "radio",
            detail: None,
        });
        assert_eq!(
            s.line(),
            "radio north up, mqtt broker DOWN (connection refused)"
        );
    }

    #[test]
    fn the_first_drop_of_a_kind_is_shown_and_the_rest_are_told_with_the_summary() {
        let mut n = DropNotices::default();
        let first = n.on_drop("north", "spoofed", Some(NodeId::new(0xa1b2_c3d4)));
        assert!(first.unwrap().contains("!a1b2c3d4 heard on north: spoofed"));
        for _ in 0..999 {
            assert_eq!(n.on_drop("north", "spoofed", Some(NodeId::new(1))), None);
        }
        // Another reason or endpoint is news.
        assert!(n.on_drop("north", "rate-limited", None).is_some());
        assert!(n.on_drop("mqtt", "spoofed", None).is_some());
        assert_eq!(
            n.summary(),
            vec!["dropped 999 more heard on north: spoofed"]
        );
        // After a summary, the next drop is shown again.
        assert!(n.on_drop("north", "spoofed", None).is_some());
        assert!(n.summary().is_empty());
    }
}
