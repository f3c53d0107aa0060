//! `[[mqtt]]`, secrets, and the channel table shared by every endpoint kind.

use std::time::Duration;

use super::super::testing::{GOOD, TempDir, problems};
use super::super::*;

/// GOOD plus one broker section with `extra` lines, and `tail` after it (routes, channels).
fn with_mqtt(extra: &str, tail: &str) -> String {
    format!("{GOOD}\n[[mqtt]]\nname = \"broker\"\naddress = \"127.0.0.1:1883\"\n{extra}\n{tail}")
}

/// A route from north's LongFast to the broker.
const TO_BROKER: &str =
    "[[route]]\nchannel = \"LongFast\"\nfrom = [\"north\"]\nto = [\"broker\"]\n";

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

#[test]
fn a_broker_gets_the_firmware_defaults() {
    let c = Config::from_toml(&with_mqtt("", TO_BROKER)).unwrap();
    let m = c.mqtt_section("broker").unwrap();
    assert_eq!(
        c.mqtt_root(m),
        "msh/EU_868",
        "msh/<REGION>, as the firmware rewrites it"
    );
    assert_eq!(c.mqtt_client_id(m), "archipel-a7c40001");
    assert!(m.encrypted && !m.json && !m.downlink_json);
    assert_eq!((m.rate_per_node, m.burst_per_node), (6.0, 10));
    assert_eq!(m.token_interval(), Duration::from_secs(10));
    assert!(m.password.is_none());
    let s = c.summary();
    assert!(
        s.contains("mqtt broker at 127.0.0.1:1883: root msh/EU_868, client id archipel-a7c40001, anonymous; publishes encrypted envelopes (/2/e/)"),
        "{s}"
    );
    assert!(
        s.contains("route north#LongFast <-> broker#LongFast"),
        "{s}"
    );
}

#[test]
fn explicit_settings_are_kept() {
    let c = Config::from_toml(&with_mqtt(
        "root = \"mesh/hub\"\nclient_id = \"hub-one\"\njson = true\ndownlink_json = true\nrate_per_node = 0.5\nburst_per_node = 2",
        TO_BROKER,
    ))
    .unwrap();
    let m = &c.mqtt[0];
    assert_eq!(
        (c.mqtt_root(m).as_str(), c.mqtt_client_id(m).as_str()),
        ("mesh/hub", "hub-one")
    );
    assert!(m.json && m.downlink_json);
    assert_eq!(m.token_interval(), Duration::from_secs(120));
    assert!(c.summary().contains(
        "publishes encrypted envelopes (/2/e/) and JSON (/2/json/), takes JSON sendtext downlink"
    ));
}

#[test]
fn the_root_is_required_when_the_radios_do_not_agree_on_a_region() {
    let text = with_mqtt("", TO_BROKER).replace(
        "region = \"EU_868\"\npreset = \"MediumFast\"",
        "region = \"US\"\npreset = \"MediumFast\"",
    );
    let e = problems(&text);
    assert!(
        e.contains("mqtt[0] (broker).root: is not set")
            && e.contains("several regions (EU_868, US)"),
        "{e}"
    );
    let e = problems(
        &with_mqtt("", TO_BROKER).replace("region = \"EU_868\"\npreset = \"LongFast\"\n", ""),
    );
    assert!(
        e.contains("the region of north is not in the config"),
        "{e}"
    );
    assert!(
        e.contains("root = \\\"msh/EU_868\\\"") || e.contains("root = \"msh/EU_868\""),
        "{e}"
    );
    for bad in ["msh/#", "/msh", "msh//EU", "msh/EU 868", ""] {
        let e = problems(&with_mqtt(&format!("root = \"{bad}\""), TO_BROKER));
        assert!(e.contains("mqtt[0] (broker).root: "), "{bad}: {e}");
    }
}

