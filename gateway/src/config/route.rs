//! `[[route]]`: which channels cross between which endpoints, of any kind.

use serde::Deserialize;

use super::error::Problem;
use super::{Config, EndpointKind, EndpointSection};

/// The most hops a route may give: the radio takes a relayed packet as heard from MQTT and
/// rebroadcasts it with one hop less, so the gateway injects it with `hops + 1`, and the
/// packet header holds at most 7 (`HOP_MAX`).
pub const MAX_HOPS: u8 = 6;

/// `[[route]]`: traffic on `channel` heard from a `from` endpoint goes to every `to` endpoint,
/// on `to_channel` there; unless `one_way`, traffic on `to_channel` heard from a `to`
/// endpoint also goes back to the `from` endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Channel name on the `from` endpoints.
    pub channel: String,
    /// Endpoints (radios, brokers...) whose traffic on `channel` is relayed.
    pub from: Vec<String>,
    /// Endpoints it is relayed to.
    pub to: Vec<String>,
    /// Channel name on the `to` endpoints (default: the same name).
    pub to_channel: Option<String>,
    /// Relay only from `from` to `to`.
    #[serde(default)]
    pub one_way: bool,
    /// Hop limit the relayed packet starts with on a far mesh: 0 (the default) means only
    /// the radio's direct neighbours hear it, so a bridge never floods a distant mesh.
    #[serde(default)]
    pub hops: u8,
}

impl RouteSection {
    /// The channel name on the `to` side.
    pub fn to_channel(&self) -> &str {
        self.to_channel.as_deref().unwrap_or(&self.channel)
    }

    /// Whether traffic from `name` can take this route (it is a `from`, or a `to` of a route
    /// that goes both ways).
    pub fn takes_from(&self, name: &str) -> bool {
        self.from.iter().any(|f| f == name) || (!self.one_way && self.to.iter().any(|t| t == name))
    }

    /// Whether this route can send to `name`.
    pub fn sends_to(&self, name: &str) -> bool {
        self.to.iter().any(|t| t == name) || (!self.one_way && self.from.iter().any(|f| f == name))
    }
}

/// Checks every route against the endpoints and the channel table.
pub fn check(config: &Config, p: &mut Vec<Problem>) {
    let table = config.channel_table();
    let names = endpoint_list(config);
    for (i, route) in config.routes.iter().enumerate() {
        let key = format!("route[{i}]");
        for (field, list, channel) in [
            ("from", &route.from, route.channel.as_str()),
            ("to", &route.to, route.to_channel()),
        ] {
            if list.is_empty() {
                p.push(Problem::new(
                    format!("{key}.{field}"),
                    "is empty: name at least one endpoint",
                ));
            }
            for name in list {
                match config.endpoint(name) {
                    None => p.push(Problem::new(
                        format!("{key}.{field}"),
                        format!("no endpoint named `{name}`: the endpoints are {names}"),
                    )),
                    Some(EndpointSection::Radio(r)) => {
                        if !r.channels.iter().any(|c| c.name == channel) {
                            p.push(Problem::new(
                                format!("{key}.{field}"),
                                format!(
                                    "radio `{name}` has no channel `{channel}`: its channels are {}",
                                    r.channels
                                        .iter()
                                        .map(|c| c.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            ));
                        }
                    }
                    Some(EndpointSection::Xmpp(_)) => {
                        if !table.contains(channel) {
                            let known: Vec<&str> = table.names().collect();
                            p.push(Problem::new(
                                format!("{key}.{field}"),
                                format!(
                                    "xmpp `{name}` has no key for channel `{channel}`: the room shows the channel's texts decrypted, so the gateway needs its key; the channel table (every radio's channels and [[channel]] entries) has {}; add a [[channel]] with its name and psk",
                                    if known.is_empty() { "none".into() } else { known.join(", ") }
                                ),
                            ));
                        }
                    }
                    Some(EndpointSection::Peer(_)) => {
                        if !table.contains(channel) {
                            let known: Vec<&str> = table.names().collect();
                            p.push(Problem::new(
                                format!("{key}.{field}"),
                                format!(
                                    "peer `{name}` has no key for channel `{channel}`: the gateway decrypts what it relays to tell its class (TTL and priority) and hands it on under the channel's name; the channel table (every radio's channels and [[channel]] entries) has {}; add a [[channel]] with its name and psk",
                                    if known.is_empty() { "none".into() } else { known.join(", ") }
                                ),
                            ));
                        }
                    }
                    Some(EndpointSection::Mqtt(_)) => {
                        if !table.contains(channel) {
                            let known: Vec<&str> = table.names().collect();
                            p.push(Problem::new(
                                format!("{key}.{field}"),
                                format!(
                                    "mqtt `{name}` has no key for channel `{channel}`: the channel table (every radio's channels and [[channel]] entries) has {}; add a [[channel]] with its name and psk",
                                    if known.is_empty() { "none".into() } else { known.join(", ") }
                                ),
                            ));
                        } else if channel.contains(['/', '+', '#']) {
                            p.push(Problem::new(
                                format!("{key}.{field}"),
                                format!(
                                    "channel `{channel}` cannot cross mqtt `{name}`: `/`, `+` and `#` break the topic it is published on"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        if let Some(both) = route.from.iter().find(|f| route.to.contains(f)) {
            p.push(Problem::new(
                &key,
                format!(
                    "`{both}` is in both from and to: a packet is never sent back to the endpoint it came from"
                ),
            ));
        }
        if route.hops > MAX_HOPS {
            p.push(Problem::new(
                format!("{key}.hops"),
                format!(
                    "{}: at most {MAX_HOPS}: a radio injects a relayed packet with hops + 1 (it spends one on its own rebroadcast), and the packet header holds at most 7",
                    route.hops
                ),
            ));
        }
    }
}

/// Every endpoint with its kind, for messages.
fn endpoint_list(config: &Config) -> String {
    let names: Vec<String> = config
        .endpoints()
        .map(|e| format!("{} ({})", e.name(), e.kind()))
        .collect();
    if names.is_empty() {
        format!(
            "none (add a [[radio]], [[mqtt]], [[xmpp]] or [[peer]] section; kinds: {})",
            EndpointKind::ALL.map(|k| k.to_string()).join(", ")
        )
    } else {
        names.join(", ")
    }
}
