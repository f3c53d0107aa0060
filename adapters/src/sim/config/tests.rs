//! The simulation config on plain values: defaults, the demo and deploy examples, and that
//! every refusal names what is wrong. In a file of its own so `config.rs` stays the shape.

use super::*;

const SMALL: &str = r#"
    time_scale = 100.0
    seed = 7
    [[mesh]]
    name = "north"
    preset = "LongFast"
    channels = [ { name = "LongFast", psk = "AQ==" }, { name = "ops", psk = "simple3" } ]
    [[mesh.node]]
    id = "!00000011"
    long_name = "One"
    short_name = "ONE"
    attached = { tcp_port = 4403, pty = true }
    [[mesh.node]]
    id = "!00000012"
    long_name = "Two"
    short_name = "TWO"
    role = "router"
    neighbours = ["!00000011"]
    traffic = { text_every_secs = 60.0, to = "^all", channel = 1 }
"#;

fn small() -> SimConfig {
    SimConfig::from_toml_str(SMALL).unwrap()
}

fn error_of(edit: impl FnOnce(&mut SimConfig)) -> SimConfigError {
    let mut config = small();
    edit(&mut config);
    config.validate().unwrap_err()
}

#[test]
fn a_small_world_parses_with_its_defaults() {
    let c = small();
    assert_eq!(c.time_scale, 100.0);
    assert_eq!(c.meshes[0].region, "US");
    assert_eq!(c.meshes[0].loss, 0.0);
    let two = &c.meshes[0].nodes[1];
    assert_eq!(two.role, NodeRole::Router);
    assert_eq!(two.traffic.as_ref().unwrap().to, NodeId::BROADCAST);
    assert_eq!(c.meshes[0].nodes[0].role, NodeRole::Client);
    assert!(c.meshes[0].nodes[0].attached.unwrap().pty);
    assert!(two.pki, "firmware with PKI unless told otherwise");
}

#[test]
fn a_node_with_pki_announces_its_seeded_public_key_and_one_without_announces_none() {
    let mut c = small();
    let one = &c.meshes[0].nodes[0];
    let key = one.private_key(c.seed).unwrap().public_key();
    assert_eq!(one.user(c.seed).public_key, key.as_bytes().to_vec());
    assert_ne!(one.user(c.seed + 1).public_key, key.as_bytes().to_vec());
    let old = SimConfig::from_toml_str(&SMALL.replace(
        "role = \"router\"",
        "role = \"router\"\n        pki = false",
    ))
    .unwrap();
    let two = &old.meshes[0].nodes[1];
    assert!(!two.pki && two.private_key(old.seed).is_none());
    assert!(two.user(old.seed).public_key.is_empty());
    c.meshes[0].nodes[0].pki = false;
    assert!(c.meshes[0].nodes[0].user(c.seed).public_key.is_empty());
}

#[test]
fn the_demo_world_is_valid_and_has_two_meshes_with_an_attached_radio_each() {
    let demo = SimConfig::demo();
    assert_eq!(demo.meshes.len(), 2);
    for mesh in &demo.meshes {
        let attached: Vec<_> = mesh.nodes.iter().filter(|n| n.attached.is_some()).collect();
        assert_eq!(attached.len(), 1, "{}", mesh.name);
        assert_eq!(attached[0].attached.unwrap().tcp_port, 0);
        assert!(mesh.nodes.iter().any(|n| n.role == NodeRole::Router));
    }
    assert_ne!(demo.meshes[0].preset, demo.meshes[1].preset);
}

#[test]
fn the_operator_example_in_deploy_is_valid() {
    let example = SimConfig::from_toml_str(include_str!("../../../../deploy/sim.toml")).unwrap();
    let ports: Vec<u16> = example
        .meshes
        .iter()
        .flat_map(|m| {
            m.nodes
                .iter()
                .filter_map(|n| n.attached.map(|a| a.tcp_port))
        })
        .collect();
    assert_eq!(ports, vec![4403, 4404]);
}

