//! The simulator's tokio edge: the virtual clock, the tasks, and the sockets through which
//! real clients reach the attached radios.
//!
//! One `Core` holds the [`World`], one [`Device`] per attached radio and transport, and the
//! current client of each. It sits behind a `std::sync::Mutex` that is only ever held for a
//! synchronous step, never across an `.await`. Tasks:
//!
//! | task              | does                                                                 |
//! |-------------------|----------------------------------------------------------------------|
//! | engine            | sleeps until the world's or a device's next deadline (or a wake-up), then advances the core to the current sim time |
//! | TCP listener      | one per attached radio; a new connection replaces (closes) the previous one, as the firmware's single-client TCP API does |
//! | TCP connection    | frames in → core; queued bytes → socket                              |
//! | pty reader/writer | the same over a pseudo-terminal, which is always "connected"         |
//!
//! Sim time is `(real time since start) × time_scale`. Every input first advances the world to
//! the current sim time, so events keep their own sim times even when the engine wakes late.
//! A serial (pty) device behaves like firmware on USB: boot log text and a `rebooted` frame at
//! start, plain-text log lines until the client's first frame, then frames only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use mesh_core::{NodeId, Packet, PacketId, frame, proto};
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::codec::{Decoder, FramedRead};
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::{SimConfig, SimConfigError};
use super::device::to_phone::ToPhoneDrops;
use super::device::{self, Device, DeviceProfile, RadioStatus};
use super::pty::{Pty, PtyError};
use super::world::{World, WorldError, WorldEvent};
use crate::codec::{StreamCodec, StreamItem};

/// Events kept for slow subscribers before they start missing some.
const EVENT_CAPACITY: usize = 16_384;
/// Frames queued for one client; a TCP client that falls this far behind is disconnected.
const CLIENT_QUEUE: usize = 1024;
/// Client id of the (always present) serial side of a pty.
const SERIAL_CLIENT: u64 = 0;

/// One attached radio, as clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedRadio {
    /// Its node number.
    pub node: NodeId,
    /// Its long name.
    pub long_name: String,
    /// The mesh it is in.
    pub mesh: String,
    /// The loopback address of its TCP stream API.
    pub tcp: SocketAddr,
    /// The path of its serial port, when it has one.
    pub pty: Option<PathBuf>,
}

/// What happens in the simulator, for tests, logs and the demo.
#[derive(Clone, Debug)]
pub enum SimEvent {
    /// A node started transmitting.
    Transmitted {
        /// The mesh.
        mesh: String,
        /// The transmitting node.
        node: NodeId,
        /// The packet as on the air (encrypted, `channel` = hash).
        packet: Packet,
        /// How long it occupies the channel.
        airtime: Duration,
    },
    /// A node received a packet it had not seen before.
    Received {
        /// The receiving node.
        node: NodeId,
        /// The packet, decoded (`channel` = index) if the node could, else as on the air.
        packet: Packet,
    },
    /// A client connected to an attached radio (TCP), or started talking to it (serial).
    ClientConnected {
        /// The radio.
        node: NodeId,
    },
    /// A client left an attached radio, was replaced, kicked, or said `disconnect`.
    ClientDisconnected {
        /// The radio.
        node: NodeId,
    },
    /// An attached radio handed a packet to its client.
    ToClient {
        /// The radio.
        node: NodeId,
        /// The packet, as the client gets it.
        packet: Packet,
    },
}

/// Why the simulator cannot start or do what was asked. Causes are chained as `source()`, not
/// repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] SimConfigError),
    /// A TCP port could not be bound.
    #[error(
        "radio {node}: cannot listen on 127.0.0.1:{port} (pick another attached.tcp_port, or 0 for any free port)"
    )]
    Bind {
        /// The radio.
        node: NodeId,
        /// The port asked for.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// A pseudo-terminal could not be opened.
    #[error("radio {node}: cannot open a pseudo-terminal")]
    Pty {
        /// The radio.
        node: NodeId,
        /// Why.
        source: PtyError,
    },
    /// The world refused a packet.
    #[error(transparent)]
    World(#[from] WorldError),
    /// A text longer than a packet carries.
    #[error(
        "a text of {len} bytes does not fit a packet (at most {} bytes)",
        mesh_core::packet::MAX_DATA_PAYLOAD
    )]
    TextTooLong {
        /// Its length in bytes.
        len: usize,
    },
}

