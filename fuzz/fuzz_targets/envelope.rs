//! `Envelope::decode`: a `ServiceEnvelope` from an MQTT broker (anyone who can publish there).
//!
//! Checked: an envelope over the bound is refused; a decoded one encodes to bytes that decode
//! to the same envelope, its packet field byte-exact; its gateway id prints and parses back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::envelope::{Envelope, EnvelopeError, GatewayId, MAX_ENVELOPE};

fuzz_target!(|data: &[u8]| {
    let decoded = Envelope::decode(data);
    if data.len() > MAX_ENVELOPE {
        assert!(matches!(decoded, Err(EnvelopeError::TooLarge { .. })));
    }
    let Ok(envelope) = decoded else {
        return;
    };
    assert!(!envelope.channel_id.is_empty());
    let gateway = envelope.gateway_id.to_string();
    assert!(!gateway.is_empty());
    assert_eq!(GatewayId::parse(&gateway), envelope.gateway_id);
    let encoded = envelope.encode();
    let again = Envelope::decode(&encoded).expect("a re-encoded envelope decodes");
    // Compared field by field, the packet as bytes: a NaN `rx_snr` is not equal to itself.
    assert_eq!(again.channel_id, envelope.channel_id);
    assert_eq!(again.gateway_id, envelope.gateway_id);
    assert_eq!(again.packet.encode(), envelope.packet.encode());
    assert_eq!(again.encode(), encoded);
});
