//! `archipel radio-info`: an operator's first check that a radio works.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use archipel_adapters::radio::{self, Attachment, RadioConfig, RadioEvent, RadioInfo};
use archipel_gateway::escape::escape;
use mesh_core::proto::{self, channel::Role};
use mesh_core::{ChannelKey, NodeId};

use crate::RadioArgs;

/// Connects, waits for the handshake, prints the radio's info.
pub async fn run(args: RadioArgs) -> anyhow::Result<()> {
    let endpoint = match (args.tcp, args.serial) {
        (Some(host), None) => Attachment::Tcp(with_default_port(&host)),
        (None, Some(path)) => Attachment::Serial {
            path,
            baud: args.baud,
        },
        _ => bail!("give exactly one of --tcp HOST[:PORT] or --serial PATH"),
    };
    let mut config = RadioConfig::new("radio", endpoint.clone());
    config.session.handshake_timeout = Duration::from_secs(args.timeout.max(1));
    config.connect_timeout = Duration::from_secs(args.timeout.max(1));
    let (handle, mut events) = radio::spawn(config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout.max(1));
    let outcome = loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => {
                break Err(anyhow::anyhow!(
                    "no answer from the radio at {endpoint} within {}s",
                    args.timeout
                ));
            }
            Ok(None) => break Err(anyhow::anyhow!("radio link at {endpoint} stopped")),
            Ok(Some(RadioEvent::Connected(info))) => break Ok(info),
            // The first failure is the answer: radio-info is a check, not a daemon.
            Ok(Some(RadioEvent::Disconnected { reason, .. })) => {
                break Err(anyhow::anyhow!("radio at {endpoint}: {reason}"));
            }
            Ok(Some(_)) => {}
        }
    };
    handle.shutdown().await;
    let info = outcome.context("radio check failed")?;
    print!("{}", render(&info, &endpoint.to_string(), unix_now()));
    Ok(())
}

fn with_default_port(host: &str) -> String {
    let has_port = host.rsplit_once(':').is_some_and(|(h, p)| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')
    });
    if has_port || host.starts_with('[') && host.contains("]:") {
        host.to_owned()
    } else {
        format!("{host}:4403")
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How a channel key is shown: public keys by name, private ones only by size.
fn describe_key(psk: &[u8]) -> String {
    match (psk, ChannelKey::from_psk(psk)) {
        (_, ChannelKey::None) => "none (unencrypted)".into(),
        ([1], _) => "default (AQ==, public)".into(),
        ([n], _) => format!("simple{} (public)", n - 1),
        (_, ChannelKey::Aes128(_)) => "AES-128 (private)".into(),
        (_, ChannelKey::Aes256(_)) => "AES-256 (private)".into(),
    }
}

fn ago(now: u64, then: u32) -> String {
    if then == 0 {
        return "-".into();
    }
    let secs = now.saturating_sub(u64::from(then));
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// The readable report.
pub fn render(info: &RadioInfo, at: &str, now: u64) -> String {
    let mut s = String::new();
    let id = info
        .node_id()
        .map(|n| n.to_string())
        .unwrap_or_else(|| "?".into());
    let (long, short, hw) = info
        .user()
        .map(|u| {
            let hw = proto::HardwareModel::try_from(u.hw_model)
                .map(|h| h.as_str_name().to_owned())
                .unwrap_or_else(|_| u.hw_model.to_string());
            (
                escape(&u.long_name).into_owned(),
                escape(&u.short_name).into_owned(),
                hw,
            )
        })
        .unwrap_or_default();
    let _ = writeln!(s, "Radio {id}  \"{long}\" ({short})  at {at}");
    if let Some(m) = &info.metadata {
        let role = proto::config::device_config::Role::try_from(m.role)
            .map(|r| r.as_str_name())
            .unwrap_or("?");
        let _ = writeln!(
            s,
            "  firmware {:<16} hardware {hw:<14} role {role}",
            escape(&m.firmware_version)
        );
    } else {
        let _ = writeln!(s, "  hardware {hw}");
    }
    let lora = info.lora();
    let _ = writeln!(
        s,
        "  region   {:<16} preset   {:<14} hop limit {}",
        info.region().unwrap_or("?"),
        info.preset().map(|p| p.display_name()).unwrap_or("custom"),
        lora.map(|l| l.hop_limit.to_string())
            .unwrap_or_else(|| "?".into())
    );
    if let Some(f) = info.override_frequency() {
        let _ = writeln!(s, "  frequency {f} MHz (override)");
    }
    let _ = writeln!(s, "\nChannels");
    let _ = writeln!(
        s,
        "  {:<3} {:<10} {:<14} {:<5} key",
        "#", "role", "name", "hash"
    );
    for ch in info.active_channels() {
        let role = Role::try_from(ch.role)
            .map(|r| r.as_str_name())
            .unwrap_or("?");
        let name = info.channel_name(ch);
        let psk = info.channel_psk(ch);
        let hash = mesh_core::channel::channel_hash(&name, &psk.expand());
        let _ = writeln!(
            s,
            "  {:<3} {:<10} {:<14} 0x{hash:02x}  {}",
            ch.index,
            role,
            escape(&name),
            describe_key(psk.as_bytes())
        );
    }
    let _ = writeln!(s, "\nNodes ({})", info.nodes.len());
    let _ = writeln!(
        s,
        "  {:<11} {:<24} {:<6} {:>4} {:>6}  last heard",
        "id", "long name", "short", "hops", "snr"
    );
    for n in &info.nodes {
        let user = n.user.clone().unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:<11} {:<24} {:<6} {:>4} {:>6.2}  {}",
            NodeId::new(n.num).to_string(),
            truncate(&user.long_name, 24),
            truncate(&user.short_name, 6),
            n.hops_away
                .map(|h| h.to_string())
                .unwrap_or_else(|| "-".into()),
            n.snr,
            ago(now, n.last_heard)
        );
    }
    s
}

