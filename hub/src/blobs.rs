//! Attachment blobs: encrypted chunks the hub keeps for a thread's members.
//!
//! The SDK encrypts an attachment with a fresh key and uploads the ciphertext
//! chunk by chunk; the key and the hash reach the members only inside an MLS
//! message. So the hub can check who adds chunks and who fetches them, and
//! nothing else:
//!
//! - only the uploader adds chunks to a blob, in order from 0; a chunk sent
//!   again after a reconnect changes nothing, so uploads resume safely;
//! - the chunk marked last seals the blob, and a sealed blob never changes;
//! - a blob stays within `limits.max_blob_bytes`;
//! - a sealed blob is served only to current members of its thread, and anyone
//!   else gets the answer given for a blob that does not exist;
//! - blobs are kept per thread: a blob id is looked up only within the thread
//!   the request names, so another case's blob id behaves exactly like an
//!   unused one and reveals nothing about that case.
//!
//! Checks that depend on the stored record run on the writer thread (see
//! `durability`), so two uploads of the same chunk cannot race.

use wire::{BlobId, ErrorCode, MemberId, ThreadId, WireError};

use crate::durability::WriteError;
use crate::store::{BlobRecord, Store};

/// One chunk to store.
#[derive(Debug)]
pub struct ChunkUpload {
    /// The thread the blob belongs to.
    pub thread: ThreadId,
    /// Who uploads.
    pub uploader: MemberId,
    /// The blob.
    pub blob: BlobId,
    /// The chunk's position.
    pub index: u32,
    /// True for the final chunk.
    pub last: bool,
    /// The ciphertext.
    pub data: Vec<u8>,
}

/// The bounds a chunk upload is held to (keys under `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct BlobLimits {
    /// Largest blob (`limits.max_blob_bytes`).
    pub max_blob_bytes: u64,
    /// Unsealed blobs a thread may have at once (`limits.max_open_blobs_per_thread`).
    pub max_open_blobs_per_thread: usize,
    /// Bytes of all blobs of a thread together (`limits.max_blob_bytes_per_thread`).
    pub max_blob_bytes_per_thread: u64,
}

impl BlobLimits {
    /// The bounds in the hub's limits.
    pub fn of(limits: &crate::config::Limits) -> Self {
        Self {
            max_blob_bytes: limits.max_blob_bytes,
            max_open_blobs_per_thread: limits.max_open_blobs_per_thread,
            max_blob_bytes_per_thread: limits.max_blob_bytes_per_thread,
        }
    }
}

/// Refuses a chunk that would take the thread over its blob quotas.
fn within_thread_quota(
    store: &dyn Store,
    upload: &ChunkUpload,
    new: bool,
    limits: BlobLimits,
) -> Result<(), WriteError> {
    let blobs = store.thread_blobs(upload.thread)?;
    if new && blobs.iter().filter(|(_, r)| !r.sealed).count() >= limits.max_open_blobs_per_thread {
        let key = "limits.max_open_blobs_per_thread";
        return Err(WriteError::Refused(crate::quotas::exceeded(
            key,
            limits.max_open_blobs_per_thread,
            "too many uploads open",
        )));
    }
    let stored: u64 = blobs.iter().map(|(_, r)| r.bytes).sum();
    if stored + upload.data.len() as u64 > limits.max_blob_bytes_per_thread {
        let key = "limits.max_blob_bytes_per_thread";
        return Err(WriteError::Refused(crate::quotas::exceeded(
            key,
            limits.max_blob_bytes_per_thread,
            "the thread's attachments are too large",
        )));
    }
    Ok(())
}

/// The answer for a blob the caller may not see, identical to one that does not exist.
pub fn not_found() -> WireError {
    WireError::new(ErrorCode::NotFound, "no such blob")
}

fn refused(code: ErrorCode, message: String) -> WriteError {
    WriteError::Refused(WireError::new(code, message))
}

/// Stores a chunk if it is the next one of an open blob of the uploader's;
/// returns true when it was already stored.
pub fn put_chunk(store: &dyn Store, upload: &ChunkUpload, limits: BlobLimits, at_ms: u64) -> Result<bool, WriteError> {
    let max_bytes = limits.max_blob_bytes;
    let record = match store.blob(upload.thread, upload.blob)? {
        Some(record) if record.uploader != upload.uploader => {
            return Err(refused(ErrorCode::Conflict, format!("blob {} belongs to another upload", upload.blob)));
        }
        Some(record) if upload.index < record.chunks => {
            // A resend of an unacknowledged chunk: rewrite it if a crash lost it.
            let stored = store.blob_chunk(upload.thread, upload.blob, upload.index)?;
            if stored.as_ref().map(Vec::len) != Some(upload.data.len()) {
                store.put_blob_chunk(upload.blob, &record, upload.index, &upload.data)?;
            }
            return Ok(true);
        }
        Some(record) if record.sealed => {
            return Err(refused(ErrorCode::Conflict, format!("blob {} is complete", upload.blob)));
        }
        Some(record) => record,
        None => BlobRecord {
            thread: upload.thread,
            uploader: upload.uploader.clone(),
            chunks: 0,
            bytes: 0,
            sealed: false,
            sealed_seq: 0,
            created_at_ms: at_ms,
        },
    };
    within_thread_quota(store, upload, record.chunks == 0, limits)?;
    if upload.index != record.chunks {
        return Err(refused(
            ErrorCode::Invalid,
            format!("chunk {} out of order; the blob expects chunk {}", upload.index, record.chunks),
        ));
    }
    let bytes = record.bytes + upload.data.len() as u64;
    if bytes > max_bytes {
        return Err(refused(ErrorCode::BlobTooLarge, format!("the blob would exceed {max_bytes} bytes")));
    }
    let sealed_seq = if upload.last { store.last_seq(upload.thread)? } else { 0 };
    let next = BlobRecord { chunks: record.chunks + 1, bytes, sealed: upload.last, sealed_seq, ..record };
    store.put_blob_chunk(upload.blob, &next, upload.index, &upload.data)?;
    Ok(false)
}

/// The number of chunks of a sealed blob; a blob still open is not served.
pub fn sealed_chunks(record: Option<BlobRecord>) -> Result<u32, WireError> {
    match record {
        Some(BlobRecord { sealed: true, chunks, .. }) => Ok(chunks),
        _ => Err(not_found()),
    }
}