#[test]
fn the_password_comes_from_its_file_and_never_prints() {
    let dir = TempDir::new("mqtt-pass");
    let file = dir.write("mqtt.pass", "large4cats\n");
    let text = with_mqtt(
        &format!("username = \"gw\"\npassword_file = \"{}\"", file.display()),
        TO_BROKER,
    );
    let c = Config::from_toml(&text).unwrap();
    assert_eq!(c.mqtt[0].password.as_ref().unwrap().expose(), "large4cats");
    let debug = format!("{c:?} {c:#?}");
    assert!(
        !debug.contains("large4cats") && debug.contains("[redacted]"),
        "{debug}"
    );
    let s = c.summary();
    assert!(
        !s.contains("large4cats") && s.contains("user gw (password from"),
        "{s}"
    );

    let e = problems(&with_mqtt(
        &format!("password_file = \"{}\"", file.display()),
        TO_BROKER,
    ));
    assert!(
        e.contains("mqtt[0] (broker).password_file: is set without a username"),
        "{e}"
    );
    let e = problems(&with_mqtt(
        "username = \"gw\"\npassword_file = \"/nonexistent/mqtt.pass\"",
        TO_BROKER,
    ));
    assert!(
        e.contains("mqtt[0] (broker).password_file: cannot read /nonexistent/mqtt.pass"),
        "{e}"
    );
    let e = problems(&with_mqtt(
        "username = \"gw\"\npassword = \"large4cats\"",
        TO_BROKER,
    ));
    assert!(
        e.contains("put it alone in a file") && e.contains("password_file"),
        "{e}"
    );
}

#[test]
fn the_ca_file_must_be_a_readable_pem_certificate() {
    let dir = TempDir::new("mqtt-ca");
    let good = dir.write("ca.pem", PEM);
    let c = Config::from_toml(&with_mqtt(
        &format!("tls = {{ ca_file = \"{}\" }}", good.display()),
        TO_BROKER,
    ))
    .unwrap();
    assert!(c.summary().contains("(TLS, CA "));
    let e = problems(&with_mqtt(
        "[mqtt.tls]\nca_file = \"/nonexistent/ca.pem\"",
        TO_BROKER,
    ));
    assert!(
        e.contains("mqtt[0] (broker).tls.ca_file: cannot read /nonexistent/ca.pem"),
        "{e}"
    );
    let key = dir.write(
        "key.pem",
        "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
    );
    let e = problems(&with_mqtt(
        &format!("tls = {{ ca_file = \"{}\" }}", key.display()),
        TO_BROKER,
    ));
    assert!(e.contains("holds no PEM certificate"), "{e}");
}

#[test]
fn bad_broker_values_are_named() {
    for (extra, says) in [
        (
            "",
            "mqtt[0] (broker).address: `127.0.0.1:99999`: port `99999`",
        ),
        ("rate_per_node = 0", "mqtt[0] (broker).rate_per_node: 0"),
        ("rate_per_node = nan", "mqtt[0] (broker).rate_per_node: NaN"),
        (
            "rate_per_node = 1e9",
            "mqtt[0] (broker).rate_per_node: 1000000000",
        ),
        ("burst_per_node = 0", "mqtt[0] (broker).burst_per_node: 0"),
        (
            "client_id = \"two words\"",
            "mqtt[0] (broker).client_id: `two words`",
        ),
        ("username = \"\"", "mqtt[0] (broker).username"),
        ("encrypted = false", "publish"),
    ] {
        let mut text = with_mqtt(extra, TO_BROKER);
        if extra.is_empty() {
            text = text.replace("127.0.0.1:1883", "127.0.0.1:99999");
        }
        let e = problems(&text);
        assert!(e.contains(says), "{extra}: {e}");
    }
    let e = problems(&with_mqtt("downlink_json = true", ""));
    assert!(
        e.contains(
            "mqtt[0] (broker).downlink_json: is on, but no route takes traffic from `broker`"
        ),
        "{e}"
    );
}

#[test]
fn two_sections_cannot_share_a_session_on_one_broker() {
    let second = "[[mqtt]]\nname = \"again\"\naddress = \"127.0.0.1:1883\"\n";
    let e = problems(&with_mqtt("", second));
    assert!(
        e.contains(
            "mqtt[1] (again).client_id: `archipel-a7c40001` on the same broker as mqtt[0] (broker)"
        ),
        "{e}"
    );
    assert!(Config::from_toml(&with_mqtt("", &format!("{second}client_id = \"other\"\n"))).is_ok());
}

