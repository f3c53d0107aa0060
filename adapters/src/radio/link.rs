//! The radio link loop: the only owner of one radio's port, timers and request channel.
//!
//! Lifecycle (one task per radio, see [`Lifecycle`]):
//!
//! ```text
//!   Connecting{attempt} --opened--> Connected --(closed | error | timeout)--> Backoff{until}
//!        ^                                                                        |
//!        +------------------------------------------------------------------------+
//! ```
//!
//! Every decision is taken by [`Session`](super::state::Session); this file only moves bytes
//! and time in and out of it. Packets submitted while the radio is away wait in the session
//! and go out after the next handshake; their callers learn the outcome either way.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mesh_core::{Backoff, DeliveryStatus, NodeId, Packet, PacketId};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tracing::{Instrument, debug, info, info_span, warn};

use super::info::RadioInfo;
use super::noise::{LogLimit, NoiseLog};
use super::state::{Output, SendToken, Session, SessionConfig};
use crate::codec::{StreamCodec, StreamItem};

/// Per-frame warnings logged at once before the limit applies: enough to see what is wrong.
const FRAME_WARNING_BURST: u32 = 10;
/// ...and then a second: a stream of nothing but bad frames costs this, whatever its rate.
const FRAME_WARNINGS_PER_SECOND: f64 = 1.0;

/// How a radio is attached: by TCP or by a serial port. (Not a gateway endpoint: that is
/// any outside world the router joins, of which a radio is one kind.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// The stream API over TCP (`host:port`, port 4403 on real devices).
    Tcp(String),
    /// The stream API over a serial port (USB), 115200 baud on real devices.
    Serial {
        /// Device path, such as `/dev/ttyUSB0` or `/dev/serial/by-id/...`.
        path: PathBuf,
        /// Baud rate.
        baud: u32,
    },
}

impl Attachment {
    /// True for serial links, where the firmware's text log arrives between frames and a
    /// clean close sends `disconnect`.
    pub fn is_serial(&self) -> bool {
        matches!(self, Attachment::Serial { .. })
    }
}

impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attachment::Tcp(addr) => write!(f, "tcp://{addr}"),
            Attachment::Serial { path, .. } => write!(f, "serial:{}", path.display()),
        }
    }
}

/// Everything needed to run one radio link.
#[derive(Debug, Clone)]
pub struct RadioConfig {
    /// The operator's name for this radio; every log line of the link carries it.
    pub name: String,
    /// Where the radio is.
    pub attachment: Attachment,
    /// Session timings (handshake, heartbeat, ACK).
    pub session: SessionConfig,
    /// Time allowed to open the port or TCP connection.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How long a connection must last before the backoff starts again from the beginning.
    pub stable_after: Duration,
}

