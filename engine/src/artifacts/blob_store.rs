//! [`BlobStore`]: immutable blobs addressed by the SHA-256 of their bytes, in any object store.
//!
//! Layout: a blob lives at `blobs/sha256/<first 2 hex digits>/<other 62 hex digits>`, like Git's
//! objects, so no folder of a local store grows to millions of entries. Uploads go to
//! `tmp/<random>` first, because the digest, and so the final key, is known only once the last
//! byte has been read; the finished upload is then copied to its key unless that key already
//! exists, and the temporary object is deleted.
//!
//! Known limit: AWS copies at most 5 GiB in one CopyObject request, so larger blobs cannot be
//! published on AWS S3 yet (the local store and s3s-fs have no such limit). A ranged multipart
//! copy, or uploading files straight to their key after hashing them first, would lift it.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use futures_util::stream::BoxStream;
use futures_util::{StreamExt, future};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use super::blob_stream::BlobStream;
use super::config::ArtifactStoreConfig;
use super::digest::{BlobRef, Sha256Digest};
use super::error::BlobError;
use super::redact::Secrets;

/// Where blobs live, below the store's root.
const BLOB_PREFIX: &str = "blobs/sha256";

/// Where uploads wait until their digest is known. Objects left here by an interrupted upload
/// are garbage for a later collector; nothing ever reads them.
const UPLOAD_PREFIX: &str = "tmp";

/// The size of each multipart upload part. S3 requires at least 5 MiB for every part but the
/// last and allows 10,000 parts, so this caps a blob at about 78 GiB.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// How many parts may upload at once. With the part being filled, this bounds the memory one
/// upload holds to about `(PARTS_IN_FLIGHT + 1) * PART_SIZE`.
const PARTS_IN_FLIGHT: usize = 2;

/// How much is read from the input at a time.
const READ_SIZE: usize = 256 * 1024;

/// The storage key of a blob: `blobs/sha256/ab/cdef…`.
pub fn blob_key(sha256: &Sha256Digest) -> String {
    let hex = sha256.to_hex();
    format!("{BLOB_PREFIX}/{}/{}", &hex[..2], &hex[2..])
}

/// The digest stored at a key, if the key is a blob's.
fn digest_of_key(key: &Path) -> Option<Sha256Digest> {
    let rest = key.as_ref().strip_prefix(BLOB_PREFIX)?.strip_prefix('/')?;
    let (fan_out, tail) = rest.split_once('/')?;
    let sha256: Sha256Digest = format!("{fan_out}{tail}").parse().ok()?;
    // Only the canonical spelling counts, so that listing and lookup always agree.
    (blob_key(&sha256) == key.as_ref()).then_some(sha256)
}

/// What storing a blob did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// The stored blob.
    pub blob: BlobRef,
    /// True when identical bytes were already stored, so nothing new was kept.
    pub already_existed: bool,
}

/// Content-addressed, immutable blobs in a local folder, S3, GCS or Azure.
///
/// Writing hashes the bytes while they stream to the backend, so no blob is ever held in memory
/// whole; writing bytes that are already stored keeps nothing new. Reading checks the bytes
/// against their digest while they stream and fails with [`BlobError::Corrupt`] when they no
/// longer match.
///
/// ```no_run
/// # async fn example() -> Result<(), kiln_engine::artifacts::BlobError> {
/// use kiln_engine::artifacts::{ArtifactStoreConfig, BlobStore};
///
/// let store = BlobStore::from_config(&ArtifactStoreConfig::local_under(".kiln".as_ref()))?;
/// let stored = store.put_file("model.onnx".as_ref()).await?;
/// store.get_to_file(&stored.blob.sha256, "/tmp/model.onnx".as_ref()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    secrets: Arc<Secrets>,
}

