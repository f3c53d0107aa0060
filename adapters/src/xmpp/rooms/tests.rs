use super::*;

fn timings() -> Timings {
    Timings {
        reflection: Duration::from_secs(30),
        join: Duration::from_secs(30),
        self_ping: Duration::from_secs(30),
        rejoin: Duration::from_secs(2),
    }
}

fn spec(local: &str) -> RoomSpec {
    RoomSpec {
        local: local.into(),
        name: local.into(),
        description: String::new(),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Rooms with `longfast` kept, online, and the bridge joined (configuration asked for).
fn joined(now: Instant) -> Rooms<u32> {
    let mut rooms = Rooms::new("archipel", timings(), "t".into());
    rooms.keep(spec("longfast"), now);
    rooms.online(now);
    rooms.joined("longfast", &Who::Bridge, "archipel", true, now);
    rooms
}

fn says(actions: &[Action<u32>]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Say { local, body, .. } => Some((local.clone(), body.clone())),
            _ => None,
        })
        .collect()
}

fn settled(actions: &[Action<u32>]) -> Vec<(u32, DeliveryStatus)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Settle(w, s) => Some((*w, s.clone())),
            _ => None,
        })
        .collect()
}

fn say_id(actions: &[Action<u32>]) -> String {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Say { id, .. } => Some(id.clone()),
            _ => None,
        })
        .expect("a Say")
}

#[test]
fn going_online_joins_every_room_and_all_joined_comes_after_the_last_answer() {
    let now = Instant::now();
    let mut rooms: Rooms<u32> = Rooms::new("archipel", timings(), "t".into());
    rooms.keep(spec("a"), now);
    rooms.keep(spec("b"), now);
    let out = rooms.online(now);
    let joins = out
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Join {
                    who: Who::Bridge,
                    ..
                }
            )
        })
        .count();
    assert_eq!(joins, 2);
    assert!(!out.contains(&Action::AllJoined));
    let first = rooms.joined("a", &Who::Bridge, "archipel", true, now);
    assert_eq!(first, vec![Action::Configure { room: "a".into() }]);
    let last = rooms.joined("b", &Who::Bridge, "archipel", false, now);
    assert!(last.contains(&Action::AllJoined));
    // No rooms: up at once.
    let mut empty: Rooms<u32> = Rooms::new("archipel", timings(), "t".into());
    assert_eq!(empty.online(now), vec![Action::AllJoined]);
}

#[test]
fn a_say_joins_the_occupant_first_and_goes_out_on_its_self_presence() {
    let now = Instant::now();
    let mut rooms = joined(now);
    let out = rooms.say("longfast", "!a1b2c3d4", "Amira", "one".into(), 1, now);
    assert_eq!(
        out,
        vec![Action::Join {
            room: "longfast".into(),
            who: Who::Node("!a1b2c3d4".into()),
            nick: "Amira".into()
        }]
    );
    assert!(
        rooms
            .say("longfast", "!a1b2c3d4", "Amira", "two".into(), 2, now)
            .is_empty()
    );
    let out = rooms.joined(
        "longfast",
        &Who::Node("!a1b2c3d4".into()),
        "Amira",
        false,
        now,
    );
    assert_eq!(
        says(&out),
        [
            ("!a1b2c3d4".into(), "one".into()),
            ("!a1b2c3d4".into(), "two".into())
        ]
    );
    // Joined: the next one goes straight out.
    let out = rooms.say("longfast", "!a1b2c3d4", "Amira", "three".into(), 3, now);
    assert_eq!(says(&out).len(), 1);
}

#[test]
fn delivered_only_on_the_reflection_of_our_id_and_failed_when_none_comes() {
    let now = Instant::now();
    let mut rooms = joined(now);
    rooms.say("longfast", "!a1b2c3d4", "Amira", "x".into(), 1, now);
    let out = rooms.joined(
        "longfast",
        &Who::Node("!a1b2c3d4".into()),
        "Amira",
        false,
        now,
    );
    let id = say_id(&out);
    assert!(rooms.reflected("someone-elses-id").is_none());
    assert_eq!(
        rooms.reflected(&id),
        Some(Action::Settle(1, DeliveryStatus::Delivered))
    );
    assert!(rooms.reflected(&id).is_none(), "settled once");
    rooms.say("longfast", "!a1b2c3d4", "Amira", "y".into(), 2, now);
    let late = rooms.tick(now + secs(30));
    assert!(
        matches!(&settled(&late)[..], [(2, DeliveryStatus::Failed { .. })]),
        "{late:?}"
    );
}