impl RadioConfig {
    /// Defaults for a radio attached by `attachment`.
    pub fn new(name: impl Into<String>, attachment: Attachment) -> RadioConfig {
        RadioConfig {
            name: name.into(),
            attachment,
            session: SessionConfig::default(),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// What a radio link reports to its owner.
// Events are moved once, from the link to its owner; boxing packets would cost an allocation
// per packet for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum RadioEvent {
    /// Handshake complete: the radio's identity, channels and node DB.
    Connected(Arc<RadioInfo>),
    /// A packet the radio heard on the mesh (decoded; `channel` is the radio's local index).
    Packet(Packet),
    /// A packet the radio published on its MQTT uplink through us: anything it heard and
    /// could decode, whoever it was for, encrypted as heard, on the named channel.
    Uplink {
        /// The packet, encrypted (`channel` is the channel's hash).
        packet: Packet,
        /// The channel's name.
        channel: String,
    },
    /// The connection ended; the link retries after `retry_in`.
    Disconnected {
        /// Why, for the operator.
        reason: String,
        /// Backoff before the next attempt.
        retry_in: Duration,
    },
    /// A notice the radio addressed to its user (such as a duty-cycle refusal).
    Notification(String),
}

/// Counters of what crossed the link, shared with metrics and status pages.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Frames received from the radio.
    pub frames_in: AtomicU64,
    /// Frames written to the radio.
    pub frames_out: AtomicU64,
    /// Bytes outside frames (serial log text or garbage).
    pub noise_bytes: AtomicU64,
    /// Headers announcing more than 512 bytes, skipped.
    pub oversize_frames: AtomicU64,
    /// Frames cut short by the end of the stream.
    pub truncated_frames: AtomicU64,
    /// Frames that were not a valid `FromRadio`, skipped.
    pub undecodable_frames: AtomicU64,
    /// Handshakes completed.
    pub handshakes: AtomicU64,
    /// Connections lost or dropped.
    pub disconnects: AtomicU64,
    /// Device log lines dropped by the rate limit.
    pub log_lines_suppressed: AtomicU64,
}

impl LinkCounters {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The link's lifecycle; the data each state needs travels with it.
#[derive(Debug)]
enum Lifecycle {
    /// Opening the port; `attempt` counts failures since the last stable connection.
    Connecting {
        /// Failed attempts so far.
        attempt: u32,
    },
    /// Waiting before the next attempt.
    Backoff {
        /// When to try again.
        until: Instant,
    },
    /// Told to stop.
    Stopped,
}

enum Command {
    Send {
        packet: Packet,
        reply: oneshot::Sender<DeliveryStatus>,
    },
    Relay {
        packet: Packet,
        channel: String,
        gateway: NodeId,
        hops: u8,
        reply: oneshot::Sender<DeliveryStatus>,
    },
    Shutdown,
}

/// The link refuses work because it has stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("radio link `{0}` has stopped")]
pub struct LinkStopped(pub String);

/// The owner's side of a radio link. Cloning it shares the same link.
#[derive(Clone)]
pub struct RadioHandle {
    /// For error messages.
    name: Arc<str>,
    /// Requests to the link task.
    commands: mpsc::Sender<Command>,
    /// What crossed the link.
    counters: Arc<LinkCounters>,
    /// The last completed handshake's result, `None` while disconnected.
    info: watch::Receiver<Option<Arc<RadioInfo>>>,
    /// The link task, awaited on shutdown.
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl RadioHandle {
    /// Sends a packet through the radio and waits for its outcome: delivered once the radio
    /// queued it (and, with `want_ack`, once the mesh acknowledged it). An id of zero is
    /// replaced by a fresh one.
    pub async fn send(&self, packet: Packet) -> DeliveryStatus {
        let (reply, outcome) = oneshot::channel();
        if self
            .commands
            .send(Command::Send { packet, reply })
            .await
            .is_err()
        {
            return DeliveryStatus::unreachable(LinkStopped(self.name.to_string()).to_string());
        }
        outcome.await.unwrap_or_else(|_| {
            DeliveryStatus::unreachable(LinkStopped(self.name.to_string()).to_string())
        })
    }

    /// Injects a packet relayed from another mesh, keeping its sender and id: `packet` is
    /// encrypted for `channel` on this radio; it arrives with hop limit `hops`. Delivered once
    /// the radio has taken it (it hands it back as received).
    pub async fn relay(
        &self,
        packet: Packet,
        channel: &str,
        gateway: NodeId,
        hops: u8,
    ) -> DeliveryStatus {
        let (reply, outcome) = oneshot::channel();
        let cmd = Command::Relay {
            packet,
            channel: channel.to_owned(),
            gateway,
            hops,
            reply,
        };
        if self.commands.send(cmd).await.is_err() {
            return DeliveryStatus::unreachable(LinkStopped(self.name.to_string()).to_string());
        }
        outcome.await.unwrap_or_else(|_| {
            DeliveryStatus::unreachable(LinkStopped(self.name.to_string()).to_string())
        })
    }

    /// The radio's info while connected.
    pub fn info(&self) -> Option<Arc<RadioInfo>> {
        self.info.borrow().clone()
    }

    /// Waits until the radio is connected (or returns at once if it is).
    pub async fn connected(&self) -> Result<Arc<RadioInfo>, LinkStopped> {
        let mut rx = self.info.clone();
        let info = rx
            .wait_for(|i| i.is_some())
            .await
            .map_err(|_| LinkStopped(self.name.to_string()))?;
        Ok(info.clone().expect("waited for Some"))
    }

    /// What crossed the link so far.
    pub fn counters(&self) -> &LinkCounters {
        &self.counters
    }

    /// Stops the link (saying goodbye to a serial radio) and waits for its task to end.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// Starts a radio link task. Events arrive on the returned receiver; the link keeps
/// reconnecting until [`RadioHandle::shutdown`] or until every handle is dropped.
pub fn spawn(config: RadioConfig) -> (RadioHandle, mpsc::Receiver<RadioEvent>) {
    let (commands, command_rx) = mpsc::channel(64);
    let (events, event_rx) = mpsc::channel(1024);
    let (info_tx, info) = watch::channel(None);
    let counters = Arc::new(LinkCounters::default());
    let span = info_span!("radio", name = %config.name, at = %config.attachment);
    let link = Link {
        backoff: Backoff::new(
            config.backoff_initial,
            config.backoff_max,
            config.stable_after,
        ),
        session: Session::new(config.session.clone()),
        config: config.clone(),
        commands: command_rx,
        events,
        info: info_tx,
        counters: counters.clone(),
        replies: Default::default(),
        next_token: 0,
        rng: rand::rngs::SmallRng::from_os_rng(),
        id_counter: 0,
        noise: NoiseLog::default(),
        frame_warnings: LogLimit::new(FRAME_WARNING_BURST, FRAME_WARNINGS_PER_SECOND),
    };
    let task = tokio::spawn(link.run().instrument(span));
    let handle = RadioHandle {
        name: config.name.into(),
        commands,
        counters,
        info,
        task: Arc::new(tokio::sync::Mutex::new(Some(task))),
    };
    (handle, event_rx)
}

trait Port: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Port for T {}

async fn open(attachment: &Attachment) -> std::io::Result<Pin<Box<dyn Port>>> {
    match attachment {
        Attachment::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::pin(stream))
        }
        Attachment::Serial { path, baud } => {
            let builder = tokio_serial::new(path.to_string_lossy(), *baud);
            let port = tokio_serial::SerialStream::open(&builder).map_err(std::io::Error::other)?;
            Ok(Box::pin(port))
        }
    }
}

/// How one connection ended.
enum Ended {
    /// The link should reconnect; the text says why.
    Lost(String),
    /// Shutdown was asked for.
    Shutdown,
}

/// The task state of one radio link.
struct Link {
    /// Name, attachment and timings.
    config: RadioConfig,
    /// The protocol decisions.
    session: Session,
    /// Reconnect delays that do not reset on a connection that dies at once.
    backoff: Backoff,
    /// Requests from handles.
    commands: mpsc::Receiver<Command>,
    /// Events to the owner.
    events: mpsc::Sender<RadioEvent>,
    /// Publishes the radio's info while connected.
    info: watch::Sender<Option<Arc<RadioInfo>>>,
    /// Shared counters.
    counters: Arc<LinkCounters>,
    /// Who waits for which submitted packet.
    replies: std::collections::HashMap<SendToken, oneshot::Sender<DeliveryStatus>>,
    /// Next token to hand out.
    next_token: SendToken,
    /// Randomness for handshake nonces, packet ids and backoff jitter.
    rng: rand::rngs::SmallRng,
    /// Low bits of generated packet ids, as the firmware's rolling counter.
    id_counter: u32,
    /// Turns serial log text and garbage into rate-limited log lines.
    noise: NoiseLog,
    /// How many per-frame warnings reach the log (the counters count every one).
    frame_warnings: LogLimit,
}

impl Link {
    async fn run(mut self) {
        let mut state = Lifecycle::Connecting { attempt: 0 };
        loop {
            state = match state {
                Lifecycle::Connecting { attempt } => {
                    debug!(attempt, "connecting");
                    let (ended, lasted) = self.connect_once().await;
                    match ended {
                        Ended::Shutdown => Lifecycle::Stopped,
                        Ended::Lost(reason) => {
                            let jitter = self.rng.random::<f64>();
                            let delay = self.backoff.next_delay(lasted, jitter);
                            warn!(%reason, retry_in_ms = delay.as_millis() as u64, "radio link down");
                            LinkCounters::add(&self.counters.disconnects, 1);
                            self.info.send_replace(None);
                            let outputs = self.session.disconnected(&reason);
                            self.apply_offline(outputs);
                            let _ = self
                                .events
                                .send(RadioEvent::Disconnected {
                                    reason,
                                    retry_in: delay,
                                })
                                .await;
                            Lifecycle::Backoff {
                                until: Instant::now() + delay,
                            }
                        }
                    }
                }
                Lifecycle::Backoff { until } => match self.wait_offline(until).await {
                    true => Lifecycle::Connecting {
                        attempt: self.backoff.attempt(),
                    },
                    false => Lifecycle::Stopped,
                },
                Lifecycle::Stopped => break,
            };
        }
        let outputs = self.session.disconnected("link stopped");
        self.apply_offline(outputs);
        for (_, reply) in self.replies.drain() {
            let _ = reply.send(DeliveryStatus::unreachable("radio link stopped"));
        }
        info!("radio link stopped");
    }

