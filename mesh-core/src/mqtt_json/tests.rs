//! The firmware's MQTT JSON, checked against packets shaped like real traffic.

use super::*;
use crate::packet::Payload;
use crate::proto::mesh_packet::Priority;

const GATEWAY: NodeId = NodeId::new(0xa1b2_c3d4);

fn packet(
    meta: proto::MeshPacket,
    port: PortNum,
    payload: Vec<u8>,
    bitfield: Option<u32>,
) -> Packet {
    Packet::from_data(
        meta,
        proto::Data {
            portnum: port as i32,
            payload,
            bitfield,
            ..Default::default()
        },
    )
}

fn heard(from: u32, id: u32) -> proto::MeshPacket {
    proto::MeshPacket {
        from,
        to: 0xffff_ffff,
        id,
        hop_limit: 2,
        hop_start: 3,
        rx_time: 1_767_225_600,
        rx_rssi: -97,
        rx_snr: 6.25,
        ..Default::default()
    }
}

#[test]
fn the_reference_nodeinfo_renders_like_the_firmware() {
    // Vector V1 of the reference, decrypted: a NodeInfo broadcast from !fa8165a4.
    let mut meta = proto::MeshPacket {
        from: 4_202_784_164,
        to: 0xffff_ffff,
        id: 1_777_428_186,
        hop_limit: 3,
        hop_start: 3,
        rx_time: 1_767_225_600,
        rx_rssi: -97,
        rx_snr: 6.25,
        ..Default::default()
    };
    meta.set_priority(Priority::Background);
    let user = proto::User {
        id: "!fa8165a4".into(),
        long_name: "Meshtastic 65a4".into(),
        short_name: "65a4".into(),
        hw_model: 43,
        ..Default::default()
    };
    let p = packet(meta, PortNum::NodeinfoApp, user.encode_to_vec(), None);
    assert_eq!(
        uplink_json(&p, 0, GATEWAY).unwrap(),
        r#"{"channel":0,"from":4202784164,"hop_start":3,"hops_away":0,"id":1777428186,"payload":{"hardware":43,"id":"!fa8165a4","longname":"Meshtastic 65a4","role":0,"shortname":"65a4"},"rssi":-97,"sender":"!a1b2c3d4","snr":6.25,"timestamp":1767225600,"to":4294967295,"type":"nodeinfo"}"#
    );
}

#[test]
fn a_text_is_wrapped_and_fields_left_at_zero_are_omitted() {
    let meta = proto::MeshPacket {
        from: 0x0000_a001,
        to: 0xffff_ffff,
        id: 0x1a2b_3c4d,
        hop_limit: 2,
        hop_start: 3,
        ..Default::default()
    };
    let p = packet(
        meta,
        PortNum::TextMessageApp,
        "Hello from the harbour / quai 3".into(),
        Some(1),
    );
    assert_eq!(
        uplink_json(&p, 1, GATEWAY).unwrap(),
        r#"{"channel":1,"from":40961,"hop_start":3,"hops_away":1,"id":439041101,"payload":{"text":"Hello from the harbour / quai 3"},"sender":"!a1b2c3d4","timestamp":0,"to":4294967295,"type":"text"}"#
    );
}

#[test]
fn a_text_that_is_json_is_embedded_as_json_and_a_nul_ends_it() {
    let json = packet(
        heard(7, 8),
        PortNum::TextMessageApp,
        br#"{"temp": 21}"#.to_vec(),
        Some(0),
    );
    let v: Value = serde_json::from_str(&uplink_json(&json, 0, GATEWAY).unwrap()).unwrap();
    assert_eq!(v["payload"], serde_json::json!({"temp": 21}));
    let nul = packet(
        heard(7, 9),
        PortNum::TextMessageApp,
        b"ab\0cd".to_vec(),
        Some(0),
    );
    let v: Value = serde_json::from_str(&uplink_json(&nul, 0, GATEWAY).unwrap()).unwrap();
    assert_eq!(v["payload"], serde_json::json!({"text": "ab"}));
}

#[test]
fn a_position_keeps_coordinates_and_only_the_fields_that_are_set() {
    let pos = proto::Position {
        latitude_i: Some(488_566_000),
        longitude_i: Some(23_522_000),
        altitude: Some(35),
        time: 1_767_225_590,
        sats_in_view: 7,
        precision_bits: 32,
        ..Default::default()
    };
    let p = packet(
        heard(0x0000_0d01, 77),
        PortNum::PositionApp,
        pos.encode_to_vec(),
        Some(1),
    );
    let v: Value = serde_json::from_str(&uplink_json(&p, 0, GATEWAY).unwrap()).unwrap();
    assert_eq!(v["type"], "position");
    assert_eq!(
        v["payload"],
        serde_json::json!({"altitude":35,"latitude_i":488566000,"longitude_i":23522000,
            "precision_bits":32,"sats_in_view":7,"time":1767225590})
    );
}