#[test]
fn the_gaulix_profile_pins_its_mesh_to_869_4625_mhz_on_long_moderate() {
    let gaulix =
        SimConfig::from_toml_str(include_str!("../../../../deploy/profiles/gaulix/sim.toml"))
            .unwrap();
    let mesh = &gaulix.meshes[0];
    assert_eq!(
        (mesh.preset, mesh.frequency_mhz, mesh.region.as_str()),
        (ModemPreset::LongModerate, Some(869.4625), "EU_868")
    );
    let names: Vec<&str> = mesh.channels.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["Fr_Balise", "Fr_EMCOM", "Fr_BlaBla"]);
    assert_eq!(
        gaulix.meshes[1].frequency_mhz, None,
        "LongFast keeps its slot"
    );
}

#[test]
fn whole_numbers_are_accepted_where_decimals_are_expected() {
    let c =
        SimConfig::from_toml_str("time_scale = 10\n[[mesh]]\nname = \"m\"\nloss = 0\n").unwrap();
    assert_eq!((c.time_scale, c.meshes[0].loss), (10.0, 0.0));
}

#[test]
fn unknown_keys_are_refused() {
    let err = SimConfig::from_toml_str("time_scale = 1.0\nspeed = 2\n").unwrap_err();
    assert!(err.to_string().contains("speed"), "{err}");
}

#[test]
fn errors_name_the_key_the_value_and_the_fix() {
    let e = error_of(|c| c.time_scale = 0.0);
    assert!(e.to_string().contains("time_scale = 0"), "{e}");
    let e = error_of(|c| c.meshes[0].loss = 1.5);
    assert!(
        e.to_string().contains("loss = 1.5") && e.to_string().contains("0.0"),
        "{e}"
    );
    let e = error_of(|c| {
        let dup = c.meshes[0].nodes[0].clone();
        c.meshes[0].nodes.push(dup);
    });
    assert_eq!(e, SimConfigError::DuplicateNode(NodeId::new(0x11)));
    let e = error_of(|c| {
        let ch = c.meshes[0].channels[0].clone();
        c.meshes[0].channels = vec![ch; 9];
    });
    assert!(e.to_string().contains("9 channels"), "{e}");
    let e = error_of(|c| c.meshes[0].nodes[1].neighbours = Some(vec![NodeId::new(9)]));
    assert!(
        e.to_string().contains("!00000009") && e.to_string().contains("north"),
        "{e}"
    );
    let e = error_of(|c| c.meshes[0].region = "MARS".into());
    assert!(e.to_string().contains("MARS"), "{e}");
    let e = error_of(|c| c.meshes[0].frequency_mhz = Some(0.0));
    assert!(
        e.to_string().contains("frequency_mhz = 0") && e.to_string().contains("869.4625"),
        "{e}"
    );
    let e = error_of(|c| c.meshes[0].mqtt_root = Some("msh/#".into()));
    assert!(
        e.to_string().contains("mqtt_root") && e.to_string().contains("wildcard"),
        "{e}"
    );
}

#[test]
fn two_radios_on_one_fixed_port_are_refused_but_port_zero_is_shared() {
    let e = error_of(|c| c.meshes[0].nodes[1].attached = c.meshes[0].nodes[0].attached);
    assert!(e.to_string().contains("4403"), "{e}");
    let mut c = small();
    for n in &mut c.meshes[0].nodes {
        n.attached = Some(AttachedConfig::default());
    }
    c.validate().unwrap();
}

#[test]
fn traffic_must_use_an_existing_channel_and_a_positive_period() {
    let e = error_of(|c| c.meshes[0].nodes[1].traffic.as_mut().unwrap().channel = 2);
    assert!(
        matches!(e, SimConfigError::TrafficChannel { channel: 2, .. }),
        "{e}"
    );
    let e = error_of(|c| {
        c.meshes[0].nodes[1]
            .traffic
            .as_mut()
            .unwrap()
            .text_every_secs = Some(0.0)
    });
    assert!(e.to_string().contains("text_every_secs"), "{e}");
}

#[test]
fn reserved_ids_are_not_nodes() {
    let e = error_of(|c| c.meshes[0].nodes[1].id = NodeId::BROADCAST);
    assert_eq!(e, SimConfigError::ReservedNode(NodeId::BROADCAST));
}

#[test]
fn an_empty_channel_name_means_the_preset_name() {
    let ch = ChannelConfig {
        name: String::new(),
        psk: Psk::default_key(),
    };
    assert_eq!(ch.effective_name(ModemPreset::MediumFast), "MediumFast");
}
