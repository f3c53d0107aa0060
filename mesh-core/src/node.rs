//! Node and packet identifiers.

use std::fmt;
use std::str::FromStr;

/// A Meshtastic node number, printed the firmware's way as `!a1b2c3d4`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    /// Every node on a channel (`NODENUM_BROADCAST`).
    pub const BROADCAST: NodeId = NodeId(0xFFFF_FFFF);
    /// Broadcast to the local device's clients only, never over LoRa (`NODENUM_BROADCAST_NO_LORA`).
    pub const BROADCAST_NO_LORA: NodeId = NodeId(1);
    /// In a packet a client hands its radio, `from == 0` means "this radio".
    pub const LOCAL: NodeId = NodeId(0);

    /// Wraps a raw node number.
    pub const fn new(num: u32) -> Self {
        NodeId(num)
    }

    /// The raw node number, as it travels in protobufs.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// True for both broadcast addresses.
    pub const fn is_broadcast(self) -> bool {
        self.0 == Self::BROADCAST.0 || self.0 == Self::BROADCAST_NO_LORA.0
    }

    /// The last byte, which is how `next_hop` and `relay_node` name a node on the air.
    pub const fn last_byte(self) -> u8 {
        (self.0 & 0xff) as u8
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::BROADCAST {
            f.write_str("^all")
        } else {
            write!(f, "!{:08x}", self.0)
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<u32> for NodeId {
    fn from(num: u32) -> Self {
        NodeId(num)
    }
}

/// Why a text is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a node id: expected `!` and 8 hex digits (like `!a1b2c3d4`) or `^all`")]
pub struct NodeIdError {
    text: String,
}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || NodeIdError { text: s.to_owned() };
        if s == "^all" {
            return Ok(Self::BROADCAST);
        }
        let hex = s.strip_prefix('!').ok_or_else(err)?;
        if hex.is_empty() || hex.len() > 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        u32::from_str_radix(hex, 16).map(NodeId).map_err(|_| err())
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A packet id, unique per sender. Zero means "not set": such packets are never deduplicated.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PacketId(u32);

impl PacketId {
    /// Wraps a raw packet id.
    pub const fn new(id: u32) -> Self {
        PacketId(id)
    }

    /// The raw id.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Zero is the "no id" value: the firmware neither deduplicates nor relays such packets.
    pub const fn is_unset(self) -> bool {
        self.0 == 0
    }

    /// A fresh id laid out like the firmware's (`Router.cpp::generatePacketId`): a rolling
    /// counter in the low 10 bits and random high bits, never zero. `random` and `counter` are
    /// supplied by the caller, which owns the randomness and the counter.
    pub fn generate(random: u32, counter: u32) -> PacketId {
        let id = (random & !0x3ff) | (counter & 0x3ff);
        PacketId(if id == 0 { 1 } else { id })
    }
}

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

impl fmt::Debug for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_prints_and_parses_like_the_firmware() {
        let id = NodeId::new(0xa1b2c3d4);
        assert_eq!(id.to_string(), "!a1b2c3d4");
        assert_eq!("!a1b2c3d4".parse::<NodeId>().unwrap(), id);
        assert_eq!(NodeId::new(0x12).to_string(), "!00000012");
        assert_eq!("^all".parse::<NodeId>().unwrap(), NodeId::BROADCAST);
        assert_eq!(NodeId::BROADCAST.to_string(), "^all");
        assert!(NodeId::BROADCAST.is_broadcast());
        assert_eq!(id.last_byte(), 0xd4);
    }

    #[test]
    fn malformed_node_ids_are_rejected_with_the_text() {
        for bad in ["", "!", "a1b2c3d4", "!a1b2c3d4e", "!xyz", "!-1"] {
            let err = bad.parse::<NodeId>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn generated_packet_ids_keep_the_counter_and_are_never_zero() {
        assert_eq!(PacketId::generate(0xdead_beef, 5).get() & 0x3ff, 5);
        assert_eq!(PacketId::generate(0, 0), PacketId::new(1));
    }
}
