//! One mesh node as the hub knows it, what a packet or a radio's node database teaches about
//! it, and how it is put into words. Pure: `now` is an argument.

use std::time::{Duration, Instant};

use mesh_core::{NodeId, Packet, proto};
use prost::Message;

use crate::store::Millis;

/// Whether a node counts as around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Heard within the directory's `away_after`.
    Available,
    /// Not heard for longer than that, or never heard at all.
    Away,
}

/// What a node says about itself in its NodeInfo (`User`), cleaned: no control characters,
/// names no longer than the firmware stores them, a public key only when it has the length of
/// one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeUser {
    /// Long name ("Amira"), at most [`LONG_NAME_MAX`] bytes; may be empty.
    pub long_name: String,
    /// Short name ("AMI"), at most [`SHORT_NAME_MAX`] bytes; may be empty.
    pub short_name: String,
    /// Hardware model as the protobufs name it (`HELTEC_V3`), or its number when this build
    /// does not know it; empty when the node did not say.
    pub hw_model: String,
    /// Its x25519 public key (32 bytes) for PKI direct messages; empty when it has none.
    pub public_key: Vec<u8>,
}

/// The longest long name kept, in bytes: the firmware's `User.long_name max_size:40`
/// (protobufs `mesh.options`). A longer one (a forged packet) is cut at a character boundary.
pub const LONG_NAME_MAX: usize = 40;
/// The longest short name kept, in bytes (`User.short_name max_size:5`).
pub const SHORT_NAME_MAX: usize = 5;
/// A node database `last_heard` before this (2020-09-13, unix seconds) is a radio without a
/// clock counting from 1970, not a time: it is ignored.
pub const MIN_VALID_TIME: u32 = 1_600_000_000;

impl NodeUser {
    /// The cleaned form of a NodeInfo `User`.
    pub fn from_proto(user: &proto::User) -> NodeUser {
        let hw_model = match proto::HardwareModel::try_from(user.hw_model) {
            Ok(proto::HardwareModel::Unset) => String::new(),
            Ok(model) => model.as_str_name().to_owned(),
            Err(_) => user.hw_model.to_string(),
        };
        NodeUser {
            long_name: clean(&user.long_name, LONG_NAME_MAX),
            short_name: clean(&user.short_name, SHORT_NAME_MAX),
            hw_model,
            public_key: if user.public_key.len() == 32 {
                user.public_key.clone()
            } else {
                Vec::new()
            },
        }
    }
}

/// `text` without control characters, trimmed, at most `max` bytes (cut at a character).
fn clean(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.trim().chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

/// What the hub knows of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Its node number.
    pub id: NodeId,
    /// Names, hardware and key, once it sent a NodeInfo (or a radio's node DB had one).
    pub user: Option<NodeUser>,
    /// When it was last heard, on this host's monotonic clock: what decisions use.
    pub last_heard: Option<Instant>,
    /// The same moment on the wall clock (unix ms), as data for people and status pages.
    pub last_heard_at: Option<Millis>,
    /// Hops between it and the radio that heard it last (`hop_start - hop_limit`).
    pub hops_away: Option<u8>,
    /// Signal-to-noise ratio of the last packet heard from it (dB), when the radio said.
    pub snr: Option<f32>,
    /// Battery level in percent (above 100: on external power), from its device telemetry.
    pub battery_level: Option<u32>,
    /// Battery voltage, from its device telemetry.
    pub voltage: Option<f32>,
    /// The endpoint (radio) that heard it last.
    pub heard_by: Option<String>,
}

impl Node {
    /// A node known by its number only.
    pub fn new(id: NodeId) -> Node {
        Node {
            id,
            user: None,
            last_heard: None,
            last_heard_at: None,
            hops_away: None,
            snr: None,
            battery_level: None,
            voltage: None,
            heard_by: None,
        }
    }

    /// Available when heard within `away_after` before `now`, away otherwise (never heard
    /// included).
    pub fn presence(&self, now: Instant, away_after: Duration) -> Presence {
        match self.last_heard {
            Some(at) if now.saturating_duration_since(at) <= away_after => Presence::Available,
            _ => Presence::Away,
        }
    }

