//! The stream API framing shared by serial and TCP: `0x94 0xC3 LEN_HI LEN_LO` then `LEN` bytes
//! of protobuf (`ToRadio` host→device, `FromRadio` device→host).
//!
//! The decoder follows the firmware's receive state machine (`StreamAPI::handleRecStream`)
//! byte for byte, so both ends of a link resynchronise the same way after garbage:
//!
//! | position | byte             | action                                                        |
//! |----------|------------------|---------------------------------------------------------------|
//! | 0        | not `0x94`       | noise: dropped (on serial it is debug log text)               |
//! | 1        | not `0xC3`       | both bytes dropped; the second is *not* re-examined as `0x94` |
//! | 3        | length > 512     | the 4 header bytes dropped ([`FrameEvent::Oversize`])         |
//! | 4..      | -                | exactly `len` bytes collected, whatever they are              |
//!
//! A truncated frame therefore swallows the start of the next one; resync happens after it.
//! The decoder keeps no state of its own: everything it needs is the buffer's first bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// First byte of every frame.
pub const START1: u8 = 0x94;
/// Second byte of every frame.
pub const START2: u8 = 0xC3;
/// Header length: the two start bytes and a big-endian u16 length.
pub const HEADER_LEN: usize = 4;
/// Largest payload either side accepts (`MAX_TO_FROM_RADIO_SIZE`).
pub const MAX_PAYLOAD: usize = 512;
/// What clients send before their first frame so a device that was mid-frame resyncs: the
/// Python client writes 32 of these (`stream_interface.py::connect`).
pub const WAKE_UP: [u8; 32] = [START2; 32];

/// One thing found at the front of a receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// A complete frame's payload (may be empty: an empty protobuf is a valid message).
    Frame(Bytes),
    /// Bytes that are not part of a frame. On serial these are the device's text log.
    Noise(Bytes),
    /// A header announced more than [`MAX_PAYLOAD`] bytes; the header was dropped.
    Oversize {
        /// The length the header claimed.
        declared: usize,
    },
}

/// Takes the next event off the front of `buf`. `None` means the buffer holds only the start
/// of a frame (or nothing): read more bytes and call again. Never fails: every byte sequence
/// is either a frame, noise, or an oversize header.
pub fn next_event(buf: &mut BytesMut) -> Option<FrameEvent> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] != START1 {
        let end = buf.iter().position(|&b| b == START1).unwrap_or(buf.len());
        return Some(FrameEvent::Noise(buf.split_to(end).freeze()));
    }
    if buf.len() < 2 {
        return None;
    }
    if buf[1] != START2 {
        return Some(FrameEvent::Noise(buf.split_to(2).freeze()));
    }
    if buf.len() < HEADER_LEN {
        return None;
    }
    let declared = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if declared > MAX_PAYLOAD {
        buf.advance(HEADER_LEN);
        return Some(FrameEvent::Oversize { declared });
    }
    if buf.len() < HEADER_LEN + declared {
        buf.reserve(HEADER_LEN + declared - buf.len());
        return None;
    }
    buf.advance(HEADER_LEN);
    Some(FrameEvent::Frame(buf.split_to(declared).freeze()))
}

/// A payload larger than a frame can carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {len}-byte message does not fit a stream frame (at most {MAX_PAYLOAD} bytes)")]
pub struct TooLarge {
    /// The payload's length.
    pub len: usize,
}

