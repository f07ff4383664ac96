//! The blob store suite: every check runs on the local file system and on a real S3-compatible
//! server (s3s-fs in CI, a fresh bucket per test), plus the S3 credential checks and a bound on
//! the memory a 256 MiB stream may take.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt};
use kiln_engine::artifacts::{
    ArtifactStoreConfig, BlobError, BlobRef, BlobStore, LocalConfig, S3Config, Sha256Digest,
    blob_key,
};
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use common::s3::S3Server;

/// Set in the child process that runs a memory test alone.
const MEMORY_TEST_CHILD: &str = "KILN_TEST_MEMORY_CHILD";

/// A store under test, and a way around it to damage blobs and look for leftovers.
struct Fixture {
    store: BlobStore,
    /// The same folder or bucket, without the blob layer.
    raw: Arc<dyn ObjectStore>,
    backend: Backend,
    /// Input and output files.
    scratch: tempfile::TempDir,
}

enum Backend {
    /// The temporary folder is the store's root.
    Local(tempfile::TempDir),
    S3,
}

impl Fixture {
    fn local() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let config = ArtifactStoreConfig::Local(LocalConfig {
            root: root.path().to_owned(),
        });
        Fixture {
            store: BlobStore::from_config(&config).unwrap(),
            raw: Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(root.path()).unwrap(),
            ),
            backend: Backend::Local(root),
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    /// A store in a fresh bucket, or `None` after a loud SKIPPED when no server is configured.
    async fn s3(test: &str) -> Option<Fixture> {
        let server = S3Server::from_env(test)?;
        let bucket = server.create_bucket().await;
        let store =
            BlobStore::from_config(&ArtifactStoreConfig::S3(server.config(&bucket))).unwrap();
        Some(Fixture {
            store,
            raw: Arc::new(server.raw_client(&bucket)),
            backend: Backend::S3,
            scratch: tempfile::tempdir().unwrap(),
        })
    }

    /// Flips one byte in the middle of a stored blob.
    async fn corrupt(&self, blob: &BlobRef) {
        self.rewrite_stored(blob, |bytes| {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
        })
        .await;
    }

    /// Changes a stored blob's bytes behind the store's back.
    async fn rewrite_stored(&self, blob: &BlobRef, edit: impl FnOnce(&mut Vec<u8>)) {
        let key = blob_key(&blob.sha256);
        match &self.backend {
            // Bit rot on disk: the file is edited in place.
            Backend::Local(root) => {
                let path = root.path().join(&key);
                let mut bytes = std::fs::read(&path).unwrap();
                edit(&mut bytes);
                std::fs::write(&path, bytes).unwrap();
            }
            // A server cannot be reached around its API, so damaged bytes replace the object.
            Backend::S3 => {
                let location = object_store::path::Path::from(key.as_str());
                let stored = self
                    .raw
                    .get(&location)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let mut bytes = stored.to_vec();
                edit(&mut bytes);
                self.raw.put(&location, bytes.into()).await.unwrap();
            }
        }
    }

    /// Objects left under the upload prefix.
    async fn leftover_uploads(&self) -> Vec<String> {
        let prefix = object_store::path::Path::from("tmp");
        let mut leftovers: Vec<String> = self
            .raw
            .list(Some(&prefix))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .unwrap();
        // The local store stages multipart uploads in files object_store itself hides from
        // listings; look for those too.
        if let Backend::Local(root) = &self.backend
            && let Ok(entries) = std::fs::read_dir(root.path().join("tmp"))
        {
            leftovers.extend(
                entries.map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()),
            );
        }
        leftovers.sort();
        leftovers.dedup();
        leftovers
    }

    fn scratch_file(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// Files in the scratch folder, hidden ones included.
    fn scratch_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.scratch.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Defines each check as a test on the local file system and a test on S3.
macro_rules! suite {
    ($($name:ident),+ $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fixture = super::Fixture::local();
                    super::$name(&fixture).await;
                }
            )+
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(fixture) = super::Fixture::s3(concat!("s3::", stringify!($name))).await else {
                        return;
                    };
                    super::$name(&fixture).await;
                }
            )+
        }
    };
}

suite!(
    small_blobs_round_trip,
    multipart_sized_blob_round_trips,
    identical_bytes_are_stored_once,
    corrupt_blob_fails_reads_and_leaves_no_partial_file,
    truncated_blob_is_replaced_by_the_next_upload,
    missing_blob_is_not_found,
    list_and_delete,
    failing_input_stores_nothing,
    streaming_256_mib_stays_in_bounded_memory,
);

