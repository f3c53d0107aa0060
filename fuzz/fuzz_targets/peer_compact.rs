//! `peer::compact`: the compact packets of protocol version 2, rebuilt from what another hub
//! sends (`unpack`), and made from packets heard on any ingress (`pack`).
//!
//! Checked: `unpack` of any bytes either fails or gives a non-empty packet of at most
//! `MAX_PACKET` bytes; `pack` of any packet either declines or gives a shorter form that
//! `unpack` turns back into exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::NodeId;
use mesh_core::peer::compact::{Parsed, pack, unpack};
use mesh_core::peer::frame::MAX_PACKET;

fuzz_target!(|data: &[u8]| {
    // The node table: index i is node 0x1000 + i, up to a few defined.
    let node = |i: u32| (i < 8).then(|| NodeId::new(0x1000 + i));
    if let Ok(packet) = unpack(data, node) {
        assert!(!packet.is_empty() && packet.len() <= MAX_PACKET);
    }
    if data.len() > MAX_PACKET {
        return;
    }
    if let Some(parsed) = Parsed::new(data) {
        let from = parsed.from();
        for index in [Some(3), None] {
            if let Some(compact) = pack(&parsed, index.filter(|_| from.is_some())) {
                assert!(compact.len() < data.len(), "compaction grew the packet");
                let rebuilt = unpack(&compact, |_| from).expect("what pack made unpacks");
                assert_eq!(rebuilt, data, "rebuilt bytes differ");
            }
        }
    }
});
