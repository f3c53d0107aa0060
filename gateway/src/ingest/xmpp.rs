//! An XMPP endpoint's ingest task: what people say in the bridged rooms, and their direct
//! messages to mesh nodes, put on the mesh as each person's own virtual node.
//!
//! A room message becomes a broadcast text on the room's channel, from the speaker's virtual
//! node (or, for a room set to `send_as = "gateway"`, from the radio itself with a `[nick]`
//! prefix), routed like anything heard. A chat to `!a1b2c3d4@mesh.hub.lan` becomes a direct
//! message to that node with want_ack, PKI-encrypted when the node published a key, queued for
//! the radio that last heard it; its ACK comes back through radio ingest as a receipt.
//!
//! Before a virtual node first speaks on a mesh (and every few hours), its NodeInfo is queued
//! ahead of what it says, in the same class, so mesh people see a named sender and a radio
//! knows its key before it is asked to carry a PKI message from it. Anything the mesh cannot
//! carry is refused to the sender with an error stanza saying why, and counted.

use std::sync::Arc;
use std::time::Instant;

use archipel_adapters::xmpp::{ChatMessage, ErrorCondition, RoomMessage, XmppEvent, XmppHandle};
use mesh_core::pki::PublicKey;
use mesh_core::{Class, NodeId, Packet, PacketId, proto};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span, warn};

use super::{Ingest, Pipeline};
use crate::activity::Activity;
use crate::app::now_ms;
use crate::config::{SendAs, XmppSection};
use crate::nodes::NodeDirectory;
use crate::people::{Awaiting, People, Person};
use crate::router::{Addressed, Heard, PKI};
use crate::store::Store;
use crate::xmpp::{
    Carriage, UserLimiter, bare_jid, fits, fits_on, gateway_text, parse_node_local, virtual_user,
};

/// Hop limit of what virtual nodes send: the firmware's default.
const HOPS: u8 = 3;

/// One XMPP endpoint's ingest.
pub struct XmppIngest {
    /// The endpoint's configured name: the source of what it hears.
    name: String,
    /// Rooms and how each is fed.
    section: XmppSection,
    /// The link's events.
    events: mpsc::Receiver<XmppEvent>,
    /// The link, to answer with errors.
    xmpp: XmppHandle,
    /// Mesh nodes: who a chat is for, and which radio reaches them.
    nodes: Arc<NodeDirectory>,
    /// Virtual nodes of XMPP users.
    people: Arc<People>,
    /// Where virtual nodes are kept.
    store: Store,
    /// How fast one user may put texts on the mesh.
    limiter: UserLimiter,
    /// Packet ids of what virtual nodes send (random, as the firmware's are).
    rng: StdRng,
    /// Shared routing and commit machinery.
    ingest: Arc<Ingest>,
}

impl XmppIngest {
    /// The ingest task of XMPP endpoint `section`.
    pub fn new(
        section: XmppSection,
        events: mpsc::Receiver<XmppEvent>,
        xmpp: XmppHandle,
        nodes: Arc<NodeDirectory>,
        people: Arc<People>,
        store: Store,
        ingest: Arc<Ingest>,
    ) -> XmppIngest {
        let rate = section.rate();
        XmppIngest {
            name: section.name.clone(),
            section,
            events,
            xmpp,
            nodes,
            people,
            store,
            limiter: UserLimiter::new(rate),
            rng: StdRng::from_os_rng(),
            ingest,
        }
    }

    /// Runs until the link's event channel closes (the link stopped).
    pub async fn run(self) {
        let span = info_span!("ingest", xmpp = %self.name);
        self.drive().instrument(span).await;
    }

    async fn drive(mut self) {
        let mut pipeline: Pipeline<()> = Pipeline::default();
        loop {
            tokio::select! {
                ev = self.events.recv(), if pipeline.has_room() => match ev {
                    Some(ev) => self.on_event(ev, &mut pipeline).await,
                    None => break,
                },
                (done, ()) = pipeline.next() => {
                    self.ingest.finish(done);
                }
            }
        }
        while !pipeline.is_empty() {
            let (done, ()) = pipeline.next().await;
            self.ingest.finish(done);
        }
    }

    async fn on_event(&mut self, ev: XmppEvent, pipeline: &mut Pipeline<()>) {
        match ev {
            XmppEvent::Connected => {
                let _ = self.ingest.activity.send(Activity::EndpointUp {
                    endpoint: self.name.clone(),
                    kind: "xmpp",
                    detail: Some(self.section.domain.clone()),
                });
            }
            XmppEvent::Disconnected { reason } => {
                let _ = self.ingest.activity.send(Activity::EndpointDown {
                    endpoint: self.name.clone(),
                    kind: "xmpp",
                    reason,
                });
            }
            XmppEvent::Problem(text) => {
                warn!("xmpp {}: {text}", self.name);
                let _ = self.ingest.activity.send(Activity::Problem {
                    endpoint: self.name.clone(),
                    text,
                });
            }
            XmppEvent::Groupchat(m) => self.on_room(m, pipeline).await,
            XmppEvent::Chat(c) => self.on_chat(c, pipeline).await,
        }
    }

