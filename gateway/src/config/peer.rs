//! `[[peer]]`: a neighbouring hub, known by its public key and, when this hub dials it, its
//! IP address.
//!
//! The key is the string its `archipel identity` prints (`archipel:` and 56 base32
//! characters, with a checksum), checked when the config is loaded so that a mistyped
//! character is found now, with the key that holds it, rather than as refused handshakes later.
//! A peer is an endpoint like a radio or a broker: routes name it, and its name is unique
//! across every kind.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use archipel_adapters::peer::{IdentityError, KEY_PREFIX, PeerKey};
use serde::Deserialize;

use super::error::Problem;
use super::federation::{self, FederationSection, PEER_PORT};
use super::syntax;

/// Longest key text examined: a key is 65 characters; anything much longer is not one, and
/// is not echoed into messages.
const MAX_KEY_TEXT: usize = 256;

/// `[[peer]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// The operator's name for the neighbour, used in routes and logs (unique across every
    /// endpoint).
    pub name: String,
    /// `IP:PORT` where the neighbour listens; none for a neighbour that only dials in.
    pub address: Option<String>,
    /// The neighbour's public key string, as its `archipel identity` prints it.
    pub key: String,
    /// This link's window (KiB), when it is thinner or fatter than `[federation]`'s.
    pub window_kib: Option<u32>,
}

impl PeerSection {
    /// A neighbour with the federation's window, for configs built in code.
    pub fn new(name: impl Into<String>, address: Option<SocketAddr>, key: PeerKey) -> PeerSection {
        PeerSection {
            name: name.into(),
            address: address.map(|a| a.to_string()),
            key: key.to_string(),
            window_kib: None,
        }
    }

    /// The neighbour's key (`None` only for a config that did not validate).
    pub fn public_key(&self) -> Option<PeerKey> {
        self.key.parse().ok()
    }

    /// Where to dial it: `None` for a neighbour that only dials in (or a config that did not
    /// validate).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.address.as_deref().and_then(|a| a.parse().ok())
    }
}

/// The key prefix of a peer section in messages.
pub fn key(i: usize, s: &PeerSection) -> String {
    format!("peer[{i}] ({})", s.name)
}

/// Checks every `[[peer]]`: names, addresses, keys, and that no two name one gateway.
/// `federation.own_key` is ours when the identity file was read.
pub fn check(peers: &[PeerSection], federation: &FederationSection, p: &mut Vec<Problem>) {
    let mut keys: HashMap<PeerKey, String> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, String> = HashMap::new();
    for (i, s) in peers.iter().enumerate() {
        let at = key(i, s);
        if let Some(why) = syntax::endpoint_name(&s.name) {
            p.push(Problem::new(format!("peer[{i}].name"), why));
        }
        if let Some(address) = &s.address {
            match dial_addr(address) {
                Err(why) => p.push(Problem::new(format!("{at}.address"), why)),
                Ok(addr) => {
                    if let Some(first) = addresses.insert(addr, at.clone()) {
                        p.push(Problem::new(
                            format!("{at}.address"),
                            format!(
                                "`{address}` is also the address of {first}: one address answers with one gateway's key; check which neighbour listens there"
                            ),
                        ));
                    }
                }
            }
        }
        match parse_key(&s.key) {
            Err(why) => p.push(Problem::new(format!("{at}.key"), why)),
            Ok(k) => {
                if federation.own_key == Some(k) {
                    p.push(Problem::new(
                        format!("{at}.key"),
                        format!(
                            "is this gateway's own key (fingerprint {}): give the neighbour's, which `archipel identity` prints on its hub",
                            k.fingerprint()
                        ),
                    ));
                } else if let Some(first) = keys.insert(k, at.clone()) {
                    p.push(Problem::new(
                        format!("{at}.key"),
                        format!(
                            "is also the key of {first} (fingerprint {}): a key names one gateway, so one neighbour gets one [[peer]]; remove one, or correct the key",
                            k.fingerprint()
                        ),
                    ));
                }
            }
        }
        if let Some(kib) = s.window_kib
            && let Some(why) = federation::window(kib)
        {
            p.push(Problem::new(format!("{at}.window_kib"), why));
        }
    }
}

/// Checks a neighbour's address: an IP literal that can be dialled, and a port.
fn dial_addr(text: &str) -> Result<SocketAddr, String> {
    let at = federation::ip_port(text)?;
    let ip = at.ip();
    if ip.is_unspecified() {
        return Err(format!(
            "`{text}` means \"every interface\", which cannot be dialled: give the neighbour's IP address, such as `192.168.1.20:{PEER_PORT}`, or leave address out if it only dials in"
        ));
    }
    if ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        return Err(format!(
            "`{text}` is a multicast or broadcast address: give the neighbour's own IP address, such as `192.168.1.20:{PEER_PORT}`"
        ));
    }
    Ok(at)
}

/// The key in `text`, or why it is not one and what to check.
fn parse_key(text: &str) -> Result<PeerKey, String> {
    if text.len() > MAX_KEY_TEXT {
        return Err(format!(
            "is {} bytes long, a gateway key is {}: copy the one line `archipel identity` prints on the neighbour's hub",
            text.len(),
            KEY_PREFIX.len() + 56
        ));
    }
    text.parse::<PeerKey>().map_err(|e| match e {
        IdentityError::KeyPrefix if text.trim().is_empty() => format!(
            "is empty: give the neighbour's key, the `{KEY_PREFIX}…` line its `archipel identity` prints"
        ),
        IdentityError::KeyPrefix => format!(
            "`{}` does not start with `{KEY_PREFIX}`: copy the whole line `archipel identity` prints on the neighbour's hub, prefix included",
            text.escape_debug()
        ),
        IdentityError::KeyCharacter {
            character,
            position,
        } if character.is_whitespace() => format!(
            "has a space at character {position}: write the key on one line, without spaces"
        ),
        IdentityError::KeyCharacter {
            character,
            position,
        } => format!(
            "has `{}` at character {position}: a key holds only letters and the digits 2 to 7{}",
            character.escape_debug(),
            match character {
                '0' => " (is it an `o`?)",
                '1' => " (is it an `l` or an `i`?)",
                '8' => " (is it a `b`?)",
                '9' => " (is it a `g`?)",
                _ => "",
            }
        ),
        IdentityError::KeyLength { found } => format!(
            "has {found} characters after `{KEY_PREFIX}`, a key has 56: check that the whole line was copied"
        ),
        IdentityError::KeyChecksum => "its checksum does not match: check the key for a mistyped character (the neighbour's `archipel identity` prints it with its fingerprint to compare)".into(),
        IdentityError::KeyVersion { version } => format!(
            "is a version {version} key, from a newer Archipel than this one (which knows version 1): upgrade this gateway"
        ),
        other => other.to_string(),
    })
}
