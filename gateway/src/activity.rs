//! What happens in a running gateway, as events for whoever follows it (the terminal, later the
//! status page). Every event names the endpoint it concerns; the kinds of endpoint share them.

use std::fmt;
use std::time::Duration;

use mesh_core::{Class, NodeId, PacketId};

/// Something an operator may want to see, as it happens.
#[derive(Debug, Clone)]
pub enum Activity {
    /// An endpoint's link came up (a radio finished its handshake, a broker accepted us).
    EndpointUp {
        /// Its configured name.
        endpoint: String,
        /// Its kind (`radio`, `mqtt`), for the line an operator reads.
        kind: &'static str,
        /// Who it is there (a radio's node id), when that means something.
        detail: Option<String>,
    },
    /// An endpoint's link went down (it reconnects by itself).
    EndpointDown {
        /// Its configured name.
        endpoint: String,
        /// Its kind.
        kind: &'static str,
        /// Why, as the link saw it.
        reason: String,
    },
    /// Something about an endpoint the operator must fix (a radio set up so that it cannot take
    /// relayed traffic, a configuration that disagrees with the radio). Said once per cause.
    Problem {
        /// Its configured name.
        endpoint: String,
        /// What is wrong and how to fix it.
        text: String,
    },
    /// A packet was accepted and queued for these destinations.
    Queued {
        /// Sender.
        from: NodeId,
        /// Packet id.
        id: PacketId,
        /// Endpoint it was heard on.
        source: String,
        /// Channel it was heard on.
        channel: String,
        /// Where it will go.
        destinations: Vec<String>,
        /// Its priority class.
        class: Class,
    },
    /// A packet already seen was dropped.
    Duplicate {
        /// Sender.
        from: NodeId,
        /// Packet id.
        id: PacketId,
        /// Endpoint the copy came from.
        source: String,
    },
    /// An ingress dropped something it must not pass on (abuse, a loop, a spoof), by reason.
    Dropped {
        /// Endpoint it came from.
        source: String,
        /// Why (bounded: also a metric label).
        reason: &'static str,
        /// Sender, when known.
        from: Option<NodeId>,
    },
    /// A destination confirmed a delivery.
    Relayed {
        /// Original sender (unchanged).
        from: NodeId,
        /// Packet id (unchanged).
        id: PacketId,
        /// Destination endpoint.
        destination: String,
        /// Channel there.
        channel: String,
        /// Priority class.
        class: Class,
        /// What is shown of its text, when it is one ([`Shown::of`]: a direct message only by
        /// size unless the operator asked otherwise).
        text: Option<Shown>,
        /// Time between queueing and confirmation.
        waited: Duration,
        /// Airtime it cost on the far mesh (radios).
        airtime: Option<Duration>,
    },
    /// A destination could not be reached; its queue waits. Said when it starts, not per try.
    Waiting {
        /// Destination endpoint.
        destination: String,
        /// What is in the way.
        reason: String,
    },
    /// A delivery for one node waits until that node is heard again (it has not been heard
    /// for a while, or ever); the rest of the destination's queue goes on.
    Parked {
        /// Sender.
        from: NodeId,
        /// Packet id.
        id: PacketId,
        /// Destination endpoint (a radio).
        destination: String,
        /// The node it is for.
        node: NodeId,
        /// "waiting for Amira's radio (!a1b2c3d4 last heard 3 h ago)".
        reason: String,
    },
    /// A delivery was set aside after the destination refused it or kept failing.
    Undeliverable {
        /// Sender.
        from: NodeId,
        /// Packet id.
        id: PacketId,
        /// Destination endpoint.
        destination: String,
        /// Why.
        reason: String,
    },
    /// Messages waited longer than their class allows and were dropped.
    Expired {
        /// Destination endpoint.
        destination: String,
        /// Their class.
        class: Class,
        /// How many.
        count: u64,
    },
    /// A full queue dropped or refused a message.
    Overflow {
        /// Destination endpoint.
        destination: String,
        /// Class of what was dropped (`None`: the new message was refused).
        class: Option<Class>,
    },
}

/// What the activity feed and the status page show of a relayed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// The text itself.
    Text(String),
    /// A direct message: that one crossed and how long it was, not what it says.
    Hidden {
        /// Its length in bytes (UTF-8).
        bytes: usize,
    },
}

impl Shown {
    /// What is shown of `text` (`None` when the packet is no text): a direct message (to one
    /// node, PKI or not) is [`Hidden`](Shown::Hidden) unless `show_direct`
    /// (`[log] show_direct_messages`). The feed goes to the journal and the status page to
    /// whoever can reach it; what a person wrote to another is neither's to keep.
    pub fn of(text: Option<String>, direct: bool, show_direct: bool) -> Option<Shown> {
        let text = text?;
        Some(if direct && !show_direct {
            Shown::Hidden { bytes: text.len() }
        } else {
            Shown::Text(text)
        })
    }
}

/// The text as it is, or `direct message (N bytes, content hidden)`.
impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown::Text(text) => f.write_str(text),
            Shown::Hidden { bytes } => {
                write!(f, "direct message ({bytes} bytes, content hidden)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_message_is_shown_by_size_unless_the_operator_opts_in() {
        let text = || Some("meet at the pump, 6 pm".to_owned());
        let hidden = Shown::of(text(), true, false).unwrap();
        assert_eq!(hidden, Shown::Hidden { bytes: 22 });
        assert_eq!(
            hidden.to_string(),
            "direct message (22 bytes, content hidden)"
        );
        assert_eq!(
            Shown::of(text(), true, true),
            Some(Shown::Text("meet at the pump, 6 pm".into()))
        );
        // Channel texts are for everyone on the channel: shown either way.
        for show in [false, true] {
            assert_eq!(
                Shown::of(text(), false, show).unwrap().to_string(),
                "meet at the pump, 6 pm"
            );
        }
        // Bytes, not characters: the size on the air.
        assert_eq!(
            Shown::of(Some("été".into()), true, false),
            Some(Shown::Hidden { bytes: 5 })
        );
        // Not a text (an ACK, a position): nothing to show.
        assert_eq!(Shown::of(None, true, false), None);
    }
}