impl BlobStore {
    /// Builds the backend a configuration names. Nothing is contacted yet, so wrong credentials
    /// show only at the first operation.
    pub fn from_config(config: &ArtifactStoreConfig) -> Result<Self, BlobError> {
        let (store, secrets) = config.build()?;
        Ok(BlobStore {
            store,
            secrets: Arc::new(secrets),
        })
    }

    /// Stores a file's bytes.
    pub async fn put_file(&self, path: &FsPath) -> Result<PutOutcome, BlobError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| BlobError::File {
                operation: "open",
                path: path.to_owned(),
                source,
            })?;
        self.put_reader(file, |source| BlobError::File {
            operation: "read",
            path: path.to_owned(),
            source,
        })
        .await
    }

    /// Stores everything a reader yields, until its end.
    ///
    /// An upload that fails cleans up after itself. One whose future is dropped midway may leave
    /// an unfinished upload under `tmp/` (on S3, a multipart upload that was never completed),
    /// which nothing reads; a bucket lifecycle rule or a later garbage collector removes it.
    pub async fn put_stream(
        &self,
        input: impl AsyncRead + Unpin + Send,
    ) -> Result<PutOutcome, BlobError> {
        self.put_reader(input, BlobError::Input).await
    }

    async fn put_reader(
        &self,
        mut input: impl AsyncRead + Unpin + Send,
        read_error: impl Fn(std::io::Error) -> BlobError,
    ) -> Result<PutOutcome, BlobError> {
        let upload_key = Path::from(format!("{UPLOAD_PREFIX}/{:032x}", rand::random::<u128>()));
        let upload = self
            .store
            .put_multipart(&upload_key)
            .await
            .map_err(|error| self.backend_error("start uploading", &upload_key, error))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);

        let copied = async {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut buffer = vec![0u8; READ_SIZE];
            loop {
                let read = input.read(&mut buffer).await.map_err(&read_error)?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
                size += read as u64;
                // Back pressure: the reader waits while the backend is busy, which is what
                // keeps memory bounded however fast the input is.
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|error| self.backend_error("upload", &upload_key, error))?;
                writer.write(&buffer[..read]);
            }
            Ok::<_, BlobError>(BlobRef {
                sha256: Sha256Digest::from_bytes(hasher.finalize().into()),
                size,
            })
        }
        .await;
        let blob = match copied {
            Ok(blob) => blob,
            Err(error) => {
                if let Err(abort_error) = writer.abort().await {
                    warn!(
                        message = "Could not abort an unfinished upload.",
                        key = %upload_key,
                        error = %self.secrets.describe(&abort_error),
                    );
                }
                return Err(error);
            }
        };
        writer
            .finish()
            .await
            .map_err(|error| self.backend_error("upload", &upload_key, error))?;

        let published = self.publish(&upload_key, &blob).await;
        if let Err(error) = self.store.delete(&upload_key).await {
            warn!(
                message = "Could not delete a finished upload's temporary object.",
                key = %upload_key,
                error = %self.secrets.describe(&error),
            );
        }
        let already_existed = published?;
        debug!(message = "Stored blob.", sha256 = %blob.sha256, size = blob.size, already_existed);
        Ok(PutOutcome {
            blob,
            already_existed,
        })
    }

    /// Copies a finished upload to its blob's key unless that key is taken; tells whether it was.
    async fn publish(&self, upload_key: &Path, blob: &BlobRef) -> Result<bool, BlobError> {
        let key = Path::from(blob_key(&blob.sha256));
        match self.store.copy_if_not_exists(upload_key, &key).await {
            Ok(()) => Ok(false),
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.keep_existing(upload_key, &key, blob).await
            }
            // S3 offers no create-only copy without extra configuration. A check and a plain copy
            // can race with another writer, but both write the same bytes, so either may win.
            Err(
                object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. },
            ) => match self.store.head(&key).await {
                Ok(_) => self.keep_existing(upload_key, &key, blob).await,
                Err(object_store::Error::NotFound { .. }) => {
                    self.store
                        .copy(upload_key, &key)
                        .await
                        .map_err(|error| self.backend_error("store", &key, error))?;
                    Ok(false)
                }
                Err(error) => Err(self.backend_error("check", &key, error)),
            },
            Err(error) => Err(self.backend_error("store", &key, error)),
        }
    }

    /// Decides about a blob that is already stored. Equal digests mean equal bytes, so it is
    /// kept, unless its size shows it damaged: then the fresh upload replaces it, which is the
    /// cheap half of self-repair (damage that keeps the size shows only when read).
    async fn keep_existing(
        &self,
        upload_key: &Path,
        key: &Path,
        blob: &BlobRef,
    ) -> Result<bool, BlobError> {
        let stored = self
            .store
            .head(key)
            .await
            .map_err(|error| self.backend_error("check", key, error))?;
        if stored.size == blob.size {
            return Ok(true);
        }
        warn!(
            message = "Replacing a stored blob whose size does not match its digest.",
            sha256 = %blob.sha256,
            stored_size = stored.size,
            size = blob.size,
        );
        self.store
            .copy(upload_key, key)
            .await
            .map_err(|error| self.backend_error("replace", key, error))?;
        Ok(false)
    }

    /// Streams a blob, checking its digest as the bytes arrive; see [`BlobStream`] for how
    /// corruption is reported.
    pub async fn open(&self, sha256: &Sha256Digest) -> Result<BlobStream, BlobError> {
        let key = Path::from(blob_key(sha256));
        let result = self
            .store
            .get(&key)
            .await
            .map_err(|error| self.lookup_error(sha256, "read", &key, error))?;
        Ok(BlobStream::new(
            *sha256,
            key.to_string(),
            result.into_stream(),
            Arc::clone(&self.secrets),
        ))
    }

    /// Writes a blob to a file, checking its digest on the way.
    ///
    /// The bytes go to a hidden file beside `dest`, which is renamed to `dest` only once the
    /// digest matched: `dest` never holds unverified bytes, and on any failure (corruption
    /// included) the hidden file is removed and an existing `dest` is left untouched.
    pub async fn get_to_file(
        &self,
        sha256: &Sha256Digest,
        dest: &FsPath,
    ) -> Result<BlobRef, BlobError> {
        // The stream checks the digest itself and ends in an error on a mismatch.
        let stream = self.open(sha256).await?;
        let size = write_atomically(stream, dest, |_| Ok(())).await?;
        Ok(BlobRef {
            sha256: *sha256,
            size,
        })
    }

    /// Whether a blob is stored.
    pub async fn exists(&self, sha256: &Sha256Digest) -> Result<bool, BlobError> {
        let key = Path::from(blob_key(sha256));
        match self.store.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(self.backend_error("check", &key, error)),
        }
    }

    /// A stored blob's size in bytes.
    pub async fn size(&self, sha256: &Sha256Digest) -> Result<u64, BlobError> {
        let key = Path::from(blob_key(sha256));
        let meta = self
            .store
            .head(&key)
            .await
            .map_err(|error| self.lookup_error(sha256, "check", &key, error))?;
        Ok(meta.size)
    }

    /// Deletes a blob. Deleting a blob that is not stored succeeds, because S3 cannot tell the
    /// two apart and a garbage collector wants idempotence anyway.
    pub async fn delete(&self, sha256: &Sha256Digest) -> Result<(), BlobError> {
        let key = Path::from(blob_key(sha256));
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.backend_error("delete", &key, error)),
        }
    }

    /// Every stored blob, in no particular order, for garbage collection. Objects under the
    /// blob prefix that are not named like blobs are skipped with a warning.
    pub fn list(&self) -> BoxStream<'static, Result<BlobRef, BlobError>> {
        let secrets = Arc::clone(&self.secrets);
        self.store
            .list(Some(&Path::from(BLOB_PREFIX)))
            .filter_map(move |item| {
                future::ready(match item {
                    Ok(meta) => match digest_of_key(&meta.location) {
                        Some(sha256) => Some(Ok(BlobRef {
                            sha256,
                            size: meta.size,
                        })),
                        None => {
                            warn!(message = "Skipping an object that is not a blob.", key = %meta.location);
                            None
                        }
                    },
                    Err(error) => Some(Err(backend_error(&secrets, "list", BLOB_PREFIX, error))),
                })
            })
            .boxed()
    }

    /// Like [`BlobStore::list`], with each blob's last modification time as the backend
    /// reports it. A garbage collector needs the time: a worker may have stored a blob whose
    /// completion, which makes a version refer to it, has not reached the database yet, so only
    /// blobs older than some margin may be taken for unreferenced.
    pub fn list_with_times(
        &self,
    ) -> BoxStream<'static, Result<(BlobRef, chrono::DateTime<chrono::Utc>), BlobError>> {
        let secrets = Arc::clone(&self.secrets);
        self.store
            .list(Some(&Path::from(BLOB_PREFIX)))
            .filter_map(move |item| {
                future::ready(match item {
                    Ok(meta) => match digest_of_key(&meta.location) {
                        Some(sha256) => Some(Ok((
                            BlobRef {
                                sha256,
                                size: meta.size,
                            },
                            meta.last_modified,
                        ))),
                        None => {
                            warn!(message = "Skipping an object that is not a blob.", key = %meta.location);
                            None
                        }
                    },
                    Err(error) => Some(Err(backend_error(&secrets, "list", BLOB_PREFIX, error))),
                })
            })
            .boxed()
    }

    fn backend_error(
        &self,
        operation: &'static str,
        key: &Path,
        error: object_store::Error,
    ) -> BlobError {
        backend_error(&self.secrets, operation, key.as_ref(), error)
    }

    /// Like `backend_error`, but a missing object is the blob's absence.
    fn lookup_error(
        &self,
        sha256: &Sha256Digest,
        operation: &'static str,
        key: &Path,
        error: object_store::Error,
    ) -> BlobError {
        match error {
            object_store::Error::NotFound { .. } => BlobError::NotFound { sha256: *sha256 },
            other => self.backend_error(operation, key, other),
        }
    }
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The backend's own `Debug` shows its whole configuration, credentials included; its
        // `Display` names only the bucket or folder.
        f.debug_struct("BlobStore")
            .field("backend", &self.secrets.scrub(&self.store.to_string()))
            .finish()
    }
}

