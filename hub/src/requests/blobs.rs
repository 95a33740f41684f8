//! Attachment requests: a chunk uploaded, a chunk fetched.
//!
//! The rules a blob keeps (see [`crate::blobs`]) depend on its stored record,
//! so an upload is checked on the writer thread; a fetch only reads, after
//! [`Hub::authorize`] has checked that the caller is on the thread.

use wire::{BlobId, ErrorCode, Reply, ThreadId, WireError};

use super::WriteKind;
use crate::blobs::{self, BlobLimits, ChunkUpload};
use crate::durability::Write;
use crate::session::{internal, Hub};

impl Hub {
    pub(super) fn put_blob_chunk(&self, upload: ChunkUpload) -> (WriteKind, Write) {
        (WriteKind::PutBlobChunk, Write::PutBlobChunk { upload, limits: BlobLimits::of(&self.limits) })
    }

    /// A chunk of a sealed blob of `thread` (whose membership [`Hub::authorize`] checked).
    pub(super) fn blob_chunk(&self, thread: ThreadId, blob: BlobId, index: u32) -> Result<Reply, WireError> {
        let chunks = blobs::sealed_chunks(self.store.blob(thread, blob).map_err(internal)?)?;
        let data = match self.store.blob_chunk(thread, blob, index).map_err(internal)? {
            Some(data) if index < chunks => data,
            _ => return Err(WireError::new(ErrorCode::Invalid, format!("the blob has chunks 0 to {}", chunks - 1))),
        };
        Ok(Reply::BlobChunk { blob, index, last: index + 1 == chunks, data })
    }
}
