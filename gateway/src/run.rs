//! `archipel run` (the production entry point) and `archipel check-config`.

use std::path::Path;
use std::time::Duration;

use archipel_gateway::activity::Activity;
use archipel_gateway::app::Gateway;
use archipel_gateway::config::Config;
use tokio::sync::broadcast::error::RecvError;

use crate::logging::stamp as clock;
use crate::notices::{DropNotices, EndpointStates};
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
    let config = load(path)?;
    // What is in force, environment overrides included: the file alone does not tell.
    println!("{} starting with this configuration:", clock());
    print!("{}", config.summary());
    let mut states = endpoint_states(&config);
    let gateway = Gateway::start(config).await?;
    follow(&gateway, &mut states, SUMMARY_EVERY).await;
    println!("{}", summary_line(&gateway, &states).await);
    gateway.shutdown().await;
    println!("{} stopped", clock());
    Ok(())
}

/// How often `run` prints its summary (said in `--help`).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Prints one line per relayed message and a summary every `every`, until stopped.
pub async fn follow(gateway: &Gateway, states: &mut EndpointStates, every: Duration) {
    let mut activity = gateway.activity();
    let mut summary = tokio::time::interval(every);
    summary.tick().await;
    let mut drops = DropNotices::default();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = summary.tick() => {
                for line in drops.summary() {
                    println!("{} {line}", clock());
                }
                println!("{}", summary_line(gateway, states).await);
            }
            a = activity.recv() => match a {
                Ok(Activity::Dropped { source, reason, from }) => {
                    if let Some(line) = drops.on_drop(&source, reason, from) {
                        println!("{} {line}", clock());
                    }
                }
                Ok(a) => {
                    states.apply(&a);
                    if let Some(line) = describe(&a) {
                        println!("{} {line}", clock());
                    }
                }
                Err(RecvError::Lagged(n)) => println!("{} ({n} events not shown)", clock()),
                Err(RecvError::Closed) => break,
            },
        }
    }
    for line in drops.summary() {
        println!("{} {line}", clock());
    }
}

/// Every configured endpoint, not up yet, for the summary.
pub fn endpoint_states(config: &Config) -> EndpointStates {
    EndpointStates::new(
        config
            .endpoints()
            .map(|e| (e.name().to_owned(), e.kind().as_str())),
    )
}

/// The periodic one-line summary: totals, each destination's queue, then each endpoint's
/// state.
pub async fn summary_line(gateway: &Gateway, states: &EndpointStates) -> String {
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
    format!(
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
        states.line()
    )
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
            text.as_ref()
                .map(|t| format!(": \"{}\"", t.escape_debug()))
                .unwrap_or_default()
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