/// Turns a backend failure into a [`BlobError`] whose message is free of credentials.
pub(crate) fn backend_error(
    secrets: &Secrets,
    operation: &'static str,
    key: &str,
    error: object_store::Error,
) -> BlobError {
    let message = secrets.describe(&error);
    let key = key.to_owned();
    let refused = matches!(
        error,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) || refused_by_status(&message);
    if refused {
        BlobError::AccessDenied {
            operation,
            key,
            message,
        }
    } else {
        BlobError::Backend {
            operation,
            key,
            message,
        }
    }
}

/// Whether a message reports HTTP 401 or 403. object_store types these as `PermissionDenied`
/// for single-object requests only; a refused S3 listing or multipart start arrives as a
/// `Generic` error whose status-carrying source type is private, so its text is all there is.
/// The artifacts test suite checks this against a real server.
fn refused_by_status(message: &str) -> bool {
    ["status code: 401", "status code: 403"]
        .iter()
        .any(|status| message.contains(status))
}

/// A hidden file beside a download's destination, removed when dropped unless kept. Dropping
/// covers every early return and a cancelled download alike.
/// Writes bytes that claim to be `expected` (from a server, say) to a file, checking digest
/// and size on the way, with the same guarantees as [`BlobStore::get_to_file`]: `dest` is only
/// ever replaced by bytes that matched.
pub async fn save_verified<S>(chunks: S, expected: &BlobRef, dest: &FsPath) -> Result<(), BlobError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, BlobError>> + Unpin,
{
    let mut hasher = Sha256::new();
    let size = write_atomically(chunks, dest, |chunk| match chunk {
        Some(chunk) => {
            hasher.update(chunk);
            Ok(())
        }
        None => {
            let actual = Sha256Digest::from_bytes(hasher.clone().finalize().into());
            if actual == expected.sha256 {
                Ok(())
            } else {
                Err(BlobError::Corrupt {
                    expected: expected.sha256,
                    actual,
                })
            }
        }
    })
    .await?;
    if size != expected.size {
        let _ = tokio::fs::remove_file(dest).await;
        return Err(BlobError::Backend {
            operation: "read",
            key: blob_key(&expected.sha256),
            message: format!("expected {} bytes, received {size}", expected.size),
        });
    }
    Ok(())
}

