//! Group commit in front of [`Store::accept`]: many callers, one transaction.
//!
//! Each commit costs an fsync of the WAL (a few milliseconds on an SD card), so committing every
//! packet on its own caps the gateway at a few hundred packets a second and wears the card. The
//! [`Writer`] task instead takes the first waiting item, keeps collecting for up to `linger` (or
//! until `max_batch` items), commits them all in one [`Store::accept`] transaction, and answers
//! every caller with its own [`Accepted`]. Items that arrive while a commit is in progress wait
//! in the channel and form the next batch, so the batch size grows by itself with the load even
//! with `linger` zero.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Accepted, Inbound, Millis, Store, StoreError};

/// A handle to the group-commit task. Cheap to clone; the task stops once every handle is
/// dropped, after committing what was already submitted.
#[derive(Clone)]
pub struct Writer {
    /// Requests to the task. Bounded (twice `max_batch`), so a disk slower than the radios
    /// pushes back on the submitters instead of growing memory.
    requests: mpsc::Sender<Request>,
    /// The store, only to name its file in a [`StoreError::WriterStopped`].
    store: Store,
}

/// One submitted item and where its answer goes.
struct Request {
    /// The item to accept.
    item: Inbound,
    /// The submitter's clock when it submitted: the seen-set and `enqueued_at` time.
    now: Millis,
    /// The answer, sent once the batch containing the item committed (or failed).
    reply: oneshot::Sender<Result<Accepted, StoreError>>,
}

impl Writer {
    /// Starts the task on the current tokio runtime. It collects items arriving within
    /// `linger` of the first one of a batch, or until it has `max_batch` of them (at least 1),
    /// into one [`Store::accept`] transaction. `linger` zero commits whatever is already
    /// waiting, without waiting for more.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn spawn(store: Store, linger: Duration, max_batch: usize) -> Writer {
        let max_batch = max_batch.max(1);
        let (requests, receiver) = mpsc::channel(max_batch.saturating_mul(2));
        tokio::spawn(run(store.clone(), receiver, linger, max_batch));
        Writer { requests, store }
    }

    /// Accepts one item; resolves after the commit that contains it, with the same answer
    /// [`Store::accept`] gives for it. `Ok` means the item and its deliveries are on disk.
    /// `Err` means the whole batch rolled back and nothing of this item was stored.
    ///
    /// If this future is dropped before it resolves, the item may or may not have been
    /// committed; submitting it again is safe for a nonzero packet id (it comes back
    /// [`Accepted::Duplicate`] if the first one made it).
    pub async fn accept(&self, item: Inbound, now: Millis) -> Result<Accepted, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::WriterStopped {
            path: self.store.path().to_owned(),
        };
        self.requests
            .send(Request { item, now, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The task: batch, commit, answer, until every [`Writer`] is dropped.
async fn run(
    store: Store,
    mut requests: mpsc::Receiver<Request>,
    linger: Duration,
    max_batch: usize,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(max_batch);
    loop {
        // Everything already waiting (at least one item), or the end when all handles are gone.
        if requests.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        if !linger.is_zero() {
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < max_batch {
                let room = max_batch - batch.len();
                match tokio::time::timeout_at(deadline, requests.recv_many(&mut batch, room)).await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }

        let items: Vec<(&Inbound, Millis)> = batch.iter().map(|r| (&r.item, r.now)).collect();
        let result = store.accept_timed(&items).await;
        drop(items);
        match result {
            Ok(accepted) => {
                for (request, answer) in batch.drain(..).zip(accepted) {
                    // A submitter that gave up no longer wants the answer; its item is stored.
                    let _ = request.reply.send(Ok(answer));
                }
            }
            Err(error) => {
                tracing::warn!(%error, items = batch.len(), "batch of accepts not stored");
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }
}
