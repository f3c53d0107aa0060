//! `archipel identity` and the federation part of `check-config`, through the real binary: the
//! key pair made once (mode 0600) beside the store and printed the same every time, never the
//! private key; a `[[peer]]` key with a mistyped character refused naming the key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use archipel_adapters::peer::PeerKey;
use archipel_e2e::{TempDir, archipel_bin, run_archipel, run_with_limit, temp_dir};

const LIMIT: Duration = Duration::from_secs(60);

/// A hub with no radio: two neighbours (one dials in) and a channel between them; `key_b` is
/// hub-b's key as written.
fn config(dir: &Path, key_b: &str) -> String {
    format!(
        "[gateway]\nname = \"relay\"\nid = \"!a7c40002\"\n\
         [store]\npath = \"{}\"\n\
         [federation]\nlisten = \"127.0.0.1:4404\"\n\
         [[peer]]\nname = \"hub-b\"\naddress = \"192.168.1.20:4404\"\nkey = \"{key_b}\"\n\
         [[peer]]\nname = \"hub-c\"\nkey = \"{}\"\n\
         [[channel]]\nname = \"Valley\"\npsk = \"default\"\n\
         [[route]]\nchannel = \"Valley\"\nfrom = [\"hub-b\"]\nto = [\"hub-c\"]\n",
        dir.join("data").join("archipel.sqlite").display(),
        PeerKey::from_bytes([2; 32])
    )
}

/// `archipel identity` printed: the key, its fingerprint line, the "kept in" line.
fn printed(out: &str) -> (PeerKey, String, String) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "three lines: {out}");
    let key: PeerKey = lines[0]
        .parse()
        .unwrap_or_else(|e| panic!("{:?} is not a key: {e}", lines[0]));
    (key, lines[1].to_owned(), lines[2].to_owned())
}

#[test]
fn identity_makes_a_private_key_beside_the_store_once_and_prints_the_same_key() {
    let dir = TempDir(temp_dir("identity"));
    std::fs::create_dir(dir.0.join("data")).unwrap();
    let file = dir.0.join("gateway.toml");
    std::fs::write(
        &file,
        config(&dir.0, &PeerKey::from_bytes([1; 32]).to_string()),
    )
    .unwrap();
    let file = file.to_str().unwrap();

    let (ok, out, err) = run_archipel(&["identity", "--config", file], LIMIT);
    assert!(ok, "identity failed:\n{err}");
    let (key, fingerprint, kept) = printed(&out);
    assert_eq!(fingerprint, format!("fingerprint {}", key.fingerprint()));
    let path = dir.0.join("data").join("identity.key");
    assert_eq!(kept, format!("kept in {} (made now)", path.display()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read_to_string(&path).unwrap();
    let secret = pem.lines().nth(1).expect("a PEM body line");
    assert!(
        !out.contains(secret) && !err.contains(secret),
        "the private key is never printed"
    );

    let (ok, again, err) = run_archipel(&["identity", "--config", file], LIMIT);
    assert!(ok, "identity failed the second time:\n{err}");
    let (same, _, kept) = printed(&again);
    assert_eq!(same, key, "the key is made once");
    assert_eq!(kept, format!("kept in {}", path.display()));

    // check-config now shows our fingerprint, the listen address and both neighbours.
    let (ok, out, err) = run_archipel(&["check-config", file], LIMIT);
    assert!(ok, "check-config failed:\n{err}");
    for line in [
        format!("fingerprint {}", key.fingerprint()),
        "listens on 127.0.0.1:4404 (this machine only)".into(),
        format!(
            "peer hub-b at 192.168.1.20:4404, fingerprint {}",
            PeerKey::from_bytes([1; 32]).fingerprint()
        ),
        format!(
            "peer hub-c dials in, fingerprint {}",
            PeerKey::from_bytes([2; 32]).fingerprint()
        ),
    ] {
        assert!(out.contains(&line), "no {line:?} in:\n{out}");
    }

    // Our own key as a neighbour's is refused, now that the key exists.
    std::fs::write(file, config(&dir.0, &key.to_string())).unwrap();
    let (ok, _, err) = run_archipel(&["check-config", file], LIMIT);
    assert!(!ok);
    assert!(
        err.contains("peer[0] (hub-b).key: is this gateway's own key"),
        "{err}"
    );
}

#[test]
fn identity_without_a_config_keeps_the_key_in_the_current_directory() {
    let dir = TempDir(temp_dir("identity-cwd"));
    let mut cmd = Command::new(archipel_bin());
    cmd.arg("identity").current_dir(&dir.0);
    let out = run_with_limit(cmd, LIMIT, "archipel identity");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (key, _, kept) = printed(&stdout);
    assert_eq!(kept, "kept in identity.key (made now)");
    let path = dir.0.join("identity.key");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A key file others may read is refused with the fix, and not replaced.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = Command::new(archipel_bin());
    cmd.arg("identity").current_dir(&dir.0);
    let out = run_with_limit(cmd, LIMIT, "archipel identity");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = Command::new(archipel_bin());
    cmd.arg("identity").current_dir(&dir.0);
    let out = run_with_limit(cmd, LIMIT, "archipel identity");
    assert_eq!(printed(&String::from_utf8_lossy(&out.stdout)).0, key);
}

#[test]
fn check_config_refuses_a_mistyped_peer_key_naming_it_and_identity_still_prints() {
    let dir = TempDir(temp_dir("identity-badkey"));
    std::fs::create_dir(dir.0.join("data")).unwrap();
    let good = PeerKey::from_bytes([1; 32]).to_string();
    let mut typo = good.clone().into_bytes();
    typo[30] = if typo[30] == b'q' { b'r' } else { b'q' };
    let typo = String::from_utf8(typo).unwrap();
    let file = dir.0.join("gateway.toml");
    std::fs::write(&file, config(&dir.0, &typo)).unwrap();
    let file = file.to_str().unwrap();

    let (ok, out, err) = run_archipel(&["check-config", file], LIMIT);
    assert!(!ok, "accepted a mistyped key:\n{out}");
    assert!(
        err.contains("peer[0] (hub-b).key: its checksum does not match: check the key for a mistyped character"),
        "{err}"
    );
    assert!(
        !dir.0.join("data").join("identity.key").exists(),
        "check-config makes no key"
    );

    // The hub can still print its own key to send to the neighbour while it fixes theirs.
    let (ok, out, err) = run_archipel(&["identity", "--config", file], LIMIT);
    assert!(ok, "identity refused a config with another problem:\n{err}");
    printed(&out);
}
