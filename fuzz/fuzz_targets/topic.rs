//! MQTT topics from a broker: `Topic::parse`, `Topic::parse_under` and the JSON downlink
//! topic check, plus the root, channel and region checks that configuration text goes
//! through.
//!
//! Checked: a parsed topic prints back to exactly the text it came from; it parses again
//! under its own root, and not under another; oversize text is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::envelope::{MAX_TOPIC, Root, Topic, TopicChannel, TopicError};
use mesh_core::mqtt_json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = mqtt_json::is_downlink_topic("msh", text);
    let _ = Root::firmware_default(text);
    if let (Ok(root), Ok(channel)) = (Root::new(text), TopicChannel::new(text)) {
        let _ = root.downlink_filter(&channel);
    }
    match Topic::parse(text) {
        Ok(topic) => {
            assert_eq!(topic.to_string(), text, "a topic prints back to other text");
            assert_eq!(Topic::parse_under(&topic.root, text).as_ref(), Ok(&topic));
            let other = Root::new(format!("{}x", topic.root)).expect("a longer root is a root");
            assert!(matches!(
                Topic::parse_under(&other, text),
                Err(TopicError::OtherRoot { .. })
            ));
        }
        Err(_) if text.len() > MAX_TOPIC => {}
        Err(_) => assert!(Topic::parse_under(&Root::default(), text).is_err()),
    }
    if text.len() > MAX_TOPIC {
        assert!(matches!(
            Topic::parse(text),
            Err(TopicError::TooLong { .. })
        ));
    }
});
