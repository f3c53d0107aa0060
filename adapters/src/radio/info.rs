//! What a radio tells about itself during the `want_config_id` handshake.

use mesh_core::proto::{self, config, from_radio};
use mesh_core::{ModemPreset, NodeId, Psk, Root, TopicError};

/// Everything collected between `want_config_id` and `config_complete_id`: the radio's
/// identity, channels, configuration and node database. Its `Debug` leaves out keys and the
/// MQTT password the radio reports.
#[derive(Clone, Default)]
pub struct RadioInfo {
    /// `MyNodeInfo`: the radio's node number and firmware facts.
    pub my_info: Option<proto::MyNodeInfo>,
    /// The radio's own `NodeInfo` (its user: names, hardware).
    pub own: Option<proto::NodeInfo>,
    /// Firmware version, hardware model, role.
    pub metadata: Option<proto::DeviceMetadata>,
    /// Channel slots as the radio reported them (up to 8, index 0 primary).
    pub channels: Vec<proto::Channel>,
    /// Device configuration sections (device, lora, position, ...).
    pub config: Vec<proto::Config>,
    /// Module configuration sections.
    pub module_config: Vec<proto::ModuleConfig>,
    /// Other nodes the radio knows, in the order it sent them.
    pub nodes: Vec<proto::NodeInfo>,
}

