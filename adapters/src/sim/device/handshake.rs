//! The static part of the PhoneAPI: the `want_config_id` answer, rendered from the device's
//! profile in the firmware's order (v2.7.26 `PhoneAPI::getFromRadio`, see the module doc of
//! [`device`](super)).

use std::time::Duration;

use mesh_core::Root;
use mesh_core::proto::from_radio::PayloadVariant as Out;
use mesh_core::proto::{self, config, module_config};

use super::{
    DEVICE_STATE_VERSION, Device, FIRMWARE_VERSION, MIN_APP_VERSION, POSITION_FLAGS, RadioStatus,
    SPECIAL_NONCE_ONLY_CONFIG, SPECIAL_NONCE_ONLY_NODES, Session, TELEMETRY_EVERY, from_radio,
};
use crate::sim::config::MAX_CHANNELS;
use crate::sim::world::DEFAULT_HOP_LIMIT;

impl Device {
    /// The whole `want_config_id` answer, after which the session is live.
    pub(super) fn handshake(
        &mut self,
        nonce: u32,
        now: Duration,
        status: RadioStatus,
    ) -> Vec<proto::FromRadio> {
        let mut out = Vec::new();
        let only_nodes = nonce == SPECIAL_NONCE_ONLY_NODES;
        let only_config = nonce == SPECIAL_NONCE_ONLY_CONFIG;
        if !only_nodes {
            out.push(from_radio(Out::MyInfo(self.my_info())));
            out.push(from_radio(Out::DeviceuiConfig(
                proto::DeviceUiConfig::default(),
            )));
        }
        out.push(from_radio(Out::NodeInfo(self.own_node_info(now, status))));
        if !only_nodes {
            out.push(from_radio(Out::Metadata(self.metadata())));
            for index in 0..MAX_CHANNELS {
                out.push(from_radio(Out::Channel(self.channel(index))));
            }
            for config in self.configs() {
                out.push(from_radio(Out::Config(config)));
            }
            for module in module_configs(self.profile.mqtt_proxy, &self.profile.mqtt_root) {
                out.push(from_radio(Out::ModuleConfig(module)));
            }
        }
        if !only_config {
            for info in self.nodes.values() {
                out.push(from_radio(Out::NodeInfo(info.clone())));
            }
        }
        out.push(from_radio(Out::ConfigCompleteId(nonce)));
        self.session = Session::Live;
        if self.next_telemetry.is_none() {
            self.next_telemetry = Some(now + TELEMETRY_EVERY);
        }
        out.extend(self.drain_to_phone());
        out
    }

    fn my_info(&self) -> proto::MyNodeInfo {
        let mut device_id = [0u8; 16];
        device_id[..4].copy_from_slice(b"ASIM");
        device_id[12..].copy_from_slice(&self.profile.node.get().to_be_bytes());
        proto::MyNodeInfo {
            my_node_num: self.profile.node.get(),
            reboot_count: 1,
            min_app_version: MIN_APP_VERSION,
            device_id: device_id.to_vec(),
            pio_env: "native".into(),
            firmware_edition: proto::FirmwareEdition::Vanilla as i32,
            nodedb_count: 1 + self.nodes.len() as u32,
        }
    }

    fn own_node_info(&self, now: Duration, status: RadioStatus) -> proto::NodeInfo {
        proto::NodeInfo {
            num: self.profile.node.get(),
            user: Some(self.profile.user.clone()),
            last_heard: self.unix_time(now),
            device_metrics: Some(self.own_metrics(now, status)),
            is_favorite: true,
            ..Default::default()
        }
    }

    fn metadata(&self) -> proto::DeviceMetadata {
        proto::DeviceMetadata {
            firmware_version: FIRMWARE_VERSION.into(),
            device_state_version: DEVICE_STATE_VERSION,
            can_shutdown: false,
            has_wifi: true,
            has_bluetooth: false,
            has_ethernet: false,
            role: self.profile.role.to_proto() as i32,
            position_flags: POSITION_FLAGS,
            hw_model: self.profile.user.hw_model,
            has_remote_hardware: false,
            has_pkc: self.profile.private_key.is_some(),
            excluded_modules: 0,
        }
    }

    fn channel(&self, index: usize) -> proto::Channel {
        let Some(entry) = self.profile.channels.get(index) else {
            return proto::Channel {
                index: index as i32,
                settings: Some(proto::ChannelSettings::default()),
                role: proto::channel::Role::Disabled as i32,
            };
        };
        let role = if index == 0 {
            proto::channel::Role::Primary
        } else {
            proto::channel::Role::Secondary
        };
        proto::Channel {
            index: index as i32,
            settings: Some(proto::ChannelSettings {
                psk: entry.psk.as_bytes().to_vec(),
                name: entry.configured_name.clone(),
                downlink_enabled: self.profile.mqtt_proxy,
                uplink_enabled: self.profile.mqtt_proxy,
                module_settings: Some(proto::ModuleSettings {
                    position_precision: if index == 0 { 13 } else { 0 },
                    is_muted: false,
                }),
                ..Default::default()
            }),
            role: role as i32,
        }
    }

