//! TLS between two gateways that know each other by public key alone: rustls with ring,
//! TLS 1.3 only, RFC 7250 raw public keys on both sides (no certificate, no CA, no name).
//!
//! - The client pins the one key configured for the address it dials ([`client_config`]);
//!   the server takes any key from its configured peers ([`server_config`]) and the caller
//!   reads which one from the finished connection. Both sides always authenticate.
//! - A key that is not the expected one fails the handshake as soon as it arrives (the
//!   server's key in its first flight, the client's in its second), with a TLS alert to the
//!   other side. The rustls error carries the key the other side presented
//!   ([`presented_key`]), so the log line and the counter can name its fingerprint.
//! - The presented key is matched first and its possession proven by the handshake signature
//!   (Ed25519 only, verified with rustls's raw-key helper) before any byte of data flows.
//! - No session resumption and no tickets: every connection proves both keys again, and the
//!   two tickets a server would send cost about 500 bytes on a 9,600 bit/s link for a
//!   shortcut a long-lived connection does not need. No SNI either (the server has one key).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{AlwaysResolvesClientRawPublicKeys, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{AlwaysResolvesServerRawPublicKeys, NoServerSessionStorage};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, OtherError,
    ServerConfig, SignatureScheme,
};

use super::identity::Identity;
use super::key::PeerKey;

/// The ring provider, given explicitly so no process-wide default (or another crate's
/// choice of one) decides what peers speak.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS config for dialling the peer whose key is `expected`.
pub fn client_config(identity: &Identity, expected: PeerKey) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let verifier = PinnedServerKey {
        expected,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(
            identity.certified_key(),
        )));
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// A TLS config for accepting the peers whose keys are in `known`. This gateway's own key is
/// left out even if listed: a hub that dials itself, or a second hub running with a copy of
/// this one's key file, is refused like a stranger.
pub fn server_config(
    identity: &Identity,
    known: impl IntoIterator<Item = PeerKey>,
) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let ours = identity.public_key();
    let verifier = KnownClientKeys {
        known: known.into_iter().filter(|key| *key != ours).collect(),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(
            identity.certified_key(),
        )));
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The name a client gives rustls: an IP address, which rustls never sends as SNI and which
/// no verifier here looks at.
pub fn server_name(addr: std::net::SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

/// The key the other side presented, if `error` is this module's refusal of it.
pub fn presented_key(error: &Error) -> Option<PeerKey> {
    match error {
        Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => inner
            .downcast_ref::<UnexpectedKey>()
            .map(|unexpected| unexpected.0),
        _ => None,
    }
}

/// The refusal of a key that is well-formed but not one we trust, carried inside the rustls
/// error so the caller learns which key it was.
#[derive(Debug)]
struct UnexpectedKey(PeerKey);

impl fmt::Display for UnexpectedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unexpected key {}", self.0.fingerprint())
    }
}

impl std::error::Error for UnexpectedKey {}

/// The key in a raw-public-key "certificate", which must be a lone Ed25519 SPKI.
fn key_of(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<PeerKey, Error> {
    if !intermediates.is_empty() {
        return Err(Error::InvalidCertificate(CertificateError::BadEncoding));
    }
    PeerKey::from_spki(end_entity.as_ref())
        .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))
}

/// Accepts `key` if `trusted` says so, else refuses it naming it.
fn check(key: PeerKey, trusted: bool) -> Result<(), Error> {
    if trusted {
        Ok(())
    } else {
        Err(Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(UnexpectedKey(key))),
        )))
    }
}

/// Proof that the other side holds the key it presented: its signature over the handshake.
fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    let spki = SubjectPublicKeyInfoDer::from(cert.as_ref());
    rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, algorithms)
}