    /// While disconnected: accept packets (they wait in the session) until `until`.
    /// Returns false on shutdown.
    async fn wait_offline(&mut self, until: Instant) -> bool {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                cmd = self.commands.recv() => match self.command(cmd) {
                    Some(outputs) => self.apply_offline(outputs),
                    None => return false,
                },
            }
        }
    }

    /// Outputs produced while no port is open: only outcomes matter.
    fn apply_offline(&mut self, outputs: Vec<Output>) {
        for o in outputs {
            if let Output::Outcome { token, status } = o {
                self.reply(token, status);
            }
        }
    }

    fn reply(&mut self, token: SendToken, status: DeliveryStatus) {
        if let Some(tx) = self.replies.remove(&token) {
            let _ = tx.send(status);
        }
    }

    /// Hands a request to the session; `None` means stop.
    fn command(&mut self, cmd: Option<Command>) -> Option<Vec<Output>> {
        let now = Instant::now().into_std();
        match cmd? {
            Command::Send { mut packet, reply } => {
                if packet.id().is_unset() {
                    self.id_counter = self.id_counter.wrapping_add(1);
                    let id = PacketId::generate(self.rng.random(), self.id_counter);
                    packet.meta_mut().id = id.get();
                }
                let token = self.token(reply);
                Some(self.session.submit(token, packet, now))
            }
            Command::Relay {
                packet,
                channel,
                gateway,
                hops,
                reply,
            } => {
                let token = self.token(reply);
                Some(
                    self.session
                        .relay(token, packet, &channel, gateway, hops, now),
                )
            }
            Command::Shutdown => None,
        }
    }

