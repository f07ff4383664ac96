//! [`BlobAccess`]: how a worker moves artifact bytes, straight to and from the artifact store
//! when it has credentials for it, or through the server when it has none.

use std::path::Path;

use async_trait::async_trait;

use super::blob_store::BlobStore;
use super::digest::BlobRef;
use super::error::BlobError;

/// Uploads and downloads of whole files, checked against their digest.
///
/// ```no_run
/// # async fn demo(access: &dyn kiln_engine::artifacts::BlobAccess) -> Result<(), kiln_engine::artifacts::BlobError> {
/// let blob = access.upload(std::path::Path::new("model.bin")).await?;
/// access.download(&blob, std::path::Path::new("copy.bin")).await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait BlobAccess: Send + Sync + 'static {
    /// Stores a file's bytes; answers their digest and size.
    async fn upload(&self, path: &Path) -> Result<BlobRef, BlobError>;

    /// Writes a blob to `dest`. On any failure, corruption included, `dest` is not created.
    async fn download(&self, blob: &BlobRef, dest: &Path) -> Result<(), BlobError>;
}

#[async_trait]
impl BlobAccess for BlobStore {
    async fn upload(&self, path: &Path) -> Result<BlobRef, BlobError> {
        Ok(self.put_file(path).await?.blob)
    }

    async fn download(&self, blob: &BlobRef, dest: &Path) -> Result<(), BlobError> {
        self.get_to_file(&blob.sha256, dest).await.map(drop)
    }
}
