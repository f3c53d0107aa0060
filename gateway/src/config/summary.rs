//! The one-screen summary `check-config` and the demo print: what is in force, with every
//! default filled in, and never a key or a password.

use std::fmt::Write;

use super::{Config, EndpointKind, SendAs};

impl Config {
    /// A one-screen summary of the configuration in force (no keys, no passwords).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "gateway {} ({})", self.gateway.name, self.gateway.id);
        let _ = writeln!(
            s,
            "store {} (seen-set {} h, at most {} queued per destination)",
            self.store.path.display(),
            self.store.seen_window_hours,
            self.store.max_queue_per_destination
        );
        for r in &self.radios {
            let mode = match (&r.region, r.preset) {
                (Some(region), Some(preset)) => format!("{region} {preset}"),
                (Some(region), None) => format!("{region}, preset from the radio"),
                (None, Some(preset)) => format!("region from the radio, {preset}"),
                (None, None) => "region and preset from the radio".into(),
            };
            let mode = match r.frequency_mhz {
                Some(f) => format!("{mode} at {f} MHz"),
                None => mode,
            };
            let duty = match (self.governor(r).duty_cycle_percent, &r.region) {
                (Some(d), _) => format!("{d}% duty cycle"),
                (None, Some(_)) => "no duty-cycle limit".into(),
                (None, None) => "duty cycle of the radio's region".into(),
            };
            let chans: Vec<&str> = r.channels.iter().map(|c| c.name.as_str()).collect();
            let _ = writeln!(
                s,
                "radio {} at {}: {mode}, {duty}, channels {}",
                r.name,
                r.attachment(),
                chans.join(", ")
            );
        }
        for m in &self.mqtt {
            let tls = m
                .tls
                .as_ref()
                .map(|t| format!(" (TLS, CA {})", t.ca_file.display()))
                .unwrap_or_default();
            let user = match (&m.username, &m.password_file) {
                (Some(u), Some(f)) => format!(", user {u} (password from {})", f.display()),
                (Some(u), None) => format!(", user {u} (no password)"),
                _ => ", anonymous".into(),
            };
            let mut publishes = Vec::new();
            if m.encrypted {
                publishes.push("encrypted envelopes (/2/e/)");
            }
            if m.json {
                publishes.push("JSON (/2/json/)");
            }
            let publishes = if publishes.is_empty() {
                "publishes nothing".into()
            } else {
                format!("publishes {}", publishes.join(" and "))
            };
            let _ = writeln!(
                s,
                "mqtt {} at {}{tls}: root {}, client id {}{user}; {publishes}{}; downlink at most {} a minute per sender, bursts of {}",
                m.name,
                m.address,
                self.mqtt_root(m),
                self.mqtt_client_id(m),
                if m.downlink_json {
                    ", takes JSON sendtext downlink"
                } else {
                    ""
                },
                m.rate_per_node,
                m.burst_per_node
            );
        }
        for x in &self.xmpp {
            let secret = match &x.secret_file {
                Some(f) => format!("secret from {}", f.display()),
                None => "secret inline".into(),
            };
            let rooms: Vec<String> = x
                .bridged()
                .map(|(channel, room)| {
                    let who = match x.send_as(channel) {
                        SendAs::Node => "each user as a node",
                        SendAs::Gateway => "as the gateway, [nick] prefixed",
                    };
                    format!("{channel} in {room}@{} ({who})", x.rooms)
                })
                .collect();
            let rooms = if rooms.is_empty() {
                "no channel routed".into()
            } else {
                rooms.join(", ")
            };
            let _ = writeln!(
                s,
                "xmpp {} at {}: component {} ({secret}), bridge nick {}; {rooms}; at most {} texts a minute per user, bursts of {}",
                x.name, x.server, x.domain, x.bridge_nick, x.rate_per_user, x.burst_per_user
            );
        }
        if self.federated() {
            self.federation_summary(&mut s);
        }
        let _ = writeln!(
            s,
            "http on {} ({}): the status page, /metrics, /api/status",
            self.http.listen,
            self.http.reach()
        );
        let _ = writeln!(s, "{}", self.log.summary());
        if !self.mqtt.is_empty()
            || !self.xmpp.is_empty()
            || !self.peers.is_empty()
            || !self.channels.is_empty()
        {
            let table = self.channel_table();
            let own: Vec<&str> = self.channels.iter().map(|c| c.name.as_str()).collect();
            let _ = write!(
                s,
                "channels {}",
                table.names().collect::<Vec<_>>().join(", ")
            );
            if !own.is_empty() {
                let _ = write!(s, " ({} from [[channel]])", own.join(", "));
            }
            s.push('\n');
        }
        for route in &self.routes {
            let arrow = if route.one_way { "->" } else { "<->" };
            // The hop limit is what a radio injects with; between other endpoints it means
            // nothing, and showing it would suggest it does.
            let radio = route
                .from
                .iter()
                .chain(&route.to)
                .any(|n| self.endpoint_kind(n) == Some(EndpointKind::Radio));
            let hops = if radio {
                format!(" (hop limit {} on arrival)", route.hops)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "route {}#{} {arrow} {}#{}{hops}",
                route.from.join("+"),
                route.channel,
                route.to.join("+"),
                route.to_channel(),
            );
        }
        s
    }

    /// `[federation]` and every `[[peer]]`: where this hub listens, who it is, and who its
    /// neighbours are (by fingerprint, which people compare aloud).
    fn federation_summary(&self, s: &mut String) {
        let f = &self.federation;
        let listen = match (&f.listen, f.listen_addr()) {
            (_, Some(at)) if at.ip().is_unspecified() => {
                format!("listens on {at} (every interface)")
            }
            (_, Some(at)) if at.ip().is_loopback() => {
                format!("listens on {at} (this machine only)")
            }
            (_, Some(at)) => format!("listens on {at}"),
            (Some(text), None) => format!("listens on {text}"),
            (None, None) => "does not listen (dials only)".into(),
        };
        let identity = match f.own_key {
            Some(key) => format!("fingerprint {}", key.fingerprint()),
            None => "made on first start".into(),
        };
        let _ = writeln!(
            s,
            "federation {listen}; identity {} ({identity}); a message crosses at most {} hubs; window {} KiB, a neighbour silent {} s is given up",
            self.identity_path().display(),
            f.max_hops,
            f.window_kib,
            f.dead_after_secs
        );
        if self.peers.is_empty() {
            let _ = writeln!(
                s,
                "no [[peer]]: every hub that connects is refused (add one per neighbour)"
            );
        }
        for peer in &self.peers {
            let at = match &peer.address {
                Some(address) => format!("at {address}"),
                None => "dials in".into(),
            };
            let fingerprint = peer
                .public_key()
                .map(|k| k.fingerprint().to_string())
                .unwrap_or_else(|| "invalid key".into());
            let window = peer
                .window_kib
                .map(|w| format!(", window {w} KiB"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "peer {} {at}, fingerprint {fingerprint}{window}",
                peer.name
            );
        }
    }
}
