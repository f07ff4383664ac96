//! The model registry and serving under `/api/v1/models`: list models, describe one (the version
//! served and its metrics), predict, promote and roll back.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use kiln_engine::dag::ModelAlias;
use kiln_engine::store::now_micros;
use kiln_tasks::ml::preprocess::Preprocessing;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{JsonBody, JsonOrEmpty};
use crate::openapi::schema;
use crate::serving::{ServeError, ServedModel};
use crate::wire::{AttemptView, time};
use crate::{AppError, AppState};

/// The most rows one prediction request may carry.
pub(crate) const MAX_ROWS: usize = 10_000;

/// `GET /api/v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModelList {
    /// Models, by name.
    pub models: Vec<ModelSummary>,
}

/// A model in a list.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModelSummary {
    /// Its name.
    pub name: String,
    /// Its newest version.
    pub latest_version: i64,
    /// The version served.
    pub production: Option<i64>,
    /// The version being tried.
    pub staging: Option<i64>,
    /// RFC 3339.
    pub updated_at: String,
}

/// `GET /api/v1/models/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModelDetail {
    /// Its name.
    pub name: String,
    /// The version served, when there is one.
    pub version: Option<i64>,
    /// The served version's metrics (`accuracy` among them for classifiers).
    pub metrics: serde_json::Value,
    /// What the served version is.
    pub served: Option<ServedView>,
    /// Every version, newest first.
    pub versions: Vec<ModelVersionView>,
    /// Alias moves, oldest first.
    pub history: Vec<AliasEventView>,
}

/// The served version's model.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ServedView {
    /// The algorithm and hyperparameters.
    pub algorithm: serde_json::Value,
    /// `classification`, `regression` or `clustering`.
    pub task: String,
    /// The raw inputs a prediction takes: `{name, kind}` with kind `number` or `category`.
    pub features: Vec<serde_json::Value>,
    /// Class labels, for classifiers.
    pub classes: Vec<serde_json::Value>,
    /// When it was trained.
    pub trained_at: String,
    /// The dataset version it was trained on.
    pub training_data: serde_json::Value,
    /// The SHA-256 of the envelope.
    pub sha256: String,
}

/// A version of a model.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModelVersionView {
    /// The version number.
    pub version: i64,
    /// Its aliases (`production`, `staging`).
    pub aliases: Vec<String>,
    /// Its metrics, as its deploy recorded them.
    pub metrics: serde_json::Value,
    /// The attempt that deployed it.
    pub producer: Option<AttemptView>,
    /// RFC 3339.
    pub created_at: String,
}

/// One move of an alias.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AliasEventView {
    /// The alias.
    pub alias: String,
    /// The version it points at since.
    pub version: i64,
    /// The version before.
    pub previous: Option<i64>,
    /// Why.
    pub reason: String,
    /// RFC 3339.
    pub at: String,
}

/// `POST /api/v1/models/{name}/predict`: rows as objects, or columns as arrays.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// Exactly one of the two, as the handler insists.
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct PredictRequest {
    /// One object per row, keyed by feature name.
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub rows: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// One array per feature, all of the same length.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, Vec<serde_json::Value>>")]
    pub columns: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The answer to a prediction request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PredictResponse {
    /// The model.
    pub model: String,
    /// The version that answered.
    pub version: i64,
    /// One prediction per row: a class label, a number or a cluster.
    pub predictions: Vec<serde_json::Value>,
    /// Per row, the probability of each class (in `classes` order), when the model has them.
    pub probabilities: Option<Vec<Vec<f64>>>,
    /// The class labels, for classifiers.
    pub classes: Option<Vec<serde_json::Value>>,
}

/// `POST /api/v1/models/{name}/promote`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The version to point the alias at.
    pub version: i64,
    /// `production` (default) or `staging`.
    #[serde(default)]
    #[schemars(with = "Option<schema::ModelAlias>")]
    pub alias: Option<ModelAlias>,
}

/// `POST /api/v1/models/{name}/rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// `production` (default) or `staging`.
    #[serde(default)]
    #[schemars(with = "Option<schema::ModelAlias>")]
    pub alias: Option<ModelAlias>,
}

/// What an alias move did.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AliasMove {
    /// The alias.
    #[schemars(with = "schema::ModelAlias")]
    pub alias: ModelAlias,
    /// The version it points at now.
    pub version: i64,
    /// The version it pointed at before.
    pub previous: Option<i64>,
}

pub(crate) async fn list_models(
    State(state): State<AppState>,
) -> Result<Json<ModelList>, AppError> {
    let models = state
        .scheduler()
        .store()
        .model_list()
        .await?
        .into_iter()
        .map(|model| ModelSummary {
            name: model.name,
            latest_version: model.latest_version,
            production: model.production,
            staging: model.staging,
            updated_at: time(model.updated_at),
        })
        .collect();
    Ok(Json(ModelList { models }))
}

fn metrics_of(metadata: Option<&serde_json::Value>) -> serde_json::Value {
    metadata
        .and_then(|metadata| metadata.get("metrics"))
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}))
}

