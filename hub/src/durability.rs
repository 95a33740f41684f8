//! Group commit: many writers, one flush.
//!
//! The hub acknowledges a message only after it is on disk. Flushing once per
//! message would cap throughput at the disk's fsync rate; instead every writer
//! that needs durability asks the [`GroupCommit`] task, which gathers all
//! requests that arrived while the previous flush ran and answers them with a
//! single [`Store::flush`]. A request is answered only by a flush that started
//! after the request was made, so the writes made before it are covered.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Store, StoreError};

/// Why durability could not be confirmed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The store's flush failed; the write may or may not survive a crash.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The commit task is gone (the hub is shutting down).
    #[error("the hub is shutting down")]
    Closed,
}

const MAX_BATCH: usize = 8192;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// A handle to the group-commit task; cheap to clone.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    requests: mpsc::Sender<Waiter>,
}

impl GroupCommit {
    /// Starts the commit task for `store` on the current runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (requests, receiver) = mpsc::channel(MAX_BATCH);
        tokio::spawn(run(store, receiver));
        Self { requests }
    }

    /// Waits until every write made before this call is durable.
    pub async fn commit(&self) -> Result<(), CommitError> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).await.map_err(|_| CommitError::Closed)?;
        Ok(rx.await.map_err(|_| CommitError::Closed)??)
    }
}

async fn run(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<Waiter>) {
    let mut batch = Vec::new();
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let flushing = store.clone();
        let result = tokio::task::spawn_blocking(move || flushing.flush())
            .await
            .unwrap_or_else(|e| Err(StoreError::Backend(format!("flush task failed: {e}"))));
        for waiter in batch.drain(..) {
            // A writer that gave up waiting is not an error.
            let _ = waiter.send(result.clone());
        }
    }
}