impl std::fmt::Debug for RadioInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadioInfo")
            .field("node", &self.node_id())
            .field("channels", &self.active_channels().count())
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl RadioInfo {
    /// The radio's node id, once `my_info` has arrived.
    pub fn node_id(&self) -> Option<NodeId> {
        self.my_info.as_ref().map(|m| NodeId::new(m.my_node_num))
    }

    /// The radio's own user (names, hardware), if it sent its own node info.
    pub fn user(&self) -> Option<&proto::User> {
        self.own.as_ref().and_then(|n| n.user.as_ref())
    }

    /// The LoRa section of the configuration.
    pub fn lora(&self) -> Option<&config::LoRaConfig> {
        self.config.iter().find_map(|c| match &c.payload_variant {
            Some(config::PayloadVariant::Lora(l)) => Some(l),
            _ => None,
        })
    }

    /// The modem preset the radio uses, when it uses one this build knows.
    pub fn preset(&self) -> Option<ModemPreset> {
        self.lora()
            .filter(|l| l.use_preset)
            .and_then(|l| ModemPreset::from_proto(l.modem_preset))
    }

    /// The frequency the radio is pinned to (`lora.override_frequency`, MHz), `None` when it
    /// uses its preset's slot.
    pub fn override_frequency(&self) -> Option<f32> {
        self.lora()
            .map(|l| l.override_frequency)
            .filter(|f| *f > 0.0)
    }

    /// The region the radio is set to (`UNSET`, `EU_868`, `US`...).
    pub fn region(&self) -> Option<&'static str> {
        self.lora().map(|l| {
            config::lo_ra_config::RegionCode::try_from(l.region)
                .map(|r| r.as_str_name())
                .unwrap_or("UNKNOWN")
        })
    }

    /// The channels that are in use (not `DISABLED`).
    pub fn active_channels(&self) -> impl Iterator<Item = &proto::Channel> {
        self.channels
            .iter()
            .filter(|c| c.role != proto::channel::Role::Disabled as i32)
    }

    /// A channel's display name: its own, or for an unnamed channel the preset's name, as
    /// the apps show it (and as the firmware hashes it).
    pub fn channel_name(&self, channel: &proto::Channel) -> String {
        let name = channel
            .settings
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        if name.is_empty() {
            self.preset()
                .map(|p| p.display_name().to_owned())
                .unwrap_or_else(|| "Custom".to_owned())
        } else {
            name
        }
    }

    /// A channel's pre-shared key (never printed, only expanded or described).
    pub fn channel_psk(&self, channel: &proto::Channel) -> Psk {
        Psk::from_bytes(
            channel
                .settings
                .as_ref()
                .map(|s| s.psk.clone())
                .unwrap_or_default(),
        )
    }

    /// The radio's MQTT settings, if it reported them.
    pub fn mqtt(&self) -> Option<&proto::module_config::MqttConfig> {
        self.module_config
            .iter()
            .find_map(|m| match &m.payload_variant {
                Some(proto::module_config::PayloadVariant::Mqtt(c)) => Some(c),
                _ => None,
            })
    }

    /// The MQTT topic root the radio publishes and listens under: its `mqtt.root`, or `msh`
    /// when that is empty, as the firmware does (a radio whose region was set with the default
    /// root in use reports `msh/<REGION>` itself). An error when the radio's root cannot be a
    /// topic root (a wildcard in it).
    pub fn mqtt_root(&self) -> Result<Root, TopicError> {
        match self
            .mqtt()
            .map(|m| m.root.as_str())
            .filter(|r| !r.is_empty())
        {
            Some(root) => Root::new(root),
            None => Ok(Root::default()),
        }
    }

    /// Whether the radio takes relayed packets on the named channel: relayed traffic enters a
    /// radio the way MQTT downlink does (the client proxy), which keeps the original sender
    /// and packet id; that needs the MQTT module with the client proxy on and downlink on the
    /// channel. `Err` says what to change.
    pub fn accepts_relay_on(&self, channel: &str) -> Result<(), String> {
        let proxy = self
            .mqtt()
            .is_some_and(|m| m.enabled && m.proxy_to_client_enabled);
        if !proxy {
            return Err("its MQTT client proxy is off (meshtastic --set mqtt.enabled true --set mqtt.proxy_to_client_enabled true)".into());
        }
        let Some(ch) = self
            .active_channels()
            .find(|c| self.channel_name(c) == channel)
        else {
            return Err(format!("it has no channel named `{channel}`"));
        };
        if !ch.settings.as_ref().is_some_and(|s| s.downlink_enabled) {
            return Err(format!(
                "downlink is off on its channel `{channel}` (meshtastic --ch-index {} --ch-set downlink_enabled true)",
                ch.index
            ));
        }
        Ok(())
    }

    /// Whether the radio takes PKI direct messages from its client proxy: the firmware
    /// subscribes to `<root>/2/e/PKI/+` when any channel has downlink on
    /// (`MQTT::sendSubscriptions`).
    pub fn accepts_pki_relay(&self) -> Result<(), String> {
        let proxy = self
            .mqtt()
            .is_some_and(|m| m.enabled && m.proxy_to_client_enabled);
        if !proxy {
            return Err("its MQTT client proxy is off (meshtastic --set mqtt.enabled true --set mqtt.proxy_to_client_enabled true)".into());
        }
        if !self
            .active_channels()
            .any(|c| c.settings.as_ref().is_some_and(|s| s.downlink_enabled))
        {
            return Err("downlink is off on every channel, so it takes no PKI direct messages (meshtastic --ch-index 0 --ch-set downlink_enabled true)".into());
        }
        Ok(())
    }

    /// Whether the radio publishes what it hears on `channel` through its client proxy (MQTT
    /// uplink), which is how a gateway gets every packet, direct messages between other nodes
    /// included; without it, only broadcasts and the radio's own messages reach its client.
    pub fn uplinks_on(&self, channel: &str) -> bool {
        self.mqtt()
            .is_some_and(|m| m.enabled && m.proxy_to_client_enabled)
            && self
                .active_channels()
                .find(|c| self.channel_name(c) == channel)
                .and_then(|c| c.settings.as_ref())
                .is_some_and(|s| s.uplink_enabled)
    }

    /// Takes one handshake item. Returns false for variants that are not part of the
    /// configuration (the caller handles those).
    pub(crate) fn absorb(&mut self, item: &from_radio::PayloadVariant) -> bool {
        use from_radio::PayloadVariant as V;
        match item {
            V::MyInfo(m) => self.my_info = Some(m.clone()),
            V::NodeInfo(n) => {
                if self
                    .my_info
                    .as_ref()
                    .is_some_and(|m| m.my_node_num == n.num)
                {
                    self.own = Some(n.clone());
                } else if let Some(old) = self.nodes.iter_mut().find(|o| o.num == n.num) {
                    *old = n.clone();
                } else {
                    self.nodes.push(n.clone());
                }
            }
            V::Metadata(m) => self.metadata = Some(m.clone()),
            V::Channel(c) => {
                if let Some(old) = self.channels.iter_mut().find(|o| o.index == c.index) {
                    *old = c.clone();
                } else {
                    self.channels.push(c.clone());
                    self.channels.sort_by_key(|c| c.index);
                }
            }
            V::Config(c) => self.config.push(c.clone()),
            V::ModuleConfig(m) => self.module_config.push(m.clone()),
            _ => return false,
        }
        true
    }

    /// The parts a usable handshake needs that have not arrived, named for an operator.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.my_info.is_none() {
            missing.push("my_info (the radio's identity)");
        }
        if self.own.is_none() {
            missing.push("node_info for the radio itself");
        }
        if self.active_channels().next().is_none() {
            missing.push("channels (no channel in use)");
        }
        if self.lora().is_none() {
            missing.push("config.lora (region and modem preset)");
        }
        missing
    }
}
