//! A gateway's long-term identity: an Ed25519 key pair made on first start and kept in a file
//! beside the store.
//!
//! The file is a PKCS#8 private key in PEM (`-----BEGIN PRIVATE KEY-----`), the format
//! `openssl genpkey -algorithm ed25519` writes and `openssl pkey -in FILE -pubout` reads, so
//! a hub can also be given a key made elsewhere. It is created with mode 0600 (written to a
//! temporary file first and linked into place, so a crash never leaves half a key), and an
//! existing file that group or others may read or write is refused with an error naming the
//! path and the fix (`chmod 600 PATH`) rather than used: a key that may have leaked is the
//! operator's decision, not the gateway's. The private key is never printed: [`Identity`]'s
//! `Debug` shows the public key only, and the PEM text is wiped from memory once parsed.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use zeroize::Zeroizing;

use super::key::PeerKey;

/// An Ed25519 PKCS#8 key is 83 to 85 bytes, about 180 in PEM; anything much larger is not a
/// key file and is not read into memory.
const MAX_KEY_FILE: u64 = 4096;

/// Everything that can go wrong with an identity: its file, or a key string in a config.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file could not be read, created or written.
    #[error("identity key {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The key file is open to group or others.
    #[error(
        "identity key {path} has mode {mode:04o}: group or others have access to it, so it may \
         have leaked; if it did not, run `chmod 600 {path}`",
        path = path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file holds no usable Ed25519 PKCS#8 key.
    #[error("identity key {}: {problem}", path.display())]
    InvalidKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Making a fresh key failed (the system's random source).
    #[error("cannot generate an identity key: {0}")]
    Generate(String),
    /// A key string does not start with `archipel:`.
    #[error("a gateway key starts with `archipel:`")]
    KeyPrefix,
    /// A key string has a character outside base32.
    #[error(
        "a gateway key has {character:?} at character {position}: only letters and the digits \
         2 to 7 are used"
    )]
    KeyCharacter {
        /// The character.
        character: char,
        /// Its position in the whole string, from 1.
        position: usize,
    },
    /// A key string is too short or too long.
    #[error("a gateway key has 56 characters after `archipel:`, this one has {found}")]
    KeyLength {
        /// How many characters follow the prefix.
        found: usize,
    },
    /// A key string's checksum does not match: a character was mistyped.
    #[error("a gateway key's checksum does not match: a character is mistyped")]
    KeyChecksum,
    /// A key string from a newer Archipel, with a key type this one does not know.
    #[error("a gateway key of version {version}; this Archipel knows version 1 (Ed25519)")]
    KeyVersion {
        /// The version byte.
        version: u8,
    },
}

/// This gateway's key pair: what it proves in every TLS handshake with a peer.
#[derive(Clone)]
pub struct Identity {
    /// The public key, kept apart so it can be shown and compared without touching the
    /// signing key.
    public: PeerKey,
    /// The signing key with its raw public key as the "certificate", as rustls presents it
    /// (RFC 7250); shared by every connection's TLS config.
    certified: Arc<CertifiedKey>,
}

impl Identity {
    /// A fresh key pair held in memory only (tests, or a caller that saves it itself).
    pub fn generate() -> Result<Self, IdentityError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        Self::from_pkcs8(pkcs8.as_ref()).map_err(IdentityError::Generate)
    }

    /// The identity in `path`, made and saved there (mode 0600) if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        match Self::load(path) {
            Err(IdentityError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Self::create(path)
            }
            other => other,
        }
    }

    /// Makes a key pair and saves it to `path`; if another process created that file first,
    /// its identity is the one loaded.
    fn create(path: &Path) -> Result<Self, IdentityError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        write_new_private(path, to_pem(pkcs8.as_ref()).as_bytes())?;
        Self::load(path)
    }

    /// The identity saved in `path`.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io_error = |source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        };
        let metadata = fs::metadata(path).map_err(io_error)?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let invalid = |problem: String| IdentityError::InvalidKeyFile {
            path: path.to_path_buf(),
            problem,
        };
        if !metadata.is_file() {
            return Err(invalid("not a regular file".into()));
        }
        if metadata.len() > MAX_KEY_FILE {
            return Err(invalid(format!(
                "{} bytes: too large for a key file",
                metadata.len()
            )));
        }
        let text = Zeroizing::new(fs::read(path).map_err(io_error)?);
        let der = PrivatePkcs8KeyDer::from_pem_slice(&text)
            .map_err(|e| invalid(format!("no PKCS#8 `BEGIN PRIVATE KEY` block in PEM ({e})")))?;
        Self::from_pkcs8(der.secret_pkcs8_der()).map_err(invalid)
    }

    /// The identity from a PKCS#8 document (v1 as OpenSSL writes it, or v2 as ring does).
    fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| format!("not an Ed25519 PKCS#8 key ({e})"))?;
        let public_bytes: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| "an Ed25519 public key that is not 32 bytes".to_string())?;
        let public = PeerKey::from_bytes(public_bytes);
        let copy = Zeroizing::new(PrivatePkcs8KeyDer::from(der.to_vec()));
        let signing =
            rustls::crypto::ring::sign::any_eddsa_type(&copy).map_err(|e| e.to_string())?;
        let spki = CertificateDer::from(public.to_spki().to_vec());
        Ok(Self {
            public,
            certified: Arc::new(CertifiedKey::new(vec![spki], signing)),
        })
    }

    /// The public key, to print, to give to neighbours, and to compare.
    pub fn public_key(&self) -> PeerKey {
        self.public
    }

    /// The key and raw public key rustls presents in a handshake.
    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// A PKCS#8 document as PEM, 64 base64 characters a line; wiped when dropped.