    fn token(&mut self, reply: oneshot::Sender<DeliveryStatus>) -> SendToken {
        let token = self.next_token;
        self.next_token += 1;
        self.replies.insert(token, reply);
        token
    }

    fn nonce(&mut self) -> u32 {
        self.rng.random_range(1..u32::MAX)
    }

    /// One connection from open to close. Returns why it ended and how long it was up.
    async fn connect_once(&mut self) -> (Ended, Option<Duration>) {
        let attachment = self.config.attachment.clone();
        let open = tokio::time::timeout(self.config.connect_timeout, open(&attachment));
        tokio::pin!(open);
        let opened = loop {
            tokio::select! {
                r = &mut open => break r,
                // Packets submitted meanwhile wait in the session; shutdown wins.
                cmd = self.commands.recv() => match self.command(cmd) {
                    Some(outputs) => self.apply_offline(outputs),
                    None => return (Ended::Shutdown, None),
                },
            }
        };
        let port = match opened {
            Ok(Ok(port)) => port,
            Ok(Err(e)) => return (Ended::Lost(format!("cannot open: {e}")), None),
            Err(_) => {
                return (
                    Ended::Lost(format!(
                        "no connection within {}s",
                        self.config.connect_timeout.as_secs()
                    )),
                    None,
                );
            }
        };
        let started = Instant::now();
        info!("port open, handshaking");
        let mut framed = Framed::new(port, StreamCodec);
        let nonce = self.nonce();
        let outputs = self.session.connected(nonce, started.into_std());
        let ended = match self.apply(&mut framed, outputs).await {
            Err(e) => Ended::Lost(e),
            Ok(()) => self.serve(&mut framed).await,
        };
        if matches!(ended, Ended::Shutdown) && self.config.attachment.is_serial() {
            let _ = framed.send(Session::goodbye()).await;
        }
        // Only a connection that completed its handshake counts towards forgiving the backoff.
        let lasted = self.info.borrow().is_some().then(|| started.elapsed());
        (ended, lasted)
    }

    async fn serve(&mut self, framed: &mut Framed<Pin<Box<dyn Port>>, StreamCodec>) -> Ended {
        loop {
            let deadline = self
                .session
                .next_deadline()
                .map(Instant::from_std)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let outputs = tokio::select! {
                item = framed.next() => match item {
                    None => return Ended::Lost("radio closed the connection".into()),
                    Some(Err(e)) => return Ended::Lost(format!("read failed: {e}")),
                    Some(Ok(item)) => self.on_item(item),
                },
                cmd = self.commands.recv() => match self.command(cmd) {
                    Some(outputs) => outputs,
                    None => return Ended::Shutdown,
                },
                _ = tokio::time::sleep_until(deadline) => self.session.tick(Instant::now().into_std()),
            };
            if let Err(reason) = self.apply(framed, outputs).await {
                return Ended::Lost(reason);
            }
        }
    }

