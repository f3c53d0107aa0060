//! Secrets in the configuration: broker passwords, the XMPP component secret, and peer keys later.
//!
//! A config is logged, printed by `check-config` and shown on the status page, so a secret is
//! a type of its own whose `Debug` and `Display` print `[redacted]`: forgetting to skip a field
//! cannot leak it. It is read from a file named in the config (`password_file`,
//! `secret_file`), so the TOML itself can be shared when asking for help; only the XMPP
//! component secret may also be written inline, as the server's own config writes it.
//!
//! Hand-rolled rather than the `secrecy` crate: what `secrecy` adds is zeroing on drop, and the
//! value is handed as a `String` to the protocol libraries (rumqttc's `set_credentials`), which
//! keep their own copies, so zeroing ours would promise more than it gives.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

/// The most a secret file may hold: far above any real secret (MQTT carries at most 65535
/// bytes), low enough that naming the wrong file cannot take the gateway's memory.
const MAX_SECRET_FILE: u64 = 1024 * 1024;

/// A secret value. Only [`Secret::expose`] gives it out, at the one place that hands it to the
/// far side.
#[derive(Clone)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a secret (for configs built in code, and tests).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into().into_boxed_str())
    }

    /// The secret itself, for the protocol library that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret file: its whole content, less one trailing newline (`echo pass > file`
    /// writes one), since an MQTT password may start or end with a space. The error says
    /// what is wrong with the file, never what is in it.
    pub fn read_file(path: &Path) -> Result<Secret, String> {
        let text = read(path)?;
        let value = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        Self::checked(path, value)
    }

    /// Reads a secret file and trims whitespace at both ends: for an XMPP component secret,
    /// which servers compare after trimming the config value too, so a stray space an editor
    /// left would only make the handshake fail.
    pub fn read_file_trimmed(path: &Path) -> Result<Secret, String> {
        let text = read(path)?;
        Self::checked(path, text.trim())
    }

    fn checked(path: &Path, value: &str) -> Result<Secret, String> {
        if value.is_empty() {
            return Err(format!(
                "{} is empty: write the secret in it (and nothing else)",
                path.display()
            ));
        }
        if value.contains(['\n', '\r']) {
            return Err(format!(
                "{} has several lines: write only the secret in it",
                path.display()
            ));
        }
        if value.len() > u16::MAX as usize {
            return Err(format!(
                "{} holds {} bytes: at most 65535 (what MQTT carries) are accepted",
                path.display(),
                value.len()
            ));
        }
        Ok(Secret::new(value))
    }
}

fn read(path: &Path) -> Result<String, String> {
    let bytes = read_bounded(path, MAX_SECRET_FILE).map_err(|e| match e {
        Unreadable::Io(e) => format!(
            "cannot read {}: {e}: the file must exist and be readable by the gateway's user",
            path.display()
        ),
        Unreadable::NotAFile => format!(
            "{} is not a regular file: write the secret in a file and name that file",
            path.display()
        ),
        Unreadable::TooLarge => format!(
            "{} holds more than {MAX_SECRET_FILE} bytes: write only the secret in it",
            path.display()
        ),
    })?;
    String::from_utf8(bytes)
        .map_err(|_| format!("cannot read {}: it is not UTF-8 text", path.display()))
}

/// Why [`read_bounded`] gave nothing.
#[derive(Debug)]
pub(crate) enum Unreadable {
    /// Absent, not readable, or failing as it is read.
    Io(io::Error),
    /// A directory, a device, a FIFO or a socket.
    NotAFile,
    /// More than the bound.
    TooLarge,
}

/// Reads the regular file at `path`, at most `max` bytes of it. A config may name any path:
/// read whole, `/dev/zero` or a runaway log would take all memory and a FIFO would block the
/// start, so anything but a regular file is refused before it is opened.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, Unreadable> {
    if !std::fs::metadata(path).map_err(Unreadable::Io)?.is_file() {
        return Err(Unreadable::NotAFile);
    }
    let mut out = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut out))
        .map_err(Unreadable::Io)?;
    if out.len() as u64 > max {
        return Err(Unreadable::TooLarge);
    }
    Ok(out)
}

/// An inline secret (`secret = "..."`, allowed where a protocol's secret is shared
/// config anyway, such as an XMPP component secret); it is redacted from then on.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::TempDir;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("large4cats");
        assert_eq!(
            format!("{s:?} {s} {s:#?}"),
            "[redacted] [redacted] [redacted]"
        );
        assert_eq!(s.expose(), "large4cats");
    }

    #[test]
    fn a_secret_file_loses_one_trailing_newline_and_nothing_else() {
        let dir = TempDir::new("secret");
        let path = dir.write("pass", " sp ace\n");
        assert_eq!(Secret::read_file(&path).unwrap().expose(), " sp ace");
        let path = dir.write("crlf", "x\r\n");
        assert_eq!(Secret::read_file(&path).unwrap().expose(), "x");
        let path = dir.write("trim", "  s3cret \t\n\n");
        assert_eq!(Secret::read_file_trimmed(&path).unwrap().expose(), "s3cret");
        let e = Secret::read_file_trimmed(&dir.write("blank", " \n")).unwrap_err();
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn bad_secret_files_are_named_without_their_content() {
        let dir = TempDir::new("secret-bad");
        let e = Secret::read_file(&dir.path().join("absent")).unwrap_err();
        assert!(e.contains("absent") && e.contains("cannot read"), "{e}");
        let e = Secret::read_file(&dir.write("empty", "\n")).unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        let e = Secret::read_file(&dir.write("two", "hunter2\nhunter3\n")).unwrap_err();
        assert!(e.contains("several lines") && !e.contains("hunter"), "{e}");
    }

    #[test]
    fn a_device_or_a_huge_file_is_refused_without_being_read_whole() {
        // Read whole, /dev/zero took all memory (found by fuzz/fuzz_targets/config_load.rs,
        // reproducer fuzz/corpus/config_load/password_file_dev_zero).
        let e = Secret::read_file(Path::new("/dev/zero")).unwrap_err();
        assert!(e.contains("/dev/zero is not a regular file"), "{e}");
        let dir = TempDir::new("secret-huge");
        let e = Secret::read_file(&dir.write("huge", &"x".repeat(3 << 20))).unwrap_err();
        assert!(e.contains("holds more than 1048576 bytes"), "{e}");
        let e = Secret::read_file_trimmed(dir.path()).unwrap_err();
        assert!(e.contains("is not a regular file"), "{e}");
    }
}
