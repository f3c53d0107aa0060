//! The stream API codec shared by the radio link (host side) and the simulator (device side):
//! [`mesh_core::frame`]'s pure framing wrapped as a `tokio_util` codec.
//!
//! Decoding never fails on content: noise and oversize headers come out as items so the
//! caller can log and count them, and the stream carries on. Only I/O errors end a stream.

use bytes::{Bytes, BytesMut};
use mesh_core::frame::{self, FrameEvent};
use tokio_util::codec::{Decoder, Encoder};

/// `0x94 0xC3 LEN` framing, both directions.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamCodec;

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// A complete frame payload (a `FromRadio` or `ToRadio` protobuf, still encoded).
    Frame(Bytes),
    /// Bytes outside any frame: text log on serial, garbage anywhere.
    Noise(Bytes),
    /// A header announced more than 512 bytes and was skipped.
    Oversize {
        /// The announced length.
        declared: usize,
    },
    /// The stream ended in the middle of a frame; these bytes were lost.
    Truncated {
        /// How many bytes of the unfinished frame had arrived.
        len: usize,
    },
}

impl Decoder for StreamCodec {
    type Item = StreamItem;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<StreamItem>, std::io::Error> {
        Ok(frame::next_event(src).map(|ev| match ev {
            FrameEvent::Frame(b) => StreamItem::Frame(b),
            FrameEvent::Noise(b) => StreamItem::Noise(b),
            FrameEvent::Oversize { declared } => StreamItem::Oversize { declared },
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<StreamItem>, std::io::Error> {
        if let Some(item) = self.decode(src)? {
            return Ok(Some(item));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let len = src.len();
        src.clear();
        Ok(Some(StreamItem::Truncated { len }))
    }
}

impl Encoder<&[u8]> for StreamCodec {
    type Error = std::io::Error;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), std::io::Error> {
        frame::encode(payload, dst)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    }
}

impl Encoder<Bytes> for StreamCodec {
    type Error = std::io::Error;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        Encoder::<&[u8]>::encode(self, &payload[..], dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_ending_mid_frame_reports_the_lost_bytes() {
        let mut codec = StreamCodec;
        let mut buf = BytesMut::from(&[0x94, 0xc3, 0x00, 0x05, 1, 2][..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(
            codec.decode_eof(&mut buf).unwrap(),
            Some(StreamItem::Truncated { len: 6 })
        );
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }
}
