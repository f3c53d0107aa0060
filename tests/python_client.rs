//! The real Python `meshtastic` client (from PyPI, installed by `tests/run`) against
//! `archipel sim`: it must accept the simulated radios as Meshtastic devices, over TCP and
//! over a pseudo-terminal, and what it sends must reach another radio of the same mesh, as
//! Archipel's own radio link hears it.

use std::time::Duration;

use archipel_adapters::radio::{self, Attachment, RadioConfig, RadioEvent};
use archipel_e2e::{SimProcess, TEST_WORLD, run_meshtastic};

const CLI_LIMIT: Duration = Duration::from_secs(120);

fn text_of(out: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn info_lists_the_radio_its_channels_and_the_simulated_nodes() {
    let sim = SimProcess::start(TEST_WORLD, 2);
    let a = sim.radio("!0000a001");
    let out = run_meshtastic(&["--host", &a.tcp, "--info"], CLI_LIMIT);
    let text = text_of(&out);
    println!("{text}");
    assert!(out.status.success(), "meshtastic --info failed:\n{text}");
    assert!(text.contains("Owner: Harbour radio A"), "{text}");
    for node in ["!0000a001", "!0000b001", "!00000c01", "!00000d01"] {
        assert!(text.contains(node), "{node} missing:\n{text}");
    }
    assert!(text.contains("Index 0: PRIMARY"), "{text}");
    assert!(text.contains("Primary channel URL"), "{text}");
}

#[test]
fn sendtext_with_ack_over_tcp_is_acknowledged_and_heard_by_another_radio() {
    let sim = SimProcess::start(TEST_WORLD, 2);
    let a = sim.radio("!0000a001").tcp.clone();
    let b = sim.radio("!0000b001").tcp.clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (link, mut events) = rt.block_on(async {
        let (link, events) = radio::spawn(RadioConfig::new("b", Attachment::Tcp(b)));
        tokio::time::timeout(Duration::from_secs(30), link.connected())
            .await
            .expect("radio B connected in time")
            .expect("link running");
        (link, events)
    });
    let out = run_meshtastic(
        &[
            "--host",
            &a,
            "--sendtext",
            "hi from the python client",
            "--ack",
        ],
        CLI_LIMIT,
    );
    let text = text_of(&out);
    assert!(
        out.status.success(),
        "meshtastic --sendtext failed:\n{text}"
    );
    assert!(text.contains("Received an implicit ACK"), "{text}");
    let heard = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(ev) = events.recv().await {
                if let RadioEvent::Packet(p) = ev
                    && p.text().as_deref() == Some("hi from the python client")
                {
                    return Some(p);
                }
            }
            None
        })
        .await
    });
    let packet = heard
        .expect("radio B heard the text in time")
        .expect("link still running");
    assert_eq!(packet.from().to_string(), "!0000a001");
    rt.block_on(link.shutdown());
}

#[test]
fn sendtext_with_ack_over_a_pseudo_terminal_is_acknowledged() {
    let sim = SimProcess::start(TEST_WORLD, 2);
    let pty = sim
        .radio("!0000a001")
        .serial
        .clone()
        .expect("radio A has a pseudo-terminal");
    let out = run_meshtastic(
        &["--port", &pty, "--sendtext", "hello over serial", "--ack"],
        CLI_LIMIT,
    );
    let text = text_of(&out);
    assert!(out.status.success(), "meshtastic --port failed:\n{text}");
    assert!(text.contains("ACK"), "{text}");
}