    fn configs(&self) -> Vec<proto::Config> {
        use config::PayloadVariant as C;
        let p = &self.profile;
        [
            C::Device(config::DeviceConfig {
                role: p.role.to_proto() as i32,
                node_info_broadcast_secs: 10_800,
                ..Default::default()
            }),
            C::Position(config::PositionConfig {
                position_broadcast_secs: 900,
                position_broadcast_smart_enabled: true,
                gps_update_interval: 120,
                position_flags: POSITION_FLAGS,
                broadcast_smart_minimum_distance: 100,
                broadcast_smart_minimum_interval_secs: 30,
                gps_mode: config::position_config::GpsMode::NotPresent as i32,
                ..Default::default()
            }),
            C::Power(config::PowerConfig {
                ls_secs: 300,
                wait_bluetooth_secs: 60,
                sds_secs: u32::MAX,
                min_wake_secs: 10,
                ..Default::default()
            }),
            C::Network(config::NetworkConfig {
                wifi_enabled: true,
                ntp_server: "meshtastic.pool.ntp.org".into(),
                ..Default::default()
            }),
            C::Display(config::DisplayConfig {
                screen_on_secs: 600,
                ..Default::default()
            }),
            C::Lora(config::LoRaConfig {
                use_preset: true,
                modem_preset: p.preset.to_proto() as i32,
                region: p.region as i32,
                hop_limit: u32::from(DEFAULT_HOP_LIMIT),
                tx_enabled: true,
                tx_power: 0,
                sx126x_rx_boosted_gain: true,
                override_frequency: p.override_frequency,
                ..Default::default()
            }),
            C::Bluetooth(config::BluetoothConfig {
                enabled: false,
                mode: config::bluetooth_config::PairingMode::RandomPin as i32,
                fixed_pin: 0,
            }),
            // The firmware reports its whole security config, private key included
            // (`PhoneAPI::getFromRadio`); a node without PKI has neither key.
            C::Security(config::SecurityConfig {
                public_key: p.user.public_key.clone(),
                private_key: p
                    .private_key
                    .as_ref()
                    .map_or_else(Vec::new, |k| k.to_bytes().to_vec()),
                serial_enabled: true,
                ..Default::default()
            }),
            C::Sessionkey(config::SessionkeyConfig {}),
            C::DeviceUi(proto::DeviceUiConfig::default()),
        ]
        .into_iter()
        .map(|v| proto::Config {
            payload_variant: Some(v),
        })
        .collect()
    }
}

/// The module configs, in the firmware's order (its `ModuleConfigType` values).
fn module_configs(mqtt_proxy: bool, root: &Root) -> Vec<proto::ModuleConfig> {
    use module_config::PayloadVariant as M;
    [
        M::Mqtt(module_config::MqttConfig {
            enabled: mqtt_proxy,
            proxy_to_client_enabled: mqtt_proxy,
            // A private address: the firmware uplinks other nodes' packets without their
            // OK-to-MQTT bit only towards private brokers.
            address: if mqtt_proxy {
                "127.0.0.1".into()
            } else {
                "mqtt.meshtastic.org".into()
            },
            encryption_enabled: true,
            root: root.to_string(),
            ..Default::default()
        }),
        M::Serial(module_config::SerialConfig::default()),
        M::ExternalNotification(module_config::ExternalNotificationConfig::default()),
        M::StoreForward(module_config::StoreForwardConfig::default()),
        M::RangeTest(module_config::RangeTestConfig::default()),
        M::Telemetry(module_config::TelemetryConfig {
            device_update_interval: 1800,
            environment_update_interval: 1800,
            device_telemetry_enabled: true,
            ..Default::default()
        }),
        M::CannedMessage(module_config::CannedMessageConfig::default()),
        M::Audio(module_config::AudioConfig::default()),
        M::RemoteHardware(module_config::RemoteHardwareConfig::default()),
        M::NeighborInfo(module_config::NeighborInfoConfig::default()),
        M::AmbientLighting(module_config::AmbientLightingConfig::default()),
        M::DetectionSensor(module_config::DetectionSensorConfig::default()),
        M::Paxcounter(module_config::PaxcounterConfig::default()),
    ]
    .into_iter()
    .map(|v| proto::ModuleConfig {
        payload_variant: Some(v),
    })
    .collect()
}
