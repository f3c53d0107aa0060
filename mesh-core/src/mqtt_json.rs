//! The firmware's MQTT JSON: the uplink shape consumers read, and the `sendtext` downlink.
//!
//! Firmware 2.7 publishes, next to each protobuf envelope, a JSON rendering of the decoded packet
//! on `<root>/2/json/<channel>/!<gateway>` when `json_enabled` is set (`src/mqtt/MQTT.cpp`,
//! `MQTT::onSend`, and `src/serialization/MeshPacketSerializer.cpp`, `JsonSerialize`, at tag
//! v2.7.26). The development branch dropped it, so Archipel is where it is still produced;
//! [`uplink_json`] reproduces the 2.7.26 fields, and [`parse_downlink`] reads the one downlink
//! the firmware accepted for text: `{"from":N,"type":"sendtext","payload":"...","channel":N}`
//! on `<root>/2/json/mqtt/`.
//!
//! What the firmware emits, and this module with it:
//! - top level: `id`, `timestamp` (the packet's `rx_time`), `to`, `from`, `channel` (the local
//!   channel index), `type`, `sender` (the *gateway's* id, `!xxxxxxxx`, not the packet's
//!   sender), `rssi` and `snr` when not zero, `hops_away` and `hop_start` when the hop count is
//!   known, and `payload` for the ports it knows;
//! - `type` and `payload` per port: `text` (`{"text":..}`, or the text itself when it is a JSON
//!   value), `position`, `nodeinfo`, `telemetry` (device, environment, air quality, power),
//!   `waypoint`, `neighborinfo`, `detection`, `paxcounter`; any other port gives `"type":""`
//!   and no payload. Traceroutes and remote hardware, which the firmware renders from its node
//!   DB and GPIO state, are among those others here.
//!
//! Keys come out sorted, as the firmware's `std::map` writes them. Two differences in spelling,
//! none in meaning: floats are written from their shortest `f32` form (`4.1`, where the
//! firmware's 15-digit `double` gives `4.09999990463257`), and `/` is not escaped.

use std::collections::BTreeMap;

use prost::Message;
use serde_json::{Number, Value};

use crate::node::NodeId;
use crate::packet::{MAX_DATA_PAYLOAD, Packet};
use crate::proto::{self, PortNum, telemetry};

/// The largest downlink JSON accepted: a `sendtext` with a full payload is well under 1 KiB.
pub const MAX_DOWNLINK_JSON: usize = 4096;
/// The firmware's JSON downlink channel name (`Channels::mqttChannel`).
pub const DOWNLINK_CHANNEL: &str = "mqtt";

/// Why a packet has no JSON rendering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Only decoded packets are rendered (the firmware renders the decoded copy).
    #[error("packet {id} from {from} is still encrypted: only a decoded packet has a JSON form")]
    NotDecoded {
        /// Sender.
        from: NodeId,
        /// Packet id.
        id: crate::node::PacketId,
    },
}

/// Why a JSON downlink was refused. Each names the field and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownlinkError {
    /// More bytes than [`MAX_DOWNLINK_JSON`].
    #[error("JSON downlink of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Bytes received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON at all.
    #[error("JSON downlink is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("JSON downlink must be an object, got {0}")]
    NotAnObject(&'static str),
    /// A required field is absent.
    #[error("JSON downlink has no `{0}` field")]
    Missing(&'static str),
    /// A field has the wrong JSON type or range.
    #[error("JSON downlink field `{field}` must be {expected}, got {got}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was, as JSON text (cut to 40 characters).
        got: String,
    },
    /// A `type` other than `sendtext`.
    #[error("JSON downlink type `{0}` is not supported (only `sendtext`)")]
    UnsupportedType(String),
    /// The text does not fit one Meshtastic payload.
    #[error("JSON downlink text of {len} bytes is over the {max}-byte Meshtastic payload")]
    TextTooLong {
        /// UTF-8 bytes of the text.
        len: usize,
        /// The payload limit.
        max: usize,
    },
    /// An empty text: nothing to send.
    #[error("JSON downlink text is empty")]
    EmptyText,
}

/// A text to put on a mesh channel, as a `sendtext` downlink asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendText {
    /// `from`: the firmware accepts the message only when this is its own node number, so a
    /// tool names the gateway radio that should send it.
    pub from: NodeId,
    /// `to`, broadcast when absent.
    pub to: NodeId,
    /// `channel`: the channel index on that radio (0..=7), the primary when absent.
    pub channel: Option<u8>,
    /// `hopLimit`, the radio's default when absent.
    pub hop_limit: Option<u8>,
    /// `sender`, when present: the firmware drops a downlink whose sender is itself (its own
    /// uplink echoed back), and so should the gateway.
    pub sender: Option<String>,
    /// `payload`: the text.
    pub text: String,
}

