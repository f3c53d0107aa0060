//! The XMPP link (`archipel_adapters::xmpp`) against a real Prosody and slixmpp users: rooms
//! created with MAM and spoken in by node occupants, users' room messages and chats reaching
//! the owner, contacts, bounced oversize bodies, restarts, kicks and nick conflicts.

#[path = "xmpp_link/common.rs"]
mod common;

use archipel_adapters::xmpp::{Contact, ErrorCondition, XmppCounters, XmppEvent};
use archipel_e2e::prosody::Prosody;
use archipel_e2e::xmpp_user::{self, XmppUser};
use common::{TestLink, WAIT, config};
use mesh_core::DeliveryStatus;

/// A server with `alice`, `bob` and `carol` (password `pw`); carol is an admin (owns every
/// room, so she may kick).
fn server(tag: &str) -> Prosody {
    let prosody = Prosody::builder(tag).admin("carol@hub.lan").start();
    for user in ["alice", "bob", "carol"] {
        prosody.register(user, "pw");
    }
    prosody
}

/// Waits for `user`'s live room message with `body`.
fn live(user: &XmppUser, body: &str) -> xmpp_user::RoomMessage {
    let e = user.wait_for(WAIT, |e| {
        e.groupchat().is_some_and(|m| !m.delayed && m.body == body)
    });
    e.groupchat().expect("a groupchat").clone()
}

#[test]
fn a_node_speaks_once_in_a_kept_room_that_archives() {
    let prosody = server("link-room");
    let link = TestLink::connected(config(&prosody), &["longfast"]);
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    alice.join("longfast", "Alice");
    assert_eq!(
        link.say("longfast", "!a1b2c3d4", "Amira", "hello mesh"),
        DeliveryStatus::Delivered
    );
    let m = live(&alice, "hello mesh");
    assert_eq!(m.nick, "Amira");
    // Once: a marker said after it arrives with nothing of it in between.
    let marker = alice.say("longfast", "marker");
    let between = alice.events_until(WAIT, |e| {
        e.groupchat()
            .is_some_and(|m| m.id.as_deref() == Some(&marker))
    });
    assert!(
        !between
            .iter()
            .any(|e| e.groupchat().is_some_and(|m| m.body == "hello mesh")),
        "said twice: {between:#?}"
    );
    // Persistent, public, archived, named.
    let info = alice
        .disco_info(&prosody.room_jid("longfast"))
        .expect("the room answers");
    for feature in ["muc_persistent", "muc_public", "urn:xmpp:mam:2"] {
        assert!(info.has_feature(feature), "{feature} missing: {info:?}");
    }
    assert!(
        info.identities
            .iter()
            .any(|i| i.name.as_deref() == Some("Mesh longfast")),
        "{info:?}"
    );
    // A late joiner reads it from the archive.
    let bob = XmppUser::connect(&prosody, "bob", "pw");
    bob.join("longfast", "Bob");
    let archive = bob.mam("longfast", 10);
    assert!(
        archive
            .iter()
            .any(|m| m.body == "hello mesh" && m.nick == "Amira"),
        "{archive:?}"
    );
    // Shutting down takes our occupants out of the room.
    alice.drain_events();
    link.shutdown();
    for nick in ["Amira", "archipel"] {
        alice.wait_for(
            WAIT,
            |e| matches!(e, xmpp_user::XmppEvent::OccupantLeft(o) if o.nick == nick),
        );
    }
    let stopped = link.rt.block_on(link.handle.connected());
    assert!(stopped.is_err(), "a stopped link says so");
    assert!(matches!(
        link.say("longfast", "!a1b2c3d4", "Amira", "too late"),
        DeliveryStatus::Unreachable { .. }
    ));
}

