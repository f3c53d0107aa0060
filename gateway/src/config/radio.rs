//! `[[radio]]`: a Meshtastic radio attached by TCP or serial, and the legal limits of its region.
//!
//! Region and preset are optional: the radio reports both in its handshake, and the runtime
//! takes them from there (warning loudly when a configured value disagrees). When given, they
//! are checked here and used until the radio has said what it is.

use std::collections::HashMap;
use std::path::PathBuf;

use mesh_core::{FREQUENCY_MHZ, ModemPreset};
use serde::Deserialize;

use super::channel::{ChannelSection, channel_name};
use super::error::Problem;
use super::syntax;

/// The port of a radio's TCP API (`SERVER_API_DEFAULT_PORT`).
pub const RADIO_PORT: u16 = 4403;

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
    /// LoRa region code as the apps show it (`EU_868`, `US`, `ANZ`...): sets the legal duty
    /// cycle until the radio reports its own.
    pub region: Option<String>,
    /// Modem preset of the mesh this radio is on: sets airtime per packet until the radio
    /// reports its own.
    pub preset: Option<ModemPreset>,
    /// The frequency the radio should be pinned to (`lora.override_frequency`, MHz), as a
    /// network such as Gaulix publishes it: checked against what the radio reports, since a
    /// radio on another frequency hears none of its mesh.
    pub frequency_mhz: Option<f64>,
    /// A duty-cycle limit (percent) instead of the region's.
    pub duty_cycle_percent: Option<f64>,
    /// The radio's channels, index 0 first, as configured on the radio.
    pub channels: Vec<ChannelSection>,
}

fn default_baud() -> u32 {
    115_200
}

impl RadioSection {
    /// Where the radio is attached, as the operator wrote it.
    pub fn attachment(&self) -> String {
        self.tcp
            .clone()
            .or_else(|| self.serial.as_ref().map(|p| p.display().to_string()))
            .unwrap_or_default()
    }
}

/// The duty cycle a region allows by law, when it has one (percent), as the firmware's region
/// table has it (`RadioInterface.cpp`, `RDEF(..., duty_cycle, ...)`).
pub fn region_duty_cycle(region: &str) -> Option<f64> {
    match region {
        "EU_868" | "EU_433" | "UA_433" | "TH" => Some(10.0),
        "UA_868" => Some(1.0),
        _ => None,
    }
}

/// How far a radio's reported frequency may be from the configured one (MHz): the firmware
/// keeps it as a 32-bit float, so 869.4625 reads back as 869.46252.
pub const FREQUENCY_TOLERANCE_MHZ: f64 = 0.0005;

/// Region codes the firmware knows (and the radios report).
pub const REGIONS: &[&str] = &[
    "US", "EU_433", "EU_868", "CN", "JP", "ANZ", "ANZ_433", "KR", "TW", "RU", "IN", "NZ_865", "TH",
    "LORA_24", "UA_433", "UA_868", "MY_433", "MY_919", "SG_923", "PH_433", "PH_868", "PH_915",
    "KZ_433", "KZ_863", "NP_865", "BR_902",
];

/// The key prefix of a radio in messages.
pub fn key(i: usize, r: &RadioSection) -> String {
    format!("radio[{i}] ({})", r.name)
}

