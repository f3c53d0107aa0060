//! `[[xmpp]]`: the server, the component secret, the rooms and the per-user rate.

use std::ffi::OsString;

use super::super::testing::{GOOD, TempDir, problems};
use super::super::*;

/// GOOD plus one XMPP section (inline secret) with `extra` lines, and `tail` after it.
fn with_xmpp(extra: &str, tail: &str) -> String {
    format!(
        "{GOOD}\n[[xmpp]]\nname = \"hub\"\nserver = \"127.0.0.1:5347\"\ndomain = \"mesh.hub.lan\"\n\
         rooms = \"rooms.hub.lan\"\n{extra}\n{tail}"
    )
}

/// An inline secret, for the sections that are not about the secret.
const SECRET: &str = "secret = \"s3cret\"";

/// north's LongFast and south's MediumFast to the XMPP server, both ways.
const TO_XMPP: &str = "[[route]]\nchannel = \"LongFast\"\nfrom = [\"north\"]\nto = [\"hub\"]\n\
    [[route]]\nchannel = \"MediumFast\"\nfrom = [\"south\"]\nto = [\"hub\"]\n";

#[test]
fn a_server_gets_the_defaults_and_a_room_per_routed_channel() {
    let c = Config::from_toml(&with_xmpp(SECRET, TO_XMPP)).unwrap();
    let x = c.xmpp_section("hub").unwrap();
    assert_eq!(c.endpoint_kind("hub"), Some(EndpointKind::Xmpp));
    assert_eq!(x.bridge_nick, "archipel");
    assert_eq!((x.rate_per_user, x.burst_per_user), (6.0, 3));
    assert_eq!(
        x.rate(),
        crate::ratelimit::Rate {
            per_minute: 6.0,
            burst: 3.0
        }
    );
    assert_eq!(x.server_addr(), Some("127.0.0.1:5347".parse().unwrap()));
    assert_eq!(x.secret.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(
        x.bridged().collect::<Vec<_>>(),
        [
            ("LongFast", "longfast".to_owned()),
            ("MediumFast", "mediumfast".to_owned())
        ]
    );
    assert_eq!(x.room_of("LongFast"), "longfast");
    assert_eq!(x.channel_of_room("longfast"), Some("LongFast"));
    assert_eq!(
        x.channel_of_room("ops"),
        None,
        "ops is a channel, but no route takes it to the server"
    );
    assert_eq!(x.send_as("LongFast"), SendAs::Node);
    let s = c.summary();
    assert!(
        s.contains("xmpp hub at 127.0.0.1:5347: component mesh.hub.lan (secret inline), bridge nick archipel; LongFast in longfast@rooms.hub.lan (each user as a node), MediumFast in mediumfast@rooms.hub.lan (each user as a node); at most 6 texts a minute per user, bursts of 3"),
        "{s}"
    );
    assert!(!s.contains("s3cret") && !format!("{c:?}").contains("s3cret"));
}

#[test]
fn room_entries_rename_rooms_and_choose_who_speaks() {
    let rooms = "bridge_nick = \"Mesh bridge\"\nrate_per_user = 2.5\nburst_per_user = 1\n\
        [[xmpp.room]]\nchannel = \"LongFast\"\nroom = \"mesh-longfast\"\n\
        [[xmpp.room]]\nchannel = \"MediumFast\"\nsend_as = \"gateway\"\n";
    let c = Config::from_toml(&with_xmpp(&format!("{SECRET}\n{rooms}"), TO_XMPP)).unwrap();
    let x = &c.xmpp[0];
    assert_eq!(x.room_of("LongFast"), "mesh-longfast");
    assert_eq!(x.channel_of_room("mesh-longfast"), Some("LongFast"));
    assert_eq!(x.channel_of_room("longfast"), None, "renamed away");
    assert_eq!(x.room_of("MediumFast"), "mediumfast");
    assert_eq!(x.send_as("MediumFast"), SendAs::Gateway);
    assert_eq!(x.send_as("LongFast"), SendAs::Node);
    assert_eq!(x.rate().per_minute, 2.5);
    assert!(c.summary().contains(
        "bridge nick Mesh bridge; LongFast in mesh-longfast@rooms.hub.lan (each user as a node), MediumFast in mediumfast@rooms.hub.lan (as the gateway, [nick] prefixed)"
    ));
    let e = problems(&with_xmpp(
        &format!("{SECRET}\nsend_as = \"radio\""),
        TO_XMPP,
    ));
    assert!(e.contains("send_as"), "{e}");
    let e = problems(&with_xmpp(
        &format!("{SECRET}\n[[xmpp.room]]\nchannel = \"LongFast\"\nsend_as = \"radio\""),
        TO_XMPP,
    ));
    assert!(e.contains("radio") && e.contains("node"), "{e}");
}

#[test]
fn the_secret_comes_from_its_file_trimmed_or_inline_but_not_both() {
    let dir = TempDir::new("xmpp-secret");
    let file = dir.write("component.secret", "  hunter2-component \n");
    let from_file = format!("secret_file = \"{}\"", file.display());
    let c = Config::from_toml(&with_xmpp(&from_file, TO_XMPP)).unwrap();
    let x = &c.xmpp[0];
    assert_eq!(x.secret.as_ref().unwrap().expose(), "hunter2-component");
    let shown = format!("{c:?} {c:#?} {}", c.summary());
    assert!(
        !shown.contains("hunter2") && shown.contains("[redacted]"),
        "{shown}"
    );
    assert!(c.summary().contains("(secret from "), "{}", c.summary());

    let e = problems(&with_xmpp(&format!("{from_file}\n{SECRET}"), TO_XMPP));
    assert!(
        e.contains("xmpp[0] (hub).secret: is set together with secret_file: keep one"),
        "{e}"
    );
    let e = problems(&with_xmpp("", TO_XMPP));
    assert!(
        e.contains("xmpp[0] (hub).secret_file: is missing") && e.contains("component_secret"),
        "{e}"
    );
    let e = problems(&with_xmpp(
        "secret_file = \"/nonexistent/component.secret\"",
        TO_XMPP,
    ));
    assert!(
        e.contains("xmpp[0] (hub).secret_file: cannot read /nonexistent/component.secret"),
        "{e}"
    );
    let blank = dir.write("blank", " \n");
    let e = problems(&with_xmpp(
        &format!("secret_file = \"{}\"", blank.display()),
        TO_XMPP,
    ));
    assert!(
        e.contains("xmpp[0] (hub).secret_file: ") && e.contains("is empty"),
        "{e}"
    );
    let e = problems(&with_xmpp("secret = \"two\\nlines\"", TO_XMPP));
    assert!(
        e.contains("xmpp[0] (hub).secret: give the component secret") && !e.contains("lines"),
        "{e}"
    );
}

#[test]
fn the_server_is_an_ip_address_and_a_port() {
    for (server, says) in [
        (
            "prosody.lan:5347",
            "`prosody.lan:5347` names a host: hubs have no DNS, so give the server's IP address",
        ),
        ("127.0.0.1", "has no port: write `127.0.0.1:5347`"),
        ("127.0.0.1:0", "is not a TCP port"),
        ("xmpp://127.0.0.1:5347", "is a URL"),
    ] {
        let e = problems(&with_xmpp(SECRET, TO_XMPP).replace("127.0.0.1:5347", server));
        assert!(
            e.contains("xmpp[0] (hub).server: ") && e.contains(says),
            "{server}: {e}"
        );
    }
    let c = Config::from_toml(&with_xmpp(SECRET, TO_XMPP).replace("127.0.0.1:5347", "[::1]:5347"))
        .unwrap();
    assert_eq!(c.xmpp[0].server_addr(), Some("[::1]:5347".parse().unwrap()));
}

#[test]
fn domains_are_lower_case_names_and_the_rooms_are_another_one() {
    for (from, to, says) in [
        (
            "mesh.hub.lan",
            "Mesh.Hub.lan",
            "xmpp[0] (hub).domain: `Mesh.Hub.lan` has capitals: servers compare domains in lower case; write `mesh.hub.lan`",
        ),
        (
            "mesh.hub.lan",
            "10.0.0.1",
            "xmpp[0] (hub).domain: `10.0.0.1` is an IP address",
        ),
        (
            "mesh.hub.lan",
            "mesh..lan",
            "xmpp[0] (hub).domain: `mesh..lan` is not a domain",
        ),
        (
            "mesh.hub.lan",
            "mesh hub",
            "xmpp[0] (hub).domain: `mesh hub` is not a domain",
        ),
        (
            "rooms.hub.lan",
            "",
            "xmpp[0] (hub).rooms: is empty: give a domain, such as `rooms.hub.lan`",
        ),
        (
            "rooms.hub.lan",
            "mesh.hub.lan",
            "xmpp[0] (hub).rooms: `mesh.hub.lan` is also the component's domain",
        ),
    ] {
        let e = problems(
            &with_xmpp(SECRET, TO_XMPP).replace(&format!("\"{from}\"\n"), &format!("\"{to}\"\n")),
        );
        assert!(e.contains(says), "{to}: {e}");
    }
}

#[test]
fn bad_nicks_rates_and_bursts_are_named() {
    for (extra, says) in [
        ("bridge_nick = \"\"", "xmpp[0] (hub).bridge_nick: is empty"),
        ("bridge_nick = \" archipel\"", "starts or ends with spaces"),
        ("bridge_nick = \"a\\u0007b\"", "control characters"),
        (
            "rate_per_user = 0",
            "xmpp[0] (hub).rate_per_user: 0: give texts per minute",
        ),
        ("rate_per_user = nan", "xmpp[0] (hub).rate_per_user: NaN"),
        (
            "rate_per_user = 1e9",
            "xmpp[0] (hub).rate_per_user: 1000000000",
        ),
        (
            "burst_per_user = 0",
            "xmpp[0] (hub).burst_per_user: 0: give 1 to 1000 (default 3)",
        ),
        (
            "burst_per_user = 5000",
            "xmpp[0] (hub).burst_per_user: 5000",
        ),
    ] {
        let text = with_xmpp(&format!("{SECRET}\n{extra}"), TO_XMPP);
        let e = problems(&text);
        assert!(e.contains(says), "{extra}: {e}");
    }
    let e = problems(
        &with_xmpp(SECRET, TO_XMPP)
            .replace("name = \"hub\"", "name = \"two words\"")
            .replace("[\"hub\"]", "[\"two words\"]"),
    );
    assert!(
        e.contains("xmpp[0].name: `two words` contains whitespace"),
        "{e}"
    );
}

#[test]
fn room_entries_must_be_routed_unique_and_valid_jid_local_parts() {
    let entry = |body: &str| format!("{SECRET}\n[[xmpp.room]]\n{body}\n");
    let e = problems(&with_xmpp(&entry("channel = \"ops\""), TO_XMPP));
    assert!(
        e.contains("xmpp[0] (hub).room[0] (ops): no route takes channel `ops` to or from `hub`")
            && e.contains("remove this [[xmpp.room]]"),
        "{e}"
    );
    for (room, says) in [
        ("Long Fast", "contains a space"),
        ("long@fast", "contains `@`"),
        (
            "LongFast",
            "has capitals: the MUC service folds room names to lower case, so the room would answer as `longfast`",
        ),
        ("", "is empty"),
    ] {
        let e = problems(&with_xmpp(
            &entry(&format!("channel = \"LongFast\"\nroom = \"{room}\"")),
            TO_XMPP,
        ));
        assert!(
            e.contains("xmpp[0] (hub).room[0] (LongFast).room: ") && e.contains(says),
            "{room}: {e}"
        );
    }
    let twice = format!(
        "{}[[xmpp.room]]\nchannel = \"LongFast\"\n",
        entry("channel = \"LongFast\"")
    );
    let e = problems(&with_xmpp(&twice, TO_XMPP));
    assert!(
        e.contains("xmpp[0] (hub).room[1] (LongFast): channel `LongFast` is already room[0]"),
        "{e}"
    );
    let e = problems(&with_xmpp(
        &entry("channel = \"MediumFast\"\nroom = \"longfast\""),
        TO_XMPP,
    ));
    assert!(
        e.contains("channels `LongFast` and `MediumFast` would share room `longfast`"),
        "{e}"
    );
}

#[test]
fn a_channel_whose_name_cannot_be_a_room_gets_one_suggested() {
    let own = "[[channel]]\nname = \"Fr BlaBla\"\npsk = \"simple3\"\n\
        [[route]]\nchannel = \"Fr BlaBla\"\nfrom = [\"hub\"]\nto = [\"hub2\"]\n\
        [[xmpp]]\nname = \"hub2\"\nserver = \"10.0.0.9:5347\"\ndomain = \"mesh.other.lan\"\n\
        rooms = \"rooms.other.lan\"\nsecret = \"x\"\n\
        [[xmpp.room]]\nchannel = \"Fr BlaBla\"\nroom = \"fr-blabla\"\n";
    let e = problems(&with_xmpp(SECRET, own));
    assert!(
        e.contains("xmpp[0] (hub).room: channel `Fr BlaBla` has no room name of its own, and its default `fr blabla` cannot be one")
            && e.contains("room = \"fr-blabla\""),
        "{e}"
    );
    assert!(!e.contains("xmpp[1]"), "hub2 names the room itself: {e}");
}

#[test]
fn routes_to_a_server_need_the_channel_key() {
    let route = "[[route]]\nchannel = \"Chat\"\nfrom = [\"hub\"]\nto = [\"north\"]\nto_channel = \"LongFast\"\n";
    let e = problems(&with_xmpp(SECRET, route));
    assert!(
        e.contains("route[1].from: xmpp `hub` has no key for channel `Chat`")
            && e.contains("LongFast, MediumFast, ops"),
        "{e}"
    );
    let own = "[[channel]]\nname = \"Chat\"\npsk = \"simple2\"\n";
    let c = Config::from_toml(&with_xmpp(SECRET, &format!("{own}{route}"))).unwrap();
    assert_eq!(c.xmpp[0].channel_of_room("chat"), Some("Chat"));
    assert_eq!(
        c.xmpp[0].routed,
        ["Chat"],
        "the channel on the server's side of the route"
    );
}

#[test]
fn endpoint_names_are_unique_across_radios_brokers_and_servers() {
    let e = problems(
        &with_xmpp(SECRET, TO_XMPP)
            .replace("name = \"hub\"", "name = \"north\"")
            .replace("[\"hub\"]", "[\"north2\"]"),
    );
    assert!(
        e.contains("xmpp[0] (north).name: `north` is also the name of radio[0] (north)")
            && e.contains("XMPP servers"),
        "{e}"
    );
    let c = Config::from_toml(&with_xmpp(SECRET, TO_XMPP)).unwrap();
    let kinds: Vec<_> = c.endpoints().map(|e| (e.name(), e.kind())).collect();
    assert_eq!(kinds.last(), Some(&("hub", EndpointKind::Xmpp)));
    assert_eq!(EndpointKind::Xmpp.to_string(), "xmpp");
}

#[test]
fn two_sections_cannot_be_one_component_on_one_server() {
    let second = "[[xmpp]]\nname = \"again\"\nserver = \"127.0.0.1:5347\"\ndomain = \"mesh.hub.lan\"\n\
        rooms = \"rooms.hub.lan\"\nsecret = \"x\"\n";
    let e = problems(&with_xmpp(SECRET, &format!("{TO_XMPP}{second}")));
    assert!(
        e.contains("xmpp[1] (again).domain: `mesh.hub.lan` on the same server as xmpp[0] (hub)"),
        "{e}"
    );
    let other = second.replace("mesh.hub.lan", "mesh2.hub.lan");
    assert!(Config::from_toml(&with_xmpp(SECRET, &format!("{TO_XMPP}{other}"))).is_ok());
}

#[test]
fn the_environment_cannot_address_xmpp_sections() {
    let dir = TempDir::new("xmpp-env");
    let path = dir.write("gateway.toml", &with_xmpp(SECRET, TO_XMPP));
    let env: Vec<(OsString, OsString)> =
        vec![("ARCHIPEL_XMPP__0__SERVER".into(), "10.0.0.1:5347".into())];
    let e = Config::load_with_env(&path, env).unwrap_err().to_string();
    assert!(
        e.contains("ARCHIPEL_XMPP__0__SERVER (environment)")
            && e.contains("[[xmpp]] sections are a list"),
        "{e}"
    );
}
