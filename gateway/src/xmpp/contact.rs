//! What the XMPP server shows of the mesh: each node as a contact (presence, status line,
//! vCard fields), and each channel's room (its name and description), in the link's own
//! plain types ([`Contact`], [`RoomSpec`]), decided without a link.

use std::time::Instant;

use archipel_adapters::xmpp::{Contact, RoomSpec};

use crate::nodes::{DEFAULT_AWAY_AFTER, Node, Presence};

use super::names::node_local;

/// `node` as a contact at `now`.
pub fn contact(node: &Node, now: Instant) -> Contact {
    let user = node.user.as_ref();
    let some = |s: Option<&String>| s.filter(|s| !s.is_empty()).cloned();
    Contact {
        local: node_local(node.id),
        available: node.presence(now, DEFAULT_AWAY_AFTER) == Presence::Available,
        status: node.status_line(now),
        long_name: some(user.map(|u| &u.long_name)),
        short_name: some(user.map(|u| &u.short_name)),
        hardware: some(user.map(|u| &u.hw_model)),
    }
}

/// The room of `channel`, local part `room`, on the hub called `gateway_name`.
pub fn room_spec(channel: &str, room: &str, gateway_name: &str) -> RoomSpec {
    RoomSpec {
        local: room.to_owned(),
        name: channel.to_owned(),
        description: format!(
            "Meshtastic channel {channel}, bridged by Archipel hub {gateway_name}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mesh_core::NodeId;

    use super::*;
    use crate::nodes::NodeUser;

    #[test]
    fn a_node_heard_lately_is_available_with_what_is_known_of_it() {
        let now = Instant::now() + Duration::from_secs(3 * 3600);
        let mut node = Node::new(NodeId::new(0xa1b2_c3d4));
        node.last_heard = Some(now - Duration::from_secs(4 * 60 + 10));
        node.hops_away = Some(2);
        node.battery_level = Some(81);
        node.user = Some(NodeUser {
            long_name: "Amira".into(),
            short_name: "AMI".into(),
            hw_model: "HELTEC_V3".into(),
            public_key: Vec::new(),
        });
        let c = contact(&node, now);
        assert_eq!(
            c,
            Contact {
                local: "!a1b2c3d4".into(),
                available: true,
                status: "heard 4 min ago, 2 hops, battery 81 %".into(),
                long_name: Some("Amira".into()),
                short_name: Some("AMI".into()),
                hardware: Some("HELTEC_V3".into()),
            }
        );
        let later = contact(&node, now + Duration::from_secs(2 * 3600));
        assert!(!later.available, "away after two hours");
        assert_eq!(later.status, "heard 2 h ago, 2 hops, battery 81 %");
    }

    #[test]
    fn unknown_parts_are_left_out() {
        let now = Instant::now();
        let c = contact(&Node::new(NodeId::new(0x10)), now);
        assert_eq!(c.local, "!00000010");
        assert!(!c.available, "never heard");
        assert_eq!(c.status, "not heard yet");
        assert_eq!((c.long_name, c.short_name, c.hardware), (None, None, None));
        let mut node = Node::new(NodeId::new(0x10));
        node.user = Some(NodeUser {
            short_name: "X".into(),
            ..NodeUser::default()
        });
        let c = contact(&node, now);
        assert_eq!((c.long_name, c.short_name), (None, Some("X".into())));
    }

    #[test]
    fn a_room_names_its_channel_and_hub() {
        assert_eq!(
            room_spec("LongFast", "longfast", "community-hall"),
            RoomSpec {
                local: "longfast".into(),
                name: "LongFast".into(),
                description: "Meshtastic channel LongFast, bridged by Archipel hub community-hall"
                    .into(),
            }
        );
    }
}
