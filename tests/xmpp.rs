//! XMPP end to end: `archipel run` between a simulated mesh and a real Prosody, with slixmpp
//! users (alice, bob) on one side and the mesh's people (Amira on PKI firmware, Olaf on older
//! firmware, Zed) on the other, each through Archipel's own radio link to their simulated radio.
//! What is checked is what each side sees.

#[path = "xmpp/world.rs"]
mod world;

use std::time::{Duration, Instant};

use archipel_e2e::bridge::{LIMIT, heard_until, say};
use archipel_e2e::xmpp_user::{ErrorType, History, XmppEvent};
use mesh_core::{NodeId, Packet, proto};
use prost::Message;
use world::*;

/// The NodeInfo a packet carries, if it is one.
fn node_info(p: &Packet) -> Option<proto::User> {
    let data = p.data()?;
    if data.portnum != proto::PortNum::NodeinfoApp as i32 {
        return None;
    }
    proto::User::decode(&data.payload[..]).ok()
}

// ---------------------------------------------------------------------------------------------
// Rooms

#[test]
fn a_mesh_text_appears_in_the_room_once_from_its_senders_nick_and_a_late_joiner_reads_it_from_the_archive()
 {
    let mut w = World::start("xmpp-room");
    let alice = w.user("alice");
    alice.join(ROOM, "alice");
    let hello = say(&w.amira, 0, 0x5a11_0001, "water at the school from 6");
    assert_eq!(
        room_text(&alice, &hello.text),
        "Amira",
        "said by Amira's occupant"
    );
    let marker = say(&w.amira, 0, 0x5a11_0002, "marker");
    let events = events_until_text(&alice, &marker.text);
    let again = events
        .iter()
        .filter(|e| e.groupchat().is_some_and(|m| m.body == hello.text))
        .count();
    assert_eq!(again, 0, "once in the room");
    w.gw.wait("relayed to the room", |l| hello.relayed_to("xmpp", l));

    // Bob was not there: the room's archive has it, from Amira.
    let bob = w.user("bob");
    bob.join(ROOM, "bob");
    let archive = bob.mam(ROOM, 20);
    let found: Vec<_> = archive.iter().filter(|m| m.body == hello.text).collect();
    assert_eq!(found.len(), 1, "in the archive once: {archive:#?}");
    assert_eq!(found[0].nick, "Amira");
}

#[test]
fn a_room_message_reaches_the_mesh_from_the_users_own_virtual_node_introduced_by_its_node_info() {
    let w = World::start("xmpp-room-up");
    let alice = w.user("alice");
    alice.join(ROOM, "alice");
    alice.say(ROOM, "the bridge on Elm St is closed");
    let got = w.amira.packets_until(LIMIT, |p| {
        p.text().as_deref() == Some("the bridge on Elm St is closed")
    });
    let text = got.last().unwrap();
    let virtual_node = text.from();
    assert_ne!(
        virtual_node,
        NodeId::new(A),
        "not sent as the gateway's radio"
    );
    assert!(text.to().is_broadcast());
    let info = got
        .iter()
        .filter(|p| p.from() == virtual_node)
        .find_map(node_info)
        .expect("the virtual node introduced itself before it spoke");
    assert_eq!(info.long_name, "alice (xmpp)");
    assert_eq!(info.id, virtual_node.to_string());
    assert_eq!(info.public_key.len(), 32, "it publishes its key");

    // The room shows it once (alice's own reflection), and the mesh does not echo it back
    // into the room as a second copy.
    let marker = say(&w.amira, 0, 0x5a12_0001, "marker after alice");
    let events = events_until_text(&alice, &marker.text);
    let copies = events
        .iter()
        .filter(|e| e.groupchat().is_some_and(|m| m.body.contains("Elm St")))
        .count();
    assert_eq!(copies, 1, "{events:#?}");
}

#[test]
fn a_room_set_to_send_as_the_gateway_prefixes_the_nick() {
    let w = World::start_with(
        "xmpp-room-gw",
        "[[xmpp.room]]\nchannel = \"Harbour\"\nroom = \"harbour\"\nsend_as = \"gateway\"\n",
    );
    let alice = w.user("alice");
    alice.join(ROOM, "Alice");
    alice.say(ROOM, "clinic open");
    let got = w.amira.packets_until(LIMIT, |p| {
        p.text().as_deref() == Some("[Alice] clinic open")
    });
    assert_eq!(
        got.last().unwrap().from(),
        NodeId::new(A),
        "sent as the gateway's radio"
    );
}

// ---------------------------------------------------------------------------------------------
// Direct messages