#[test]
fn a_room_error_on_our_message_rejects_it() {
    let now = Instant::now();
    let mut rooms = joined(now);
    rooms.say("longfast", "!a1b2c3d4", "Amira", "x".into(), 1, now);
    let out = rooms.joined(
        "longfast",
        &Who::Node("!a1b2c3d4".into()),
        "Amira",
        false,
        now,
    );
    let id = say_id(&out);
    let refused = rooms.message_refused(&id, "forbidden", "");
    assert!(matches!(
        refused,
        Some(Action::Settle(1, DeliveryStatus::Rejected { .. }))
    ));
}

#[test]
fn a_nick_conflict_takes_the_next_nick_and_keeps_it_across_a_reconnect() {
    let now = Instant::now();
    let mut rooms = joined(now);
    let node = Who::Node("!a1b2c3d4".into());
    rooms.say("longfast", "!a1b2c3d4", "Amira", "x".into(), 1, now);
    let out = rooms.join_refused("longfast", &node, "conflict", "", now);
    assert_eq!(
        out,
        vec![Action::Join {
            room: "longfast".into(),
            who: node.clone(),
            nick: "Amira (2)".into()
        }]
    );
    rooms.joined("longfast", &node, "Amira (2)", false, now);
    assert!(rooms.is_ours("longfast", "Amira (2)"));
    assert!(!rooms.is_ours("longfast", "Amira"));
    rooms.offline("gone");
    let back = rooms.online(now);
    assert!(back.contains(&Action::Join {
        room: "longfast".into(),
        who: node,
        nick: "Amira (2)".into()
    }));
}

#[test]
fn another_join_error_rejects_what_waited() {
    let now = Instant::now();
    let mut rooms = joined(now);
    let node = Who::Node("!a1b2c3d4".into());
    rooms.say("longfast", "!a1b2c3d4", "Amira", "x".into(), 1, now);
    let out = rooms.join_refused("longfast", &node, "forbidden", "banned", now);
    assert!(
        matches!(&settled(&out)[..], [(1, DeliveryStatus::Rejected { reason })] if reason.contains("forbidden banned"))
    );
}

#[test]
fn saying_is_unreachable_while_offline_or_the_room_is_not_joined() {
    let now = Instant::now();
    let mut rooms: Rooms<u32> = Rooms::new("archipel", timings(), "t".into());
    rooms.keep(spec("longfast"), now);
    let out = rooms.say("longfast", "!a1b2c3d4", "Amira", "x".into(), 1, now);
    assert!(matches!(
        &settled(&out)[..],
        [(1, DeliveryStatus::Unreachable { .. })]
    ));
    rooms.online(now);
    let out = rooms.say("longfast", "!a1b2c3d4", "Amira", "x".into(), 2, now);
    assert!(
        matches!(&settled(&out)[..], [(2, DeliveryStatus::Unreachable { reason })] if reason.contains("not joined"))
    );
    let out = rooms.say("other", "!a1b2c3d4", "Amira", "x".into(), 3, now);
    assert!(matches!(
        &settled(&out)[..],
        [(3, DeliveryStatus::Unreachable { .. })]
    ));
}

#[test]
fn losing_the_stream_answers_every_waiter_unreachable() {
    let now = Instant::now();
    let mut rooms = joined(now);
    rooms.say("longfast", "!a1b2c3d4", "Amira", "x".into(), 1, now);
    rooms.joined(
        "longfast",
        &Who::Node("!a1b2c3d4".into()),
        "Amira",
        false,
        now,
    );
    rooms.say("longfast", "!deadbeef", "Bo", "y".into(), 2, now);
    let mut out = settled(&rooms.offline("server gone"));
    out.sort_by_key(|(w, _)| *w);
    assert_eq!(
        out,
        [
            (1, DeliveryStatus::unreachable("server gone")),
            (2, DeliveryStatus::unreachable("server gone"))
        ]
    );
    assert!(
        rooms.tick(now + secs(60)).is_empty(),
        "nothing more once offline"
    );
}

