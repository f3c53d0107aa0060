//! `[federation]`: how this gateway meets other hubs. Where it listens (if it does), where
//! its identity key is kept, how many hubs a message may cross, and the session knobs a thin
//! link needs (the window, and how long a silent neighbour is waited for). The neighbours
//! themselves are `[[peer]]` sections (`peer.rs`).
//!
//! Addresses are IP literals: hubs know each other by IP address and public key, as a
//! community writes them on paper, and a hub may have no DNS. Nothing listens unless `listen`
//! is set, and it listens exactly where it says: `0.0.0.0` (every interface) is written by the
//! operator, never a default.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use archipel_adapters::peer::{Identity, IdentityError, PeerKey};
use figment::Figment;
use figment::providers::{Format, Toml};
use mesh_core::peer::{MAX_WINDOW_BYTES, SessionConfig};
use serde::Deserialize;

use super::error::{self, ConfigError, Problem};
use super::store::StoreSection;
use super::{env, syntax};

/// The port suggested in messages and examples (there is no default: a hub listens only where
/// its operator says).
pub const PEER_PORT: u16 = 4404;

/// The identity file's name beside the store when `identity_file` is not set.
pub const IDENTITY_FILE: &str = "identity.key";

/// Hubs a message may cross when `max_hops` is not set: enough for a valley of a few linked
/// villages, few enough that a loop the seen-set misses dies quickly.
pub const DEFAULT_MAX_HOPS: u8 = 4;

/// The most hubs a message may cross: the peer protocol carries the count in four bits.
pub const MAX_FEDERATION_HOPS: u8 = mesh_core::peer::frame::MAX_HOPS;

/// The window when `window_kib` is not set: the session's own default, which keeps a LAN or a
/// Wi-Fi shot full.
pub const DEFAULT_WINDOW_KIB: u32 = 256;

/// The smallest window: one packet of the largest size the protocol carries (2 KiB).
const MIN_WINDOW_KIB: u32 = (mesh_core::peer::frame::MAX_PACKET / 1024) as u32;

/// The largest window the session accepts.
const MAX_WINDOW_KIB: u32 = MAX_WINDOW_BYTES / 1024;

/// Silence after which a neighbour is given up when `dead_after_secs` is not set (the
/// session's default: three keepalives of 15 s).
pub const DEFAULT_DEAD_AFTER_SECS: u64 = 45;

/// The shortest silence accepted: a keepalive every second.
const MIN_DEAD_AFTER_SECS: u64 = 3;

/// The longest silence accepted: an hour, past which a dead link holds messages for nothing.
const MAX_DEAD_AFTER_SECS: u64 = 3600;

/// Window bytes per item the session may hold unacknowledged: a 60-byte text is the common
/// message, so the item limit rarely binds before the byte limit does.
const BYTES_PER_ITEM: u32 = 64;

/// The fewest items a window holds, so a tiny window still carries a burst of texts.
const MIN_WINDOW_ITEMS: u32 = 16;

/// `[federation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationSection {
    /// `IP:PORT` to accept neighbours on; none: this hub only dials.
    pub listen: Option<String>,
    /// The key pair's file; none: `identity.key` beside the store file.
    pub identity_file: Option<PathBuf>,
    /// How many hubs a message may cross (1 to 15): one that has crossed this many is not
    /// handed to another neighbour, so a ring of hubs never carries a message the seen-set
    /// missed for ever.
    pub max_hops: u8,
    /// Unacknowledged bytes a neighbour may send ahead (KiB): what an urgent message queued
    /// behind them waits for on a thin link.
    pub window_kib: u32,
    /// Seconds without a byte from a neighbour before its connection is given up; keepalives
    /// go every third of it.
    pub dead_after_secs: u64,
    /// This gateway's public key, read from the identity file when the config is loaded (none
    /// when the file is not made yet or federation is not used), so validation can refuse a
    /// `[[peer]]` with our own key and the summary can show our fingerprint.
    #[serde(skip)]
    pub own_key: Option<PeerKey>,
}

impl Default for FederationSection {
    fn default() -> Self {
        FederationSection {
            listen: None,
            identity_file: None,
            max_hops: DEFAULT_MAX_HOPS,
            window_kib: DEFAULT_WINDOW_KIB,
            dead_after_secs: DEFAULT_DEAD_AFTER_SECS,
            own_key: None,
        }
    }
}

