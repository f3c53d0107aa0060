//! Byte-level primitives of the peer codec: LEB128 varints, length-prefixed UTF-8 within a
//! bound, and a cursor that names the field and offset of whatever is wrong.

use super::frame::{EncodeError, FrameError};

/// A cursor over one frame body that names the field and offset of whatever is wrong.
pub(super) struct Reader<'a> {
    /// The body.
    pub(super) buf: &'a [u8],
    /// Bytes of the body read so far.
    pub(super) pos: usize,
    /// Where the body starts in the frame, so errors give offsets from the frame's start.
    pub(super) base: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn invalid(&self, what: &'static str) -> FrameError {
        FrameError::Invalid {
            what,
            at: self.base + self.pos,
        }
    }

    pub(super) fn invalid_at(&self, pos: usize, what: &'static str) -> FrameError {
        FrameError::Invalid {
            what,
            at: self.base + pos,
        }
    }

    pub(super) fn invalid_back(&self, back: usize, what: &'static str) -> FrameError {
        FrameError::Invalid {
            what,
            at: self.base + self.pos.saturating_sub(back),
        }
    }

    pub(super) fn byte(&mut self, what: &'static str) -> Result<u8, FrameError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.invalid(what))?;
        self.pos += 1;
        Ok(b)
    }

    pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        if self.buf.len() - self.pos < n {
            return Err(self.invalid(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(super) fn varint(&mut self, what: &'static str) -> Result<u64, FrameError> {
        let at = self.pos;
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.byte(what)?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                break;
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(FrameError::Invalid {
            what,
            at: self.base + at,
        })
    }

    pub(super) fn varint_u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| self.invalid_back(1, what))
    }

    pub(super) fn index(&mut self, bound: usize, what: &'static str) -> Result<u32, FrameError> {
        let v = self.varint(what)?;
        if v >= bound as u64 {
            return Err(self.invalid_back(1, what));
        }
        Ok(v as u32)
    }

    pub(super) fn u32_le(&mut self, what: &'static str) -> Result<u32, FrameError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn text(&mut self, max: usize, what: &'static str) -> Result<String, FrameError> {
        let len = usize::from(self.byte(what)?);
        if len > max {
            return Err(self.invalid_back(1, what));
        }
        let at = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::Invalid {
            what,
            at: self.base + at,
        })
    }
}

/// Bytes the LEB128 encoding of `v` takes.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn put_text(
    out: &mut Vec<u8>,
    s: &str,
    max: usize,
    what: &'static str,
) -> Result<(), EncodeError> {
    if s.len() > max {
        return Err(EncodeError { what });
    }
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// The longest prefix of `s` within `max` bytes that ends on a character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