fn to_pem(der: &[u8]) -> Zeroizing<String> {
    let encoded = Zeroizing::new(STANDARD.encode(der));
    let mut pem = Zeroizing::new(String::from("-----BEGIN PRIVATE KEY-----\n"));
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// Writes `contents` to a new file at `path` with mode 0600, durably, never replacing an
/// existing file: through `PATH.tmp` (created fresh, so a stale one's wider mode is not
/// inherited), then a hard link, which fails if `path` appeared meanwhile.
fn write_new_private(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let io_error = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(e)),
        _ => {}
    }
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        });
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        // Lost a race with another process creating the same identity: load theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_error(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "archipel-identity-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_created_identity_is_saved_with_mode_0600_and_loads_back_the_same() {
        let dir = scratch("create");
        let path = dir.join("identity.key");
        let made = Identity::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(!dir.join("identity.key.tmp").exists());
        let loaded = Identity::load_or_create(&path).unwrap();
        assert_eq!(loaded.public_key(), made.public_key());
        assert!(matches!(
            Identity::create(&path).map(|i| i.public_key()),
            Ok(key) if key == made.public_key()
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_file_readable_by_others_is_refused_with_the_path_and_the_fix() {
        let dir = scratch("mode");
        let path = dir.join("identity.key");
        Identity::create(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = Identity::load(&path).unwrap_err();
            assert!(matches!(err, IdentityError::Permissions { mode: m, .. } if m == mode));
            let message = err.to_string();
            assert!(message.contains(&format!("chmod 600 {}", path.display())));
            assert!(Identity::load_or_create(&path).is_err());
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(Identity::load(&path).is_ok());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_file_that_is_not_an_ed25519_key_is_refused_not_replaced() {
        let dir = scratch("invalid");
        let path = dir.join("identity.key");
        let write = |contents: &[u8]| {
            let _ = fs::remove_file(&path);
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap()
                .write_all(contents)
                .unwrap();
        };
        write(b"");
        assert!(matches!(
            Identity::load_or_create(&path),
            Err(IdentityError::InvalidKeyFile { .. })
        ));
        write(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::InvalidKeyFile { .. })
        ));
        write(&vec![b'x'; 5000]);
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::InvalidKeyFile { .. })
        ));
        // The file is still the operator's broken one, not a fresh key.
        assert_eq!(fs::read(&path).unwrap().len(), 5000);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_made_by_openssl_is_accepted() {
        // `openssl genpkey -algorithm ed25519` (PKCS#8 v1, no public key inside): the RFC 8410
        // example key, whose public key is 19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1.
        let dir = scratch("openssl");
        let path = dir.join("identity.key");
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                   -----END PRIVATE KEY-----\n";
        write_new_private(&path, pem.as_bytes()).unwrap();
        let identity = Identity::load(&path).unwrap();
        let expected = [
            0x19, 0xbf, 0x44, 0x09, 0x69, 0x84, 0xcd, 0xfe, 0x85, 0x41, 0xba, 0xc1, 0x67, 0xdc,
            0x3b, 0x96, 0xc8, 0x50, 0x86, 0xaa, 0x30, 0xb6, 0xb6, 0xcb, 0x0c, 0x5c, 0x38, 0xad,
            0x70, 0x31, 0x66, 0xe1,
        ];
        assert_eq!(identity.public_key().as_bytes(), &expected);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn debug_shows_the_public_key_only() {
        let identity = Identity::generate().unwrap();
        let shown = format!("{identity:?}");
        assert!(shown.contains(&identity.public_key().to_string()));
        assert!(!shown.contains("BEGIN"));
        assert!(!shown.to_lowercase().contains("signing"));
    }
}