/// A node's name as the table shows it: escaped (it is whatever the node says it is; a newline
/// or an ANSI escape would break the table or the terminal), then cut to its column.
fn truncate(s: &str, max: usize) -> String {
    escape(s).chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_port_defaults_to_4403() {
        assert_eq!(with_default_port("10.0.0.5"), "10.0.0.5:4403");
        assert_eq!(with_default_port("radio.lan:4000"), "radio.lan:4000");
        assert_eq!(with_default_port("[::1]:4403"), "[::1]:4403");
    }

    #[test]
    fn private_keys_are_never_printed() {
        assert_eq!(describe_key(&[7u8; 32]), "AES-256 (private)");
        assert_eq!(describe_key(&[1]), "default (AQ==, public)");
        assert_eq!(
            describe_key(&[3]),
            "simple2 (public)",
            "as the Meshtastic CLI names it"
        );
        assert_eq!(describe_key(&[]), "none (unencrypted)");
    }

    #[test]
    fn the_report_lists_identity_channels_and_nodes() {
        let mut info = RadioInfo {
            my_info: Some(proto::MyNodeInfo {
                my_node_num: 0xa1b2c3d4,
                ..Default::default()
            }),
            own: Some(proto::NodeInfo {
                num: 0xa1b2c3d4,
                user: Some(proto::User {
                    long_name: "North hub".into(),
                    short_name: "NHUB".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        info.channels.push(proto::Channel {
            index: 0,
            role: Role::Primary as i32,
            settings: Some(proto::ChannelSettings {
                psk: vec![1],
                ..Default::default()
            }),
        });
        info.nodes.push(proto::NodeInfo {
            num: 0x11223344,
            last_heard: 1000,
            user: Some(proto::User {
                long_name: "Alice".into(),
                short_name: "ALCE".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        info.nodes.push(proto::NodeInfo {
            num: 0x55667788,
            user: Some(proto::User {
                long_name: "Evil\x1b[2J\nnode".into(),
                short_name: "\u{202e}\x1b[31m".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let text = render(&info, "tcp://x", 1120);
        assert!(
            text.contains("Radio !a1b2c3d4  \"North hub\" (NHUB)"),
            "{text}"
        );
        // A node's name cannot break the table: one line per node, no terminal escape.
        assert!(
            !text.contains('\x1b') && !text.contains('\u{202e}'),
            "{text}"
        );
        let row = text.lines().find(|l| l.contains("!55667788")).unwrap();
        assert!(row.contains("Evil\\x1b[2J\\nnode "), "{row}");
        assert_eq!(
            text.lines().filter(|l| l.starts_with("  !")).count(),
            2,
            "{text}"
        );
        assert!(text.contains("PRIMARY"), "{text}");
        assert!(text.contains("!11223344"), "{text}");
        assert!(text.contains("2m ago"), "{text}");
    }
}
