//! The XMPP end-to-end world: one simulated mesh ("north", channel Harbour) with the gateway's
//! radio A and three people's radios (Amira with PKI firmware, Olaf on firmware without PKI,
//! Zed who stays silent until a test makes him speak), a real Prosody with users alice and
//! bob, and `archipel run` bridging Harbour to the room `harbour`.

use archipel_e2e::bridge::{Gateway, LIMIT, Scratch, Sim, gateway_toml, mesh, radio, route};
use archipel_e2e::prosody::Prosody;
use archipel_e2e::xmpp_user::{UserOptions, XmppEvent, XmppUser};
use archipel_e2e::{MeshClient, free_port};
use mesh_core::NodeId;

/// The gateway's radio.
pub const A: u32 = 0x0000_a001;
/// Amira: current firmware, PKI direct messages.
pub const AMIRA: u32 = 0x0000_a0a1;
/// Olaf: older firmware, direct messages with the channel key.
pub const OLAF: u32 = 0x0000_a0a2;
/// Zed: silent until a test says otherwise (never heard by the gateway).
pub const ZED: u32 = 0x0000_a0a3;

/// The mesh's channels: Harbour on the default key.
pub const CHANNELS: &str = r#"[ { name = "Harbour", psk = "AQ==" } ]"#;
/// The room Harbour is bridged to.
pub const ROOM: &str = "harbour";
/// The users' password.
pub const PASSWORD: &str = "correct horse";

/// One `[[mesh.node]]`, attached on `port`.
fn node(id: u32, name: &str, port: u16, pki: bool) -> String {
    format!(
        "[[mesh.node]]\nid = \"{}\"\nlong_name = \"{name}\"\nshort_name = \"{}\"\nattached = {{ tcp_port = {port} }}\n{}",
        NodeId::new(id),
        &name[..name.len().min(4)],
        if pki { "" } else { "pki = false\n" }
    )
}

/// Everything a test needs, stopped and removed in reverse order.
pub struct World {
    /// The people on the mesh.
    pub amira: MeshClient,
    pub olaf: MeshClient,
    pub zed: MeshClient,
    /// The gateway.
    pub gw: Gateway,
    /// The mesh (kept running until the world is dropped).
    pub _sim: Sim,
    /// The XMPP server.
    pub prosody: Prosody,
    /// The test's tag, naming kept transcripts.
    pub tag: String,
    /// Configs, stores and logs (removed when the world is dropped).
    pub _dir: Scratch,
}

impl World {
    /// Starts Prosody (users alice and bob), the mesh and the gateway, and waits until the
    /// gateway's radio and XMPP link are up (the bridge's rooms exist then).
    pub fn start(tag: &str) -> World {
        World::start_with(tag, "")
    }

    /// The same with `xmpp_extra` lines in the `[[xmpp]]` section.
    pub fn start_with(tag: &str, xmpp_extra: &str) -> World {
        let dir = Scratch::new(tag);
        let prosody = Prosody::start(tag);
        prosody.register("alice", PASSWORD);
        prosody.register("bob", PASSWORD);
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let world = mesh(
            "north",
            "ShortTurbo",
            CHANNELS,
            1.0,
            &[
                node(A, "Hub", ports[0], true),
                node(AMIRA, "Amira", ports[1], true),
                node(OLAF, "Olaf", ports[2], false),
                node(ZED, "Zed", ports[3], false),
            ],
        );
        let sim = Sim::start(&dir, "north", &world, 4);
        let xmpp = format!(
            "[[xmpp]]\nname = \"xmpp\"\nserver = \"{}\"\ndomain = \"{}\"\nsecret_file = \"{}\"\nrooms = \"{}\"\n{xmpp_extra}\n",
            prosody.component_addr(),
            prosody.component_domain(),
            prosody.secret_file().display(),
            prosody.muc_domain(),
        );
        let sections = [radio("north", ports[0], "ShortTurbo", CHANNELS, ""), xmpp];
        let routes = [route("Harbour", &["north"], &["xmpp"], "Harbour", "")];
        let config = dir.path("gateway.toml");
        std::fs::write(
            &config,
            gateway_toml(&dir.path("store.sqlite"), "", &sections, &routes),
        )
        .expect("gateway config written");
        let mut gw = Gateway::start(&dir, &config, None);
        gw.wait_endpoint_up(0, "radio", "north");
        gw.wait_endpoint_up(0, "xmpp", "xmpp");
        let amira = MeshClient::connect("Amira", &sim.tcp(AMIRA), LIMIT);
        let olaf = MeshClient::connect("Olaf", &sim.tcp(OLAF), LIMIT);
        let zed = MeshClient::connect("Zed", &sim.tcp(ZED), LIMIT);
        World {
            amira,
            olaf,
            zed,
            gw,
            _sim: sim,
            prosody,
            tag: tag.to_owned(),
            _dir: dir,
        }
    }

    /// User `name` connected (alice or bob). With `ARCHIPEL_XMPP_TRANSCRIPTS=DIR`, the user's
    /// transcript (every stanza, SASL redacted) is kept as `DIR/<test>-<name>.transcript`.
    pub fn user(&self, name: &str) -> XmppUser {
        let mut options = UserOptions::default();
        if let Some(dir) = std::env::var_os("ARCHIPEL_XMPP_TRANSCRIPTS") {
            let dir = std::path::PathBuf::from(dir);
            let _ = std::fs::create_dir_all(&dir);
            options.transcript = Some(dir.join(format!("{}-{name}.transcript", self.tag)));
        }
        XmppUser::connect_with(&self.prosody, name, PASSWORD, options)
    }

    /// The JID of mesh node `id` on the component.
    pub fn node_jid(&self, id: u32) -> String {
        format!("{}@{}", NodeId::new(id), self.prosody.component_domain())
    }
}

/// Waits for the room message with `body` and returns its nick.
pub fn room_text(user: &XmppUser, body: &str) -> String {
    let ev = user.wait_for(LIMIT, |e| e.groupchat().is_some_and(|m| m.body == body));
    ev.groupchat().map(|m| m.nick.clone()).unwrap_or_default()
}

/// Every event up to the room message with `body`.
pub fn events_until_text(user: &XmppUser, body: &str) -> Vec<XmppEvent> {
    user.events_until(LIMIT, |e| e.groupchat().is_some_and(|m| m.body == body))
}
