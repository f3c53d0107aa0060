//! Authenticated byte streams between gateways: TCP (no Nagle delay) and the TLS of
//! [`super::tls`], under a handshake timeout.
//!
//! - [`connect`] dials an address and pins the key configured for it.
//! - [`PeerListener::accept`] takes a TCP connection; [`Incoming::authenticate`] runs its
//!   handshake. They are two steps so an accept loop can hand each handshake to its own task:
//!   a silent or slow peer then holds one task until the timeout, never the listener.
//!
//! # The acceptance byte
//! In TLS 1.3 the client finishes its handshake before the server has seen the client's key,
//! so a client refused by the server would only learn it on its first read. To make
//! [`connect`] answer for both keys, the server sends one byte, [`ACCEPTED`], in a record of
//! its own once it has checked the client's key (23 bytes on the wire, once per connection),
//! and [`connect`] returns only after reading it. A refused client reads the server's alert
//! instead: one round trip after it sent its key.
//!
//! # Refusals
//! A refusal names the key the other side presented ([`TransportError::presented`]). After a
//! refusal the socket lingers in a background task until the other side closes or the
//! handshake deadline passes: closing at once with its last bytes unread would make the kernel
//! answer with a reset, which can destroy the alert before the other side reads it.
//!
//! # Two hubs that both dial
//! If two hubs dial each other at the same moment, each ends up with two connections to the
//! other; [`super::duplicate`] has the rule both apply to keep the same single one, from each
//! stream's [`PeerStream::direction`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::AlertDescription;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use super::duplicate::Direction;
use super::identity::Identity;
use super::key::PeerKey;
use super::tls;

/// The byte a server sends once it has accepted the client's key (transport version 1).
pub const ACCEPTED: u8 = 0x01;

/// Why a connection between gateways failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
    /// Accepting a TCP connection failed (often a lack of file descriptors: back off).
    #[error("cannot accept a connection: {0}")]
    Accept(io::Error),
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
    /// The connection and its handshake took longer than allowed.
    #[error("no authenticated connection within {after:?}")]
    Timeout {
        /// The handshake timeout.
        after: Duration,
    },
    /// The server we dialled presented another key than the one configured for it.
    #[error(
        "the peer presented key {} where {} was expected",
        presented.fingerprint(),
        expected.fingerprint()
    )]
    WrongKey {
        /// The key configured for the address.
        expected: PeerKey,
        /// The key the server presented.
        presented: PeerKey,
    },
    /// A client presented a key that is not among the configured peers.
    #[error("a peer presented key {}, which is not configured", presented.fingerprint())]
    UnknownKey {
        /// The key the client presented.
        presented: PeerKey,
    },
    /// The other side refused this gateway's key (or the handshake) with a TLS alert.
    #[error("the peer refused the handshake ({alert:?}): does it list this gateway's key?")]
    Refused {
        /// The alert it sent.
        alert: AlertDescription,
    },
    /// The server closed the connection without accepting or refusing it.
    #[error("the peer closed the connection before accepting it")]
    NotAccepted,
    /// The server answered the handshake with something other than [`ACCEPTED`].
    #[error("the peer does not speak this transport (first byte {byte:#04x})")]
    Protocol {
        /// The byte it sent.
        byte: u8,
    },
    /// The TLS handshake failed for another reason (no TLS 1.3, no raw public keys, ...).
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// The connection failed during the handshake.
    #[error("connection lost during the handshake: {0}")]
    Io(io::Error),
    /// The key to dial is this gateway's own: a copied identity or a hub dialling itself.
    #[error("the peer key is this gateway's own key")]
    OwnKey,
    /// The TLS configuration could not be built.
    #[error("TLS setup: {0}")]
    Config(rustls::Error),
}

impl TransportError {
    /// The key the other side presented when it was refused for it: for the log line and the
    /// counter of refused keys.
    pub fn presented(&self) -> Option<PeerKey> {
        match self {
            Self::WrongKey { presented, .. } | Self::UnknownKey { presented } => Some(*presented),
            _ => None,
        }
    }
}

