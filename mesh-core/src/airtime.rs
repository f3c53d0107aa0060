//! Modem presets and LoRa time-on-air (Semtech's formula, SX127x/SX126x datasheets).
//!
//! Meshtastic uses explicit headers, CRC on, a 16-symbol preamble, and low-data-rate
//! optimisation whenever a symbol lasts 16 ms or more.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::proto::config::lo_ra_config::ModemPreset as ProtoPreset;

/// Preamble length Meshtastic configures on every preset.
pub const PREAMBLE_SYMBOLS: u32 = 16;

/// The override frequencies (`lora.override_frequency`, MHz) a configuration may pin a radio
/// to: the firmware's bands run from 433 MHz to 2.4 GHz, and the margin takes any band a
/// newer firmware adds. A value outside is a typo (kHz, Hz) or a missing value.
pub const FREQUENCY_MHZ: std::ops::RangeInclusive<f64> = 137.0..=2500.0;

/// The physical-layer settings that decide airtime.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraParams {
    /// Bandwidth in Hz.
    pub bandwidth_hz: u32,
    /// Spreading factor, 7..=12.
    pub spreading_factor: u8,
    /// Coding rate denominator: 4/5 is 5, 4/8 is 8.
    pub coding_rate: u8,
}

impl LoraParams {
    /// Duration of one symbol.
    pub fn symbol_time(&self) -> Duration {
        Duration::from_secs_f64(
            f64::from(1u32 << self.spreading_factor) / f64::from(self.bandwidth_hz),
        )
    }

    /// Time on air of a LoRa frame carrying `len` bytes (header and payload together).
    pub fn time_on_air(&self, len: usize) -> Duration {
        let t_sym = self.symbol_time().as_secs_f64();
        let sf = f64::from(self.spreading_factor);
        let low_rate = if t_sym >= 0.016 { 1.0 } else { 0.0 };
        let preamble = (f64::from(PREAMBLE_SYMBOLS) + 4.25) * t_sym;
        // Explicit header (IH = 0), CRC on.
        let numerator = 8.0 * len as f64 - 4.0 * sf + 28.0 + 16.0;
        let denominator = 4.0 * (sf - 2.0 * low_rate);
        let extra = ((numerator / denominator).ceil() * f64::from(self.coding_rate)).max(0.0);
        let payload_symbols = 8.0 + extra;
        Duration::from_secs_f64(preamble + payload_symbols * t_sym)
    }
}

/// Meshtastic's modem presets (`Config.LoRaConfig.ModemPreset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ModemPreset {
    /// SF11, 250 kHz, 4/5: the default.
    #[default]
    LongFast,
    /// SF12, 125 kHz, 4/8.
    LongSlow,
    /// SF12, 62.5 kHz, 4/8 (deprecated by the firmware, still decodable).
    VeryLongSlow,
    /// SF10, 250 kHz, 4/5.
    MediumSlow,
    /// SF9, 250 kHz, 4/5.
    MediumFast,
    /// SF8, 250 kHz, 4/5.
    ShortSlow,
    /// SF7, 250 kHz, 4/5.
    ShortFast,
    /// SF11, 125 kHz, 4/8.
    LongModerate,
    /// SF7, 500 kHz, 4/5.
    ShortTurbo,
    /// SF11, 500 kHz, 4/8.
    LongTurbo,
}

impl ModemPreset {
    /// Every preset, in protobuf order.
    pub const ALL: [ModemPreset; 10] = [
        ModemPreset::LongFast,
        ModemPreset::LongSlow,
        ModemPreset::VeryLongSlow,
        ModemPreset::MediumSlow,
        ModemPreset::MediumFast,
        ModemPreset::ShortSlow,
        ModemPreset::ShortFast,
        ModemPreset::LongModerate,
        ModemPreset::ShortTurbo,
        ModemPreset::LongTurbo,
    ];

    /// The preset's radio settings (firmware `RadioInterface::applyModemConfig`, narrow bands).
    pub fn params(self) -> LoraParams {
        let (bandwidth_hz, spreading_factor, coding_rate) = match self {
            ModemPreset::ShortTurbo => (500_000, 7, 5),
            ModemPreset::ShortFast => (250_000, 7, 5),
            ModemPreset::ShortSlow => (250_000, 8, 5),
            ModemPreset::MediumFast => (250_000, 9, 5),
            ModemPreset::MediumSlow => (250_000, 10, 5),
            ModemPreset::LongFast => (250_000, 11, 5),
            ModemPreset::LongTurbo => (500_000, 11, 8),
            ModemPreset::LongModerate => (125_000, 11, 8),
            ModemPreset::LongSlow => (125_000, 12, 8),
            ModemPreset::VeryLongSlow => (62_500, 12, 8),
        };
        LoraParams {
            bandwidth_hz,
            spreading_factor,
            coding_rate,
        }
    }

