//! The gateway's configuration: one TOML file plus `ARCHIPEL_`-prefixed environment overrides
//! (`ARCHIPEL_STORE__PATH=/data/archipel.sqlite` sets `store.path`).
//!
//! Loading checks everything it can without touching a radio or a broker, and every error
//! names the key (or the variable that set it), the value and the fix, because the person
//! reading it is a volunteer at a hub in a crisis. Secrets are [`Secret`]s and channel keys
//! [`Psk`](mesh_core::Psk)s, whose `Debug` never shows them: a config can be logged.
//!
//! Sections, one file each:
//! - `[gateway]` (here), `[store]` and `[airtime]` (`store.rs`);
//! - endpoints, whose names are unique across kinds: `[[radio]]` (`radio.rs`), `[[mqtt]]`
//!   (`mqtt.rs`), `[[xmpp]]` (`xmpp.rs`) and `[[peer]]` (`peer.rs`), the neighbouring hubs;
//! - `[federation]`: where this hub listens for neighbours, its identity key, how far a
//!   message may travel between hubs (`federation.rs`);
//! - channels: every radio's plus `[[channel]]`, one [`ChannelTable`] for every kind
//!   (`channel.rs`);
//! - `[[route]]` between endpoints of any kind (`route.rs`);
//! - `[log]`: whether direct messages are shown with their text (`log.rs`);
//! - secrets (`secret.rs`), `ARCHIPEL_` overrides (`env.rs`), errors (`error.rs`), shared
//!   value shapes (`syntax.rs`) and the `check-config` summary (`summary.rs`).

mod channel;
mod env;
mod error;
mod federation;
mod http;
mod log;
mod mqtt;
mod peer;
mod radio;
mod route;
mod secret;
mod store;
mod summary;
mod syntax;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
mod xmpp;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use archipel_adapters::peer::{Identity, IdentityError};
use figment::Figment;
use figment::providers::{Format, Toml};
use mesh_core::peer::SessionConfig;
use mesh_core::{GovernorConfig, NodeId};
use serde::Deserialize;

pub use channel::{ChannelEntry, ChannelSection, ChannelTable, MAX_CHANNEL_NAME};
pub use error::{ConfigError, Problem};
pub use federation::{
    DEFAULT_DEAD_AFTER_SECS, DEFAULT_MAX_HOPS, DEFAULT_WINDOW_KIB, FederationSection,
    IDENTITY_FILE, MAX_FEDERATION_HOPS, PEER_PORT, identity_path,
};
pub use http::{DEFAULT_LISTEN, HttpSection};
pub use log::LogSection;
pub use mqtt::{DEFAULT_BURST_PER_NODE, DEFAULT_RATE_PER_NODE, MqttSection, MqttTls};
pub use peer::PeerSection;
pub use radio::{FREQUENCY_TOLERANCE_MHZ, REGIONS, RadioSection, region_duty_cycle};
pub use route::{MAX_HOPS, RouteSection};
pub use secret::Secret;
pub use store::{AirtimeSection, StoreSection, TtlSection};
pub use xmpp::{
    COMPONENT_PORT, DEFAULT_BRIDGE_NICK, DEFAULT_BURST_PER_USER, DEFAULT_RATE_PER_USER, SendAs,
    XmppRoom, XmppSection,
};

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
    /// The MQTT brokers.
    #[serde(default)]
    pub mqtt: Vec<MqttSection>,
    /// The XMPP servers the gateway joins as a component.
    #[serde(default)]
    pub xmpp: Vec<XmppSection>,
    /// How this hub meets other hubs.
    #[serde(default)]
    pub federation: FederationSection,
    /// The neighbouring hubs.
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerSection>,
    /// Channels no local radio has (with their keys), for routes between other endpoints.
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelSection>,
    /// Which channels cross between which endpoints.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSection>,
    /// Where the metrics, the status page and its JSON API are served.
    #[serde(default)]
    pub http: HttpSection,
    /// What the activity feed and the status page show of the messages that cross.
    #[serde(default)]
    pub log: LogSection,
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// A name for logs and the status page.
    pub name: String,
    /// The id this gateway signs what it relays with, like a node id (`!` and 8 hex digits):
    /// the `gateway_id` of the envelopes it hands its radios and publishes on MQTT, and the
    /// source of the default MQTT client id.
    pub id: NodeId,
}