/// A direct message from a mesh person's radio asking for the mesh's ACK; the outcome is what
/// their app shows (delivered once the hub, as the virtual node, acknowledged it).
fn dm_with_ack(
    client: &archipel_e2e::MeshClient,
    to: NodeId,
    id: u32,
    text: &str,
) -> mesh_core::DeliveryStatus {
    let packet = Packet::from_data(
        proto::MeshPacket {
            to: to.get(),
            id,
            hop_limit: 3,
            want_ack: true,
            ..Default::default()
        },
        proto::Data {
            portnum: proto::PortNum::TextMessageApp as i32,
            payload: text.as_bytes().to_vec(),
            ..Default::default()
        },
    );
    client.send(packet)
}

/// alice writes to `to`, asking for a receipt; the mesh node's radio gets it from alice's
/// virtual node and acknowledges it, and that ACK comes back as the receipt. Returns the
/// virtual node and whether the packet came PKI-encrypted.
fn dm_to_mesh(
    w: &World,
    alice: &archipel_e2e::xmpp_user::XmppUser,
    to: u32,
    body: &str,
) -> (NodeId, bool) {
    let client = match to {
        AMIRA => &w.amira,
        OLAF => &w.olaf,
        _ => &w.zed,
    };
    let id = alice.chat(&w.node_jid(to), body, true);
    let got = client.packets_until(LIMIT, |p| p.text().as_deref() == Some(body));
    let p = got.last().unwrap();
    assert_eq!(p.to(), NodeId::new(to));
    assert!(p.want_ack(), "asks the mesh for an ACK");
    let receipt = alice.wait_for(
        LIMIT,
        |e| matches!(e, XmppEvent::Receipt { id: r, .. } if *r == id),
    );
    if let XmppEvent::Receipt { from, .. } = receipt {
        assert!(
            from.starts_with(&w.node_jid(to)),
            "the receipt is from the node: {from}"
        );
    }
    (p.from(), p.meta().pki_encrypted)
}

#[test]
fn direct_messages_go_both_ways_with_receipts_pki_with_current_firmware_and_the_channel_key_with_older()
 {
    let w = World::start("xmpp-dm");
    // Both are heard first (a direct message for a node not heard waits for it).
    say(&w.amira, 0, 0x5a21_0001, "Amira here");
    say(&w.olaf, 0, 0x5a21_0002, "Olaf here");
    let alice = w.user("alice");

    let (v, pki) = dm_to_mesh(&w, &alice, AMIRA, "are you at the school?");
    assert!(pki, "Amira's firmware got it PKI-encrypted");
    let reply = "yes, with 12 people";
    assert_eq!(
        dm_with_ack(&w.amira, v, 0x5a21_0003, reply),
        mesh_core::DeliveryStatus::Delivered,
        "Amira's radio got the virtual node's ACK"
    );
    let chat = alice.wait_for(LIMIT, |e| e.chat().is_some_and(|c| c.body == reply));
    let chat = chat.chat().unwrap();
    assert!(
        chat.from.starts_with(&w.node_jid(AMIRA)),
        "from Amira's JID: {}",
        chat.from
    );

    let (v2, pki) = dm_to_mesh(&w, &alice, OLAF, "do you need water?");
    assert_eq!(v2, v, "one virtual node per user");
    assert!(!pki, "Olaf's firmware has no PKI: the channel key");
    let reply = "two jerrycans please";
    assert_eq!(
        dm_with_ack(&w.olaf, v, 0x5a21_0004, reply),
        mesh_core::DeliveryStatus::Delivered
    );
    let chat = alice.wait_for(LIMIT, |e| e.chat().is_some_and(|c| c.body == reply));
    assert!(chat.chat().unwrap().from.starts_with(&w.node_jid(OLAF)));
}

#[test]
fn a_direct_message_for_a_node_not_heard_waits_and_is_delivered_once_that_node_is_heard() {
    let mut w = World::start("xmpp-dm-wait");
    let alice = w.user("alice");
    let id = alice.chat(&w.node_jid(ZED), "call your mother", true);
    let held = w.gw.wait("held for Zed", |l| {
        l.contains(" held ") && l.contains("waiting for Zed's radio")
    });
    assert!(held.contains("for north"), "{held}");
    // Zed speaks: the gateway's radio hears him, and the message goes.
    say(&w.zed, 0, 0x5a31_0001, "Zed is back");
    let got = w
        .zed
        .packets_until(LIMIT, |p| p.text().as_deref() == Some("call your mother"));
    assert_eq!(got.last().unwrap().to(), NodeId::new(ZED));
    alice.wait_for(
        LIMIT,
        |e| matches!(e, XmppEvent::Receipt { id: r, .. } if *r == id),
    );
}

// ---------------------------------------------------------------------------------------------
// Contacts

