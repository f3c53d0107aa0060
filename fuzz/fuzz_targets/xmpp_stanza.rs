//! XMPP stanzas from the hub's server (`adapters::xmpp`'s reader): what the link reads out of a
//! message, presence or iq that any user or room on the server can make it receive. The XML
//! is parsed as the stanza types the link receives; what Archipel then reads from them
//! (occupant JIDs, MUC status codes, error conditions, bodies, receipts) is what is fuzzed.
//!
//! Checked, besides no panic: room and nick names read from a room JID are never empty, and
//! what was read formats (its `Debug` goes into log lines).
#![no_main]

use archipel_adapters::xmpp::fuzzing::read_stanza;
use libfuzzer_sys::fuzz_target;

const ROOMS: &str = "rooms.hub.lan";

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    let _ = read_stanza(xml, ROOMS);
});
