//! The `artifacts` workload: a generated file streamed into a local artifact store and read
//! back hash-checked, in this process, with the time each way and the peak memory meanwhile.

use anyhow::Context;
use kiln_engine::artifacts::{ArtifactStoreConfig, BlobStore};
use tokio::io::AsyncWriteExt as _;

use crate::measure::peak_kb;

/// What one round trip measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundTrip {
    /// Seconds to store the blob.
    pub(crate) put: f64,
    /// Seconds to read it back to a file, checking its hash.
    pub(crate) get: f64,
    /// This process's peak resident memory during the round trip.
    pub(crate) peak_kb: u64,
}

/// Streams a generated file of `size` bytes into a local artifact store and back out. The peak
/// memory counter is reset first, so the figure is the round trip's own.
pub(crate) async fn blob_round_trip(size: u64) -> anyhow::Result<RoundTrip> {
    let dir = tempfile::tempdir().context("failed to create a scratch directory")?;
    let source = dir.path().join("source.bin");
    {
        let mut file = tokio::fs::File::create(&source)
            .await
            .context("failed to create the source file")?;
        // xorshift64: bytes that do not compress, made faster than the disk takes them.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut buffer = vec![0u8; 1 << 20];
        let mut written = 0;
        while written < size {
            for chunk in buffer.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            let take =
                usize::try_from((size - written).min(buffer.len() as u64)).unwrap_or(buffer.len());
            file.write_all(&buffer[..take])
                .await
                .context("failed to write the source file")?;
            written += take as u64;
        }
        file.sync_all()
            .await
            .context("failed to write the source file")?;
    }
    let store = BlobStore::from_config(&ArtifactStoreConfig::local_under(dir.path()))
        .context("failed to open a local artifact store")?;
    // Writing 5 to clear_refs resets the peak-RSS counter (Linux 4.0 and later).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = std::time::Instant::now();
    let stored = store
        .put_file(&source)
        .await
        .context("failed to store the blob")?;
    let put = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    store
        .get_to_file(&stored.blob.sha256, &dir.path().join("copy.bin"))
        .await
        .context("failed to read the blob back")?;
    let get = started.elapsed().as_secs_f64();
    Ok(RoundTrip {
        put,
        get,
        peak_kb: peak_kb(std::process::id()),
    })
}
