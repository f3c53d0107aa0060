//! `archipel demo`: two simulated neighbourhood meshes on different presets, one radio
//! attached in each, and the gateway between them with a temporary store. Every relayed
//! message is one line; a summary follows every 30 seconds. Needs no radio, server or file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use archipel_adapters::sim::{AttachedRadio, SimConfig, Simulator};
use archipel_gateway::app::Gateway;
use archipel_gateway::config::{
    AirtimeSection, ChannelSection, Config, FederationSection, GatewaySection, HttpSection,
    LogSection, RadioSection, RouteSection, StoreSection,
};
use mesh_core::NodeId;

use crate::run::{Http, follow, open_http};
use crate::sim::{load, print_radios};

/// The gateway id the demo signs its envelopes with.
const DEMO_GATEWAY: NodeId = NodeId::new(0xa7c4_0001);

/// Runs until Ctrl-C, serving the status page on `http`.
pub async fn run(world: Option<PathBuf>, http: std::net::SocketAddr) -> anyhow::Result<()> {
    let stop = crate::shutdown_signal();
    let sim_config = load(world.as_deref())?;
    let sim = Simulator::start(sim_config.clone())
        .await
        .context("cannot start the simulator")?;
    print_radios(&sim);
    let store = std::env::temp_dir().join(format!("archipel-demo-{}.sqlite", std::process::id()));
    let config = gateway_config(&sim_config, &sim.radios(), &store)?;
    let config = Config {
        http: HttpSection {
            listen: http.to_string(),
        },
        ..config
    };
    print!("{}", config.summary());
    let listener = open_http(&Some(http)).await?;
    let gateway = Gateway::start(config).await?;
    let http = Http::serve(listener, &gateway)?;
    follow(&gateway, Duration::from_secs(30), stop).await;
    http.stop().await;
    gateway.shutdown().await;
    sim.shutdown().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    Ok(())
}

/// A gateway configuration for a simulated world: one radio per attached radio, and routes
/// that bridge every pair of meshes on their primary channels, plus channels that have the
/// same name on both sides.
pub fn gateway_config(
    world: &SimConfig,
    radios: &[AttachedRadio],
    store: &Path,
) -> anyhow::Result<Config> {
    let mut sections = Vec::new();
    for r in radios {
        let mesh = world
            .meshes
            .iter()
            .find(|m| m.name == r.mesh)
            .context("attached radio of an unknown mesh")?;
        let channels = mesh
            .channels
            .iter()
            .map(|c| ChannelSection {
                name: if c.name.is_empty() {
                    mesh.preset.display_name().to_owned()
                } else {
                    c.name.clone()
                },
                psk: c.psk.clone(),
            })
            .collect();
        sections.push(RadioSection {
            name: if radios.iter().filter(|o| o.mesh == r.mesh).count() > 1 {
                format!("{}-{}", r.mesh, r.node)
            } else {
                r.mesh.clone()
            },
            tcp: Some(r.tcp.to_string()),
            serial: None,
            baud: 115_200,
            region: Some(mesh.region.clone()),
            preset: Some(mesh.preset),
            frequency_mhz: mesh.frequency_mhz,
            duty_cycle_percent: None,
            channels,
        });
    }
    let mut routes = Vec::new();
    for i in 0..sections.len() {
        for j in i + 1..sections.len() {
            if radios[i].mesh == radios[j].mesh {
                continue;
            }
            let (a, b) = (&sections[i], &sections[j]);
            let mut pairs = vec![(a.channels[0].name.clone(), b.channels[0].name.clone())];
            for ca in &a.channels[1..] {
                if let Some(cb) = b.channels.iter().skip(1).find(|cb| cb.name == ca.name) {
                    pairs.push((ca.name.clone(), cb.name.clone()));
                }
            }
            for (from_channel, to_channel) in pairs {
                routes.push(RouteSection {
                    channel: from_channel,
                    from: vec![a.name.clone()],
                    to: vec![b.name.clone()],
                    to_channel: Some(to_channel),
                    one_way: false,
                    hops: 0,
                });
            }
        }
    }
    let config = Config {
        gateway: GatewaySection {
            name: "demo".into(),
            id: DEMO_GATEWAY,
        },
        store: StoreSection {
            path: store.to_path_buf(),
            ..StoreSection::default()
        },
        airtime: AirtimeSection::default(),
        radios: sections,
        mqtt: Vec::new(),
        xmpp: Vec::new(),
        federation: FederationSection::default(),
        peers: Vec::new(),
        channels: Vec::new(),
        routes,
        http: HttpSection::default(),
        log: LogSection::default(),
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("the simulated world does not make a valid gateway:\n{e}"))?;
    Ok(config)
}
