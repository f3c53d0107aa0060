//! `[federation]` and `[[peer]]`: the listen address, the identity file, the hop limit, the
//! window, and each neighbour's address and key.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;

use archipel_adapters::peer::{Identity, PeerKey};

use super::super::testing::{GOOD, TempDir, problems};
use super::super::*;

/// A key made of one repeated byte: distinct bytes, distinct keys.
fn key(byte: u8) -> PeerKey {
    PeerKey::from_bytes([byte; 32])
}

/// GOOD with `[federation]` (its identity file in `dir`, plus `federation` lines), a
/// neighbour `hub-b` that listens and one `hub-c` that dials in, and `tail` after them.
fn federated(dir: &TempDir, federation: &str, tail: &str) -> String {
    format!(
        "{GOOD}\n[federation]\nidentity_file = \"{}\"\n{federation}\n\
         [[peer]]\nname = \"hub-b\"\naddress = \"192.168.1.20:4404\"\nkey = \"{}\"\n\
         [[peer]]\nname = \"hub-c\"\nkey = \"{}\"\n{tail}",
        dir.path().join("identity.key").display(),
        key(1),
        key(2)
    )
}

/// north's LongFast to both neighbours, both ways.
const TO_PEERS: &str =
    "[[route]]\nchannel = \"LongFast\"\nfrom = [\"north\"]\nto = [\"hub-b\", \"hub-c\"]\n";

#[test]
fn neighbours_get_the_defaults_and_are_endpoints_routes_can_name() {
    let dir = TempDir::new("peers");
    let c = Config::from_toml(&federated(&dir, "listen = \"0.0.0.0:4404\"", TO_PEERS)).unwrap();
    assert!(c.federated());
    let f = &c.federation;
    assert_eq!(f.listen_addr(), Some("0.0.0.0:4404".parse().unwrap()));
    assert_eq!((f.max_hops, f.window_kib, f.dead_after_secs), (4, 256, 45));
    assert_eq!(c.identity_path(), dir.path().join("identity.key"));
    assert_eq!(f.own_key, None, "no identity file yet: made on first start");
    let b = c.peer("hub-b").unwrap();
    assert_eq!(b.public_key(), Some(key(1)));
    assert_eq!(b.socket_addr(), Some("192.168.1.20:4404".parse().unwrap()));
    let cc = c.peer("hub-c").unwrap();
    assert_eq!((cc.public_key(), cc.socket_addr()), (Some(key(2)), None));
    assert_eq!(c.endpoint_kind("hub-b"), Some(EndpointKind::Peer));
    let kinds: Vec<_> = c.endpoints().map(|e| (e.name(), e.kind())).collect();
    assert_eq!(kinds.last(), Some(&("hub-c", EndpointKind::Peer)));
    assert_eq!(EndpointKind::Peer.to_string(), "peer");

    let summary = c.summary();
    assert!(
        summary.contains("federation listens on 0.0.0.0:4404 (every interface)"),
        "{summary}"
    );
    assert!(summary.contains("made on first start"), "{summary}");
    assert!(
        summary.contains(&format!(
            "peer hub-b at 192.168.1.20:4404, fingerprint {}",
            key(1).fingerprint()
        )),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "peer hub-c dials in, fingerprint {}",
            key(2).fingerprint()
        )),
        "{summary}"
    );
    assert!(summary.contains("north#LongFast <-> hub-b+hub-c#LongFast"));
}

#[test]
fn the_window_and_silence_become_the_session_settings() {
    let dir = TempDir::new("session");
    let c = Config::from_toml(&federated(&dir, "dead_after_secs = 90", "")).unwrap();
    let s = c.peer_session(c.peer("hub-b").unwrap());
    assert_eq!((s.window_bytes, s.window_items), (256 * 1024, 1024));
    assert_eq!(s.dead_after, std::time::Duration::from_secs(90));
    assert_eq!(s.keepalive, std::time::Duration::from_secs(30));
    let thin =
        federated(&dir, "", "").replace("name = \"hub-c\"\n", "name = \"hub-c\"\nwindow_kib = 8\n");
    let c = Config::from_toml(&thin).unwrap();
    let s = c.peer_session(c.peer("hub-c").unwrap());
    assert_eq!((s.window_bytes, s.window_items), (8 * 1024, 128));
    assert!(c.summary().contains(", window 8 KiB"));
    let s = c.peer_session(c.peer("hub-b").unwrap());
    assert_eq!(s.window_bytes, 256 * 1024, "the others keep [federation]'s");
}

