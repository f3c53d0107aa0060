//! Names across the bridge: a node's JID local part (`!a1b2c3d4`), a node's nickname as a room
//! occupant, an XMPP user's nickname, and the NodeInfo (`User`) of the virtual node an XMPP
//! user speaks as on the mesh.

use mesh_core::pki::PublicKey;
use mesh_core::{NodeId, proto};

use crate::nodes::Node;

/// The marker after an XMPP user's nick in their virtual node's long name, so mesh people
/// know the sender is not on a radio.
pub const XMPP_MARKER: &str = " (xmpp)";

/// The most bytes of a long name: `User.long_name max_size:40` in the protobufs'
/// `mesh.options`, which for nanopb includes the terminating NUL.
pub const LONG_NAME_LIMIT: usize = 39;

/// The most bytes of a short name (`User.short_name max_size:5`, NUL included).
pub const SHORT_NAME_LIMIT: usize = 4;

/// The longest JID (RFC 7622: three parts of at most 1023 bytes, and their separators): a
/// longer one is not a JID, and is cut before it is kept anywhere.
const MAX_JID: usize = 3071;

/// A node's local part in its JID: `!a1b2c3d4` (`!a1b2c3d4@mesh.hub.lan`).
pub fn node_local(node: NodeId) -> String {
    format!("!{:08x}", node.get())
}

/// The node a JID local part names: exactly `!` and 8 lower-case hex digits (what
/// [`node_local`] writes, so one node has one JID), and neither a broadcast address nor
/// `!00000000` ("this radio" in the firmware's API), which no contact can be.
pub fn parse_node_local(local: &str) -> Option<NodeId> {
    let hex = local.strip_prefix('!')?;
    if hex.len() != 8
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let node = NodeId::new(u32::from_str_radix(hex, 16).ok()?);
    (!node.is_broadcast() && node != NodeId::LOCAL).then_some(node)
}

/// The bare JID of a JID (`alice@hub.lan/phone` → `alice@hub.lan`), lower-cased as servers
/// compare them, cut at [`MAX_JID`] bytes: a key for what is kept per user.
pub fn bare_jid(jid: &str) -> String {
    let bare = jid.split_once('/').map_or(jid, |(bare, _)| bare);
    cut(&bare.to_lowercase(), MAX_JID).to_owned()
}

/// A nickname for a user whose room nick is not known: their JID's local part (`alice` of
/// `alice@hub.lan/phone`), or the domain of a JID without one; control characters dropped.
pub fn nick_from_jid(jid: &str) -> String {
    let bare = jid.split_once('/').map_or(jid, |(bare, _)| bare);
    let part = match bare.split_once('@') {
        Some((local, _)) if !local.is_empty() => local,
        Some((_, domain)) => domain,
        None => bare,
    };
    clean(cut(part, MAX_JID))
}

/// A node as a room occupant: its long name, else its short name, else `!a1b2c3d4`.
pub fn occupant_nick(node: &Node) -> String {
    match node.user.as_ref() {
        Some(u) if !u.long_name.is_empty() => u.long_name.clone(),
        Some(u) if !u.short_name.is_empty() => u.short_name.clone(),
        _ => node_local(node.id),
    }
}

