//! Machine learning shared by the `train`, `evaluate` and `deploy` plugins and by model serving.
//!
//! The model envelope, preprocessing, trees and metrics are plain Rust and always built, so the
//! server can load and serve models without polars or linfa; reading tables (polars), fitting
//! (linfa) and charts (plotters) come with the `ml` feature.

#[cfg(feature = "ml")]
pub mod charts;
#[cfg(feature = "ml")]
pub mod fit;
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
