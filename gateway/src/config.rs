//! The gateway's configuration: one TOML file plus `ARCHIPEL_`-prefixed environment overrides
//! (`ARCHIPEL_STORE__PATH=/data/archipel.sqlite` sets `store.path`).
//!
//! Loading checks everything it can without touching a radio or a disk, and every error names
//! the key, the value and the fix, because the person reading it is a volunteer at a hub in a
//! crisis. Channel keys are [`Psk`]s, whose `Debug` never shows the key: a config can be logged.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use mesh_core::{Class, GovernorConfig, ModemPreset, NodeId, Psk};
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this gateway is.
    pub gateway: GatewaySection,
    /// Where messages wait, and for how long.
    #[serde(default)]
    pub store: StoreSection,
    /// Defaults for every radio's airtime governor.
    #[serde(default)]
    pub airtime: AirtimeSection,
    /// The attached radios.
    #[serde(default, rename = "radio")]
    pub radios: Vec<RadioSection>,
    /// Which channels cross which radios.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSection>,
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// A name for logs and the status page.
    pub name: String,
    /// The id this gateway signs relayed traffic with (the `gateway_id` of the envelopes it
    /// hands its radios), like a node id: `!` and 8 hex digits.
    pub id: NodeId,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// The SQLite file.
    pub path: PathBuf,
    /// How long a (from, id) stays in the seen-set, in hours.
    pub seen_window_hours: u64,
    /// Most messages queued for one destination; beyond it the least urgent go first.
    pub max_queue_per_destination: u64,
    /// How long each class of message may wait before it is dropped (and counted).
    pub ttl: TtlSection,
    /// Attempts before a delivery the destination keeps refusing is set aside.
    pub max_attempts: u32,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            path: PathBuf::from("archipel.sqlite"),
            seen_window_hours: 96,
            max_queue_per_destination: 10_000,
            ttl: TtlSection::default(),
            max_attempts: 10,
        }
    }
}

/// `[store.ttl]`, in minutes per class (fractions allowed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtlSection {
    /// Direct texts.
    pub direct_minutes: f64,
    /// Channel texts.
    pub channel_minutes: f64,
    /// Positions and node info.
    pub position_minutes: f64,
    /// Telemetry and the rest.
    pub telemetry_minutes: f64,
}

impl Default for TtlSection {
    fn default() -> Self {
        TtlSection {
            direct_minutes: 72.0 * 60.0,
            channel_minutes: 24.0 * 60.0,
            position_minutes: 60.0,
            telemetry_minutes: 30.0,
        }
    }
}

impl TtlSection {
    /// The time to live of a class.
    pub fn of(&self, class: Class) -> Duration {
        let minutes = match class {
            Class::Direct => self.direct_minutes,
            Class::Channel => self.channel_minutes,
            Class::Position => self.position_minutes,
            Class::Telemetry => self.telemetry_minutes,
        };
        Duration::from_secs_f64(minutes.clamp(0.0, 1e9) * 60.0)
    }
}

/// `[airtime]`: how politely the gateway uses the meshes it injects into.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AirtimeSection {
    /// The rolling window duty cycles are measured over, in seconds.
    pub window_secs: u64,
    /// Channel utilisation (percent) above which positions and telemetry wait.
    pub defer_low_above: f32,
    /// Channel utilisation (percent) above which everything waits.
    pub defer_all_above: f32,
}

impl Default for AirtimeSection {
    fn default() -> Self {
        AirtimeSection {
            window_secs: 3600,
            defer_low_above: 25.0,
            defer_all_above: 40.0,
        }
    }
}

/// `[[radio]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadioSection {
    /// The operator's name for it, used in routes and logs.
    pub name: String,
    /// `HOST:PORT` of a radio's TCP API.
    pub tcp: Option<String>,
    /// Serial device path.
    pub serial: Option<PathBuf>,
    /// Serial speed.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// LoRa region code as the apps show it (`EU_868`, `US`, `ANZ`...): sets the legal duty cycle.
    pub region: String,
    /// Modem preset of the mesh this radio is on: sets airtime per packet.
    pub preset: ModemPreset,
    /// A duty-cycle limit (percent) instead of the region's.
    pub duty_cycle_percent: Option<f64>,
    /// The radio's channels, index 0 first, as configured on the radio.
    pub channels: Vec<ChannelSection>,
}

fn default_baud() -> u32 {
    115_200
}

/// One channel of a radio.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSection {
    /// Channel name (for an unnamed primary channel: the preset's name, such as `LongFast`).
    pub name: String,
    /// Its key: `default`, `none`, `simpleN` or base64.
    pub psk: Psk,
}

