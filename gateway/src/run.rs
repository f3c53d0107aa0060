//! `archipel run` (the production entry point) and `archipel check-config`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use archipel_gateway::activity::{Activity, Shown};
use archipel_gateway::app::Gateway;
use archipel_gateway::config::Config;
use archipel_gateway::escape::escape;
use archipel_gateway::http;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use crate::logging::stamp as clock;
use crate::notices::DropNotices;
use crate::shutdown_signal;

/// Loads and validates a config, or explains every problem.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path)
        .map_err(|e| anyhow::anyhow!("invalid configuration {}:\n{e}", path.display()))
}

/// `archipel check-config FILE`: validates without starting anything.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    print!("{}", config.summary());
    println!("configuration OK");
    Ok(())
}

/// `archipel run --config FILE`: runs until Ctrl-C or SIGTERM.
pub async fn run(path: &Path) -> anyhow::Result<()> {
    // First: a SIGTERM while the store opens is then a clean stop, not a kill.
    let stop = shutdown_signal();
    let config = load(path)?;
    // What is in force, environment overrides included: the file alone does not tell.
    println!("{} starting with this configuration:", clock());
    print!("{}", config.summary());
    let listener = open_http(&config.http.listen_addr()).await?;
    let gateway = Gateway::start(config).await?;
    let http = Http::serve(listener, &gateway)?;
    follow(&gateway, SUMMARY_EVERY, stop).await;
    println!("{}", summary_line(&gateway).await);
    http.stop().await;
    gateway.shutdown().await;
    println!("{} stopped", clock());
    Ok(())
}

/// Opens the HTTP listener before anything starts: an address in use stops the start with
/// the key to change, rather than a gateway nobody can see.
pub async fn open_http(addr: &Option<SocketAddr>) -> anyhow::Result<TcpListener> {
    let addr = addr.ok_or_else(|| anyhow::anyhow!("http.listen is not an IP:PORT address"))?;
    Ok(http::bind(addr).await?)
}

/// The HTTP listener, running.
pub struct Http {
    /// Ends the listener (graceful: a scrape in progress finishes).
    stop: tokio::sync::oneshot::Sender<()>,
    /// The serving task.
    task: tokio::task::JoinHandle<()>,
}

impl Http {
    /// Serves the page, the API and the metrics of `gateway` on `listener`, and says where.
    pub fn serve(listener: TcpListener, gateway: &Gateway) -> anyhow::Result<Http> {
        let at = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = http::serve(listener, gateway.view().clone(), async move {
            let _ = stopped.await;
        });
        println!(
            "{} status page at http://{at}/ (metrics at /metrics, JSON at /api/status)",
            clock()
        );
        Ok(Http { stop, task })
    }

    /// Stops serving.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// How often `run` prints its summary (said in `--help`).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Prints one line per relayed message and a summary every `every`, until `stop` resolves
/// (a [`shutdown_signal`]).
pub async fn follow(gateway: &Gateway, every: Duration, stop: impl Future<Output = ()>) {
    let mut activity = gateway.activity();
    let mut summary = tokio::time::interval(every);
    summary.tick().await;
    let mut drops = DropNotices::default();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = summary.tick() => {
                for line in drops.summary() {
                    say(&line);
                }
                println!("{}", summary_line(gateway).await);
            }
            a = activity.recv() => match a {
                Ok(Activity::Dropped { source, reason, from }) => {
                    if let Some(line) = drops.on_drop(&source, reason, from) {
                        say(&line);
                    }
                }
                Ok(a) => {
                    if let Some(line) = describe(&a) {
                        say(&line);
                    }
                }
                Err(RecvError::Lagged(n)) => println!("{} ({n} events not shown)", clock()),
                Err(RecvError::Closed) => break,
            },
        }
    }
    for line in drops.summary() {
        say(&line);
    }
}

/// Prints one stamped line of what happened, [escaped](escape): its texts, names and reasons
/// come from meshes and XMPP servers, and must neither start a line of their own nor steer
/// the terminal.
fn say(line: &str) {
    println!("{} {}", clock(), escape(line));
}