/// The topic firmware 2.7 publishes the JSON form on: `<root>/2/json/<channel>/!<gateway>`.
pub fn uplink_topic(root: &str, channel: &str, gateway: NodeId) -> String {
    format!("{root}/2/json/{channel}/{gateway}")
}

/// The topic tools publish `sendtext` downlinks to: `<root>/2/json/mqtt/`.
pub fn downlink_topic(root: &str) -> String {
    format!("{root}/2/json/{DOWNLINK_CHANNEL}/")
}

/// True when `topic` is a JSON downlink under `root`: `<root>/2/json/mqtt` followed by nothing
/// or by `/...` (the firmware reads the channel name up to the next `/`).
pub fn is_downlink_topic(root: &str, topic: &str) -> bool {
    let Some(rest) = topic
        .strip_prefix(root)
        .and_then(|t| t.strip_prefix("/2/json/"))
    else {
        return false;
    };
    rest.split('/').next() == Some(DOWNLINK_CHANNEL)
}

/// Renders a decoded packet as firmware 2.7 does for its JSON uplink. `channel` is the local
/// channel index the packet was heard on; `gateway` is the node that publishes it.
pub fn uplink_json(packet: &Packet, channel: u32, gateway: NodeId) -> Result<String, JsonError> {
    let data = packet.data().ok_or(JsonError::NotDecoded {
        from: packet.from(),
        id: packet.id(),
    })?;
    let meta = packet.meta();
    let (kind, payload) = render_payload(data);
    let mut obj = BTreeMap::new();
    obj.insert("id", Value::from(meta.id));
    obj.insert("timestamp", Value::from(meta.rx_time));
    obj.insert("to", Value::from(meta.to));
    obj.insert("from", Value::from(meta.from));
    obj.insert("channel", Value::from(channel));
    obj.insert("type", Value::from(kind));
    obj.insert("sender", Value::from(gateway.to_string()));
    if let Some(payload) = payload {
        obj.insert("payload", payload);
    }
    if meta.rx_rssi != 0 {
        obj.insert("rssi", Value::from(meta.rx_rssi));
    }
    if meta.rx_snr != 0.0 {
        obj.insert("snr", float(meta.rx_snr));
    }
    if let Some(hops) = hops_away(meta, data) {
        obj.insert("hops_away", Value::from(hops));
        obj.insert("hop_start", Value::from(meta.hop_start));
    }
    Ok(serde_json::to_string(&obj).expect("a map of JSON values serializes"))
}

/// `getHopsAway` (`NodeDB.cpp`): unknown when the sender predates `hop_start` (no bitfield
/// either), or when the fields contradict each other.
fn hops_away(meta: &proto::MeshPacket, data: &proto::Data) -> Option<u32> {
    if meta.hop_start == 0 && data.bitfield.is_none() {
        return None;
    }
    meta.hop_start.checked_sub(meta.hop_limit)
}

