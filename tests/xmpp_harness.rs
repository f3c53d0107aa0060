//! The XMPP test harness itself: a real Prosody per test (Debian's 0.12) and, through
//! `archipel_e2e::xmpp_user`, slixmpp users driving it. Nothing of Archipel runs here: these
//! tests show the harness the XMPP end-to-end tests stand on does what it says.

use std::process::Command;
use std::time::{Duration, Instant};

use archipel_e2e::prosody::Prosody;
use archipel_e2e::run_with_limit;
use archipel_e2e::xmpp_user::{
    self, History, RoomMessage, StanzaKind, UserOptions, XmppEvent, XmppUser,
};

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
    // Each with a user speaking in a room of the same name: none hears another's.
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
    let users: Vec<XmppUser> = servers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.register("alice", "pw");
            let alice = XmppUser::connect(p, "alice", "pw");
            alice.join("lobby", "Alice");
            live(&alice, &alice.say("lobby", &format!("server {i}")));
            alice
        })
        .collect();
    for (i, alice) in users.iter().enumerate() {
        let bodies: Vec<String> = alice.mam("lobby", 10).into_iter().map(|m| m.body).collect();
        assert_eq!(bodies, [format!("server {i}")]);
    }
}

/// A server with `alice`, `bob` and `carol` registered (password `pw`).
fn server(tag: &str) -> Prosody {
    let prosody = Prosody::start(tag);
    for user in ["alice", "bob", "carol"] {
        prosody.register(user, "pw");
    }
    prosody
}

const WAIT: Duration = Duration::from_secs(15);

/// Waits for `user`'s live (not delayed) message with `id` in a room.
fn live(user: &XmppUser, id: &str) -> RoomMessage {
    let event = user.wait_for(WAIT, |e| {
        e.groupchat()
            .is_some_and(|m| !m.delayed && m.id.as_deref() == Some(id))
    });
    event.groupchat().expect("a groupchat").clone()
}

#[test]
fn two_users_in_a_room_see_each_others_messages() {
    let prosody = server("room");
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    let bob = XmppUser::connect(&prosody, "bob", "pw");
    assert!(alice.jid().starts_with("alice@hub.lan/"), "{}", alice.jid());
    let created = alice.join("lobby", "Alice");
    assert!(
        created.codes.contains(&201),
        "alice created the room: {created:?}"
    );
    let joined = bob.join("lobby@rooms.hub.lan", "Bob");
    assert!(!joined.codes.contains(&201));
    let nicks: Vec<&str> = joined.occupants.iter().map(|o| o.nick.as_str()).collect();
    assert!(
        nicks.contains(&"Alice") && nicks.contains(&"Bob"),
        "{nicks:?}"
    );
    let came = alice.wait_for(
        WAIT,
        |e| matches!(e, XmppEvent::OccupantJoined(o) if o.nick == "Bob"),
    );
    let XmppEvent::OccupantJoined(occupant) = came else {
        unreachable!()
    };
    // Alice owns the room: she sees Bob's real JID.
    assert_eq!(occupant.jid.as_deref(), Some(bob.jid()));

    let id = alice.say("lobby", "fair wind");
    let heard = live(&bob, &id);
    assert_eq!(
        (heard.room.as_str(), heard.nick.as_str()),
        ("lobby@rooms.hub.lan", "Alice")
    );
    assert_eq!(heard.body, "fair wind");
    assert!(heard.stanza_id.is_some(), "the room gives its own id");
    let reflected = live(&alice, &id);
    assert_eq!(
        reflected.stanza_id, heard.stanza_id,
        "one message, one archive id"
    );

    let id = bob.say("lobby", "and following seas");
    assert_eq!(live(&alice, &id).nick, "Bob");
    bob.leave("lobby");
    alice.wait_for(
        WAIT,
        |e| matches!(e, XmppEvent::OccupantLeft(o) if o.nick == "Bob"),
    );
}

