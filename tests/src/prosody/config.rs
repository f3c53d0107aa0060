//! The per-test Prosody config: one Lua file naming the test's own directory and ports, the
//! VirtualHost, the MUC component with `mod_muc_mam`, and the XEP-0114 component with its secret.

use std::path::Path;

use super::ProsodyBuilder;

/// The config for `settings` with its files under `dir`, listening on `c2s` and `component`.
pub(super) fn render(settings: &ProsodyBuilder, dir: &Path, c2s: u16, component: u16) -> String {
    let s = settings;
    let q = |p: &Path| lua_string(&p.display().to_string());
    let mut lines = vec![
            "-- Written by the archipel-e2e test harness for one test.".to_owned(),
            // See the module doc: mod_posix handles SIGTERM; neither it nor prosodyctl may
            // switch users or refuse to run as root.
            "run_as_root = true".to_owned(),
            format!("data_path = {}", q(&dir.join("data"))),
            format!("pidfile = {}", q(&dir.join("prosody.pid"))),
            // Empty: no TLS. Named so Prosody does not complain about a missing certs dir.
            format!("certificates = {}", q(&dir.join("certs"))),
            r#"interfaces = { "127.0.0.1" }; c2s_interfaces = { "127.0.0.1" }; component_interfaces = { "127.0.0.1" }"#.to_owned(),
            format!("c2s_ports = {{ {} }}; component_ports = {{ {} }}", c2s, component),
            "c2s_direct_tls_ports = {}; legacy_ssl_ports = {}; http_ports = {}; https_ports = {}".to_owned(),
            // No "tls": without a certificate STARTTLS would be offered and then fail.
            r#"modules_enabled = { "disco"; "roster"; "saslauth"; "ping"; "smacks"; "carbons"; "posix" }"#.to_owned(),
            r#"modules_disabled = { "s2s" }"#.to_owned(),
            r#"authentication = "internal_hashed"; storage = "internal""#.to_owned(),
            // The room archive's quota (internal storage: 10000 per room by default, then it
            // truncates): the backlog benchmarks put more than that through one room.
            "storage_archive_item_limit = 1000000".to_owned(),
            format!(
                r#"log = {{ {{ levels = {{ min = "{}" }}; to = "file"; filename = "/dev/stderr"; timestamps = "%H:%M:%S" }} }}"#,
                if s.debug { "debug" } else { "info" }
            ),
            // Test only: plaintext on loopback.
            "c2s_require_encryption = false; allow_unencrypted_plain_auth = true".to_owned(),
        ];
    if !s.admins.is_empty() {
        let admins: Vec<String> = s.admins.iter().map(|a| lua_string(a)).collect();
        lines.push(format!("admins = {{ {} }}", admins.join("; ")));
    }
    lines.extend(s.global.iter().cloned());
    lines.push(format!("VirtualHost {}", lua_string(&s.vhost)));
    lines.push(format!("Component {} \"muc\"", lua_string(&s.muc)));
    lines.extend(
        [
            r#"modules_enabled = { "muc_mam" }"#,
            "restrict_room_creation = false",
            // Required: with the default (true) a room created by a join stays locked
            // until its owner submits a configuration.
            "muc_room_locking = false",
            "muc_room_default_persistent = true",
        ]
        .map(|l| format!("  {l}")),
    );
    lines.extend(s.muc_options.iter().map(|l| format!("  {l}")));
    lines.push(format!("Component {}", lua_string(&s.component)));
    lines.push(format!("  component_secret = {}", lua_string(&s.secret)));
    lines.join("\n") + "\n"
}

/// `s` as a double-quoted Lua string literal, whatever it holds.
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            // Control bytes and UTF-8 alike, byte by byte: Lua strings are bytes.
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prosody::Prosody;

    #[test]
    fn the_config_has_the_options_the_tests_rely_on_and_escapes_what_it_is_given() {
        let settings = Prosody::builder("config")
            .secret("a\"b")
            .admin("carol@hub.lan")
            .muc_option("muc_room_default_history_length = 5");
        let text = render(&settings, Path::new("/tmp/x"), 5222, 5347);
        for line in [
            "c2s_ports = { 5222 }; component_ports = { 5347 }",
            "data_path = \"/tmp/x/data\"",
            "VirtualHost \"hub.lan\"",
            "Component \"rooms.hub.lan\" \"muc\"",
            "  muc_room_locking = false",
            "  muc_room_default_persistent = true",
            "  muc_room_default_history_length = 5",
            "Component \"mesh.hub.lan\"",
            "  component_secret = \"a\\\"b\"",
            "admins = { \"carol@hub.lan\" }",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn lua_strings_escape_quotes_backslashes_and_control_bytes() {
        assert_eq!(lua_string("hub.lan"), r#""hub.lan""#);
        assert_eq!(lua_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(lua_string("x\ny"), r#""x\010y""#);
        assert_eq!(lua_string("é"), r#""\195\169""#);
    }
}