/// Streams chunks into a hidden file beside `dest` and renames it into place once `check`
/// accepts what was written: it sees every chunk, then `None` for its verdict. Answers the
/// number of bytes.
async fn write_atomically<S>(
    mut chunks: S,
    dest: &FsPath,
    mut check: impl FnMut(Option<&[u8]>) -> Result<(), BlobError>,
) -> Result<u64, BlobError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, BlobError>> + Unpin,
{
    let dest_error = |operation, source| BlobError::File {
        operation,
        path: dest.to_owned(),
        source,
    };
    let partial = PartialFile::beside(dest).map_err(|source| dest_error("write", source))?;
    let mut file = tokio::fs::File::create(&partial.path)
        .await
        .map_err(|source| dest_error("create", source))?;
    let mut size = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        check(Some(&chunk))?;
        file.write_all(&chunk)
            .await
            .map_err(|source| dest_error("write", source))?;
        size += chunk.len() as u64;
    }
    check(None)?;
    file.sync_all()
        .await
        .map_err(|source| dest_error("write", source))?;
    drop(file);
    tokio::fs::rename(&partial.path, dest)
        .await
        .map_err(|source| dest_error("move into place", source))?;
    partial.keep();
    Ok(size)
}

struct PartialFile {
    path: PathBuf,
    keep: bool,
}