#[test]
fn a_mesh_node_is_a_contact_with_presence_status_and_vcard_and_the_domain_says_what_it_is() {
    let w = World::start("xmpp-contact");
    say(&w.amira, 0, 0x5a41_0001, "Amira here");
    let alice = w.user("alice");
    let amira = w.node_jid(AMIRA);
    alice.subscribe(&amira);
    alice.wait_for(LIMIT, |e| match e {
        XmppEvent::Presence(p) => {
            p.from.starts_with(&amira)
                && p.show.is_none()
                && p.status.as_deref().is_some_and(|s| s.contains("heard"))
        }
        _ => false,
    });
    let card = alice.vcard(&amira).expect("a vCard");
    assert_eq!(card.get("FN"), Some("Amira"));
    let info = alice
        .disco_info(w.prosody.component_domain())
        .expect("disco answers");
    assert!(info.has_feature("urn:xmpp:receipts"), "{info:?}");
}

// ---------------------------------------------------------------------------------------------
// A server restart

#[test]
fn prosody_restarted_while_texts_flow_every_text_reaches_the_room_once_in_order() {
    let mut w = World::start("xmpp-restart");
    let mut sent = Vec::new();
    for i in 0..4 {
        sent.push(say(
            &w.amira,
            0,
            0x5a51_0000 + i,
            &format!("before restart {i}"),
        ));
    }
    let mark = w.gw.mark();
    w.prosody.restart();
    for i in 0..4 {
        sent.push(say(
            &w.amira,
            0,
            0x5a51_0100 + i,
            &format!("after restart {i}"),
        ));
    }
    w.gw.wait_endpoint_up(mark, "xmpp", "xmpp");
    let last = sent.last().unwrap().clone();
    w.gw.wait("the last text relayed", |l| last.relayed_to("xmpp", l));
    let bob = w.user("bob");
    bob.join_with(ROOM, "bob", History::None);
    let archive = bob.mam(ROOM, 50);
    let bodies: Vec<&str> = archive.iter().map(|m| m.body.as_str()).collect();
    let expected: Vec<&str> = sent.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        bodies,
        expected,
        "every text once, in order; the gateway printed:\n{}",
        w.gw.printed()
    );
    // The bridge is back in the room: a new text shows live.
    let live = say(&w.amira, 0, 0x5a51_0200, "live after the restart");
    assert_eq!(room_text(&bob, &live.text), "Amira");
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[test]
fn what_the_mesh_cannot_carry_is_refused_with_a_clear_error_and_a_flood_is_rate_limited() {
    let mut w = World::start_with("xmpp-bad", "rate_per_user = 6\nburst_per_user = 3\n");
    say(&w.amira, 0, 0x5a61_0001, "Amira here");
    let alice = w.user("alice");
    let amira = w.node_jid(AMIRA);

    let long = "x".repeat(300);
    alice.chat(&amira, &long, false);
    let e = alice.wait_for(LIMIT, |e| e.error().is_some());
    let e = e.error().unwrap();
    assert_eq!(e.condition, "not-acceptable", "{e:?}");
    assert!(
        e.text.as_deref().is_some_and(|t| t.contains("bytes")),
        "{e:?}"
    );

    for to in [
        format!("bob@{}", w.prosody.component_domain()),
        format!("!zz@{}", w.prosody.component_domain()),
        format!("!ffffffff@{}", w.prosody.component_domain()),
    ] {
        alice.chat(&to, "hello?", false);
        let e = alice.wait_for(LIMIT, |e| e.error().is_some());
        assert_eq!(
            e.error().unwrap().condition,
            "item-not-found",
            "{to}: {e:?}"
        );
        assert_ne!(e.error().unwrap().error_type, ErrorType::Missing);
    }

    alice.join(ROOM, "alice");
    for i in 0..6 {
        alice.say(ROOM, &format!("flood {i}"));
    }
    let marker_deadline = Instant::now() + LIMIT;
    let mut limited = 0;
    while limited < 3 && Instant::now() < marker_deadline {
        if let Some(XmppEvent::Error(e)) = alice.next_event(Duration::from_secs(5))
            && e.condition == "policy-violation"
        {
            limited += 1;
        }
    }
    assert_eq!(
        limited,
        3,
        "three of six refused past the burst of three:\n{}",
        alice.transcript()
    );
    let got = w
        .amira
        .packets_until(LIMIT, |p| p.text().as_deref() == Some("flood 2"));
    assert!(got.iter().all(|p| p.text().as_deref() != Some("flood 3")));
    let heard = heard_until(&w.amira, &say(&w.olaf, 0, 0x5a61_0002, "marker"));
    assert!(
        heard
            .iter()
            .all(|p| !p.text().unwrap_or_default().starts_with("flood 3")),
        "refused texts never reach the mesh"
    );
    w.gw.terminate();
    assert!(
        w.gw.summary_count("dropped").unwrap_or(0) >= 4,
        "counted:\n{}",
        w.gw.printed()
    );
}
