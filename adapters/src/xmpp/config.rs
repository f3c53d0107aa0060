//! The settings of one XMPP link and the few things the owner hands it: the rooms it keeps
//! ([`RoomSpec`]) and what its directory shows of each mesh node ([`Contact`]).

use std::fmt;
use std::time::Duration;

use tokio_xmpp::jid::Jid;

use super::stream::XmppError;

/// Settings of one XMPP link.
#[derive(Clone)]
pub struct XmppConfig {
    /// Endpoint name, in tracing spans (`xmpp` = name) and messages.
    pub name: String,
    /// The server's component port as `IP:port` (no DNS: the component sits next to its
    /// server), e.g. `127.0.0.1:5347`.
    pub server: String,
    /// The component's domain, e.g. `mesh.hub.lan`; every JID the link speaks as is on it.
    pub domain: String,
    /// The component secret. Never logged; `Debug` redacts it.
    pub secret: String,
    /// The server's MUC service, e.g. `rooms.hub.lan`: kept rooms are `local@rooms`.
    pub rooms: String,
    /// The bridge occupant's nick in every kept room (it creates, configures and listens).
    pub bridge_nick: String,
    /// Bodies above this many bytes are bounced with an error, never passed on.
    pub max_body: usize,
    /// How long a room has to reflect a message before `say` answers `Failed`.
    pub reflection_timeout: Duration,
    /// How long the server has to answer the ping that confirms a chat message.
    pub ping_timeout: Duration,
    /// How often the bridge occupant checks (XEP-0410 self-ping) that each room still has it.
    pub self_ping_every: Duration,
    /// How long the server may stay silent before the link pings it; an unanswered ping
    /// (within `ping_timeout`) ends the stream, which then reconnects.
    pub keepalive_every: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Reconnect delay cap.
    pub backoff_max: Duration,
    /// How long a connection must have lasted for the backoff to start again from the first
    /// delay (a server that accepts and drops us at once keeps backing off).
    pub stable_after: Duration,
    /// Room for events the owner has not read yet (then up to as many are kept aside; beyond
    /// that events are dropped and counted).
    pub event_capacity: usize,
}

impl fmt::Debug for XmppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XmppConfig")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("domain", &self.domain)
            .field("secret", &"<redacted>")
            .field("rooms", &self.rooms)
            .field("bridge_nick", &self.bridge_nick)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// The nick the bridge occupant takes unless told otherwise.
pub const DEFAULT_BRIDGE_NICK: &str = "archipel";

/// Meshtastic text messages carry at most 200 bytes (firmware `DATA_PAYLOAD_LEN` less
/// headers); anything much longer cannot reach the mesh anyway.
pub const DEFAULT_MAX_BODY: usize = 1024;

impl XmppConfig {
    /// Settings with the defaults for everything not given: bridge nick `archipel`, bodies up
    /// to 1024 bytes, reflections within 30 s, self-pings every 30 s, backoff 0.5 s → 30 s.
    pub fn new(
        name: impl Into<String>,
        server: impl Into<String>,
        domain: impl Into<String>,
        secret: impl Into<String>,
        rooms: impl Into<String>,
    ) -> XmppConfig {
        XmppConfig {
            name: name.into(),
            server: server.into(),
            domain: domain.into(),
            secret: secret.into(),
            rooms: rooms.into(),
            bridge_nick: DEFAULT_BRIDGE_NICK.into(),
            max_body: DEFAULT_MAX_BODY,
            reflection_timeout: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(30),
            self_ping_every: Duration::from_secs(30),
            keepalive_every: Duration::from_secs(25),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
            event_capacity: 1024,
        }
    }

    /// Checks the settings that can never work: `server` must be `IP:port`, `domain` and
    /// `rooms` plain domains, `bridge_nick` a usable nick, `max_body` and `event_capacity`
    /// above zero.
    pub fn check(&self) -> Result<(), XmppError> {
        let bad = |setting: &'static str, why: String| Err(XmppError::Setting { setting, why });
        if self.server.parse::<std::net::SocketAddr>().is_err() {
            return bad("server", format!("`{}` is not IP:port", self.server));
        }
        for (setting, value) in [("domain", &self.domain), ("rooms", &self.rooms)] {
            let plain = !value.is_empty() && !value.contains(['@', '/', ' ']);
            if !plain || Jid::new(value).is_err() {
                return bad(setting, format!("`{value}` is not a domain"));
            }
        }
        let nick_ok = !self.bridge_nick.trim().is_empty()
            && Jid::new(&format!("room@{}/{}", self.rooms, self.bridge_nick)).is_ok();
        if !nick_ok {
            return bad(
                "bridge_nick",
                format!("`{}` cannot be a nick", self.bridge_nick),
            );
        }
        if self.max_body == 0 {
            return bad("max_body", "must be above 0".into());
        }
        if self.event_capacity == 0 {
            return bad("event_capacity", "must be above 0".into());
        }
        Ok(())
    }

    /// The bridge occupant's own JID, `bridge@domain/archipel`.
    pub fn bridge_jid(&self) -> String {
        format!("bridge@{}/archipel", self.domain)
    }

    /// The JID that speaks for `local` (a node id) in rooms: `local@domain/archipel`.
    pub fn occupant_jid(&self, local: &str) -> String {
        format!("{local}@{}/archipel", self.domain)
    }
}

/// A room the link keeps: created (persistent, archived, public), configured (name,
/// description) and joined by the bridge occupant; joined again after every reconnect and
/// whenever a self-ping says the room dropped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSpec {
    /// The room's local part: the room is `local@rooms`.
    pub local: String,
    /// Its name (`muc#roomconfig_roomname`).
    pub name: String,
    /// Its description (`muc#roomconfig_roomdesc`).
    pub description: String,
}

/// What the directory shows of one contact `local@domain` (a mesh node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The node's local part, e.g. `!a1b2c3d4`.
    pub local: String,
    /// Available (`true`) or away (`false`, `<show>away</show>`).
    pub available: bool,
    /// The status line, e.g. `heard 4 min ago, 2 hops, battery 81 %`.
    pub status: String,
    /// The node's long name (vCard `FN`).
    pub long_name: Option<String>,
    /// The node's short name (vCard `NICKNAME`).
    pub short_name: Option<String>,
    /// Its hardware model (vCard `DESC`).
    pub hardware: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> XmppConfig {
        XmppConfig::new(
            "x",
            "127.0.0.1:5347",
            "mesh.hub.lan",
            "s3cret",
            "rooms.hub.lan",
        )
    }

    #[test]
    fn the_defaults_check_and_the_secret_is_never_shown() {
        let c = good();
        assert!(c.check().is_ok());
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn settings_that_cannot_work_name_themselves() {
        type Spoil = fn(&mut XmppConfig);
        let cases: [(Spoil, &str); 5] = [
            (|c| c.server = "hub.lan:5347".into(), "server"),
            (|c| c.domain = "node@mesh.hub.lan".into(), "domain"),
            (|c| c.rooms = String::new(), "rooms"),
            (|c| c.bridge_nick = " ".into(), "bridge_nick"),
            (|c| c.max_body = 0, "max_body"),
        ];
        for (spoil, setting) in cases {
            let mut c = good();
            spoil(&mut c);
            let e = c.check().expect_err(setting);
            assert!(
                matches!(e, XmppError::Setting { setting: s, .. } if s == setting),
                "{e}"
            );
        }
    }
}