#[test]
fn a_kicked_bridge_joins_again_after_a_pause_but_a_nick_change_is_no_departure() {
    let now = Instant::now();
    let mut rooms = joined(now);
    assert!(
        rooms
            .left("longfast", &Who::Bridge, "archipel", &[110, 303], now)
            .is_empty()
    );
    let out = rooms.left("longfast", &Who::Bridge, "archipel", &[110, 307], now);
    assert!(matches!(&out[..], [Action::Problem(p)] if p.contains("kicked")));
    assert!(rooms.tick(now + secs(1)).is_empty());
    let again = rooms.tick(now + secs(2));
    assert!(again.contains(&Action::Join {
        room: "longfast".into(),
        who: Who::Bridge,
        nick: "archipel".into()
    }));
}

#[test]
fn self_pings_are_due_every_period_and_a_not_acceptable_answer_rejoins() {
    let now = Instant::now();
    let mut rooms = joined(now);
    assert_eq!(rooms.next_deadline(), Some(now + secs(30)));
    let out = rooms.tick(now + secs(30));
    let Some(Action::SelfPing { id, nick, .. }) =
        out.iter().find(|a| matches!(a, Action::SelfPing { .. }))
    else {
        panic!("no self-ping: {out:?}")
    };
    assert_eq!(nick, "archipel");
    // Still joined: nothing to do; the next one a period later.
    assert!(
        rooms
            .ping_answered(id, Some("service-unavailable"), now + secs(30))
            .is_empty()
    );
    let out = rooms.tick(now + secs(60));
    let Some(Action::SelfPing { id, .. }) =
        out.iter().find(|a| matches!(a, Action::SelfPing { .. }))
    else {
        panic!("no second self-ping: {out:?}")
    };
    let out = rooms.ping_answered(id, Some("not-acceptable"), now + secs(60));
    assert!(out.contains(&Action::Join {
        room: "longfast".into(),
        who: Who::Bridge,
        nick: "archipel".into()
    }));
}

#[test]
fn an_unanswered_self_ping_counts_as_dropped() {
    let now = Instant::now();
    let mut rooms = joined(now);
    rooms.tick(now + secs(30));
    let out = rooms.tick(now + secs(60));
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Join {
                who: Who::Bridge,
                ..
            }
        )),
        "{out:?}"
    );
}

#[test]
fn the_bridge_sees_speakers_real_jids_until_they_leave() {
    let now = Instant::now();
    let mut rooms = joined(now);
    rooms.speaker("longfast", "Alice", Some("alice@hub.lan".into()));
    assert_eq!(
        rooms.real_jid("longfast", "Alice").as_deref(),
        Some("alice@hub.lan")
    );
    rooms.speaker_left("longfast", "Alice");
    assert_eq!(rooms.real_jid("longfast", "Alice"), None);
}

#[test]
fn keeping_a_room_again_is_idempotent_and_a_changed_spec_is_configured_again() {
    let now = Instant::now();
    let mut rooms = joined(now);
    assert!(rooms.keep(spec("longfast"), now).is_empty());
    let mut changed = spec("longfast");
    changed.description = "new".into();
    assert_eq!(
        rooms.keep(changed, now),
        vec![Action::Configure {
            room: "longfast".into()
        }]
    );
    // A room kept while online is joined at once.
    let out = rooms.keep(spec("second"), now);
    assert!(matches!(&out[..], [Action::Join { room, who: Who::Bridge, .. }] if room == "second"));
}

#[test]
fn a_room_that_forgot_our_occupant_fails_the_message_and_the_next_one_joins_again() {
    let now = Instant::now();
    let mut rooms = joined(now);
    let node = Who::Node("!a1b2c3d4".into());
    rooms.say("longfast", "!a1b2c3d4", "Amira", "x".into(), 1, now);
    let id = say_id(&rooms.joined("longfast", &node, "Amira", false, now));
    let refused = rooms.message_refused(&id, "not-acceptable", "not in the room");
    assert!(matches!(
        refused,
        Some(Action::Settle(1, DeliveryStatus::Failed { .. }))
    ));
    let out = rooms.say("longfast", "!a1b2c3d4", "Amira", "y".into(), 2, now);
    assert_eq!(
        out,
        vec![Action::Join {
            room: "longfast".into(),
            who: node,
            nick: "Amira".into()
        }]
    );
}