async fn small_blobs_round_trip(fixture: &Fixture) {
    let store = &fixture.store;

    let stored = store.put_stream(&b"hello"[..]).await.unwrap();
    assert_eq!(
        stored.blob.sha256.to_string(),
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(stored.blob.size, 5);
    assert!(!stored.already_existed);
    let key = object_store::path::Path::from(
        "blobs/sha256/2c/f24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
    );
    assert_eq!(
        fixture.raw.head(&key).await.unwrap().size,
        5,
        "the blob is not where the layout says"
    );

    let thousand = generated_bytes(1, 1000);
    for content in [&b""[..], &b"hello"[..], &b"\0"[..], &thousand[..]] {
        let stored = store.put_stream(content).await.unwrap();
        assert_eq!(stored.blob.sha256, sha256_of(content));
        assert_eq!(stored.blob.size, content.len() as u64);
        assert!(store.exists(&stored.blob.sha256).await.unwrap());
        assert_eq!(
            store.size(&stored.blob.sha256).await.unwrap(),
            content.len() as u64
        );

        let dest = fixture.scratch_file("out.bin");
        let fetched = store.get_to_file(&stored.blob.sha256, &dest).await.unwrap();
        assert_eq!(fetched, stored.blob);
        assert_eq!(std::fs::read(&dest).unwrap(), content);

        let streamed: Vec<bytes::Bytes> = store
            .open(&stored.blob.sha256)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(streamed.concat(), content);
    }
    assert_eq!(fixture.leftover_uploads().await, Vec::<String>::new());
}

async fn multipart_sized_blob_round_trips(fixture: &Fixture) {
    const SIZE: u64 = 20 << 20;
    let input = fixture.scratch_file("input.bin");
    write_generated_file(&input, 2, SIZE).await;

    let stored = fixture.store.put_file(&input).await.unwrap();
    assert_eq!(stored.blob.sha256, generated_digest(2, SIZE));
    assert_eq!(stored.blob.size, SIZE);
    assert!(!stored.already_existed);

    let output = fixture.scratch_file("output.bin");
    assert_eq!(
        fixture
            .store
            .get_to_file(&stored.blob.sha256, &output)
            .await
            .unwrap(),
        stored.blob
    );
    assert!(
        std::fs::read(&input).unwrap() == std::fs::read(&output).unwrap(),
        "the bytes differ"
    );

    let mut reader = fixture
        .store
        .open(&stored.blob.sha256)
        .await
        .unwrap()
        .into_async_read();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = reader.read(&mut buffer).await.unwrap();
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    assert_eq!(
        Sha256Digest::from_bytes(hasher.finalize().into()),
        stored.blob.sha256
    );
    assert_eq!(fixture.leftover_uploads().await, Vec::<String>::new());
}

async fn identical_bytes_are_stored_once(fixture: &Fixture) {
    // Larger than one part, so that the second upload is multipart too.
    const SIZE: u64 = 9 << 20;
    let first = fixture
        .store
        .put_stream(GeneratedReader::new(3, SIZE))
        .await
        .unwrap();
    assert!(!first.already_existed);

    let file = fixture.scratch_file("same.bin");
    write_generated_file(&file, 3, SIZE).await;
    let second = fixture.store.put_file(&file).await.unwrap();
    assert!(second.already_existed, "identical bytes were stored again");
    assert_eq!(second.blob, first.blob);

    let listed: Vec<BlobRef> = fixture.store.list().try_collect().await.unwrap();
    assert_eq!(listed, vec![first.blob]);
    assert_eq!(fixture.leftover_uploads().await, Vec::<String>::new());
}

async fn corrupt_blob_fails_reads_and_leaves_no_partial_file(fixture: &Fixture) {
    const SIZE: u64 = 3 << 20;
    let stored = fixture
        .store
        .put_stream(GeneratedReader::new(4, SIZE))
        .await
        .unwrap();
    let sha256 = stored.blob.sha256;
    fixture.corrupt(&stored.blob).await;

    let dest = fixture.scratch_file("restored.bin");
    let error = fixture.store.get_to_file(&sha256, &dest).await.unwrap_err();
    let BlobError::Corrupt { expected, actual } = &error else {
        panic!("expected a corruption error, got {error:?}");
    };
    assert_eq!(*expected, sha256);
    assert_ne!(*actual, sha256);
    assert!(error.to_string().contains(&sha256.to_string()), "{error}");
    assert!(!dest.exists(), "a partial file was left at the destination");
    assert_eq!(
        fixture.scratch_files(),
        Vec::<String>::new(),
        "a partial file was left beside it"
    );

    // A file already at the destination survives a failed download unchanged.
    std::fs::write(&dest, b"previous version").unwrap();
    let error = fixture.store.get_to_file(&sha256, &dest).await.unwrap_err();
    assert!(matches!(error, BlobError::Corrupt { .. }), "{error:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"previous version");
    assert_eq!(fixture.scratch_files(), vec!["restored.bin".to_owned()]);

    // A stream hands out the bytes but ends with the verdict instead of a clean end.
    let items: Vec<Result<bytes::Bytes, BlobError>> =
        fixture.store.open(&sha256).await.unwrap().collect().await;
    let Some(Err(BlobError::Corrupt { expected, .. })) = items.last() else {
        panic!("the stream of a corrupt blob did not end in an error");
    };
    assert_eq!(*expected, sha256);
    assert!(items[..items.len() - 1].iter().all(Result::is_ok));

    // And through `AsyncRead`, the last read fails.
    let mut sink = Vec::new();
    let error = fixture
        .store
        .open(&sha256)
        .await
        .unwrap()
        .into_async_read()
        .read_to_end(&mut sink)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert!(error.to_string().contains(&sha256.to_string()), "{error}");
}

async fn truncated_blob_is_replaced_by_the_next_upload(fixture: &Fixture) {
    let content = generated_bytes(10, 300_000);
    let stored = fixture.store.put_stream(&content[..]).await.unwrap();
    fixture
        .rewrite_stored(&stored.blob, |bytes| bytes.truncate(1000))
        .await;
    assert_eq!(fixture.store.size(&stored.blob.sha256).await.unwrap(), 1000);

    // Its size gives the damage away, so the fresh upload is kept instead of the damaged copy.
    let again = fixture.store.put_stream(&content[..]).await.unwrap();
    assert_eq!(again.blob, stored.blob);
    assert!(!again.already_existed, "the damaged copy counted as stored");
    let dest = fixture.scratch_file("repaired.bin");
    fixture
        .store
        .get_to_file(&stored.blob.sha256, &dest)
        .await
        .unwrap();
    assert!(
        std::fs::read(&dest).unwrap() == content,
        "the repaired blob differs"
    );
    assert_eq!(fixture.leftover_uploads().await, Vec::<String>::new());
}

async fn missing_blob_is_not_found(fixture: &Fixture) {
    let missing = sha256_of(b"never stored");
    let not_found = |error: BlobError| match error {
        BlobError::NotFound { sha256 } => {
            assert_eq!(sha256, missing);
        }
        other => panic!("expected not found, got {other:?}"),
    };
    assert!(!fixture.store.exists(&missing).await.unwrap());
    not_found(fixture.store.size(&missing).await.unwrap_err());
    not_found(fixture.store.open(&missing).await.unwrap_err());
    let dest = fixture.scratch_file("missing.bin");
    let error = fixture
        .store
        .get_to_file(&missing, &dest)
        .await
        .unwrap_err();
    assert!(error.to_string().contains(&missing.to_string()), "{error}");
    not_found(error);
    assert_eq!(fixture.scratch_files(), Vec::<String>::new());
    fixture.store.delete(&missing).await.unwrap();
}

async fn list_and_delete(fixture: &Fixture) {
    assert_eq!(
        fixture.store.list().try_collect::<Vec<_>>().await.unwrap(),
        vec![]
    );
    let mut stored = Vec::new();
    for (seed, size) in [(5, 10), (6, 100_000), (7, 1)] {
        stored.push(
            fixture
                .store
                .put_stream(GeneratedReader::new(seed, size))
                .await
                .unwrap()
                .blob,
        );
    }
    let mut listed: Vec<BlobRef> = fixture.store.list().try_collect().await.unwrap();
    listed.sort_by_key(|blob| blob.sha256);
    stored.sort_by_key(|blob| blob.sha256);
    assert_eq!(listed, stored);

    let gone_at = stored.iter().position(|blob| blob.size == 100_000).unwrap();
    let gone = stored.remove(gone_at);
    fixture.store.delete(&gone.sha256).await.unwrap();
    assert!(!fixture.store.exists(&gone.sha256).await.unwrap());
    let mut listed: Vec<BlobRef> = fixture.store.list().try_collect().await.unwrap();
    listed.sort_by_key(|blob| blob.sha256);
    assert_eq!(listed, stored);

    let again = fixture
        .store
        .put_stream(GeneratedReader::new(6, 100_000))
        .await
        .unwrap();
    assert_eq!(again.blob, gone);
    assert!(!again.already_existed, "a deleted blob counted as present");
}

async fn failing_input_stores_nothing(fixture: &Fixture) {
    let input = GeneratedReader::new(8, 12 << 20).failing_after(10 << 20);
    let error = fixture.store.put_stream(input).await.unwrap_err();
    assert!(matches!(&error, BlobError::Input(_)), "{error:?}");
    assert!(error.to_string().contains("the input broke"), "{error}");
    assert_eq!(
        fixture.store.list().try_collect::<Vec<_>>().await.unwrap(),
        vec![]
    );
    assert_eq!(fixture.leftover_uploads().await, Vec::<String>::new());
}

async fn streaming_256_mib_stays_in_bounded_memory(fixture: &Fixture) {
    const SIZE: u64 = 256 << 20;
    const LIMIT_BYTES: u64 = 100_000_000;
    let backend = match fixture.backend {
        Backend::Local(_) => "local",
        Backend::S3 => "s3",
    };
    if std::env::var_os(MEMORY_TEST_CHILD).is_none() {
        // Memory that the other tests in this process freed stays with the allocator, which
        // reuses it without growing the resident set, so here it would hide this test's use.
        run_alone(&format!(
            "{backend}::streaming_256_mib_stays_in_bounded_memory"
        ))
        .await;
        return;
    }

    reset_peak_rss();
    let rss_before = status_kib("VmRSS");
    let started = Instant::now();
    let stored = fixture
        .store
        .put_stream(GeneratedReader::new(9, SIZE))
        .await
        .unwrap();
    let uploaded = started.elapsed();
    let dest = fixture.scratch_file("big.bin");
    fixture
        .store
        .get_to_file(&stored.blob.sha256, &dest)
        .await
        .unwrap();
    let peak = status_kib("VmHWM");
    let growth = (peak.saturating_sub(rss_before)) * 1024;

    let mut stderr = io::stderr().lock();
    let _ = io::Write::write_fmt(
        &mut stderr,
        format_args!(
            "{backend}: 256 MiB put_stream {uploaded:.2?}, get_to_file {:.2?}; RSS before {} MB, peak {} MB, growth {:.1} MB\n",
            started.elapsed() - uploaded,
            rss_before * 1024 / 1_000_000,
            peak * 1024 / 1_000_000,
            growth as f64 / 1e6,
        ),
    );
    drop(stderr);
    assert!(
        growth < LIMIT_BYTES,
        "{backend}: streaming 256 MiB grew the peak RSS by {growth} bytes"
    );
    assert_eq!(stored.blob.size, SIZE);
    assert_eq!(stored.blob.sha256, generated_digest(9, SIZE));
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), SIZE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wrong_secret_is_refused_without_showing_it() {
    let Some(server) = S3Server::from_env("s3_wrong_secret_is_refused_without_showing_it") else {
        return;
    };
    let bucket = server.create_bucket().await;
    let wrong_secret = format!("wrong-secret-{:016x}", rand::random::<u64>());
    let mut config = server.config(&bucket);
    config.secret_access_key = Some(wrong_secret.clone());
    let store = BlobStore::from_config(&ArtifactStoreConfig::S3(config)).unwrap();

    let errors = [
        store.put_stream(&b"hello"[..]).await.unwrap_err(),
        store.exists(&sha256_of(b"hello")).await.unwrap_err(),
        store.list().try_collect::<Vec<_>>().await.unwrap_err(),
    ];
    for error in errors {
        let shown = format!("{error}\n{error:?}");
        assert!(matches!(error, BlobError::AccessDenied { .. }), "{shown}");
        assert!(!shown.contains(&wrong_secret), "the secret leaked: {shown}");
        assert!(shown.contains("refused access"), "{shown}");
    }
}

/// Runs without a server: nothing here is contacted.
#[tokio::test]
async fn debug_output_and_errors_never_show_credentials() {
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    let token = "FwoGZXIvYXdzEBYaDEXAMPLETOKEN";
    let key_id = "AKIAIOSFODNN7EXAMPLE";
    let s3 = S3Config {
        bucket: "kiln".to_owned(),
        region: Some("eu-central-1".to_owned()),
        endpoint: Some("http://127.0.0.1:9".to_owned()),
        path_style: true,
        allow_http: true,
        access_key_id: Some(key_id.to_owned()),
        secret_access_key: Some(secret.to_owned()),
        session_token: Some(token.to_owned()),
    };
    let config = ArtifactStoreConfig::S3(s3.clone());
    let store = BlobStore::from_config(&config).unwrap();
    let azure: ArtifactStoreConfig = toml::from_str(&format!(
        "backend = \"azure\"\naccount = \"kiln\"\ncontainer = \"blobs\"\naccess_key = \"{secret}\""
    ))
    .unwrap();
    let shown = [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{s3:?}"),
        format!("{store:?}"),
        format!("{azure:?}"),
    ];
    for text in &shown {
        for credential in [secret, token, key_id] {
            assert!(!text.contains(credential), "a credential leaked: {text}");
        }
    }
    assert!(
        shown[0].contains("secret_access_key: Some(\"***\")"),
        "{}",
        shown[0]
    );

    // A builder error in a configuration that carries a secret.
    let mut half = s3;
    half.access_key_id = None;
    half.endpoint = Some("not a url".to_owned());
    let error = BlobStore::from_config(&ArtifactStoreConfig::S3(half)).unwrap_err();
    let text = format!("{error}\n{error:?}");
    assert!(matches!(error, BlobError::Config { .. }), "{text}");
    assert!(
        !text.contains(secret) && !text.contains(token),
        "a credential leaked: {text}"
    );
}

/// Runs one test of this binary in a fresh process and fails unless it passes there.
async fn run_alone(test: &str) {
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(MEMORY_TEST_CHILD, "1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The child's measurement, shown with --nocapture.
    let _ = io::Write::write_all(&mut io::stderr().lock(), stderr.as_bytes());
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} failed when run alone:\n{stdout}\n{stderr}"
    );
}

/// The peak resident set size starts again from the current one (Linux 4.0+).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// A `/proc/self/status` field in KiB, such as `VmRSS` or `VmHWM` (the peak).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn sha256_of(bytes: &[u8]) -> Sha256Digest {
    Sha256Digest::from_bytes(Sha256::digest(bytes).into())
}

