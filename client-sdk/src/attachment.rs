//! Encrypted attachments: files that travel beside a thread's messages.
//!
//! A file does not go through MLS itself (a 100 MiB MLS message would have to
//! sit whole in memory on both sides). Instead the SDK draws a fresh AES-256-GCM
//! key per file, encrypts the file in chunks of [`CHUNK_BYTES`] while it reads
//! it, and uploads the chunks to the hub as an opaque blob. The key, the file's
//! SHA-256 and the blob id then go to the members in an ordinary MLS message
//! ([`crate::Content::Attachment`]), so only they can read the blob, and the
//! hub only checks who may store and fetch it.
//!
//! Each chunk's nonce is its index, and its associated data binds the blob id,
//! the index and whether it is the last chunk: a chunk altered, moved, swapped
//! with another blob's, or a blob cut short fails to decrypt, and the receiver
//! also checks the whole file's SHA-256. A fetched file is written beside its
//! destination and renamed into place only once everything verified, so
//! tampered content is never presented as the file.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::digest::{Context, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use wire::{BlobId, Reply, Request, ThreadId};

use crate::{Client, Error, Sent};

/// Plaintext bytes per chunk: large enough that per-request costs vanish,
/// small enough that a chunk is a fraction of the hub's frame limit.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Chunk requests an upload or download keeps in flight, so that the
/// connection's round-trip time does not limit throughput.
const WINDOW: usize = 4;

const AAD_LABEL: &[u8] = b"ketenhub-attachment-v1";

/// A reference to an encrypted file, as it travels inside an MLS message.
/// Whoever holds it can fetch and decrypt the file, so it is shown only to
/// the thread's members.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The blob at the hub.
    pub blob: BlobId,
    /// The file's name, as the sender gave it.
    pub name: String,
    /// The file's media type, for example `application/pdf`.
    pub media_type: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The SHA-256 of the file's content.
    #[serde(with = "serde_bytes")]
    pub sha256: [u8; 32],
    /// How many chunks the blob has.
    pub chunks: u32,
    #[serde(with = "serde_bytes")]
    key: [u8; 32],
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("blob", &self.blob)
            .field("name", &self.name)
            .field("media_type", &self.media_type)
            .field("size", &self.size)
            .field("sha256", &hex(&self.sha256))
            .field("chunks", &self.chunks)
            .finish_non_exhaustive()
    }
}

impl Attachment {
    /// The SHA-256 of the content as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why an attachment could not be fetched. Nothing was written at the destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// A chunk does not decrypt under the attachment's key: it was altered, moved or swapped.
    #[error("chunk {chunk} of the attachment was tampered with")]
    Tampered {
        /// The first chunk that failed.
        chunk: u32,
    },
    /// The chunks decrypted but the content's SHA-256 differs from the one the sender signed.
    #[error("the attachment's content does not match its SHA-256")]
    HashMismatch,
    /// The hub's blob does not have the chunks the reference names.
    #[error("the blob is incomplete or has the wrong shape: {0}")]
    Incomplete(String),
    /// Reading the source or writing the destination failed.
    #[error("file: {0}")]
    Io(String),
}

impl From<std::io::Error> for AttachmentError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

impl From<AttachmentError> for Error {
    fn from(e: AttachmentError) -> Self {
        Error::Attachment(e)
    }
}

/// What a fetch produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Where the file now is.
    pub path: PathBuf,
    /// Its size in bytes, verified.
    pub size: u64,
}

/// The AES-256-GCM chunk cipher of one attachment.
pub struct ChunkCipher {
    key: LessSafeKey,
    blob: BlobId,
}