/// An authenticated connection to a peer: read and write it like a socket.
pub struct PeerStream {
    /// The TLS session over TCP, from either side.
    inner: TlsStream<TcpStream>,
    /// The key the other side proved: who this is.
    peer: PeerKey,
    /// Who dialled, for [`super::resolve_duplicate`].
    direction: Direction,
    /// This end's address; with `remote` it names the TCP connection in logs and lets two
    /// hubs tell which of their connections is the same one.
    local: SocketAddr,
    /// The other end's address.
    remote: SocketAddr,
}

impl PeerStream {
    /// The peer's authenticated key.
    pub fn peer_key(&self) -> PeerKey {
        self.peer
    }

    /// Who dialled.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The other end's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }
}

impl std::fmt::Debug for PeerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerStream")
            .field("peer", &self.peer.fingerprint())
            .field("direction", &self.direction)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Dials `addr`, proves `identity` and requires the server to hold `expected`; returns once
/// the server has accepted this gateway's key too, or fails within `handshake_timeout`
/// (TCP connection included).
pub async fn connect(
    addr: SocketAddr,
    identity: &Identity,
    expected: PeerKey,
    handshake_timeout: Duration,
) -> Result<(PeerStream, PeerKey), TransportError> {
    if expected == identity.public_key() {
        return Err(TransportError::OwnKey);
    }
    let config = tls::client_config(identity, expected).map_err(TransportError::Config)?;
    let deadline = Instant::now() + handshake_timeout;
    let dial = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| TransportError::Connect { addr, source })?;
        tcp.set_nodelay(true).map_err(TransportError::Io)?;
        let local = tcp.local_addr().map_err(TransportError::Io)?;
        let connecting = TlsConnector::from(config)
            .connect(tls::server_name(addr), tcp)
            .into_fallible();
        let mut tls = match connecting.await {
            Ok(tls) => tls,
            Err((error, tcp)) => {
                linger(tcp, deadline);
                return Err(classify(error, Some(expected)));
            }
        };
        let mut answer = [0u8; 1];
        match tls.read_exact(&mut answer).await {
            Ok(_) if answer[0] == ACCEPTED => {}
            Ok(_) => return Err(TransportError::Protocol { byte: answer[0] }),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(TransportError::NotAccepted);
            }
            Err(e) => return Err(classify(e, Some(expected))),
        }
        Ok(PeerStream {
            inner: tls.into(),
            peer: expected,
            direction: Direction::Outbound,
            local,
            remote: addr,
        })
    };
    let stream = timeout_at(deadline, dial)
        .await
        .map_err(|_| TransportError::Timeout {
            after: handshake_timeout,
        })??;
    tracing::debug!(peer = %expected.fingerprint(), %addr, "peer connection authenticated");
    Ok((stream, expected))
}

/// A listening socket that accepts the configured peers.
pub struct PeerListener {
    /// The bound socket.
    listener: TcpListener,
    /// TLS with this gateway's key and the keys it accepts.
    acceptor: TlsAcceptor,
    /// How long a connection may take to authenticate before it is dropped.
    handshake_timeout: Duration,
}

impl PeerListener {
    /// Listens on `addr` for the peers whose keys are in `known`.
    pub async fn bind(
        addr: SocketAddr,
        identity: &Identity,
        known: impl IntoIterator<Item = PeerKey>,
        handshake_timeout: Duration,
    ) -> Result<Self, TransportError> {
        let config = tls::server_config(identity, known).map_err(TransportError::Config)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TransportError::Bind { addr, source })?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(config),
            handshake_timeout,
        })
    }

    /// The address actually bound (the port, when asked for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next TCP connection, not yet authenticated.
    pub async fn accept(&self) -> Result<Incoming, TransportError> {
        let (tcp, remote) = self
            .listener
            .accept()
            .await
            .map_err(TransportError::Accept)?;
        tcp.set_nodelay(true).map_err(TransportError::Accept)?;
        let local = tcp.local_addr().map_err(TransportError::Accept)?;
        Ok(Incoming {
            tcp,
            local,
            remote,
            acceptor: self.acceptor.clone(),
            handshake_timeout: self.handshake_timeout,
        })
    }
}

