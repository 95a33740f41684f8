//! Attachment chunks as plain files beside the database.
//!
//! Attachments reach 100 MiB. Kept inside sled they would pass through its
//! page cache (so the hub's memory would grow with the file) and its log
//! (written twice, compacted later). As files they cost one write each and sit
//! in the kernel's page cache, not the hub's heap. Any [`super::Store`] backend
//! can keep its chunks here.
//!
//! Writes are not synced one by one: [`ChunkFiles::sync`] makes every chunk
//! written since the last sync durable, and the store calls it before it
//! flushes the records that mention those chunks. A record that reached disk
//! by a background flush before its chunk did is repaired when the uploader
//! resends the unacknowledged chunk (see `crate::blobs`).
//!
//! The chunks are ciphertext, but who sent how much to which case is itself
//! sensitive: the files are created owner-only (0600) in owner-only
//! directories (0700), like the rest of the store.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use wire::{BlobId, ThreadId};

use super::StoreError;

/// A directory of chunk files: `DIR/<thread>-<blob>/<index>`, per thread like the blob records.
#[derive(Debug)]
pub struct ChunkFiles {
    dir: PathBuf,
    unsynced: Mutex<Vec<PathBuf>>,
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("attachment file: {e}"))
}

impl ChunkFiles {
    /// Chunk files under `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        certs::private::create_dir_all(dir).map_err(io)?;
        Ok(Self { dir: dir.to_owned(), unsynced: Mutex::new(Vec::new()) })
    }

    fn blob_dir(&self, thread: ThreadId, blob: BlobId) -> PathBuf {
        self.dir.join(format!("{}-{}", thread.0.simple(), blob.0.simple()))
    }

    fn path(&self, thread: ThreadId, blob: BlobId, index: u32) -> PathBuf {
        self.blob_dir(thread, blob).join(format!("{index:08}"))
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        super::lock(&self.unsynced)
    }

    /// Writes a chunk (replacing one at the same place); durable after the next [`Self::sync`].
    pub fn write(&self, thread: ThreadId, blob: BlobId, index: u32, data: &[u8]) -> Result<(), StoreError> {
        let dir = self.blob_dir(thread, blob);
        if index == 0 {
            certs::private::create_dir_all(&dir).map_err(io)?;
            self.pending().push(self.dir.clone());
        }
        let path = self.path(thread, blob, index);
        certs::private::write_file(&path, data).map_err(io)?;
        let mut pending = self.pending();
        pending.push(path);
        pending.push(dir);
        Ok(())
    }

    /// A stored chunk, if present.
    pub fn read(&self, thread: ThreadId, blob: BlobId, index: u32) -> Result<Option<Vec<u8>>, StoreError> {
        match fs::read(self.path(thread, blob, index)) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Deletes a blob's chunks.
    pub fn remove(&self, thread: ThreadId, blob: BlobId) -> Result<(), StoreError> {
        match fs::remove_dir_all(self.blob_dir(thread, blob)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => {
                self.pending().push(self.dir.clone());
                Ok(())
            }
        }
    }

    /// Makes every chunk written so far durable, with the directory entries naming them.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut paths = std::mem::take(&mut *self.pending());
        paths.sort();
        paths.dedup();
        for path in &paths {
            if let Err(e) = File::open(path).and_then(|f| f.sync_all()) {
                // Whatever was not synced stays pending for the next attempt.
                self.pending().extend(paths.iter().cloned());
                return Err(io(e));
            }
        }
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use certs::private::mode_of;

    #[test]
    fn chunks_are_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let chunks = ChunkFiles::open(&root.path().join("attachments")).unwrap();
        let (thread, blob) = (ThreadId::random(), BlobId::random());
        chunks.write(thread, blob, 0, b"first").unwrap();
        chunks.write(thread, blob, 1, b"second").unwrap();
        chunks.sync().unwrap();
        assert_eq!(mode_of(&root.path().join("attachments")).unwrap(), 0o700);
        assert_eq!(mode_of(&chunks.blob_dir(thread, blob)).unwrap(), 0o700);
        for index in [0, 1] {
            assert_eq!(mode_of(&chunks.path(thread, blob, index)).unwrap(), 0o600, "chunk {index}");
        }
        assert_eq!(chunks.read(thread, blob, 1).unwrap().as_deref(), Some(&b"second"[..]));
    }
}