impl ChunkCipher {
    /// The cipher for `blob` under a 32-byte key.
    pub fn new(key: &[u8; 32], blob: BlobId) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!("a 32-byte key fits AES-256"));
        Self { key: LessSafeKey::new(unbound), blob }
    }

    fn nonce(index: u32) -> Nonce {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&u64::from(index).to_be_bytes());
        Nonce::assume_unique_for_key(nonce)
    }

    fn aad(&self, index: u32, last: bool) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_LABEL.len() + 21);
        aad.extend_from_slice(AAD_LABEL);
        aad.extend_from_slice(self.blob.0.as_bytes());
        aad.extend_from_slice(&index.to_be_bytes());
        aad.push(u8::from(last));
        aad
    }

    /// Encrypts chunk `index` in place, appending the tag.
    pub fn seal(&self, index: u32, last: bool, chunk: &mut Vec<u8>) {
        self.key
            .seal_in_place_append_tag(Self::nonce(index), Aad::from(self.aad(index, last)), chunk)
            .unwrap_or_else(|_| unreachable!("a chunk is far below AES-GCM's length limit"));
    }

    /// Decrypts chunk `index`, or reports it as tampered.
    pub fn open(&self, index: u32, last: bool, mut chunk: Vec<u8>) -> Result<Vec<u8>, AttachmentError> {
        let len = self
            .key
            .open_in_place(Self::nonce(index), Aad::from(self.aad(index, last)), &mut chunk)
            .map_err(|_| AttachmentError::Tampered { chunk: index })?
            .len();
        chunk.truncate(len);
        Ok(chunk)
    }
}

/// Reads until `buf` holds `CHUNK_BYTES` or the source ends.
async fn read_chunk(source: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(CHUNK_BYTES + AES_256_GCM.tag_len());
    (&mut *source).take(CHUNK_BYTES as u64).read_to_end(&mut buf).await?;
    Ok(buf)
}

fn fresh_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).unwrap_or_else(|_| unreachable!("the system's random source failed"));
    key
}

impl Client {
    /// Encrypts the file at `path`, uploads it and sends a reference to it in
    /// the thread. The file streams: it is never whole in memory.
    pub async fn send_attachment(
        &self,
        thread: ThreadId,
        path: impl AsRef<Path>,
        media_type: &str,
    ) -> Result<(Sent, Attachment), Error> {
        let path = path.as_ref();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let file = tokio::fs::File::open(path).await.map_err(AttachmentError::from)?;
        let attachment = self.upload_attachment(thread, &name, media_type, file).await?;
        let sent = self.send_content(thread, crate::Content::Attachment(attachment.clone())).await?;
        Ok((sent, attachment))
    }

    /// Encrypts and uploads what `source` yields as a blob of `thread`, without
    /// sending a message; send the returned reference with
    /// [`crate::Content::Attachment`] (or inside a handover packet).
    pub async fn upload_attachment(
        &self,
        thread: ThreadId,
        name: &str,
        media_type: &str,
        mut source: impl AsyncRead + Unpin,
    ) -> Result<Attachment, Error> {
        let key = fresh_key();
        let blob = BlobId::random();
        let cipher = ChunkCipher::new(&key, blob);
        let mut digest = Context::new(&SHA256);
        let mut size = 0u64;
        let mut in_flight = VecDeque::new();
        let mut next = read_chunk(&mut source).await.map_err(AttachmentError::from)?;
        let mut index = 0u32;
        loop {
            let mut chunk = next;
            digest.update(&chunk);
            size += chunk.len() as u64;
            next = if chunk.len() == CHUNK_BYTES {
                read_chunk(&mut source).await.map_err(AttachmentError::from)?
            } else {
                Vec::new()
            };
            let last = next.is_empty();
            cipher.seal(index, last, &mut chunk);
            in_flight.push_back(self.submit(Request::PutBlobChunk { thread, blob, index, last, data: chunk }).await?);
            while in_flight.len() >= WINDOW || (last && !in_flight.is_empty()) {
                if let Some(pending) = in_flight.pop_front() {
                    expect_stored(self.answer(pending).await?)?;
                }
            }
            if last {
                break;
            }
            index += 1;
        }
        let sha256 = digest.finish().as_ref().try_into().unwrap_or_else(|_| unreachable!("SHA-256 is 32 bytes"));
        Ok(Attachment {
            blob,
            name: name.to_owned(),
            media_type: media_type.to_owned(),
            size,
            sha256,
            chunks: index + 1,
            key,
        })
    }