    /// Time on air of a `len`-byte LoRa frame with this preset.
    pub fn time_on_air(self, len: usize) -> Duration {
        self.params().time_on_air(len)
    }

    /// The name the apps show, which is also the primary channel's name when it has none.
    pub fn display_name(self) -> &'static str {
        match self {
            ModemPreset::LongFast => "LongFast",
            ModemPreset::LongSlow => "LongSlow",
            ModemPreset::VeryLongSlow => "VLongSlow",
            ModemPreset::MediumSlow => "MediumSlow",
            ModemPreset::MediumFast => "MediumFast",
            ModemPreset::ShortSlow => "ShortSlow",
            ModemPreset::ShortFast => "ShortFast",
            ModemPreset::LongModerate => "LongMod",
            ModemPreset::ShortTurbo => "ShortTurbo",
            ModemPreset::LongTurbo => "LongTurbo",
        }
    }

    /// The protobuf value.
    #[allow(deprecated)] // LongSlow and VeryLongSlow are deprecated upstream but still in use.
    pub fn to_proto(self) -> ProtoPreset {
        match self {
            ModemPreset::LongFast => ProtoPreset::LongFast,
            ModemPreset::LongSlow => ProtoPreset::LongSlow,
            ModemPreset::VeryLongSlow => ProtoPreset::VeryLongSlow,
            ModemPreset::MediumSlow => ProtoPreset::MediumSlow,
            ModemPreset::MediumFast => ProtoPreset::MediumFast,
            ModemPreset::ShortSlow => ProtoPreset::ShortSlow,
            ModemPreset::ShortFast => ProtoPreset::ShortFast,
            ModemPreset::LongModerate => ProtoPreset::LongModerate,
            ModemPreset::ShortTurbo => ProtoPreset::ShortTurbo,
            ModemPreset::LongTurbo => ProtoPreset::LongTurbo,
        }
    }

    /// From the protobuf value; unknown (newer) presets are `None`.
    pub fn from_proto(value: i32) -> Option<ModemPreset> {
        ModemPreset::ALL
            .into_iter()
            .find(|p| p.to_proto() as i32 == value)
    }
}

impl fmt::Display for ModemPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

/// An unknown preset name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown modem preset `{0}`: use one of LongFast, LongSlow, LongModerate, LongTurbo, MediumFast, MediumSlow, ShortFast, ShortSlow, ShortTurbo, VeryLongSlow"
)]
pub struct PresetError(String);

impl FromStr for ModemPreset {
    type Err = PresetError;

    /// Accepts `LongFast`, `LONG_FAST`, `long-fast` and the display names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        ModemPreset::ALL
            .into_iter()
            .find(|p| {
                let name = format!("{:?}", p).to_ascii_lowercase();
                name == norm || p.display_name().to_ascii_lowercase() == norm
            })
            .ok_or_else(|| PresetError(s.to_owned()))
    }
}

impl<'de> serde::Deserialize<'de> for ModemPreset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[test]
    fn long_fast_60_bytes_takes_about_682_ms() {
        let t = ms(ModemPreset::LongFast.time_on_air(60));
        assert!((t - 682.0).abs() < 1.0, "{t}");
    }

    #[test]
    fn slower_presets_take_longer_for_the_same_bytes() {
        let order = [
            ModemPreset::ShortTurbo,
            ModemPreset::ShortFast,
            ModemPreset::ShortSlow,
            ModemPreset::MediumFast,
            ModemPreset::MediumSlow,
            ModemPreset::LongFast,
            ModemPreset::LongModerate,
            ModemPreset::LongSlow,
            ModemPreset::VeryLongSlow,
        ];
        for pair in order.windows(2) {
            assert!(
                pair[0].time_on_air(60) < pair[1].time_on_air(60),
                "{:?} vs {:?}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn known_figures_for_other_presets() {
        // By hand: LongSlow is 20.25 + 104 symbols of 32.768 ms (low-data-rate optimisation on);
        // ShortTurbo is 20.25 + 98 symbols of 0.256 ms.
        let long_slow = ms(ModemPreset::LongSlow.time_on_air(60));
        assert!((long_slow - 4071.4).abs() < 1.0, "{long_slow}");
        let short_turbo = ms(ModemPreset::ShortTurbo.time_on_air(60));
        assert!((short_turbo - 30.3).abs() < 1.0, "{short_turbo}");
    }

    #[test]
    fn preset_names_parse_in_every_common_spelling() {
        for s in ["LongFast", "LONG_FAST", "long-fast", "longfast"] {
            assert_eq!(s.parse::<ModemPreset>().unwrap(), ModemPreset::LongFast);
        }
        assert_eq!(
            "LongMod".parse::<ModemPreset>().unwrap(),
            ModemPreset::LongModerate
        );
        assert!("Fastest".parse::<ModemPreset>().is_err());
        for p in ModemPreset::ALL {
            assert_eq!(ModemPreset::from_proto(p.to_proto() as i32), Some(p));
        }
    }
}