/// A running simulated world. See the module doc.
pub struct Simulator {
    /// The world, the devices and their clients; locked for one synchronous step at a time.
    core: Arc<Mutex<Core>>,
    /// Tells the engine task that its next deadline may have moved.
    wake: Arc<Notify>,
    /// Set to true (or dropped) to stop every task.
    shutdown: watch::Sender<bool>,
    /// Every task, awaited by [`Simulator::shutdown`].
    tasks: Vec<JoinHandle<()>>,
    /// How clients reach the attached radios.
    radios: Vec<AttachedRadio>,
    /// Where events are published.
    events: broadcast::Sender<SimEvent>,
}

impl Simulator {
    /// Validates the config, binds one loopback TCP listener per attached radio (and opens
    /// its pty if asked), and starts the world's clock.
    pub async fn start(config: SimConfig) -> Result<Simulator, SimError> {
        config.validate()?;
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(super::world::DEFAULT_EPOCH_UNIX);
        let world = World::with_epoch(&config, epoch);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (shutdown, _) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let mut links = Vec::new();
        let mut listeners = Vec::new();
        let mut ptys = Vec::new();
        let mut radios = Vec::new();
        for mesh in &config.meshes {
            for node in &mesh.nodes {
                let Some(attached) = node.attached else {
                    continue;
                };
                let bind = |source| SimError::Bind {
                    node: node.id,
                    port: attached.tcp_port,
                    source,
                };
                let listener = TcpListener::bind(("127.0.0.1", attached.tcp_port))
                    .await
                    .map_err(bind)?;
                let tcp = listener.local_addr().map_err(bind)?;
                let profile = |salt| {
                    DeviceProfile::from_config(&config, node.id, epoch, salt)
                        .map(Device::new)
                        .ok_or(SimError::World(WorldError::UnknownNode(node.id)))
                };
                listeners.push((links.len(), listener));
                links.push(Link::new(node.id, &mesh.name, Transport::Tcp, profile(0)?));
                let pty = if attached.pty {
                    let pty = Pty::open().map_err(|source| SimError::Pty {
                        node: node.id,
                        source,
                    })?;
                    let path = pty.path().to_path_buf();
                    let transport = Transport::Serial {
                        protobuf_mode: false,
                        client_present: false,
                    };
                    ptys.push((links.len(), pty));
                    links.push(Link::new(node.id, &mesh.name, transport, profile(1)?));
                    Some(path)
                } else {
                    None
                };
                info!(mesh = %mesh.name, node = %node.id, %tcp, pty = ?pty, "simulated radio attached");
                radios.push(AttachedRadio {
                    node: node.id,
                    long_name: node.long_name.clone(),
                    mesh: mesh.name.clone(),
                    tcp,
                    pty,
                });
            }
        }
        let mut core = Core {
            world,
            clock: Clock::new(config.time_scale),
            links,
            events: events.clone(),
            next_client: SERIAL_CLIENT + 1,
        };
        let mut serial_queues = Vec::new();
        for (link, _) in &ptys {
            let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
            core.links[*link].client = Some(Client {
                id: SERIAL_CLIENT,
                tx,
            });
            core.boot_serial(*link);
            serial_queues.push(rx);
        }
        let core = Arc::new(Mutex::new(core));
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(
            drive(core.clone(), wake.clone(), shutdown.subscribe())
                .instrument(info_span!("sim_engine")),
        ));
        for (link, listener) in listeners {
            let span = lock(&core).links[link].span.clone();
            tasks.push(tokio::spawn(
                serve_tcp(
                    core.clone(),
                    wake.clone(),
                    link,
                    listener,
                    shutdown.subscribe(),
                )
                .instrument(span),
            ));
        }
        for ((link, pty), rx) in ptys.into_iter().zip(serial_queues) {
            let span = lock(&core).links[link].span.clone();
            let pty = Arc::new(pty);
            tasks.push(tokio::spawn(
                read_pty(
                    core.clone(),
                    wake.clone(),
                    link,
                    pty.clone(),
                    shutdown.subscribe(),
                )
                .instrument(span.clone()),
            ));
            tasks.push(tokio::spawn(
                write_pty(pty, rx, shutdown.subscribe()).instrument(span),
            ));
        }
        Ok(Simulator {
            core,
            wake,
            shutdown,
            tasks,
            radios,
            events,
        })
    }

    /// The attached radios, in config order.
    pub fn radios(&self) -> Vec<AttachedRadio> {
        self.radios.clone()
    }

    /// A new subscription to the simulator's events (from now on).
    pub fn events(&self) -> broadcast::Receiver<SimEvent> {
        self.events.subscribe()
    }

    /// A node says `text` now, to a node (with want_ack) or to `^all`, on channel `channel`.
    pub fn send_text(
        &self,
        from: NodeId,
        to: NodeId,
        channel: u8,
        text: &str,
    ) -> Result<PacketId, SimError> {
        if text.len() > mesh_core::packet::MAX_DATA_PAYLOAD {
            return Err(SimError::TextTooLong { len: text.len() });
        }
        let id = {
            let mut core = lock(&self.core);
            let now = core.advance();
            let id = core.world.send_text(from, to, channel, text, now)?;
            core.pump();
            id
        };
        self.wake.notify_one();
        Ok(id)
    }

    /// Closes the radio's current TCP client, as when another client connects.
    pub fn kick_client(&self, node: NodeId) {
        lock(&self.core).kick(node);
        self.wake.notify_one();
    }

    /// Sends raw bytes to the radio's current client(s): garbage, truncated frames, anything.
    pub fn inject_bytes(&self, node: NodeId, bytes: Bytes) {
        lock(&self.core).inject(node, bytes);
    }

    /// What the radio's to-phone queues dropped while no client read them, its TCP and serial
    /// devices together (zero for a node that is not attached).
    pub fn to_phone_drops(&self, node: NodeId) -> ToPhoneDrops {
        let core = lock(&self.core);
        let mut drops = ToPhoneDrops::default();
        for link in core.links.iter().filter(|l| l.node == node) {
            drops += link.device.to_phone_drops();
        }
        drops
    }

    /// Percent of the last minute of sim time the mesh's channel was busy (0 for an unknown
    /// mesh).
    pub fn channel_utilization(&self, mesh: &str) -> f32 {
        let mut core = lock(&self.core);
        let now = core.clock.now();
        core.world.channel_utilization(mesh, now).unwrap_or(0.0)
    }

    /// Stops every task, closing listeners, clients and ptys, and returns when all ended.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            if let Err(e) = task.await
                && e.is_panic()
            {
                warn!(error = %e, "a simulator task panicked");
            }
        }
    }
}