#[test]
fn users_room_messages_reach_the_owner_with_their_real_jid_and_ours_do_not() {
    let prosody = server("link-groupchat");
    let mut link = TestLink::connected(config(&prosody), &["longfast"]);
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    alice.join("longfast", "Alice");
    assert!(
        link.say("longfast", "!a1b2c3d4", "Amira", "from the mesh")
            .is_delivered()
    );
    let id = alice.say("longfast", "from alice");
    let got = link.wait_for(|e| matches!(e, XmppEvent::Groupchat(_)));
    let XmppEvent::Groupchat(m) = got else {
        unreachable!()
    };
    assert_eq!(
        (m.room.as_str(), m.nick.as_str(), m.body.as_str()),
        ("longfast", "Alice", "from alice")
    );
    assert_eq!(
        m.real_jid.as_deref(),
        Some(alice.jid()),
        "the full JID, to answer"
    );
    assert_eq!(m.id.as_deref(), Some(id.as_str()));
    // Neither our own occupant's message nor a second copy of alice's came.
    assert!(
        link.say("longfast", "!a1b2c3d4", "Amira", "flush")
            .is_delivered()
    );
    let rest = link.drain();
    assert!(
        !rest.iter().any(|e| matches!(e, XmppEvent::Groupchat(_))),
        "{rest:#?}"
    );
    // Too long: bounced to alice herself, counted, never passed on.
    let long = "y".repeat(1500);
    let big = alice.say("longfast", &long);
    let e = alice.wait_for(WAIT, |e| e.error().is_some());
    let err = e.error().expect("a bounce");
    assert_eq!(
        (err.condition.as_str(), err.id.as_deref()),
        ("not-acceptable", Some(big.as_str()))
    );
    assert_eq!(err.text.as_deref(), Some("text above 1024 bytes"));
    link.wait_for(|e| matches!(e, XmppEvent::Problem(p) if p.contains("Alice in room `longfast`")));
    assert_eq!(XmppCounters::get(&link.handle.counters().bounced), 1);
    assert!(
        !link
            .seen
            .iter()
            .any(|e| matches!(e, XmppEvent::Groupchat(m) if m.body == long))
    );
    link.shutdown();
}

#[test]
fn what_was_said_while_the_link_was_away_is_not_replayed_as_new() {
    let prosody = server("link-history");
    let first = TestLink::connected(config(&prosody), &["longfast"]);
    first.shutdown();
    drop(first);
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    alice.join("longfast", "Alice");
    alice.say("longfast", "while the link was away");
    live(&alice, "while the link was away");
    let mut link = TestLink::connected(config(&prosody), &["longfast"]);
    alice.say("longfast", "after it came back");
    let XmppEvent::Groupchat(m) = link.wait_for(|e| matches!(e, XmppEvent::Groupchat(_))) else {
        unreachable!()
    };
    assert_eq!(
        m.body, "after it came back",
        "history was reported: {:#?}",
        link.seen
    );
    link.shutdown();
}

#[test]
fn chats_receipts_and_errors_go_both_ways() {
    let prosody = server("link-chat");
    let mut link = TestLink::connected(config(&prosody), &[]);
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    let node = format!("!a1b2c3d4@{}", prosody.component_domain());
    let id = alice.chat(&node, "hello node", true);
    let XmppEvent::Chat(c) = link.wait_for(|e| matches!(e, XmppEvent::Chat(_))) else {
        unreachable!()
    };
    assert_eq!(
        (c.from.as_str(), c.to_local.as_str(), c.body.as_str()),
        (alice.jid(), "!a1b2c3d4", "hello node")
    );
    assert!(c.wants_receipt);
    assert_eq!(c.id.as_deref(), Some(id.as_str()));
    link.handle.receipt("!a1b2c3d4", alice.jid(), &id);
    alice.wait_for(WAIT, |e| matches!(e, xmpp_user::XmppEvent::Receipt { id: r, from } if *r == id && from.starts_with(&node)));
    assert_eq!(
        link.chat("!a1b2c3d4", alice.bare_jid(), "hello alice"),
        DeliveryStatus::Delivered
    );
    let e = alice.wait_for(WAIT, |e| e.chat().is_some());
    let m = e.chat().expect("a chat");
    assert_eq!(
        (m.from.as_str(), m.body.as_str()),
        (node.as_str(), "hello alice")
    );
    link.handle.error(
        "!a1b2c3d4",
        alice.jid(),
        Some(&id),
        ErrorCondition::RecipientUnavailable,
        "node asleep",
    );
    let e = alice.wait_for(WAIT, |e| e.error().is_some());
    let err = e.error().expect("an error");
    assert_eq!(
        (
            err.condition.as_str(),
            err.text.as_deref(),
            err.id.as_deref()
        ),
        (
            "recipient-unavailable",
            Some("node asleep"),
            Some(id.as_str())
        )
    );
    // Too long: bounced to alice, counted, reported; never passed on.
    let long = "x".repeat(2000);
    let big = alice.chat(&node, &long, false);
    let e = alice.wait_for(WAIT, |e| e.error().is_some());
    let err = e.error().expect("a bounce");
    assert_eq!(
        (err.condition.as_str(), err.id.as_deref()),
        ("not-acceptable", Some(big.as_str()))
    );
    assert_eq!(err.text.as_deref(), Some("text above 1024 bytes"));
    link.wait_for(|e| matches!(e, XmppEvent::Problem(p) if p.contains("text above 1024 bytes")));
    assert_eq!(XmppCounters::get(&link.handle.counters().bounced), 1);
    assert!(
        !link
            .seen
            .iter()
            .any(|e| matches!(e, XmppEvent::Chat(c) if c.body == long))
    );
    link.shutdown();
}