#[test]
fn device_telemetry_always_carries_the_four_readings() {
    let t = proto::Telemetry {
        time: 1_767_225_600,
        variant: Some(telemetry::Variant::DeviceMetrics(proto::DeviceMetrics {
            battery_level: Some(81),
            voltage: Some(4.1),
            channel_utilization: Some(12.5),
            air_util_tx: Some(1.25),
            uptime_seconds: Some(3600),
        })),
    };
    let p = packet(
        heard(0x0000_0c01, 5),
        PortNum::TelemetryApp,
        t.encode_to_vec(),
        Some(0),
    );
    let text = uplink_json(&p, 0, GATEWAY).unwrap();
    assert!(
        text.contains(r#""payload":{"air_util_tx":1.25,"battery_level":81,"channel_utilization":12.5,"uptime_seconds":3600,"voltage":4.1}"#),
        "{text}"
    );
    let bare = proto::Telemetry {
        time: 0,
        variant: Some(telemetry::Variant::DeviceMetrics(Default::default())),
    };
    let p = packet(
        heard(0x0000_0c01, 6),
        PortNum::TelemetryApp,
        bare.encode_to_vec(),
        Some(0),
    );
    let v: Value = serde_json::from_str(&uplink_json(&p, 0, GATEWAY).unwrap()).unwrap();
    assert_eq!(
        v["payload"],
        serde_json::json!({"air_util_tx":0.0,"channel_utilization":0.0,"uptime_seconds":0,"voltage":0.0})
    );
}

#[test]
fn environment_telemetry_carries_only_the_sensors_present() {
    let t = proto::Telemetry {
        time: 0,
        variant: Some(telemetry::Variant::EnvironmentMetrics(
            proto::EnvironmentMetrics {
                temperature: Some(21.5),
                relative_humidity: Some(48.0),
                barometric_pressure: Some(1013.2),
                ..Default::default()
            },
        )),
    };
    let p = packet(
        heard(1, 2),
        PortNum::TelemetryApp,
        t.encode_to_vec(),
        Some(0),
    );
    let v: Value = serde_json::from_str(&uplink_json(&p, 0, GATEWAY).unwrap()).unwrap();
    assert_eq!(
        v["payload"],
        serde_json::json!({"barometric_pressure":1013.2,"relative_humidity":48.0,"temperature":21.5})
    );
}

#[test]
fn an_unknown_port_gives_an_empty_type_and_no_payload() {
    let p = packet(heard(1, 2), PortNum::RoutingApp, vec![0x18, 0x00], Some(0));
    let v: Value = serde_json::from_str(&uplink_json(&p, 0, GATEWAY).unwrap()).unwrap();
    assert_eq!(v["type"], "");
    assert!(v.get("payload").is_none());
    let broken = packet(heard(1, 3), PortNum::PositionApp, vec![0xff, 0xff], Some(0));
    let v: Value = serde_json::from_str(&uplink_json(&broken, 0, GATEWAY).unwrap()).unwrap();
    assert_eq!(v["type"], "position");
    assert!(
        v.get("payload").is_none(),
        "an undecodable payload is left out"
    );
}

#[test]
fn hops_are_left_out_when_they_cannot_be_known() {
    let mut old = heard(1, 2);
    old.hop_start = 0;
    let p = packet(old, PortNum::TextMessageApp, b"hi".to_vec(), None);
    let v: Value = serde_json::from_str(&uplink_json(&p, 0, GATEWAY).unwrap()).unwrap();
    assert!(v.get("hops_away").is_none() && v.get("hop_start").is_none());
    let mut odd = heard(1, 3);
    odd.hop_start = 1;
    odd.hop_limit = 3;
    let p = packet(odd, PortNum::TextMessageApp, b"hi".to_vec(), Some(0));
    let v: Value = serde_json::from_str(&uplink_json(&p, 0, GATEWAY).unwrap()).unwrap();
    assert!(v.get("hops_away").is_none());
}

#[test]
fn an_encrypted_packet_has_no_json_form() {
    let p = Packet::new(
        heard(1, 2),
        Payload::Encrypted(bytes::Bytes::from_static(b"\x01\x02")),
    );
    let err = uplink_json(&p, 0, GATEWAY).unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
}

#[test]
fn a_home_assistant_sendtext_parses_into_a_request() {
    let msg = br#"{"from":2813387473,"type":"sendtext","payload":"Gate opened","channel":1}"#;
    assert_eq!(
        parse_downlink(msg).unwrap(),
        SendText {
            from: NodeId::new(2_813_387_473),
            to: NodeId::BROADCAST,
            channel: Some(1),
            hop_limit: None,
            sender: None,
            text: "Gate opened".into(),
        }
    );
    let full = br#"{"from":40961,"to":3409,"hopLimit":0,"sender":"!deadbeef","type":"sendtext","payload":"pont"}"#;
    let req = parse_downlink(full).unwrap();
    assert_eq!(req.to, NodeId::new(3409));
    assert_eq!(req.hop_limit, Some(0));
    assert_eq!(req.channel, None);
    assert_eq!(req.sender.as_deref(), Some("!deadbeef"));
}

#[test]
fn malformed_downlinks_are_refused_naming_what_is_wrong() {
    let cases: &[(&[u8], &str)] = &[
        (b"not json", "not valid JSON"),
        (b"[1,2]", "must be an object, got an array"),
        (br#"{"from":1,"payload":"x"}"#, "no `type`"),
        (
            br#"{"from":1,"type":"sendposition","payload":{}}"#,
            "`sendposition` is not supported",
        ),
        (br#"{"type":"sendtext","payload":"x"}"#, "no `from`"),
        (
            br#"{"from":"!a1b2c3d4","type":"sendtext","payload":"x"}"#,
            "`from` must be a node number",
        ),
        (
            br#"{"from":-1,"type":"sendtext","payload":"x"}"#,
            "`from` must be a node number",
        ),
        (
            br#"{"from":4294967296,"type":"sendtext","payload":"x"}"#,
            "`from`",
        ),
        (br#"{"from":1.5,"type":"sendtext","payload":"x"}"#, "`from`"),
        (
            br#"{"from":1,"type":"sendtext","payload":"x","channel":8}"#,
            "`channel` must be a channel index (0..=7), got 8",
        ),
        (
            br#"{"from":1,"type":"sendtext","payload":"x","hopLimit":9}"#,
            "`hopLimit` must be a hop limit",
        ),
        (
            br#"{"from":1,"type":"sendtext","payload":{"text":"x"}}"#,
            "`payload` must be a string",
        ),
        (br#"{"from":1,"type":"sendtext"}"#, "no `payload`"),
        (br#"{"from":1,"type":"sendtext","payload":""}"#, "empty"),
        (
            br#"{"from":1,"type":7,"payload":"x"}"#,
            "`type` must be a string",
        ),
    ];
    for (input, expected) in cases {
        let err = parse_downlink(input).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{}: {err}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn oversize_downlinks_and_texts_are_refused_with_the_limits() {
    let long = format!(
        r#"{{"from":1,"type":"sendtext","payload":"{}"}}"#,
        "é".repeat(117)
    );
    let err = parse_downlink(long.as_bytes()).unwrap_err();
    assert_eq!(err, DownlinkError::TextTooLong { len: 234, max: 233 });
    let huge = vec![b' '; MAX_DOWNLINK_JSON + 1];
    assert!(matches!(
        parse_downlink(&huge),
        Err(DownlinkError::TooLarge { len: 4097, .. })
    ));
    let deep = "[".repeat(3000);
    assert!(matches!(
        parse_downlink(deep.as_bytes()),
        Err(DownlinkError::NotJson(_))
    ));
}

#[test]
fn json_topics_follow_the_firmware() {
    assert_eq!(
        uplink_topic("msh/EU_868", "LongFast", GATEWAY),
        "msh/EU_868/2/json/LongFast/!a1b2c3d4"
    );
    assert_eq!(downlink_topic("msh/EU_868"), "msh/EU_868/2/json/mqtt/");
    for yes in [
        "msh/EU_868/2/json/mqtt/",
        "msh/EU_868/2/json/mqtt",
        "msh/EU_868/2/json/mqtt/!a1b2c3d4",
    ] {
        assert!(is_downlink_topic("msh/EU_868", yes), "{yes}");
    }
    for no in [
        "msh/EU_868/2/json/LongFast/!a1b2c3d4",
        "msh/US/2/json/mqtt/",
        "msh/EU_868/2/e/mqtt/",
        "msh/EU_868/2/json/mqttx/",
    ] {
        assert!(!is_downlink_topic("msh/EU_868", no), "{no}");
    }
}