/// The client's check of the server: exactly the key configured for that address.
#[derive(Debug)]
struct PinnedServerKey {
    /// The key the `[[peer]]` section gives for the address being dialled.
    expected: PeerKey,
    /// ring's signature algorithms, for the handshake signature.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let key = key_of(end_entity, intermediates)?;
        check(key, key == self.expected).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("peers speak TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// The server's check of a client: any key among the configured peers.
#[derive(Debug)]
struct KnownClientKeys {
    /// The keys of the `[[peer]]` sections, without this gateway's own.
    known: HashSet<PeerKey>,
    /// ring's signature algorithms, for the handshake signature.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for KnownClientKeys {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let key = key_of(end_entity, intermediates)?;
        check(key, self.known.contains(&key)).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("peers speak TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ClientConnection, ProtocolVersion, ServerConnection};

    /// Bytes each way, counted as the two sides hand them over.
    #[derive(Default)]
    struct Wire {
        client_to_server: usize,
        server_to_client: usize,
        flights: usize,
    }

    /// Runs a handshake in memory; returns the first error and which side raised it.
    fn handshake(
        client: &mut ClientConnection,
        server: &mut ServerConnection,
        wire: &mut Wire,
    ) -> Result<(), (&'static str, Error)> {
        for _ in 0..10 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                wire.client_to_server += buf.len();
                wire.flights += 1;
                server.read_tls(&mut buf.as_slice()).unwrap();
                server.process_new_packets().map_err(|e| ("server", e))?;
            }
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                wire.server_to_client += buf.len();
                wire.flights += 1;
                client.read_tls(&mut buf.as_slice()).unwrap();
                client.process_new_packets().map_err(|e| ("client", e))?;
            }
            if !client.is_handshaking() && !server.is_handshaking() && !server.wants_write() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish")
    }

    fn pair(
        client_id: &Identity,
        pinned: PeerKey,
        server_id: &Identity,
        known: &[PeerKey],
    ) -> (ClientConnection, ServerConnection) {
        let addr = "127.0.0.1:1".parse().unwrap();
        let client =
            ClientConnection::new(client_config(client_id, pinned).unwrap(), server_name(addr))
                .unwrap();
        let server =
            ServerConnection::new(server_config(server_id, known.iter().copied()).unwrap())
                .unwrap();
        (client, server)
    }

    #[test]
    fn both_sides_authenticate_by_raw_public_key_over_tls_1_3() {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let (mut client, mut server) = pair(&a, b.public_key(), &b, &[a.public_key()]);
        let mut wire = Wire::default();
        handshake(&mut client, &mut server, &mut wire).unwrap();
        assert_eq!(client.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        let client_seen = server.peer_certificates().unwrap();
        assert_eq!(client_seen.len(), 1);
        assert_eq!(
            PeerKey::from_spki(client_seen[0].as_ref()),
            Some(a.public_key())
        );
        let server_seen = client.peer_certificates().unwrap();
        assert_eq!(
            PeerKey::from_spki(server_seen[0].as_ref()),
            Some(b.public_key())
        );
        eprintln!(
            "handshake: {} bytes client to server, {} server to client",
            wire.client_to_server, wire.server_to_client
        );
        // ClientHello; the server's flight; the client's certificate and Finished; nothing
        // after it (no tickets).
        assert_eq!(wire.flights, 3);
        assert!(
            wire.client_to_server + wire.server_to_client < 1200,
            "handshake of {} + {} bytes",
            wire.client_to_server,
            wire.server_to_client
        );
    }

    #[test]
    fn a_server_refuses_a_client_key_it_does_not_know_and_names_it() {
        let (a, b, c) = (
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
        );
        let (mut client, mut server) = pair(&a, b.public_key(), &b, &[c.public_key()]);
        let (side, error) = handshake(&mut client, &mut server, &mut Wire::default()).unwrap_err();
        assert_eq!(side, "server");
        assert_eq!(presented_key(&error), Some(a.public_key()));
        // The alert reaches the client.
        let mut alert = Vec::new();
        server.write_tls(&mut alert).unwrap();
        client.read_tls(&mut alert.as_slice()).unwrap();
        assert!(matches!(
            client.process_new_packets(),
            Err(Error::AlertReceived(_))
        ));
    }

    #[test]
    fn a_client_refuses_a_server_that_is_not_the_pinned_key_in_the_first_flight() {
        let (a, b, c) = (
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
        );
        let (mut client, mut server) = pair(&a, c.public_key(), &b, &[a.public_key()]);
        let mut wire = Wire::default();
        let (side, error) = handshake(&mut client, &mut server, &mut wire).unwrap_err();
        assert_eq!(side, "client");
        assert_eq!(presented_key(&error), Some(b.public_key()));
        assert_eq!(wire.flights, 2, "refused on the server's first flight");
    }

    #[test]
    fn a_server_refuses_its_own_key() {
        let a = Identity::generate().unwrap();
        let (mut client, mut server) = pair(&a, a.public_key(), &a, &[a.public_key()]);
        let (side, error) = handshake(&mut client, &mut server, &mut Wire::default()).unwrap_err();
        assert_eq!(side, "server");
        assert_eq!(presented_key(&error), Some(a.public_key()));
    }

    #[test]
    fn a_tls_1_2_client_is_refused() {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let old = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServerKey {
                expected: b.public_key(),
                algorithms: provider().signature_verification_algorithms,
            }))
            .with_no_client_auth();
        let mut client =
            ClientConnection::new(Arc::new(old), server_name("127.0.0.1:1".parse().unwrap()))
                .unwrap();
        let mut server =
            ServerConnection::new(server_config(&b, [a.public_key()]).unwrap()).unwrap();
        let result = handshake(&mut client, &mut server, &mut Wire::default());
        assert!(matches!(result, Err(("server", _))), "{:?}", result.err());
    }
}
