//! `mqtt_json::parse_downlink`: a JSON `sendtext` from anyone who can publish on the broker.
//!
//! Checked: an accepted downlink keeps the firmware's bounds (a non-empty text of at most one
//! payload, channel and hop limit 0..=7); written back as JSON it parses to the same message;
//! a refusal's message stays short whatever the input (it is logged, and counted).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::mqtt_json::{self, DownlinkError, MAX_DOWNLINK_JSON};
use mesh_core::packet::MAX_DATA_PAYLOAD;
use serde_json::{Map, Value};

/// A refusal names a field and cuts what it quotes to 40 characters.
const MAX_ERROR_TEXT: usize = 400;

fuzz_target!(|data: &[u8]| {
    let parsed = mqtt_json::parse_downlink(data);
    if data.len() > MAX_DOWNLINK_JSON {
        assert!(matches!(parsed, Err(DownlinkError::TooLarge { .. })));
    }
    let sent = match parsed {
        Ok(sent) => sent,
        Err(e) => {
            let text = e.to_string();
            assert!(text.len() <= MAX_ERROR_TEXT, "a {}-byte error", text.len());
            return;
        }
    };
    assert!(!sent.text.is_empty() && sent.text.len() <= MAX_DATA_PAYLOAD);
    assert!(sent.channel.is_none_or(|c| c <= 7));
    assert!(sent.hop_limit.is_none_or(|h| h <= 7));

    let mut obj = Map::new();
    obj.insert("type".into(), "sendtext".into());
    obj.insert("from".into(), sent.from.get().into());
    obj.insert("to".into(), sent.to.get().into());
    obj.insert("payload".into(), sent.text.clone().into());
    if let Some(c) = sent.channel {
        obj.insert("channel".into(), c.into());
    }
    if let Some(h) = sent.hop_limit {
        obj.insert("hopLimit".into(), h.into());
    }
    if let Some(s) = &sent.sender {
        obj.insert("sender".into(), s.clone().into());
    }
    let json = serde_json::to_vec(&Value::Object(obj)).expect("JSON");
    if json.len() <= MAX_DOWNLINK_JSON {
        let again = mqtt_json::parse_downlink(&json).expect("a written-back downlink parses");
        assert_eq!(again, sent);
    }
});
