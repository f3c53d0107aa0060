//! `peer::frame::decode`: frames from another hub over the federation link (TLS-authenticated,
//! but a peer may run other code or be compromised).
//!
//! Checked: a decoder never claims more bytes than it was given; a frame decodes the same
//! from exactly its own bytes and with anything after them; every shorter prefix of a frame
//! is `Incomplete` (never `Invalid`), and so is every prefix of an `Incomplete` buffer; an
//! `Invalid` verdict does not change when more bytes arrive and points no further than the
//! frame's end; a decoded frame (other than an unknown type) encodes to at most as many bytes,
//! which decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::peer::frame::{self, Frame, FrameError};

/// Prefixes checked one by one up to this length; beyond it a sample (the check is O(n²)).
const ALL_PREFIXES: usize = 256;

fn prefixes(n: usize) -> impl Iterator<Item = usize> {
    let step = (n / ALL_PREFIXES).max(1);
    (0..n).step_by(step).chain(n.checked_sub(1))
}

fuzz_target!(|data: &[u8]| {
    let mut longer = data.to_vec();
    longer.extend_from_slice(&[0x05, 0x00, 0x80, 0xff]);
    match frame::decode(data) {
        Ok((frame, n)) => {
            assert!(
                n >= 2 && n <= data.len(),
                "took {n} of {} bytes",
                data.len()
            );
            assert_eq!(frame::decode(&data[..n]), Ok((frame.clone(), n)));
            assert_eq!(frame::decode(&longer), Ok((frame.clone(), n)));
            for cut in prefixes(n) {
                assert_eq!(
                    frame::decode(&data[..cut]),
                    Err(FrameError::Incomplete),
                    "a {cut}-byte prefix of a {n}-byte frame"
                );
            }
            if !matches!(frame, Frame::Unknown { .. }) {
                let mut out = Vec::new();
                frame::encode(&frame, &mut out).expect("a decoded frame encodes");
                assert!(out.len() <= n, "re-encoding grew the frame");
                assert_eq!(frame::decode(&out), Ok((frame, out.len())));
            }
        }
        Err(FrameError::Incomplete) => {
            for cut in prefixes(data.len()) {
                assert_eq!(frame::decode(&data[..cut]), Err(FrameError::Incomplete));
            }
        }
        Err(invalid @ FrameError::Invalid { at, .. }) => {
            assert!(
                at <= data.len(),
                "error at {at} past the {} bytes",
                data.len()
            );
            assert_eq!(frame::decode(&longer), Err(invalid));
        }
    }
});