#[test]
fn a_late_joiner_reads_earlier_messages_from_the_archive() {
    let prosody = server("mam");
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    alice.join("log", "Alice");
    let mut sent = Vec::new();
    for i in 0..60 {
        sent.push(alice.say("log", &format!("line {i}")));
    }
    let last = live(&alice, sent.last().expect("sent"));

    let bob = XmppUser::connect(&prosody, "bob", "pw");
    let joined = bob.join("log", "Bob");
    assert!(
        joined.history.is_empty(),
        "no history by default: {:?}",
        joined.history
    );
    // 60 is more than one page (Prosody serves at most 50 at a time).
    let archive = bob.mam("log", 100);
    let bodies: Vec<String> = archive.iter().map(|m| m.body.clone()).collect();
    let expected: Vec<String> = (0..60).map(|i| format!("line {i}")).collect();
    assert_eq!(bodies, expected);
    assert!(
        archive
            .iter()
            .all(|m| m.nick == "Alice" && m.delayed && m.stamp.is_some())
    );
    assert_eq!(
        archive.last().and_then(|m| m.stanza_id.clone()),
        last.stanza_id
    );
    let ids: Vec<Option<String>> = archive.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, sent.iter().cloned().map(Some).collect::<Vec<_>>());
    // The latest few only, still oldest first.
    let tail: Vec<String> = bob.mam("log", 3).into_iter().map(|m| m.body).collect();
    assert_eq!(tail, ["line 57", "line 58", "line 59"]);

    // History on join, when asked for.
    let carol = XmppUser::connect(&prosody, "carol", "pw");
    let joined = carol.join_with("log", "Carol", History::Stanzas(2));
    let history: Vec<&str> = joined.history.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(history, ["line 58", "line 59"]);
    // An archive that does not exist is the room's error, not a failure of the harness.
    let missing = carol.try_mam("nowhere", 5).expect_err("no such room");
    assert_eq!(missing.condition, "item-not-found", "{missing}");
}

#[test]
fn a_chat_with_a_receipt_request_is_acknowledged() {
    let prosody = server("receipt");
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    let bob = XmppUser::connect(&prosody, "bob", "pw");
    let id = alice.chat("bob@hub.lan", "ahoy", true);
    let got = bob.wait_for(WAIT, |e| {
        e.chat().is_some_and(|m| m.id.as_deref() == Some(&id))
    });
    let message = got.chat().expect("a chat");
    assert_eq!(message.body, "ahoy");
    assert_eq!(message.from, alice.jid());
    assert!(message.receipt_requested);
    let receipt = alice.wait_for(WAIT, |e| matches!(e, XmppEvent::Receipt { .. }));
    assert_eq!(
        receipt,
        XmppEvent::Receipt {
            from: bob.jid().to_owned(),
            id: id.clone()
        }
    );
    // Without a request, no receipt; a user that does not answer receipts sends none.
    let quiet = XmppUser::connect_with(
        &prosody,
        "carol",
        "pw",
        UserOptions {
            auto_receipts: false,
            ..UserOptions::default()
        },
    );
    let id = alice.chat("carol@hub.lan", "anyone there?", true);
    quiet.wait_for(WAIT, |e| {
        e.chat().is_some_and(|m| m.id.as_deref() == Some(&id))
    });
    // Carol answers after reading it: a receipt she sent would have come before, on her stream.
    let marker = quiet.chat("alice@hub.lan", "read it, no receipt", false);
    let before = alice.events_until(WAIT, |e| {
        e.chat().is_some_and(|m| m.id.as_deref() == Some(&marker))
    });
    assert!(
        !before
            .iter()
            .any(|e| matches!(e, XmppEvent::Receipt { .. })),
        "carol sent no receipt: {before:?}"
    );
}