#[test]
fn a_listen_address_is_an_ip_literal_with_a_port() {
    let dir = TempDir::new("listen");
    for (listen, expected) in [
        ("hub.lan:4404", "uses no DNS"),
        ("0.0.0.0", "has no port"),
        ("0.0.0.0:0", "is not a TCP port"),
        ("224.0.0.1:4404", "multicast"),
        ("tcp://0.0.0.0:4404", "is a URL"),
    ] {
        let e = problems(&federated(&dir, &format!("listen = \"{listen}\""), ""));
        assert!(
            e.contains("federation.listen") && e.contains(expected),
            "{listen}: {e}"
        );
    }
    for listen in ["127.0.0.1:4404", "[::]:4404", "[::1]:9", "10.0.0.1:65535"] {
        let c = Config::from_toml(&federated(&dir, &format!("listen = \"{listen}\""), ""));
        assert!(c.is_ok(), "{listen}: {:?}", c.err());
    }
    let c = Config::from_toml(&federated(&dir, "listen = \"127.0.0.1:4404\"", "")).unwrap();
    assert!(c.summary().contains("(this machine only)"));
}

#[test]
fn a_neighbour_address_can_be_dialled() {
    let dir = TempDir::new("address");
    for (address, expected) in [
        ("hub-b.lan:4404", "uses no DNS"),
        ("192.168.1.20", "has no port"),
        ("0.0.0.0:4404", "cannot be dialled"),
        ("[::]:4404", "cannot be dialled"),
        ("255.255.255.255:4404", "broadcast"),
        ("fe80::1:4404", "brackets"),
    ] {
        let text = federated(&dir, "", "").replace("192.168.1.20:4404", address);
        let e = problems(&text);
        assert!(
            e.contains("peer[0] (hub-b).address") && e.contains(expected),
            "{address}: {e}"
        );
    }
    let text = federated(&dir, "", "").replace(
        "name = \"hub-c\"\n",
        "name = \"hub-c\"\naddress = \"192.168.1.20:4404\"\n",
    );
    let e = problems(&text);
    assert!(
        e.contains("peer[1] (hub-c).address") && e.contains("also the address of peer[0] (hub-b)"),
        "{e}"
    );
}

#[test]
fn a_mistyped_key_is_refused_naming_the_section_and_what_to_check() {
    let dir = TempDir::new("keys");
    let good = key(1).to_string();
    let mut checksum = good.clone().into_bytes();
    checksum[20] = if checksum[20] == b'a' { b'b' } else { b'a' };
    let checksum = String::from_utf8(checksum).unwrap();
    let mut zero = good.clone();
    zero.replace_range(15..16, "0");
    let mut spaced = good.clone();
    spaced.insert(20, ' ');
    for (text, expected) in [
        (checksum.as_str(), "check the key for a mistyped character"),
        (&good[9..], "does not start with `archipel:`"),
        (
            &good[..good.len() - 3],
            "has 53 characters after `archipel:`",
        ),
        (zero.as_str(), "has `0` at character 16"),
        (spaced.as_str(), "has a space at character 21"),
        ("", "is empty"),
    ] {
        let config = federated(&dir, "", "").replace(&good, text);
        let e = problems(&config);
        assert!(
            e.contains("peer[0] (hub-b).key: ") && e.contains(expected),
            "{text:?}: {e}"
        );
    }
    let e = problems(&federated(&dir, "", "").replace(&good, &"a".repeat(5000)));
    assert!(e.contains("5000 bytes long") && e.len() < 1000, "{e}");
    // Copied in capitals from paper: the same key.
    let c = Config::from_toml(&federated(&dir, "", "").replace(&good, &good.to_uppercase()));
    assert_eq!(c.unwrap().peer("hub-b").unwrap().public_key(), Some(key(1)));
}

#[test]
fn two_sections_with_one_key_are_refused() {
    let dir = TempDir::new("twice");
    let text = federated(&dir, "", "").replace(&key(2).to_string(), &key(1).to_string());
    let e = problems(&text);
    assert!(
        e.contains("peer[1] (hub-c).key: is also the key of peer[0] (hub-b)")
            && e.contains(&key(1).fingerprint().to_string()),
        "{e}"
    );
}

