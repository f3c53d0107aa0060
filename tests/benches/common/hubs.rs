//! Two federated hubs with a backlog between them, for the federation bench and the thin-link
//! test: hub A holds messages heard on its radio `north` and queued for its peer `hub-b`; hub
//! B listens, takes them, and routes them to its radio `south`. Both radios are configured on
//! closed ports and stay down, so A sends nothing but the backlog, and what B took stays in
//! B's store, where it is counted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use archipel_adapters::peer::PeerKey;

/// The channel every message is on, on both hubs.
pub const CHANNEL: &str = "LongFast";
/// A's radio, where the backlog was heard.
pub const SOURCE: &str = "north";
/// B's radio, where B queues what it took.
pub const SINK: &str = "south";
/// B, as A names it.
pub const HUB_B: &str = "hub-b";

/// The two hubs' configs and stores, in a directory of the caller's.
pub struct Hubs {
    pub a_config: PathBuf,
    pub b_config: PathBuf,
    pub a_store: PathBuf,
    pub b_store: PathBuf,
}

impl Hubs {
    /// Writes both configs into `dir` for a backlog of `messages`, B listening on `listen`
    /// (and A dialling it there), B letting A send `window_kib` ahead when given (its
    /// `[federation] window_kib`; the default otherwise); `bin` makes each hub's key
    /// (`archipel identity`).
    pub fn write(
        dir: &Path,
        bin: &Path,
        listen: SocketAddr,
        messages: u64,
        window_kib: Option<u32>,
    ) -> Hubs {
        let a_store = dir.join("a").join("store.sqlite");
        let b_store = dir.join("b").join("store.sqlite");
        let a_config = dir.join("a-gateway.toml");
        let b_config = dir.join("b-gateway.toml");
        // Room for the whole backlog: a cap below it would drop what the bench measures.
        let cap = messages.max(10_000) * 2;
        let base = |name: &str, id: &str, store: &Path, radio: &str| {
            std::fs::create_dir_all(store.parent().expect("a directory")).expect("hub directory");
            format!(
                "[gateway]\nname = \"{name}\"\nid = \"{id}\"\n\n[store]\npath = \"{}\"\n\
                 max_queue_per_destination = {cap}\n\n[[radio]]\nname = \"{radio}\"\n\
                 tcp = \"127.0.0.1:{}\"\nregion = \"EU_868\"\npreset = \"LongFast\"\n\
                 channels = [ {{ name = \"{CHANNEL}\", psk = \"default\" }} ]\n",
                store.display(),
                archipel_e2e::free_port(),
            )
        };
        let a = base("hub-a", "!a7c40001", &a_store, SOURCE);
        let b = base("hub-b", "!a7c40002", &b_store, SINK);
        // First each hub alone, to make its key beside its store.
        std::fs::write(&a_config, &a).expect("config written");
        std::fs::write(&b_config, &b).expect("config written");
        let (a_key, b_key) = (identity(bin, &a_config), identity(bin, &b_config));
        let a = format!(
            "{a}\n[[peer]]\nname = \"{HUB_B}\"\naddress = \"{listen}\"\nkey = \"{b_key}\"\n\n\
             [[route]]\nchannel = \"{CHANNEL}\"\nfrom = [\"{SOURCE}\"]\nto = [\"{HUB_B}\"]\n\
             one_way = true\n"
        );
        let window = window_kib.map_or(String::new(), |k| format!("window_kib = {k}\n"));
        let b = format!(
            "{b}\n[federation]\nlisten = \"{listen}\"\n{window}\n[[peer]]\nname = \"hub-a\"\n\
             key = \"{a_key}\"\n\n[[route]]\nchannel = \"{CHANNEL}\"\nfrom = [\"hub-a\"]\n\
             to = [\"{SINK}\"]\none_way = true\n"
        );
        std::fs::write(&a_config, a).expect("config written");
        std::fs::write(&b_config, b).expect("config written");
        Hubs {
            a_config,
            b_config,
            a_store,
            b_store,
        }
    }

    /// Puts `messages` texts of `text_bytes` into A's store, queued for B, the way A's router
    /// queues what its radio hears.
    pub async fn prefill(&self, messages: u64, text_bytes: usize) {
        super::backlog::prefill_sized(
            &self.a_config,
            &self.a_store,
            SOURCE,
            CHANNEL,
            messages,
            text_bytes,
        )
        .await;
    }

    /// What is left queued: A's deliveries to B, and B's to its radio (read with both
    /// stopped).
    pub async fn left(&self) -> (u64, u64) {
        let a = super::queued_in_store(&self.a_store).await;
        let b = super::queued_in_store(&self.b_store).await;
        (
            a.get(HUB_B).copied().unwrap_or(0),
            b.get(SINK).copied().unwrap_or(0),
        )
    }
}

/// The key `archipel identity` prints for the hub whose config is `config`.
fn identity(bin: &Path, config: &Path) -> PeerKey {
    let out = Command::new(bin)
        .arg("identity")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("{} identity does not start: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "archipel identity failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no key printed: {text}"))
}

/// Peak resident memory of `pid` (`VmHWM` of `/proc/PID/status`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