pub(crate) async fn get_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelDetail>, AppError> {
    let store = state.scheduler().store();
    let record = store
        .model_list()
        .await?
        .into_iter()
        .find(|model| model.name == name)
        .ok_or_else(|| AppError::NotFound(format!("model `{name}` not found")))?;
    let versions = store
        .artifact_version_list(&name, 1000)
        .await?
        .into_iter()
        .map(|version| ModelVersionView {
            version: version.version,
            aliases: [
                (record.production, "production"),
                (record.staging, "staging"),
            ]
            .into_iter()
            .filter(|(aliased, _)| *aliased == Some(version.version))
            .map(|(_, alias)| alias.to_owned())
            .collect(),
            metrics: metrics_of(version.metadata.as_ref()),
            producer: version.producer.as_ref().map(AttemptView::from),
            created_at: time(version.created_at),
        })
        .collect();
    let history = store
        .model_alias_event_list(&name)
        .await?
        .into_iter()
        .map(|event| AliasEventView {
            alias: event.alias.as_str().to_owned(),
            version: event.version,
            previous: event.previous,
            reason: event.reason,
            at: time(event.created_at),
        })
        .collect();
    let served = match record.production {
        Some(_) => Some(production_model(&state, &name).await.map_err(serve_error)?),
        None => None,
    };
    Ok(Json(ModelDetail {
        name: name.clone(),
        version: served.as_ref().map(|model| model.version.version),
        metrics: metrics_of(
            served
                .as_ref()
                .and_then(|model| model.version.metadata.as_ref()),
        ),
        served: served.as_ref().map(|model| {
            let envelope = &model.envelope;
            let preprocessing = envelope.preprocessing.clone().unwrap_or_default();
            ServedView {
                algorithm: envelope.algorithm.clone(),
                task: serde_json::to_value(envelope.task)
                    .ok()
                    .and_then(|task| task.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                features: preprocessing
                    .raw_features(&envelope.features)
                    .into_iter()
                    .map(
                        |feature| serde_json::json!({ "name": feature.name, "kind": feature.kind }),
                    )
                    .collect(),
                classes: envelope.classes.clone(),
                trained_at: envelope.trained_at.clone(),
                training_data: serde_json::to_value(&envelope.training_data).unwrap_or_default(),
                sha256: model.version.blob.sha256.to_hex(),
            }
        }),
        versions,
        history,
    }))
}

fn serve_error(error: ServeError) -> AppError {
    match error {
        ServeError::NotFound(message) => AppError::NotFound(message),
        ServeError::Unavailable(message) => AppError::Unavailable(message),
    }
}

/// The request's rows as objects, whichever shape it came in.
fn request_rows(
    request: PredictRequest,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, AppError> {
    let rows = match (request.rows, request.columns) {
        (Some(rows), None) => rows,
        (None, Some(columns)) => {
            let mut length = None;
            let mut arrays = Vec::with_capacity(columns.len());
            for (name, values) in columns {
                let serde_json::Value::Array(values) = values else {
                    return Err(AppError::unprocessable(format!(
                        "column `{name}` must be an array"
                    )));
                };
                match length {
                    None => length = Some(values.len()),
                    Some(expected) if expected != values.len() => {
                        return Err(AppError::unprocessable(format!(
                            "column `{name}` has {} values where the others have {expected}",
                            values.len()
                        )));
                    }
                    Some(_) => {}
                }
                arrays.push((name, values));
            }
            let length = length.unwrap_or(0);
            if length > MAX_ROWS {
                return Err(too_many(length));
            }
            (0..length)
                .map(|row| {
                    arrays
                        .iter()
                        .map(|(name, values)| (name.clone(), values[row].clone()))
                        .collect()
                })
                .collect()
        }
        _ => {
            return Err(AppError::unprocessable(
                "give either `rows` (one object per row) or `columns` (one array per feature)",
            ));
        }
    };
    if rows.len() > MAX_ROWS {
        return Err(too_many(rows.len()));
    }
    if rows.is_empty() {
        return Err(AppError::unprocessable("the request has no rows"));
    }
    Ok(rows)
}

fn too_many(rows: usize) -> AppError {
    AppError::unprocessable(format!(
        "{rows} rows is more than the {MAX_ROWS} one request may carry"
    ))
}

pub(crate) async fn predict(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<PredictRequest>,
) -> Result<Json<PredictResponse>, AppError> {
    let rows = request_rows(request)?;
    let model = production_model(&state, &name).await.map_err(serve_error)?;
    let answer =
        predict_rows(&model, &rows).map_err(|error| AppError::unprocessable(error.to_string()))?;
    Ok(Json(answer))
}

/// The production version of a model, as served: loaded once, swapped when promoted.
pub(crate) async fn production_model(
    state: &AppState,
    name: &str,
) -> Result<Arc<ServedModel>, ServeError> {
    state
        .models
        .production(
            &**state.scheduler().store(),
            state.execution.artifacts().map(|store| &**store),
            name,
        )
        .await
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

pub(crate) async fn promote(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<PromoteRequest>,
) -> Result<Json<AliasMove>, AppError> {
    let alias = request.alias.unwrap_or(ModelAlias::Production);
    let previous = state
        .scheduler()
        .store()
        .model_alias_set(
            &name,
            alias,
            request.version,
            "promoted through the API",
            now_micros(),
        )
        .await?;
    Ok(Json(AliasMove {
        alias,
        version: request.version,
        previous,
    }))
}

pub(crate) async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonOrEmpty(request): JsonOrEmpty<RollbackRequest>,
) -> Result<Json<AliasMove>, AppError> {
    let alias = request.alias.unwrap_or(ModelAlias::Production);
    let (from, to) = state
        .scheduler()
        .store()
        .model_alias_rollback(&name, alias, now_micros())
        .await?;
    Ok(Json(AliasMove {
        alias,
        version: to,
        previous: Some(from),
    }))
}
