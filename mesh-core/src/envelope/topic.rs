//! Meshtastic MQTT topics: `<root>/2/e/<channel>/<gateway>` for envelopes and
//! `<root>/2/json/<channel>/<gateway>` for the JSON form (firmware `MQTT.cpp`, `MQTT.h`:
//! `cryptTopic = "/2/e/"`, `jsonTopic = "/2/json/"`).
//!
//! The root is the MQTT module's `root` setting, `msh` when empty; a radio whose region is set
//! while the default root is in use rewrites it to `msh/<REGION>` (`AdminModule.cpp`), and
//! operators nest further (`msh/EU_868/FR`), so a root may hold slashes. A topic is therefore
//! read from the right: the last four levels are `2`, the kind, the channel and the gateway,
//! and everything before them is the root.

use std::fmt;

use super::{GatewayId, PKI_CHANNEL};

/// The firmware's default root (`default_mqtt_root`).
pub const DEFAULT_ROOT: &str = "msh";
/// Longest topic accepted when parsing: far above any real one, and it bounds what an error
/// message may quote.
pub const MAX_TOPIC: usize = 256;

/// The protocol version level that follows the root.
const VERSION: &str = "2";

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// `ServiceEnvelope` protobufs (`/2/e/`).
    Encrypted,
    /// The firmware's JSON rendering (`/2/json/`).
    Json,
}

impl TopicKind {
    /// The topic level naming the kind.
    pub fn level(self) -> &'static str {
        match self {
            TopicKind::Encrypted => "e",
            TopicKind::Json => "json",
        }
    }

    fn from_level(level: &str) -> Option<TopicKind> {
        match level {
            "e" => Some(TopicKind::Encrypted),
            "json" => Some(TopicKind::Json),
            _ => None,
        }
    }
}

/// Why a text is not a usable root, channel or mesh topic. Quoted inputs are escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// An empty root.
    #[error("an MQTT topic root cannot be empty (the firmware's default is `msh`)")]
    EmptyRoot,
    /// A level an MQTT topic cannot hold.
    #[error("{what} {text:?} {why}")]
    BadLevel {
        /// Which part: root, channel, gateway.
        what: &'static str,
        /// The offending text.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Longer than any mesh topic.
    #[error("topic of {len} bytes is longer than {MAX_TOPIC}: not a Meshtastic topic")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Not of the `<root>/2/<e|json>/<channel>/<gateway>` shape.
    #[error(
        "topic {0:?} is not a Meshtastic mesh topic: expected <root>/2/e/<channel>/<gateway> or <root>/2/json/<channel>/<gateway>"
    )]
    NotMeshTopic(String),
    /// A mesh topic under another root than the expected one.
    #[error("topic {topic:?} is under root {found:?}, not {expected:?}")]
    OtherRoot {
        /// The topic.
        topic: String,
        /// The root it should have.
        expected: String,
        /// The root it has.
        found: String,
    },
}

/// Checks one part of a topic: `what` names it in errors; `slashes` allows `/` (roots only).
fn check(what: &'static str, text: &str, slashes: bool) -> Result<(), TopicError> {
    let bad = |why| TopicError::BadLevel {
        what,
        text: text.to_owned(),
        why,
    };
    if text.is_empty() {
        return Err(bad("is empty"));
    }
    if text.contains(['+', '#']) {
        return Err(bad("contains an MQTT wildcard (`+` or `#`)"));
    }
    if text.contains('\0') {
        return Err(bad("contains a NUL character"));
    }
    if !slashes && text.contains('/') {
        return Err(bad(
            "contains `/`, which would split it into two topic levels",
        ));
    }
    Ok(())
}

/// A topic root such as `msh`, `msh/EU_868` or `msh/EU_868/FR`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Root(String);

impl Root {
    /// A root, checked: not empty, no wildcard, no NUL. Slashes are allowed, and kept as given
    /// (the firmware concatenates the root as it is).
    pub fn new(text: impl Into<String>) -> Result<Root, TopicError> {
        let text = text.into();
        if text.is_empty() {
            return Err(TopicError::EmptyRoot);
        }
        check("root", &text, true)?;
        Ok(Root(text))
    }

    /// The root a radio uses when nobody set one: `msh`, or `msh/<REGION>` once a region is
    /// set (`UNSET` or empty keeps `msh`). `region` is the firmware's region name (`EU_868`).
    pub fn firmware_default(region: &str) -> Result<Root, TopicError> {
        if region.is_empty() || region == "UNSET" {
            return Ok(Root(DEFAULT_ROOT.to_owned()));
        }
        check("region", region, false)?;
        Ok(Root(format!("{DEFAULT_ROOT}/{region}")))
    }

