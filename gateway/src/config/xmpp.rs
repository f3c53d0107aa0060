//! `[[xmpp]]`: the hub's XMPP server, joined as a XEP-0114 component, where each bridged mesh
//! channel is a group chat on the server's MUC service and each mesh node a contact
//! `!a1b2c3d4@<domain>`.
//!
//! The server is given as an IP address: the hubs this is for have no DNS. The component
//! secret is read from `secret_file` at load time (or written inline as `secret`, the way the
//! server's own config holds it) into a [`Secret`]. Which channels become rooms follows from
//! the routes naming the endpoint; `[[xmpp.room]]` entries only rename a channel's room (the
//! default is the channel name in lower case) or make the gateway radio speak for the room's
//! people.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use super::error::Problem;
use super::route::RouteSection;
use super::secret::Secret;
use super::syntax;
use crate::ratelimit::Rate;

/// The port servers listen on for components (Prosody's and ejabberd's default).
pub const COMPONENT_PORT: u16 = 5347;

/// The bridge's own nickname in every room when none is given.
pub const DEFAULT_BRIDGE_NICK: &str = "archipel";

/// Texts a minute one XMPP user may put on the mesh: a LoRa channel carries a few texts a
/// minute in all, and a room full of fast typists must not take it for themselves.
pub const DEFAULT_RATE_PER_USER: f64 = 6.0;

/// Texts one user may send at once before the rate applies: a short reply in a few lines.
pub const DEFAULT_BURST_PER_USER: u32 = 3;

/// The highest sustained rate accepted, as for MQTT senders.
const MAX_RATE_PER_USER: f64 = 600.0;

/// The largest burst accepted.
const MAX_BURST_PER_USER: u32 = 1_000;

/// Longest JID part (RFC 7622: 1023 bytes each).
const MAX_JID_PART: usize = 1023;

/// Longest bridge nickname in characters: it shows in every room's occupant list.
const MAX_NICK: usize = 64;

/// Longest component secret accepted inline.
const MAX_SECRET: usize = 1024;

/// `[[xmpp]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppSection {
    /// The operator's name for it, used in routes and logs (unique across every endpoint).
    pub name: String,
    /// `IP:PORT` of the server's component port (no DNS on a hub).
    pub server: String,
    /// The component's domain (`mesh.hub.lan`): nodes are `!a1b2c3d4@` it.
    pub domain: String,
    /// A file holding the component secret alone, read (trimmed) at load time.
    pub secret_file: Option<PathBuf>,
    /// The component secret: written inline, or read from `secret_file` at load time.
    pub secret: Option<Secret>,
    /// The server's MUC service (`rooms.hub.lan`), where the channel rooms live.
    pub rooms: String,
    /// The bridge occupant's nickname in every room.
    #[serde(default = "default_nick")]
    pub bridge_nick: String,
    /// Texts a minute one XMPP user may put on the mesh (token-bucket rate).
    #[serde(default = "default_rate")]
    pub rate_per_user: f64,
    /// Texts one XMPP user may send at once (token-bucket size).
    #[serde(default = "default_burst")]
    pub burst_per_user: u32,
    /// `[[xmpp.room]]`: rooms named otherwise than their channel, or spoken for by the
    /// gateway radio.
    #[serde(default, rename = "room")]
    pub room_entries: Vec<XmppRoom>,
    /// The channels routes take to or from this endpoint, in route order: the rooms the link
    /// keeps. Filled when a config is loaded (`Config::load`, `Config::from_toml`), so a room
    /// message finds its channel without the routes at hand.
    #[serde(skip)]
    pub routed: Vec<String>,
}

/// `[[xmpp.room]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppRoom {
    /// The mesh channel (on this endpoint's side of its routes).
    pub channel: String,
    /// The room's local part on the MUC service (default: the channel name in lower case).
    pub room: Option<String>,
    /// Who speaks on the mesh for the room's people.
    #[serde(default)]
    pub send_as: SendAs,
}

/// Who a room message goes on the mesh as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendAs {
    /// Each XMPP user as a virtual node of their own, so mesh people see who spoke and can
    /// answer them directly.
    #[default]
    Node,
    /// The gateway radio, the text prefixed with `[nick]`: for channels where unknown node
    /// numbers would confuse people or fill node databases.
    Gateway,
}