/// What kind of outside world an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointKind {
    /// A Meshtastic radio (`[[radio]]`).
    Radio,
    /// An MQTT broker (`[[mqtt]]`).
    Mqtt,
    /// An XMPP server (`[[xmpp]]`).
    Xmpp,
    /// A neighbouring hub (`[[peer]]`).
    Peer,
}

impl EndpointKind {
    /// Every kind, in config order.
    pub const ALL: [EndpointKind; 4] = [
        EndpointKind::Radio,
        EndpointKind::Mqtt,
        EndpointKind::Xmpp,
        EndpointKind::Peer,
    ];

    /// The kind as its section is named.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Radio => "radio",
            EndpointKind::Mqtt => "mqtt",
            EndpointKind::Xmpp => "xmpp",
            EndpointKind::Peer => "peer",
        }
    }
}

impl fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One endpoint's section, whatever its kind.
#[derive(Debug, Clone, Copy)]
pub enum EndpointSection<'a> {
    /// A `[[radio]]`.
    Radio(&'a RadioSection),
    /// A `[[mqtt]]`.
    Mqtt(&'a MqttSection),
    /// A `[[xmpp]]`.
    Xmpp(&'a XmppSection),
    /// A `[[peer]]`.
    Peer(&'a PeerSection),
}

impl<'a> EndpointSection<'a> {
    /// The endpoint's name, unique across kinds.
    pub fn name(&self) -> &'a str {
        match self {
            EndpointSection::Radio(r) => &r.name,
            EndpointSection::Mqtt(m) => &m.name,
            EndpointSection::Xmpp(x) => &x.name,
            EndpointSection::Peer(p) => &p.name,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> EndpointKind {
        match self {
            EndpointSection::Radio(_) => EndpointKind::Radio,
            EndpointSection::Mqtt(_) => EndpointKind::Mqtt,
            EndpointSection::Xmpp(_) => EndpointKind::Xmpp,
            EndpointSection::Peer(_) => EndpointKind::Peer,
        }
    }
}

impl Config {
    /// Reads `path`, applies the process's `ARCHIPEL_` overrides, reads the files the config
    /// names (passwords, secrets, CA certificates, serial device links, and the identity key
    /// when the hub federates), and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars_os())
    }

    /// Where the gateway's identity key is kept, by the config file at `path` and the
    /// process's `ARCHIPEL_` overrides of `store.path` and `federation.identity_file`; the rest
    /// of the file is not validated, so a hub can print its key while its config is being
    /// written.
    pub fn identity_path_of(path: &Path) -> Result<PathBuf, ConfigError> {
        federation::identity_path_of(path, std::env::vars_os())
    }

    /// [`Config::load`] with the environment given as a list, so a test can set overrides
    /// without touching the process environment other threads read.
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let (overrides, problems) = env::overrides(env);
        Self::from_figment(
            Figment::new().merge(Toml::file_exact(path)),
            &path.display().to_string(),
            overrides,
            problems,
        )
    }

    /// Parses a TOML text (no environment), reads the files it names, and validates.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(
            Figment::new().merge(Toml::string(text)),
            "config",
            Vec::new(),
            Vec::new(),
        )
    }

    fn from_figment(
        base: Figment,
        origin: &str,
        mut overrides: Vec<env::Override>,
        mut problems: Vec<Problem>,
    ) -> Result<Config, ConfigError> {
        // Each pass either succeeds, fails for good, or marks one more override as text.
        let (figment, mut config) = loop {
            let figment = overrides.iter().cloned().fold(base.clone(), Figment::merge);
            match figment.extract::<Config>() {
                Ok(config) => break (figment, config),
                Err(e) if env::retry_as_text(&mut overrides, &e) => continue,
                Err(e) => {
                    problems.extend(error::from_figment(e, origin));
                    return Err(ConfigError::Invalid { problems });
                }
            }
        };
        mqtt::read_files(&mut config.mqtt, &mut problems);
        xmpp::read_files(&mut config.xmpp, &mut problems);
        xmpp::resolve(&mut config.xmpp, &config.routes);
        radio::check_devices(&config.radios, &mut problems);
        let federated = config.federated();
        federation::read_identity(
            &mut config.federation,
            &config.store,
            federated,
            &mut problems,
        );
        if let Err(ConfigError::Invalid { problems: found }) = config.validate() {
            problems.extend(found);
        }
        for p in problems.iter_mut().filter(|p| p.origin.is_none()) {
            if let Some(var) = figment.find_metadata(&p.key).and_then(env::variable) {
                p.origin = Some(format!("{var} (environment)"));
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    /// Checks what types alone cannot, without touching the disk (loading also reads the
    /// password, secret and CA files, and the identity key whose public half refuses a
    /// `[[peer]]` with our own key).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        if let Some(why) = syntax::one_line(&self.gateway.name) {
            p.push(Problem::new("gateway.name", why));
        }
        let id = self.gateway.id;
        if [NodeId::BROADCAST, NodeId::LOCAL, NodeId::BROADCAST_NO_LORA].contains(&id) {
            p.push(Problem::new(
                "gateway.id",
                format!(
                    "`!{:08x}` is reserved ({}): choose 8 other hex digits that no node of your meshes has, such as !a7c40001",
                    id.get(),
                    match id {
                        NodeId::BROADCAST => "the broadcast address, \"every node\"",
                        NodeId::LOCAL => "\"this node\" in the firmware's API",
                        _ => "the firmware's broadcast that never goes on air",
                    }
                ),
            ));
        }
        store::check_store(&self.store, &mut p);
        store::check_airtime(&self.airtime, &mut p);
        if self.endpoints().next().is_none() {
            p.push(Problem::new(
                "radio",
                "no endpoint configured: add a [[radio]] section with name, tcp or serial and channels (or a [[mqtt]], [[xmpp]] or [[peer]] section)",
            ));
        }
        radio::check(&self.radios, &mut p);
        mqtt::check(
            &self.mqtt,
            &self.radios,
            id,
            |name| {
                let to = self.routes.iter().any(|r| r.sends_to(name));
                (to, self.routes.iter().any(|r| r.takes_from(name)))
            },
            &mut p,
        );
        xmpp::check(&self.xmpp, &self.routes, &mut p);
        federation::check(&self.federation, &self.store, &mut p);
        http::check(&self.http, &mut p);
        peer::check(&self.peers, &self.federation, &mut p);
        self.check_endpoint_names(&mut p);
        for (k, c) in self.channels.iter().enumerate() {
            if let Some(why) = channel::channel_name(&c.name) {
                p.push(Problem::new(format!("channel[{k}].name"), why));
            }
        }
        p.extend(channel::build(self).1);
        route::check(self, &mut p);
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems: p })
        }
    }

    /// Names are unique across kinds: a route names an endpoint without saying its kind.
    fn check_endpoint_names(&self, p: &mut Vec<Problem>) {
        let mut seen: HashMap<&str, String> = HashMap::new();
        let keyed = self
            .radios
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), radio::key(i, r)))
            .chain(
                self.mqtt
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.name.as_str(), mqtt::key(i, m))),
            )
            .chain(
                self.xmpp
                    .iter()
                    .enumerate()
                    .map(|(i, x)| (x.name.as_str(), xmpp::key(i, x))),
            )
            .chain(
                self.peers
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.name.as_str(), peer::key(i, s))),
            );
        for (name, key) in keyed {
            if let Some(first) = seen.get(name) {
                p.push(Problem::new(
                    format!("{key}.name"),
                    format!(
                        "`{name}` is also the name of {first}: endpoint names are unique across radios, brokers, XMPP servers and peers, since routes name them alone; rename one"
                    ),
                ));
            } else {
                seen.insert(name, key);
            }
        }
    }

    /// The radio with this name.
    pub fn radio(&self, name: &str) -> Option<&RadioSection> {
        self.radios.iter().find(|r| r.name == name)
    }

    /// The MQTT section with this name.
    pub fn mqtt_section(&self, name: &str) -> Option<&MqttSection> {
        self.mqtt.iter().find(|m| m.name == name)
    }

    /// The XMPP section with this name.
    pub fn xmpp_section(&self, name: &str) -> Option<&XmppSection> {
        self.xmpp.iter().find(|x| x.name == name)
    }

    /// The `[[peer]]` with this name.
    pub fn peer(&self, name: &str) -> Option<&PeerSection> {
        self.peers.iter().find(|s| s.name == name)
    }

    /// Whether this hub federates: it has neighbours or listens for them.
    pub fn federated(&self) -> bool {
        !self.peers.is_empty() || self.federation.listen.is_some()
    }

    /// Where the gateway's identity key is kept: `[federation] identity_file`, or
    /// `identity.key` beside the store file.
    pub fn identity_path(&self) -> PathBuf {
        self.federation.identity_path(&self.store)
    }

    /// The gateway's identity, made and saved (mode 0600) on first use.
    pub fn identity(&self) -> Result<Identity, IdentityError> {
        Identity::load_or_create(&self.identity_path())
    }

    /// The session settings for one neighbour: its `window_kib`, else `[federation]`'s.
    pub fn peer_session(&self, peer: &PeerSection) -> SessionConfig {
        self.federation.session(peer.window_kib)
    }

    /// Every endpoint with its kind: radios, then brokers, then XMPP servers, then peers,
    /// each in config order.
    pub fn endpoints(&self) -> impl Iterator<Item = EndpointSection<'_>> {
        self.radios
            .iter()
            .map(EndpointSection::Radio)
            .chain(self.mqtt.iter().map(EndpointSection::Mqtt))
            .chain(self.xmpp.iter().map(EndpointSection::Xmpp))
            .chain(self.peers.iter().map(EndpointSection::Peer))
    }

    /// The endpoint with this name, of any kind.
    pub fn endpoint(&self, name: &str) -> Option<EndpointSection<'_>> {
        self.endpoints().find(|e| e.name() == name)
    }

    /// The kind of the endpoint with this name.
    pub fn endpoint_kind(&self, name: &str) -> Option<EndpointKind> {
        self.endpoint(name).map(|e| e.kind())
    }

    /// Every channel the gateway knows, with its key: every radio's channels and the
    /// `[[channel]]` entries. In a validated config each name has one key.
    pub fn channel_table(&self) -> ChannelTable {
        channel::build(self).0
    }

    /// The topic root of an MQTT section: the configured one, or the firmware's
    /// `msh/<REGION>` of the radios (validation refuses a config where neither exists; then
    /// this falls back to the firmware's bare `msh`).
    pub fn mqtt_root(&self, section: &MqttSection) -> String {
        section
            .root
            .clone()
            .or_else(|| mqtt::default_root(&self.radios).ok())
            .unwrap_or_else(|| "msh".into())
    }

    /// The MQTT client id of a section: the configured one, or `archipel-<gateway id>`.
    pub fn mqtt_client_id(&self, section: &MqttSection) -> String {
        section.client_id(self.gateway.id)
    }

    /// The governor limits of one radio, from its configured region and duty cycle.
    pub fn governor(&self, radio: &RadioSection) -> GovernorConfig {
        self.governor_in(radio, radio.region.as_deref())
    }

    /// The governor limits of one radio in `region` (the one the radio reported, which the
    /// runtime prefers to the configured one). A configured `duty_cycle_percent` still wins.
    pub fn governor_in(&self, radio: &RadioSection, region: Option<&str>) -> GovernorConfig {
        GovernorConfig {
            duty_cycle_percent: radio
                .duty_cycle_percent
                .or_else(|| region.and_then(region_duty_cycle)),
            window: Duration::from_secs(self.airtime.window_secs),
            defer_low_above: self.airtime.defer_low_above,
            defer_all_above: self.airtime.defer_all_above,
            ..GovernorConfig::default()
        }
    }
}
