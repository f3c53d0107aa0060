//! What one MQTT link needs, checked before the link starts, and turned into rumqttc options.
//!
//! A setting that can never work (no client id, a keep-alive under a second, a CA file that
//! cannot be read, a subscription filter MQTT forbids) is refused by [`spawn`](super::spawn)
//! with the field named, rather than retried forever by a link that cannot succeed. rumqttc
//! itself panics on several of these (`set_keep_alive`, `set_inflight`, `set_clean_session`),
//! which is one more reason to check them first.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, NetworkOptions, TlsConfiguration, Transport};

/// The largest MQTT packet the protocol can express (the remaining-length field's maximum).
const MQTT_MAX_PACKET: usize = 268_435_455;

/// Everything needed to run one MQTT link.
#[derive(Clone)]
pub struct MqttConfig {
    /// The operator's name for this link; every log line of the link carries it.
    pub name: String,
    /// The broker's host name or IP address (also the name its TLS certificate must carry).
    pub host: String,
    /// The broker's port (1883 plain, 8883 TLS by convention).
    pub port: u16,
    /// The MQTT client id. It must stay the same across restarts: the broker keeps the
    /// persistent session (subscriptions, unacknowledged messages) under this id.
    pub client_id: String,
    /// User name, when the broker wants one.
    pub username: Option<String>,
    /// Password; never printed (`Debug` redacts it).
    pub password: Option<String>,
    /// TLS to the broker, verified against a private CA; plain TCP when `None`.
    pub tls: Option<TlsSettings>,
    /// Keep-alive period: a ping goes out this often, and a ping still unanswered at the next
    /// one drops the connection, so a half-open link is noticed within twice this.
    pub keep_alive: Duration,
    /// Topic filters subscribed with QoS 1 (e.g. `msh/EU_868/2/e/LongFast/+`).
    pub subscriptions: Vec<String>,
    /// Publishes awaiting their PUBACK at once (the owner's window should not exceed it).
    pub max_inflight: u16,
    /// Largest MQTT packet sent or accepted, in bytes.
    pub max_packet_size: usize,
    /// Events (mostly received messages) waiting for the owner before the link gives up on
    /// it; see the module doc of [`mqtt`](super) for what happens then.
    pub event_capacity: usize,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How long a connection must last before the backoff starts again from the beginning.
    pub stable_after: Duration,
    /// Time allowed for TCP, TLS and the CONNACK together.
    pub connect_timeout: Duration,
}

/// TLS to a broker whose certificate a private CA signed (no public roots are loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the CA certificate(s) the broker's certificate must chain to.
    pub ca_file: PathBuf,
}