/// A TCP connection a peer opened, waiting for its handshake.
pub struct Incoming {
    /// The connection.
    tcp: TcpStream,
    /// This end's address, kept for the [`PeerStream`].
    local: SocketAddr,
    /// Who connected, for logs before the key is known.
    remote: SocketAddr,
    /// The listener's TLS setup.
    acceptor: TlsAcceptor,
    /// The listener's handshake timeout.
    handshake_timeout: Duration,
}

impl Incoming {
    /// Who connected.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Runs the handshake: returns the connection and the key the peer proved, or fails
    /// within the listener's handshake timeout.
    pub async fn authenticate(self) -> Result<(PeerStream, PeerKey), TransportError> {
        let Self {
            tcp,
            local,
            remote,
            acceptor,
            handshake_timeout,
        } = self;
        let deadline = Instant::now() + handshake_timeout;
        let handshake = async {
            let mut tls = match acceptor.accept(tcp).into_fallible().await {
                Ok(tls) => tls,
                Err((error, tcp)) => {
                    linger(tcp, deadline);
                    return Err(classify(error, None));
                }
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| PeerKey::from_spki(cert.as_ref()))
                .ok_or(TransportError::Tls(rustls::Error::NoCertificatesPresented))?;
            tls.write_all(&[ACCEPTED])
                .await
                .map_err(TransportError::Io)?;
            tls.flush().await.map_err(TransportError::Io)?;
            Ok(PeerStream {
                inner: tls.into(),
                peer,
                direction: Direction::Inbound,
                local,
                remote,
            })
        };
        let stream =
            timeout_at(deadline, handshake)
                .await
                .map_err(|_| TransportError::Timeout {
                    after: handshake_timeout,
                })??;
        let peer = stream.peer;
        tracing::debug!(peer = %peer.fingerprint(), %remote, "peer connection authenticated");
        Ok((stream, peer))
    }
}

/// Turns a handshake's I/O error into what happened: `expected` is the pinned key on the
/// client side, `None` on the server side.
fn classify(error: io::Error, expected: Option<PeerKey>) -> TransportError {
    let Some(tls_error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
    else {
        return TransportError::Io(error);
    };
    match (tls::presented_key(&tls_error), expected) {
        (Some(presented), Some(expected)) => TransportError::WrongKey {
            expected,
            presented,
        },
        (Some(presented), None) => TransportError::UnknownKey { presented },
        (None, _) => match tls_error {
            rustls::Error::AlertReceived(alert) => TransportError::Refused { alert },
            other => TransportError::Tls(other),
        },
    }
}

/// Keeps a refused connection open in the background until the other side closes it or
/// `deadline` passes, reading and discarding what it still sends (see the module doc).
fn linger(mut tcp: TcpStream, deadline: Instant) {
    tokio::spawn(async move {
        let drain = async {
            let _ = tcp.shutdown().await;
            let mut sink = [0u8; 1024];
            while let Ok(n) = tcp.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = timeout_at(deadline, drain).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: PeerKey = PeerKey::from_bytes([1; 32]);
    const LARGE: PeerKey = PeerKey::from_bytes([2; 32]);

    #[test]
    fn a_refusal_names_the_presented_key_only_when_there_is_one() {
        let unknown = TransportError::UnknownKey { presented: SMALL };
        assert_eq!(unknown.presented(), Some(SMALL));
        assert!(
            unknown
                .to_string()
                .contains(&SMALL.fingerprint().to_string())
        );
        let wrong = TransportError::WrongKey {
            expected: LARGE,
            presented: SMALL,
        };
        assert_eq!(wrong.presented(), Some(SMALL));
        assert_eq!(TransportError::NotAccepted.presented(), None);
    }
}
