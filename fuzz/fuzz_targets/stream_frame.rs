//! The serial/TCP stream framing (`mesh_core::frame::next_event`): bytes from a radio, or from
//! anything that answers on its TCP port.
//!
//! Checked beyond "no panic": every byte is accounted for (frames, noise, dropped headers and
//! what is left add up to the input); what is left is less than one frame; noise is never a
//! frame start the firmware would have taken; feeding the same bytes in small pieces gives
//! the same frames, oversize headers and noise; and each frame re-encodes to bytes that
//! decode to the same frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mesh_core::frame::{self, FrameEvent, HEADER_LEN, MAX_PAYLOAD, START1, START2};

/// What a run of the decoder saw, with the noise joined (its cuts depend on read sizes).
#[derive(Debug, Default, PartialEq)]
struct Seen {
    events: Vec<FrameEvent>,
    noise: Vec<u8>,
}

impl Seen {
    fn take(&mut self, buf: &mut BytesMut) {
        while let Some(ev) = frame::next_event(buf) {
            match ev {
                FrameEvent::Noise(n) => {
                    assert!(!n.is_empty(), "empty noise");
                    // Either a run with no start byte, or a start byte not followed by START2.
                    let lone = n.len() == 2 && n[0] == START1 && n[1] != START2;
                    assert!(
                        lone || !n.contains(&START1),
                        "noise {n:?} hides a start byte"
                    );
                    self.noise.extend_from_slice(&n);
                }
                other => self.events.push(other),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, bytes)) = data.split_first() else {
        return;
    };

    let mut buf = BytesMut::from(bytes);
    let mut whole = Seen::default();
    whole.take(&mut buf);
    let mut consumed = whole.noise.len();
    for ev in &whole.events {
        consumed += match ev {
            FrameEvent::Frame(p) => {
                assert!(p.len() <= MAX_PAYLOAD);
                HEADER_LEN + p.len()
            }
            FrameEvent::Oversize { declared } => {
                assert!(*declared > MAX_PAYLOAD);
                HEADER_LEN
            }
            FrameEvent::Noise(_) => unreachable!("noise is joined"),
        };
    }
    assert_eq!(consumed + buf.len(), bytes.len(), "bytes lost or invented");
    assert!(
        buf.len() < HEADER_LEN + MAX_PAYLOAD,
        "{} bytes left",
        buf.len()
    );
    assert_eq!(
        &buf[..],
        &bytes[consumed..],
        "the rest is not the input's tail"
    );

    // The same stream in reads of 1..=16 bytes.
    let piece = usize::from(piece % 16) + 1;
    let mut buf = BytesMut::new();
    let mut pieces = Seen::default();
    for chunk in bytes.chunks(piece) {
        buf.extend_from_slice(chunk);
        pieces.take(&mut buf);
    }
    assert_eq!(pieces, whole, "read size {piece} changed what was decoded");

    for ev in &whole.events {
        if let FrameEvent::Frame(p) = ev {
            let mut out = BytesMut::new();
            frame::encode(p, &mut out).expect("a decoded payload fits a frame");
            assert_eq!(frame::next_event(&mut out), Some(ev.clone()));
            assert!(out.is_empty());
        }
    }
});
