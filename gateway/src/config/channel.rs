//! Channels and their keys: the one table every endpoint kind shares.
//!
//! On the air a channel is an 8-bit hash of its name and key, but on MQTT (the `channel_id`
//! of an envelope, the topic) and between hubs it is its name alone. So across the gateway a
//! name stands for exactly one key: the table is filled from every radio's channels and from
//! top-level `[[channel]]` entries (channels no local radio has, such as one a hub relays from
//! MQTT to a peer), and one name with two keys is a config error. MQTT and peer sections carry
//! no keys of their own.

use std::collections::{BTreeMap, HashMap};

use mesh_core::channel::channel_hash;
use mesh_core::{ChannelKey, Psk};
use serde::Deserialize;

use super::Config;
use super::error::Problem;

/// Longest channel name in bytes: the firmware's `ChannelSettings.name` holds 12 with the
/// terminating NUL (`channel.options`, `max_size:12`).
pub const MAX_CHANNEL_NAME: usize = 11;

/// One channel: of a radio (`channels = [...]`), or of the gateway (`[[channel]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSection {
    /// Channel name (for an unnamed primary channel: the preset's name, such as `LongFast`).
    pub name: String,
    /// Its key: `default`, `none`, `simpleN`, or base64 of 16 or 32 bytes.
    pub psk: Psk,
}

/// What the table knows of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEntry {
    /// The key as configured (first place it was written), for `ChannelSettings.psk`.
    pub psk: Psk,
    /// The expanded key, to encrypt and decrypt.
    pub key: ChannelKey,
    /// The channel's 8-bit hash on the air.
    pub hash: u8,
}

/// Channel name → key, for every channel the gateway can read or write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelTable {
    /// By name; a `BTreeMap` so iteration (summary, subscriptions) has one stable order.
    channels: BTreeMap<String, ChannelEntry>,
}

impl ChannelTable {
    /// An empty table.
    pub fn new() -> ChannelTable {
        ChannelTable::default()
    }

    /// Adds a channel. Adding a name again with the same key is a no-op; with another key it
    /// is refused, and the key already there is returned.
    pub fn insert(&mut self, name: impl Into<String>, psk: Psk) -> Result<(), &ChannelEntry> {
        let name = name.into();
        let key = psk.expand();
        let hash = channel_hash(&name, &key);
        match self.channels.entry(name) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(ChannelEntry { psk, key, hash });
                Ok(())
            }
            std::collections::btree_map::Entry::Occupied(o) => {
                if o.get().key == key {
                    Ok(())
                } else {
                    Err(o.into_mut())
                }
            }
        }
    }

    /// Everything about one channel.
    pub fn get(&self, name: &str) -> Option<&ChannelEntry> {
        self.channels.get(name)
    }

    /// The expanded key of a channel.
    pub fn key(&self, name: &str) -> Option<&ChannelKey> {
        self.get(name).map(|c| &c.key)
    }

    /// Whether the table has this channel.
    pub fn contains(&self, name: &str) -> bool {
        self.channels.contains_key(name)
    }

    /// Every channel with its key, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ChannelEntry)> {
        self.channels.iter().map(|(n, c)| (n.as_str(), c))
    }

    /// Every channel name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(String::as_str)
    }

    /// How many channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

/// Why `name` cannot be a Meshtastic channel name, if it cannot.
pub fn channel_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some(
            "is empty: an unnamed primary channel goes by its preset's name, such as `LongFast` (`archipel radio-info` shows it)"
                .into(),
        );
    }
    if name.chars().any(char::is_control) {
        return Some(format!(
            "`{}` contains control characters",
            name.escape_debug()
        ));
    }
    if name.len() > MAX_CHANNEL_NAME {
        return Some(format!(
            "`{name}` is {} bytes: a Meshtastic channel name holds at most {MAX_CHANNEL_NAME}",
            name.len()
        ));
    }
    None
}

/// Builds the table from every radio and `[[channel]]`, and reports each name written with
/// two keys, naming both places.
pub fn build(config: &Config) -> (ChannelTable, Vec<Problem>) {
    let mut table = ChannelTable::new();
    let mut problems = Vec::new();
    let mut first: HashMap<&str, String> = HashMap::new();
    let radio_channels = config.radios.iter().enumerate().flat_map(|(i, r)| {
        r.channels
            .iter()
            .enumerate()
            .map(move |(j, c)| (format!("radio[{i}] ({}).channels[{j}]", r.name), c))
    });
    let own = config
        .channels
        .iter()
        .enumerate()
        .map(|(k, c)| (format!("channel[{k}] ({})", c.name), c));
    let mut listed = HashMap::new();
    for (k, c) in config.channels.iter().enumerate() {
        if let Some(before) = listed.insert(c.name.as_str(), k) {
            problems.push(Problem::new(
                format!("channel[{k}] ({})", c.name),
                format!(
                    "`{}` is already channel[{before}]: list each channel once",
                    c.name
                ),
            ));
        }
    }
    for (place, c) in radio_channels.chain(own) {
        if table.insert(c.name.clone(), c.psk.clone()).is_err() {
            let there = first.get(c.name.as_str()).cloned().unwrap_or_default();
            problems.push(Problem::new(
                place,
                format!(
                    "channel `{}` has another key than at {there}: on MQTT and between hubs a channel is known by its name alone, so one name has one key across the gateway; give both the same psk, or rename one channel (on its radio too)",
                    c.name
                ),
            ));
        } else {
            first.entry(c.name.as_str()).or_insert(place);
        }
    }
    (table, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_one_key() {
        let mut t = ChannelTable::new();
        assert!(t.insert("LongFast", Psk::default_key()).is_ok());
        assert!(
            t.insert("LongFast", "simple0".parse().unwrap()).is_ok(),
            "the same key written another way"
        );
        assert!(t.insert("LongFast", "simple1".parse().unwrap()).is_err());
        assert_eq!(t.len(), 1);
        assert_eq!(t.get("LongFast").unwrap().hash, 0x08, "reference §3.3");
        assert_eq!(t.key("LongFast"), Some(&Psk::default_key().expand()));
        assert!(t.key("ops").is_none());
    }

    #[test]
    fn channel_names_fit_the_radio() {
        assert!(channel_name("MediumFast").is_none());
        assert!(channel_name("").unwrap().contains("LongFast"));
        assert!(channel_name("TwelveChars!").unwrap().contains("at most 11"));
        assert!(channel_name("a\u{7}").unwrap().contains("control"));
    }
}
