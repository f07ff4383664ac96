//! [`BlobError`], everything that can go wrong in the blob layer.
//!
//! Messages from storage backends are kept as scrubbed text rather than as the backend's error
//! value: the value's `Debug` or source chain could carry a credential, the text cannot.

use std::path::PathBuf;

use super::digest::Sha256Digest;

/// An error from the blob layer. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob with this digest is stored.
    #[error("blob sha256:{sha256} is not in the artifact store")]
    NotFound {
        /// The digest that was asked for.
        sha256: Sha256Digest,
    },

    /// The stored bytes no longer hash to their digest: the blob is corrupt, and whatever was
    /// read from it must not be used.
    #[error("blob sha256:{expected} is corrupt: its stored bytes hash to sha256:{actual}")]
    Corrupt {
        /// The digest the blob is stored under.
        expected: Sha256Digest,
        /// The digest of the bytes actually read.
        actual: Sha256Digest,
    },

    /// The backend refused the credentials (HTTP 401 or 403).
    #[error("the artifact store refused access to {operation} {key}: {message}")]
    AccessDenied {
        /// What was being done, as a verb (`"upload"`, `"read"`, …).
        operation: &'static str,
        /// The storage key involved.
        key: String,
        /// The backend's explanation, with credentials removed.
        message: String,
    },

    /// Any other failure of the storage backend (network, server, unsupported operation).
    #[error("the artifact store failed to {operation} {key}: {message}")]
    Backend {
        /// What was being done, as a verb (`"upload"`, `"read"`, …).
        operation: &'static str,
        /// The storage key involved.
        key: String,
        /// The backend's explanation, with credentials removed.
        message: String,
    },

    /// The artifact store configuration cannot be used.
    #[error("invalid {backend} artifact store configuration: {message}")]
    Config {
        /// Which backend: `"local"`, `"s3"`, `"gcs"` or `"azure"`.
        backend: &'static str,
        /// What is wrong, with credentials removed.
        message: String,
    },

    /// A local file could not be read or written.
    #[error("failed to {operation} {path}: {source}")]
    File {
        /// What was being done, as a verb (`"read"`, `"create"`, …).
        operation: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The stream handed to [`BlobStore::put_stream`](super::BlobStore::put_stream) failed.
    #[error("failed to read the blob's input: {0}")]
    Input(#[source] std::io::Error),
}

impl From<BlobError> for std::io::Error {
    /// Lets a [`BlobStream`](super::BlobStream) serve as an `AsyncRead`; corruption surfaces as
    /// [`InvalidData`](std::io::ErrorKind::InvalidData) with the `BlobError` inside.
    fn from(error: BlobError) -> Self {
        let kind = match &error {
            BlobError::NotFound { .. } => std::io::ErrorKind::NotFound,
            BlobError::Corrupt { .. } => std::io::ErrorKind::InvalidData,
            BlobError::AccessDenied { .. } => std::io::ErrorKind::PermissionDenied,
            BlobError::File { source, .. } | BlobError::Input(source) => source.kind(),
            BlobError::Backend { .. } | BlobError::Config { .. } => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, error)
    }
}
