//! Test helpers: a scratch directory for the files a config names, and a good config to break.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory removed when dropped; unique per process and call, so tests run in parallel.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory whose name starts with `what`.
    pub fn new(what: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "archipel-config-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file in it and returns its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two radios in one region and a route between them: every test breaks one thing in it.
pub const GOOD: &str = r#"
[gateway]
name = "hub"
id = "!a7c40001"
[[radio]]
name = "north"
tcp = "127.0.0.1:4403"
region = "EU_868"
preset = "LongFast"
channels = [ { name = "LongFast", psk = "AQ==" } ]
[[radio]]
name = "south"
serial = "/dev/ttyUSB0"
region = "EU_868"
preset = "MediumFast"
channels = [ { name = "MediumFast", psk = "AQ==" }, { name = "ops", psk = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=" } ]
[[route]]
channel = "LongFast"
from = ["north"]
to = ["south"]
to_channel = "MediumFast"
"#;

/// Every problem of a config text, one a line.
pub fn problems(text: &str) -> String {
    match crate::config::Config::from_toml(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}