#[test]
fn routes_to_a_broker_need_the_channel_in_the_table() {
    let to_broker_ops =
        "[[route]]\nchannel = \"Fr_BlaBla\"\nfrom = [\"broker\"]\nto = [\"broker2\"]\n";
    let second = "[[mqtt]]\nname = \"broker2\"\naddress = \"10.0.0.2:1883\"\n";
    let e = problems(&with_mqtt("", &format!("{second}{to_broker_ops}")));
    assert!(
        e.contains(
            "route[1].from: mqtt `broker` has no key for channel `Fr_BlaBla`: the channel table"
        ) && e.contains("LongFast, MediumFast, ops"),
        "{e}"
    );
    let own = "[[channel]]\nname = \"Fr_BlaBla\"\npsk = \"simple3\"\n";
    let c = Config::from_toml(&with_mqtt("", &format!("{second}{own}{to_broker_ops}"))).unwrap();
    let table = c.channel_table();
    assert_eq!(
        table.names().collect::<Vec<_>>(),
        ["Fr_BlaBla", "LongFast", "MediumFast", "ops"]
    );
    assert_eq!(table.get("Fr_BlaBla").unwrap().psk.as_bytes(), &[4]);
    assert!(
        c.summary()
            .contains("channels Fr_BlaBla, LongFast, MediumFast, ops (Fr_BlaBla from [[channel]])")
    );
    // A radio channel still needs to be the radio's own.
    let e = problems(&with_mqtt(
        "",
        "[[route]]\nchannel = \"ops\"\nfrom = [\"broker\"]\nto = [\"north\"]\n",
    ));
    assert!(
        e.contains("route[1].to: radio `north` has no channel `ops`"),
        "{e}"
    );
}

#[test]
fn one_channel_name_with_two_keys_is_refused_naming_both_places() {
    let text = GOOD.replace(
        "channels = [ { name = \"LongFast\", psk = \"AQ==\" } ]",
        "channels = [ { name = \"LongFast\", psk = \"AQ==\" }, { name = \"ops\", psk = \"simple4\" } ]",
    );
    let e = problems(&text);
    assert!(
        e.contains("radio[1] (south).channels[1]: channel `ops` has another key than at radio[0] (north).channels[1]")
            && e.contains("same psk, or rename"),
        "{e}"
    );
    let e = problems(&format!(
        "{GOOD}\n[[channel]]\nname = \"LongFast\"\npsk = \"simple1\"\n"
    ));
    assert!(e.contains("channel[0] (LongFast): channel `LongFast` has another key than at radio[0] (north).channels[0]"), "{e}");
    // The same key written two ways is one key.
    assert!(
        Config::from_toml(&format!(
            "{GOOD}\n[[channel]]\nname = \"LongFast\"\npsk = \"simple0\"\n"
        ))
        .is_ok()
    );
    let twice =
        "[[channel]]\nname = \"x\"\npsk = \"none\"\n[[channel]]\nname = \"x\"\npsk = \"none\"\n";
    assert!(
        problems(&format!("{GOOD}\n{twice}")).contains("channel[1] (x): `x` is already channel[0]")
    );
}

#[test]
fn a_gateway_with_only_brokers_is_an_endpoint_set_too() {
    let text = "[gateway]\nname = \"relay\"\nid = \"!a7c40002\"\n\
        [[mqtt]]\nname = \"a\"\naddress = \"10.0.0.1:1883\"\nroot = \"msh/EU_868\"\n\
        [[mqtt]]\nname = \"b\"\naddress = \"10.0.0.2:1883\"\nroot = \"msh/EU_868\"\n\
        [[channel]]\nname = \"LongFast\"\npsk = \"default\"\n\
        [[route]]\nchannel = \"LongFast\"\nfrom = [\"a\"]\nto = [\"b\"]\n";
    let c = Config::from_toml(text).unwrap();
    assert_eq!(c.endpoints().count(), 2);
    let e = problems(&text.replace("root = \"msh/EU_868\"\n[[mqtt]]", "[[mqtt]]"));
    assert!(
        e.contains("mqtt[0] (a).root: is not set") && e.contains("no radio"),
        "{e}"
    );
}