    fn on_item(&mut self, item: StreamItem) -> Vec<Output> {
        let now = Instant::now().into_std();
        match item {
            StreamItem::Frame(frame) => {
                LinkCounters::add(&self.counters.frames_in, 1);
                self.session.frame(frame, now)
            }
            StreamItem::Noise(bytes) => {
                LinkCounters::add(&self.counters.noise_bytes, bytes.len() as u64);
                let (lines, dropped) = self.noise.push(&bytes, now);
                LinkCounters::add(&self.counters.log_lines_suppressed, dropped);
                for line in lines {
                    if line.suppressed_before > 0 {
                        info!(target: "archipel::radio::device", suppressed = line.suppressed_before, "{}", line.text);
                    } else {
                        info!(target: "archipel::radio::device", "{}", line.text);
                    }
                }
                Vec::new()
            }
            StreamItem::Oversize { declared } => {
                LinkCounters::add(&self.counters.oversize_frames, 1);
                if let Some(suppressed) = self.frame_warnings.allow(now) {
                    warn!(
                        declared,
                        suppressed, "skipped a frame header announcing more than 512 bytes"
                    );
                }
                Vec::new()
            }
            StreamItem::Truncated { len } => {
                LinkCounters::add(&self.counters.truncated_frames, 1);
                if let Some(suppressed) = self.frame_warnings.allow(now) {
                    warn!(len, suppressed, "stream ended inside a frame");
                }
                Vec::new()
            }
        }
    }

    /// Carries out the session's outputs. An error means the connection is unusable.
    async fn apply(
        &mut self,
        framed: &mut Framed<Pin<Box<dyn Port>>, StreamCodec>,
        outputs: Vec<Output>,
    ) -> Result<(), String> {
        for output in outputs {
            match output {
                Output::WriteRaw(bytes) => {
                    SinkExt::<Bytes>::flush(framed)
                        .await
                        .map_err(|e| format!("write failed: {e}"))?;
                    let port = framed.get_mut();
                    port.write_all(&bytes)
                        .await
                        .map_err(|e| format!("write failed: {e}"))?;
                    port.flush()
                        .await
                        .map_err(|e| format!("write failed: {e}"))?;
                }
                Output::Write(bytes) => {
                    framed
                        .send(bytes)
                        .await
                        .map_err(|e| format!("write failed: {e}"))?;
                    LinkCounters::add(&self.counters.frames_out, 1);
                }
                Output::Ready(info) => {
                    LinkCounters::add(&self.counters.handshakes, 1);
                    info!(
                        node = %info.node_id().map(|n| n.to_string()).unwrap_or_default(),
                        nodes = info.nodes.len(),
                        channels = info.active_channels().count(),
                        "radio ready"
                    );
                    self.info.send_replace(Some(info.clone()));
                    let _ = self.events.send(RadioEvent::Connected(info)).await;
                }
                Output::Packet(packet) => {
                    let _ = self.events.send(RadioEvent::Packet(packet)).await;
                }
                Output::Uplink { packet, channel } => {
                    let _ = self
                        .events
                        .send(RadioEvent::Uplink { packet, channel })
                        .await;
                }
                Output::Outcome { token, status } => self.reply(token, status),
                Output::DeviceLog(line) => {
                    info!(target: "archipel::radio::device", "{line}");
                }
                Output::Notification(text) => {
                    warn!(notice = %text, "radio notice");
                    let _ = self.events.send(RadioEvent::Notification(text)).await;
                }
                Output::Rebooted => {
                    info!("radio rebooted; handshaking again");
                    self.info.send_replace(None);
                }
                Output::Undecodable(why) => {
                    LinkCounters::add(&self.counters.undecodable_frames, 1);
                    if let Some(suppressed) = self.frame_warnings.allow(Instant::now().into_std()) {
                        warn!(%why, suppressed, "skipped an undecodable frame");
                    }
                }
                Output::Close(err) => return Err(err.to_string()),
            }
        }
        Ok(())
    }
}
