//! A connection's outbound queue, bounded in bytes as well as in frames, per
//! connection and over the whole hub.
//!
//! A frame can be a megabyte (a blob chunk), so a bound in frames alone lets a
//! few connections that ask and never read hold gigabytes. Every frame queued
//! towards a connection therefore holds a share of two byte budgets, the
//! connection's (`limits.outbound_queue_bytes`) and the hub's
//! (`limits.outbound_total_bytes`), from before it is produced until it has
//! been written to the socket. A reply that may be large reserves its share
//! before the request is even applied, so a connection whose replies are not
//! being read stops being read itself: backpressure reaches the peer instead
//! of the hub's memory.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::Bytes;

/// Bytes held towards a connection: a share of its budget and of the hub's.
#[derive(Debug)]
pub struct Reserved {
    bytes: u32,
    _connection: OwnedSemaphorePermit,
    _hub: OwnedSemaphorePermit,
}

/// A frame on its way to the socket, with the bytes it holds.
#[derive(Debug)]
pub struct Queued {
    /// The encoded frame.
    pub bytes: Bytes,
    /// When its entry was published, for an event frame (the delivery's stage timings).
    pub published: Option<crate::stages::Stamp>,
    /// Boxed: only frames over [`SMALL_FRAME_BYTES`] hold a reservation, and the
    /// queue's channel allocates a block of slots per connection up front.
    _reserved: Option<Box<Reserved>>,
}

/// Frames smaller than this are bounded by the queue's frame count alone
/// (`limits.outbound_queue_frames` of them), not by the byte budgets.
pub const SMALL_FRAME_BYTES: usize = 64 * 1024;

/// The connection is gone: nothing more can be queued for it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the connection is closed")]
pub struct Closed;

/// The producing side of a connection's queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    frames: mpsc::Sender<Queued>,
    connection: Arc<Semaphore>,
    hub: Arc<Semaphore>,
    /// The connection's whole budget: no frame reserves more than this.
    ceiling: usize,
}

impl Outbox {
    /// A queue of at most `frames` frames and `bytes` bytes, drawing on `hub`
    /// too; returns the producing side and the receiving side for the writer.
    pub fn new(frames: usize, bytes: usize, hub: Arc<Semaphore>) -> (Self, mpsc::Receiver<Queued>) {
        let (sender, receiver) = mpsc::channel(frames);
        let ceiling = bytes.min(Semaphore::MAX_PERMITS);
        (Self { frames: sender, connection: Arc::new(Semaphore::new(ceiling)), hub, ceiling }, receiver)
    }

    fn permits(&self, bytes: usize) -> u32 {
        // Never more than the whole budget, so that one frame can always pass.
        u32::try_from(bytes.clamp(1, self.ceiling)).unwrap_or(u32::MAX)
    }

    /// Waits until `bytes` may be held towards this connection and the hub, and holds them.
    pub async fn reserve(&self, bytes: usize) -> Result<Reserved, Closed> {
        let permits = self.permits(bytes);
        let connection = self.connection.clone().acquire_many_owned(permits).await.map_err(|_| Closed)?;
        let hub = self.hub.clone().acquire_many_owned(permits).await.map_err(|_| Closed)?;
        Ok(Reserved { bytes: permits, _connection: connection, _hub: hub })
    }

    /// Queues a frame, waiting for its bytes' share first. A small frame
    /// (under [`SMALL_FRAME_BYTES`]) is bounded by the queue's frame count
    /// alone, so a short reply or error never waits for bytes.
    pub async fn send(&self, bytes: Bytes) -> Result<(), Closed> {
        self.send_published(bytes, None).await
    }

    /// Queues an event frame as [`send`](Self::send) does, with when its entry was published.
    pub async fn send_published(&self, bytes: Bytes, published: Option<crate::stages::Stamp>) -> Result<(), Closed> {
        if bytes.len() < SMALL_FRAME_BYTES {
            return self.frames.send(Queued { bytes, published, _reserved: None }).await.map_err(|_| Closed);
        }
        let reserved = self.reserve(bytes.len()).await?;
        self.queue(Queued { bytes, published, _reserved: Some(Box::new(reserved)) }).await
    }

    /// Queues a frame whose share was reserved earlier; a frame larger than the
    /// reservation waits for the rest.
    pub async fn send_reserved(&self, bytes: Bytes, reserved: Reserved) -> Result<(), Closed> {
        let reserved = if self.permits(bytes.len()) > reserved.bytes {
            drop(reserved);
            self.reserve(bytes.len()).await?
        } else {
            reserved
        };
        self.queue(Queued { bytes, published: None, _reserved: Some(Box::new(reserved)) }).await
    }

    async fn queue(&self, queued: Queued) -> Result<(), Closed> {
        self.frames.send(queued).await.map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_wait_for_bytes_not_only_for_room() {
        let hub = Arc::new(Semaphore::new(1 << 30));
        let (outbox, mut frames) = Outbox::new(100, 150_000, hub.clone());
        let frame = || Bytes::from(vec![0; 100_000]);
        outbox.send(frame()).await.unwrap();
        let second = tokio::time::timeout(std::time::Duration::from_millis(50), outbox.send(frame()));
        assert!(second.await.is_err(), "a second 100 kB frame must wait while the first is queued");
        assert_eq!(hub.available_permits(), (1 << 30) - 100_000);
        // Small frames are bounded by the frame count alone and never wait for bytes.
        outbox.send(Bytes::from(vec![0; 100])).await.unwrap();
        drop(frames.recv().await.unwrap());
        outbox.send(frame()).await.unwrap();
        // A frame over the whole budget still passes, alone.
        drop(frames.recv().await.unwrap());
        drop(frames.recv().await.unwrap());
        outbox.send(Bytes::from(vec![0; 500_000])).await.unwrap();
    }
}
