//! `[[mqtt]]`: a broker the gateway publishes to and takes downlink from, the way a
//! Meshtastic radio's MQTT module does, so the firmware's maps, exporters and Home Assistant
//! flows read it unchanged.
//!
//! The password lives in a file (`password_file`), read at load time into a [`Secret`]. The
//! topic root defaults to the firmware's `msh/<REGION>` when every radio names the same
//! region; the client id defaults to one derived from the gateway id, so the broker keeps the
//! gateway's persistent session across restarts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use mesh_core::NodeId;
use serde::Deserialize;

use super::error::Problem;
use super::radio::RadioSection;
use super::secret::{Secret, Unreadable, read_bounded};
use super::syntax;

/// The port of an MQTT broker without TLS.
pub const MQTT_PORT: u16 = 1883;

/// Most downlink messages per minute one sender may sustain: a person types a few texts a
/// minute, and a node adds a position, telemetry and node info every quarter hour or so. One
/// every ten seconds leaves room for both; a flood (1,000 msg/s from one node) is cut to it.
pub const DEFAULT_RATE_PER_NODE: f64 = 6.0;

/// How many a sender may send at once before the rate applies: a node's start-up (node info,
/// position, telemetry) plus a short exchange of texts.
pub const DEFAULT_BURST_PER_NODE: u32 = 10;

/// The highest sustained rate accepted: ten a second from one node is already more than any
/// LoRa preset carries.
const MAX_RATE_PER_NODE: f64 = 600.0;

/// The largest burst accepted.
const MAX_BURST_PER_NODE: u32 = 1_000;

/// `[[mqtt]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// The operator's name for it, used in routes and logs (unique across every endpoint).
    pub name: String,
    /// `HOST:PORT` of the broker.
    pub address: String,
    /// User name, when the broker wants one.
    pub username: Option<String>,
    /// A file holding the password alone, read at load time.
    pub password_file: Option<PathBuf>,
    /// The password read from `password_file` (never in the TOML).
    #[serde(skip)]
    pub password: Option<Secret>,
    /// TLS to a private broker.
    pub tls: Option<MqttTls>,
    /// Topic root, as the firmware's `mqtt.root` (default `msh/<REGION>` of the radios).
    pub root: Option<String>,
    /// MQTT client id (default `archipel-<gateway id>`). The broker keeps one session per id,
    /// so it must stay the same across restarts and differ between gateways.
    pub client_id: Option<String>,
    /// Publish ServiceEnvelopes, encrypted as heard, on `<root>/2/e/<channel>/!<gateway>`.
    #[serde(default = "yes")]
    pub encrypted: bool,
    /// Also publish the firmware's JSON, decrypted, on `<root>/2/json/<channel>/!<gateway>`.
    #[serde(default)]
    pub json: bool,
    /// Accept the JSON `sendtext` downlink from tools (Home Assistant, scripts).
    #[serde(default)]
    pub downlink_json: bool,
    /// Downlink messages per minute one sender (`from`) may sustain (token-bucket rate).
    #[serde(default = "default_rate")]
    pub rate_per_node: f64,
    /// Downlink messages one sender may send at once (token-bucket size).
    #[serde(default = "default_burst")]
    pub burst_per_node: u32,
}

/// `[mqtt.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    /// PEM file of the CA that signed the broker's certificate (a private CA: no public
    /// roots are used).
    pub ca_file: PathBuf,
}

fn yes() -> bool {
    true
}

fn default_rate() -> f64 {
    DEFAULT_RATE_PER_NODE
}

fn default_burst() -> u32 {
    DEFAULT_BURST_PER_NODE
}

impl MqttSection {
    /// A section with the defaults, for configs built in code.
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> MqttSection {
        MqttSection {
            name: name.into(),
            address: address.into(),
            username: None,
            password_file: None,
            password: None,
            tls: None,
            root: None,
            client_id: None,
            encrypted: true,
            json: false,
            downlink_json: false,
            rate_per_node: DEFAULT_RATE_PER_NODE,
            burst_per_node: DEFAULT_BURST_PER_NODE,
        }
    }