    /// When it turns away if nothing more is heard from it (`None`: never heard).
    pub fn away_at(&self, away_after: Duration) -> Option<Instant> {
        self.last_heard.map(|at| at + away_after)
    }

    /// Its long name, else its short name, else its number (`!a1b2c3d4`).
    pub fn display_name(&self) -> String {
        let user = self.user.as_ref();
        user.map(|u| u.long_name.as_str())
            .filter(|n| !n.is_empty())
            .or_else(|| {
                user.map(|u| u.short_name.as_str())
                    .filter(|n| !n.is_empty())
            })
            .map(str::to_owned)
            .unwrap_or_else(|| self.id.to_string())
    }

    /// Whether it has a name of its own (not only a number).
    fn has_name(&self) -> bool {
        self.user
            .as_ref()
            .is_some_and(|u| !u.long_name.is_empty() || !u.short_name.is_empty())
    }

    /// "heard 4 min ago, 2 hops, battery 81 %": what is known, at `now`; unknown parts are
    /// left out.
    pub fn status_line(&self, now: Instant) -> String {
        let mut parts = vec![match (self.last_heard, self.last_heard_at) {
            (None, Some(_)) => "last heard before the gateway started".to_owned(),
            (last, _) => heard(last, now),
        }];
        match self.hops_away {
            Some(0) => parts.push("direct".to_owned()),
            Some(1) => parts.push("1 hop".to_owned()),
            Some(n) => parts.push(format!("{n} hops")),
            None => {}
        }
        match (self.battery_level, self.voltage) {
            (Some(level), _) if level > 100 => parts.push("on external power".to_owned()),
            (Some(level), _) => parts.push(format!("battery {level} %")),
            (None, Some(v)) if v.is_finite() && v > 0.0 => {
                parts.push(format!("battery {v:.2} V"));
            }
            _ => {}
        }
        parts.join(", ")
    }

    /// Why a direct message for it waits: "waiting for Amira's radio (!a1b2c3d4 last heard
    /// 3 h ago)".
    pub fn waiting_line(&self, now: Instant) -> String {
        let heard = match (self.last_heard, self.last_heard_at) {
            (Some(at), _) => format!("last heard {} ago", ago(now.saturating_duration_since(at))),
            (None, Some(_)) => "last heard before the gateway started".to_owned(),
            (None, None) => "never heard".to_owned(),
        };
        if self.has_name() {
            format!(
                "waiting for {}'s radio ({} {heard})",
                self.display_name(),
                self.id
            )
        } else {
            format!("waiting for radio {} ({heard})", self.id)
        }
    }

    /// Learns from a packet heard from it by `endpoint` at `now` (`wall` on the wall clock):
    /// it is here, how far, how loud; and from its payload, when readable, its names
    /// (NodeInfo) and battery (device telemetry). An encrypted packet still says it is here.
    ///
    /// Returns true when a NodeInfo tried to change or empty the public key this node was first
    /// seen with: the first key is kept (trust on first use, as the firmware does), since a
    /// node that really re-keyed is rare and someone impersonating it to read its direct
    /// messages is exactly what the key is for.
    #[must_use]
    pub fn observe(&mut self, endpoint: &str, packet: &Packet, now: Instant, wall: Millis) -> bool {
        self.last_heard = Some(self.last_heard.map_or(now, |at| at.max(now)));
        self.last_heard_at = Some(wall);
        if self.heard_by.as_deref() != Some(endpoint) {
            self.heard_by = Some(endpoint.to_owned());
        }
        let (start, limit) = (packet.hop_start(), packet.hop_limit());
        // Firmware before 2.3 sent no hop_start: 0 is "unknown", not "direct".
        if start > 0 && start >= limit {
            self.hops_away = Some(start - limit);
        }
        let snr = packet.meta().rx_snr;
        if snr != 0.0 && snr.is_finite() {
            self.snr = Some(snr);
        }
        let Some(data) = packet.data() else {
            return false;
        };
        match proto::PortNum::try_from(data.portnum) {
            Ok(proto::PortNum::NodeinfoApp) => {
                if let Ok(user) = proto::User::decode(&data.payload[..]) {
                    return self.take_user(NodeUser::from_proto(&user));
                }
            }
            Ok(proto::PortNum::TelemetryApp) => {
                if let Ok(proto::Telemetry {
                    variant: Some(proto::telemetry::Variant::DeviceMetrics(m)),
                    ..
                }) = proto::Telemetry::decode(&data.payload[..])
                {
                    self.metrics(&m);
                }
            }
            _ => {}
        }
        false
    }