/// The NodeInfo of the virtual node `node` an XMPP user with room nick `nick` speaks as: the
/// long name is the nick (cut on a character boundary so the marker still fits) and
/// [`XMPP_MARKER`]; the short name is the nick's first characters (at most 4 bytes), or the
/// node id's last 4 hex digits as the firmware's default; hardware `PRIVATE_HW`; the public
/// key when the node has one, so mesh nodes can send it PKI direct messages.
pub fn virtual_user(nick: &str, node: NodeId, public_key: Option<&PublicKey>) -> proto::User {
    let nick = clean(nick);
    let local = node_local(node);
    let long_name = if nick.is_empty() {
        format!("{local}{XMPP_MARKER}")
    } else {
        format!(
            "{}{XMPP_MARKER}",
            cut(&nick, LONG_NAME_LIMIT - XMPP_MARKER.len()).trim_end()
        )
    };
    let mut short_name = String::new();
    for c in nick.chars().filter(|c| !c.is_whitespace()) {
        if short_name.len() + c.len_utf8() > SHORT_NAME_LIMIT {
            break;
        }
        short_name.push(c);
    }
    if short_name.is_empty() {
        short_name = local[local.len() - 4..].to_owned();
    }
    proto::User {
        id: local,
        long_name,
        short_name,
        hw_model: proto::HardwareModel::PrivateHw as i32,
        public_key: public_key
            .map(|k| k.as_bytes().to_vec())
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// `text` without control characters, trimmed.
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The longest start of `text` of at most `max` bytes that ends on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::NodeUser;

    const NODE: NodeId = NodeId::new(0xa1b2_c3d4);

    #[test]
    fn node_locals_round_trip_and_nothing_else_parses() {
        assert_eq!(node_local(NODE), "!a1b2c3d4");
        assert_eq!(node_local(NodeId::new(0x10)), "!00000010");
        assert_eq!(parse_node_local("!a1b2c3d4"), Some(NODE));
        assert_eq!(parse_node_local("!00000010"), Some(NodeId::new(0x10)));
        for bad in [
            "!A1B2C3D4",
            "a1b2c3d4",
            "!a1b2c3d",
            "!a1b2c3d45",
            "!a1b2c3dg",
            "!ffffffff",
            "!00000001",
            "!00000000",
            "!+1b2c3d4",
            "",
            "!",
            "!a1b2c3d\u{e9}",
            "^all",
        ] {
            assert_eq!(parse_node_local(bad), None, "{bad}");
        }
    }

    #[test]
    fn nicks_come_from_the_local_part() {
        assert_eq!(nick_from_jid("alice@hub.lan/phone"), "alice");
        assert_eq!(nick_from_jid("alice@hub.lan"), "alice");
        assert_eq!(nick_from_jid("hub.lan"), "hub.lan");
        assert_eq!(nick_from_jid("@hub.lan/x"), "hub.lan");
        assert_eq!(nick_from_jid("bo\u{1b}b@hub.lan"), "bob");
        assert_eq!(nick_from_jid("a@b/c/d"), "a", "a resource may hold a slash");
        assert_eq!(bare_jid("Alice@Hub.lan/Phone/2"), "alice@hub.lan");
        assert_eq!(bare_jid(&"x".repeat(5000)).len(), MAX_JID);
    }

    #[test]
    fn occupants_are_named_like_the_apps_name_nodes() {
        let mut node = Node::new(NODE);
        assert_eq!(occupant_nick(&node), "!a1b2c3d4");
        node.user = Some(NodeUser {
            short_name: "AMI".into(),
            ..NodeUser::default()
        });
        assert_eq!(occupant_nick(&node), "AMI");
        node.user.as_mut().unwrap().long_name = "Amira".into();
        assert_eq!(occupant_nick(&node), "Amira");
    }

    #[test]
    fn a_virtual_node_says_it_is_an_xmpp_user() {
        let key = PublicKey::from_bytes([7; 32]);
        let u = virtual_user("alice", NODE, Some(&key));
        assert_eq!(u.id, "!a1b2c3d4");
        assert_eq!(u.long_name, "alice (xmpp)");
        assert_eq!(u.short_name, "alic");
        assert_eq!(u.hw_model, proto::HardwareModel::PrivateHw as i32);
        assert_eq!(u.public_key, vec![7; 32]);
        let u = virtual_user("Bo", NODE, None);
        assert_eq!((u.short_name.as_str(), u.public_key.len()), ("Bo", 0));
    }

    #[test]
    fn long_nicks_are_cut_on_a_character_boundary_and_keep_the_marker() {
        let u = virtual_user(&"é".repeat(30), NODE, None);
        assert!(u.long_name.len() <= LONG_NAME_LIMIT, "{}", u.long_name);
        assert!(u.long_name.ends_with(" (xmpp)"));
        assert_eq!(u.long_name, format!("{} (xmpp)", "é".repeat(16)));
        assert_eq!(u.short_name, "éé", "4 bytes");
        let u = virtual_user("Jean Dupont-Lefebvre de la Rivière-Haute", NODE, None);
        assert_eq!(u.long_name, "Jean Dupont-Lefebvre de la Rivi (xmpp)");
        assert_eq!(u.short_name, "Jean");
        let u = virtual_user("🛰️🛰️", NODE, None);
        assert_eq!(u.short_name, "🛰", "a 4-byte character fills the short name");
    }

    #[test]
    fn a_nick_with_nothing_printable_falls_back_to_the_node_id() {
        let u = virtual_user(" \u{7} ", NODE, None);
        assert_eq!(u.long_name, "!a1b2c3d4 (xmpp)");
        assert_eq!(u.short_name, "c3d4");
    }
}
