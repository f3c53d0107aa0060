//! Group commit in front of [`Store::accept`]: many callers, one transaction.
//!
//! Each accept commit costs an fsync of the WAL (a few milliseconds on an SD card), so
//! committing every packet on its own caps the gateway at a few hundred packets a second and
//! wears the card. The [`Writer`] task batches naturally: it takes everything already waiting
//! (up to `max_batch` items), commits it in one [`Store::accept`] transaction, and answers every
//! submitter with its own [`Accepted`]. What arrives during that commit waits in the queue and
//! forms the next batch, so the batch grows by itself with the load, and an idle gateway
//! commits a lone packet at once, without waiting for company.
//!
//! There is no linger (waiting a little after the first item for more): measured with the
//! outbox benchmark, a 2 ms linger gave no more throughput under load (33k against 36k
//! messages a second, with 1,017 against 629 messages per commit) and put its length on every
//! commit at 1,000 messages a second (p50 3.7 ms against 0.7 ms), which is also the window in
//! which a kill -9 loses what a radio handed over.
//!
//! Two ways in:
//! - [`Writer::accept`] waits for room in the queue, then for the commit;
//! - [`Writer::submit`] never waits: it queues the item or fails at once with
//!   [`StoreError::Busy`], and hands back a [`Pending`] that resolves after the commit. An
//!   ingest loop uses it so a slow disk never blocks a link's read loop; it holds the
//!   upstream acknowledgement (an MQTT PUBACK) until its `Pending` resolves `Ok`.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};

use super::{Accepted, Inbound, Millis, Store, StoreError};

/// A handle to the group-commit task. Cheap to clone; the task stops once every handle is
/// dropped, after committing what was already submitted.
#[derive(Clone)]
pub struct Writer {
    /// Requests to the task. Bounded (twice `max_batch`), so a disk slower than the sources
    /// pushes back (on [`Writer::accept`]) or refuses (on [`Writer::submit`]) instead of
    /// growing memory.
    requests: mpsc::Sender<Request>,
    /// The queue's capacity, for [`StoreError::Busy`].
    capacity: usize,
    /// The store file, to name it in errors.
    path: PathBuf,
}

/// One submitted item and where its answer goes.
struct Request {
    /// The item to accept.
    item: Inbound,
    /// The submitter's clock when it submitted: the `enqueued_at` time.
    now: Millis,
    /// The answer, sent once the batch containing the item committed (or failed).
    reply: oneshot::Sender<Result<Accepted, StoreError>>,
}

/// The answer to a [`Writer::submit`]: resolves once the commit that holds the item is done
/// (`Ok`: on disk) or failed (`Err`: nothing of it was stored). Dropping it does not withdraw
/// the item.
#[must_use = "the item may not be committed yet: await this before acknowledging upstream"]
pub struct Pending {
    /// Where the task answers.
    answer: oneshot::Receiver<Result<Accepted, StoreError>>,
    /// The store file, for [`StoreError::WriterStopped`].
    path: PathBuf,
}

impl Future for Pending {
    type Output = Result<Accepted, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.answer).poll(cx) {
            Poll::Ready(Ok(answer)) => Poll::Ready(answer),
            Poll::Ready(Err(_)) => Poll::Ready(Err(StoreError::WriterStopped {
                path: self.path.clone(),
            })),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the task on the current tokio runtime: each transaction takes what is waiting,
    /// up to `max_batch` items (at least 1). The queue holds twice that.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn spawn(store: Store, max_batch: usize) -> Writer {
        let max_batch = max_batch.max(1);
        let capacity = max_batch.saturating_mul(2);
        let (requests, receiver) = mpsc::channel(capacity);
        let path = store.path().to_owned();
        tokio::spawn(run(store, receiver, max_batch));
        Writer {
            requests,
            capacity,
            path,
        }
    }

    /// Accepts one item, waiting for room in the queue if it is full; resolves after the
    /// commit that contains it, with the same answer [`Store::accept`] gives for it. `Ok`
    /// means the item and its deliveries are on disk. `Err` means the whole batch rolled back
    /// and nothing of this item was stored.
    ///
    /// If this future is dropped before it resolves, the item may or may not have been
    /// committed; submitting it again is safe for a nonzero packet id (it comes back
    /// [`Accepted::Duplicate`] if the first one made it).
    pub async fn accept(&self, item: Inbound, now: Millis) -> Result<Accepted, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { item, now, reply })
            .await
            .map_err(|_| self.stopped())?;
        Pending {
            answer,
            path: self.path.clone(),
        }
        .await
    }

    /// Queues one item without waiting: fails at once with [`StoreError::Busy`] if the queue
    /// is full (or [`StoreError::WriterStopped`]), and otherwise returns the [`Pending`]
    /// answer, which resolves after the commit.
    pub fn submit(&self, item: Inbound, now: Millis) -> Result<Pending, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .try_send(Request { item, now, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Busy {
                    path: self.path.clone(),
                    capacity: self.capacity,
                },
                mpsc::error::TrySendError::Closed(_) => self.stopped(),
            })?;
        Ok(Pending {
            answer,
            path: self.path.clone(),
        })
    }

    fn stopped(&self) -> StoreError {
        StoreError::WriterStopped {
            path: self.path.clone(),
        }
    }
}

/// The task: batch, commit, answer, until every [`Writer`] is dropped.
async fn run(store: Store, mut requests: mpsc::Receiver<Request>, max_batch: usize) {
    let mut batch: Vec<Request> = Vec::with_capacity(max_batch);
    loop {
        // Everything already waiting (at least one item), or the end when all handles are gone.
        if requests.recv_many(&mut batch, max_batch).await == 0 {
            return;
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
