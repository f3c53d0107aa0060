//! A radio's ingest task: what the radio hears, decoded and handed to the router, and what its
//! handshake says about it checked against the configuration, loudly and once.
//!
//! A radio hands a gateway each packet twice when its MQTT uplink goes through us (the client
//! proxy): once decoded on the phone API (broadcasts and what is for the radio itself) and
//! once encrypted as heard on the uplink (everything it could decode, direct messages between
//! other nodes included). On channels that uplink, the uplink copy is the one routed.
//!
//! Every packet heard, either way and routed or not, tells the [`NodeDirectory`] its sender
//! is here (which wakes direct messages waiting for it); the handshake's node database names
//! the nodes the radio heard before.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use archipel_adapters::radio::{RadioEvent, RadioInfo};
use mesh_core::pki::PublicKey;
use mesh_core::{Class, ModemPreset, NodeId, Packet, PacketId, proto};
use prost::Message;
use rand::TryRngCore;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, info_span, warn};

use super::{Ingest, LocalRadio, Pipeline};
use crate::activity::Activity;
use crate::app::now_ms;
use crate::config::FREQUENCY_TOLERANCE_MHZ;
use crate::nodes::NodeDirectory;
use crate::people::Person;
use crate::router::{Addressed, Heard, PKI};

/// Most problems a radio's ingest remembers having said (each is said once).
const MAX_SAID: usize = 256;

/// What the configuration expects a radio to be; the radio's own word wins, a disagreement
/// is said loudly.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Region code, when configured.
    pub region: Option<String>,
    /// Modem preset, when configured.
    pub preset: Option<ModemPreset>,
    /// Override frequency (MHz), when configured.
    pub frequency_mhz: Option<f64>,
    /// The gateway's own id: a radio whose node is the same drops every relay (the firmware
    /// ignores downlink "from its own gateway").
    pub gateway: NodeId,
}

/// One radio's ingest.
pub struct RadioIngest {
    /// The radio's configured name: the source of what it hears.
    name: String,
    /// The link's events.
    events: mpsc::Receiver<RadioEvent>,
    /// The last handshake (channel names, own node), `None` before the first.
    info: Option<Arc<RadioInfo>>,
    /// Feeds the radio's governor with the channel utilisation the radio reports.
    utilization: watch::Sender<Option<(f32, Instant)>>,
    /// What the configuration says the radio is.
    expected: Expected,
    /// Problems already said, so a reconnecting radio does not repeat them.
    said: HashSet<String>,
    /// The NodeInfo announcements refused for a changed key lately, so a copy is not counted
    /// again.
    refused: VecDeque<(NodeId, PacketId)>,
    /// Shared routing and commit machinery.
    ingest: Arc<Ingest>,
    /// Told about every node the radio hears (and its handshake's node database), so a
    /// direct message waiting for one goes once it is heard, and endpoints can show nodes.
    nodes: Arc<NodeDirectory>,
}

impl RadioIngest {
    /// The ingest task of radio `name`.
    pub fn new(
        name: String,
        events: mpsc::Receiver<RadioEvent>,
        utilization: watch::Sender<Option<(f32, Instant)>>,
        expected: Expected,
        ingest: Arc<Ingest>,
        nodes: Arc<NodeDirectory>,
    ) -> RadioIngest {
        RadioIngest {
            name,
            events,
            info: None,
            utilization,
            expected,
            said: HashSet::new(),
            refused: VecDeque::new(),
            ingest,
            nodes,
        }
    }

    /// Runs until the link's event channel closes (the link stopped).
    pub async fn run(self) {
        let span = info_span!("ingest", radio = %self.name);
        self.drive().instrument(span).await;
    }