impl FederationSection {
    /// The listen address (`None` when not listening, or for a config that did not
    /// validate).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|l| l.parse().ok())
    }

    /// The identity file: `identity_file`, or `identity.key` beside the store file.
    pub fn identity_path(&self, store: &StoreSection) -> PathBuf {
        identity_path(&store.path, self.identity_file.as_deref())
    }

    /// The session settings for a neighbour with this window (its own `window_kib`, else the
    /// section's).
    pub fn session(&self, window_kib: Option<u32>) -> SessionConfig {
        let defaults = SessionConfig::default();
        let kib = window_kib
            .unwrap_or(self.window_kib)
            .clamp(MIN_WINDOW_KIB, MAX_WINDOW_KIB);
        let window_bytes = kib * 1024;
        let dead_after = Duration::from_secs(
            self.dead_after_secs
                .clamp(MIN_DEAD_AFTER_SECS, MAX_DEAD_AFTER_SECS),
        );
        SessionConfig {
            window_bytes,
            window_items: (window_bytes / BYTES_PER_ITEM).clamp(
                MIN_WINDOW_ITEMS,
                defaults.window_items.max(MIN_WINDOW_ITEMS),
            ),
            keepalive: dead_after / 3,
            dead_after,
            ..defaults
        }
    }
}

/// The identity file for a store file and an optional `identity_file`.
pub fn identity_path(store: &Path, identity_file: Option<&Path>) -> PathBuf {
    match identity_file {
        Some(path) => path.to_path_buf(),
        None => store.with_file_name(IDENTITY_FILE),
    }
}

/// Checks `[federation]` (what needs no file: the identity file is `read_identity`'s).
pub fn check(f: &FederationSection, store: &StoreSection, p: &mut Vec<Problem>) {
    if let Some(listen) = &f.listen
        && let Err(why) = listen_addr(listen)
    {
        p.push(Problem::new("federation.listen", why));
    }
    if let Some(path) = &f.identity_file {
        let text = path.to_string_lossy();
        if text.trim().is_empty() {
            p.push(Problem::new(
                "federation.identity_file",
                format!(
                    "is empty: give the file the gateway's key pair is kept in, or leave it out to keep it as {IDENTITY_FILE} beside the store"
                ),
            ));
        } else if *path == store.path {
            p.push(Problem::new(
                "federation.identity_file",
                format!(
                    "`{}` is the store file: the key pair needs a file of its own, such as {IDENTITY_FILE} beside it",
                    path.display()
                ),
            ));
        }
    }
    if !(1..=MAX_FEDERATION_HOPS).contains(&f.max_hops) {
        p.push(Problem::new(
            "federation.max_hops",
            format!(
                "{}: give how many hubs a message may cross, 1 to {MAX_FEDERATION_HOPS} (default {DEFAULT_MAX_HOPS}); 1 means only to direct neighbours",
                f.max_hops
            ),
        ));
    }
    if let Some(why) = window(f.window_kib) {
        p.push(Problem::new("federation.window_kib", why));
    }
    if !(MIN_DEAD_AFTER_SECS..=MAX_DEAD_AFTER_SECS).contains(&f.dead_after_secs) {
        p.push(Problem::new(
            "federation.dead_after_secs",
            format!(
                "{}: give {MIN_DEAD_AFTER_SECS} to {MAX_DEAD_AFTER_SECS} seconds (default {DEFAULT_DEAD_AFTER_SECS}); keepalives go every third of it",
                f.dead_after_secs
            ),
        ));
    }
}

/// Why a window of `kib` KiB cannot be used, if it cannot.
pub fn window(kib: u32) -> Option<String> {
    if (MIN_WINDOW_KIB..=MAX_WINDOW_KIB).contains(&kib) {
        None
    } else {
        Some(format!(
            "{kib}: give {MIN_WINDOW_KIB} to {MAX_WINDOW_KIB} KiB (default {DEFAULT_WINDOW_KIB}; about 8 on a 9,600 bit/s link)"
        ))
    }
}