fn default_nick() -> String {
    DEFAULT_BRIDGE_NICK.into()
}

fn default_rate() -> f64 {
    DEFAULT_RATE_PER_USER
}

fn default_burst() -> u32 {
    DEFAULT_BURST_PER_USER
}

impl XmppSection {
    /// A section with the defaults and no rooms, for configs built in code.
    pub fn new(
        name: impl Into<String>,
        server: impl Into<String>,
        domain: impl Into<String>,
        secret: Secret,
        rooms: impl Into<String>,
    ) -> XmppSection {
        XmppSection {
            name: name.into(),
            server: server.into(),
            domain: domain.into(),
            secret_file: None,
            secret: Some(secret),
            rooms: rooms.into(),
            bridge_nick: default_nick(),
            rate_per_user: DEFAULT_RATE_PER_USER,
            burst_per_user: DEFAULT_BURST_PER_USER,
            room_entries: Vec::new(),
            routed: Vec::new(),
        }
    }

    /// The room entry of a channel, when there is one.
    fn entry(&self, channel: &str) -> Option<&XmppRoom> {
        self.room_entries.iter().find(|r| r.channel == channel)
    }

    /// The room local part of a channel: its `[[xmpp.room]]` name, else the channel name in
    /// lower case (MUC services fold room names to lower case).
    pub fn room_of(&self, channel: &str) -> String {
        self.entry(channel)
            .and_then(|r| r.room.clone())
            .unwrap_or_else(|| channel.to_lowercase())
    }

    /// The routed channel whose room this is, if any.
    pub fn channel_of_room(&self, room: &str) -> Option<&str> {
        self.routed
            .iter()
            .find(|c| self.room_of(c) == room)
            .map(String::as_str)
    }

    /// Who speaks for the people of a channel's room.
    pub fn send_as(&self, channel: &str) -> SendAs {
        self.entry(channel).map(|r| r.send_as).unwrap_or_default()
    }

    /// Every routed channel with its room local part, in route order: the rooms to keep.
    pub fn bridged(&self) -> impl Iterator<Item = (&str, String)> {
        self.routed.iter().map(|c| (c.as_str(), self.room_of(c)))
    }

    /// The server's component port (`None` only for a config that did not validate).
    pub fn server_addr(&self) -> Option<SocketAddr> {
        self.server.parse().ok()
    }

    /// One user's token bucket.
    pub fn rate(&self) -> Rate {
        Rate {
            per_minute: self.rate_per_user,
            burst: f64::from(self.burst_per_user),
        }
    }
}

/// The key prefix of an XMPP section in messages.
pub fn key(i: usize, x: &XmppSection) -> String {
    format!("xmpp[{i}] ({})", x.name)
}

/// The channels routes take to or from endpoint `name`, each once, in route order: a route's
/// `to_channel` where it names the endpoint in `to`, its `channel` where in `from`.
pub fn routed_channels(routes: &[RouteSection], name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in routes {
        let sides = [
            (r.from.iter().any(|f| f == name), r.channel.as_str()),
            (r.to.iter().any(|t| t == name), r.to_channel()),
        ];
        for (named, channel) in sides {
            if named && !out.iter().any(|c| c == channel) {
                out.push(channel.to_owned());
            }
        }
    }
    out
}

/// Fills every section's `routed` from the routes.
pub fn resolve(sections: &mut [XmppSection], routes: &[RouteSection]) {
    for x in sections {
        x.routed = routed_channels(routes, &x.name);
    }
}

/// Reads the secret files into `secret`; a section with both `secret` and `secret_file` is
/// refused here, before the file's content fills `secret`.
pub fn read_files(sections: &mut [XmppSection], p: &mut Vec<Problem>) {
    for (i, x) in sections.iter_mut().enumerate() {
        let key = key(i, x);
        let Some(path) = &x.secret_file else {
            continue;
        };
        if x.secret.is_some() {
            p.push(Problem::new(
                format!("{key}.secret"),
                "is set together with secret_file: keep one (secret_file keeps the secret out of a config you may share)",
            ));
            continue;
        }
        match Secret::read_file_trimmed(path) {
            Ok(secret) => x.secret = Some(secret),
            Err(why) => p.push(Problem::new(format!("{key}.secret_file"), why)),
        }
    }
}