    async fn drive(mut self) {
        let mut pipeline: Pipeline<()> = Pipeline::default();
        loop {
            tokio::select! {
                ev = self.events.recv(), if pipeline.has_room() => match ev {
                    Some(ev) => self.on_event(ev, &mut pipeline),
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

    fn on_event(&mut self, ev: RadioEvent, pipeline: &mut Pipeline<()>) {
        match ev {
            RadioEvent::Connected(info) => self.connected(info),
            RadioEvent::Disconnected { reason, .. } => {
                let _ = self.ingest.activity.send(Activity::EndpointDown {
                    endpoint: self.name.clone(),
                    kind: "radio",
                    reason,
                });
            }
            RadioEvent::Notification(_) => {}
            RadioEvent::Packet(packet) => self.on_packet(packet, pipeline),
            RadioEvent::Uplink { packet, channel } => {
                if let Some(person) = self.ingest.people.by_node(packet.to()) {
                    self.for_person(&person, packet, &channel, pipeline);
                    return;
                }
                let Some(decoded) = self.ingest.router.decrypt(&channel, &packet) else {
                    // Its sender is here all the same (a PKI direct message, a channel we do
                    // not hold).
                    self.node_heard(&packet);
                    // Counted, not logged per packet: a radio with a channel we do not hold
                    // would otherwise flood the log.
                    self.ingest.stats.dropped(&self.name, "undecryptable");
                    return;
                };
                if self.node_heard(&decoded) {
                    return;
                }
                self.relay(decoded, channel, pipeline);
            }
        }
    }

    /// The radio finished a handshake: remember it, and say what in its set-up keeps messages
    /// from crossing, with the command that fixes it.
    fn connected(&mut self, info: Arc<RadioInfo>) {
        self.nodes
            .learn(&self.name, &info, Instant::now(), now_ms());
        let node = info.node_id();
        if let Some(node) = node {
            let mut channels = vec![None; 8];
            for c in info.active_channels() {
                if let Some(slot) = usize::try_from(c.index)
                    .ok()
                    .and_then(|i| channels.get_mut(i))
                {
                    *slot = Some(info.channel_name(c));
                }
            }
            self.ingest.local_nodes.insert(
                node,
                LocalRadio {
                    endpoint: self.name.clone(),
                    channels,
                },
            );
        }
        let mut problems = Vec::new();
        if node == Some(self.expected.gateway) {
            problems.push(format!(
                "its node id is the gateway id {}: the radio ignores relays from a gateway with its own id, so nothing reaches its mesh; give `gateway.id` another value",
                self.expected.gateway
            ));
        }
        if let (Some(want), Some(is)) = (&self.expected.region, info.region())
            && want != is
        {
            problems.push(format!(
                "the configuration says region {want} but the radio is set to {is}: airtime and the legal duty cycle follow the radio ({is}); fix `region` in the config or the radio (meshtastic --set lora.region {want})"
            ));
        }
        if let (Some(want), Some(is)) = (self.expected.preset, info.preset())
            && want != is
        {
            problems.push(format!(
                "the configuration says preset {want} but the radio uses {is}: airtime is counted for {is}; fix `preset` in the config or the radio"
            ));
        }
        if let Some(want) = self.expected.frequency_mhz {
            let fix = format!(
                "it hears only radios on its own frequency; fix `frequency_mhz` in the config or the radio (meshtastic --set lora.override_frequency {want})"
            );
            match info.override_frequency() {
                None => problems.push(format!(
                    "the configuration says frequency {want} MHz but the radio has no override frequency (it uses its preset's slot): {fix}"
                )),
                Some(is) if (f64::from(is) - want).abs() > FREQUENCY_TOLERANCE_MHZ => {
                    problems.push(format!(
                        "the configuration says frequency {want} MHz but the radio is set to {is} MHz: {fix}"
                    ))
                }
                Some(_) => {}
            }
        }
        let routed: Vec<String> = info
            .active_channels()
            .map(|c| info.channel_name(c))
            .filter(|name| self.ingest.router.routes_to(&self.name, name))
            .collect();
        for channel in &routed {
            if let Err(fix) = info.accepts_relay_on(channel) {
                problems.push(format!(
                    "cannot take relayed traffic on channel `{channel}`: {fix}; what is queued for it waits until this is fixed"
                ));
            }
        }
        for c in info.active_channels() {
            let name = info.channel_name(c);
            if self.ingest.router.routes_from(&self.name, &name) && !info.uplinks_on(&name) {
                problems.push(format!(
                    "does not publish what it hears on channel `{name}` through its client proxy: only broadcasts will cross, not direct messages between other nodes (meshtastic --set mqtt.enabled true --set mqtt.proxy_to_client_enabled true --set mqtt.address 127.0.0.1; meshtastic --ch-index {} --ch-set uplink_enabled true)",
                    c.index
                ));
            }
        }
        for text in problems {
            if self.said.insert(text.clone()) {
                warn!("radio {}: {text}", self.name);
                let _ = self.ingest.activity.send(Activity::Problem {
                    endpoint: self.name.clone(),
                    text,
                });
            }
        }
        self.info = Some(info);
        let _ = self.ingest.activity.send(Activity::EndpointUp {
            endpoint: self.name.clone(),
            kind: "radio",
            detail: node.map(|n| n.to_string()),
        });
    }

    /// A packet the radio handed its client. When the radio publishes its uplink on that
    /// channel, the uplink carries the same packet (and more), so this copy is not routed.
    fn on_packet(&mut self, packet: Packet, pipeline: &mut Pipeline<()>) {
        // Routed or not (its own telemetry, a packet for it): the sender was heard.
        let forged = self.node_heard(&packet);
        let Some(info) = self.info.clone() else {
            return;
        };
        let own = info.node_id().unwrap_or(NodeId::LOCAL);
        if packet.from() == own
            && let Some(percent) = channel_utilization(&packet)
        {
            self.utilization
                .send_replace(Some((percent, Instant::now())));
        }
        let Some(channel) = info
            .channels
            .iter()
            .find(|c| c.index as u32 == packet.channel())
            .map(|c| info.channel_name(c))
        else {
            return;
        };
        if info.uplinks_on(&channel) || forged {
            return;
        }
        self.relay(packet, channel, pipeline);
    }

    /// A packet for one of our XMPP users' virtual nodes (a direct message, the mesh's ACK of
    /// one the user sent): read with the virtual node's key when it is PKI (kept read, under
    /// [`PKI`]), and queued for the user's XMPP endpoint alone. Nothing else of the mesh
    /// reaches a person's chat.
    fn for_person(
        &mut self,
        person: &Person,
        packet: Packet,
        channel: &str,
        pipeline: &mut Pipeline<()>,
    ) {
        let (decoded, at_rest) = if channel == PKI || packet.is_pki() {
            let theirs = self
                .nodes
                .get(packet.from())
                .and_then(|n| n.user)
                .and_then(|u| PublicKey::from_user_field(&u.public_key).ok().flatten());
            let read = theirs.and_then(|k| packet.decrypt_pki(&person.key, &k).ok());
            (read, PKI.to_owned())
        } else {
            (
                self.ingest.router.decrypt(channel, &packet),
                channel.to_owned(),
            )
        };
        if self.node_heard(decoded.as_ref().unwrap_or(&packet)) {
            return;
        }
        let Some(decoded) = decoded else {
            self.ingest.stats.dropped(&self.name, "undecryptable");
            return;
        };
        let wanted = matches!(
            decoded.portnum(),
            Some(proto::PortNum::TextMessageApp | proto::PortNum::RoutingApp)
        );
        if !wanted {
            return;
        }
        let acked = decoded.want_ack()
            && decoded.portnum() == Some(proto::PortNum::TextMessageApp)
            && !decoded.to().is_broadcast();
        let destinations = [person.endpoint.clone()];
        let decision = self.ingest.router.addressed(
            Addressed {
                source: &self.name,
                destinations: &destinations,
                channel: &at_rest,
                class: Class::of(&decoded),
                hops: 0,
            },
            &decoded,
            now_ms(),
        );
        self.ingest.queue(decision, now_ms(), pipeline, ());
        if acked {
            self.acknowledge(person, &decoded, pipeline);
        }
    }

    /// The mesh's ACK of a direct message to a virtual node, from that node, queued after the
    /// message itself (so it goes once the message is in the store): without it the sender's
    /// radio retransmits and finally shows the message as failed. It says the hub has it for
    /// the person; their XMPP client's own receipt is not waited for, as they may be offline
    /// for days. On the radio's primary channel, with its key (the firmware never PKI-encrypts
    /// a routing answer).
    fn acknowledge(&mut self, person: &Person, dm: &Packet, pipeline: &mut Pipeline<()>) {
        let Some(channel) = self.ingest.local_nodes.primary_channel(&self.name) else {
            return;
        };
        let routing = proto::Routing {
            variant: Some(proto::routing::Variant::ErrorReason(
                proto::routing::Error::None as i32,
            )),
        };
        let data = proto::Data {
            portnum: proto::PortNum::RoutingApp as i32,
            payload: routing.encode_to_vec(),
            request_id: dm.id().get(),
            ..Default::default()
        };
        let random = rand::rngs::OsRng.try_next_u32().unwrap_or(dm.id().get());
        let id = PacketId::generate(random, dm.id().get().rotate_left(10));
        let meta = proto::MeshPacket {
            from: person.node.get(),
            to: dm.from().get(),
            id: id.get(),
            hop_limit: 3,
            hop_start: 3,
            ..Default::default()
        };
        let ack = Packet::from_data(meta, data);
        let destinations = [self.name.clone()];
        let decision = self.ingest.router.addressed(
            Addressed {
                source: &person.endpoint,
                destinations: &destinations,
                channel: &channel,
                class: Class::Direct,
                hops: 3,
            },
            &ack,
            now_ms(),
        );
        self.ingest.queue(decision, now_ms(), pipeline, ());
    }

    /// Tells the node directory `packet`'s sender was heard. True when it is a NodeInfo that
    /// would change or empty the public key its node was first seen with: the first key is
    /// kept, the packet is not relayed (another mesh must not learn the new key from us), it
    /// is counted (`key-changed`), and the first time for a node it is said as a problem.
    fn node_heard(&mut self, packet: &Packet) -> bool {
        if !self
            .nodes
            .heard(&self.name, packet, Instant::now(), now_ms())
        {
            return false;
        }
        let from = packet.from();
        // A radio may hand one packet more than once (the phone API and its uplink, a
        // rebroadcast heard again): one announcement counts once.
        if self.refused.contains(&(from, packet.id())) {
            return true;
        }
        if self.refused.len() >= MAX_SAID {
            self.refused.pop_front();
        }
        self.refused.push_back((from, packet.id()));
        self.ingest.dropped(&self.name, "key-changed", Some(from));
        let text = format!(
            "node {from} announced a public key other than the one it was first heard with: the first is kept and the announcement is not relayed (someone may be impersonating it; if the node was really reset, remove it from the radio's node database and restart the gateway)"
        );
        // Bounded: a flood of forged nodes is counted, not remembered one by one.
        if self.said.len() < MAX_SAID && self.said.insert(text.clone()) {
            warn!("radio {}: {text}", self.name);
            let _ = self.ingest.activity.send(Activity::Problem {
                endpoint: self.name.clone(),
                text,
            });
        }
        true
    }

    fn relay(&mut self, packet: Packet, channel: String, pipeline: &mut Pipeline<()>) {
        let local = self
            .info
            .as_ref()
            .and_then(|i| i.node_id())
            .unwrap_or(NodeId::LOCAL);
        let heard = Heard {
            source: &self.name,
            channel: &channel,
            packet: &packet,
            local: Some(local),
            federated: None,
        };
        self.ingest.heard(heard, now_ms(), pipeline, ());
    }
}

/// The channel utilisation a radio reports about itself in its device telemetry.
fn channel_utilization(packet: &Packet) -> Option<f32> {
    let data = packet.data()?;
    if data.portnum != proto::PortNum::TelemetryApp as i32 {
        return None;
    }
    let telemetry = proto::Telemetry::decode(&data.payload[..]).ok()?;
    match telemetry.variant? {
        proto::telemetry::Variant::DeviceMetrics(m) => m.channel_utilization,
        _ => None,
    }
}
