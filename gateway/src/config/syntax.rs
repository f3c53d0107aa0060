//! The shapes of small values every section shares: endpoint names, one-line labels and
//! `HOST:PORT` addresses. Each check returns why a value is wrong (the caller names the key),
//! so the same wording serves a radio's `tcp` and a broker's `address`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest endpoint name: it appears in logs, routes and the status page.
const MAX_NAME: usize = 64;

/// Longest gateway name.
const MAX_LABEL: usize = 64;

/// Why `name` cannot name an endpoint (a radio, a broker...), if it cannot.
pub fn endpoint_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty: give it a short name, such as `north`".into());
    }
    if name.chars().any(char::is_control) {
        return Some(format!(
            "`{}` contains control characters: use letters, digits, `-` or `_`",
            name.escape_debug()
        ));
    }
    if name.chars().any(char::is_whitespace) {
        return Some(format!(
            "`{name}` contains whitespace: routes list names separated by commas, so use `-` or `_`, such as `{}`",
            name.split_whitespace().collect::<Vec<_>>().join("-")
        ));
    }
    if name.len() > MAX_NAME {
        return Some(format!(
            "is {} bytes long: keep it to {MAX_NAME}",
            name.len()
        ));
    }
    None
}

/// Why `text` is not a one-line label for logs and the status page, if it is not.
pub fn one_line(text: &str) -> Option<String> {
    if text.trim().is_empty() {
        return Some("is empty: give a short name for logs and the status page".into());
    }
    if text.contains(['\n', '\r']) {
        return Some(format!(
            "`{}` is on several lines: it starts every log line, so keep it on one",
            text.escape_debug()
        ));
    }
    if text.chars().any(char::is_control) {
        return Some(format!(
            "`{}` contains control characters (such as terminal escapes): use plain text",
            text.escape_debug()
        ));
    }
    if text.chars().count() > MAX_LABEL {
        return Some(format!(
            "is {} characters long: keep it to {MAX_LABEL}",
            text.chars().count()
        ));
    }
    None
}

/// A checked `HOST:PORT`, the host lower-cased so that two spellings of one address compare
/// equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host name or IP literal (IPv6 without its brackets).
    pub host: String,
    /// TCP port, 1 to 65535.
    pub port: u16,
}

/// Checks a TCP address as `tokio::net::TcpStream::connect` will take it: `host:port`,
/// `a.b.c.d:port` or `[v6]:port`. `usual_port` goes into the suggestions (4403 for a radio,
/// 1883 for a broker).
pub fn host_port(text: &str, usual_port: u16) -> Result<HostPort, String> {
    if text.trim().is_empty() {
        return Err(format!(
            "is empty: write HOST:PORT, such as `192.168.1.20:{usual_port}`"
        ));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{}` contains spaces or control characters: write HOST:PORT, such as `192.168.1.20:{usual_port}`",
            text.escape_debug()
        ));
    }
    if let Some((scheme, rest)) = text.split_once("://") {
        return Err(format!(
            "`{text}` is a URL ({scheme}://): write only HOST:PORT, `{}`",
            rest.trim_end_matches('/')
        ));
    }
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let Some((v6, rest)) = inner.split_once(']') else {
            return Err(format!(
                "`{text}` opens `[` without closing it: write `[::1]:{usual_port}`"
            ));
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "`{v6}` in brackets is not an IPv6 address: write `[::1]:{usual_port}`, or a host name without brackets"
            ));
        }
        let Some(port) = rest.strip_prefix(':') else {
            return Err(format!("`{text}` has no port: write `[{v6}]:{usual_port}`"));
        };
        (v6.to_owned(), port)
    } else {
        if text.parse::<Ipv6Addr>().is_ok() {
            return Err(format!(
                "`{text}` is an IPv6 address without a port: an IPv6 address goes in brackets, `[{text}]:{usual_port}`"
            ));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("`{text}` has no port: write `{text}:{usual_port}`"));
        };
        if host.contains(':') {
            return Err(format!(
                "`{text}` has more than one `:`: an IPv6 address goes in brackets, such as `[{host}]:{port}`"
            ));
        }
        if host.is_empty() {
            return Err(format!(
                "`{text}` has no host: write `127.0.0.1:{port}` for this machine, or the device's address"
            ));
        }
        if let Some(why) = host_name(host) {
            return Err(format!("`{text}`: {why}"));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => {
            return Err(format!(
                "`{text}`: port `{port}` is not a TCP port: give a number from 1 to 65535 (usually {usual_port})"
            ));
        }
    };
    Ok(HostPort { host, port })
}

/// Why `host` is neither an IPv4 literal nor a DNS name, if it is neither.
fn host_name(host: &str) -> Option<String> {
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return match host.parse::<Ipv4Addr>() {
            Ok(_) => None,
            Err(_) => Some(format!("`{host}` is not an IPv4 address")),
        };
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
        return Some(format!(
            "`{host}` is not a host name: letters, digits and `-` between dots, or an IP address"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        host_port(text, 4403).unwrap_err()
    }

    #[test]
    fn addresses_that_can_connect_are_accepted() {
        for (text, host, port) in [
            ("127.0.0.1:4403", "127.0.0.1", 4403),
            ("Radio.LAN:4403", "radio.lan", 4403),
            ("[::1]:4403", "::1", 4403),
            ("[fe80::1]:1", "fe80::1", 1),
            ("broker:65535", "broker", 65535),
            ("my_host.local.:1883", "my_host.local.", 1883),
        ] {
            assert_eq!(
                host_port(text, 4403),
                Ok(HostPort {
                    host: host.into(),
                    port
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn ports_that_do_not_exist_are_refused() {
        for port in ["99999", "-1", "abc", "0", "+80", "65536", ""] {
            let e = refused(&format!("radio.lan:{port}"));
            assert!(
                e.contains("is not a TCP port") && e.contains("1 to 65535"),
                "{port}: {e}"
            );
        }
    }

    #[test]
    fn urls_bare_ipv6_and_empty_hosts_get_the_form_to_write() {
        assert!(
            refused("tcp://radio.lan:4403/").contains("write only HOST:PORT, `radio.lan:4403`")
        );
        assert!(refused("::1").contains("`[::1]:4403`"));
        assert!(refused("fe80::1:4403").contains("brackets"));
        assert!(refused("[::1]").contains("has no port"));
        assert!(refused("[nope]:4403").contains("not an IPv6 address"));
        assert!(refused(":4403").contains("has no host"));
        assert!(refused("").contains("is empty"));
        assert!(refused("radio.lan").contains("write `radio.lan:4403`"));
        assert!(refused("radio lan:4403").contains("spaces"));
        assert!(refused("300.1.1.1:4403").contains("not an IPv4 address"));
        assert!(refused("-radio:4403").contains("not a host name"));
    }

    #[test]
    fn names_and_labels_refuse_what_would_break_a_log_line() {
        assert!(endpoint_name("north-1").is_none());
        assert!(endpoint_name("").unwrap().contains("is empty"));
        assert!(
            endpoint_name("north radio")
                .unwrap()
                .contains("`north-radio`")
        );
        assert!(endpoint_name("no\trth").unwrap().contains("control"));
        assert!(endpoint_name(&"x".repeat(65)).unwrap().contains("65 bytes"));
        assert!(one_line("Community hall").is_none());
        assert!(one_line("  ").unwrap().contains("is empty"));
        assert!(
            one_line("hall\nrelayed 1 fake")
                .unwrap()
                .contains("several lines")
        );
        assert!(one_line("hall\u{1b}[31m").unwrap().contains("control"));
    }
}