    /// Refuses what someone sent, to them, with why; counted by `reason`.
    fn refuse(
        &self,
        from_local: &str,
        to: Option<&str>,
        id: Option<&str>,
        condition: ErrorCondition,
        reason: &'static str,
        text: &str,
    ) {
        self.ingest.dropped(&self.name, reason, None);
        debug!(reason, to = to.unwrap_or("(unknown)"), "refused: {text}");
        if let Some(to) = to {
            self.xmpp.error(from_local, to, id, condition, text);
        }
    }

    /// Whether `owner` may send one more text now; refused (and counted) when not.
    fn within_rate(&mut self, owner: &str, reply: (&str, Option<&str>, Option<&str>)) -> bool {
        if self.limiter.allow(owner, Instant::now()) {
            return true;
        }
        let text = format!(
            "too many messages: the mesh takes at most {} per minute from one person",
            self.section.rate_per_user
        );
        self.refuse(
            reply.0,
            reply.1,
            reply.2,
            ErrorCondition::PolicyViolation,
            "rate-limited",
            &text,
        );
        false
    }

    /// The virtual node of `owner`, made (durably) the first time.
    async fn person(&self, owner: &str) -> Option<Person> {
        if let Some(p) = self.people.by_owner(owner) {
            return Some(p);
        }
        let nodes = self.nodes.clone();
        let ingest = self.ingest.clone();
        let taken = move |n: NodeId| nodes.get(n).is_some() || ingest.local_nodes.contains(n);
        match self.store.virtual_node(owner, now_ms(), taken).await {
            Ok(v) => Some(self.people.insert(&v, &self.name)),
            Err(e) => {
                warn!(error = %e, "cannot make a mesh identity for {owner}");
                None
            }
        }
    }

    /// A fresh packet id.
    fn next_id(&mut self) -> PacketId {
        loop {
            let id = PacketId::new(self.rng.random());
            if !id.is_unset() {
                return id;
            }
        }
    }

    /// A decoded packet from `from` to `to`.
    fn packet(&mut self, from: NodeId, to: NodeId, data: proto::Data, want_ack: bool) -> Packet {
        let meta = proto::MeshPacket {
            from: from.get(),
            to: to.get(),
            id: self.next_id().get(),
            hop_limit: u32::from(HOPS),
            hop_start: u32::from(HOPS),
            want_ack,
            ..Default::default()
        };
        Packet::from_data(meta, data)
    }

    /// Queues `person`'s NodeInfo for `radio` on `channel` ahead of what it says there, when
    /// it is due.
    fn introduce(
        &mut self,
        person: &Person,
        radio: &str,
        channel: &str,
        class: Class,
        pipeline: &mut Pipeline<()>,
    ) {
        if !self.people.introduce(person.node, radio, Instant::now()) {
            return;
        }
        let nick = self
            .people
            .nick(&person.owner)
            .unwrap_or_else(|| crate::xmpp::nick_from_jid(&person.owner));
        let public = person.key.public_key();
        let user = virtual_user(&nick, person.node, Some(&public));
        let data = proto::Data {
            portnum: proto::PortNum::NodeinfoApp as i32,
            payload: user.encode_to_vec(),
            ..Default::default()
        };
        let packet = self.packet(person.node, NodeId::BROADCAST, data, false);
        let destinations = [radio.to_owned()];
        let decision = self.ingest.router.addressed(
            Addressed {
                source: &self.name,
                destinations: &destinations,
                channel,
                class,
                hops: HOPS,
            },
            &packet,
            now_ms(),
        );
        self.ingest.queue(decision, now_ms(), pipeline, ());
    }