/// Checks every `[[xmpp]]`: what needs no file. Routes are taken as written, so this holds for
/// a config built in code whose `routed` lists were never filled.
pub fn check(sections: &[XmppSection], routes: &[RouteSection], p: &mut Vec<Problem>) {
    let mut components: HashMap<(SocketAddr, String), String> = HashMap::new();
    for (i, x) in sections.iter().enumerate() {
        let key = key(i, x);
        if let Some(why) = syntax::endpoint_name(&x.name) {
            p.push(Problem::new(format!("xmpp[{i}].name"), why));
        }
        let server = server(&x.server);
        if let Err(why) = &server {
            p.push(Problem::new(format!("{key}.server"), why.clone()));
        }
        for (field, value, example) in [
            ("domain", &x.domain, "mesh.hub.lan"),
            ("rooms", &x.rooms, "rooms.hub.lan"),
        ] {
            if let Some(why) = domain(value, example) {
                p.push(Problem::new(format!("{key}.{field}"), why));
            }
        }
        if x.domain == x.rooms {
            p.push(Problem::new(
                format!("{key}.rooms"),
                format!(
                    "`{}` is also the component's domain: give the server's MUC service (its `Component \"rooms.hub.lan\" \"muc\"` line), which is another domain",
                    x.rooms
                ),
            ));
        }
        if let Ok(at) = server
            && let Some(other) = components.insert((at, x.domain.clone()), key.clone())
        {
            p.push(Problem::new(
                format!("{key}.domain"),
                format!(
                    "`{}` on the same server as {other}: a server takes one connection per component domain and refuses the second; give each section its own domain",
                    x.domain
                ),
            ));
        }
        match &x.secret {
            None if x.secret_file.is_none() => p.push(Problem::new(
                format!("{key}.secret_file"),
                "is missing: give the path of a file holding the component secret alone (the `component_secret` of the server's Component line), or write it as `secret`",
            )),
            Some(s) if x.secret_file.is_none() => {
                let s = s.expose();
                if s.trim().is_empty() || s.chars().any(char::is_control) || s.len() > MAX_SECRET {
                    p.push(Problem::new(
                        format!("{key}.secret"),
                        format!(
                            "give the component secret: 1 to {MAX_SECRET} bytes, no control characters"
                        ),
                    ));
                }
            }
            _ => {}
        }
        if let Some(why) = nick(&x.bridge_nick) {
            p.push(Problem::new(format!("{key}.bridge_nick"), why));
        }
        if !(x.rate_per_user.is_finite()
            && x.rate_per_user > 0.0
            && x.rate_per_user <= MAX_RATE_PER_USER)
        {
            p.push(Problem::new(
                format!("{key}.rate_per_user"),
                format!(
                    "{}: give texts per minute per XMPP user, above 0 and at most {MAX_RATE_PER_USER} (default {DEFAULT_RATE_PER_USER})",
                    x.rate_per_user
                ),
            ));
        }
        if x.burst_per_user == 0 || x.burst_per_user > MAX_BURST_PER_USER {
            p.push(Problem::new(
                format!("{key}.burst_per_user"),
                format!(
                    "{}: give 1 to {MAX_BURST_PER_USER} (default {DEFAULT_BURST_PER_USER})",
                    x.burst_per_user
                ),
            ));
        }
        check_rooms(x, &key, &routed_channels(routes, &x.name), p);
    }
}