/// Appends one frame carrying `payload` to `dst`.
pub fn encode(payload: &[u8], dst: &mut BytesMut) -> Result<(), TooLarge> {
    if payload.len() > MAX_PAYLOAD {
        return Err(TooLarge { len: payload.len() });
    }
    dst.reserve(HEADER_LEN + payload.len());
    dst.put_u8(START1);
    dst.put_u8(START2);
    dst.put_u16(payload.len() as u16);
    dst.put_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(bytes: &[u8]) -> (Vec<FrameEvent>, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(ev) = next_event(&mut buf) {
            out.push(ev);
        }
        (out, buf)
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode(payload, &mut b).unwrap();
        b.to_vec()
    }

    fn frames(events: &[FrameEvent]) -> Vec<Vec<u8>> {
        events
            .iter()
            .filter_map(|e| match e {
                FrameEvent::Frame(p) => Some(p.to_vec()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn want_config_id_42_is_framed_as_in_the_reference() {
        assert_eq!(frame(&[0x18, 0x2a]), [0x94, 0xc3, 0x00, 0x02, 0x18, 0x2a]);
    }

    #[test]
    fn wake_up_noise_is_skipped_before_a_frame() {
        let mut bytes = WAKE_UP.to_vec();
        bytes.extend(frame(b"\x18\x2a"));
        let (events, rest) = drain(&bytes);
        assert_eq!(frames(&events), vec![b"\x18\x2a".to_vec()]);
        assert!(matches!(&events[0], FrameEvent::Noise(n) if n.len() == 32));
        assert!(rest.is_empty());
    }

    #[test]
    fn text_log_lines_between_frames_come_out_as_noise() {
        let mut bytes = b"INFO  | 12:00:00 booting\r\n".to_vec();
        bytes.extend(frame(b"a"));
        bytes.extend(b"DEBUG | more\r\n");
        bytes.extend(frame(b"b"));
        let (events, _) = drain(&bytes);
        assert_eq!(frames(&events), vec![b"a".to_vec(), b"b".to_vec()]);
        let noise: Vec<u8> = events
            .iter()
            .filter_map(|e| match e {
                FrameEvent::Noise(n) => Some(n.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(noise, b"INFO  | 12:00:00 booting\r\nDEBUG | more\r\n");
    }

    #[test]
    fn an_oversize_length_is_dropped_and_the_next_frame_still_decodes() {
        let mut bytes = vec![0x94, 0xc3, 0x02, 0x01];
        bytes.extend(frame(b"ok"));
        let (events, _) = drain(&bytes);
        assert_eq!(events[0], FrameEvent::Oversize { declared: 513 });
        assert_eq!(frames(&events), vec![b"ok".to_vec()]);
    }

    #[test]
    fn a_truncated_frame_swallows_the_next_one_as_the_firmware_does() {
        // Header says 6 bytes, only 2 arrive, then a whole 2-byte frame (6 bytes on the wire).
        let mut bytes = vec![0x94, 0xc3, 0x00, 0x06, 1, 2];
        bytes.extend(frame(b"xy"));
        bytes.extend(frame(b"after"));
        let (events, _) = drain(&bytes);
        assert_eq!(
            frames(&events),
            vec![vec![1, 2, 0x94, 0xc3, 0x00, 0x02], b"after".to_vec()]
        );
    }

    #[test]
    fn a_doubled_start_byte_loses_that_frame_like_the_firmware() {
        let mut bytes = vec![0x94];
        bytes.extend(frame(b"lost"));
        bytes.extend(frame(b"kept"));
        let (events, _) = drain(&bytes);
        assert_eq!(frames(&events), vec![b"kept".to_vec()]);
    }

    #[test]
    fn partial_input_waits_for_more_bytes() {
        let whole = frame(b"hello");
        for cut in 0..whole.len() {
            let (events, rest) = drain(&whole[..cut]);
            assert!(events.is_empty(), "cut at {cut}: {events:?}");
            assert_eq!(rest.len(), cut);
        }
    }

    #[test]
    fn bytes_split_at_every_boundary_give_the_same_frames() {
        let mut stream = b"log\n".to_vec();
        stream.extend(frame(b"one"));
        stream.extend(frame(b""));
        stream.extend(frame(&[7u8; 300]));
        let (expected, _) = drain(&stream);
        for chunk in 1..8 {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(ev) = next_event(&mut buf) {
                    got.push(ev);
                }
            }
            assert_eq!(frames(&got), frames(&expected), "chunk size {chunk}");
        }
    }

    #[test]
    fn an_empty_frame_is_a_frame() {
        let (events, _) = drain(&frame(b""));
        assert_eq!(events, vec![FrameEvent::Frame(Bytes::new())]);
    }

    #[test]
    fn random_bytes_never_stall_or_panic_the_decoder() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 7;
            x ^= x >> 9;
            x
        };
        for round in 0..500 {
            let len = (next() % 2048) as usize;
            // Bias towards start bytes so headers (and oversize lengths) actually occur.
            let bytes: Vec<u8> = (0..len)
                .map(|_| match next() % 8 {
                    0 => START1,
                    1 => START2,
                    _ => next() as u8,
                })
                .collect();
            let mut buf = BytesMut::from(&bytes[..]);
            let mut consumed = 0;
            while let Some(ev) = next_event(&mut buf) {
                consumed += match ev {
                    FrameEvent::Frame(p) => p.len() + HEADER_LEN,
                    FrameEvent::Noise(n) => n.len(),
                    FrameEvent::Oversize { .. } => HEADER_LEN,
                };
            }
            assert_eq!(consumed + buf.len(), len, "round {round}");
            assert!(buf.len() < HEADER_LEN + MAX_PAYLOAD, "round {round}");
        }
    }

    #[test]
    fn encoding_refuses_a_payload_over_512_bytes() {
        let mut b = BytesMut::new();
        assert_eq!(encode(&[0; 513], &mut b), Err(TooLarge { len: 513 }));
        assert!(encode(&[0; 512], &mut b).is_ok());
    }
}
