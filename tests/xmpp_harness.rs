//! The XMPP test harness itself: a real Prosody per test (Debian's 0.12) and, through
//! `archipel_e2e::xmpp_user`, slixmpp users driving it. Nothing of Archipel runs here: these
//! tests show the harness the XMPP end-to-end tests stand on does what it says.

use archipel_e2e::prosody::Prosody;

#[test]
fn the_component_port_takes_its_secret_and_refuses_another() {
    let prosody = Prosody::start("component");
    let held = prosody
        .connect_component(prosody.secret())
        .unwrap_or_else(|e| panic!("{e}\nprosody log:\n{}", prosody.log_tail(20)));
    let wrong = Prosody::builder("component-wrong").start();
    let refused = wrong
        .connect_component("not the secret")
        .expect_err("a wrong secret is refused");
    assert!(refused.contains("not-authorized"), "{refused}");
    // Prosody takes one connection per component domain.
    let second = prosody
        .connect_component(prosody.secret())
        .expect_err("a second connection for the same domain is refused");
    assert!(second.contains("conflict"), "{second}");
    drop(held);
}

#[test]
fn stop_kill_and_restart_keep_the_ports_and_the_accounts() {
    let mut prosody = Prosody::builder("restart")
        .vhost("harbour.lan")
        .muc_domain("chat.harbour.lan")
        .component_domain("radio.harbour.lan")
        .secret("s3cr\"et\\")
        .start();
    assert_eq!(prosody.jid("alice"), "alice@harbour.lan");
    assert_eq!(prosody.room_jid("lobby"), "lobby@chat.harbour.lan");
    let (c2s, component) = (prosody.c2s_port(), prosody.component_port());
    prosody.register("alice", "pw");
    prosody.restart();
    assert_eq!(
        (prosody.c2s_port(), prosody.component_port()),
        (c2s, component)
    );
    prosody
        .connect_component("s3cr\"et\\")
        .expect("same secret after a restart");
    prosody.kill();
    assert!(!prosody.is_running());
    prosody.start_again();
    prosody
        .connect_component("s3cr\"et\\")
        .expect("up again after a kill");
    let accounts = prosody
        .dir()
        .join("data")
        .join("harbour%2elan")
        .join("accounts");
    assert!(accounts.join("alice.dat").is_file(), "the account survives");
    prosody.stop();
    assert!(
        prosody
            .log_text()
            .contains("Shutting down: Received SIGTERM")
    );
    // The secret never reaches Debug output.
    assert!(!format!("{prosody:?}").contains("s3cr"));
}

#[test]
fn parallel_prosodys_do_not_collide() {
    let servers: Vec<Prosody> = std::thread::scope(|s| {
        let started: Vec<_> = (0..4)
            .map(|i| s.spawn(move || Prosody::start(&format!("parallel-{i}"))))
            .collect();
        started
            .into_iter()
            .map(|h| h.join().expect("started"))
            .collect()
    });
    let mut ports: Vec<u16> = servers
        .iter()
        .flat_map(|p| [p.c2s_port(), p.component_port()])
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 2 * servers.len(), "every port is its own");
    for p in &servers {
        // Each answers with its own secret: the component domain is free on each.
        p.connect_component(p.secret())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(servers.iter().filter(|q| q.dir() == p.dir()).count(), 1);
    }
}
