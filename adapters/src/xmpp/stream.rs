//! The component connection (XEP-0114) on tokio-xmpp's public XML stream.
//!
//! Why not `tokio_xmpp::Component`: its `Stream` implementation ends (`None`) on *any* read
//! error, and a stanza the parsers refuse is one (tokio-xmpp 6.0.0 `component/stream.rs`
//! maps every `Err` to `None`). Any user of the server could then knock the bridge off with
//! one malformed message (two `<body/>` in one language, an unknown `type`), and every
//! message routed to us during the reconnect would bounce. Its soft read timeout ends the
//! stream the same way. The handshake below is `Component::new_plaintext`'s
//! (`component/login.rs`), with the same parts (`TcpServerConnector`, `skip_features`,
//! `Handshake`); reading then tells a stanza we cannot parse (skipped, and answered) from a
//! connection that is gone.

use std::io;

use futures_util::{SinkExt, StreamExt};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_xmpp::Stanza;
use tokio_xmpp::connect::{DnsConfig, ServerConnector, TcpServerConnector};
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::component::Handshake;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, RawStanzaHeader, ReadError, StreamElementError, Timeouts, XmppStream,
    XmppStreamElement,
};

/// Why a connection could not be opened or ended. One enum for this layer; its text is
/// what the operator reads.
#[derive(Debug, thiserror::Error)]
pub enum XmppError {
    /// A setting that can never work.
    #[error("XMPP setting `{setting}`: {why}")]
    Setting {
        /// Which setting.
        setting: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// TCP or the stream header failed.
    #[error("cannot reach the XMPP server {server}: {why}")]
    Unreachable {
        /// `IP:port`.
        server: String,
        /// What the socket said.
        why: String,
    },
    /// The server refused the handshake (`not-authorized`: the secret is wrong).
    #[error("the XMPP server {server} refused the component handshake for {domain}: {why}")]
    Refused {
        /// `IP:port`.
        server: String,
        /// Our domain.
        domain: String,
        /// The server's stream error, with a hint.
        why: String,
    },
    /// The stream ended (closed, stream error, I/O error).
    #[error("{0}")]
    Ended(String),
}

/// The connection type.
type Io = BufStream<TcpStream>;

/// One authenticated component stream.
pub(super) struct Connection {
    /// The XML stream, after the handshake.
    stream: XmppStream<Io>,
}

/// What reading gave.
pub(super) enum Read {
    /// A stanza (boxed: it is far larger than the other variants).
    Stanza(Box<Stanza>),
    /// A stanza the parsers refused; the stream goes on. Its header, to answer it.
    Invalid {
        /// `message`, `iq` or `presence`.
        kind: String,
        /// Its addressing and id as sent.
        header: RawStanzaHeader,
        /// What was wrong with it.
        why: String,
    },
    /// The server stayed silent for the read timeout (the stream is still fine).
    Idle,
    /// The connection is gone.
    Ended(XmppError),
}

/// Opens a plaintext component stream to `server` for `domain` and does the handshake.
pub(super) async fn connect(
    server: &str,
    domain: &str,
    secret: &str,
    timeouts: Timeouts,
) -> Result<Connection, XmppError> {
    let jid = Jid::new(domain).map_err(|e| XmppError::Setting {
        setting: "domain",
        why: e.to_string(),
    })?;
    let unreachable = |why: String| XmppError::Unreachable {
        server: server.to_owned(),
        why,
    };
    let connector = TcpServerConnector::from(DnsConfig::addr(server));
    let (mut pending, _) = connector
        .connect(&jid, ns::COMPONENT, timeouts)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let header = pending.take_header();
    let Some(stream_id) = header.id.map(|id| id.into_owned()) else {
        return Err(unreachable("the stream header has no id".into()));
    };
    let mut stream: XmppStream<Io> = pending.skip_features();
    let handshake = Handshake::from_stream_id_and_password(stream_id, secret);
    stream
        .send(&XmppStreamElement::ComponentHandshake(handshake))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    loop {
        match stream.next().await {
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::ComponentHandshake(_)))) => {
                return Ok(Connection { stream });
            }
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e)))) => {
                let condition = e.0.condition.to_string();
                let hint = match condition.as_str() {
                    "not-authorized" => ": wrong secret?",
                    "conflict" => ": another component is connected for this domain",
                    "host-unknown" => ": the server has no component for this domain",
                    _ => "",
                };
                return Err(XmppError::Refused {
                    server: server.to_owned(),
                    domain: domain.to_owned(),
                    why: format!("{}{hint}", e.0),
                });
            }
            Some(Err(ReadError::SoftTimeout)) => {}
            Some(Ok(other)) => {
                return Err(unreachable(format!(
                    "expected the handshake answer, got {}",
                    describe(&other)
                )));
            }
            Some(Err(e)) => return Err(unreachable(e.to_string())),
            None => return Err(unreachable("the server closed the connection".into())),
        }
    }
}

fn describe(element: &FallibleStreamElement) -> &'static str {
    match element {
        FallibleStreamElement::Ok(XmppStreamElement::Stanza(_)) => "a stanza",
        FallibleStreamElement::Ok(_) => "another stream element",
        FallibleStreamElement::Err(_) => "something unreadable",
    }
}

impl Connection {
    /// The next thing the server sent.
    pub(super) async fn next(&mut self) -> Read {
        match self.stream.next().await {
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::Stanza(s)))) => {
                Read::Stanza(Box::new(s))
            }
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e)))) => Read::Ended(
                XmppError::Ended(format!("the XMPP server ended the stream: {}", e.0)),
            ),
            Some(Ok(FallibleStreamElement::Ok(_))) => Read::Ended(XmppError::Ended(
                "the XMPP server sent a stream element a component does not take".into(),
            )),
            Some(Ok(FallibleStreamElement::Err(StreamElementError::InvalidStanza {
                name,
                header,
                error,
                ..
            }))) => Read::Invalid {
                kind: name.to_string(),
                header,
                why: error.to_string(),
            },
            Some(Ok(FallibleStreamElement::Err(e))) => {
                Read::Ended(XmppError::Ended(format!("the XMPP server sent {e}")))
            }
            Some(Err(ReadError::SoftTimeout)) => Read::Idle,
            Some(Err(ReadError::ParseError(e))) => Read::Invalid {
                kind: String::new(),
                header: RawStanzaHeader {
                    from: None,
                    to: None,
                    type_: None,
                    id: None,
                },
                why: e.to_string(),
            },
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                Read::Ended(XmppError::Ended("the XMPP server ended the stream".into()))
            }
            Some(Err(ReadError::HardError(e))) => Read::Ended(XmppError::Ended(format!(
                "the connection to the XMPP server failed: {e}"
            ))),
        }
    }

    /// Sends one stanza (and flushes).
    pub(super) async fn send(&mut self, stanza: Stanza) -> io::Result<()> {
        self.stream.send(&XmppStreamElement::Stanza(stanza)).await
    }

    /// Ends the stream (footer, then waits for the server's).
    pub(super) async fn close(&mut self) {
        let _ = SinkExt::<&XmppStreamElement>::close(&mut self.stream).await;
    }
}