#[test]
fn contacts_answer_subscriptions_presence_vcard_and_disco() {
    let prosody = server("link-contacts");
    let link = TestLink::connected(config(&prosody), &[]);
    let mut node = Contact {
        local: "!a1b2c3d4".into(),
        available: false,
        status: "heard 4 min ago, 2 hops".into(),
        long_name: Some("Harbour Relay".into()),
        short_name: Some("HR".into()),
        hardware: Some("RAK4631".into()),
    };
    link.handle.set_contact(node.clone());
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    let jid = format!("!a1b2c3d4@{}", prosody.component_domain());
    alice.subscribe(&jid);
    alice.wait_for(WAIT, |e| matches!(e, xmpp_user::XmppEvent::Presence(p) if p.from == jid && p.kind == "subscribed"));
    alice.wait_for(WAIT, |e| matches!(e, xmpp_user::XmppEvent::Presence(p)
        if p.from == jid && p.show.as_deref() == Some("away") && p.status.as_deref() == Some("heard 4 min ago, 2 hops")));
    node.available = true;
    node.status = "heard just now".into();
    link.handle.set_contact(node);
    alice.wait_for(WAIT, |e| {
        matches!(e, xmpp_user::XmppEvent::Presence(p)
        if p.from == jid && p.show.is_none() && p.status.as_deref() == Some("heard just now"))
    });
    let card = alice.vcard(&jid).expect("a vCard");
    assert_eq!(
        (card.get("FN"), card.get("NICKNAME"), card.get("DESC")),
        (Some("Harbour Relay"), Some("HR"), Some("RAK4631"))
    );
    let unknown = alice
        .vcard(&format!("!ffffffff@{}", prosody.component_domain()))
        .expect_err("no such node");
    assert_eq!(unknown.condition, "item-not-found");
    let info = alice
        .disco_info(prosody.component_domain())
        .expect("the domain answers");
    assert!(
        info.identities
            .iter()
            .any(|i| i.category == "gateway" && i.kind == "meshtastic"),
        "{info:?}"
    );
    for f in [
        "http://jabber.org/protocol/disco#info",
        "vcard-temp",
        "urn:xmpp:ping",
        "urn:xmpp:receipts",
    ] {
        assert!(info.has_feature(f), "{f}: {info:?}");
    }
    assert!(
        alice
            .disco_info(&jid)
            .expect("the node answers")
            .has_feature("vcard-temp")
    );
    // Shutting down says goodbye: the node goes unavailable for its follower.
    link.shutdown();
    alice.wait_for(WAIT, |e| {
        matches!(e, xmpp_user::XmppEvent::Presence(p) if p.from == jid && p.kind == "unavailable")
    });
}

#[test]
fn after_a_server_restart_the_link_reconnects_rejoins_and_speaks() {
    let mut prosody = server("link-restart");
    let mut link = TestLink::connected(config(&prosody), &["longfast"]);
    assert!(
        link.say("longfast", "!a1b2c3d4", "Amira", "before")
            .is_delivered()
    );
    prosody.stop();
    link.wait_for(|e| matches!(e, XmppEvent::Disconnected { .. }));
    let down = link.say("longfast", "!a1b2c3d4", "Amira", "while down");
    assert!(
        matches!(down, DeliveryStatus::Unreachable { .. }),
        "{down:?}"
    );
    assert!(!link.handle.is_connected());
    prosody.start_again();
    link.wait_for(|e| *e == XmppEvent::Connected);
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    alice.join("longfast", "Alice");
    let joined = alice.join_with("longfast", "Alice2", xmpp_user::History::None);
    assert!(
        joined.occupants.iter().any(|o| o.nick == "archipel"),
        "the bridge is back: {joined:?}"
    );
    assert!(
        joined.occupants.iter().any(|o| o.nick == "Amira"),
        "the occupant is back: {joined:?}"
    );
    assert_eq!(
        link.say("longfast", "!a1b2c3d4", "Amira", "after"),
        DeliveryStatus::Delivered
    );
    assert_eq!(live(&alice, "after").nick, "Amira");
    assert!(XmppCounters::get(&link.handle.counters().reconnects) >= 1);
    link.shutdown();
}