    /// The client id: the configured one, or `archipel-` and the gateway id's hex digits.
    pub fn client_id(&self, gateway: NodeId) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("archipel-{:08x}", gateway.get()))
    }

    /// The time one sender's bucket takes to earn one more message.
    pub fn token_interval(&self) -> Duration {
        let rate = if self.rate_per_node.is_finite() && self.rate_per_node > 0.0 {
            self.rate_per_node.min(MAX_RATE_PER_NODE)
        } else {
            DEFAULT_RATE_PER_NODE
        };
        Duration::from_secs_f64(60.0 / rate)
    }
}

/// The root the firmware would use for these radios: `msh/<REGION>` when every radio names
/// the same region; otherwise why there is none.
pub fn default_root(radios: &[RadioSection]) -> Result<String, String> {
    let without: Vec<&str> = radios
        .iter()
        .filter(|r| r.region.is_none())
        .map(|r| r.name.as_str())
        .collect();
    if radios.is_empty() {
        return Err("there is no radio to take the region from".into());
    }
    if !without.is_empty() {
        return Err(format!(
            "the region of {} is not in the config (it comes from the radio at run time)",
            without.join(", ")
        ));
    }
    let mut regions: Vec<&str> = radios.iter().filter_map(|r| r.region.as_deref()).collect();
    regions.sort_unstable();
    regions.dedup();
    match regions.as_slice() {
        [one] => Ok(format!("msh/{one}")),
        many => Err(format!(
            "the radios are in several regions ({})",
            many.join(", ")
        )),
    }
}

/// The key prefix of an MQTT section in messages.
pub fn key(i: usize, m: &MqttSection) -> String {
    format!("mqtt[{i}] ({})", m.name)
}

/// Checks every `[[mqtt]]`: what needs no file. `routed(name)` says whether a route sends to
/// the endpoint and whether one takes from it.
pub fn check(
    sections: &[MqttSection],
    radios: &[RadioSection],
    gateway: NodeId,
    routed: impl Fn(&str) -> (bool, bool),
    p: &mut Vec<Problem>,
) {
    let mut sessions: HashMap<(syntax::HostPort, String), String> = HashMap::new();
    for (i, m) in sections.iter().enumerate() {
        let key = key(i, m);
        if let Some(why) = syntax::endpoint_name(&m.name) {
            p.push(Problem::new(format!("mqtt[{i}].name"), why));
        }
        let address = syntax::host_port(&m.address, MQTT_PORT);
        if let Err(why) = &address {
            p.push(Problem::new(format!("{key}.address"), why.clone()));
        }
        if let Some(user) = &m.username
            && (user.is_empty() || user.chars().any(char::is_control) || user.len() > 256)
        {
            p.push(Problem::new(
                format!("{key}.username"),
                "give the broker's user name: 1 to 256 bytes, no control characters",
            ));
        }
        if m.password_file.is_some() && m.username.is_none() {
            p.push(Problem::new(
                format!("{key}.password_file"),
                "is set without a username: MQTT sends a password only with a user name; set `username`",
            ));
        }
        match &m.root {
            Some(root) => {
                if let Some(why) = topic_root(root) {
                    p.push(Problem::new(format!("{key}.root"), why));
                }
            }
            None => {
                if let Err(why) = default_root(radios) {
                    p.push(Problem::new(
                        format!("{key}.root"),
                        format!(
                            "is not set, and the firmware's default `msh/<REGION>` cannot be derived: {why}; write it, such as `root = \"msh/EU_868\"` (what a radio's own mqtt.root would be), or give every radio its region"
                        ),
                    ));
                }
            }
        }
        let client_id = m.client_id(gateway);
        if client_id.is_empty()
            || client_id.len() > 128
            || !client_id.bytes().all(|b| b.is_ascii_graphic())
        {
            p.push(Problem::new(
                format!("{key}.client_id"),
                format!(
                    "`{}`: give 1 to 128 printable ASCII characters without spaces, such as `archipel-hub1`",
                    client_id.escape_debug()
                ),
            ));
        }
        if let Ok(at) = address
            && let Some(other) = sessions.insert((at, client_id.clone()), key.clone())
        {
            p.push(Problem::new(
                format!("{key}.client_id"),
                format!(
                    "`{client_id}` on the same broker as {other}: a broker keeps one connection per client id, so each would kick the other off; give one of them another client_id"
                ),
            ));
        }
        if !(m.rate_per_node.is_finite()
            && m.rate_per_node > 0.0
            && m.rate_per_node <= MAX_RATE_PER_NODE)
        {
            p.push(Problem::new(
                format!("{key}.rate_per_node"),
                format!(
                    "{}: give downlink messages per minute per sender, above 0 and at most {MAX_RATE_PER_NODE} (default {DEFAULT_RATE_PER_NODE})",
                    m.rate_per_node
                ),
            ));
        }
        if m.burst_per_node == 0 || m.burst_per_node > MAX_BURST_PER_NODE {
            p.push(Problem::new(
                format!("{key}.burst_per_node"),
                format!(
                    "{}: give 1 to {MAX_BURST_PER_NODE} (default {DEFAULT_BURST_PER_NODE})",
                    m.burst_per_node
                ),
            ));
        }
        let (to, from) = routed(&m.name);
        if to && !m.encrypted && !m.json {
            p.push(Problem::new(
                &key,
                "encrypted = false and json = false: what the routes send here would be published nowhere; keep encrypted = true (the firmware's form) or set json = true",
            ));
        }
        if m.downlink_json && !from {
            p.push(Problem::new(
                format!("{key}.downlink_json"),
                format!(
                    "is on, but no route takes traffic from `{}`: add a [[route]] with it in `from` (or in `to` without one_way)",
                    m.name
                ),
            ));
        }
    }
}