#[test]
fn a_neighbour_with_our_own_key_is_refused() {
    let dir = TempDir::new("own");
    let path = dir.path().join("identity.key");
    let own = Identity::load_or_create(&path).unwrap().public_key();
    let text = federated(&dir, "", "").replace(&key(2).to_string(), &own.to_string());
    let e = problems(&text);
    assert!(
        e.contains("peer[1] (hub-c).key: is this gateway's own key")
            && e.contains(&own.fingerprint().to_string()),
        "{e}"
    );
    let c = Config::from_toml(&federated(&dir, "", "")).unwrap();
    assert_eq!(c.federation.own_key, Some(own));
    assert!(
        c.summary()
            .contains(&format!("(fingerprint {})", own.fingerprint()))
    );
}

#[test]
fn an_identity_file_that_cannot_serve_is_found_when_loading() {
    let dir = TempDir::new("idfile");
    let path = dir.path().join("identity.key");
    Identity::load_or_create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = problems(&federated(&dir, "", ""));
    assert!(
        e.contains("federation.identity_file") && e.contains("chmod 600"),
        "{e}"
    );
    // Federation unused: the file is not read.
    let text = format!(
        "{GOOD}\n[federation]\nidentity_file = \"{}\"\n",
        path.display()
    );
    assert!(Config::from_toml(&text).is_ok());

    let missing = dir.path().join("absent").join("identity.key");
    let text = federated(&dir, "", "")
        .replace(&path.display().to_string(), &missing.display().to_string());
    let e = problems(&text);
    assert!(e.contains("does not exist") && e.contains("absent"), "{e}");
    let text = federated(&dir, "", "").replace(&path.display().to_string(), "archipel.sqlite");
    assert!(problems(&text).contains("is the store file"));
    let text = federated(&dir, "", "").replace(&path.display().to_string(), " ");
    assert!(problems(&text).contains("federation.identity_file: is empty"));
}

#[test]
fn hops_window_and_silence_are_bounded() {
    let dir = TempDir::new("bounds");
    for (line, expected) in [
        ("max_hops = 0", "federation.max_hops: 0: give how many hubs"),
        ("max_hops = 16", "1 to 15"),
        (
            "window_kib = 1",
            "federation.window_kib: 1: give 2 to 65536 KiB",
        ),
        ("window_kib = 70000", "about 8 on a 9,600 bit/s link"),
        ("dead_after_secs = 2", "federation.dead_after_secs: 2"),
        ("dead_after_secs = 4000", "3 to 3600 seconds"),
    ] {
        let e = problems(&federated(&dir, line, ""));
        assert!(e.contains(expected), "{line}: {e}");
    }
    assert!(Config::from_toml(&federated(&dir, "max_hops = 15\nwindow_kib = 2", "")).is_ok());
    let text =
        federated(&dir, "", "").replace("name = \"hub-c\"\n", "name = \"hub-c\"\nwindow_kib = 0\n");
    assert!(problems(&text).contains("peer[1] (hub-c).window_kib: 0"));
}

#[test]
fn peer_names_are_unique_across_every_kind() {
    let dir = TempDir::new("names");
    let e = problems(&federated(&dir, "", "").replace("\"hub-c\"", "\"north\""));
    assert!(
        e.contains("peer[1] (north).name") && e.contains("XMPP servers and peers"),
        "{e}"
    );
    let e = problems(&federated(&dir, "", "").replace("\"hub-c\"", "\"hub c\""));
    assert!(
        e.contains("peer[1].name") && e.contains("whitespace"),
        "{e}"
    );
}

#[test]
fn a_route_to_a_neighbour_names_a_channel_the_gateway_knows() {
    let dir = TempDir::new("route");
    let route = "[[route]]\nchannel = \"Secret\"\nfrom = [\"hub-b\"]\nto = [\"hub-c\"]\n";
    let e = problems(&federated(&dir, "", route));
    assert!(
        e.contains("route[1].from") && e.contains("peer `hub-b` has no key for channel `Secret`"),
        "{e}"
    );
    // A hub with no radio of its own, relaying between two neighbours on a [[channel]].
    let relay = format!(
        "[gateway]\nname = \"relay\"\nid = \"!a7c40002\"\n[federation]\nidentity_file = \"{}\"\n\
         [[peer]]\nname = \"hub-b\"\nkey = \"{}\"\n[[peer]]\nname = \"hub-c\"\nkey = \"{}\"\n\
         [[channel]]\nname = \"Secret\"\npsk = \"AQ==\"\n{route}",
        dir.path().join("identity.key").display(),
        key(1),
        key(2)
    );
    let c = Config::from_toml(&relay).unwrap();
    assert_eq!(c.endpoints().count(), 2);
    assert!(
        c.summary()
            .contains("federation does not listen (dials only)")
    );
}