    async fn on_room(&mut self, m: RoomMessage, pipeline: &mut Pipeline<()>) {
        let Some(channel) = self.section.channel_of_room(&m.room).map(str::to_owned) else {
            return;
        };
        let owner = m
            .real_jid
            .as_deref()
            .map(bare_jid)
            .unwrap_or_else(|| format!("{}@{}/{}", m.room, self.section.rooms, m.nick));
        let reply_to = m.real_jid.clone();
        let reply = ("", reply_to.as_deref(), m.id.as_deref());
        let send_as = self.section.send_as(&channel);
        let body = match send_as {
            SendAs::Node => fits_on(&m.body, Carriage::Channel).map(|()| m.body.clone()),
            SendAs::Gateway => gateway_text(&m.nick, &m.body),
        };
        let body = match body {
            Ok(body) => body,
            Err(refusal) => {
                let text = refusal.to_string();
                self.refuse(
                    reply.0,
                    reply.1,
                    reply.2,
                    ErrorCondition::NotAcceptable,
                    "refused",
                    &text,
                );
                return;
            }
        };
        if !self.within_rate(&owner, reply) {
            return;
        }
        let text = proto::Data {
            portnum: proto::PortNum::TextMessageApp as i32,
            payload: body.into_bytes(),
            ..Default::default()
        };
        match send_as {
            SendAs::Gateway => {
                let packet = self.packet(NodeId::LOCAL, NodeId::BROADCAST, text, false);
                for (radio, to_channel, _) in self.ingest.router.destinations(&self.name, &channel)
                {
                    if !self.is_radio(&radio) {
                        continue;
                    }
                    let decision = self.ingest.router.originate(
                        &self.name,
                        &radio,
                        &to_channel,
                        &packet,
                        now_ms(),
                    );
                    self.ingest.queue(decision, now_ms(), pipeline, ());
                }
            }
            SendAs::Node => {
                let Some(person) = self.person(&owner).await else {
                    return;
                };
                self.people.set_nick(&owner, &m.nick);
                for (radio, to_channel, _) in self.ingest.router.destinations(&self.name, &channel)
                {
                    if self.is_radio(&radio) {
                        self.introduce(&person, &radio, &to_channel, Class::Channel, pipeline);
                    }
                }
                let packet = self.packet(person.node, NodeId::BROADCAST, text, false);
                let heard = Heard {
                    source: &self.name,
                    channel: &channel,
                    packet: &packet,
                    local: None,
                    federated: None,
                };
                self.ingest.heard(heard, now_ms(), pipeline, ());
            }
        }
    }

    /// Whether endpoint `name` is a radio (what a virtual node introduces itself to).
    fn is_radio(&self, name: &str) -> bool {
        self.ingest.radios.iter().any(|r| r == name)
    }

    async fn on_chat(&mut self, c: ChatMessage, pipeline: &mut Pipeline<()>) {
        let to_local = c.to_local.clone();
        let reply = (to_local.as_str(), Some(c.from.as_str()), c.id.as_deref());
        let Some(node) = parse_node_local(&c.to_local) else {
            let text = format!(
                "`{}` is not a mesh node: write to a node as !a1b2c3d4@{}",
                c.to_local, self.section.domain
            );
            self.refuse(
                reply.0,
                reply.1,
                reply.2,
                ErrorCondition::ItemNotFound,
                "unknown-node",
                &text,
            );
            return;
        };
        let Some(target) = self.nodes.get(node) else {
            let text = format!("no mesh node {node} is known to this hub");
            self.refuse(
                reply.0,
                reply.1,
                reply.2,
                ErrorCondition::ItemNotFound,
                "unknown-node",
                &text,
            );
            return;
        };
        if let Err(refusal) = fits(&c.body) {
            let text = refusal.to_string();
            self.refuse(
                reply.0,
                reply.1,
                reply.2,
                ErrorCondition::NotAcceptable,
                "refused",
                &text,
            );
            return;
        }
        let owner = bare_jid(&c.from);
        if !self.within_rate(&owner, reply) {
            return;
        }
        let radio = target
            .heard_by
            .clone()
            .filter(|r| self.is_radio(r))
            .or_else(|| self.ingest.radios.first().cloned());
        let Some((radio, channel)) = radio.and_then(|r| {
            let channel = self.ingest.local_nodes.primary_channel(&r)?;
            Some((r, channel))
        }) else {
            let text = format!("no radio of this hub reaches {node} now");
            self.refuse(
                reply.0,
                reply.1,
                reply.2,
                ErrorCondition::RecipientUnavailable,
                "unreachable",
                &text,
            );
            return;
        };
        let Some(person) = self.person(&owner).await else {
            return;
        };
        self.introduce(&person, &radio, &channel, Class::Direct, pipeline);
        let data = proto::Data {
            portnum: proto::PortNum::TextMessageApp as i32,
            payload: c.body.clone().into_bytes(),
            ..Default::default()
        };
        let packet = self.packet(person.node, node, data, true);
        let their_key = target
            .user
            .as_ref()
            .and_then(|u| PublicKey::from_user_field(&u.public_key).ok().flatten());
        let (stored, at_rest) = match their_key {
            Some(key) => {
                let extra: u32 = self.rng.random();
                match packet.encrypt_pki(&person.key, &key, extra) {
                    Ok(p) => (p, PKI.to_owned()),
                    Err(e) => {
                        warn!(error = %e, "cannot encrypt a direct message for {node}; sending it with the channel key");
                        (packet.clone(), channel.clone())
                    }
                }
            }
            None => (packet.clone(), channel.clone()),
        };
        if c.wants_receipt
            && let Some(id) = &c.id
        {
            self.people.await_ack(
                person.node,
                packet.id(),
                Awaiting {
                    jid: c.from.clone(),
                    stanza: id.clone(),
                },
            );
        }
        let destinations = [radio];
        let decision = self.ingest.router.addressed(
            Addressed {
                source: &self.name,
                destinations: &destinations,
                channel: &at_rest,
                class: Class::Direct,
                hops: HOPS,
            },
            &stored,
            now_ms(),
        );
        self.ingest.queue(decision, now_ms(), pipeline, ());
    }
}
