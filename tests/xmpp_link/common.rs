//! The XMPP link under test, on its own Tokio runtime, against a test's Prosody: blocking
//! helpers so tests read top to bottom beside the (blocking) slixmpp users.

use std::time::{Duration, Instant};

use archipel_adapters::xmpp::{self, RoomSpec, XmppConfig, XmppEvent, XmppHandle};
use archipel_e2e::prosody::Prosody;
use mesh_core::DeliveryStatus;
use tokio::sync::mpsc;

/// The bound of every wait.
pub const WAIT: Duration = Duration::from_secs(20);

/// A link and the runtime it runs on.
pub struct TestLink {
    /// Runs the link task; dropped last.
    pub rt: tokio::runtime::Runtime,
    /// The link.
    pub handle: XmppHandle,
    /// Its events.
    events: mpsc::Receiver<XmppEvent>,
    /// Every event seen so far, for failure messages.
    pub seen: Vec<XmppEvent>,
}

/// Settings for `prosody`'s component, with short timers so tests do not wait long.
pub fn config(prosody: &Prosody) -> XmppConfig {
    let mut c = XmppConfig::new(
        "test-xmpp",
        prosody.component_addr(),
        prosody.component_domain(),
        prosody.secret(),
        prosody.muc_domain(),
    );
    c.backoff_max = Duration::from_secs(2);
    c
}

/// A kept room `local`.
pub fn room(local: &str) -> RoomSpec {
    RoomSpec {
        local: local.into(),
        name: format!("Mesh {local}"),
        description: format!("The {local} channel of the mesh"),
    }
}

impl TestLink {
    /// Starts a link with `config`, keeping `rooms`.
    pub fn start(config: XmppConfig, rooms: &[&str]) -> TestLink {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (handle, events) = rt.block_on(async { xmpp::spawn(config) });
        for r in rooms {
            handle.keep_room(room(r));
        }
        TestLink {
            rt,
            handle,
            events,
            seen: Vec::new(),
        }
    }

    /// Starts and waits until connected with every room joined.
    pub fn connected(config: XmppConfig, rooms: &[&str]) -> TestLink {
        let mut link = TestLink::start(config, rooms);
        link.wait_for(|e| *e == XmppEvent::Connected);
        link
    }

    /// Waits at most [`WAIT`] for an event `pick` accepts.
    pub fn wait_for(&mut self, mut pick: impl FnMut(&XmppEvent) -> bool) -> XmppEvent {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = self
                .rt
                .block_on(async { tokio::time::timeout(left, self.events.recv()).await });
            match got {
                Ok(Some(event)) => {
                    self.seen.push(event.clone());
                    if pick(&event) {
                        return event;
                    }
                }
                Ok(None) => panic!("the link's events ended; seen: {:#?}", self.seen),
                Err(_) => panic!("no such event within {WAIT:?}; seen: {:#?}", self.seen),
            }
        }
    }

    /// Events that came so far, without waiting.
    pub fn drain(&mut self) -> Vec<XmppEvent> {
        let mut got = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e.clone());
            got.push(e);
        }
        got
    }

    /// `say`, bounded.
    pub fn say(&self, room: &str, local: &str, nick: &str, body: &str) -> DeliveryStatus {
        self.rt.block_on(async {
            tokio::time::timeout(WAIT * 2, self.handle.say(room, local, nick, body.into()))
                .await
                .expect("say answers in time")
        })
    }

    /// `chat`, bounded.
    pub fn chat(&self, local: &str, to: &str, body: &str) -> DeliveryStatus {
        self.rt.block_on(async {
            tokio::time::timeout(WAIT * 2, self.handle.chat(local, to, body.into()))
                .await
                .expect("chat answers in time")
        })
    }

    /// Shuts the link down, bounded.
    pub fn shutdown(&self) {
        self.rt.block_on(async {
            tokio::time::timeout(WAIT, self.handle.shutdown())
                .await
                .expect("shutdown in time")
        });
    }
}
