//! The two raw XMPP streams the harness opens itself, with no client library: a client stream
//! to see that Prosody serves (its event loop runs only once every host is loaded), and a
//! XEP-0114 component handshake, for tests that check or occupy the component domain.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::Instant;

/// XEP-0114 §3: open a `jabber:component:accept` stream to `domain`, answer with
/// SHA-1(stream id + secret), and return the stream once the server sent `<handshake/>`.
pub(super) fn component_handshake(
    port: u16,
    domain: &str,
    secret: &str,
    deadline: Instant,
) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("component port {port} refused: {e}"))?;
    let header = format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:component:accept' \
         xmlns:stream='http://etherx.jabber.org/streams'>"
    );
    stream
        .write_all(header.as_bytes())
        .map_err(|e| format!("component header: {e}"))?;
    let got = read_until(&mut stream, deadline, |t| {
        t.contains("</stream:stream>") || stream_id(t).is_some()
    })?;
    let id = stream_id(&got).ok_or_else(|| format!("no stream id in: {got}"))?;
    let digest = sha1_hex(&format!("{id}{secret}"));
    stream
        .write_all(format!("<handshake>{digest}</handshake>").as_bytes())
        .map_err(|e| format!("handshake: {e}"))?;
    let answer = read_until(&mut stream, deadline, |t| {
        t.contains("<handshake") || t.contains("</stream:error>") || t.contains("</stream:stream>")
    })?;
    if answer.contains("<handshake") {
        Ok(stream)
    } else {
        Err(format!("handshake refused: {answer}"))
    }
}

/// Opens a client stream and reads until the server's stream features, or fails with what
/// happened instead.
pub(super) fn probe_c2s(port: u16, vhost: &str, deadline: Instant) -> Result<(), String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("refused: {e}"))?;
    let header = format!(
        "<?xml version='1.0'?><stream:stream to='{vhost}' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    );
    stream
        .write_all(header.as_bytes())
        .map_err(|e| format!("refused the header: {e}"))?;
    read_until(&mut stream, deadline, |t| t.contains("</stream:features>"))?;
    let _ = stream.write_all(b"</stream:stream>");
    Ok(())
}

/// Reads from `stream` until what came so far satisfies `done`, or the deadline passes.
fn read_until(
    stream: &mut TcpStream,
    deadline: Instant,
    done: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if done(&text) {
            return Ok(text);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer in time; got: {text}"));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("socket: {e}"))?;
        match stream.read(&mut buf) {
            Ok(0) => return Err(format!("closed; got: {text}")),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read failed ({e}); got: {text}")),
        }
    }
}

/// The `id` attribute of the server's stream header, once the whole header arrived.
fn stream_id(text: &str) -> Option<String> {
    let start = text.find("<stream:stream")?;
    let header = &text[start..start + text[start..].find('>')?];
    let at = header.find(" id=")? + 4;
    let quote = header[at..].chars().next()?;
    let value = &header[at + 1..];
    Some(value[..value.find(quote)?].to_owned())
}

/// SHA-1 of `text` in lower-case hex, by coreutils' `sha1sum` (the text through its standard
/// input, so a secret never shows in a process list).
fn sha1_hex(text: &str) -> String {
    use std::process::Stdio;
    let mut child = Command::new("sha1sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha1sum (coreutils) runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("sha1sum reads");
    let out = child.wait_with_output().expect("sha1sum finishes");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .expect("sha1sum prints a digest")
        .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stream_id_is_read_from_either_quote_style_once_the_header_is_whole() {
        let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' from='mesh.hub.lan' id='a-1'>";
        assert_eq!(super::stream_id(header).as_deref(), Some("a-1"));
        assert_eq!(
            super::stream_id(r#"<stream:stream id="b2" from="x">"#).as_deref(),
            Some("b2")
        );
        assert_eq!(super::stream_id("<stream:stream id='half"), None);
    }

    #[test]
    fn sha1_hex_matches_a_known_digest() {
        assert_eq!(
            super::sha1_hex("abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