impl MqttConfig {
    /// Defaults for a link to `host:port` as `client_id`: 30 s keep-alive, 64 publishes in
    /// flight, 256 KiB packets, 1024 waiting events, reconnect after 1 s up to 60 s.
    pub fn new(
        name: impl Into<String>,
        host: impl Into<String>,
        port: u16,
        client_id: impl Into<String>,
    ) -> MqttConfig {
        MqttConfig {
            name: name.into(),
            host: host.into(),
            port,
            client_id: client_id.into(),
            username: None,
            password: None,
            tls: None,
            keep_alive: Duration::from_secs(30),
            subscriptions: Vec::new(),
            max_inflight: 64,
            max_packet_size: 256 * 1024,
            event_capacity: 1024,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// `host:port` (`[v6]:port` for an IPv6 address), for logs and messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.connect_host(), self.port)
    }

    /// The host as rumqttc must be given it: rumqttc joins host and port with a colon, so an
    /// IPv6 address needs its brackets.
    fn connect_host(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("keep_alive", &self.keep_alive)
            .field("subscriptions", &self.subscriptions)
            .field("max_inflight", &self.max_inflight)
            .field("max_packet_size", &self.max_packet_size)
            .field("event_capacity", &self.event_capacity)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("stable_after", &self.stable_after)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Why an MQTT link could not be started. Every variant names the link and the setting.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A setting that can never work.
    #[error("MQTT link `{link}`: `{field}` {problem}")]
    Config {
        /// The link's name.
        link: String,
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The CA file cannot be read.
    #[error("MQTT link `{link}`: cannot read tls.ca_file {}: {source}", path.display())]
    CaFile {
        /// The link's name.
        link: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("MQTT link `{link}`: tls.ca_file {} holds no usable PEM certificate{detail}", path.display())]
    NoCaCertificate {
        /// The link's name.
        link: String,
        /// The file.
        path: PathBuf,
        /// What rustls said, if anything.
        detail: String,
    },
}

/// The rumqttc options for `config`, after checking every setting.
pub(crate) fn options(config: &MqttConfig) -> Result<MqttOptions, MqttError> {
    let bad = |field: &'static str, problem: String| MqttError::Config {
        link: config.name.clone(),
        field,
        problem,
    };
    if config.host.is_empty() || config.host.chars().any(char::is_whitespace) {
        return Err(bad(
            "host",
            format!("must be a host name or address, got {:?}", config.host),
        ));
    }
    if config.tls.is_some() && config.connect_host().starts_with('[') {
        return Err(bad(
            "host",
            format!(
                "{:?} is an IPv6 address, which cannot name a TLS server here (rumqttc takes the \
                 server name from the host text); use a host name",
                config.host
            ),
        ));
    }
    if config.port == 0 {
        return Err(bad("port", "must be 1..=65535, got 0".into()));
    }
    let id = &config.client_id;
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(bad(
            "client_id",
            format!(
                "must be 1..=256 bytes without control characters (the broker keeps the session under it), got {id:?}"
            ),
        ));
    }
    if config.password.is_some() && config.username.is_none() {
        return Err(bad(
            "password",
            "is set without a username (MQTT 3.1.1 sends a password only with a user name)".into(),
        ));
    }
    let keep_alive = config.keep_alive.as_secs();
    if !(1..=u64::from(u16::MAX)).contains(&keep_alive) {
        return Err(bad(
            "keep_alive",
            format!(
                "must be 1..=65535 whole seconds, got {:?}",
                config.keep_alive
            ),
        ));
    }
    if config.max_inflight == 0 {
        return Err(bad("max_inflight", "must be at least 1".into()));
    }
    if !(512..=MQTT_MAX_PACKET).contains(&config.max_packet_size) {
        return Err(bad(
            "max_packet_size",
            format!(
                "must be 512..={MQTT_MAX_PACKET} bytes, got {}",
                config.max_packet_size
            ),
        ));
    }
    if config.event_capacity == 0 {
        return Err(bad("event_capacity", "must be at least 1".into()));
    }
    if config.backoff_initial.is_zero() {
        return Err(bad(
            "backoff_initial",
            "must be above zero (a zero delay reconnects in a tight loop)".into(),
        ));
    }
    if config.connect_timeout.is_zero() {
        return Err(bad("connect_timeout", "must be above zero".into()));
    }
    for filter in &config.subscriptions {
        if !rumqttc::valid_filter(filter) || filter.contains('\0') {
            return Err(bad(
                "subscriptions",
                format!("holds {filter:?}, which is not a valid MQTT topic filter"),
            ));
        }
    }

    let mut options = MqttOptions::new(id.clone(), config.connect_host(), config.port);
    options
        .set_keep_alive(Duration::from_secs(keep_alive))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_inflight(config.max_inflight)
        .set_max_packet_size(config.max_packet_size, config.max_packet_size);
    if let Some(user) = &config.username {
        options.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &config.tls {
        options.set_transport(Transport::tls_with_config(tls_config(config, tls)?));
    }
    Ok(options)
}

/// Network options: rumqttc counts its connect timeout (TCP, TLS and CONNACK) in whole seconds.
pub(crate) fn network_options(config: &MqttConfig) -> NetworkOptions {
    let mut net = NetworkOptions::new();
    let secs = config.connect_timeout.as_secs_f64().ceil().max(1.0) as u64;
    net.set_connection_timeout(secs);
    net.set_tcp_nodelay(true);
    net
}

/// A rustls client that trusts only the CA file, with ring as its crypto.
fn tls_config(config: &MqttConfig, tls: &TlsSettings) -> Result<TlsConfiguration, MqttError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let link = config.name.clone();
    let pem = std::fs::read(&tls.ca_file).map_err(|source| MqttError::CaFile {
        link: link.clone(),
        path: tls.ca_file.clone(),
        source,
    })?;
    let none = |detail: String| MqttError::NoCaCertificate {
        link: link.clone(),
        path: tls.ca_file.clone(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| none(format!(": {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(none(String::new()));
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| none(format!(" (rustls: {e})")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConfiguration::Rustls(Arc::new(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MqttConfig {
        MqttConfig::new("broker", "127.0.0.1", 1883, "archipel-test")
    }

    #[test]
    fn the_password_never_appears_in_debug_output() {
        let mut c = config();
        c.username = Some("gateway".into());
        c.password = Some("hunter2-very-secret".into());
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("<redacted>") && text.contains("gateway"),
            "{text}"
        );
    }

    #[test]
    fn settings_that_can_never_work_are_refused_with_the_field_named() {
        type Change = fn(&mut MqttConfig);
        let cases: [(Change, &str); 11] = [
            (|c| c.client_id.clear(), "`client_id`"),
            (|c| c.host = "".into(), "`host`"),
            (|c| c.port = 0, "`port`"),
            (
                |c| c.keep_alive = Duration::from_millis(500),
                "`keep_alive`",
            ),
            (|c| c.max_inflight = 0, "`max_inflight`"),
            (|c| c.event_capacity = 0, "`event_capacity`"),
            (|c| c.backoff_initial = Duration::ZERO, "`backoff_initial`"),
            (|c| c.password = Some("x".into()), "`password`"),
            (|c| c.subscriptions = vec!["a/#/b".into()], "\"a/#/b\""),
            (|c| c.max_packet_size = 10, "`max_packet_size`"),
            (
                |c| {
                    c.host = "::1".into();
                    c.tls = Some(TlsSettings {
                        ca_file: "/etc/hostname".into(),
                    });
                },
                "IPv6",
            ),
        ];
        for (change, expected) in cases {
            let mut c = config();
            change(&mut c);
            let err = options(&c).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("`broker`"), "{err}");
        }
        assert!(options(&config()).is_ok());
        let mut v6 = config();
        v6.host = "::1".into();
        assert_eq!(v6.address(), "[::1]:1883");
        assert_eq!(options(&v6).unwrap().broker_address().0, "[::1]");
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_refused_naming_the_file() {
        let mut c = config();
        c.tls = Some(TlsSettings {
            ca_file: "/nonexistent/archipel-ca.pem".into(),
        });
        let err = options(&c).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/archipel-ca.pem"), "{err}");
        let path =
            std::env::temp_dir().join(format!("archipel-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        c.tls = Some(TlsSettings {
            ca_file: path.clone(),
        });
        let err = options(&c).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains("no usable PEM certificate"), "{err}");
    }
}