/// The `[[xmpp.room]]` entries against the routed channels, and every routed channel's room.
fn check_rooms(x: &XmppSection, key: &str, routed: &[String], p: &mut Vec<Problem>) {
    let mut listed: HashMap<&str, usize> = HashMap::new();
    for (j, r) in x.room_entries.iter().enumerate() {
        let at = format!("{key}.room[{j}] ({})", r.channel);
        if let Some(before) = listed.insert(r.channel.as_str(), j) {
            p.push(Problem::new(
                &at,
                format!(
                    "channel `{}` is already room[{before}]: give each channel one room",
                    r.channel
                ),
            ));
        }
        if !routed.contains(&r.channel) {
            p.push(Problem::new(
                &at,
                format!(
                    "no route takes channel `{}` to or from `{}`, so this room would stay empty: add a [[route]] naming `{}` for that channel, or remove this [[xmpp.room]]",
                    r.channel, x.name, x.name
                ),
            ));
        }
        if let Some(room) = &r.room
            && let Some(why) = localpart(room)
        {
            p.push(Problem::new(format!("{at}.room"), why));
        }
    }
    let mut rooms: HashMap<String, &str> = HashMap::new();
    for channel in routed {
        let explicit = x.entry(channel).and_then(|r| r.room.as_ref()).is_some();
        let room = x.room_of(channel);
        if !explicit && let Some(why) = localpart(&room) {
            p.push(Problem::new(
                format!("{key}.room"),
                format!(
                    "channel `{channel}` has no room name of its own, and its default `{}` cannot be one: {why}; add [[xmpp.room]] with channel = \"{channel}\" and room = \"{}\"",
                    room.escape_debug(),
                    suggest_localpart(&room)
                ),
            ));
        }
        if let Some(other) = rooms.insert(room.clone(), channel) {
            p.push(Problem::new(
                format!("{key}.room"),
                format!(
                    "channels `{other}` and `{channel}` would share room `{room}`: one room carries one channel; give one of them another room in [[xmpp.room]]"
                ),
            ));
        }
    }
}

/// Checks the server address: an IP literal and a port.
fn server(text: &str) -> Result<SocketAddr, String> {
    let at = syntax::host_port(text, COMPONENT_PORT)?;
    match at.host.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, at.port)),
        Err(_) => Err(format!(
            "`{text}` names a host: hubs have no DNS, so give the server's IP address and component port, such as `127.0.0.1:{COMPONENT_PORT}` (the server's `component_ports`)"
        )),
    }
}

/// Why `text` is not a domain name an XMPP server would serve, if it is not.
fn domain(text: &str, example: &str) -> Option<String> {
    if text.is_empty() {
        return Some(format!("is empty: give a domain, such as `{example}`"));
    }
    if text.parse::<IpAddr>().is_ok() || text.starts_with('[') {
        return Some(format!(
            "`{text}` is an IP address: give the domain the server knows it by, such as `{example}`"
        ));
    }
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(format!(
            "`{text}` has capitals: servers compare domains in lower case; write `{}`",
            text.to_ascii_lowercase()
        ));
    }
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if text.len() > 253 || !text.split('.').all(label) {
        return Some(format!(
            "`{}` is not a domain: lower-case letters, digits and `-` between single dots, such as `{example}`",
            text.escape_debug()
        ));
    }
    None
}

/// Why `text` cannot be the local part of a room's JID, if it cannot.
pub fn localpart(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("is empty: give a room name, such as `longfast`".into());
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "\"&'/:<>@".contains(*c))
    {
        return Some(format!(
            "`{}` contains {}, which a JID's local part cannot hold",
            text.escape_debug(),
            if c.is_whitespace() {
                "a space".to_owned()
            } else {
                format!("`{}`", c.escape_debug())
            }
        ));
    }
    if text.to_lowercase() != text {
        return Some(format!(
            "`{text}` has capitals: the MUC service folds room names to lower case, so the room would answer as `{}`; write that",
            text.to_lowercase()
        ));
    }
    if text.len() > MAX_JID_PART {
        return Some(format!(
            "is {} bytes: a JID part holds at most {MAX_JID_PART}",
            text.len()
        ));
    }
    None
}

/// A room name close to `text` that [`localpart`] accepts.
fn suggest_localpart(text: &str) -> String {
    let s: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() || "\"&'/:<>@".contains(c) {
                '-'
            } else {
                c
            }
        })
        .collect();
    let s = s.trim_matches('-');
    if s.is_empty() {
        "room".into()
    } else {
        s.into()
    }
}

/// Why `text` cannot be the bridge's nickname, if it cannot.
fn nick(text: &str) -> Option<String> {
    if text.trim().is_empty() {
        return Some(format!(
            "is empty: give the name the bridge shows in every room, such as `{DEFAULT_BRIDGE_NICK}`"
        ));
    }
    if text.chars().any(char::is_control) {
        return Some(format!(
            "`{}` contains control characters: use plain text",
            text.escape_debug()
        ));
    }
    if text.trim() != text {
        return Some(format!(
            "`{text}` starts or ends with spaces, which servers strip: write `{}`",
            text.trim()
        ));
    }
    if text.chars().count() > MAX_NICK {
        return Some(format!(
            "is {} characters long: keep it to {MAX_NICK}",
            text.chars().count()
        ));
    }
    None
}
