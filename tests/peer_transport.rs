//! The authenticated transport between gateways (`archipel_adapters::peer`) on real loopback
//! TCP and TLS sockets: mutual handshakes both ways, refusals of unknown and wrong keys within
//! a round trip with the fingerprint they presented, handshake timeouts against silent and
//! slow peers, and two hubs that dial each other ending with one connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use archipel_adapters::peer::{
    Direction, Duplicate, Identity, PeerKey, PeerListener, PeerStream, TransportError, connect,
    resolve_duplicate,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Bound on every wait that should end quickly.
const WAIT: Duration = Duration::from_secs(10);

/// A handshake timeout far longer than any refusal may take, so a refusal that waited for a
/// timeout shows.
const PATIENT: Duration = Duration::from_secs(30);

fn identity() -> Identity {
    Identity::generate().expect("a fresh key pair")
}

async fn listen(identity: &Identity, known: &[PeerKey], handshake: Duration) -> PeerListener {
    PeerListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        identity,
        known.iter().copied(),
        handshake,
    )
    .await
    .expect("listening on loopback")
}

/// Accepts one connection and runs its handshake, in a task of its own.
fn accept_one(
    listener: PeerListener,
) -> tokio::task::JoinHandle<Result<(PeerStream, PeerKey), TransportError>> {
    tokio::spawn(async move {
        let incoming = listener.accept().await?;
        incoming.authenticate().await
    })
}

