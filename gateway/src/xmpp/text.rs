//! Whether a text from XMPP can go on the mesh as it is. A message the mesh cannot carry is
//! refused with a reason the writer can act on, never cut: a cut text says something its
//! writer did not write.
//!
//! The limit is that of one text message as the firmware sends it: a `Data` with port
//! `TEXT_MESSAGE_APP`, the text as payload and the `bitfield` every firmware-made `Data`
//! carries, encoded; on a channel-key packet it must fit a LoRa frame after the 16-byte
//! header (AES-CTR adds nothing) with the payload within `DATA_PAYLOAD_LEN`; a PKI direct
//! message adds 12 bytes of tag and nonce to the same frame.

use mesh_core::packet::{MAX_DATA_PAYLOAD, MAX_LORA_FRAME, ON_AIR_HEADER};
use mesh_core::pki::MAX_PKI_PLAINTEXT;
use mesh_core::proto;
use prost::Message;

/// How a text crosses the mesh, which sets how long it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carriage {
    /// Encrypted with the channel key: channel messages, and direct messages to nodes
    /// without a public key.
    Channel,
    /// A PKI direct message (X25519, AES-CCM): 12 bytes of overhead less for the text.
    Pki,
}

/// Why a text cannot go on the mesh. Its `Display` is written for the XMPP user who sent it
/// (the text of the error stanza).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Nothing to say (empty, or only spaces and new lines).
    #[error("the message is empty: the mesh carries text, and there is none")]
    Empty,
    /// A control character (other than new line and tab), which mesh apps cannot show.
    #[error(
        "the message contains the control character {found}, which mesh apps cannot show: send plain text (new lines and tabs are fine)"
    )]
    Control {
        /// The character, as `U+001B`.
        found: String,
    },
    /// Longer than one mesh message.
    #[error(
        "the mesh carries at most {limit} bytes of text in one message; this one is {len} bytes"
    )]
    TooLong {
        /// The most bytes of text that fit (after any `[nick] ` prefix the gateway adds).
        limit: usize,
        /// The text's length in bytes.
        len: usize,
    },
}

/// The encoded length of a text message's `Data` carrying `n` bytes of text.
fn encoded_len(n: usize) -> usize {
    let base = proto::Data {
        portnum: proto::PortNum::TextMessageApp as i32,
        bitfield: Some(1),
        ..Default::default()
    }
    .encoded_len();
    // The payload field: its tag, its length and the bytes (absent when empty).
    if n == 0 {
        base
    } else {
        base + 1 + prost::length_delimiter_len(n) + n
    }
}

/// The most bytes of text one message carries on `on`.
pub fn max_text(on: Carriage) -> usize {
    let frame = match on {
        Carriage::Channel => MAX_LORA_FRAME - ON_AIR_HEADER,
        Carriage::Pki => MAX_PKI_PLAINTEXT,
    };
    (0..=MAX_DATA_PAYLOAD)
        .rev()
        .find(|n| encoded_len(*n) <= frame)
        .unwrap_or(0)
}

/// Whether `text` can go on the mesh whichever way it is carried (the PKI limit, the
/// smaller one): for a text whose way is not known yet.
pub fn fits(text: &str) -> Result<(), Refusal> {
    fits_on(text, Carriage::Pki)
}

/// Whether `text` can go on the mesh as one message carried `on`.
pub fn fits_on(text: &str, on: Carriage) -> Result<(), Refusal> {
    check(text, max_text(on))
}

/// `[nick] text`, the form a room message takes when the gateway radio speaks for the room
/// (`send_as = "gateway"`), on a channel; refused when the text with its prefix does not fit
/// (the limit then says how much room the prefix leaves). The nick loses control characters
/// and surrounding spaces.
pub fn gateway_text(nick: &str, text: &str) -> Result<String, Refusal> {
    let nick: String = nick.trim().chars().filter(|c| !c.is_control()).collect();
    let prefix = format!("[{nick}] ");
    check(
        text,
        max_text(Carriage::Channel).saturating_sub(prefix.len()),
    )?;
    Ok(prefix + text)
}