#[test]
fn a_subscription_is_answered_and_presence_follows() {
    let prosody = server("contacts");
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    let bob = XmppUser::connect(&prosody, "bob", "pw");
    alice.subscribe("bob@hub.lan");
    // slixmpp approves subscription requests by itself, as a friendly client would.
    alice.wait_for(WAIT, |e| {
        matches!(e, XmppEvent::Presence(p) if p.from == "bob@hub.lan" && p.kind == "subscribed")
    });
    bob.presence(None, None, Some("away"), Some("at sea"));
    alice.wait_for(WAIT, |e| {
        matches!(e, XmppEvent::Presence(p)
            if p.from == bob.jid() && p.show.as_deref() == Some("away")
                && p.status.as_deref() == Some("at sea"))
    });
    let roster = alice.roster();
    let bob_item = roster.get("bob@hub.lan").expect("bob is in alice's roster");
    assert!(
        ["to", "both"].contains(&bob_item.subscription.as_str()),
        "{roster:?}"
    );
}

#[test]
fn errors_kicks_and_raw_stanzas_come_back_as_events() {
    let prosody = Prosody::builder("errors").admin("carol@hub.lan").start();
    for user in ["alice", "bob", "carol"] {
        prosody.register(user, "pw");
    }
    let refused = XmppUser::try_connect(&prosody, "alice", "wrong", UserOptions::default())
        .expect_err("a wrong password");
    assert!(refused.contains("authentication failed"), "{refused}");

    let alice = XmppUser::connect(&prosody, "alice", "pw");
    let id = alice.chat("nobody@hub.lan", "hello?", false);
    let error = alice.wait_for(WAIT, |e| e.error().is_some());
    let error = error.error().expect("an error");
    assert_eq!(
        (error.kind, error.id.as_deref()),
        (StanzaKind::Message, Some(id.as_str()))
    );
    assert_eq!(error.condition, "service-unavailable", "{error}");
    // Nobody serves the component domain yet.
    let absent = alice
        .vcard("!a1b2c3d4@mesh.hub.lan")
        .expect_err("no component");
    assert_eq!(absent.condition, "remote-server-timeout", "{absent}");
    let info = alice
        .disco_info("rooms.hub.lan")
        .expect("the MUC service answers");
    assert!(info.has_feature("urn:xmpp:mam:2"), "{info:?}");
    assert!(info.identities.iter().any(|i| i.category == "conference"));

    let round_trip = alice.ping("hub.lan").expect("the server answers pings");
    assert!(round_trip < WAIT);
    // A raw iq: its answer is an event.
    alice.raw("<iq type='get' id='raw-ping' to='hub.lan'><ping xmlns='urn:xmpp:ping'/></iq>");
    let answer = alice.wait_for(WAIT, |e| matches!(e, XmppEvent::IqResult { .. }));
    assert!(matches!(answer, XmppEvent::IqResult { id, .. } if id == "raw-ping"));
    alice.raw("<iq type='get' id='raw-bad' to='hub.lan'><nonsense xmlns='urn:x:y'/></iq>");
    let answer = alice.wait_for(WAIT, |e| e.error().is_some());
    assert_eq!(
        answer.error().map(|e| e.condition.as_str()),
        Some("service-unavailable")
    );

    // A server admin owns every room: carol kicks bob from alice's room.
    alice.join("deck", "Alice");
    let bob = XmppUser::connect(&prosody, "bob", "pw");
    bob.join("deck", "Bob");
    let carol = XmppUser::connect(&prosody, "carol", "pw");
    carol.join("deck", "Carol");
    carol.kick("deck", "Bob").expect("an owner may kick");
    let out = bob.wait_for(
        WAIT,
        |e| matches!(e, XmppEvent::OccupantLeft(o) if o.is_self()),
    );
    assert!(matches!(out, XmppEvent::OccupantLeft(o) if o.was_kicked()));
    alice.wait_for(
        WAIT,
        |e| matches!(e, XmppEvent::OccupantLeft(o) if o.nick == "Bob" && o.was_kicked()),
    );
    // Bob is no moderator: his kick is refused.
    bob.join("deck", "Bob");
    let refused = bob.kick("deck", "Alice").expect_err("not a moderator");
    assert_eq!(refused.condition, "not-allowed", "{refused}");
}