    /// The root's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subscription that receives every gateway's envelopes on `channel`:
    /// `<root>/2/e/<channel>/+` (the firmware's `MQTT::sendSubscriptions`).
    pub fn downlink_filter(&self, channel: &TopicChannel) -> String {
        format!("{}/{VERSION}/e/{channel}/+", self.0)
    }
}

impl Default for Root {
    fn default() -> Self {
        Root(DEFAULT_ROOT.to_owned())
    }
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Root({:?})", self.0)
    }
}

/// The channel level of a topic: a channel's name, or the `PKI` pseudo-channel on which
/// public-key direct messages travel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicChannel {
    /// A channel, by name.
    Named(String),
    /// Direct messages encrypted with public keys.
    Pki,
}

impl TopicChannel {
    /// The channel level for `name`; `PKI` is the pseudo-channel.
    pub fn new(name: &str) -> Result<TopicChannel, TopicError> {
        if name == PKI_CHANNEL {
            return Ok(TopicChannel::Pki);
        }
        check("channel", name, false)?;
        Ok(TopicChannel::Named(name.to_owned()))
    }

    /// The level's text, which is also the envelope's `channel_id`.
    pub fn name(&self) -> &str {
        match self {
            TopicChannel::Named(name) => name,
            TopicChannel::Pki => PKI_CHANNEL,
        }
    }
}