/// The checks of a text that may take `limit` bytes.
fn check(text: &str, limit: usize) -> Result<(), Refusal> {
    if text.trim().is_empty() {
        return Err(Refusal::Empty);
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !['\n', '\t'].contains(c))
    {
        return Err(Refusal::Control {
            found: format!("U+{:04X}", u32::from(c)),
        });
    }
    if text.len() > limit {
        return Err(Refusal::TooLong {
            limit,
            len: text.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real encoding of a text message as the firmware makes it.
    fn encoded(text: &str) -> usize {
        proto::Data {
            portnum: proto::PortNum::TextMessageApp as i32,
            payload: text.as_bytes().to_vec(),
            bitfield: Some(1),
            ..Default::default()
        }
        .encode_to_vec()
        .len()
    }

    #[test]
    fn the_limits_are_what_one_frame_holds() {
        let channel = max_text(Carriage::Channel);
        let pki = max_text(Carriage::Pki);
        assert_eq!((channel, pki), (232, 220));
        // At the limit the frame is full; one byte more does not fit.
        assert!(encoded(&"a".repeat(channel)) <= MAX_LORA_FRAME - ON_AIR_HEADER);
        assert!(encoded(&"a".repeat(channel + 1)) > MAX_LORA_FRAME - ON_AIR_HEADER);
        assert!(encoded(&"a".repeat(pki)) <= MAX_PKI_PLAINTEXT);
        assert!(encoded(&"a".repeat(pki + 1)) > MAX_PKI_PLAINTEXT);
        for n in [0, 1, 127, 128, 200, 233] {
            assert_eq!(encoded_len(n), encoded(&"a".repeat(n)), "{n}");
        }
    }

    #[test]
    fn a_text_too_long_is_refused_saying_the_limit_and_its_length() {
        assert_eq!(fits_on(&"a".repeat(232), Carriage::Channel), Ok(()));
        let e = fits_on(&"é".repeat(156), Carriage::Channel).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the mesh carries at most 232 bytes of text in one message; this one is 312 bytes"
        );
        assert_eq!(
            fits(&"a".repeat(221)),
            Err(Refusal::TooLong {
                limit: 220,
                len: 221
            }),
            "fits holds for a PKI direct message too"
        );
        assert_eq!(fits(&"a".repeat(220)), Ok(()));
    }

    #[test]
    fn empty_texts_and_control_characters_are_refused() {
        assert_eq!(fits(""), Err(Refusal::Empty));
        assert_eq!(fits(" \n\t"), Err(Refusal::Empty));
        let e = fits("red\u{1b}[31m").unwrap_err();
        assert!(e.to_string().contains("U+001B"), "{e}");
        assert!(fits("zero\u{0}").is_err());
        assert_eq!(fits("two\nlines\tand a tab"), Ok(()));
        assert_eq!(fits("émoji 🛰️ ok"), Ok(()));
    }

    #[test]
    fn gateway_texts_carry_the_nick_and_leave_it_room() {
        assert_eq!(
            gateway_text("alice", "hello mesh").unwrap(),
            "[alice] hello mesh"
        );
        assert_eq!(
            gateway_text(" al\u{7}ice ", "hi").unwrap(),
            "[alice] hi",
            "control characters and spaces around the nick are dropped"
        );
        let room = 232 - "[alice] ".len();
        assert!(gateway_text("alice", &"a".repeat(room)).is_ok());
        let e = gateway_text("alice", &"a".repeat(room + 1)).unwrap_err();
        assert_eq!(
            e,
            Refusal::TooLong {
                limit: room,
                len: room + 1
            }
        );
        assert_eq!(gateway_text("alice", "  "), Err(Refusal::Empty));
    }
}
