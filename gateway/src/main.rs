//! `archipel`: the gateway binary.
//!
//! Subcommands, in the order an operator meets them:
//! - `demo`: two simulated neighbourhood meshes bridged by a gateway, nothing to set up;
//! - `check-config`, `run`: validate a configuration, run the gateway on it;
//! - `status`: what the running gateway's status page shows, as text, with an exit code;
//! - `identity`: print this gateway's public key, for the neighbours' `[[peer]]` sections;
//! - `radio-info`: connect to one radio, print who it is, its channels and node DB, and exit;
//! - `sim`: run a simulated mesh whose attached radios real clients can connect to.

mod demo;
mod identity;
mod logging;
mod notices;
mod radio_info;
mod run;
mod sim;
mod status_report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Archipel joins community LoRa meshes into an archipelago.
#[derive(Parser, Debug)]
#[command(
    name = "archipel",
    version,
    about,
    propagate_version = true,
    after_help = logging::HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run two simulated neighbourhood meshes bridged by the gateway, showing every relayed
    /// message: no radio, server or configuration needed.
    Demo {
        /// A simulation config to use instead of the built-in world (see deploy/sim.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where to serve the status page and metrics (IP:PORT; port 0 picks a free one).
        #[arg(long, value_name = "IP:PORT", default_value = archipel_gateway::config::DEFAULT_LISTEN)]
        http: std::net::SocketAddr,
    },
    /// Run the gateway with a configuration file until Ctrl-C or SIGTERM.
    Run {
        /// The gateway configuration (TOML; ARCHIPEL_ environment variables override it).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show the running gateway's state (radios, links, queues, nodes) from its status API;
    /// exits 1 when something is down, 2 when the gateway does not answer.
    Status {
        /// The gateway configuration, for its `[http] listen` address.
        #[arg(long, value_name = "FILE", conflicts_with = "url")]
        config: Option<PathBuf>,
        /// The gateway's HTTP address (default http://127.0.0.1:9464).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Check a configuration file without starting anything; exits non-zero on any problem.
    CheckConfig {
        /// The gateway configuration (TOML).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print this gateway's public key and fingerprint (making its key pair on first use),
    /// for neighbouring hubs' [[peer]] sections. The private key is never printed.
    Identity {
        /// The gateway configuration, for `[federation] identity_file` or the store's
        /// directory; without it, identity.key in the current directory.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Connect to a radio, print its identity, channels and node database, and exit.
    RadioInfo(RadioArgs),
    /// Run a simulated mesh; each attached radio is served like a Meshtastic device over TCP
    /// (and a pseudo-terminal when asked).
    Sim {
        /// The simulation config (TOML). Without it, the built-in demo world runs.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Where a radio is.
#[derive(Args, Debug)]
struct RadioArgs {
    /// A radio on the network (its TCP API, port 4403 if none is given): HOST[:PORT].
    #[arg(
        long,
        value_name = "HOST[:PORT]",
        required_unless_present = "serial",
        conflicts_with = "serial"
    )]
    tcp: Option<String>,
    /// A radio on a serial port, such as /dev/ttyUSB0 or /dev/ttyACM0.
    #[arg(long, value_name = "PATH")]
    serial: Option<PathBuf>,
    /// Serial speed.
    #[arg(long, default_value_t = 115_200, requires = "serial")]
    baud: u32,
    /// Seconds to wait for the radio to answer (1 to 86400).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    // No runtime needed: one blocking request.
    if let Command::Status { config, url } = &cli.command {
        return status_report::run(url.as_deref(), config.as_deref());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo { config, http } => demo::run(config, http).await,
            Command::Run { config } => run::run(&config).await,
            Command::CheckConfig { file } => run::check(&file),
            Command::Identity { config } => identity::run(config.as_deref()),
            Command::RadioInfo(args) => radio_info::run(args).await,
            Command::Sim { config } => sim::run(config).await,
            Command::Status { .. } => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An error may quote a radio or a server (radio-info's "radio at ...: REASON"):
            // escaped line by line, so the lines of a config error stay lines.
            let text = format!("{e:#}");
            let lines: Vec<_> = text.lines().map(archipel_gateway::escape::escape).collect();
            eprintln!("error: {}", lines.join("\n"));
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (how systemd and test harnesses stop us). The handlers are
/// installed when this is called, not when the future is first polled: a signal that comes
/// while the command is still starting is then kept for the future instead of killing the
/// process (the default action), so `run` exits 0 on a SIGTERM whenever it comes. Call it
/// first thing.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::interrupt()).and_then(|int| {
            let term = signal(SignalKind::terminate())?;
            Ok((int, term))
        });
        async move {
            match handlers {
                Ok((mut int, mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