/// `[[route]]`: traffic on `channel` heard by a `from` radio goes to every `to` radio, on
/// `to_channel` there; unless `one_way`, traffic on `to_channel` heard by a `to` radio also
/// goes back to the `from` radios.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Channel name on the `from` radios.
    pub channel: String,
    /// Radios whose traffic on `channel` is relayed.
    pub from: Vec<String>,
    /// Radios it is relayed to.
    pub to: Vec<String>,
    /// Channel name on the `to` radios (default: the same name).
    pub to_channel: Option<String>,
    /// Relay only from `from` to `to`.
    #[serde(default)]
    pub one_way: bool,
    /// Hop limit the relayed packet starts with on the far mesh: 0 (the default) means only
    /// the radio's direct neighbours hear it, so a bridge never floods a distant mesh.
    #[serde(default)]
    pub hops: u8,
}

/// The duty cycle a region allows by law, when it has one (percent).
pub fn region_duty_cycle(region: &str) -> Option<f64> {
    match region {
        "EU_868" | "EU_433" | "UA_868" | "UA_433" => Some(10.0),
        _ => None,
    }
}

/// Region codes the firmware knows.
const REGIONS: &[&str] = &[
    "UNSET", "US", "EU_433", "EU_868", "CN", "JP", "ANZ", "ANZ_433", "KR", "TW", "RU", "IN",
    "NZ_865", "TH", "LORA_24", "UA_433", "UA_868", "MY_433", "MY_919", "SG_923", "PH_433",
    "PH_868", "PH_915", "KZ_433", "KZ_863", "NP_865", "BR_902",
];