#[test]
fn a_listener_without_neighbours_says_it_refuses_everyone() {
    let dir = TempDir::new("alone");
    let text = format!(
        "{GOOD}\n[federation]\nlisten = \"127.0.0.1:4404\"\nidentity_file = \"{}\"\n",
        dir.path().join("identity.key").display()
    );
    let c = Config::from_toml(&text).unwrap();
    assert!(c.federated());
    assert!(
        c.summary()
            .contains("no [[peer]]: every hub that connects is refused")
    );
    assert!(!Config::from_toml(GOOD).unwrap().federated());
    assert!(
        !Config::from_toml(GOOD)
            .unwrap()
            .summary()
            .contains("federation")
    );
}

#[test]
fn federation_keys_come_from_the_environment_peers_do_not() {
    let dir = TempDir::new("fedenv");
    let path = dir.write("gateway.toml", &federated(&dir, "", ""));
    let env = |list: &[(&str, &str)]| -> Vec<(OsString, OsString)> {
        list.iter().map(|(k, v)| (k.into(), v.into())).collect()
    };
    let c = Config::load_with_env(
        &path,
        env(&[("ARCHIPEL_FEDERATION__LISTEN", "127.0.0.1:4404")]),
    )
    .unwrap();
    assert_eq!(c.federation.listen.as_deref(), Some("127.0.0.1:4404"));
    let e = Config::load_with_env(&path, env(&[("ARCHIPEL_FEDERATION__LISTEN", "hub:1")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ARCHIPEL_FEDERATION__LISTEN (environment): federation.listen"),
        "{e}"
    );
    let e = Config::load_with_env(&path, env(&[("ARCHIPEL_PEER__0__KEY", "x")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[[peer]] sections are a list"), "{e}");
}

#[test]
fn the_identity_path_is_read_from_a_config_that_does_not_validate() {
    let dir = TempDir::new("idpath");
    let broken = federated(&dir, "max_hops = 99", "").replace(&key(1).to_string(), "nonsense");
    let path = dir.write("gateway.toml", &broken);
    assert!(Config::load_with_env(&path, Vec::new()).is_err());
    assert_eq!(
        federation::identity_path_of(&path, Vec::new()).unwrap(),
        dir.path().join("identity.key")
    );
    let beside = dir.write(
        "store.toml",
        "[gateway]\nname = 1\n[store]\npath = \"/var/lib/archipel/queue.sqlite\"\n",
    );
    assert_eq!(
        federation::identity_path_of(&beside, Vec::new()).unwrap(),
        std::path::PathBuf::from("/var/lib/archipel/identity.key")
    );
    let env = vec![(
        OsString::from("ARCHIPEL_STORE__PATH"),
        OsString::from("/data/q.sqlite"),
    )];
    assert_eq!(
        federation::identity_path_of(&beside, env).unwrap(),
        std::path::PathBuf::from("/data/identity.key")
    );
    let bare = dir.write("bare.toml", "");
    assert_eq!(
        federation::identity_path_of(&bare, Vec::new()).unwrap(),
        std::path::PathBuf::from("identity.key")
    );
    assert!(matches!(
        federation::identity_path_of(&dir.path().join("absent.toml"), Vec::new()),
        Err(ConfigError::NotFound { .. })
    ));
}

#[test]
fn the_example_config_is_valid_with_its_neighbours() {
    let dir = TempDir::new("example-peers");
    let identity = dir.path().join("identity.key");
    let text = super::example(&[
        "# [federation]",
        "# [[peer]]",
        "# [[route]]   # to the neighbouring hubs",
    ])
    .replace(
        "/var/lib/archipel/identity.key",
        &identity.display().to_string(),
    );
    let c = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let f = &c.federation;
    assert_eq!(f.listen.as_deref(), Some("0.0.0.0:4404"));
    assert_eq!(
        (f.max_hops, f.window_kib, f.dead_after_secs),
        (
            DEFAULT_MAX_HOPS,
            DEFAULT_WINDOW_KIB,
            DEFAULT_DEAD_AFTER_SECS
        )
    );
    assert_eq!(c.identity_path(), identity);
    let b = c.peer("hub-b").expect("the hub-b block is on");
    assert!(b.socket_addr().is_some() && b.public_key().is_some());
    let hub_c = c.peer("hub-c").expect("the hub-c block is on");
    assert_eq!((hub_c.socket_addr(), hub_c.window_kib), (None, Some(8)));
    assert_eq!(c.routes.len(), 4);
    let summary = c.summary();
    assert!(
        summary.contains("route hub-b#LongFast <-> hub-c#LongFast\n"),
        "no hop limit between hubs: {summary}"
    );
}
