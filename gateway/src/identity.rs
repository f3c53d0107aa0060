//! `archipel identity`: this gateway's public key, as its neighbours write it in their
//! `[[peer]]` sections, with the fingerprint people read aloud to check it.
//!
//! The key pair is made on first use (mode 0600) where `run` will look for it, so an operator
//! can hand the key to a neighbour before the first start. Only the config's `store.path` and
//! `[federation] identity_file` are read: a config still being written (a neighbour's key not
//! yet right) does not stop a hub from printing its own.

use std::path::{Path, PathBuf};

use archipel_adapters::peer::Identity;
use archipel_gateway::config::{Config, StoreSection, identity_path};

/// Prints the public key, its fingerprint and where the key pair is kept.
pub fn run(config: Option<&Path>) -> anyhow::Result<()> {
    let path = match config {
        Some(file) => Config::identity_path_of(file)
            .map_err(|e| anyhow::anyhow!("invalid configuration {}:\n{e}", file.display()))?,
        None => default_path(),
    };
    let existed = path.exists();
    let identity = Identity::load_or_create(&path)?;
    let key = identity.public_key();
    println!("{key}");
    println!("fingerprint {}", key.fingerprint());
    println!(
        "kept in {}{}",
        path.display(),
        if existed { "" } else { " (made now)" }
    );
    Ok(())
}

/// Beside the default store file (`archipel.sqlite` in the current directory), as `run`
/// with a config that names neither finds it.
fn default_path() -> PathBuf {
    identity_path(&StoreSection::default().path, None)
}
