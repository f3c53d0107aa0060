//! An XMPP server as a destination. What it is handed is what people read:
//! - a channel's broadcast text goes to that channel's room, said by the sender's own
//!   occupant (`!a1b2c3d4@mesh.hub.lan` with its long name as nickname), Delivered when the
//!   room reflected it back;
//! - a direct message from a mesh node to a virtual node goes to that XMPP user as a chat from
//!   `!node@mesh.hub.lan`, Delivered when the server answered a ping sent after it;
//! - the mesh's acknowledgement of a user's direct message becomes a XEP-0184 receipt (a NAK
//!   an error stanza with the reason), to the full JID that asked for it.
//!
//! The router only queues those three kinds here (texts on route legs, the rest addressed);
//! anything else is refused, never shown half-read.

use std::sync::Arc;
use std::time::Instant;

use archipel_adapters::xmpp::{ErrorCondition, XmppHandle};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use mesh_core::{DeliveryStatus, PacketId, proto};

use super::{Prepared, Sink, Stopped};
use crate::config::XmppSection;
use crate::nodes::NodeDirectory;
use crate::people::People;
use crate::router::Rendered;
use crate::store::Delivery;
use crate::xmpp::{node_local, occupant_nick};

/// Stanzas waiting for their reflection or ping at once: a room reflects within a round trip,
/// so a few dozen keep a backlog moving at the stream's pace.
const WINDOW: usize = 32;

/// An XMPP link wrapped for the drain worker.
pub struct XmppSink {
    /// The link.
    xmpp: XmppHandle,
    /// Rooms by channel, and how each is fed.
    section: XmppSection,
    /// Mesh nodes' names: an occupant's nickname.
    nodes: Arc<NodeDirectory>,
    /// Virtual nodes: whose chat a direct message is, who waits for a receipt.
    people: Arc<People>,
}

impl XmppSink {
    /// A sink for the endpoint of `section`.
    pub fn new(
        xmpp: XmppHandle,
        section: XmppSection,
        nodes: Arc<NodeDirectory>,
        people: Arc<People>,
    ) -> XmppSink {
        XmppSink {
            xmpp,
            section,
            nodes,
            people,
        }
    }

    /// A receipt (or error) for the user's direct message that the mesh answered.
    fn answer(
        &self,
        out: &proto::Data,
        from: mesh_core::NodeId,
        to: mesh_core::NodeId,
    ) -> Prepared {
        let Some(awaiting) = self.people.take_ack(to, PacketId::new(out.request_id)) else {
            // Restarted since, or a repeated ACK: nobody waits for it any more.
            return sent(async { DeliveryStatus::Delivered });
        };
        let xmpp = self.xmpp.clone();
        let node = node_local(from);
        let status = mesh_core::routing::delivery_status(&out.payload);
        sent(async move {
            match status {
                DeliveryStatus::Delivered => xmpp.receipt(&node, &awaiting.jid, &awaiting.stanza),
                other => {
                    let reason = match &other {
                        DeliveryStatus::Failed { reason }
                        | DeliveryStatus::Rejected { reason }
                        | DeliveryStatus::Unreachable { reason } => reason.clone(),
                        DeliveryStatus::Delivered => String::new(),
                    };
                    xmpp.error(
                        &node,
                        &awaiting.jid,
                        Some(&awaiting.stanza),
                        ErrorCondition::RecipientUnavailable,
                        &reason,
                    );
                }
            }
            // A receipt is a courtesy on a stream that is up: it rides the same stream as the
            // pings that confirm chats, and waits for nothing else.
            DeliveryStatus::Delivered
        })
    }
}

/// A send in progress (no airtime: XMPP costs the mesh nothing).
fn sent(send: impl std::future::Future<Output = DeliveryStatus> + Send + 'static) -> Prepared {
    Prepared::Send {
        send: send.boxed(),
        airtime: None,
    }
}

impl Sink for XmppSink {
    fn window(&self) -> usize {
        WINDOW
    }

    fn ready(&self) -> BoxFuture<'static, Result<(), Stopped>> {
        let xmpp = self.xmpp.clone();
        async move { xmpp.connected().await.map_err(|_| Stopped) }.boxed()
    }

    fn prepare(&mut self, _row: &Delivery, out: Rendered, _now: Instant) -> Prepared {
        let Some(packet) = out.decoded() else {
            return Prepared::Refuse(format!(
                "stored packet does not decrypt with the key of `{}`",
                out.channel
            ));
        };
        let Some(data) = packet.data() else {
            return Prepared::Refuse("stored packet has no payload".into());
        };
        let (from, to) = (packet.from(), packet.to());
        let text = data.portnum == proto::PortNum::TextMessageApp as i32;
        if to.is_broadcast() && text {
            let room = self.section.room_of(&out.channel);
            let node = node_local(from);
            let nick = self
                .nodes
                .get(from)
                .map(|n| occupant_nick(&n))
                .unwrap_or_else(|| node_local(from));
            let body = String::from_utf8_lossy(&data.payload).into_owned();
            let xmpp = self.xmpp.clone();
            return sent(async move { xmpp.say(&room, &node, &nick, body).await });
        }
        let Some(person) = self.people.by_node(to) else {
            return Prepared::Refuse(format!(
                "{to} is not one of this hub's XMPP users (restarted with another store?)"
            ));
        };
        if text {
            let xmpp = self.xmpp.clone();
            let node = node_local(from);
            let body = String::from_utf8_lossy(&data.payload).into_owned();
            return sent(async move { xmpp.chat(&node, &person.owner, body).await });
        }
        if data.portnum == proto::PortNum::RoutingApp as i32 && data.request_id != 0 {
            return self.answer(data, from, to);
        }
        Prepared::Refuse(format!(
            "XMPP shows texts only, not port {} from {from}",
            data.portnum
        ))
    }
}