/// Checks every radio, and that no two share an attachment.
pub fn check(radios: &[RadioSection], p: &mut Vec<Problem>) {
    let mut tcp_seen: HashMap<syntax::HostPort, String> = HashMap::new();
    let mut serial_seen: HashMap<&PathBuf, String> = HashMap::new();
    for (i, r) in radios.iter().enumerate() {
        let key = key(i, r);
        if let Some(why) = syntax::endpoint_name(&r.name) {
            p.push(Problem::new(format!("radio[{i}].name"), why));
        }
        match (&r.tcp, &r.serial) {
            (None, None) => p.push(Problem::new(
                &key,
                format!("no connection: set `tcp = \"HOST:{RADIO_PORT}\"` or `serial = \"/dev/ttyUSB0\"`"),
            )),
            (Some(_), Some(_)) => p.push(Problem::new(
                &key,
                "both tcp and serial are set: keep the one the radio is attached by",
            )),
            (Some(addr), None) => match syntax::host_port(addr, RADIO_PORT) {
                Err(why) => p.push(Problem::new(format!("{key}.tcp"), why)),
                Ok(at) => {
                    if let Some(other) = tcp_seen.insert(at, key.clone()) {
                        p.push(Problem::new(
                            format!("{key}.tcp"),
                            format!(
                                "`{addr}` is also {other}'s address: a radio serves one client at a time, so the two links would keep kicking each other off; attach each radio once"
                            ),
                        ));
                    }
                }
            },
            (None, Some(path)) => {
                if path.as_os_str().is_empty() {
                    p.push(Problem::new(
                        format!("{key}.serial"),
                        "is empty: give the device, such as /dev/ttyUSB0 or /dev/serial/by-id/...",
                    ));
                } else if let Some(other) = serial_seen.insert(path, key.clone()) {
                    p.push(Problem::new(
                        format!("{key}.serial"),
                        format!(
                            "`{}` is also {other}'s device: one serial port opens once, so the two links would keep failing; attach each radio once",
                            path.display()
                        ),
                    ));
                }
                if r.baud == 0 || r.baud > 4_000_000 {
                    p.push(Problem::new(
                        format!("{key}.baud"),
                        format!("{}: Meshtastic radios talk at 115200", r.baud),
                    ));
                }
            }
        }
        if let Some(region) = &r.region
            && !REGIONS.contains(&region.as_str())
        {
            p.push(Problem::new(
                format!("{key}.region"),
                if region == "UNSET" {
                    "`UNSET`: a radio with no region does not transmit; set the radio's region, or leave the key out to take the radio's".into()
                } else {
                    format!(
                        "`{region}` is not a LoRa region code: use the radio's, such as EU_868, US or ANZ, or leave it out to take the radio's"
                    )
                },
            ));
        }
        if let Some(f) = r.frequency_mhz
            && !FREQUENCY_MHZ.contains(&f)
        {
            p.push(Problem::new(
                format!("{key}.frequency_mhz"),
                format!(
                    "{f}: give the radio's override frequency in MHz, within {} to {} (Gaulix: 869.4625), or leave it out",
                    FREQUENCY_MHZ.start(),
                    FREQUENCY_MHZ.end()
                ),
            ));
        }
        if let Some(d) = r.duty_cycle_percent
            && !(d > 0.0 && d <= 100.0)
        {
            p.push(Problem::new(
                format!("{key}.duty_cycle_percent"),
                format!("{d}: give a percentage above 0 and at most 100"),
            ));
        }
        if r.channels.is_empty() || r.channels.len() > 8 {
            p.push(Problem::new(
                format!("{key}.channels"),
                format!(
                    "{} channels given: a radio has 1 to 8 (index 0 is the primary)",
                    r.channels.len()
                ),
            ));
        }
        let mut names = HashMap::new();
        for (j, c) in r.channels.iter().enumerate() {
            if let Some(why) = channel_name(&c.name) {
                p.push(Problem::new(format!("{key}.channels[{j}].name"), why));
            }
            if let Some(before) = names.insert(c.name.as_str(), j) {
                p.push(Problem::new(
                    format!("{key}.channels[{j}]"),
                    format!(
                        "`{}` is also channels[{before}]: channel names on one radio must differ",
                        c.name
                    ),
                ));
            }
        }
    }
}

/// Checks, on disk, that no two radios name one serial device by different paths (a
/// `/dev/serial/by-id/` link and the `/dev/ttyUSB0` it points to). Paths that do not resolve
/// (a radio not plugged in yet) are compared as written, by [`check`].
pub fn check_devices(radios: &[RadioSection], p: &mut Vec<Problem>) {
    let mut seen: HashMap<PathBuf, (usize, &PathBuf)> = HashMap::new();
    for (i, r) in radios.iter().enumerate() {
        let Some(path) = &r.serial else { continue };
        let Ok(real) = std::fs::canonicalize(path) else {
            continue;
        };
        match seen.get(&real) {
            Some((j, other)) if *other != path => p.push(Problem::new(
                format!("{}.serial", key(i, r)),
                format!(
                    "`{}` is the device {} of {} (`{}`): one serial port opens once, so the two links would keep failing; attach each radio once",
                    path.display(),
                    real.display(),
                    key(*j, &radios[*j]),
                    other.display()
                ),
            )),
            Some(_) => {}
            None => {
                seen.insert(real, (i, path));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duty_cycles_follow_the_firmware_region_table() {
        // meshtastic/firmware src/mesh/RadioInterface.cpp, the duty_cycle column of RDEF.
        for (region, duty) in [
            ("EU_868", Some(10.0)),
            ("EU_433", Some(10.0)),
            ("UA_433", Some(10.0)),
            ("UA_868", Some(1.0)),
            ("TH", Some(10.0)),
            ("US", None),
            ("ANZ", None),
            ("RU", None),
        ] {
            assert_eq!(region_duty_cycle(region), duty, "{region}");
        }
    }

    #[test]
    fn one_device_under_two_names_is_found_on_disk() {
        let dir = crate::config::testing::TempDir::new("serial");
        let device = dir.write("ttyUSB0", "");
        let link = dir.path().join("usb-Heltec-if00");
        std::os::unix::fs::symlink(&device, &link).unwrap();
        let radio = |name: &str, serial: &std::path::Path| RadioSection {
            name: name.into(),
            tcp: None,
            serial: Some(serial.to_path_buf()),
            baud: 115_200,
            region: None,
            preset: None,
            frequency_mhz: None,
            duty_cycle_percent: None,
            channels: Vec::new(),
        };
        let mut p = Vec::new();
        check_devices(&[radio("a", &device), radio("b", &link)], &mut p);
        assert_eq!(p.len(), 1, "{p:?}");
        let text = p[0].to_string();
        assert!(
            text.starts_with("radio[1] (b).serial: ") && text.contains("of radio[0] (a)"),
            "{text}"
        );
        let mut p = Vec::new();
        check_devices(
            &[radio("a", &device), radio("b", &dir.path().join("absent"))],
            &mut p,
        );
        assert!(p.is_empty(), "{p:?}");
    }
}
