//! The simulator's synchronous core: the world, one device per attached radio and transport,
//! the current client of each, and the step that moves bytes and time between them. No socket
//! and no `.await` here: the tasks in `server.rs` lock it for one step at a time.

use super::*;

/// Sim time from real time.
#[derive(Debug)]
pub(super) struct Clock {
    /// Real time of sim time zero.
    pub(super) start: Instant,
    /// Simulated seconds per real second.
    pub(super) scale: f64,
    /// The latest sim time handed out, so sim time never goes backwards.
    pub(super) last: Duration,
}

impl Clock {
    pub(super) fn new(scale: f64) -> Clock {
        Clock {
            start: Instant::now(),
            scale,
            last: Duration::ZERO,
        }
    }

    /// The current sim time.
    pub(super) fn now(&mut self) -> Duration {
        let elapsed = self.start.elapsed().as_secs_f64() * self.scale;
        let now = Duration::try_from_secs_f64(elapsed).unwrap_or(Duration::MAX);
        self.last = self.last.max(now);
        self.last
    }

    /// The real instant of a sim time (`None` if beyond any reachable instant). Rounded up
    /// by a microsecond so that waking at it finds the sim time reached, not a hair short.
    pub(super) fn instant_at(&self, sim: Duration) -> Option<Instant> {
        let real = Duration::try_from_secs_f64(sim.as_secs_f64() / self.scale).ok()?;
        self.start
            .checked_add(real)?
            .checked_add(Duration::from_micros(1))
    }
}

/// How a device is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    /// The stream API on TCP: one client at a time.
    Tcp,
    /// USB serial, on a pty.
    Serial {
        /// The client sent a frame: no more text, only frames (`SerialConsole::usingProtobufs`).
        protobuf_mode: bool,
        /// A client is talking to the device (for connect/disconnect events).
        client_present: bool,
    },
}

/// The current client of a device: where its bytes go.
#[derive(Debug)]
pub(super) struct Client {
    /// Tells this client from the one that replaced it.
    pub(super) id: u64,
    /// Bytes for it; dropping the sender closes a TCP connection.
    pub(super) tx: mpsc::Sender<Bytes>,
}

/// Counters of bad input from a client, kept for logs.
#[derive(Debug, Default)]
pub(super) struct LinkStats {
    /// Frames that were not a `ToRadio`.
    pub(super) malformed: u64,
    /// Bytes outside frames.
    pub(super) noise_bytes: u64,
    /// Headers announcing more than 512 bytes.
    pub(super) oversize: u64,
    /// Frames cut short by the end of the stream.
    pub(super) truncated: u64,
    /// Frames dropped because the client did not read them.
    pub(super) dropped: u64,
}

/// One attached radio on one transport.
#[derive(Debug)]
pub(super) struct Link {
    /// The radio's node.
    pub(super) node: NodeId,
    /// TCP or serial.
    pub(super) transport: Transport,
    /// Its PhoneAPI state.
    pub(super) device: Device,
    /// Where its output goes, if anyone listens.
    pub(super) client: Option<Client>,
    /// Carries the mesh and node into every log line about this radio.
    pub(super) span: tracing::Span,
    /// Bad input seen.
    pub(super) stats: LinkStats,
}

impl Link {
    pub(super) fn new(node: NodeId, mesh: &str, transport: Transport, device: Device) -> Link {
        let kind = match transport {
            Transport::Tcp => "tcp",
            Transport::Serial { .. } => "serial",
        };
        Link {
            node,
            transport,
            device,
            client: None,
            span: info_span!("sim_radio", %mesh, %node, transport = kind),
            stats: LinkStats::default(),
        }
    }
}

/// Everything the tasks share. See the module doc.
pub(super) struct Core {
    /// The RF world.
    pub(super) world: World,
    /// Sim time.
    pub(super) clock: Clock,
    /// The attached radios' devices, one per transport.
    pub(super) links: Vec<Link>,
    /// Where events are published.
    pub(super) events: broadcast::Sender<SimEvent>,
    /// Next TCP client id.
    pub(super) next_client: u64,
}