/// The `type` and `payload` for one port; a payload that does not decode gives none.
fn render_payload(data: &proto::Data) -> (&'static str, Option<Value>) {
    let port = PortNum::try_from(data.portnum).unwrap_or(PortNum::UnknownApp);
    let bytes = &data.payload[..];
    match port {
        PortNum::TextMessageApp => {
            let text = c_string(bytes);
            // The firmware embeds a text that is itself a JSON value as that value.
            let payload = serde_json::from_str::<Value>(&text)
                .unwrap_or_else(|_| object([("text", Value::from(text))]));
            ("text", Some(payload))
        }
        PortNum::DetectionSensorApp => (
            "detection",
            Some(object([("text", Value::from(c_string(bytes)))])),
        ),
        PortNum::TelemetryApp => ("telemetry", decode(bytes).map(telemetry_json)),
        PortNum::NodeinfoApp => ("nodeinfo", decode(bytes).map(user_json)),
        PortNum::PositionApp => ("position", decode(bytes).map(position_json)),
        PortNum::WaypointApp => ("waypoint", decode(bytes).map(waypoint_json)),
        PortNum::NeighborinfoApp => ("neighborinfo", decode(bytes).map(neighbors_json)),
        PortNum::PaxcounterApp => (
            "paxcounter",
            decode(bytes).map(|p: proto::Paxcount| {
                object([
                    ("wifi_count", Value::from(p.wifi)),
                    ("ble_count", Value::from(p.ble)),
                    ("uptime", Value::from(p.uptime)),
                ])
            }),
        ),
        _ => ("", None),
    }
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

/// The firmware copies the payload into a C string: it ends at the first NUL byte.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A float from its shortest `f32` spelling; not finite gives `null`, as in the firmware.
fn float(v: f32) -> Value {
    let wide: f64 = v.to_string().parse().unwrap_or(f64::NAN);
    Number::from_f64(wide).map_or(Value::Null, Value::Number)
}

/// Adds the fields that are present.
fn put<const N: usize>(
    out: &mut serde_json::Map<String, Value>,
    fields: [(&str, Option<Value>); N],
) {
    for (k, v) in fields {
        if let Some(v) = v {
            out.insert(k.to_owned(), v);
        }
    }
}

fn telemetry_json(t: proto::Telemetry) -> Value {
    let f = |v: Option<f32>| v.map(float);
    let u = |v: Option<u32>| v.map(Value::from);
    let mut out = serde_json::Map::new();
    match t.variant {
        Some(telemetry::Variant::DeviceMetrics(m)) => {
            // The firmware writes these four whether or not the sender set them.
            put(
                &mut out,
                [
                    ("battery_level", u(m.battery_level)),
                    ("voltage", Some(float(m.voltage.unwrap_or(0.0)))),
                    (
                        "channel_utilization",
                        Some(float(m.channel_utilization.unwrap_or(0.0))),
                    ),
                    ("air_util_tx", Some(float(m.air_util_tx.unwrap_or(0.0)))),
                    (
                        "uptime_seconds",
                        Some(Value::from(m.uptime_seconds.unwrap_or(0))),
                    ),
                ],
            );
        }
        Some(telemetry::Variant::EnvironmentMetrics(m)) => put(
            &mut out,
            [
                ("temperature", f(m.temperature)),
                ("relative_humidity", f(m.relative_humidity)),
                ("barometric_pressure", f(m.barometric_pressure)),
                ("gas_resistance", f(m.gas_resistance)),
                ("voltage", f(m.voltage)),
                ("current", f(m.current)),
                ("lux", f(m.lux)),
                ("white_lux", f(m.white_lux)),
                ("iaq", u(m.iaq)),
                ("distance", f(m.distance)),
                ("wind_speed", f(m.wind_speed)),
                ("wind_direction", u(m.wind_direction)),
                ("wind_gust", f(m.wind_gust)),
                ("wind_lull", f(m.wind_lull)),
                ("radiation", f(m.radiation)),
                ("ir_lux", f(m.ir_lux)),
                ("uv_lux", f(m.uv_lux)),
                ("weight", f(m.weight)),
                ("rainfall_1h", f(m.rainfall_1h)),
                ("rainfall_24h", f(m.rainfall_24h)),
                ("soil_moisture", u(m.soil_moisture)),
                ("soil_temperature", f(m.soil_temperature)),
            ],
        ),
        Some(telemetry::Variant::AirQualityMetrics(m)) => put(
            &mut out,
            [
                ("pm10", u(m.pm10_standard)),
                ("pm25", u(m.pm25_standard)),
                ("pm100", u(m.pm100_standard)),
                ("co2", u(m.co2)),
                ("co2_temperature", f(m.co2_temperature)),
                ("co2_humidity", f(m.co2_humidity)),
                ("form_formaldehyde", f(m.form_formaldehyde)),
                ("form_temperature", f(m.form_temperature)),
                ("form_humidity", f(m.form_humidity)),
            ],
        ),
        Some(telemetry::Variant::PowerMetrics(m)) => put(
            &mut out,
            [
                ("voltage_ch1", f(m.ch1_voltage)),
                ("current_ch1", f(m.ch1_current)),
                ("voltage_ch2", f(m.ch2_voltage)),
                ("current_ch2", f(m.ch2_current)),
                ("voltage_ch3", f(m.ch3_voltage)),
                ("current_ch3", f(m.ch3_current)),
            ],
        ),
        // Other kinds (local stats, health...) decode to an empty payload in the firmware too.
        _ => {}
    }
    Value::Object(out)
}

fn user_json(u: proto::User) -> Value {
    object([
        ("id", Value::from(u.id)),
        ("longname", Value::from(u.long_name)),
        ("shortname", Value::from(u.short_name)),
        ("hardware", Value::from(u.hw_model)),
        ("role", Value::from(u.role)),
    ])
}

fn position_json(p: proto::Position) -> Value {
    let nonzero_u = |v: u32| (v != 0).then(|| Value::from(v));
    let nonzero_i = |v: i32| (v != 0).then(|| Value::from(v));
    let mut out = serde_json::Map::new();
    put(
        &mut out,
        [
            ("time", nonzero_u(p.time)),
            ("timestamp", nonzero_u(p.timestamp)),
            ("latitude_i", Some(Value::from(p.latitude_i.unwrap_or(0)))),
            ("longitude_i", Some(Value::from(p.longitude_i.unwrap_or(0)))),
            ("altitude", nonzero_i(p.altitude.unwrap_or(0))),
            ("ground_speed", nonzero_u(p.ground_speed.unwrap_or(0))),
            ("ground_track", nonzero_u(p.ground_track.unwrap_or(0))),
            ("sats_in_view", nonzero_u(p.sats_in_view)),
            ("PDOP", nonzero_u(p.pdop)),
            ("HDOP", nonzero_u(p.hdop)),
            ("VDOP", nonzero_u(p.vdop)),
            ("precision_bits", nonzero_u(p.precision_bits)),
        ],
    );
    Value::Object(out)
}

fn waypoint_json(w: proto::Waypoint) -> Value {
    object([
        ("id", Value::from(w.id)),
        ("name", Value::from(w.name)),
        ("description", Value::from(w.description)),
        ("expire", Value::from(w.expire)),
        ("locked_to", Value::from(w.locked_to)),
        ("latitude_i", Value::from(w.latitude_i.unwrap_or(0))),
        ("longitude_i", Value::from(w.longitude_i.unwrap_or(0))),
    ])
}

fn neighbors_json(n: proto::NeighborInfo) -> Value {
    let neighbors: Vec<Value> = n
        .neighbors
        .iter()
        .map(|x| {
            // The firmware casts the SNR to an integer (truncating).
            object([
                ("node_id", Value::from(x.node_id)),
                ("snr", Value::from(x.snr as i32)),
            ])
        })
        .collect();
    object([
        ("node_id", Value::from(n.node_id)),
        (
            "node_broadcast_interval_secs",
            Value::from(n.node_broadcast_interval_secs),
        ),
        ("last_sent_by_id", Value::from(n.last_sent_by_id)),
        ("neighbors_count", Value::from(neighbors.len())),
        ("neighbors", Value::Array(neighbors)),
    ])
}

/// Parses a JSON downlink (`sendtext`, the firmware's one text downlink). Bounded in size; every
/// refusal names the field.
pub fn parse_downlink(bytes: &[u8]) -> Result<SendText, DownlinkError> {
    if bytes.len() > MAX_DOWNLINK_JSON {
        return Err(DownlinkError::TooLarge {
            len: bytes.len(),
            max: MAX_DOWNLINK_JSON,
        });
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| DownlinkError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(DownlinkError::NotAnObject(kind_of(&value)));
    };
    let kind = match obj.get("type") {
        None => return Err(DownlinkError::Missing("type")),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(invalid("type", "a string", other)),
    };
    if kind != "sendtext" {
        return Err(DownlinkError::UnsupportedType(clip(kind)));
    }
    let from = obj
        .get("from")
        .ok_or(DownlinkError::Missing("from"))
        .and_then(|v| {
            integer(
                "from",
                v,
                u64::from(u32::MAX),
                "a node number (0..=4294967295)",
            )
        })?;
    let to = match obj.get("to") {
        None => NodeId::BROADCAST,
        Some(v) => NodeId::new(integer(
            "to",
            v,
            u64::from(u32::MAX),
            "a node number (0..=4294967295)",
        )? as u32),
    };
    let channel = obj
        .get("channel")
        .map(|v| integer("channel", v, 7, "a channel index (0..=7)"))
        .transpose()?
        .map(|c| c as u8);
    let hop_limit = obj
        .get("hopLimit")
        .map(|v| integer("hopLimit", v, 7, "a hop limit (0..=7)"))
        .transpose()?
        .map(|h| h as u8);
    let sender = match obj.get("sender") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(invalid("sender", "a string", other)),
    };
    let text = match obj.get("payload") {
        None => return Err(DownlinkError::Missing("payload")),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(invalid("payload", "a string", other)),
    };
    if text.is_empty() {
        return Err(DownlinkError::EmptyText);
    }
    if text.len() > MAX_DATA_PAYLOAD {
        return Err(DownlinkError::TextTooLong {
            len: text.len(),
            max: MAX_DATA_PAYLOAD,
        });
    }
    Ok(SendText {
        from: NodeId::new(from as u32),
        to,
        channel,
        hop_limit,
        sender,
        text,
    })
}

/// A whole number in `0..=max`.
fn integer(
    field: &'static str,
    v: &Value,
    max: u64,
    expected: &'static str,
) -> Result<u64, DownlinkError> {
    v.as_u64()
        .filter(|n| *n <= max)
        .ok_or_else(|| invalid(field, expected, v))
}

fn invalid(field: &'static str, expected: &'static str, got: &Value) -> DownlinkError {
    DownlinkError::Invalid {
        field,
        expected,
        got: clip(&got.to_string()),
    }
}

/// At most 40 characters of a value, for an error message.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
