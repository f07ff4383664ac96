//! The artifact store's blob layer: immutable blobs addressed by the SHA-256 of their bytes, on
//! the local file system, S3, Google Cloud Storage or Azure Blob Storage.
//!
//! Datasets and models are stored as blobs; which blob is which version of what, and where it
//! came from (lineage), is recorded elsewhere and refers to blobs by [`BlobRef`]. Blobs stream in
//! and out without ever being held in memory whole, and every read checks the bytes against
//! their digest.
//!
//! Credentials never show: configurations print `***` in their `Debug` output, and every message
//! a backend produces is scrubbed of the credentials the store was built with before it becomes
//! a [`BlobError`].

mod access;
mod blob_store;
mod blob_stream;
mod config;
mod digest;
mod error;
mod redact;

pub use access::BlobAccess;
pub use blob_store::{BlobStore, PutOutcome, blob_key, save_verified};
pub use blob_stream::BlobStream;
pub use config::{
    ArtifactStoreConfig, AzureConfig, DEFAULT_LOCAL_DIR, GcsConfig, LocalConfig, S3Config,
};
pub use digest::{BlobRef, ParseDigestError, Sha256Digest};
pub use error::BlobError;