pub(super) fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    // A panic while holding the lock leaves consistent-enough state for a simulator.
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Core {
    /// Runs the world and the devices up to the current sim time; returns it.
    pub(super) fn advance(&mut self) -> Duration {
        let now = self.clock.now();
        self.world.handle_timeout(now);
        self.pump();
        for link in 0..self.links.len() {
            if self.links[link]
                .device
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                let status = self.status(self.links[link].node, now);
                let out = self.links[link].device.handle_timeout(now, status);
                self.send_to_client(link, out);
            }
        }
        self.service_devices(now);
        now
    }

    /// Lets every device notice room in its transmit queue (`MeshService::loop`), after
    /// anything that may have moved a queue.
    pub(super) fn service_devices(&mut self, now: Duration) {
        for link in 0..self.links.len() {
            let status = self.status(self.links[link].node, now);
            let out = self.links[link].device.service_loop(status);
            self.send_to_client(link, out);
        }
    }

    /// The earliest sim time something is due.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
        self.links
            .iter()
            .filter_map(|l| l.device.poll_timeout())
            .chain(self.world.poll_timeout())
            .min()
    }

    pub(super) fn status(&self, node: NodeId, now: Duration) -> RadioStatus {
        RadioStatus {
            tx_queue_free: self.world.tx_queue_free(node),
            channel_utilization: self
                .world
                .node_channel_utilization(node, now)
                .unwrap_or(0.0),
            air_util_tx: self.world.air_util_tx(node, now).unwrap_or(0.0),
        }
    }

    pub(super) fn publish(&self, event: SimEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// Hands the world's events to the devices and to subscribers.
    pub(super) fn pump(&mut self) {
        while let Some(event) = self.world.poll_event() {
            self.dispatch(event);
        }
    }

    pub(super) fn dispatch(&mut self, event: WorldEvent) {
        match event {
            WorldEvent::Transmitted {
                mesh,
                node,
                packet,
                airtime,
                ..
            } => self.publish(SimEvent::Transmitted {
                mesh,
                node,
                packet,
                airtime,
            }),
            WorldEvent::Received {
                at,
                node,
                packet,
                decoded,
            } => {
                for link in self.links_of(node) {
                    let msgs =
                        self.links[link]
                            .device
                            .on_mesh_packet(&packet, decoded.as_ref(), at);
                    self.send_to_client(link, msgs);
                    self.log_to_serial(link, at, decoded.as_ref().unwrap_or(&packet));
                }
                self.publish(SimEvent::Received {
                    node,
                    packet: decoded.unwrap_or(packet),
                });
            }
            WorldEvent::ImplicitAck {
                at,
                node,
                id,
                channel,
            } => {
                for link in self.links_of(node) {
                    let msgs = self.links[link].device.on_implicit_ack(id, channel, at);
                    self.send_to_client(link, msgs);
                }
            }
            WorldEvent::Nak {
                at,
                node,
                id,
                channel,
                error,
            } => {
                for link in self.links_of(node) {
                    let msgs = self.links[link].device.on_nak(id, channel, error, at);
                    self.send_to_client(link, msgs);
                }
            }
        }
    }

    pub(super) fn links_of(&self, node: NodeId) -> Vec<usize> {
        (0..self.links.len())
            .filter(|&l| self.links[l].node == node)
            .collect()
    }

    /// Frames the messages and queues them for the link's client.
    pub(super) fn send_to_client(&mut self, link: usize, msgs: Vec<proto::FromRadio>) {
        for msg in msgs {
            if let Some(packet) = device::client_packet(&msg) {
                self.publish(SimEvent::ToClient {
                    node: self.links[link].node,
                    packet,
                });
            }
            let mut bytes = BytesMut::new();
            if let Err(e) = frame::encode(&msg.encode_to_vec(), &mut bytes) {
                let _e = self.links[link].span.enter();
                warn!(error = %e, "FromRadio too large for a frame, dropped");
                continue;
            }
            self.write(link, bytes.freeze());
        }
    }

    /// Queues bytes for the link's client. A TCP client that does not keep up is dropped; a
    /// serial port nobody reads loses the bytes, like a USB port with no host.
    pub(super) fn write(&mut self, link: usize, bytes: Bytes) {
        let l = &mut self.links[link];
        let Some(client) = &l.client else {
            return;
        };
        let tcp = l.transport == Transport::Tcp;
        match client.tx.try_send(bytes) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) if !tcp => l.stats.dropped += 1,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let span = l.span.clone();
                let _e = span.enter();
                warn!("TCP client does not read its frames; closing it");
                self.drop_client(link);
            }
            Err(mpsc::error::TrySendError::Closed(_)) if tcp => self.drop_client(link),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Boot log text and the `rebooted` frame, as firmware prints on its serial console.
    pub(super) fn boot_serial(&mut self, link: usize) {
        let node = self.links[link].node;
        let mesh = self.world.mesh_of(node).unwrap_or("?").to_owned();
        let lines = [
            "INFO  | 00:00:00 0 \r\n".to_owned(),
            "INFO  | 00:00:00 0 //\\ E S H T /\\ S T / C\r\n".to_owned(),
            "INFO  | 00:00:00 0 Booted, wake cause 0 (boot count 1), reset_reason=reset\r\n"
                .to_owned(),
            format!(
                "INFO  | 00:00:01 1 Archipel simulated radio {node} on mesh {mesh}, firmware {}\r\n",
                device::FIRMWARE_VERSION
            ),
            "INFO  | 00:00:01 1 [SerialConsole] Waiting for a client to talk protobufs\r\n"
                .to_owned(),
        ];
        for line in lines {
            self.write(link, Bytes::from(line));
        }
        let rebooted = proto::FromRadio {
            id: 0,
            payload_variant: Some(proto::from_radio::PayloadVariant::Rebooted(true)),
        };
        self.send_to_client(link, vec![rebooted]);
    }

    /// A plain-text log line on a serial console that has not switched to frames yet.
    pub(super) fn log_to_serial(&mut self, link: usize, at: Duration, packet: &Packet) {
        let Transport::Serial {
            protobuf_mode: false,
            ..
        } = self.links[link].transport
        else {
            return;
        };
        let secs = at.as_secs();
        let port = packet
            .portnum()
            .map_or("encrypted".to_owned(), |p| p.as_str_name().to_owned());
        let line = format!(
            "INFO  | {:02}:{:02}:{:02} {} [Router] Received {} from={} id={} hop_limit={}\r\n",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            secs,
            port,
            packet.from(),
            packet.id(),
            packet.hop_limit()
        );
        self.write(link, Bytes::from(line));
    }

    /// A TCP client connected: it replaces the previous one, with a fresh session.
    pub(super) fn connect_tcp(
        &mut self,
        link: usize,
        tx: mpsc::Sender<Bytes>,
        peer: SocketAddr,
    ) -> u64 {
        if self.links[link].client.is_some() {
            let span = self.links[link].span.clone();
            let _e = span.enter();
            info!(%peer, "force close previous TCP connection");
            self.drop_client(link);
        }
        let id = self.next_client;
        self.next_client += 1;
        let l = &mut self.links[link];
        l.device.reset_session();
        l.client = Some(Client { id, tx });
        {
            let _e = l.span.enter();
            info!(%peer, "client connected");
        }
        let node = l.node;
        self.publish(SimEvent::ClientConnected { node });
        id
    }

    /// The link's TCP client is gone (or is made to go): its connection closes once the
    /// sender is dropped, and the device goes idle.
    pub(super) fn drop_client(&mut self, link: usize) {
        let l = &mut self.links[link];
        if l.client.take().is_none() {
            return;
        }
        l.device.reset_session();
        let node = l.node;
        self.publish(SimEvent::ClientDisconnected { node });
    }

    /// A connection task ended.
    pub(super) fn client_gone(&mut self, link: usize, id: u64) {
        if self.links[link].client.as_ref().is_some_and(|c| c.id == id) {
            {
                let l = &self.links[link];
                let _e = l.span.enter();
                let s = &l.stats;
                info!(
                    malformed = s.malformed,
                    noise_bytes = s.noise_bytes,
                    oversize = s.oversize,
                    truncated = s.truncated,
                    dropped = s.dropped,
                    "client disconnected"
                );
            }
            self.drop_client(link);
        }
    }

    pub(super) fn kick(&mut self, node: NodeId) {
        for link in self.links_of(node) {
            if self.links[link].transport == Transport::Tcp {
                self.drop_client(link);
            }
        }
    }

    pub(super) fn inject(&mut self, node: NodeId, bytes: Bytes) {
        for link in self.links_of(node) {
            self.write(link, bytes.clone());
        }
    }

    /// Something arrived from the link's client `id`.
    pub(super) fn on_client_item(&mut self, link: usize, id: u64, item: StreamItem) {
        if self.links[link].client.as_ref().is_none_or(|c| c.id != id) {
            return; // a replaced client's last bytes
        }
        let span = self.links[link].span.clone();
        let _e = span.enter();
        let bytes = match item {
            StreamItem::Frame(bytes) => bytes,
            StreamItem::Noise(noise) => {
                self.links[link].stats.noise_bytes += noise.len() as u64;
                debug!(len = noise.len(), "bytes outside frames skipped");
                return;
            }
            StreamItem::Oversize { declared } => {
                self.links[link].stats.oversize += 1;
                debug!(declared, "frame header over 512 bytes skipped");
                return;
            }
            StreamItem::Truncated { len } => {
                self.links[link].stats.truncated += 1;
                debug!(len, "stream ended inside a frame");
                return;
            }
        };
        if let Transport::Serial {
            protobuf_mode,
            client_present,
        } = &mut self.links[link].transport
        {
            // Any complete frame switches the console to frames (`SerialConsole::handleToRadio`).
            *protobuf_mode = true;
            if !*client_present {
                *client_present = true;
                let node = self.links[link].node;
                info!("serial client started talking");
                self.publish(SimEvent::ClientConnected { node });
            }
        }
        let msg = match proto::ToRadio::decode(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                let stats = &mut self.links[link].stats;
                stats.malformed += 1;
                warn!(error = %e, malformed = stats.malformed, "ignore malformed toradio");
                return;
            }
        };
        let disconnect = matches!(
            msg.payload_variant,
            Some(proto::to_radio::PayloadVariant::Disconnect(_))
        );
        let now = self.advance();
        let node = self.links[link].node;
        let status = self.status(node, now);
        let out = self.links[link].device.handle_to_radio(msg, now, status);
        for packet in out.to_mesh {
            if let Err(e) = self.world.transmit(node, packet, now) {
                warn!(error = %e, "client packet not transmitted");
            }
        }
        if let Some(reason) = out.downlink_refused {
            self.publish(SimEvent::DownlinkDropped { node, reason });
        }
        for packet in out.downlink {
            match self.world.receive_from_mqtt(node, packet, now) {
                Ok(true) => {}
                Ok(false) => debug!("downlink packet already seen, dropped"),
                Err(e) => warn!(error = %e, "downlink packet not taken"),
            }
        }
        self.send_to_client(link, out.to_client);
        self.pump();
        self.service_devices(now);
        if disconnect
            && let Transport::Serial { client_present, .. } = &mut self.links[link].transport
            && *client_present
        {
            *client_present = false;
            info!("serial client disconnected");
            self.publish(SimEvent::ClientDisconnected { node });
        }
    }
}
