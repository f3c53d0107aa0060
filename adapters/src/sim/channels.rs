//! A mesh's channel table, as both the RF world and an attached device use it: index 0 is
//! the primary; on the air a channel is known only by its 8-bit hash.
//!
//! Encrypting replaces the channel index with the hash; decrypting tries every channel whose
//! hash matches until one key yields a `Data` (there is no integrity check, so a wrong key
//! usually fails to parse), and gives the index back.

use mesh_core::channel::channel_hash;
use mesh_core::{ChannelKey, ModemPreset, Packet, Psk};

use super::config::ChannelConfig;

/// One channel, ready for crypto.
#[derive(Debug, Clone)]
pub struct ChannelEntry {
    /// The name as configured (possibly empty), which is what a device reports to its client.
    pub configured_name: String,
    /// The name that goes into the hash (the preset's name when none is configured).
    pub name: String,
    /// The PSK as configured, which a device reports to its client (never logged).
    pub psk: Psk,
    /// The expanded key.
    pub key: ChannelKey,
    /// The 8-bit hash that stands for this channel on the air.
    pub hash: u8,
}

/// The channels of one mesh, in index order.
#[derive(Debug, Clone)]
pub struct ChannelTable {
    /// Index 0 is the primary channel.
    entries: Vec<ChannelEntry>,
}

impl ChannelTable {
    /// Builds the table from the config, with empty names standing for the preset's name.
    pub fn new(channels: &[ChannelConfig], preset: ModemPreset) -> ChannelTable {
        let entries = channels
            .iter()
            .map(|c| {
                let name = c.effective_name(preset);
                let key = c.psk.expand();
                ChannelEntry {
                    configured_name: c.name.clone(),
                    hash: channel_hash(&name, &key),
                    name,
                    psk: c.psk.clone(),
                    key,
                }
            })
            .collect();
        ChannelTable { entries }
    }

    /// How many channels are in use.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no channels (a validated config always has one).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The channel at `index`.
    pub fn get(&self, index: usize) -> Option<&ChannelEntry> {
        self.entries.get(index)
    }

    /// All channels, primary first.
    pub fn entries(&self) -> &[ChannelEntry] {
        &self.entries
    }

    /// The packet as it goes on the air on channel `index`: encrypted, `channel` = hash.
    /// `None` if there is no such channel.
    pub fn encrypt(&self, packet: &Packet, index: usize) -> Option<Packet> {
        let entry = self.entries.get(index)?;
        Some(packet.encrypt(&entry.name, &entry.key))
    }

    /// Reads an on-air packet: the local channel index and the decoded packet (its `channel`
    /// set to that index), or `None` when no channel of this table decrypts it.
    pub fn decrypt(&self, packet: &Packet) -> Option<(u8, Packet)> {
        if packet.data().is_some() {
            return None;
        }
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| u32::from(e.hash) == packet.channel())
            .find_map(|(i, e)| {
                let mut plain = packet.decrypt(&e.key).ok()?;
                plain.meta_mut().channel = i as u32;
                Some((i as u8, plain))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::proto;

    fn table() -> ChannelTable {
        ChannelTable::new(
            &[
                ChannelConfig {
                    name: String::new(),
                    psk: Psk::default_key(),
                },
                ChannelConfig {
                    name: "ops".into(),
                    psk: Psk::from_bytes(vec![7; 16]),
                },
            ],
            ModemPreset::LongFast,
        )
    }

    fn text(channel: u32) -> Packet {
        let meta = proto::MeshPacket {
            from: 0x1234,
            to: 0xffff_ffff,
            id: 99,
            channel,
            ..Default::default()
        };
        Packet::from_data(
            meta,
            proto::Data {
                portnum: proto::PortNum::TextMessageApp as i32,
                payload: b"hello".to_vec(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn an_empty_primary_name_hashes_as_the_preset_name() {
        assert_eq!(table().get(0).unwrap().hash, 0x08);
        assert_eq!(table().get(0).unwrap().configured_name, "");
    }

    #[test]
    fn a_packet_comes_back_on_the_index_it_was_sent_on() {
        let t = table();
        for index in [0, 1] {
            let on_air = t.encrypt(&text(index), index as usize).unwrap();
            assert_eq!(
                on_air.channel(),
                u32::from(t.get(index as usize).unwrap().hash)
            );
            assert!(on_air.data().is_none());
            let (i, plain) = t.decrypt(&on_air).unwrap();
            assert_eq!(u32::from(i), index);
            assert_eq!(plain.channel(), index);
            assert_eq!(plain.text().as_deref(), Some("hello"));
        }
    }

    #[test]
    fn a_packet_on_an_unknown_channel_is_not_decoded() {
        let other = ChannelTable::new(
            &[ChannelConfig {
                name: "secret".into(),
                psk: Psk::from_bytes(vec![9; 32]),
            }],
            ModemPreset::LongFast,
        );
        let on_air = other.encrypt(&text(0), 0).unwrap();
        assert!(table().decrypt(&on_air).is_none());
        assert!(table().encrypt(&text(0), 5).is_none());
    }
}
