//! An MQTT endpoint's ingest task: downlink envelopes from the broker, checked as untrusted
//! input ([`DownlinkFilter`]), routed like anything a radio heard (deduplicated on (from, id)
//! against it), and acknowledged to the broker only once stored. The session is persistent
//! and acks are manual, so a message whose commit did not happen (a crash, a full disk) is
//! redelivered by the broker after the next connect, and the seen-set drops a repeat.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use archipel_adapters::mqtt::{AckToken, Incoming, MqttEvent, MqttHandle};
use mesh_core::envelope::{Envelope, Root, Topic, TopicKind};
use mesh_core::{NodeId, Packet, PacketId, mqtt_json};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use super::downlink::{DownlinkFilter, Drop};
use super::{Ingest, Pipeline};
use crate::activity::Activity;
use crate::app::now_ms;
use crate::failpoint::{self, CrashPoint};
use crate::router::Heard;
use crate::stats::Stats;

/// Whether (and as whom) an MQTT endpoint takes the firmware's JSON `sendtext` downlink.
#[derive(Debug, Clone, Copy)]
pub struct JsonDownlink {
    /// Tools may put texts on the mesh.
    pub enabled: bool,
    /// Our gateway id, to recognise our own echo.
    pub gateway: NodeId,
}

/// One MQTT endpoint's ingest.
pub struct MqttIngest {
    /// The endpoint's configured name: the source of what it hears.
    name: String,
    /// The topic root its downlink topics live under.
    root: Root,
    /// The link's events.
    events: mpsc::Receiver<MqttEvent>,
    /// The link, to acknowledge messages once stored.
    mqtt: MqttHandle,
    /// The downlink rules.
    filter: DownlinkFilter,
    /// Whether tools may put texts on the mesh with the firmware's JSON `sendtext`.
    downlink_json: bool,
    /// Our gateway id, as a JSON downlink's `sender` names it when it is our own echo.
    gateway: NodeId,
    /// Low bits of the ids of texts sent for tools, as the firmware's rolling counter.
    id_counter: u32,
    /// Drops by reason since the last log line about them, so a flood is one line a while.
    dropped: HashMap<Drop, u64>,
    /// When drops were last logged.
    dropped_logged: Option<Instant>,
    /// Shared routing and commit machinery.
    ingest: Arc<Ingest>,
}

impl MqttIngest {
    /// The ingest task of MQTT endpoint `name`.
    pub fn new(
        name: String,
        root: Root,
        events: mpsc::Receiver<MqttEvent>,
        mqtt: MqttHandle,
        filter: DownlinkFilter,
        json: JsonDownlink,
        ingest: Arc<Ingest>,
    ) -> MqttIngest {
        MqttIngest {
            name,
            root,
            events,
            mqtt,
            filter,
            downlink_json: json.enabled,
            gateway: json.gateway,
            id_counter: 0,
            dropped: HashMap::new(),
            dropped_logged: None,
            ingest,
        }
    }

    /// Runs until the link's event channel closes (the link stopped).
    pub async fn run(self) {
        let span = info_span!("ingest", mqtt = %self.name);
        self.drive().instrument(span).await;
    }

    async fn drive(mut self) {
        let mut pipeline: Pipeline<AckToken> = Pipeline::default();
        loop {
            tokio::select! {
                ev = self.events.recv(), if pipeline.has_room() => match ev {
                    Some(ev) => self.on_event(ev, &mut pipeline),
                    None => break,
                },
                (done, ack) = pipeline.next() => self.finish(done, ack),
            }
        }
        while !pipeline.is_empty() {
            let (done, ack) = pipeline.next().await;
            self.finish(done, ack);
        }
    }

    /// A finished item: acknowledged to the broker only when stored (or already stored).
    fn finish(&self, done: super::Finished, ack: AckToken) {
        if self.ingest.finish(done) {
            failpoint::hit(CrashPoint::MqttBeforeAck);
            self.mqtt.ack(ack);
        }
    }

    fn on_event(&mut self, ev: MqttEvent, pipeline: &mut Pipeline<AckToken>) {
        match ev {
            MqttEvent::Subscribed { refused } => {
                for filter in refused {
                    let text = format!(
                        "the broker refused the subscription to `{filter}` (its access rules): nothing routed from it arrives"
                    );
                    warn!("mqtt {}: {text}", self.name);
                    let _ = self.ingest.activity.send(Activity::Problem {
                        endpoint: self.name.clone(),
                        text,
                    });
                }
            }
            MqttEvent::Connected { .. } => {
                let _ = self.ingest.activity.send(Activity::EndpointUp {
                    endpoint: self.name.clone(),
                    kind: "mqtt",
                    detail: None,
                });
            }
            MqttEvent::Disconnected { reason, .. } => {
                let _ = self.ingest.activity.send(Activity::EndpointDown {
                    endpoint: self.name.clone(),
                    kind: "mqtt",
                    reason,
                });
            }
            MqttEvent::Message(incoming) => self.on_message(incoming, pipeline),
        }
    }