/// The periodic one-line summary: totals, each destination's queue, then each endpoint's
/// state.
pub async fn summary_line(gateway: &Gateway) -> String {
    use archipel_gateway::stats::Stats;
    let s = gateway.stats();
    let airtime: Vec<String> = s
        .airtime()
        .into_iter()
        .map(|(r, d)| format!("{r} {:.1}s", d.as_secs_f64()))
        .collect();
    let queues: Vec<String> = match gateway.store().queues().await {
        Ok(q) if q.is_empty() => vec!["none".into()],
        Ok(q) => q
            .iter()
            .map(|q| format!("{} {}", q.destination, q.count))
            .collect(),
        Err(e) => vec![format!("unknown ({e})")],
    };
    let reasons = s.drop_reasons();
    let dropped = if reasons.is_empty() {
        "0".to_owned()
    } else {
        let list: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        format!("{} ({})", Stats::get(&s.dropped), list.join(", "))
    };
    let latency = |q: f64| {
        s.commit_latency
            .quantile(q)
            .map(|d| format!("{:.2}", d.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    let line = format!(
        "{} summary: relayed {}, deduplicated {}, dropped {dropped}, refused {}, expired {}, overflowed {}, undeliverable {}, queued {} ({}), commit p50/p99 {}/{} ms, airtime used {}; endpoints {}",
        clock(),
        Stats::get(&s.relayed),
        Stats::get(&s.duplicates),
        gateway.refused(),
        Stats::get(&s.expired),
        Stats::get(&s.overflowed),
        Stats::get(&s.undeliverable),
        gateway.queued().await,
        queues.join(", "),
        latency(0.5),
        latency(0.99),
        if airtime.is_empty() {
            "none".into()
        } else {
            airtime.join(", ")
        },
        gateway.view().observer.endpoints().line()
    );
    // Endpoint states quote the errors links gave, which may quote a far side.
    escape(&line).into_owned()
}

/// One readable line for an activity, or nothing for the noisy ones.
pub fn describe(a: &Activity) -> Option<String> {
    Some(match a {
        Activity::EndpointUp {
            endpoint,
            kind,
            detail,
        } => format!(
            "{kind} {endpoint} up ({})",
            detail.as_deref().unwrap_or("connected")
        ),
        Activity::EndpointDown {
            endpoint,
            kind,
            reason,
        } => format!("{kind} {endpoint} down: {reason}"),
        Activity::Problem { endpoint, text } => format!("PROBLEM {endpoint}: {text}"),
        Activity::Relayed {
            from,
            id,
            destination,
            channel,
            class,
            text,
            waited,
            airtime,
        } => format!(
            "relayed {from} {id} -> {destination}#{channel} ({class}, waited {} ms{}){}",
            waited.as_millis(),
            airtime
                .map(|a| format!(", {} ms airtime", a.as_millis()))
                .unwrap_or_default(),
            // Shown through `say`, which escapes the whole line.
            match text {
                Some(Shown::Text(t)) => format!(": \"{t}\""),
                Some(hidden) => format!(": {hidden}"),
                None => String::new(),
            }
        ),
        Activity::Waiting {
            destination,
            reason,
        } => format!("waiting for {destination}: {reason}"),
        Activity::Undeliverable {
            from,
            id,
            destination,
            reason,
        } => format!("undeliverable {from} {id} -> {destination}: {reason}"),
        Activity::Parked {
            from,
            id,
            destination,
            reason,
            ..
        } => format!("held {from} {id} for {destination}: {reason}"),
        Activity::Expired {
            destination,
            class,
            count,
        } => format!("expired {count} {class} message(s) for {destination}"),
        Activity::Overflow { destination, class } => format!(
            "queue for {destination} full: dropped {}",
            class
                .map(|c| format!("an older {c} message"))
                .unwrap_or_else(|| "the new message".into())
        ),
        Activity::Queued {
            from,
            id,
            source,
            channel,
            destinations,
            class,
        } => format!(
            "queued {from} {id} from {source}#{channel} ({class}) for {}",
            destinations.join(", ")
        ),
        Activity::Duplicate { .. } | Activity::Dropped { .. } => return None,
    })
}