impl fmt::Display for TopicChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One mesh topic. Formats as `<root>/2/<kind>/<channel>/<gateway>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    /// Everything before `/2/`.
    pub root: Root,
    /// Envelopes or JSON.
    pub kind: TopicKind,
    /// The channel (or `PKI`).
    pub channel: TopicChannel,
    /// The publishing gateway.
    pub gateway: GatewayId,
}

impl Topic {
    /// A topic, checked: the gateway must be one topic level (a foreign id may not be).
    pub fn new(
        root: Root,
        kind: TopicKind,
        channel: TopicChannel,
        gateway: GatewayId,
    ) -> Result<Topic, TopicError> {
        if let GatewayId::Other(text) = &gateway {
            check("gateway", text, false)?;
        }
        Ok(Topic {
            root,
            kind,
            channel,
            gateway,
        })
    }

    /// Reads a mesh topic, taking as root whatever precedes its last four levels.
    pub fn parse(text: &str) -> Result<Topic, TopicError> {
        if text.len() > MAX_TOPIC {
            return Err(TopicError::TooLong { len: text.len() });
        }
        let not_mesh = || TopicError::NotMeshTopic(text.to_owned());
        let mut levels = text.rsplitn(5, '/');
        let (Some(gateway), Some(channel), Some(kind), Some(version), Some(root)) = (
            levels.next(),
            levels.next(),
            levels.next(),
            levels.next(),
            levels.next(),
        ) else {
            return Err(not_mesh());
        };
        let kind = TopicKind::from_level(kind).ok_or_else(not_mesh)?;
        if version != VERSION || root.is_empty() {
            return Err(not_mesh());
        }
        check("gateway", gateway, false)?;
        Ok(Topic {
            root: Root::new(root)?,
            kind,
            channel: TopicChannel::new(channel)?,
            gateway: GatewayId::parse(gateway),
        })
    }

    /// Reads a mesh topic that must be under `root`.
    pub fn parse_under(root: &Root, text: &str) -> Result<Topic, TopicError> {
        let topic = Topic::parse(text)?;
        if &topic.root != root {
            return Err(TopicError::OtherRoot {
                topic: text.to_owned(),
                expected: root.0.clone(),
                found: topic.root.0,
            });
        }
        Ok(topic)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{VERSION}/{}/{}/{}",
            self.root,
            self.kind.level(),
            self.channel,
            self.gateway
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeId;

    fn gw(n: u32) -> GatewayId {
        GatewayId::Node(NodeId::new(n))
    }

    #[test]
    fn firmware_topics_parse_into_their_parts() {
        let t = Topic::parse("msh/EU_868/2/e/LongFast/!a1b2c3d4").unwrap();
        assert_eq!(t.root.as_str(), "msh/EU_868");
        assert_eq!(t.kind, TopicKind::Encrypted);
        assert_eq!(t.channel, TopicChannel::Named("LongFast".into()));
        assert_eq!(t.gateway, gw(0xa1b2_c3d4));
        let t = Topic::parse("msh/2/json/PKI/!00000001").unwrap();
        assert_eq!(
            (t.root.as_str(), t.kind, &t.channel),
            ("msh", TopicKind::Json, &TopicChannel::Pki)
        );
        // A root that itself looks like a topic is still read from the right.
        let t = Topic::parse("a/2/e/b/2/e/ops/!00000002").unwrap();
        assert_eq!(t.root.as_str(), "a/2/e/b");
        assert_eq!(t.channel.name(), "ops");
    }

    #[test]
    fn formatting_and_parsing_round_trip_with_slashed_roots() {
        let alphabet: Vec<char> = "ab2eE_-.json/ éü8".chars().collect();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut pick = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let mut checked = 0;
        for _ in 0..3000 {
            let word = |pick: &mut dyn FnMut(usize) -> usize, slashes: bool| -> String {
                let len = 1 + pick(9);
                (0..len)
                    .map(|_| alphabet[pick(alphabet.len())])
                    .filter(|c| slashes || *c != '/')
                    .collect()
            };
            let (Ok(root), Ok(channel)) = (
                Root::new(word(&mut pick, true)),
                TopicChannel::new(&word(&mut pick, false)),
            ) else {
                continue;
            };
            let gateway = if pick(3) == 0 {
                GatewayId::parse(&word(&mut pick, false))
            } else {
                gw(pick(usize::MAX) as u32)
            };
            let kind = if pick(2) == 0 {
                TopicKind::Encrypted
            } else {
                TopicKind::Json
            };
            let Ok(topic) = Topic::new(root.clone(), kind, channel, gateway) else {
                continue;
            };
            let text = topic.to_string();
            assert_eq!(Topic::parse(&text).as_ref(), Ok(&topic), "{text}");
            assert_eq!(Topic::parse_under(&root, &text), Ok(topic));
            checked += 1;
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn what_is_not_a_mesh_topic_is_an_error() {
        for bad in [
            "",
            "msh",
            "msh/2/e/LongFast",
            "2/e/LongFast/!00000001",
            "/2/e/LongFast/!00000001",
            "msh/3/e/LongFast/!00000001",
            "msh/2/c/LongFast/!00000001",
            "msh/2/map/",
            "msh/2/e/LongFast/+",
            "msh/2/e/#",
            "msh/2/e//!00000001",
            "msh/2/e/LongFast/",
            "m+h/2/e/LongFast/!00000001",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}/2/e/x/!00000001", "r".repeat(300));
        assert_eq!(
            Topic::parse(&long),
            Err(TopicError::TooLong { len: long.len() })
        );
        let err = Topic::parse_under(&Root::default(), "msh/US/2/e/LongFast/!00000001")
            .unwrap_err()
            .to_string();
        assert!(err.contains(r#"under root "msh/US", not "msh""#), "{err}");
        let err = Topic::parse("msh/2/e/Long\u{1b}[31m/x").unwrap();
        assert_eq!(err.channel.name(), "Long\u{1b}[31m");
        let err = Topic::parse("evil\n/2/x/a/b").unwrap_err().to_string();
        assert!(err.contains(r#""evil\n/2/x/a/b""#), "escaped: {err}");
    }

    #[test]
    fn odd_inputs_never_panic() {
        let pieces = [
            "/", "2", "e", "json", "+", "#", "msh", "", "!", "é", "\0", "PKI",
        ];
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(x % 9) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                text.push_str(pieces[x as usize % pieces.len()]);
            }
            if let Ok(t) = Topic::parse(&text) {
                assert_eq!(t.to_string(), text, "a parsed topic formats back to itself");
            }
            let _ = Root::new(text.clone());
            let _ = TopicChannel::new(&text);
        }
    }

    #[test]
    fn roots_filters_and_the_firmware_default() {
        assert_eq!(
            Root::firmware_default("EU_868").unwrap().as_str(),
            "msh/EU_868"
        );
        assert_eq!(Root::firmware_default("UNSET").unwrap(), Root::default());
        assert_eq!(Root::firmware_default("").unwrap().as_str(), "msh");
        assert!(Root::firmware_default("EU/868").is_err());
        let root = Root::new("msh/EU_868/FR").unwrap();
        assert_eq!(
            root.downlink_filter(&TopicChannel::new("Fr_BlaBla").unwrap()),
            "msh/EU_868/FR/2/e/Fr_BlaBla/+"
        );
        assert_eq!(
            root.downlink_filter(&TopicChannel::Pki),
            "msh/EU_868/FR/2/e/PKI/+"
        );
        assert_eq!(Root::new(""), Err(TopicError::EmptyRoot));
        for bad in ["msh/#", "msh/+/x", "m\0sh"] {
            assert!(Root::new(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "a/b", "a+", "#"] {
            assert!(TopicChannel::new(bad).is_err(), "{bad:?}");
        }
        let foreign = GatewayId::Other("a/b".into());
        assert!(
            Topic::new(
                Root::default(),
                TopicKind::Encrypted,
                TopicChannel::Pki,
                foreign
            )
            .is_err()
        );
    }
}