    fn on_message(&mut self, incoming: Incoming, pipeline: &mut Pipeline<AckToken>) {
        let Incoming {
            topic,
            payload,
            ack,
            ..
        } = incoming;
        if self.downlink_json && mqtt_json::is_downlink_topic(self.root.as_str(), &topic) {
            return self.on_json(&payload, pipeline, ack);
        }
        let channel = match Topic::parse_under(&self.root, &topic) {
            Ok(t) if t.kind == TopicKind::Encrypted => t.channel.name().to_owned(),
            _ => return self.drop(Drop::Topic, None, pipeline, ack),
        };
        if !self.ingest.router.routes_from(&self.name, &channel) {
            return self.drop(Drop::Unrouted, None, pipeline, ack);
        }
        let envelope = match Envelope::decode(&payload) {
            Ok(e) => e,
            Err(_) => return self.drop(Drop::Envelope, None, pipeline, ack),
        };
        let router = self.ingest.router.clone();
        let ingest = self.ingest.clone();
        let checked = self.filter.check(
            &envelope,
            |p| router.decrypt(&channel, p),
            |n| ingest.local_nodes.contains(n),
            Instant::now(),
        );
        let packet = match checked {
            Ok(p) => p,
            Err(why) => {
                return self.drop(why, Some(envelope.packet.from()), pipeline, ack);
            }
        };
        let heard = Heard {
            source: &self.name,
            channel: &channel,
            packet: &packet,
            local: None,
            federated: None,
        };
        self.ingest.heard(heard, now_ms(), pipeline, ack);
    }

    /// A tool's `sendtext`: the named radio of ours sends the text as itself, on its channel
    /// with that index, through the same outbox and governor as relayed traffic.
    fn on_json(&mut self, payload: &[u8], pipeline: &mut Pipeline<AckToken>, ack: AckToken) {
        let request = match mqtt_json::parse_downlink(payload) {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "JSON downlink refused");
                return self.drop(Drop::Json, None, pipeline, ack);
            }
        };
        if request.sender.as_deref() == Some(self.gateway.to_string().as_str()) {
            return self.drop(Drop::OwnGateway, None, pipeline, ack);
        }
        let Some(radio) = self.ingest.local_nodes.get(request.from) else {
            return self.drop(Drop::NotOurRadio, Some(request.from), pipeline, ack);
        };
        let index = request.channel.unwrap_or(0);
        let Some(channel) = radio.channels.get(usize::from(index)).cloned().flatten() else {
            return self.drop(Drop::NoSuchChannel, Some(request.from), pipeline, ack);
        };
        if !self.filter.allow_json(request.from, Instant::now()) {
            return self.drop(Drop::RateLimited, Some(request.from), pipeline, ack);
        }
        let mut packet = Packet::text_message(request.to, u32::from(index), &request.text);
        self.id_counter = self.id_counter.wrapping_add(1);
        let meta = packet.meta_mut();
        meta.from = NodeId::LOCAL.get();
        meta.id = PacketId::generate(rand::random(), self.id_counter).get();
        if let Some(hops) = request.hop_limit {
            meta.hop_limit = u32::from(hops.min(mesh_core::packet::HOP_MAX));
        }
        let decision =
            self.ingest
                .router
                .originate(&self.name, &radio.endpoint, &channel, &packet, now_ms());
        self.ingest.queue(decision, now_ms(), pipeline, ack);
    }

    /// Drops a message for `why`: counted, announced, logged once in a while, and acknowledged
    /// in its turn (the broker must not send it again).
    fn drop(
        &mut self,
        why: Drop,
        from: Option<mesh_core::NodeId>,
        pipeline: &mut Pipeline<AckToken>,
        ack: AckToken,
    ) {
        pipeline.skip(ack);
        if why == Drop::OwnGateway {
            // Our own publish coming back on a channel we both publish and subscribe to: the
            // normal echo of a two-way route, not something an operator needs to hear about.
            Stats::add(&self.ingest.stats.echoes, 1);
            return;
        }
        self.ingest.dropped(&self.name, why.as_str(), from);
        *self.dropped.entry(why).or_default() += 1;
        let now = Instant::now();
        if self
            .dropped_logged
            .is_none_or(|t| now.saturating_duration_since(t).as_secs() >= 10)
        {
            let counts: Vec<String> = self
                .dropped
                .drain()
                .map(|(why, n)| format!("{n} {}", why.as_str()))
                .collect();
            if why == Drop::RateLimited || why == Drop::Spoofed {
                warn!(dropped = %counts.join(", "), "downlink messages dropped");
            } else {
                info!(dropped = %counts.join(", "), "downlink messages dropped");
            }
            self.dropped_logged = Some(now);
        }
    }
}
