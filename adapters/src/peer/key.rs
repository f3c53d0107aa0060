//! A gateway's public key as people handle it: a short string to copy from paper into a
//! `[[peer]]` section, and a fingerprint to read aloud over a phone or a radio.
//!
//! # The key string
//! `archipel:` followed by 56 characters of RFC 4648 base32 (`a`–`z`, `2`–`7`, no padding)
//! encoding 35 bytes: the 32-byte Ed25519 public key, a 2-byte checksum and a version byte
//! (`1`: Ed25519). The checksum is the first two bytes of
//! SHA-256(`"archipel key checksum"` ‖ key ‖ version). This is the layout of Tor's v3 onion
//! addresses, chosen for the same reasons: base32 has one case and no `0`/`1`/`8`/`9` to
//! confuse with `o`/`l`/`b`/`g`, 35 bytes fill 56 characters exactly (no half-used last
//! character), and the checksum catches a mistyped character when the config is loaded rather
//! than as a refused handshake later. Upper case is accepted (people copy from paper); anything
//! else (spaces, padding, a missing prefix, a wrong length, a bad checksum, an unknown
//! version) is refused with an error saying which.
//!
//! # The fingerprint
//! The first 8 bytes of SHA-256 of the 32 key bytes, as four groups of four lowercase hex
//! digits joined by `-`: `3f2a-91bc-0d4e-77a1`. It is for people comparing two hubs' keys
//! and for log lines and counters naming the key a refused peer presented; the handshake
//! itself always pins the whole key, so 64 bits are plenty to spot a mistake and are not a
//! security boundary.

use std::fmt;
use std::str::FromStr;

use ring::digest;

use super::identity::IdentityError;

/// The prefix of every key string.
pub const KEY_PREFIX: &str = "archipel:";

/// The version byte of an Ed25519 key string.
const VERSION_ED25519: u8 = 1;

/// Domain separation for the checksum, so it cannot collide with the fingerprint's hash.
const CHECKSUM_CONTEXT: &[u8] = b"archipel key checksum";

/// Characters after the prefix: 35 bytes in base32.
const ENCODED_LEN: usize = 56;

/// The RFC 4648 base32 alphabet, lower case.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) }, followed by the 32 key bytes. It is the whole
/// "certificate" of an RFC 7250 raw public key.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A gateway's Ed25519 public key: what a `[[peer]]` section pins and what the TLS handshake
/// proves the other side holds. Ordered bytewise, which the rule for two hubs that both dial
/// uses ([`super::resolve_duplicate`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey([u8; 32]);

impl PeerKey {
    /// The key from its 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The fingerprint people read aloud and logs name.
    pub fn fingerprint(&self) -> Fingerprint {
        let hash = digest::digest(&digest::SHA256, &self.0);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_ref()[..8]);
        Fingerprint(first)
    }

    /// The key as an RFC 8410 SubjectPublicKeyInfo, the form TLS raw public keys carry.
    pub fn to_spki(&self) -> [u8; 44] {
        let mut spki = [0u8; 44];
        spki[..12].copy_from_slice(&SPKI_PREFIX);
        spki[12..].copy_from_slice(&self.0);
        spki
    }

    /// The key from a SubjectPublicKeyInfo, or `None` if it is anything but an Ed25519 key
    /// in exactly the RFC 8410 encoding (44 bytes).
    pub fn from_spki(spki: &[u8]) -> Option<Self> {
        let key = spki.strip_prefix(&SPKI_PREFIX[..])?;
        let bytes: [u8; 32] = key.try_into().ok()?;
        Some(Self(bytes))
    }
}

/// The two checksum bytes of a key string.
fn checksum(key: &[u8; 32], version: u8) -> [u8; 2] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(CHECKSUM_CONTEXT);
    ctx.update(key);
    ctx.update(&[version]);
    let hash = ctx.finish();
    [hash.as_ref()[0], hash.as_ref()[1]]
}