    /// Fetches, decrypts and verifies an attachment received in `thread` into
    /// `dest` (the hub keeps blobs per thread). The content appears at `dest`
    /// only once every chunk decrypted and the SHA-256 matched; on any failure
    /// nothing is left there.
    pub async fn fetch_attachment(
        &self,
        thread: ThreadId,
        attachment: &Attachment,
        dest: impl AsRef<Path>,
    ) -> Result<Fetched, Error> {
        let dest = dest.as_ref();
        let partial = dest.with_extension("ketenhub-partial");
        let result = self.fetch_into(thread, attachment, &partial).await;
        match result {
            Ok(size) => {
                tokio::fs::rename(&partial, dest).await.map_err(AttachmentError::from)?;
                Ok(Fetched { path: dest.to_owned(), size })
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(e)
            }
        }
    }

    async fn fetch_into(&self, thread: ThreadId, attachment: &Attachment, partial: &Path) -> Result<u64, Error> {
        let cipher = ChunkCipher::new(&attachment.key, attachment.blob);
        let mut file = tokio::fs::File::create(partial).await.map_err(AttachmentError::from)?;
        let mut digest = Context::new(&SHA256);
        let mut size = 0u64;
        let blob = attachment.blob;
        let mut requested = 0u32;
        let mut in_flight = VecDeque::new();
        for index in 0..attachment.chunks {
            while requested < attachment.chunks && in_flight.len() < WINDOW {
                in_flight.push_back(self.submit(Request::GetBlobChunk { thread, blob, index: requested }).await?);
                requested += 1;
            }
            let Some(pending) = in_flight.pop_front() else { break };
            let last = index + 1 == attachment.chunks;
            let data = expect_chunk(self.answer(pending).await?, index, last)?;
            let plain = cipher.open(index, last, data)?;
            digest.update(&plain);
            size += plain.len() as u64;
            file.write_all(&plain).await.map_err(AttachmentError::from)?;
        }
        file.sync_all().await.map_err(AttachmentError::from)?;
        if size != attachment.size || digest.finish().as_ref() != attachment.sha256 {
            return Err(AttachmentError::HashMismatch.into());
        }
        Ok(size)
    }
}

fn expect_stored(reply: Reply) -> Result<(), Error> {
    match reply {
        Reply::BlobChunkStored { .. } => Ok(()),
        other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
    }
}

fn expect_chunk(reply: Reply, index: u32, last: bool) -> Result<Vec<u8>, Error> {
    match reply {
        Reply::BlobChunk { index: got, last: got_last, data, .. } if got == index && got_last == last => Ok(data),
        Reply::BlobChunk { index: got, last: got_last, .. } => Err(AttachmentError::Incomplete(format!(
            "expected chunk {index} (last: {last}), got chunk {got} (last: {got_last})"
        ))
        .into()),
        other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_open_only_in_their_place() {
        let key = fresh_key();
        let blob = BlobId::random();
        let cipher = ChunkCipher::new(&key, blob);
        let mut chunk = b"a chunk of a report".to_vec();
        cipher.seal(3, false, &mut chunk);
        assert_eq!(cipher.open(3, false, chunk.clone()).unwrap(), b"a chunk of a report");
        assert_eq!(cipher.open(4, false, chunk.clone()), Err(AttachmentError::Tampered { chunk: 4 }));
        assert_eq!(cipher.open(3, true, chunk.clone()), Err(AttachmentError::Tampered { chunk: 3 }));
        let other = ChunkCipher::new(&key, BlobId::random());
        assert_eq!(other.open(3, false, chunk.clone()), Err(AttachmentError::Tampered { chunk: 3 }));
        let mut flipped = chunk;
        flipped[0] ^= 1;
        assert_eq!(cipher.open(3, false, flipped), Err(AttachmentError::Tampered { chunk: 3 }));
    }

    #[test]
    fn the_key_is_not_in_debug_output() {
        let attachment = Attachment {
            // A fixed id: a random one can contain the digits looked for below.
            blob: BlobId(uuid::Uuid::nil()),
            name: "report.pdf".into(),
            media_type: "application/pdf".into(),
            size: 1,
            sha256: [7; 32],
            chunks: 1,
            key: [0xAB; 32],
        };
        let shown = format!("{attachment:?}");
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("abab"), "{shown}");
    }
}