/// Deterministic pseudo-random bytes: byte `n` of a seed's sequence is always the same, however
/// the sequence is read, and nothing is held but the current position.
struct GeneratedReader {
    seed: u64,
    position: u64,
    len: u64,
    fail_at: Option<u64>,
}

impl GeneratedReader {
    fn new(seed: u64, len: u64) -> Self {
        GeneratedReader {
            seed,
            position: 0,
            len,
            fail_at: None,
        }
    }

    /// Breaks with an I/O error once this many bytes were read.
    fn failing_after(mut self, bytes: u64) -> Self {
        self.fail_at = Some(bytes);
        self
    }
}

impl AsyncRead for GeneratedReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.fail_at.is_some_and(|fail_at| self.position >= fail_at) {
            return Poll::Ready(Err(io::Error::other("the input broke")));
        }
        let end = self
            .fail_at
            .map_or(self.len, |fail_at| fail_at.min(self.len));
        let count = (buf.remaining() as u64).min(end - self.position) as usize;
        let out = buf.initialize_unfilled_to(count);
        fill_generated(self.seed, self.position, out);
        buf.advance(count);
        self.position += count as u64;
        Poll::Ready(Ok(()))
    }
}

fn fill_generated(seed: u64, mut position: u64, out: &mut [u8]) {
    let mut filled = 0;
    while filled < out.len() {
        let word =
            splitmix64(seed ^ (position / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes();
        let offset = (position % 8) as usize;
        let take = (8 - offset).min(out.len() - filled);
        out[filled..filled + take].copy_from_slice(&word[offset..offset + take]);
        filled += take;
        position += take as u64;
    }
}

fn splitmix64(mut state: u64) -> u64 {
    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    state = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    state = (state ^ (state >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    state ^ (state >> 31)
}

fn generated_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    fill_generated(seed, 0, &mut bytes);
    bytes
}

/// The digest of a generated sequence, computed a chunk at a time.
fn generated_digest(seed: u64, len: u64) -> Sha256Digest {
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut position = 0;
    while position < len {
        let count = (len - position).min(chunk.len() as u64) as usize;
        fill_generated(seed, position, &mut chunk[..count]);
        hasher.update(&chunk[..count]);
        position += count as u64;
    }
    Sha256Digest::from_bytes(hasher.finalize().into())
}

async fn write_generated_file(path: &Path, seed: u64, len: u64) {
    let mut file = tokio::fs::File::create(path).await.unwrap();
    tokio::io::copy(&mut GeneratedReader::new(seed, len), &mut file)
        .await
        .unwrap();
    file.flush().await.unwrap();
}