impl PartialFile {
    fn beside(dest: &FsPath) -> std::io::Result<Self> {
        let name = dest.file_name().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the destination names no file",
            )
        })?;
        let mut hidden = std::ffi::OsString::from(".");
        hidden.push(name);
        hidden.push(format!(".{:016x}.partial", rand::random::<u64>()));
        Ok(PartialFile {
            path: dest.with_file_name(hidden),
            keep: false,
        })
    }

    /// Marks the file as moved into place, so dropping leaves it alone.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.keep {
            // It may not exist yet, if creating it failed.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fan_out_on_the_first_two_digits_and_parse_back() {
        let sha256: Sha256Digest =
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
                .parse()
                .unwrap();
        let key = blob_key(&sha256);
        assert_eq!(
            key,
            "blobs/sha256/2c/f24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(digest_of_key(&Path::from(key.as_str())), Some(sha256));
        for not_a_blob in [
            "blobs/sha256/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            "blobs/sha256/2c/F24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824",
            "blobs/sha256/2cf/24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            "tmp/2c/f24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        ] {
            assert_eq!(digest_of_key(&Path::from(not_a_blob)), None, "{not_a_blob}");
        }
    }

    #[test]
    fn partial_files_are_hidden_siblings() {
        let partial = PartialFile::beside(FsPath::new("/data/model.bin")).unwrap();
        let name = partial
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(partial.path.parent(), Some(FsPath::new("/data")));
        assert!(
            name.starts_with(".model.bin.") && name.ends_with(".partial"),
            "{name}"
        );
        assert!(PartialFile::beside(FsPath::new("/")).is_err());
    }
}