/// A configuration that cannot be used, with what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Every problem found, each naming key, value and fix.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads `path`, applies `ARCHIPEL_` overrides, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError {
                problems: vec![format!(
                    "config file {} not found: give the path of a TOML file (deploy/gateway.toml is an example)",
                    path.display()
                )],
            });
        }
        Self::from_figment(
            Figment::new().merge(Toml::file_exact(path)),
            &path.display().to_string(),
        )
    }

    /// Parses a TOML text (no environment), and validates. For configs built in code.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| figment_error(e, "config"))?;
        config.validate()?;
        Ok(config)
    }

    fn from_figment(figment: Figment, origin: &str) -> Result<Config, ConfigError> {
        // Only the sections that make sense as single values are overridable from the
        // environment; other ARCHIPEL_ variables (ARCHIPEL_LOG...) are not config keys.
        let env = Env::prefixed("ARCHIPEL_").split("__").filter(|key| {
            let k = key.as_str().to_ascii_lowercase();
            ["gateway.", "store.", "airtime."]
                .iter()
                .any(|s| k.starts_with(s))
        });
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| figment_error(e, origin))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        if self.radios.is_empty() {
            p.push("radio: no radio configured: add a [[radio]] section with name, tcp or serial, region, preset and channels".to_owned());
        }
        let mut names = HashSet::new();
        for (i, r) in self.radios.iter().enumerate() {
            let key = format!("radio[{i}] ({})", r.name);
            if r.name.trim().is_empty() {
                p.push(format!(
                    "radio[{i}].name is empty: give each radio a short name"
                ));
            }
            if !names.insert(r.name.as_str()) {
                p.push(format!(
                    "{key}.name `{}` is used twice: radio names must be unique",
                    r.name
                ));
            }
            match (&r.tcp, &r.serial) {
                (None, None) => p.push(format!(
                    "{key}: no connection: set `tcp = \"HOST:4403\"` or `serial = \"/dev/ttyUSB0\"`"
                )),
                (Some(_), Some(_)) => p.push(format!(
                    "{key}: both tcp and serial are set: keep the one the radio is attached by"
                )),
                (Some(addr), None) if !addr.contains(':') => p.push(format!(
                    "{key}.tcp = `{addr}` has no port: write `{addr}:4403`"
                )),
                _ => {}
            }
            if !REGIONS.contains(&r.region.as_str()) {
                p.push(format!(
                    "{key}.region = `{}` is not a LoRa region code: use the radio's, such as EU_868, US or ANZ",
                    r.region
                ));
            }
            if let Some(d) = r.duty_cycle_percent
                && !(d > 0.0 && d <= 100.0)
            {
                p.push(format!(
                    "{key}.duty_cycle_percent = {d}: give a percentage above 0 and at most 100"
                ));
            }
            if r.channels.is_empty() || r.channels.len() > 8 {
                p.push(format!(
                    "{key}.channels: {} channels given: a radio has 1 to 8 (index 0 is the primary)",
                    r.channels.len()
                ));
            }
            let mut ch = HashSet::new();
            for c in &r.channels {
                if !ch.insert(c.name.as_str()) {
                    p.push(format!(
                        "{key}.channels: `{}` appears twice: channel names must differ",
                        c.name
                    ));
                }
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            let key = format!("route[{i}]");
            let to_channel = route.to_channel.as_deref().unwrap_or(&route.channel);
            for (field, list, channel) in [
                ("from", &route.from, route.channel.as_str()),
                ("to", &route.to, to_channel),
            ] {
                if list.is_empty() {
                    p.push(format!("{key}.{field} is empty: name at least one radio"));
                }
                for name in list {
                    match self.radio(name) {
                        None => p.push(format!(
                            "{key}.{field}: no radio named `{name}`: radios are {}",
                            self.radio_names()
                        )),
                        Some(r) if !r.channels.iter().any(|c| c.name == channel) => p.push(format!(
                            "{key}: radio `{name}` has no channel `{channel}`: its channels are {}",
                            r.channels.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                        )),
                        Some(_) => {}
                    }
                }
            }
            if let Some(both) = route.from.iter().find(|f| route.to.contains(f)) {
                p.push(format!(
                    "{key}: radio `{both}` is in both from and to: a packet is never sent back to the radio it came from"
                ));
            }
            if route.hops > 7 {
                p.push(format!(
                    "{key}.hops = {}: the mesh allows at most 7",
                    route.hops
                ));
            }
        }
        if self.store.seen_window_hours == 0 {
            p.push(
                "store.seen_window_hours = 0: duplicates would be relayed again; use at least 96"
                    .into(),
            );
        }
        if self.store.max_queue_per_destination == 0 {
            p.push(
                "store.max_queue_per_destination = 0: nothing could wait; use 10000 or so".into(),
            );
        }
        for (key, v) in [
            ("direct_minutes", self.store.ttl.direct_minutes),
            ("channel_minutes", self.store.ttl.channel_minutes),
            ("position_minutes", self.store.ttl.position_minutes),
            ("telemetry_minutes", self.store.ttl.telemetry_minutes),
        ] {
            if !(v > 0.0 && v <= 1e7) {
                p.push(format!(
                    "store.ttl.{key} = {v}: give how many minutes such a message may wait (above 0)"
                ));
            }
        }
        if self.store.max_attempts == 0 {
            p.push("store.max_attempts = 0: nothing could be sent; use 10 or so".into());
        }
        if self.airtime.window_secs == 0 {
            p.push("airtime.window_secs = 0: use 3600 (an hour, as duty-cycle rules do)".into());
        }
        let (low, all) = (self.airtime.defer_low_above, self.airtime.defer_all_above);
        if !(0.0..=100.0).contains(&low) || !(0.0..=100.0).contains(&all) || low > all {
            p.push(format!(
                "airtime.defer_low_above = {low} and airtime.defer_all_above = {all}: give percentages from 0 to 100, the first not above the second (low-priority traffic is deferred first)"
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }

    /// The radio with this name.
    pub fn radio(&self, name: &str) -> Option<&RadioSection> {
        self.radios.iter().find(|r| r.name == name)
    }

    fn radio_names(&self) -> String {
        let names: Vec<&str> = self.radios.iter().map(|r| r.name.as_str()).collect();
        if names.is_empty() {
            "none (add a [[radio]] section)".into()
        } else {
            names.join(", ")
        }
    }

    /// The governor limits of one radio.
    pub fn governor(&self, radio: &RadioSection) -> GovernorConfig {
        GovernorConfig {
            duty_cycle_percent: radio
                .duty_cycle_percent
                .or_else(|| region_duty_cycle(&radio.region)),
            window: Duration::from_secs(self.airtime.window_secs),
            defer_low_above: self.airtime.defer_low_above,
            defer_all_above: self.airtime.defer_all_above,
            ..GovernorConfig::default()
        }
    }

    /// A one-screen summary for `check-config` (no keys).
    pub fn summary(&self) -> String {
        let mut s = format!("gateway {} ({})\n", self.gateway.name, self.gateway.id);
        s += &format!(
            "store {} (seen-set {} h, at most {} queued per destination)\n",
            self.store.path.display(),
            self.store.seen_window_hours,
            self.store.max_queue_per_destination
        );
        for r in &self.radios {
            let at = r
                .tcp
                .clone()
                .or_else(|| r.serial.as_ref().map(|p| p.display().to_string()))
                .unwrap_or_default();
            let duty = self
                .governor(r)
                .duty_cycle_percent
                .map(|d| format!("{d}% duty cycle"))
                .unwrap_or_else(|| "no duty-cycle limit".into());
            let chans: Vec<&str> = r.channels.iter().map(|c| c.name.as_str()).collect();
            s += &format!(
                "radio {} at {at}: {} {}, {duty}, channels {}\n",
                r.name,
                r.region,
                r.preset,
                chans.join(", ")
            );
        }
        for route in &self.routes {
            let to_channel = route.to_channel.as_deref().unwrap_or(&route.channel);
            let arrow = if route.one_way { "->" } else { "<->" };
            s += &format!(
                "route {}#{} {arrow} {}#{} (hop limit {} on arrival)\n",
                route.from.join("+"),
                route.channel,
                route.to.join("+"),
                to_channel,
                route.hops
            );
        }
        s
    }
}

/// Rewords a figment error so it names the key, the value and what is expected.
fn figment_error(e: figment::Error, origin: &str) -> ConfigError {
    let problems = e
        .into_iter()
        .map(|err| {
            let key = if err.path.is_empty() {
                String::from("(top level)")
            } else {
                err.path.join(".")
            };
            let hint = match &err.kind {
                figment::error::Kind::MissingField(f) => {
                    format!("missing `{f}`: add it (see deploy/gateway.toml)")
                }
                figment::error::Kind::UnknownField(f, expected) => format!(
                    "unknown key `{f}`: check the spelling; expected one of {}",
                    expected.join(", ")
                ),
                other => other.to_string(),
            };
            format!("{origin}: {key}: {hint}")
        })
        .collect();
    ConfigError { problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[gateway]
name = "hub"
id = "!a7c40001"
[[radio]]
name = "north"
tcp = "127.0.0.1:4403"
region = "EU_868"
preset = "LongFast"
channels = [ { name = "LongFast", psk = "AQ==" } ]
[[radio]]
name = "south"
serial = "/dev/ttyUSB0"
region = "EU_868"
preset = "MediumFast"
channels = [ { name = "MediumFast", psk = "AQ==" }, { name = "ops", psk = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=" } ]
[[route]]
channel = "LongFast"
from = ["north"]
to = ["south"]
to_channel = "MediumFast"
"#;

    fn problems(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn a_good_config_loads_with_defaults() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.store.seen_window_hours, 96);
        assert_eq!(c.governor(&c.radios[0]).duty_cycle_percent, Some(10.0));
        assert!(c.summary().contains("north#LongFast <-> south#MediumFast"));
        assert!(!format!("{c:?}").contains("c2VjcmV0"), "keys never printed");
        assert!(!c.summary().contains("c2VjcmV0"));
    }

    #[test]
    fn a_bad_preset_names_the_key_and_value() {
        let e = problems(&GOOD.replace("\"MediumFast\"\nchannels", "\"Fastest\"\nchannels"));
        assert!(e.contains("radio.1.preset") && e.contains("Fastest"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_refused_with_the_expected_ones() {
        let e = problems(&GOOD.replace(
            "region = \"EU_868\"\npreset = \"LongFast\"",
            "regoin = \"EU_868\"\npreset = \"LongFast\"",
        ));
        assert!(e.contains("regoin") && e.contains("region"), "{e}");
    }

    #[test]
    fn routes_must_name_existing_radios_and_channels() {
        let e = problems(&GOOD.replace("to = [\"south\"]", "to = [\"sout\"]"));
        assert!(
            e.contains("route[0].to: no radio named `sout`: radios are north, south"),
            "{e}"
        );
        let e = problems(&GOOD.replace("to_channel = \"MediumFast\"", "to_channel = \"Chat\""));
        assert!(e.contains("radio `south` has no channel `Chat`"), "{e}");
    }

    #[test]
    fn a_bad_psk_and_a_bad_gateway_id_are_named() {
        let e = problems(&GOOD.replace(
            "psk = \"AQ==\" } ]\n[[radio]]",
            "psk = \"!!\" } ]\n[[radio]]",
        ));
        assert!(e.contains("psk") && e.contains("base64"), "{e}");
        let e = problems(&GOOD.replace("!a7c40001", "a7c40001"));
        assert!(e.contains("gateway.id") && e.contains("a7c40001"), "{e}");
    }

    #[test]
    fn connection_and_region_problems_are_reported_together() {
        let e = problems(
            &GOOD
                .replace("tcp = \"127.0.0.1:4403\"", "tcp = \"radio.lan\"")
                .replace(
                    "region = \"EU_868\"\npreset = \"MediumFast\"",
                    "region = \"EU868\"\npreset = \"MediumFast\"",
                ),
        );
        assert!(e.contains("has no port: write `radio.lan:4403`"), "{e}");
        assert!(e.contains("region = `EU868`"), "{e}");
    }
}
