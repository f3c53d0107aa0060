//! Text from elsewhere, made safe to show on a terminal or in a log: the one escaping of
//! everything a mesh or an XMPP server says (texts, node names, nicks, bodies, and the error
//! strings that quote them) before it reaches standard output, the logs, `radio-info` or
//! `archipel status`.
//!
//! A text with a newline in it would print a second line of its own (a forged `relayed` line
//! in the journal); an ANSI escape would recolour or clear the terminal; a bidirectional
//! override would show a line's words in another order than they are. So every character that
//! steers a terminal rather than printing is written as an escape instead: C0 controls
//! (`\n`, `\r`, `\t`, else `\x1b` style), DEL (`\x7f`), C1 controls and the Unicode line
//! separators and bidirectional controls (`\u{85}`, `\u{2028}`, `\u{202e}` style). Everything
//! else, any script and emoji included, is shown as it is; one line stays one line.
//! Backslashes are left alone: the escapes are for a person reading, not to be decoded.

use std::borrow::Cow;
use std::fmt;

/// True for a character that is escaped rather than shown.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\0'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}'
        // Line and paragraph separators: a new line to some terminals and log viewers.
        | '\u{2028}' | '\u{2029}'
        // Bidirectional embeddings, overrides and isolates (LRE..RLO, LRI..PDI).
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every [unsafe](is_unsafe) character escaped; borrowed when there is none,
/// which is almost always.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(Escaped(text).to_string())
}

/// Shows a text escaped, without building a string first: `format!("{}", Escaped(name))`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(is_unsafe) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\0'..='\x1f' | '\x7f' => write!(f, "\\x{:02x}", u32::from(c))?,
                _ => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_of_any_script_is_shown_as_it_is_and_not_copied() {
        for text in [
            "Harbour 12:30",
            "Amira's radio",
            "Ωμέγα مرحبا 你好 🚑",
            "a\\nb",
            "",
        ] {
            assert!(
                matches!(escape(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }

    #[test]
    fn a_newline_cannot_forge_a_second_line() {
        let forged = "hi\n2026-12-03T10:00:00Z relayed !0000a002 0x1 -> south#Valley";
        let shown = escape(forged);
        assert!(!shown.contains('\n'), "{shown}");
        assert_eq!(
            shown,
            "hi\\n2026-12-03T10:00:00Z relayed !0000a002 0x1 -> south#Valley"
        );
        assert_eq!(escape("a\r\nb\tc"), "a\\r\\nb\\tc");
    }

    #[test]
    fn terminal_escapes_and_every_control_character_are_shown_as_escapes() {
        assert_eq!(escape("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(escape("\0\x07\x08\x7f"), "\\x00\\x07\\x08\\x7f");
        // C1: 8-bit CSI and NEL.
        assert_eq!(escape("\u{9b}2J\u{85}"), "\\u{9b}2J\\u{85}");
        assert_eq!(escape("a\u{2028}b"), "a\\u{2028}b");
        for c in (0u32..0x20).chain([0x7f]).chain(0x80..0xa0) {
            let c = char::from_u32(c).unwrap();
            let shown = escape(&c.to_string()).into_owned();
            assert!(
                shown.starts_with('\\') && shown.chars().all(|c| !is_unsafe(c)),
                "{shown}"
            );
        }
    }

    #[test]
    fn bidirectional_overrides_cannot_reorder_a_line() {
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        for c in (0x202a..=0x202e).chain(0x2066..=0x2069) {
            let c = char::from_u32(c).unwrap();
            assert_eq!(
                escape(&format!("x{c}y")),
                format!("x\\u{{{:x}}}y", u32::from(c))
            );
        }
        // Marks that only hint at a direction are text like any other.
        assert_eq!(escape("a\u{200f}b"), "a\u{200f}b");
    }

    #[test]
    fn escaped_shows_the_same_as_escape() {
        let text = "Evil\x1b[2J\nnode\u{202e}";
        assert_eq!(Escaped(text).to_string(), escape(text));
    }
}