/// Sends `ours` and reads as many bytes back as `theirs` has.
async fn exchange(stream: &mut PeerStream, ours: &[u8], theirs: &[u8]) {
    stream.write_all(ours).await.unwrap();
    stream.flush().await.unwrap();
    let mut got = vec![0u8; theirs.len()];
    timeout(WAIT, stream.read_exact(&mut got))
        .await
        .expect("bytes within the wait")
        .unwrap();
    assert_eq!(got, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutual_handshake_works_both_ways_and_carries_bytes() {
    let (a, b) = (identity(), identity());
    for (client, server) in [(&a, &b), (&b, &a)] {
        let listener = listen(server, &[client.public_key()], WAIT).await;
        let addr = listener.local_addr().unwrap();
        let accepted = accept_one(listener);
        let (mut dialled, key) = connect(addr, client, server.public_key(), WAIT)
            .await
            .expect("the client authenticates the server");
        assert_eq!(key, server.public_key());
        assert_eq!(dialled.peer_key(), server.public_key());
        assert_eq!(dialled.direction(), Direction::Outbound);
        let (mut taken, key) = timeout(WAIT, accepted).await.unwrap().unwrap().unwrap();
        assert_eq!(
            key,
            client.public_key(),
            "the server learns which peer connected"
        );
        assert_eq!(taken.direction(), Direction::Inbound);
        assert_eq!(taken.remote_addr(), dialled.local_addr());
        assert_eq!(taken.local_addr(), dialled.remote_addr());

        let client_says = b"from the client".repeat(1000);
        let server_says = b"and back from the server";
        let (_, _) = tokio::join!(
            exchange(&mut dialled, &client_says, server_says),
            exchange(&mut taken, server_says, &client_says),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_know_the_client_refuses_it_and_reports_its_fingerprint() {
    let (a, b, c) = (identity(), identity(), identity());
    let listener = listen(&b, &[c.public_key()], PATIENT).await;
    let addr = listener.local_addr().unwrap();
    let accepted = accept_one(listener);

    let started = Instant::now();
    let refused = connect(addr, &a, b.public_key(), PATIENT).await;
    let elapsed = started.elapsed();
    match refused {
        Err(TransportError::Refused { .. }) => {}
        other => panic!("the client should be refused, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(2),
        "refused after {elapsed:?}"
    );

    let error = timeout(WAIT, accepted).await.unwrap().unwrap().unwrap_err();
    assert!(
        matches!(error, TransportError::UnknownKey { presented } if presented == a.public_key()),
        "{error:?}"
    );
    assert_eq!(
        error.presented().map(|k| k.fingerprint()),
        Some(a.public_key().fingerprint())
    );
    assert!(
        error
            .to_string()
            .contains(&a.public_key().fingerprint().to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pinning_another_key_refuses_the_server() {
    let (a, b, c) = (identity(), identity(), identity());
    let listener = listen(&b, &[a.public_key()], PATIENT).await;
    let addr = listener.local_addr().unwrap();
    let accepted = accept_one(listener);

    let error = connect(addr, &a, c.public_key(), PATIENT)
        .await
        .expect_err("the server's key is not the pinned one");
    match error {
        TransportError::WrongKey {
            expected,
            presented,
        } => {
            assert_eq!(expected, c.public_key());
            assert_eq!(presented, b.public_key());
        }
        other => panic!("{other:?}"),
    }
    let server_side = timeout(WAIT, accepted).await.unwrap().unwrap().unwrap_err();
    assert!(
        matches!(server_side, TransportError::Refused { .. }),
        "{server_side:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_is_refused_within_a_round_trip_not_at_the_timeout() {
    let (a, b, stranger) = (identity(), identity(), identity());
    let listener = listen(&b, &[a.public_key()], PATIENT).await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(incoming.authenticate());
        }
    });
    // Loopback round trips are microseconds and a debug-build handshake milliseconds: a
    // second means no timer was involved, against a timeout of thirty.
    for _ in 0..5 {
        let started = Instant::now();
        let error = connect(addr, &stranger, b.public_key(), PATIENT)
            .await
            .expect_err("a stranger is refused");
        assert!(matches!(error, TransportError::Refused { .. }), "{error:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );

        let started = Instant::now();
        let error = connect(addr, &a, stranger.public_key(), PATIENT)
            .await
            .expect_err("the server is not the stranger");
        assert!(
            matches!(error, TransportError::WrongKey { .. }),
            "{error:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    // And the listener still serves its known peer afterwards.
    connect(addr, &a, b.public_key(), WAIT)
        .await
        .expect("the known peer still gets in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_hits_the_handshake_timeout() {
    let (a, b) = (identity(), identity());
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let (socket, _) = silent.accept().await.unwrap();
        // Keep the connection open and say nothing until the client gives up.
        let mut socket = socket;
        let mut buf = [0u8; 4096];
        while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let limit = Duration::from_millis(300);
    let started = Instant::now();
    let error = connect(addr, &a, b.public_key(), limit)
        .await
        .expect_err("nobody answers");
    let elapsed = started.elapsed();
    assert!(
        matches!(error, TransportError::Timeout { after } if after == limit),
        "{error:?}"
    );
    assert!(
        elapsed >= limit && elapsed < WAIT,
        "gave up after {elapsed:?}"
    );
    timeout(WAIT, holder).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_clients_hit_the_handshake_timeout_without_blocking_the_listener() {
    let (a, b) = (identity(), identity());
    let limit = Duration::from_millis(300);
    let listener = listen(&b, &[a.public_key()], limit).await;
    let addr = listener.local_addr().unwrap();
    let (results, mut outcomes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            let results = results.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = incoming.authenticate().await;
                let _ = results.send((outcome.map(|(_, key)| key), started.elapsed()));
            });
        }
    });

    // One client says nothing, one sends the start of a TLS record and stalls.
    let silent = TcpStream::connect(addr).await.unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(&[0x16, 0x03, 0x01, 0x00, 0xf0, 0x01])
        .await
        .unwrap();
    // Meanwhile a real peer gets in at once.
    let started = Instant::now();
    connect(addr, &a, b.public_key(), WAIT)
        .await
        .expect("the listener is not blocked by the silent ones");
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());

    let mut timeouts = 0;
    let mut accepted = 0;
    for _ in 0..3 {
        let (outcome, elapsed) = timeout(WAIT, outcomes.recv()).await.unwrap().unwrap();
        match outcome {
            Ok(key) => {
                assert_eq!(key, a.public_key());
                accepted += 1;
            }
            Err(TransportError::Timeout { after }) => {
                assert_eq!(after, limit);
                assert!(elapsed >= limit && elapsed < WAIT, "{elapsed:?}");
                timeouts += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((accepted, timeouts), (1, 2));
    drop((silent, slow));
}

/// One hub of the crossed-dial test: what it kept, by the rule, out of what it got.
async fn settle(
    ours: PeerKey,
    mut streams: mpsc::UnboundedReceiver<PeerStream>,
    expected: usize,
) -> PeerStream {
    let mut kept: Option<PeerStream> = None;
    for _ in 0..expected {
        let new = timeout(WAIT, streams.recv())
            .await
            .expect("both connections authenticate")
            .expect("the tasks send");
        let existing = kept.as_ref().map(PeerStream::direction);
        match resolve_duplicate(ours, new.peer_key(), existing, new.direction()) {
            Duplicate::Keep | Duplicate::Replace => {
                if let Some(mut old) = kept.replace(new) {
                    let _ = old.shutdown().await;
                }
            }
            Duplicate::CloseNew => {
                let mut new = new;
                let _ = new.shutdown().await;
            }
        }
    }
    kept.expect("one connection kept")
}

/// A hub that listens for the other and dials it at the same time.
async fn crossed_hub(
    me: Identity,
    other: PeerKey,
    listener: PeerListener,
    other_addr: SocketAddr,
) -> PeerStream {
    let (tx, rx) = mpsc::unbounded_channel();
    let accepting = tx.clone();
    tokio::spawn(async move {
        let incoming = listener.accept().await.expect("accepts");
        let (stream, _) = incoming.authenticate().await.expect("authenticates");
        let _ = accepting.send(stream);
    });
    let dialler = me.clone();
    tokio::spawn(async move {
        let (stream, _) = connect(other_addr, &dialler, other, WAIT)
            .await
            .expect("dials");
        let _ = tx.send(stream);
    });
    settle(me.public_key(), rx, 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_dialling_each_other_end_up_with_one_connection() {
    for round in 0..10 {
        let (a, b) = (identity(), identity());
        let listen_a = listen(&a, &[b.public_key()], WAIT).await;
        let listen_b = listen(&b, &[a.public_key()], WAIT).await;
        let (addr_a, addr_b) = (
            listen_a.local_addr().unwrap(),
            listen_b.local_addr().unwrap(),
        );
        let (mut kept_a, mut kept_b) = tokio::join!(
            crossed_hub(a.clone(), b.public_key(), listen_a, addr_b),
            crossed_hub(b.clone(), a.public_key(), listen_b, addr_a),
        );
        // The same TCP connection on both sides...
        assert_eq!(kept_a.local_addr(), kept_b.remote_addr(), "round {round}");
        assert_eq!(kept_a.remote_addr(), kept_b.local_addr(), "round {round}");
        // ...the one the smaller key dialled...
        let a_dialled = a.public_key() < b.public_key();
        assert_eq!(
            kept_a.direction() == Direction::Outbound,
            a_dialled,
            "round {round}"
        );
        // ...and it works.
        tokio::join!(
            exchange(&mut kept_a, b"from a", b"from b"),
            exchange(&mut kept_b, b"from b", b"from a"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialling_our_own_key_is_refused_before_any_connection() {
    let a = identity();
    let error = connect("127.0.0.1:9".parse().unwrap(), &a, a.public_key(), WAIT)
        .await
        .expect_err("our own key");
    assert!(matches!(error, TransportError::OwnKey), "{error:?}");
}
