//! `archipel sim`: a simulated mesh whose attached radios real clients can use.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use archipel_adapters::sim::{SimConfig, SimEvent, Simulator};
use figment::Figment;
use figment::providers::{Format, Toml};
use tracing::{debug, info};

/// Reads and checks a simulation config; `None` is the built-in demo world.
pub fn load(path: Option<&Path>) -> anyhow::Result<SimConfig> {
    let config = match path {
        None => SimConfig::demo(),
        Some(path) => {
            if !path.is_file() {
                anyhow::bail!(
                    "simulation config {} not found: give the path of a TOML file (deploy/sim.toml is an example)",
                    path.display()
                );
            }
            Figment::new()
                .merge(Toml::file_exact(path))
                .extract::<SimConfig>()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
    };
    config.validate().with_context(|| match path {
        Some(p) => format!("invalid simulation config {}", p.display()),
        None => "invalid built-in simulation config".into(),
    })?;
    Ok(config)
}

/// Prints one line per attached radio, in a form both people and test harnesses read.
pub fn print_radios(sim: &Simulator) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "Simulated radios (point a Meshtastic client or `archipel radio-info` at them):"
    );
    for r in sim.radios() {
        let pty = r
            .pty
            .as_ref()
            .map(|p| format!(" serial={}", p.display()))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "radio {} mesh={} tcp={}{} name=\"{}\"",
            r.node, r.mesh, r.tcp, pty, r.long_name
        );
    }
    let _ = out.flush();
}

/// Runs the simulator until Ctrl-C or SIGTERM.
pub async fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let stop = crate::shutdown_signal();
    let config = load(path.as_deref())?;
    let sim = Simulator::start(config)
        .await
        .context("cannot start the simulator")?;
    print_radios(&sim);
    let mut events = sim.events();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            ev = events.recv() => match ev {
                Ok(SimEvent::ClientConnected { node }) => info!(%node, "client connected"),
                Ok(SimEvent::ClientDisconnected { node }) => info!(%node, "client disconnected"),
                Ok(SimEvent::Transmitted { mesh, node, packet, airtime }) => debug!(
                    %mesh, %node, from = %packet.from(), id = %packet.id(),
                    airtime_ms = airtime.as_millis() as u64, "on air"
                ),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => debug!(n, "event log lagged"),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    info!("stopping the simulator");
    sim.shutdown().await;
    Ok(())
}
