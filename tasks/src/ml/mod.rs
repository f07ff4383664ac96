//! Machine learning shared by the `train`, `evaluate` and `deploy` plugins and by model serving.
//!
//! The model envelope, preprocessing, trees and metrics are plain Rust and always built, so the
//! server can load and serve models without polars or linfa; reading tables (polars), fitting
//! (linfa) and charts (plotters) come with the `ml` feature.

#[cfg(feature = "ml")]
pub mod charts;
#[cfg(feature = "ml")]
pub mod fit;
#[cfg(feature = "ml")]
pub mod kmeans;
#[cfg(feature = "ml")]
pub mod logistic;
pub mod metrics;
pub mod model;
pub mod preprocess;
#[cfg(feature = "ml")]
pub mod table;
pub mod tree;

/// Runs CPU-heavy work on a thread of its own, outside the async runtime, and awaits it.
///
/// polars detects a tokio runtime on the calling thread and then blocks in place, which a
/// current-thread runtime forbids; a plain thread has no runtime, so polars runs the same way
/// under any caller.
#[cfg(feature = "ml")]
pub(crate) async fn off_runtime<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, kiln_engine::TaskError> + Send + 'static,
) -> Result<T, kiln_engine::TaskError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("kiln-{what}"))
        .spawn(move || {
            let _ = sender.send(work());
        })
        .map_err(|error| {
            kiln_engine::TaskError::Retryable(format!("cannot start the {what} thread: {error}"))
        })?;
    receiver.await.map_err(|_| {
        kiln_engine::TaskError::Retryable(format!(
            "the {what} thread ended without an answer (it panicked)"
        ))
    })?
}

/// Below this many rows a pass over the data runs on one thread: starting more costs more than
/// they save.
#[cfg(feature = "ml")]
const ROWS_PER_THREAD: usize = 16_384;

/// How many threads a pass over `rows` rows uses: one per core, fewer for small data.
#[cfg(feature = "ml")]
pub(crate) fn threads_for(rows: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(rows.div_ceil(ROWS_PER_THREAD))
        .max(1)
}

/// Runs `work` on `threads` contiguous row ranges at once, handing each its own slice of
/// `per_row` (one item per row), and answers the results in row order.
#[cfg(feature = "ml")]
pub(crate) fn in_parts<T: Send, U: Send>(
    per_row: &mut [U],
    threads: usize,
    work: impl Fn(std::ops::Range<usize>, &mut [U]) -> T + Sync,
) -> Vec<T> {
    let rows = per_row.len();
    if threads <= 1 || rows == 0 {
        return vec![work(0..rows, per_row)];
    }
    let chunk = rows.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = per_row
            .chunks_mut(chunk)
            .enumerate()
            .map(|(index, part)| {
                let work = &work;
                let start = index * chunk;
                scope.spawn(move || work(start..start + part.len(), part))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}