impl fmt::Display for PeerKey {
    /// The key string: `archipel:` and 56 base32 characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 35];
        raw[..32].copy_from_slice(&self.0);
        raw[32..34].copy_from_slice(&checksum(&self.0, VERSION_ED25519));
        raw[34] = VERSION_ED25519;
        f.write_str(KEY_PREFIX)?;
        for group in raw.chunks_exact(5) {
            let bits = group.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            for shift in (0..8).rev() {
                let index = ((bits >> (shift * 5)) & 0x1f) as usize;
                write!(f, "{}", char::from(ALPHABET[index]))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerKey({self}, {})", self.fingerprint())
    }
}

/// The value of one base32 character, either case.
fn base32_value(c: u8) -> Option<u8> {
    match c {
        b'a'..=b'z' => Some(c - b'a'),
        b'A'..=b'Z' => Some(c - b'A'),
        b'2'..=b'7' => Some(c - b'2' + 26),
        _ => None,
    }
}

impl FromStr for PeerKey {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let prefix_len = KEY_PREFIX.len();
        let has_prefix = s
            .get(..prefix_len)
            .is_some_and(|p| p.eq_ignore_ascii_case(KEY_PREFIX));
        if !has_prefix {
            return Err(IdentityError::KeyPrefix);
        }
        let body = &s[prefix_len..];
        // Characters first, so a stray non-ASCII letter is named rather than miscounted.
        if let Some((index, character)) = body
            .chars()
            .enumerate()
            .find(|&(_, c)| !c.is_ascii() || base32_value(c as u8).is_none())
        {
            return Err(IdentityError::KeyCharacter {
                character,
                position: prefix_len + index + 1,
            });
        }
        let body = body.as_bytes();
        if body.len() != ENCODED_LEN {
            return Err(IdentityError::KeyLength { found: body.len() });
        }
        let mut raw = [0u8; 35];
        for (group, out) in body.chunks_exact(8).zip(raw.chunks_exact_mut(5)) {
            let bits = group.iter().fold(0u64, |acc, &c| {
                (acc << 5) | u64::from(base32_value(c).unwrap_or(0))
            });
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = (bits >> (32 - 8 * i)) as u8;
            }
        }
        let version = raw[34];
        if version != VERSION_ED25519 {
            return Err(IdentityError::KeyVersion { version });
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[..32]);
        if raw[32..34] != checksum(&key, version) {
            return Err(IdentityError::KeyChecksum);
        }
        Ok(Self(key))
    }
}

/// The first 8 bytes of SHA-256 of a public key, shown as `3f2a-91bc-0d4e-77a1`: what a person
/// reads aloud to check a neighbour's key and what a log line names for a refused peer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 8]);

impl Fingerprint {
    /// The 8 bytes.
    pub const fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks_exact(2).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            write!(f, "{:02x}{:02x}", pair[0], pair[1])?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PeerKey {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        PeerKey::from_bytes(bytes)
    }

    #[test]
    fn a_key_string_round_trips_and_has_the_documented_shape() {
        let key = sample();
        let text = key.to_string();
        assert!(text.starts_with("archipel:"));
        assert_eq!(text.len(), KEY_PREFIX.len() + ENCODED_LEN);
        assert!(
            text[KEY_PREFIX.len()..]
                .bytes()
                .all(|c| ALPHABET.contains(&c))
        );
        assert_eq!(text.parse::<PeerKey>().unwrap(), key);
        for bytes in [[0u8; 32], [0xff; 32]] {
            let key = PeerKey::from_bytes(bytes);
            assert_eq!(key.to_string().parse::<PeerKey>().unwrap(), key);
        }
    }

    #[test]
    fn the_encoding_is_rfc_4648_base32() {
        // RFC 4648 test vector "foobar" → MZXW6YTBOI, checked on the first 5 bytes of a key.
        let mut bytes = [0u8; 32];
        bytes[..5].copy_from_slice(b"fooba");
        let text = PeerKey::from_bytes(bytes).to_string();
        assert_eq!(&text[KEY_PREFIX.len()..KEY_PREFIX.len() + 8], "mzxw6ytb");
    }

    #[test]
    fn a_key_string_copied_in_upper_case_is_accepted() {
        let key = sample();
        let upper = key.to_string().to_ascii_uppercase();
        assert_eq!(upper.parse::<PeerKey>().unwrap(), key);
    }

