//! The simulator's tokio edge: the virtual clock, the tasks, and the sockets through which
//! real clients reach the attached radios.
//!
//! One `Core` (in `server/engine.rs`, the synchronous step) holds the [`World`], one
//! [`Device`] per attached radio and transport, and the current client of each. It sits behind a `std::sync::Mutex` that is only ever held for a
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
use super::device::{self, Device, DeviceProfile, DownlinkDrop, DownlinkDrops, RadioStatus};
use super::pty::{Pty, PtyError};
use super::world::{World, WorldError, WorldEvent};
use crate::codec::{StreamCodec, StreamItem};

mod engine;

use engine::{Client, Clock, Core, Link, Transport, lock};

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
    /// An attached radio's MQTT client proxy refused a message (also counted, see
    /// [`Simulator::downlink_drops`]).
    DownlinkDropped {
        /// The radio.
        node: NodeId,
        /// Why.
        reason: DownlinkDrop,
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

    /// What the radio's MQTT client proxy refused, by reason, its TCP and serial devices
    /// together (zero for a node that is not attached).
    pub fn downlink_drops(&self, node: NodeId) -> DownlinkDrops {
        let core = lock(&self.core);
        let mut drops = DownlinkDrops::default();
        for link in core.links.iter().filter(|l| l.node == node) {
            drops += link.device.downlink_drops();
        }
        drops
    }

    /// The public key node `node` knows for `peer` in the RF world (learned from NodeInfo or
    /// known from the start), if any.
    pub fn known_key(&self, node: NodeId, peer: NodeId) -> Option<mesh_core::PublicKey> {
        lock(&self.core).world.known_key(node, peer)
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