/// Reads our public key from the identity file when federation is used and the file exists; a
/// file that exists and cannot be used (open to others, not a key) is a problem now rather
/// than at the first connection.
pub fn read_identity(
    f: &mut FederationSection,
    store: &StoreSection,
    in_use: bool,
    p: &mut Vec<Problem>,
) {
    if !in_use {
        return;
    }
    let path = f.identity_path(store);
    match Identity::load(&path) {
        Ok(identity) => f.own_key = Some(identity.public_key()),
        Err(IdentityError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(dir) = dir.filter(|d| !d.is_dir()) {
                let whose = if f.identity_file.is_none() {
                    "the store's directory"
                } else {
                    "the directory"
                };
                p.push(Problem::new(
                    "federation.identity_file",
                    format!(
                        "{}: {whose} {} does not exist, so the key pair cannot be made there on first start: create it, or give another identity_file",
                        path.display(),
                        dir.display()
                    ),
                ));
            }
        }
        Err(e) => p.push(Problem::new("federation.identity_file", e.to_string())),
    }
}

/// Checks a listen address: an IP literal (any, loopback or one of this machine's) and a
/// port.
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    let at = ip_port(text)?;
    if at.ip().is_multicast() || at.ip() == IpAddr::from([255, 255, 255, 255]) {
        return Err(format!(
            "`{text}` is a multicast or broadcast address: give one of this machine's addresses, `127.0.0.1:{PEER_PORT}` (this machine only) or `0.0.0.0:{PEER_PORT}` (every interface)"
        ));
    }
    Ok(at)
}

/// Checks an address to dial or listen on: `a.b.c.d:port` or `[v6]:port`, never a host name,
/// never port 0 (neighbours dial a port written down once).
pub fn ip_port(text: &str) -> Result<SocketAddr, String> {
    let at = syntax::host_port(text, PEER_PORT)?;
    let Ok(ip) = at.host.parse::<IpAddr>() else {
        return Err(format!(
            "`{text}` names a host: federation uses no DNS (a hub may have none, and a name could be made to point elsewhere); write the IP address, such as `192.168.1.20:{}`",
            at.port
        ));
    };
    Ok(SocketAddr::new(ip, at.port))
}

/// The two paths `archipel identity` needs from a config file (and its `ARCHIPEL_`
/// overrides), read without validating the rest: a hub whose `[[peer]]` has a typo must still
/// be able to print its own key.
pub fn identity_path_of(
    path: &Path,
    env: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<PathBuf, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError::NotFound {
            path: path.to_path_buf(),
        });
    }
    #[derive(Deserialize)]
    struct Paths {
        #[serde(default)]
        store: StorePath,
        #[serde(default)]
        federation: IdentityFile,
    }
    #[derive(Deserialize)]
    struct StorePath {
        #[serde(default = "default_store")]
        path: PathBuf,
    }
    impl Default for StorePath {
        fn default() -> Self {
            StorePath {
                path: default_store(),
            }
        }
    }
    fn default_store() -> PathBuf {
        StoreSection::default().path
    }
    #[derive(Deserialize, Default)]
    struct IdentityFile {
        identity_file: Option<PathBuf>,
    }
    let (overrides, mut problems) = env::overrides(env);
    problems.retain(|p| p.key.starts_with("store.") || p.key.starts_with("federation."));
    let figment = overrides
        .into_iter()
        .filter(|o| o.path == "store.path" || o.path == "federation.identity_file")
        .map(|mut o| {
            o.as_text = true;
            o
        })
        .fold(Figment::new().merge(Toml::file_exact(path)), Figment::merge);
    match figment.extract::<Paths>() {
        Ok(paths) if problems.is_empty() => {
            let file = identity_path(&paths.store.path, paths.federation.identity_file.as_deref());
            if file.as_os_str().is_empty() || file.to_string_lossy().trim().is_empty() {
                return Err(ConfigError::Invalid {
                    problems: vec![Problem::new(
                        "federation.identity_file",
                        format!(
                            "is empty: give the file the key pair is kept in, or leave it out to keep it as {IDENTITY_FILE} beside the store"
                        ),
                    )],
                });
            }
            Ok(file)
        }
        Ok(_) => Err(ConfigError::Invalid { problems }),
        Err(e) => {
            problems.extend(error::from_figment(e, &path.display().to_string()));
            Err(ConfigError::Invalid { problems })
        }
    }
}
