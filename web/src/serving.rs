//! Model serving: the production version of each model, loaded once and swapped without a
//! restart when the registry's `production` alias moves.
//!
//! Every request reads the model it needs from an in-memory cache. An entry is checked against
//! the registry at most once a second; when the alias has moved, the new version is loaded
//! (checked against its digest) and swapped in, and requests already holding the old one finish
//! with it. A version that fails to load is logged and the old one keeps serving, so a bad
//! promotion never turns predictions into errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kiln_engine::artifacts::BlobStore;
use kiln_engine::dag::ModelAlias;
use kiln_engine::store::{ArtifactVersionRecord, Store};
use kiln_tasks::ml::model::ModelEnvelope;
use kiln_tasks::ml::preprocess::Preprocessing;

use crate::wire::PredictResponse;

/// How stale a cached model may be before the registry is asked again.
const RECHECK: Duration = Duration::from_secs(1);

/// The biggest model envelope kiln loads into memory.
const MAX_MODEL_BYTES: u64 = 512 * 1024 * 1024;

/// A loaded model version.
#[derive(Debug)]
pub struct ServedModel {
    /// The registry version it is.
    pub version: ArtifactVersionRecord,
    /// The model.
    pub envelope: ModelEnvelope,
}

struct Entry {
    model: Arc<ServedModel>,
    /// When the registry read that chose this model began.
    checked: Instant,
}

/// Why no model could be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The registry has no such model, or it has no production version.
    #[error("{0}")]
    NotFound(String),
    /// The model could not be read (and no older version was loaded).
    #[error("{0}")]
    Unavailable(String),
}

/// The cache of served models, by name.
#[derive(Default)]
pub struct ModelServer {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for ModelServer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ModelServer")
            .finish_non_exhaustive()
    }
}

impl ModelServer {
    fn cached(&self, name: &str, fresh_only: bool) -> Option<Arc<ServedModel>> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(name)
            .filter(|entry| !fresh_only || entry.checked.elapsed() < RECHECK)
            .map(|entry| entry.model.clone())
    }

    /// Caches `model`, chosen by a registry read that began at `read_at`, and answers the model
    /// to serve: an entry chosen by a later read is newer knowledge and stays (a slow request
    /// that read the alias before a promotion must not swap the old version back in after a
    /// faster one installed the new).
    fn store_entry(
        &self,
        name: &str,
        model: Arc<ServedModel>,
        read_at: Instant,
    ) -> Arc<ServedModel> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(newer) = entries.get(name).filter(|entry| entry.checked > read_at) {
            return newer.model.clone();
        }
        entries.insert(
            name.to_owned(),
            Entry {
                model: model.clone(),
                checked: read_at,
            },
        );
        model
    }

    /// The production version of a model, loading or swapping it when the alias moved.
    pub async fn production(
        &self,
        store: &dyn Store,
        blobs: Option<&BlobStore>,
        name: &str,
    ) -> Result<Arc<ServedModel>, ServeError> {
        if let Some(model) = self.cached(name, true) {
            return Ok(model);
        }
        let stale = self.cached(name, false);
        let read_at = Instant::now();
        let current = match store.model_alias_get(name, ModelAlias::Production).await {
            Ok(current) => current,
            Err(error) => {
                // The registry is unreachable: keep serving what is loaded.
                return match stale {
                    Some(model) => {
                        tracing::warn!(message = "Could not check the registry; serving the loaded model.", model = name, %error);
                        Ok(model)
                    }
                    None => Err(ServeError::Unavailable(format!(
                        "the model registry is unavailable: {error}"
                    ))),
                };
            }
        };
        let Some(current) = current else {
            self.entries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(name);
            return Err(ServeError::NotFound(format!(
                "model `{name}` has no production version"
            )));
        };
        if let Some(model) = stale.filter(|model| model.version.id == current.id) {
            return Ok(self.store_entry(name, model, read_at));
        }
        match load(blobs, &current).await {
            Ok(envelope) => {
                tracing::info!(
                    message = "Serving a model version.",
                    model = name,
                    version = current.version
                );
                let model = Arc::new(ServedModel {
                    version: current,
                    envelope,
                });
                Ok(self.store_entry(name, model, read_at))
            }
            Err(problem) => match self.cached(name, false) {
                Some(old) => {
                    tracing::error!(
                        message = "The new production version does not load; the previous one keeps serving.",
                        model = name,
                        version = current.version,
                        problem
                    );
                    Ok(self.store_entry(name, old, read_at))
                }
                None => Err(ServeError::Unavailable(problem)),
            },
        }
    }
}

/// Reads and checks a model version's envelope.
async fn load(
    blobs: Option<&BlobStore>,
    version: &ArtifactVersionRecord,
) -> Result<ModelEnvelope, String> {
    let label = version.label();
    let blobs =
        blobs.ok_or_else(|| "this server has no artifact store to load models from".to_owned())?;
    if version.blob.size > MAX_MODEL_BYTES {
        return Err(format!(
            "{label} is {} bytes, more than a served model may be",
            version.blob.size
        ));
    }
    let mut stream = blobs
        .open(&version.blob.sha256)
        .await
        .map_err(|error| format!("{label}: {error}"))?;
    let mut bytes = Vec::with_capacity(usize::try_from(version.blob.size).unwrap_or(0));
    // The stream checks the digest and ends in an error when the bytes are corrupt.
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.map_err(|error| format!("{label}: {error}"))?);
    }
    ModelEnvelope::from_json(&bytes).map_err(|error| format!("{label}: {error}"))
}

/// A row a model could not take: a feature missing, unknown or of the wrong type.
#[derive(Debug, Clone, thiserror::Error)]
#[error("row {index}: {problem}")]
pub(crate) struct RowError {
    /// The row's index in the request, from 0.
    pub(crate) index: usize,
    /// What is wrong with it, naming the feature.
    pub(crate) problem: String,
}

/// Predictions for raw rows (keyed by raw feature name) from a served model: the one prediction
/// code the API and the console's form share.
pub(crate) fn predict_rows(
    model: &ServedModel,
    rows: &[serde_json::Map<String, serde_json::Value>],
) -> Result<PredictResponse, RowError> {
    let envelope = &model.envelope;
    let plain = Preprocessing::default();
    let preprocessing = envelope.preprocessing.as_ref().unwrap_or(&plain);
    let mut predictions = Vec::with_capacity(rows.len());
    let mut probabilities: Option<Vec<Vec<f64>>> = None;
    for (index, row) in rows.iter().enumerate() {
        let inputs = preprocessing
            .row(&envelope.features, row)
            .map_err(|problem| RowError { index, problem })?;
        let prediction = envelope.predict_row(&inputs);
        predictions.push(envelope.label(&prediction));
        if let Some(row_probabilities) = prediction.probabilities {
            probabilities
                .get_or_insert_with(Vec::new)
                .push(row_probabilities);
        }
    }
    let classes = (!envelope.classes.is_empty()).then(|| envelope.classes.clone());
    Ok(PredictResponse {
        model: model.version.name.clone(),
        version: model.version.version,
        predictions,
        probabilities,
        classes,
    })
}