    #[test]
    fn a_key_string_without_the_prefix_is_refused() {
        let text = sample().to_string();
        let body = &text[KEY_PREFIX.len()..];
        assert!(matches!(
            body.parse::<PeerKey>(),
            Err(IdentityError::KeyPrefix)
        ));
        assert!(matches!(
            format!("archipe1:{body}").parse::<PeerKey>(),
            Err(IdentityError::KeyPrefix)
        ));
        assert!(matches!(
            "".parse::<PeerKey>(),
            Err(IdentityError::KeyPrefix)
        ));
    }

    #[test]
    fn a_key_string_of_the_wrong_length_is_refused_with_the_length_found() {
        let text = sample().to_string();
        for broken in [
            text[..text.len() - 1].to_string(),
            format!("{text}a"),
            "archipel:".to_string(),
        ] {
            match broken.parse::<PeerKey>() {
                Err(IdentityError::KeyLength { found }) => {
                    assert_eq!(found, broken.len() - KEY_PREFIX.len())
                }
                other => panic!("{broken:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn a_character_outside_base32_is_refused_with_its_position() {
        let text = sample().to_string();
        for (index, bad) in [(9, '0'), (20, '1'), (64, '8'), (30, '-'), (40, '=')] {
            let mut broken: Vec<char> = text.chars().collect();
            broken[index] = bad;
            let broken: String = broken.into_iter().collect();
            match broken.parse::<PeerKey>() {
                Err(IdentityError::KeyCharacter {
                    character,
                    position,
                }) => {
                    assert_eq!(character, bad);
                    assert_eq!(position, index + 1);
                }
                other => panic!("{broken:?} gave {other:?}"),
            }
        }
        // A multi-byte character is reported as itself, never split or panicking.
        let mut broken = text[..text.len() - 2].to_string();
        broken.push('é');
        assert!(matches!(
            broken.parse::<PeerKey>(),
            Err(IdentityError::KeyCharacter {
                character: 'é', ..
            })
        ));
    }

    #[test]
    fn a_mistyped_character_fails_the_checksum() {
        let text = sample().to_string();
        let mut failures = 0;
        for index in KEY_PREFIX.len()..KEY_PREFIX.len() + 51 {
            let mut broken = text.clone().into_bytes();
            broken[index] = if broken[index] == b'a' { b'b' } else { b'a' };
            let broken = String::from_utf8(broken).unwrap();
            match broken.parse::<PeerKey>() {
                Err(IdentityError::KeyChecksum) => failures += 1,
                other => panic!("{broken:?} gave {other:?}"),
            }
        }
        assert_eq!(failures, 51);
    }

    #[test]
    fn an_unknown_version_is_refused_as_such() {
        let key = sample();
        let mut raw = [0u8; 35];
        raw[..32].copy_from_slice(key.as_bytes());
        raw[32..34].copy_from_slice(&checksum(key.as_bytes(), 2));
        raw[34] = 2;
        let mut text = String::from(KEY_PREFIX);
        for group in raw.chunks_exact(5) {
            let bits = group.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            for shift in (0..8).rev() {
                text.push(char::from(
                    ALPHABET[((bits >> (shift * 5)) & 0x1f) as usize],
                ));
            }
        }
        assert!(matches!(
            text.parse::<PeerKey>(),
            Err(IdentityError::KeyVersion { version: 2 })
        ));
    }

    #[test]
    fn the_fingerprint_is_four_groups_of_the_key_hash() {
        // SHA-256 of 32 zero bytes starts 66687aadf862bd77.
        let zero = PeerKey::from_bytes([0; 32]);
        assert_eq!(zero.fingerprint().to_string(), "6668-7aad-f862-bd77");
        assert_ne!(sample().fingerprint(), zero.fingerprint());
        assert_eq!(
            format!("{:?}", zero.fingerprint()),
            "Fingerprint(6668-7aad-f862-bd77)"
        );
    }

    #[test]
    fn spki_round_trips_and_only_ed25519_is_accepted() {
        let key = sample();
        let spki = key.to_spki();
        assert_eq!(PeerKey::from_spki(&spki), Some(key));
        assert_eq!(PeerKey::from_spki(&spki[..43]), None);
        let mut longer = spki.to_vec();
        longer.push(0);
        assert_eq!(PeerKey::from_spki(&longer), None);
        let mut x25519 = spki;
        x25519[8] = 0x6e; // OID 1.3.101.110
        assert_eq!(PeerKey::from_spki(&x25519), None);
        assert_eq!(PeerKey::from_spki(&[]), None);
    }
}