#[test]
fn kicks_are_noticed_and_rejoined_and_nick_conflicts_take_the_next_nick() {
    let prosody = server("link-kick");
    let mut link = TestLink::connected(config(&prosody), &["longfast"]);
    let carol = XmppUser::connect(&prosody, "carol", "pw");
    carol.join("longfast", "Carol");
    carol.drain_events();
    carol
        .kick("longfast", "archipel")
        .expect("an admin may kick");
    link.wait_for(|e| matches!(e, XmppEvent::Problem(p) if p.contains("the bridge was kicked")));
    carol.wait_for(
        WAIT,
        |e| matches!(e, xmpp_user::XmppEvent::OccupantJoined(o) if o.nick == "archipel"),
    );
    assert!(say_once_joined(&mut link, "one").is_delivered());
    carol.drain_events();
    carol.kick("longfast", "Amira").expect("an admin may kick");
    link.wait_for(
        |e| matches!(e, XmppEvent::Problem(p) if p.contains("occupant !a1b2c3d4 was kicked")),
    );
    carol.wait_for(
        WAIT,
        |e| matches!(e, xmpp_user::XmppEvent::OccupantJoined(o) if o.nick == "Amira"),
    );
    assert!(
        link.say("longfast", "!a1b2c3d4", "Amira", "two")
            .is_delivered()
    );
    assert_eq!(live(&carol, "two").nick, "Amira");
    // Bob holds "Bo": the node takes "Bo (2)" and keeps it.
    let bob = XmppUser::connect(&prosody, "bob", "pw");
    bob.join("longfast", "Bo");
    assert!(
        link.say("longfast", "!deadbeef", "Bo", "three")
            .is_delivered()
    );
    assert_eq!(live(&carol, "three").nick, "Bo (2)");
    assert!(
        link.say("longfast", "!deadbeef", "Bo", "four")
            .is_delivered()
    );
    assert_eq!(live(&carol, "four").nick, "Bo (2)");
    link.shutdown();
}

#[test]
fn a_wrong_secret_is_a_problem_and_saying_is_unreachable() {
    let prosody = server("link-secret");
    let mut c = config(&prosody);
    c.secret = "not the secret".into();
    let mut link = TestLink::start(c, &["longfast"]);
    link.wait_for(|e| matches!(e, XmppEvent::Problem(p) if p.contains("wrong secret")));
    let status = link.say("longfast", "!a1b2c3d4", "Amira", "hello");
    assert!(
        matches!(status, DeliveryStatus::Unreachable { .. }),
        "{status:?}"
    );
    assert!(!format!("{:?}", common::config(&prosody)).contains(prosody.secret()));
    link.shutdown();
}

#[test]
fn an_idle_link_stays_up_because_its_keepalives_and_self_pings_are_answered() {
    let prosody = server("link-idle");
    let mut c = config(&prosody);
    c.keepalive_every = std::time::Duration::from_millis(200);
    c.self_ping_every = std::time::Duration::from_millis(300);
    c.ping_timeout = std::time::Duration::from_secs(1);
    let mut link = TestLink::connected(c, &["longfast"]);
    let before = XmppCounters::get(&link.handle.counters().stanzas_in);
    // Several periods of both timers: an unanswered one would end the stream or re-join.
    let window = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < window {
        let events = link.drain();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, XmppEvent::Disconnected { .. } | XmppEvent::Problem(_))),
            "{events:#?}"
        );
        std::thread::park_timeout(std::time::Duration::from_millis(100));
    }
    assert!(link.handle.is_connected());
    let answers = XmppCounters::get(&link.handle.counters().stanzas_in) - before;
    assert!(answers >= 10, "only {answers} stanzas came in 3 s");
    assert!(
        link.say("longfast", "!a1b2c3d4", "Amira", "still here")
            .is_delivered()
    );
    link.shutdown();
}

