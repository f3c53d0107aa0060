//! The backlogs the benches start from: texts from a busy mesh, put into a store by the same
//! router the binary builds from the bench's config.

use std::path::Path;

use super::PAYLOAD;

/// A 60-byte text, unique for `i`.
pub fn text(i: u64) -> String {
    text_of(i, PAYLOAD)
}

/// A text of `len` bytes, unique for `i` when `len` is at least 28.
pub fn text_of(i: u64, len: usize) -> String {
    let mut t = format!("archipel bench {i:012} ");
    t.truncate(len);
    t.push_str(&"x".repeat(len - t.len()));
    t
}

/// Backlog message `i` of [`prefill_sized`]: a broadcast text of `len` bytes from one of 256
/// senders, ids unique per sender, as a busy mesh would have them.
pub fn backlog_packet(i: u64, len: usize) -> mesh_core::Packet {
    let mut packet =
        mesh_core::Packet::text_message(mesh_core::NodeId::BROADCAST, 0, &text_of(i, len));
    let meta = packet.meta_mut();
    meta.from = 0x1000_0000 + (i % 256) as u32;
    meta.id = (i / 256 + 1) as u32;
    (meta.hop_limit, meta.hop_start) = (3, 3);
    packet
}

/// Puts `messages` texts of 60 bytes heard on endpoint `source`, channel `channel`, into the
/// store at `store_path`, routed by the same `Router` the binary builds from the config at
/// `config_path`, accepted in batches of 1,000: a backlog made the way the gateway makes it.
pub async fn prefill(
    config_path: &Path,
    store_path: &Path,
    source: &str,
    channel: &str,
    messages: u64,
) {
    prefill_sized(config_path, store_path, source, channel, messages, PAYLOAD).await;
}

/// The same with texts of `text_bytes` ([`backlog_packet`]).
pub async fn prefill_sized(
    config_path: &Path,
    store_path: &Path,
    source: &str,
    channel: &str,
    messages: u64,
    text_bytes: usize,
) {
    use archipel_gateway::config::Config;
    use archipel_gateway::router::{Decision, Heard, Router};
    use archipel_gateway::store::{Store, StoreConfig};

    let config = Config::load(config_path).unwrap_or_else(|e| panic!("bench config: {e}"));
    let router = Router::new(&config);
    let store = Store::open(StoreConfig::new(store_path, u64::MAX))
        .await
        .expect("store opens");
    let now = archipel_gateway::app::now_ms();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..messages {
        let packet = backlog_packet(i, text_bytes);
        let heard = Heard {
            source,
            channel,
            packet: &packet,
            local: None,
            federated: None,
        };
        match router.route(heard, now) {
            Decision::Relay(inbound) => batch.push(inbound),
            Decision::Ignore(why) => panic!("the router ignores message {i}: {}", why.as_str()),
        }
        if batch.len() == 1000 || i + 1 == messages {
            store.accept(&batch, now).await.expect("accept");
            batch.clear();
        }
    }
    store.close().await;
}
