//! Priority classes: what goes first when a destination has a backlog or little airtime.

use std::fmt;
use std::str::FromStr;

use crate::packet::Packet;
use crate::proto::PortNum;

/// A packet's priority class, most urgent first. The order of the variants is the order in
/// which a backlog drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Text to one person (and the ACKs and answers that make such a conversation work).
    Direct,
    /// Text to a channel.
    Channel,
    /// Positions, node info, waypoints: state that the next update replaces.
    Position,
    /// Telemetry and everything else: nice to have.
    Telemetry,
}

impl Class {
    /// Every class, most urgent first.
    pub const ALL: [Class; 4] = [
        Class::Direct,
        Class::Channel,
        Class::Position,
        Class::Telemetry,
    ];

    /// The class of a packet. Encrypted packets (unknown port) count as channel traffic when
    /// broadcast and direct otherwise.
    pub fn of(packet: &Packet) -> Class {
        let direct = !packet.to().is_broadcast();
        match packet.portnum() {
            Some(
                PortNum::TextMessageApp | PortNum::TextMessageCompressedApp | PortNum::AlertApp,
            ) => {
                if direct {
                    Class::Direct
                } else {
                    Class::Channel
                }
            }
            Some(PortNum::RoutingApp) => Class::Direct,
            Some(PortNum::PositionApp | PortNum::NodeinfoApp | PortNum::WaypointApp) => {
                Class::Position
            }
            None if direct => Class::Direct,
            None => Class::Channel,
            Some(_) => Class::Telemetry,
        }
    }

    /// Stable number for storage: 0 is the most urgent.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The class stored as `rank`.
    pub fn from_rank(rank: u8) -> Option<Class> {
        Class::ALL.get(usize::from(rank)).copied()
    }

    /// Name in configs, logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Class::Direct => "direct",
            Class::Channel => "channel",
            Class::Position => "position",
            Class::Telemetry => "telemetry",
        }
    }

    /// True for the classes the governor defers first when the channel gets busy.
    pub fn is_low(self) -> bool {
        matches!(self, Class::Position | Class::Telemetry)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown class name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown message class `{0}`: use direct, channel, position or telemetry")]
pub struct ClassError(String);

impl FromStr for Class {
    type Err = ClassError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Class::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| ClassError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    fn packet(to: u32, port: PortNum) -> Packet {
        Packet::from_data(
            proto::MeshPacket {
                to,
                ..Default::default()
            },
            proto::Data {
                portnum: port as i32,
                ..Default::default()
            },
        )
    }

    #[test]
    fn texts_are_direct_or_channel_by_destination() {
        assert_eq!(
            Class::of(&packet(7, PortNum::TextMessageApp)),
            Class::Direct
        );
        assert_eq!(
            Class::of(&packet(u32::MAX, PortNum::TextMessageApp)),
            Class::Channel
        );
        assert_eq!(
            Class::of(&packet(u32::MAX, PortNum::PositionApp)),
            Class::Position
        );
        assert_eq!(
            Class::of(&packet(u32::MAX, PortNum::TelemetryApp)),
            Class::Telemetry
        );
        assert!(Class::Direct < Class::Telemetry);
    }

    #[test]
    fn ranks_round_trip() {
        for c in Class::ALL {
            assert_eq!(Class::from_rank(c.rank()), Some(c));
            assert_eq!(c.name().parse::<Class>().unwrap(), c);
        }
    }
}
