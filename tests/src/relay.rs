//! A TCP relay for tests of links that must survive a bad network: it forwards between a
//! dialler and a target until told to stop forwarding (`freeze`: the connections stay open and
//! nothing crosses, like a stopped process or a dead radio link) or to drop them (`cut`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP relay between a dialler and a listener that a test can make stop forwarding
/// (`freeze`: the connections stay open, nothing crosses, like a stopped process or a dead
/// radio link) or drop (`cut`). Either acts on the connections open at the call; later ones
/// are relayed normally, so the link can dial again through it.
pub struct Relay {
    /// Where the dialler connects.
    pub addr: SocketAddr,
    /// The control both relays of every connection watch.
    control: watch::Sender<Control>,
    /// Connections accepted so far; each relay is numbered from it.
    accepted: Arc<AtomicU64>,
}

#[derive(Clone, Copy, Default)]
struct Control {
    /// Connections numbered below this are frozen.
    frozen_below: u64,
    /// Connections numbered below this are dropped.
    cut_below: u64,
}

impl Relay {
    /// Relays every connection made to it to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the relay");
        let addr = listener.local_addr().unwrap();
        let (control, _) = watch::channel(Control::default());
        let accepted = Arc::new(AtomicU64::new(0));
        let (ctl, count) = (control.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(relay(client, target, number, ctl.subscribe()));
            }
        });
        Relay {
            addr,
            control,
            accepted,
        }
    }

    /// Stops forwarding on every connection open now (they stay open).
    pub fn freeze(&self) {
        let below = self.accepted.load(Ordering::SeqCst);
        self.control.send_modify(|c| c.frozen_below = below);
    }

    /// Drops every connection open now.
    pub fn cut(&self) {
        let below = self.accepted.load(Ordering::SeqCst);
        self.control.send_modify(|c| c.cut_below = below);
    }
}

async fn relay(
    mut client: TcpStream,
    target: SocketAddr,
    number: u64,
    mut control: watch::Receiver<Control>,
) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.split();
    let (mut server_rx, mut server_tx) = server.split();
    let (mut up, mut down) = (vec![0u8; 16384], vec![0u8; 16384]);
    loop {
        let now = *control.borrow_and_update();
        if now.cut_below > number {
            return;
        }
        if now.frozen_below > number {
            // Hold both sockets open and forward nothing, until cut or the test ends.
            if control.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            continue;
        }
        tokio::select! {
            n = client_rx.read(&mut up) => match n {
                Ok(n) if n > 0 => if server_tx.write_all(&up[..n]).await.is_err() { return },
                _ => return,
            },
            n = server_rx.read(&mut down) => match n {
                Ok(n) if n > 0 => if client_tx.write_all(&down[..n]).await.is_err() { return },
                _ => return,
            },
            changed = control.changed() => if changed.is_err() { std::future::pending::<()>().await },
        }
    }
}