/// Why `root` cannot start a topic, if it cannot.
fn topic_root(root: &str) -> Option<String> {
    if root.is_empty() {
        return Some(
            "is empty: the firmware's default is `msh/<REGION>`, such as `msh/EU_868`".into(),
        );
    }
    if root.contains(['+', '#']) {
        return Some(format!(
            "`{root}` contains a wildcard (`+` or `#`): a topic root names one place"
        ));
    }
    if root.starts_with('/') || root.ends_with('/') || root.contains("//") {
        return Some(format!(
            "`{root}` has an empty level: write levels joined by single `/`, such as `msh/EU_868`"
        ));
    }
    if root.chars().any(|c| c.is_control() || c.is_whitespace()) || root.len() > 200 {
        return Some(format!(
            "`{}`: use at most 200 bytes, no spaces or control characters",
            root.escape_debug()
        ));
    }
    None
}

/// The largest CA file taken: Debian's whole bundle of public CAs is about 220 KB.
const MAX_CA_FILE: u64 = 4 * 1024 * 1024;

/// Reads what `[[mqtt]]` sections name on disk: the password files (into `password`) and the
/// CA files (which must exist, be readable and hold a PEM certificate).
pub fn read_files(sections: &mut [MqttSection], p: &mut Vec<Problem>) {
    for (i, m) in sections.iter_mut().enumerate() {
        let key = key(i, m);
        if let Some(path) = &m.password_file {
            match Secret::read_file(path) {
                Ok(secret) => m.password = Some(secret),
                Err(why) => p.push(Problem::new(format!("{key}.password_file"), why)),
            }
        }
        if let Some(tls) = &m.tls {
            let ca = tls.ca_file.display();
            match read_bounded(&tls.ca_file, MAX_CA_FILE) {
                Err(e) => {
                    let what = match e {
                        Unreadable::Io(e) => format!("cannot read {ca}: {e}"),
                        Unreadable::NotAFile => format!("{ca} is not a regular file"),
                        Unreadable::TooLarge => format!("{ca} holds more than {MAX_CA_FILE} bytes"),
                    };
                    p.push(Problem::new(
                        format!("{key}.tls.ca_file"),
                        format!(
                            "{what}: give the PEM file of the CA that signed the broker's certificate"
                        ),
                    ))
                }
                Ok(pem) if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
                    p.push(Problem::new(
                        format!("{key}.tls.ca_file"),
                        format!(
                            "{} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`): give the CA certificate, not a key or a DER file (`openssl x509 -inform der -in ca.der -out ca.pem` converts one)",
                            tls.ca_file.display()
                        ),
                    ))
                }
                Ok(_) => {}
            }
        }
    }
}