/// Sim time from real time.
#[derive(Debug)]
struct Clock {
    /// Real time of sim time zero.
    start: Instant,
    /// Simulated seconds per real second.
    scale: f64,
    /// The latest sim time handed out, so sim time never goes backwards.
    last: Duration,
}

impl Clock {
    fn new(scale: f64) -> Clock {
        Clock {
            start: Instant::now(),
            scale,
            last: Duration::ZERO,
        }
    }

    /// The current sim time.
    fn now(&mut self) -> Duration {
        let elapsed = self.start.elapsed().as_secs_f64() * self.scale;
        let now = Duration::try_from_secs_f64(elapsed).unwrap_or(Duration::MAX);
        self.last = self.last.max(now);
        self.last
    }

    /// The real instant of a sim time (`None` if beyond any reachable instant). Rounded up
    /// by a microsecond so that waking at it finds the sim time reached, not a hair short.
    fn instant_at(&self, sim: Duration) -> Option<Instant> {
        let real = Duration::try_from_secs_f64(sim.as_secs_f64() / self.scale).ok()?;
        self.start
            .checked_add(real)?
            .checked_add(Duration::from_micros(1))
    }
}

/// How a device is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
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
struct Client {
    /// Tells this client from the one that replaced it.
    id: u64,
    /// Bytes for it; dropping the sender closes a TCP connection.
    tx: mpsc::Sender<Bytes>,
}

