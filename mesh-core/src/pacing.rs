//! The phone API's pacing: how often a client may hand its radio a packet of each kind.
//!
//! The firmware refuses a client packet that comes too soon after the previous one on the same
//! port (`PhoneAPI::handleToRadioPacket`, v2.7.26 and develop): a text within 2 s (answered with
//! a `QueueStatus` and a `RATE_LIMIT_EXCEEDED` routing error), a position, waypoint, alert or
//! telemetry within 10 s, a traceroute within 30 s (answered with a client notification). A
//! refused packet is lost for good, since its id is already among the 20 the radio remembers.
//!
//! This is the one table of those limits, for the gateway's radio session (which must never be
//! refused) and for the simulator's device (which refuses like the firmware). Two readings are
//! deliberately conservative: compressed texts are paced like texts, though the firmware does
//! not limit them; and [`PacingClass`] groups ports, so a client that paces one window per
//! class, as the radio session does, is never refused by a radio that keeps one per port.

use std::time::Duration;

use crate::packet::Packet;
use crate::proto::PortNum;

/// A group of ports sharing one minimum spacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PacingClass {
    /// `TEXT_MESSAGE_APP` (and `TEXT_MESSAGE_COMPRESSED_APP`): 2 s.
    Text,
    /// `POSITION_APP`, `WAYPOINT_APP`, `ALERT_APP`, `TELEMETRY_APP`: 10 s.
    Position,
    /// `TRACEROUTE_APP`: 30 s.
    Traceroute,
}

impl PacingClass {
    /// Every class, in index order.
    pub const ALL: [PacingClass; 3] = [
        PacingClass::Text,
        PacingClass::Position,
        PacingClass::Traceroute,
    ];
    /// How many classes there are, for tables indexed by [`PacingClass::index`].
    pub const COUNT: usize = Self::ALL.len();

    /// The class of a port, if the phone API paces it.
    pub fn of_port(port: PortNum) -> Option<PacingClass> {
        use PortNum as P;
        match port {
            P::TextMessageApp | P::TextMessageCompressedApp => Some(PacingClass::Text),
            P::PositionApp | P::WaypointApp | P::AlertApp | P::TelemetryApp => {
                Some(PacingClass::Position)
            }
            P::TracerouteApp => Some(PacingClass::Traceroute),
            _ => None,
        }
    }

    /// The class of a packet a client hands its radio (decoded; encrypted ones are not paced).
    pub fn of(packet: &Packet) -> Option<PacingClass> {
        Self::of_port(packet.portnum()?)
    }

    /// The shortest time between two client packets of this class.
    pub const fn min_spacing(self) -> Duration {
        match self {
            PacingClass::Text => Duration::from_secs(2),
            PacingClass::Position => Duration::from_secs(10),
            PacingClass::Traceroute => Duration::from_secs(30),
        }
    }

    /// How long a client waits between two packets of this class: the radio's limit and a
    /// fifth more. The radio measures the spacing on its own clock when the bytes arrive, after
    /// the serial or TCP link and its own scheduling; a client that waited exactly the limit
    /// is refused whenever the earlier packet was held up longer than the later one (seen:
    /// the simulator refusing texts sent exactly 2 s apart while the machine was loaded, each
    /// one lost for good).
    pub const fn client_spacing(self) -> Duration {
        let limit = self.min_spacing();
        Duration::from_millis(limit.as_millis() as u64 + limit.as_millis() as u64 / 5)
    }

    /// A stable index below [`PacingClass::COUNT`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;

    #[test]
    fn the_table_has_the_firmware_figures() {
        let spacing = |p| PacingClass::of_port(p).map(PacingClass::min_spacing);
        let secs = Duration::from_secs;
        assert_eq!(spacing(PortNum::TextMessageApp), Some(secs(2)));
        assert_eq!(
            PacingClass::Text.client_spacing(),
            Duration::from_millis(2400),
            "a client keeps a margin over the radio's limit"
        );
        assert_eq!(spacing(PortNum::TextMessageCompressedApp), Some(secs(2)));
        for p in [
            PortNum::PositionApp,
            PortNum::WaypointApp,
            PortNum::AlertApp,
            PortNum::TelemetryApp,
        ] {
            assert_eq!(spacing(p), Some(secs(10)), "{p:?}");
        }
        assert_eq!(spacing(PortNum::TracerouteApp), Some(secs(30)));
        for p in [
            PortNum::NodeinfoApp,
            PortNum::RoutingApp,
            PortNum::PrivateApp,
        ] {
            assert_eq!(spacing(p), None, "{p:?}");
        }
    }

    #[test]
    fn packets_are_classed_by_port_and_indices_are_dense() {
        let text = Packet::text_message(NodeId::BROADCAST, 0, "hi");
        assert_eq!(PacingClass::of(&text), Some(PacingClass::Text));
        for (i, c) in PacingClass::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
