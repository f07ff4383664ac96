//! [`BlobStream`]: a blob's bytes as they arrive, hashed on the way, ending in an error instead
//! of a clean end when they do not match the blob's digest.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::BoxStream;
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;

use super::digest::Sha256Digest;
use super::error::BlobError;
use super::redact::Secrets;

/// The bytes of one blob, verified against its digest while they stream.
///
/// Each chunk is handed out as soon as it arrives, so a reader sees the bytes before the digest
/// can be checked: the verdict comes as the last item. A corrupt blob ends with
/// [`BlobError::Corrupt`] instead of ending cleanly, so a consumer must read to the end and must
/// discard what it read when that last item is an error.
/// [`BlobStore::get_to_file`](super::BlobStore::get_to_file) does this for files.
pub struct BlobStream {
    sha256: Sha256Digest,
    key: String,
    chunks: BoxStream<'static, object_store::Result<Bytes>>,
    hasher: Sha256,
    secrets: Arc<Secrets>,
    finished: bool,
}

impl BlobStream {
    pub(crate) fn new(
        sha256: Sha256Digest,
        key: String,
        chunks: BoxStream<'static, object_store::Result<Bytes>>,
        secrets: Arc<Secrets>,
    ) -> Self {
        BlobStream {
            sha256,
            key,
            chunks,
            hasher: Sha256::new(),
            secrets,
            finished: false,
        }
    }

    /// The digest of the blob being read.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }

    /// The same bytes as an [`AsyncRead`]; a corrupt blob fails the last read with
    /// [`std::io::ErrorKind::InvalidData`], carrying the [`BlobError`].
    pub fn into_async_read(self) -> impl AsyncRead + Send + Unpin {
        tokio_util::io::StreamReader::new(self)
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes, BlobError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match this.chunks.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.hasher.update(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.finished = true;
                let error = match error {
                    object_store::Error::NotFound { .. } => BlobError::NotFound {
                        sha256: this.sha256,
                    },
                    other => {
                        super::blob_store::backend_error(&this.secrets, "read", &this.key, other)
                    }
                };
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.finished = true;
                let actual =
                    Sha256Digest::from_bytes(std::mem::take(&mut this.hasher).finalize().into());
                if actual == this.sha256 {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(BlobError::Corrupt {
                        expected: this.sha256,
                        actual,
                    })))
                }
            }
        }
    }
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("sha256", &self.sha256)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}