    /// Takes what a node says about itself, keeping the public key it was first seen with;
    /// true when `user` would have changed or emptied it.
    fn take_user(&mut self, mut user: NodeUser) -> bool {
        let first = self
            .user
            .as_ref()
            .map(|u| u.public_key.clone())
            .filter(|k| !k.is_empty());
        let refused = first.as_ref().is_some_and(|k| *k != user.public_key);
        if let Some(key) = first {
            user.public_key = key;
        }
        self.user = Some(user);
        refused
    }

    /// Learns from an entry of `endpoint`'s node database (its handshake), at `now` (`wall`):
    /// the radio heard the node before we started. What was heard live since stays unless the
    /// entry is newer; what is missing is filled in.
    pub fn observe_db(
        &mut self,
        endpoint: &str,
        entry: &proto::NodeInfo,
        now: Instant,
        wall: Millis,
    ) {
        if let Some(user) = &entry.user {
            // The radio's database keeps the firmware's own first key; a change is not ours to
            // alarm on here (the radio refused it), only to keep.
            let _ = self.take_user(NodeUser::from_proto(user));
        }
        let heard_at = (entry.last_heard >= MIN_VALID_TIME).then(|| {
            // A radio clock ahead of ours counts as just now.
            (Millis::from(entry.last_heard) * 1000).min(wall)
        });
        let newer = heard_at.is_some_and(|at| self.last_heard_at.is_none_or(|known| at > known));
        if let Some(at) = heard_at.filter(|_| newer) {
            let ago = Duration::from_millis(u64::try_from(wall - at).unwrap_or(0));
            // A moment this host's monotonic clock cannot hold (where it starts at boot and
            // the node was heard before): no `Instant`, so the node counts as not heard
            // until it is heard again, which errs on the side of waiting. The wall time is
            // kept for people.
            if let Some(instant) = now.checked_sub(ago) {
                self.last_heard = Some(self.last_heard.map_or(instant, |known| known.max(instant)));
            }
            self.last_heard_at = Some(at);
            self.heard_by = Some(endpoint.to_owned());
        }
        if (newer || self.hops_away.is_none())
            && let Some(hops) = entry.hops_away
        {
            self.hops_away = Some(u8::try_from(hops).unwrap_or(u8::MAX));
        }
        if (newer || self.snr.is_none()) && entry.snr != 0.0 && entry.snr.is_finite() {
            self.snr = Some(entry.snr);
        }
        if let Some(m) = &entry.device_metrics
            && (newer || (self.battery_level.is_none() && self.voltage.is_none()))
        {
            self.metrics(m);
        }
    }

    fn metrics(&mut self, m: &proto::DeviceMetrics) {
        if m.battery_level.is_some() {
            self.battery_level = m.battery_level;
        }
        if let Some(v) = m.voltage.filter(|v| v.is_finite()) {
            self.voltage = Some(v);
        }
    }

    /// What a status line shows besides the time: hops and the battery as shown (a level, or
    /// external power), so a voltage that wobbles is no change.
    pub(crate) fn status_key(&self) -> (Option<u8>, Option<u32>) {
        (self.hops_away, self.battery_level.map(|l| l.min(101)))
    }
}

/// "heard 4 min ago", "heard just now", "not heard yet".
fn heard(last: Option<Instant>, now: Instant) -> String {
    match last {
        None => "not heard yet".to_owned(),
        Some(at) => {
            let d = now.saturating_duration_since(at);
            if d < Duration::from_secs(1) {
                "heard just now".to_owned()
            } else {
                format!("heard {} ago", ago(d))
            }
        }
    }
}

/// A duration as people say it: "12 s", "4 min", "3 h", "5 d" (rounded down).
pub fn ago(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}