#[test]
fn restart_keeps_the_persistent_room_and_its_archive() {
    let mut prosody = server("persist");
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    alice.join("harbour", "Alice");
    let first = alice.say("harbour", "before the restart");
    live(&alice, &first);

    prosody.restart();
    alice.wait_for(WAIT, |e| matches!(e, XmppEvent::Disconnected { .. }));
    assert_eq!(alice.reconnect(), ["harbour@rooms.hub.lan"]);
    let second = alice.say("harbour", "after the restart");
    live(&alice, &second);

    // Killed this time: nothing flushed on the way out.
    prosody.kill();
    alice.wait_for(WAIT, |e| matches!(e, XmppEvent::Disconnected { .. }));
    let away = XmppUser::try_connect(&prosody, "bob", "pw", UserOptions::default())
        .expect_err("nobody listens");
    assert!(away.contains("cannot connect"), "{away}");
    prosody.start_again();

    let bob = XmppUser::connect(&prosody, "bob", "pw");
    let joined = bob.join("harbour", "Bob");
    assert!(
        !joined.codes.contains(&201),
        "the room survived: {joined:?}"
    );
    let bodies: Vec<String> = bob.mam("harbour", 10).into_iter().map(|m| m.body).collect();
    assert_eq!(bodies, ["before the restart", "after the restart"]);
}

#[test]
fn every_call_is_bounded_even_when_the_server_hangs() {
    let mut prosody = server("bounded");
    let alice = XmppUser::connect_with(
        &prosody,
        "alice",
        "pw",
        UserOptions {
            timeout: Duration::from_secs(2),
            ..UserOptions::default()
        },
    );
    prosody.pause();
    let started = Instant::now();
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| alice.disco_info("hub.lan")));
    let message = *outcome
        .expect_err("a hung server fails the call")
        .downcast::<String>()
        .expect("a message");
    assert!(message.contains("no answer within"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    prosody.resume();
    alice.disco_info("hub.lan").expect("answers again");
}

#[test]
fn raw_bad_input_is_answered_and_the_user_reconnects_after_an_oversize_stanza() {
    let prosody = Prosody::builder("bad-input")
        .global_option("c2s_stanza_size_limit = 10000")
        .start();
    prosody.register("alice", "pw");
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    alice.join("lobby", "Alice");
    // Prosody itself refuses malformed JIDs: such stanzas never reach a component.
    for (id, to) in [("bad-1", "a@@b"), ("bad-2", "!a1b2c3d4@mesh.hub.lan/")] {
        alice.raw(&format!(
            "<message to='{to}' id='{id}' type='chat'><body>x</body></message>"
        ));
        let error = alice.wait_for(WAIT, |e| e.error().is_some());
        let error = error.error().expect("an error");
        assert_eq!(error.id.as_deref(), Some(id));
        assert_eq!(error.condition, "jid-malformed", "{error}");
    }
    // Over the server's stanza size limit: the stream is closed with a stream error.
    alice.raw(&format!(
        "<message to='lobby@rooms.hub.lan' type='groupchat'><body>{}</body></message>",
        "x".repeat(20_000)
    ));
    let closed = alice.wait_for(WAIT, |e| matches!(e, XmppEvent::StreamError { .. }));
    assert!(
        matches!(&closed, XmppEvent::StreamError { condition, .. } if condition == "policy-violation"),
        "{closed:?}"
    );
    alice.wait_for(WAIT, |e| matches!(e, XmppEvent::Disconnected { .. }));
    assert_eq!(alice.reconnect(), ["lobby@rooms.hub.lan"]);
    let id = alice.say("lobby", "back");
    live(&alice, &id);
    assert!(alice.transcript().contains("policy-violation"));
}

#[test]
fn the_clients_stanza_readers_pass_their_unit_tests() {
    let mut cmd = Command::new(xmpp_user::python());
    cmd.args(["-m", "unittest", "-v", "test_xmpp_stanzas"])
        .current_dir(xmpp_user::python_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run_with_limit(cmd, Duration::from_secs(60), "python unittest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