/// Says `body` as Amira in `longfast`, again while the link answers Unreachable because the
/// bridge is not (yet) back in the room: a user can see the bridge rejoin before the link has
/// read the room's answer.
fn say_once_joined(link: &mut TestLink, body: &str) -> DeliveryStatus {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match link.say("longfast", "!a1b2c3d4", "Amira", body) {
            DeliveryStatus::Unreachable { .. } if std::time::Instant::now() < deadline => {
                std::thread::park_timeout(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Carol (an admin) destroys `room` and waits for the server's answer.
fn destroy(carol: &XmppUser, room: &str) {
    carol.raw(&format!(
        "<iq type='set' id='destroy-1' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <destroy><reason>closed by the operator</reason></destroy></query></iq>"
    ));
    carol.wait_for(
        WAIT,
        |e| matches!(e, xmpp_user::XmppEvent::IqResult { id, .. } if id == "destroy-1"),
    );
}

#[test]
fn a_room_destroyed_under_the_bridge_is_made_again() {
    // Without tombstones a destroyed room may be made again at once.
    let prosody = Prosody::builder("link-destroyed")
        .admin("carol@hub.lan")
        .muc_option("muc_tombstones = false")
        .start();
    prosody.register("carol", "pw");
    let mut link = TestLink::connected(config(&prosody), &["longfast"]);
    let carol = XmppUser::connect(&prosody, "carol", "pw");
    let room = prosody.room_jid("longfast");
    destroy(&carol, &room);
    link.wait_for(|e| matches!(e, XmppEvent::Problem(p) if p.contains("the bridge was dropped; joining again")));
    // Until the bridge is back (after a short pause) the room is "not joined".
    assert!(say_once_joined(&mut link, "back").is_delivered());
    // Made again by the bridge's join, and configured again.
    let info = carol.disco_info(&room).expect("the room exists again");
    assert!(info.has_feature("muc_persistent"), "{info:?}");
    assert!(info.has_feature("urn:xmpp:mam:2"), "{info:?}");
    link.shutdown();
}

#[test]
fn a_room_closed_for_good_is_a_problem_and_not_joined() {
    // Prosody's default: a destroyed persistent room leaves a tombstone answering `gone`.
    let prosody = server("link-gone");
    let mut link = TestLink::connected(config(&prosody), &["longfast"]);
    let carol = XmppUser::connect(&prosody, "carol", "pw");
    destroy(&carol, &prosody.room_jid("longfast"));
    link.wait_for(|e| matches!(e, XmppEvent::Problem(p) if p.contains("refused the join: gone")));
    let status = link.say("longfast", "!a1b2c3d4", "Amira", "anyone?");
    assert!(
        matches!(status, DeliveryStatus::Unreachable { .. }),
        "{status:?}"
    );
    link.shutdown();
}

#[test]
fn a_stanza_the_parsers_refuse_does_not_take_the_link_down() {
    let prosody = server("link-garbage");
    let mut link = TestLink::connected(config(&prosody), &[]);
    let alice = XmppUser::connect(&prosody, "alice", "pw");
    let node = format!("!a1b2c3d4@{}", prosody.component_domain());
    alice.raw(&format!(
        "<message type='chat' to='{node}' id='dup'><body>one</body><body>two</body></message>"
    ));
    alice.raw(&format!(
        "<message type='bogus' to='{node}' id='bogus'><body>three</body></message>"
    ));
    alice.raw(&format!("<iq type='get' to='{node}' id='two-payloads'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>"));
    alice.chat(&node, "after the garbage", false);
    link.wait_for(|e| matches!(e, XmppEvent::Chat(c) if c.body == "after the garbage"));
    // The unreadable message is answered, and counted.
    let e = alice.wait_for(WAIT, |e| {
        e.error().is_some_and(|e| e.id.as_deref() == Some("bogus"))
    });
    assert_eq!(e.error().map(|e| e.condition.as_str()), Some("bad-request"));
    assert!(XmppCounters::get(&link.handle.counters().invalid_in) >= 1);
    assert!(
        !link
            .seen
            .iter()
            .any(|e| matches!(e, XmppEvent::Disconnected { .. })),
        "{:#?}",
        link.seen
    );
    link.shutdown();
}

#[test]
fn a_server_that_stops_answering_is_noticed_and_the_link_comes_back() {
    let mut prosody = server("link-frozen");
    let mut c = config(&prosody);
    c.keepalive_every = std::time::Duration::from_millis(300);
    c.ping_timeout = std::time::Duration::from_secs(1);
    let mut link = TestLink::connected(c, &["longfast"]);
    // Frozen: the connection stays open and nothing is answered (a half-open stream).
    prosody.pause();
    let lost = link.wait_for(|e| matches!(e, XmppEvent::Disconnected { .. }));
    assert!(
        matches!(&lost, XmppEvent::Disconnected { reason } if reason.contains("did not answer a ping")),
        "{lost:?}"
    );
    prosody.resume();
    link.wait_for(|e| *e == XmppEvent::Connected);
    assert!(
        link.say("longfast", "!a1b2c3d4", "Amira", "thawed")
            .is_delivered()
    );
    link.shutdown();
}