/// Counters of bad input from a client, kept for logs.
#[derive(Debug, Default)]
struct LinkStats {
    /// Frames that were not a `ToRadio`.
    malformed: u64,
    /// Bytes outside frames.
    noise_bytes: u64,
    /// Headers announcing more than 512 bytes.
    oversize: u64,
    /// Frames cut short by the end of the stream.
    truncated: u64,
    /// Frames dropped because the client did not read them.
    dropped: u64,
}

/// One attached radio on one transport.
#[derive(Debug)]
struct Link {
    /// The radio's node.
    node: NodeId,
    /// TCP or serial.
    transport: Transport,
    /// Its PhoneAPI state.
    device: Device,
    /// Where its output goes, if anyone listens.
    client: Option<Client>,
    /// Carries the mesh and node into every log line about this radio.
    span: tracing::Span,
    /// Bad input seen.
    stats: LinkStats,
}

impl Link {
    fn new(node: NodeId, mesh: &str, transport: Transport, device: Device) -> Link {
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
struct Core {
    /// The RF world.
    world: World,
    /// Sim time.
    clock: Clock,
    /// The attached radios' devices, one per transport.
    links: Vec<Link>,
    /// Where events are published.
    events: broadcast::Sender<SimEvent>,
    /// Next TCP client id.
    next_client: u64,
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    // A panic while holding the lock leaves consistent-enough state for a simulator.
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Core {
    /// Runs the world and the devices up to the current sim time; returns it.
    fn advance(&mut self) -> Duration {
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
    fn service_devices(&mut self, now: Duration) {
        for link in 0..self.links.len() {
            let status = self.status(self.links[link].node, now);
            let out = self.links[link].device.service_loop(status);
            self.send_to_client(link, out);
        }
    }

    /// The earliest sim time something is due.
    fn next_deadline(&self) -> Option<Duration> {
        self.links
            .iter()
            .filter_map(|l| l.device.poll_timeout())
            .chain(self.world.poll_timeout())
            .min()
    }

    fn status(&self, node: NodeId, now: Duration) -> RadioStatus {
        RadioStatus {
            tx_queue_free: self.world.tx_queue_free(node),
            channel_utilization: self
                .world
                .node_channel_utilization(node, now)
                .unwrap_or(0.0),
            air_util_tx: self.world.air_util_tx(node, now).unwrap_or(0.0),
        }
    }

    fn publish(&self, event: SimEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// Hands the world's events to the devices and to subscribers.
    fn pump(&mut self) {
        while let Some(event) = self.world.poll_event() {
            self.dispatch(event);
        }
    }

    fn dispatch(&mut self, event: WorldEvent) {
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
                    let msgs = self.links[link].device.on_mesh_packet(&packet, at);
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

    fn links_of(&self, node: NodeId) -> Vec<usize> {
        (0..self.links.len())
            .filter(|&l| self.links[l].node == node)
            .collect()
    }

    /// Frames the messages and queues them for the link's client.
    fn send_to_client(&mut self, link: usize, msgs: Vec<proto::FromRadio>) {
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
    fn write(&mut self, link: usize, bytes: Bytes) {
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
    fn boot_serial(&mut self, link: usize) {
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
    fn log_to_serial(&mut self, link: usize, at: Duration, packet: &Packet) {
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
    fn connect_tcp(&mut self, link: usize, tx: mpsc::Sender<Bytes>, peer: SocketAddr) -> u64 {
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
    fn drop_client(&mut self, link: usize) {
        let l = &mut self.links[link];
        if l.client.take().is_none() {
            return;
        }
        l.device.reset_session();
        let node = l.node;
        self.publish(SimEvent::ClientDisconnected { node });
    }

    /// A connection task ended.
    fn client_gone(&mut self, link: usize, id: u64) {
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

    fn kick(&mut self, node: NodeId) {
        for link in self.links_of(node) {
            if self.links[link].transport == Transport::Tcp {
                self.drop_client(link);
            }
        }
    }

    fn inject(&mut self, node: NodeId, bytes: Bytes) {
        for link in self.links_of(node) {
            self.write(link, bytes.clone());
        }
    }

    /// Something arrived from the link's client `id`.
    fn on_client_item(&mut self, link: usize, id: u64, item: StreamItem) {
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

/// The engine: advances the core whenever something is due or an input may have moved the
/// deadline.
async fn drive(core: Arc<Mutex<Core>>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let deadline = {
            let mut c = lock(&core);
            c.advance();
            c.next_deadline().map(|d| c.clock.instant_at(d))
        };
        let sleep = async {
            match deadline.flatten() {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => break,
        }
    }
    debug!("simulator engine stopped");
}

/// Accepts TCP clients for one radio; each new one replaces the previous.
async fn serve_tcp(
    core: Arc<Mutex<Core>>,
    wake: Arc<Notify>,
    link: usize,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
                    let id = lock(&core).connect_tcp(link, tx, peer);
                    wake.notify_one();
                    connections.spawn(
                        serve_connection(core.clone(), wake.clone(), link, id, stream, rx, for_connections.clone())
                            .in_current_span(),
                    );
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One TCP client: frames in, queued bytes out, until either side closes.
async fn serve_connection(
    core: Arc<Mutex<Core>>,
    wake: Arc<Notify>,
    link: usize,
    id: u64,
    stream: TcpStream,
    mut rx: mpsc::Receiver<Bytes>,
    mut shutdown: watch::Receiver<bool>,
) {
    use tokio::io::AsyncWriteExt;
    let (read, mut write) = stream.into_split();
    let mut frames = FramedRead::new(read, StreamCodec);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            out = rx.recv() => match out {
                Some(bytes) => {
                    if write.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                // Replaced or kicked: the core dropped our sender.
                None => break,
            },
            item = frames.next() => match item {
                Some(Ok(item)) => {
                    lock(&core).on_client_item(link, id, item);
                    wake.notify_one();
                }
                Some(Err(e)) => {
                    debug!(error = %e, "TCP read failed");
                    break;
                }
                None => break,
            },
        }
    }
    let _ = write.shutdown().await;
    lock(&core).client_gone(link, id);
    wake.notify_one();
}

/// Reads the pty master: what the serial client writes.
async fn read_pty(
    core: Arc<Mutex<Core>>,
    wake: Arc<Notify>,
    link: usize,
    pty: Arc<Pty>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut codec = StreamCodec;
    let mut pending = BytesMut::new();
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            read = pty.read(&mut buf) => match read {
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    let mut core = lock(&core);
                    while let Ok(Some(item)) = codec.decode(&mut pending) {
                        core.on_client_item(link, SERIAL_CLIENT, item);
                    }
                    drop(core);
                    wake.notify_one();
                }
                Err(e) => {
                    // Not expected while we hold the slave open; do not spin on it.
                    debug!(error = %e, "pty read failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Writes queued bytes to the pty master, for the serial client.
async fn write_pty(
    pty: Arc<Pty>,
    mut rx: mpsc::Receiver<Bytes>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            out = rx.recv() => match out {
                Some(bytes) => {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        written = pty.write_all(&bytes) => if let Err(e) = written {
                            debug!(error = %e, "pty write failed");
                        },
                    }
                }
                None => break,
            },
        }
    }
}
