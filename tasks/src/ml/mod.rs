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
